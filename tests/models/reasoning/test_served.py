"""The served backend against a real llama.cpp server (llama-cpp-python's OpenAI-compatible
server on the embedded GGUF, started on a free loopback port by the `llamacpp` fixtures)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ppl.experiments.cli import main
from ppl.experiments.methods import METHODS, MethodInputs
from ppl.experiments.sweep import read_results
from ppl.models.lm import LanguageModel, SamplingParams
from ppl.models.lm.served import (
    SERVER_KINDS,
    CapabilityError,
    ClientSettings,
    CompletionRequest,
    ModelNotServedError,
    ServedModel,
    ServerResponseError,
    ServerTimeoutError,
    ServerUnreachableError,
    load_tokenizer,
)
from ppl.models.reasoning.self_certainty import SelfCertainty
from ppl.models.reasoning.served_ssm import ServedReasoningSSM
from ppl.models.reasoning.ssm import ReasoningSSM
from ppl.models.reasoning.step_model import StepSettings
from tests.llamacpp_server import free_port

pytestmark = pytest.mark.xdist_group("llamacpp")  # one server per worker that runs these

PROMPTS = (
    "What is 2 + 3? Answer in two short paragraphs.",
    "List three colors, one per paragraph.",
    "Name a planet and say one fact about it.",
)
GREEDY = StepSettings(
    max_step_tokens=24, max_steps=3, sampling=SamplingParams(temperature=0), chat=True
)
SMALL = StepSettings(
    max_step_tokens=8, max_steps=3, sampling=SamplingParams(temperature=1.0), chat=True
)


def served(server, **settings) -> ServedModel:
    return ServedModel(
        server.base_url,
        server.model,
        load_tokenizer(server.model),
        settings=ClientSettings(**settings),
    )


def some_words(candidates):
    return np.asarray([min(1.0, 0.2 + 0.1 * len(t.split())) for t in candidates.texts])


def test_capabilities_are_detected_from_the_server(llamacpp):
    model = served(llamacpp)
    assert model.capabilities == SERVER_KINDS["llama-cpp-python"]
    assert model.name == llamacpp.model


def test_greedy_steps_match_the_in_process_runtime(llamacpp_f32):
    """Same float32 GGUF, temperature 0: the first step of every prompt is the same text, and
    every later served step is what the in-process runtime generates from the same text."""
    lm = LanguageModel.load(llamacpp_f32.model)
    model = served(llamacpp_f32)
    ssm = ServedReasoningSSM(model, PROMPTS, some_words, settings=GREEDY)
    particles = ssm.initial_sample(jax.random.key(0), 1)
    for t in range(GREEDY.max_steps):
        particles = ssm.transition_sample(jax.random.key(t), t, particles)
    local = ReasoningSSM(lm, PROMPTS, some_words, settings=GREEDY)
    first = local.transition_sample(
        jax.random.key(0), 0, local.initial_sample(jax.random.key(0), 1)
    )
    first_steps = [
        lm.tokenizer.decode(path[0], skip_special_tokens=True)
        for path in local.trace(first, range(3))
    ]
    assert [steps[0].text for steps in particles.generations.steps] == first_steps
    for g, steps in enumerate(particles.generations.steps):
        for k, step in enumerate(steps):
            prefix = model.format_prompt(PROMPTS[g], chat=True) + "".join(s.text for s in steps[:k])
            expected = lm.generate(
                jax.random.key(0),
                [prefix],
                max_new_tokens=GREEDY.max_step_tokens,
                sampling=GREEDY.sampling,
                stop=[GREEDY.delimiter],
            )
            ids = expected.token_ids[0]
            assert step.text == lm.tokenizer.decode(ids, skip_special_tokens=True)
            assert step.eos == (ids[-1] in lm.tokenizer.eos_token_ids)


@pytest.mark.parametrize("method", ["pf", "pg", "bon", "beam"])
def test_methods_over_the_server_spend_their_budget(llamacpp, method):
    """The budget accounting of tests/experiments/test_reasoning_methods.py, over the server."""
    budget = 4
    inputs = MethodInputs(served(llamacpp), PROMPTS[:2], some_words, budget, settings=SMALL)
    for outcome in METHODS.get(method)(jax.random.key(1), inputs):
        assert outcome.spent["generations"] == budget
        assert outcome.spent["verifier_calls"] == outcome.spent["steps"]
        assert budget <= outcome.spent["steps"] <= budget * SMALL.max_steps
        assert outcome.spent["steps"] <= outcome.spent["tokens"]
        assert outcome.spent["tokens"] <= SMALL.max_step_tokens * outcome.spent["steps"]
        assert len(outcome.texts) == budget and all(outcome.texts)


def test_seeded_runs_repeat_and_self_certainty_reads_served_logprobs(llamacpp):
    model = served(llamacpp)
    settings = StepSettings(max_step_tokens=4, max_steps=1, sampling=SamplingParams(1.0), chat=True)
    ssm = ServedReasoningSSM(model, PROMPTS[:1], SelfCertainty(), settings=settings)
    runs = []
    for _ in range(2):
        particles = ssm.transition_sample(
            jax.random.key(3), 0, ssm.initial_sample(jax.random.key(0), 2)
        )
        runs.append(particles)
    assert ssm.texts(runs[0]) == ssm.texts(runs[1])
    rewards = np.asarray(runs[0].reward)
    assert np.all((rewards > 0) & (rewards <= 1))


def test_wrong_model_name_lists_the_served_models(llamacpp):
    with pytest.raises(ModelNotServedError, match="does not serve model 'gpt-4o'; it serves: /"):
        ServedModel(llamacpp.base_url, "gpt-4o", load_tokenizer(llamacpp.model))


def test_unreachable_server_is_reported_after_retries():
    url = f"http://127.0.0.1:{free_port()}"
    settings = ClientSettings(max_retries=2, backoff_s=0.01)
    with pytest.raises(ServerUnreachableError, match=r"cannot reach .* after 3 attempts"):
        ServedModel(url, "m", settings=settings)


def test_client_errors_are_typed_and_not_retried(llamacpp):
    model = served(llamacpp, max_retries=3, backoff_s=5.0)  # a retry would take >= 5 s
    bad = CompletionRequest(prompt="hi", max_tokens=4, top_k=-1)  # the server requires >= 0
    with pytest.raises(
        ServerResponseError, match=r"HTTP 500: .*top_k.*greater than or equal to 0"
    ) as error:
        model.complete([bad])
    assert error.value.status == 500


def test_a_request_past_its_timeout_is_reported(llamacpp):
    model = served(llamacpp)
    slow = ServedModel(
        llamacpp.base_url,
        llamacpp.model,
        model.tokenizer,
        settings=ClientSettings(timeout_s=0.05),
    )
    with pytest.raises(ServerTimeoutError, match="longer than 0.05 s"):
        slow.complete([CompletionRequest(prompt="Once upon a time", max_tokens=256)])


def test_a_verifier_that_needs_logprobs_refuses_a_server_without_them(llamacpp):
    model = ServedModel(
        llamacpp.base_url,
        llamacpp.model,
        load_tokenizer(llamacpp.model),
        capabilities=SERVER_KINDS["generic"],
    )
    with pytest.raises(CapabilityError, match="log probabilities, which this verifier"):
        ServedReasoningSSM(model, PROMPTS[:1], SelfCertainty(), settings=SMALL)
    with pytest.raises(CapabilityError, match="proposal_correction needs log q"):
        ServedReasoningSSM(
            model,
            PROMPTS[:1],
            some_words,
            settings=StepSettings(sampling=SamplingParams(0.7)),
            proposal_correction=True,
        )


def test_a_server_that_cannot_say_why_it_stopped_needs_the_tokenizer(llamacpp):
    with pytest.raises(ValueError, match="pass the model's tokenizer"):
        ServedModel(llamacpp.base_url, llamacpp.model)


def test_ppl_scale_runs_over_the_server(llamacpp, tmp_path, capsys):
    out = tmp_path / "served.jsonl"
    argv = ["scale", "--backend", "openai", "--base-url", llamacpp.base_url]
    argv += ["--model", llamacpp.model, "--task", "word_arithmetic", "--methods", "bon"]
    argv += ["--budgets", "1", "--problems", "1", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    [record] = read_results(out)
    assert record["model"] == llamacpp.model and record["spent"]["generations"] == 1
    assert "bon" in capsys.readouterr().out


def test_ppl_scale_names_what_the_served_backend_needs(capsys):
    assert main(["scale", "--backend", "openai", "--model", "m"]) == 2
    assert "--backend openai needs --base-url URL and --model NAME" in capsys.readouterr().err
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["scale", "--backend", "openai", "--base-url", url, "--model", "m"]) == 2
    assert "cannot reach" in capsys.readouterr().err
