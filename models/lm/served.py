"""A client for OpenAI-compatible completions servers: vLLM, SGLang, llama.cpp's server.

`ServedModel` sends `POST /v1/completions` requests concurrently through a bounded thread
pool, with a timeout per request. Only transient failures are retried, with exponential
backoff (connection refused or reset, HTTP 429 and 503); every other failure raises a typed
`ServerError` naming the server, the status and the body.

Servers differ in what they return (`ServerCapabilities`, detected from `GET /v1/models` or
declared):

    kind               n > 1   sampled-token logprobs   prompt logprobs   why it stopped
    vllm               yes     yes (top <= 20)          yes               stop_reason
    sglang             yes     yes                      yes               matched_stop
    llama-cpp-python   no      yes (raw model; slow)    no                token counts
    generic            no      no                       no                token counts

A choice says whether it ended at a stop string, at end-of-sequence, or at `max_tokens`.
Where the server does not say (llama-cpp-python reports both as "stop"), the client tells
them apart from the token counts: a completion that stopped at the stop string generated
its tokens too (`usage.completion_tokens`), one that ended at end-of-sequence generated
exactly the tokens of its text, counted with the model's tokenizer (which such a server
therefore needs). Returned log probabilities are those of the untempered model (vLLM's
default `--logprobs-mode raw_logprobs`, llama.cpp's raw logits); llama-cpp-python sorts the
whole vocabulary in Python for each returned token (about 0.8 s per token for a 49k
vocabulary on two cores), so they are requested only when a method needs them.

Every request sends the server's neutral values of the samplers it would otherwise apply
(llama-cpp-python defaults to top-k 40, top-p 0.95, min-p 0.05 and a repeat penalty of 1.1),
so that it samples from the configured distribution only: temperature, top-k, top-p.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import httpx
import numpy as np

from ppl.models.lm.errors import ProblemFailure
from ppl.models.lm.tokenizer import Tokenizer

Finish = Literal["stop", "eos", "length"]


class ServerError(ProblemFailure, RuntimeError):
    """A served-model request failed (the message names the server and the cause)."""


class ServerUnreachableError(ServerError):
    """The server could not be reached (after the retries for transient failures)."""


class ServerTimeoutError(ServerError):
    """A request took longer than its timeout."""


class ServerResponseError(ServerError):
    """The server answered with an error status that retrying would not fix."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class MalformedResponseError(ServerError):
    """The server's answer is not the JSON an OpenAI-compatible server returns."""


class ModelNotServedError(ServerError):
    """The server does not serve the requested model name."""


class CapabilityError(ServerError):
    """A method needs something (log probabilities, prompt scoring) this server lacks."""


@dataclasses.dataclass(frozen=True)
class ServerCapabilities:
    """What a completions server returns; see the module docstring for the known kinds."""

    kind: str = "generic"
    choices_per_request: bool = False  # honours n > 1 in one request
    token_logprobs: bool = False  # returns the sampled tokens' log probabilities
    max_logprobs: int | None = None  # the largest `logprobs` (top alternatives) it accepts
    prompt_logprobs: bool = False  # can score given text (needed to replay with proposal weights)
    stop_reason: bool = False  # says whether a choice ended at a stop string or at EOS
    neutral: tuple[tuple[str, Any], ...] = (("top_p", 1.0),)  # sent unless set

    def needs_tokenizer(self) -> bool:
        """Whether the client counts tokens to tell a stop string from end-of-sequence."""
        return not self.stop_reason


_NEUTRAL_VLLM = (("top_p", 1.0), ("top_k", -1), ("min_p", 0.0), ("repetition_penalty", 1.0))
_NEUTRAL_LLAMA_CPP = (("top_p", 1.0), ("top_k", 0), ("min_p", 0.0), ("repeat_penalty", 1.0))
SERVER_KINDS = {
    "vllm": ServerCapabilities("vllm", True, True, 20, True, True, _NEUTRAL_VLLM),
    "sglang": ServerCapabilities("sglang", True, True, None, True, True, _NEUTRAL_VLLM),
    "llama-cpp-python": ServerCapabilities(
        "llama-cpp-python", False, True, None, False, False, _NEUTRAL_LLAMA_CPP
    ),
    "generic": ServerCapabilities(),
}
_OWNED_BY = {"vllm": "vllm", "sglang": "sglang", "me": "llama-cpp-python"}


@dataclasses.dataclass(frozen=True)
class ClientSettings:
    """Timeouts, retries and the bound on concurrent requests."""

    timeout_s: float = 300.0  # per request
    max_retries: int = 4  # transient failures only; waits backoff_s * 2**attempt
    backoff_s: float = 0.5
    concurrency: int = 16

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.max_retries < 0 or self.backoff_s < 0:
            raise ValueError("timeout_s must be > 0, max_retries and backoff_s >= 0")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")


