"""The reasoning methods at a common budget: each spends what it claims, per problem."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from ppl.experiments.methods import METHODS, MethodInputs
from ppl.models.lm.sampling import SamplingParams
from ppl.models.lm.tiny import alphabet_language_model
from ppl.models.reasoning.step_model import StepSettings

SETTINGS = StepSettings(
    delimiter="\n", max_step_tokens=3, max_steps=3, sampling=SamplingParams(temperature=1.0)
)


@functools.cache
def language_model():
    return alphabet_language_model(jax.random.key(0), scale=0.3)


def a_fraction(candidates):
    return np.asarray([0.1 + 0.8 * t.count("a") / max(1, len(t)) for t in candidates.texts])


def run(method, budget, prompts=("ab", "ba")):
    key = jax.random.key(7)
    inputs = MethodInputs(language_model(), prompts, a_fraction, budget, settings=SETTINGS)
    return METHODS.get(method)(key, inputs)


@pytest.mark.parametrize("method", ["pf", "pg", "pgpt", "bon", "wbon", "sc", "bom", "beam", "dvts"])
@pytest.mark.parametrize("budget", [1, 4, 8])
def test_every_method_spends_its_budget(method, budget):
    outcomes = run(method, budget)
    assert [o.problem for o in outcomes] == [0, 1]
    for outcome in outcomes:
        assert outcome.method == method and outcome.budget == budget
        assert outcome.spent["generations"] == budget
        # pg pools its sweeps; pgpt pools the sweeps of its target chain only
        pooled = budget // 2 if method == "pgpt" and budget >= 8 else budget
        assert len(outcome.candidates) == len(outcome.scores) == pooled
        # every step is scored once, and a step has 1..max_step_tokens tokens
        assert outcome.spent["verifier_calls"] == outcome.spent["steps"]
        assert budget <= outcome.spent["steps"] <= budget * SETTINGS.max_steps
        assert outcome.spent["steps"] <= outcome.spent["tokens"]
        assert outcome.spent["tokens"] <= SETTINGS.max_step_tokens * outcome.spent["steps"]


def test_particle_filtering_concentrates_on_the_verifier_preferred_text():
    """A verifier that favours 'a': particle filtering's weighted final particles hold more
    'a' than independent samples at the same budget."""
    lm, prompts, key = language_model(), ["ab"] * 16, jax.random.key(3)
    sharp = lambda c: a_fraction(c) ** 4  # noqa: E731
    pf = METHODS.get("pf")(key, MethodInputs(lm, prompts, sharp, 8, settings=SETTINGS))
    sc = METHODS.get("sc")(key, MethodInputs(lm, prompts, sharp, 8, settings=SETTINGS))

    def fraction(text):
        return text.count("a") / max(1, len(text))

    pf_mean = np.mean([np.exp(o.scores) @ np.asarray([fraction(t) for t in o.texts]) for o in pf])
    sc_mean = np.mean([np.mean([fraction(t) for t in o.texts]) for o in sc])
    assert pf_mean > sc_mean + 0.1
    assert all(o.log_evidence is not None and not o.all_dead for o in pf)


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="unknown method"):
        METHODS.get("magic")(
            jax.random.key(0), MethodInputs(language_model(), ["a"], a_fraction, 2)
        )
