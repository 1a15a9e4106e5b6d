"""The shipped model organism: it loads through the runtime's Hugging Face loader, writes
blank-line-separated steps, stops at step boundaries and at its end-of-sequence token, and
solves a measured share of held-out problems."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from ppl.models.lm import LanguageModel, SamplingParams
from ppl.models.reasoning.chained_arithmetic import (
    make_problems,
    parse_answer,
    parse_step,
    prompt_text,
    solution_text,
    split_steps,
)
from ppl.models.reasoning.organism import load_organism, organism_path

GREEDY = SamplingParams(temperature=0.0)
# Held-out problems (the training script draws its data with seed 0 and evaluates on seed
# 1_000_003). Measured on them: greedy decoding solves 17 of the 32; at temperature 1.0, 8
# samples of each of the first 16 are right 33% of the time and cover 81% of the problems.
TEST_SEED, TEST_COUNT, MEASURED_GREEDY_CORRECT = 20_250_101, 32, 17


@pytest.fixture(scope="session")
def organism() -> LanguageModel:
    return load_organism()


@pytest.fixture(scope="session")
def greedy_solutions(organism):
    problems = make_problems(TEST_SEED, TEST_COUNT)
    out = organism.generate(
        jax.random.key(0),
        [prompt_text(p) for p in problems],
        max_new_tokens=128,
        sampling=GREEDY,
    )
    return problems, out


def test_checkpoint_files_and_config(organism):
    directory = organism_path()
    hf = json.loads((directory / "config.json").read_text())
    assert hf["model_type"] == "llama" and hf["architectures"] == ["LlamaForCausalLM"]
    config = organism.config
    assert config.vocab_size == hf["vocab_size"] == organism.tokenizer.vocab_size
    assert config.hidden_size == hf["hidden_size"]
    assert config.intermediate_size == hf["intermediate_size"]
    assert config.num_layers == hf["num_hidden_layers"]
    assert config.num_heads == hf["num_attention_heads"]
    assert config.num_kv_heads == hf["num_key_value_heads"]
    assert config.context_length == hf["max_position_embeddings"]
    assert config.tie_embeddings and config.architecture == "llama"
    assert organism.tokenizer.eos_token_ids == (hf["eos_token_id"],)
    assert organism.tokenizer.token_to_id("<|eos|>") == hf["eos_token_id"]
    assert (directory / "model.safetensors").stat().st_size < 20 * 2**20


def test_tokenizer_spells_numbers_digit_by_digit_and_round_trips(organism):
    problem = make_problems(TEST_SEED, 1)[0]
    tokenizer = organism.tokenizer
    for text in (prompt_text(problem), solution_text(problem)):
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
        pieces = [tokenizer.decode([i]) for i in ids]
        assert all(len(p) == 1 for p in pieces if any(ch.isdigit() for ch in p))
    assert tokenizer.encode("\n\n") == [tokenizer.token_to_id("ĊĊ")]


def test_generation_stops_at_a_step_boundary(organism):
    problem = make_problems(TEST_SEED, 1)[0]
    out = organism.generate(
        jax.random.key(0), [prompt_text(problem)], max_new_tokens=64, sampling=GREEDY, stop=["\n\n"]
    )
    (text,) = out.texts
    assert out.finish_reasons == ["stop"]
    assert text.endswith("\n\n") and text.count("\n\n") == 1
    step = parse_step(text)
    assert step is not None and step.left == int(problem.steps[0].split()[0])


def test_greedy_solutions_are_steps_then_the_answer_then_eos(greedy_solutions):
    problems, out = greedy_solutions
    assert out.finish_reasons == ["eos"] * len(problems)
    same_length = 0
    for problem, text in zip(problems, out.texts, strict=True):
        blocks = text.split("\n\n")
        assert all(parse_step(b) is not None for b in blocks[:-1]), text
        assert parse_answer(blocks[-1]) is not None and blocks[-1].startswith("The answer is")
        same_length += len(blocks) == len(problem.steps) + 1
    assert same_length >= 0.9 * len(problems)  # one step per operation (measured: all)


def test_greedy_accuracy_is_what_was_measured(greedy_solutions):
    problems, out = greedy_solutions
    correct = sum(
        parse_answer(split_steps(t)[-1]) == p.answer
        for p, t in zip(problems, out.texts, strict=True)
    )
    # greedy decoding is deterministic; the margin absorbs float differences between machines
    # that flip a near-tie token. Both directions fail: a stronger checkpoint would change the
    # scaling curves the benchmarks were calibrated on as much as a broken one.
    assert abs(correct - MEASURED_GREEDY_CORRECT) <= 3, correct


def test_sampled_accuracy_is_informative_for_scaling(organism):
    """At temperature 1.0 single samples are right well below certainty and well above
    never, and 8 samples cover clearly more problems than one (pass@8 >> pass@1)."""
    problems = make_problems(TEST_SEED, 16)
    samples = 8
    out = organism.generate(
        jax.random.key(1),
        [prompt_text(p) for p in problems],
        max_new_tokens=128,
        sampling=SamplingParams(temperature=1.0),
        num_samples=samples,
    )
    correct = np.asarray(
        [parse_answer(t) == problems[i // samples].answer for i, t in enumerate(out.texts)]
    ).reshape(len(problems), samples)
    pass_at_1, coverage = correct.mean(), correct.any(axis=1).mean()
    assert 0.1 <= pass_at_1 <= 0.6, pass_at_1  # measured 0.33
    assert coverage >= pass_at_1 + 0.25, (pass_at_1, coverage)  # measured 0.81