@dataclasses.dataclass(frozen=True)
class CompletionRequest:
    """`n` continuations of `prompt` (text), stopping at any of `stop` or after `max_tokens`."""

    prompt: str
    max_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    n: int = 1
    logprobs: bool = False  # return the sampled tokens' log probabilities


class Choice(NamedTuple):
    """One continuation: its text (with the stop string it ended at, if any), why it ended,
    how many tokens it generated, and their log probabilities (None if not requested)."""

    text: str
    finish: Finish
    num_tokens: int
    token_logprobs: tuple[float, ...] | None


_TRANSIENT_STATUS = (429, 503)


class ServedModel:
    """A model behind an OpenAI-compatible completions server at `base_url` (".../v1").

    `tokenizer` supplies the chat template for chat-formatted prompts and, for servers that
    do not say why a completion stopped, counts the tokens of its text (module docstring).
    `capabilities` overrides detection.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        tokenizer: Tokenizer | None = None,
        capabilities: ServerCapabilities | None = None,
        settings: ClientSettings | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings or ClientSettings()
        self._client = httpx.Client(timeout=self.settings.timeout_s)
        served = self._get("/models")
        try:
            entries = {str(entry["id"]): entry for entry in served["data"]}
        except (KeyError, TypeError) as error:
            raise MalformedResponseError(
                f"{self.base_url}/models did not return a model list: {served!r:.200}"
            ) from error
        if model not in entries:
            raise ModelNotServedError(
                f"{self.base_url} does not serve model {model!r}; it serves: "
                + ", ".join(sorted(entries))
            )
        owner = str(entries[model].get("owned_by", ""))
        self.capabilities = capabilities or SERVER_KINDS[_OWNED_BY.get(owner, "generic")]
        if self.capabilities.needs_tokenizer() and tokenizer is None:
            raise ValueError(
                f"{self.base_url} ({self.capabilities.kind}) does not say whether a completion "
                "stopped at its stop string or at end-of-sequence; pass the model's tokenizer "
                "(a GGUF file or checkpoint directory: --tokenizer PATH) so that the client can "
                "tell them apart by counting tokens"
            )

    @property
    def name(self) -> str:
        return self.model

    def close(self) -> None:
        self._client.close()

    # Prompts ---------------------------------------------------------------------------
    def format_prompt(self, prompt: str, chat: bool) -> str:
        """The text sent for `prompt`: as is, or one user turn in the chat template."""
        if not chat:
            return prompt
        if self.tokenizer is None or self.tokenizer.chat_template is None:
            raise ValueError(
                "chat-formatted prompts need the model's chat template: pass the served "
                "model's tokenizer (a GGUF file or a checkpoint directory; --tokenizer PATH)"
            )
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}])

    def require_token_logprobs(self, needed_by: str) -> None:
        """Raise `CapabilityError` unless the server returns sampled-token log probabilities
        (`needed_by` names what needs them)."""
        if not self.capabilities.token_logprobs:
            raise CapabilityError(
                f"{self.base_url} ({self.capabilities.kind}) does not return the sampled "
                f"tokens' log probabilities, which {needed_by} needs"
            )

    # Completions -----------------------------------------------------------------------
    def complete(self, requests: Sequence[CompletionRequest]) -> list[list[Choice]]:
        """The choices of every request, in order, sent concurrently (at most
        `settings.concurrency` at a time). A request for n > 1 on a server without
        `choices_per_request` becomes n requests with seeds seed, seed + 1, ..."""
        if any(request.logprobs for request in requests):
            self.require_token_logprobs("this request")
        jobs: list[tuple[int, CompletionRequest]] = []
        for index, request in enumerate(requests):
            if request.n > 1 and not self.capabilities.choices_per_request:
                jobs += [
                    (index, dataclasses.replace(request, n=1, seed=_offset(request.seed, i)))
                    for i in range(request.n)
                ]
            else:
                jobs.append((index, request))
        results: list[list[Choice]] = [[] for _ in requests]
        workers = min(self.settings.concurrency, max(1, len(jobs)))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            answers = pool.map(lambda job: self._complete_one(job[1]), jobs)
            for (index, _), choices in zip(jobs, answers, strict=True):
                results[index] += choices
        return results

    def _complete_one(self, request: CompletionRequest) -> list[Choice]:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": request.prompt,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "n": request.n,
        }
        if request.stop:
            body["stop"] = list(request.stop)
            if self.capabilities.kind == "vllm":
                body["include_stop_str_in_output"] = True
        body.update(self.capabilities.neutral)
        for name in ("top_p", "top_k", "seed"):
            if getattr(request, name) is not None:
                body[name] = getattr(request, name)
        # n > 1: usage sums the choices' tokens, the log probabilities count each one's
        if request.logprobs or (request.n > 1 and self.capabilities.token_logprobs):
            body["logprobs"] = 1
        answer = self._post("/completions", body)
        try:
            choices = sorted(answer["choices"], key=lambda c: int(c.get("index", 0)))
            parsed = [self._parse_choice(c, request, answer) for c in choices]
        except (KeyError, TypeError, ValueError) as error:
            raise MalformedResponseError(
                f"{self.base_url}/completions returned an unexpected answer ({error}): "
                f"{json.dumps(answer)[:300]}"
            ) from error
        if len(parsed) != request.n:
            raise MalformedResponseError(
                f"{self.base_url}/completions returned {len(parsed)} choices for n={request.n}"
            )
        return parsed

    def _parse_choice(
        self, choice: dict[str, Any], request: CompletionRequest, answer: dict[str, Any]
    ) -> Choice:
        text = choice["text"]
        if not isinstance(text, str):
            raise ValueError("a choice's text is not a string")
        logprobs = choice.get("logprobs")
        token_logprobs = None
        if logprobs:
            token_logprobs = tuple(float(x) for x in logprobs["token_logprobs"])
        if token_logprobs is not None:
            num_tokens = len(token_logprobs)
        elif request.n == 1:  # usage counts the one choice's tokens
            num_tokens = int(answer["usage"]["completion_tokens"])
        else:
            raise ValueError("n > 1 without log probabilities: no per-choice token counts")
        reason = choice.get("finish_reason")
        finish: Finish
        if reason == "length":
            finish = "length"
        elif reason != "stop":
            raise ValueError(f"unknown finish_reason {reason!r}")
        elif not request.stop:
            finish = "eos"
        elif self.capabilities.stop_reason:
            matched = choice.get("stop_reason", choice.get("matched_stop"))
            finish = "stop" if isinstance(matched, str) else "eos"
        else:  # the stop string's tokens were generated but are not in the text
            assert self.tokenizer is not None  # checked in __init__
            counted = len(self.tokenizer.encode(text, add_special_tokens=False))
            finish = "stop" if num_tokens > counted else "eos"
        if finish == "stop" and not any(text.endswith(s) for s in request.stop):
            text += request.stop[0]  # the server drops the stop string from the text
        return Choice(text, finish, num_tokens, token_logprobs if request.logprobs else None)

    # Pooling (reward models) ----------------------------------------------------------
    def pool(self, texts: Sequence[str]) -> list[np.ndarray]:
        """vLLM's pooling endpoint (`POST /pooling` at the server's root, a model served with
        `--runner pooling`): one array per text, e.g. [steps, 2] class probabilities at the
        step separators of a process reward model under vLLM's STEP pooling."""
        root = self.base_url.removesuffix("/v1")
        answer = self._request(
            "POST", "/pooling", {"model": self.model, "input": list(texts)}, root
        )
        try:
            rows = sorted(answer["data"], key=lambda row: int(row.get("index", 0)))
            pooled = [np.asarray(row["data"], np.float64) for row in rows]
        except (KeyError, TypeError, ValueError) as error:
            raise MalformedResponseError(
                f"{root}/pooling returned an unexpected answer ({error}): "
                f"{json.dumps(answer)[:300]}"
            ) from error
        if len(pooled) != len(texts):
            raise MalformedResponseError(
                f"{root}/pooling returned {len(pooled)} results for {len(texts)} inputs"
            )
        return pooled

    # HTTP ------------------------------------------------------------------------------
    def _get(self, path: str) -> Any:
        return self._request("GET", path, None)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return self._request("POST", path, body)

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None, root: str | None = None
    ) -> Any:
        url = (root or self.base_url) + path
        for attempt in range(self.settings.max_retries + 1):
            last = attempt == self.settings.max_retries
            try:
                response = self._client.request(method, url, json=body)
            except httpx.TimeoutException as error:
                raise ServerTimeoutError(
                    f"{method} {url} took longer than {self.settings.timeout_s} s"
                ) from error
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError) as error:
                if last:
                    raise ServerUnreachableError(
                        f"cannot reach {url} ({type(error).__name__}: {error}) after "
                        f"{attempt + 1} attempts; is the server running?"
                    ) from error
            else:
                if response.status_code in _TRANSIENT_STATUS and not last:
                    pass  # retried below
                elif response.status_code >= 400:
                    raise ServerResponseError(
                        f"{method} {url} failed with HTTP {response.status_code}: "
                        f"{response.text[:300]}",
                        response.status_code,
                    )
                else:
                    try:
                        return response.json()
                    except json.JSONDecodeError as error:
                        raise MalformedResponseError(
                            f"{method} {url} returned a body that is not JSON: "
                            f"{response.text[:200]!r}"
                        ) from error
            time.sleep(self.settings.backoff_s * 2**attempt)
        raise AssertionError("unreachable")  # the last attempt returns or raises


def _offset(seed: int | None, i: int) -> int | None:
    return None if seed is None else seed + i


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer (and chat template) of a GGUF file or a checkpoint directory, without its
    weights: for chat-formatted prompts to a served model."""
    path = Path(path)
    if path.is_dir():
        return Tokenizer.from_directory(path)
    from ppl.models.lm.gguf_loader import open_gguf, read_fields

    return Tokenizer.from_gguf_fields(read_fields(open_gguf(path)))
