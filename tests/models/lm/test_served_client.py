"""The served-model client's failure handling, against a scripted HTTP server on loopback.

A real server never answers 503 or malformed JSON on demand, so these answers come from a
standard-library HTTP server that replays a script; everything else about the backend is
tested against llama.cpp's server (tests/models/reasoning/test_served.py)."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from ppl.models.lm.served import (
    ClientSettings,
    CompletionRequest,
    MalformedResponseError,
    ServedModel,
    ServerResponseError,
)

MODELS = {"data": [{"id": "m", "owned_by": "vllm"}]}


def completion(text: str, stop_reason: str | None) -> dict:
    choice = {"index": 0, "text": text, "finish_reason": "stop", "stop_reason": stop_reason}
    return {"choices": [choice], "usage": {"completion_tokens": 3}}


@contextlib.contextmanager
def scripted(answers: list[tuple[int, str]]) -> Iterator[tuple[str, list[dict]]]:
    """A server whose /v1/completions answers are `answers` (status, body) in turn; yields
    its URL and the request bodies it received."""
    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def reply(self, status: int, body: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def do_GET(self) -> None:
            self.reply(200, json.dumps(MODELS))

        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.reply(*answers.pop(0))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", received
    finally:
        server.shutdown()
        server.server_close()


REQUEST = CompletionRequest(prompt="2 + 3 =", max_tokens=8, stop=("\n\n",), temperature=0.7)


def test_429_and_503_are_retried_then_the_answer_is_parsed():
    answers = [(429, "{}"), (503, "{}"), (200, json.dumps(completion(" 5\n\n", "\n\n")))]
    with scripted(answers) as (url, received):
        model = ServedModel(url, "m", settings=ClientSettings(backoff_s=0.01))
        [[choice]] = model.complete([REQUEST])
    assert len(received) == 3
    assert choice.text == " 5\n\n" and choice.finish == "stop" and choice.num_tokens == 3
    body = received[0]  # vLLM: the stop string is kept, neutral samplers are sent
    assert body["include_stop_str_in_output"] and body["top_k"] == -1 and body["min_p"] == 0


def test_end_of_sequence_is_told_from_the_stop_string_by_stop_reason():
    with scripted([(200, json.dumps(completion(" 5", None)))]) as (url, _):
        [[choice]] = ServedModel(url, "m").complete([REQUEST])
    assert choice.finish == "eos" and choice.text == " 5"


def test_a_body_that_is_not_json_is_reported():
    with scripted([(200, "<html>proxy error</html>")]) as (url, _):
        with pytest.raises(MalformedResponseError, match="not JSON: '<html>proxy error"):
            ServedModel(url, "m").complete([REQUEST])


def test_json_without_choices_is_reported():
    with scripted([(200, json.dumps({"result": "ok"}))]) as (url, _):
        with pytest.raises(MalformedResponseError, match="unexpected answer .*'choices'"):
            ServedModel(url, "m").complete([REQUEST])


def test_other_errors_are_not_retried():
    with scripted([(400, '{"error": "bad prompt"}'), (200, "{}")]) as (url, received):
        with pytest.raises(ServerResponseError, match='HTTP 400: {"error": "bad prompt"}'):
            ServedModel(url, "m", settings=ClientSettings(backoff_s=0.01)).complete([REQUEST])
    assert len(received) == 1


def test_a_persistent_503_fails_after_the_retries():
    with scripted([(503, "{}")] * 3) as (url, received):
        model = ServedModel(url, "m", settings=ClientSettings(max_retries=2, backoff_s=0.01))
        with pytest.raises(ServerResponseError, match="HTTP 503"):
            model.complete([REQUEST])
    assert len(received) == 3


def test_bad_client_settings_are_refused():
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        ClientSettings(concurrency=0)
