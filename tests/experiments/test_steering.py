"""Token-level steering against exact enumeration on a four-token language model: the
evidence estimates are unbiased and the weighted particles target the constrained posterior,
for every sampler, proposal, twist, critic and for prompt intersection; conditional SMC keeps
the posterior invariant and brackets log Z with plain SMC."""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.experiments.steering import steer, steering_problem, train_twist
from ppl.models.constraints.automata import regex
from ppl.models.constraints.llguidance_mask import GrammarMask
from ppl.models.lm.tiny import alphabet_language_model
from ppl.models.steering.twist import TwistHead
from tests.monte_carlo import evidence_ratio_z, mean_z

MAX_TOKENS = 3
PATTERN = "a*b?a*"
PROMPTS = ("ab", "ba")
Z_BOUND = 4.0
EOS = 3


@functools.cache
def language_model():
    return alphabet_language_model(jax.random.key(0), scale=0.3)


@functools.cache
def next_token_probs(prompt: str, prefix: tuple[int, ...]) -> np.ndarray:
    lm = language_model()
    ids = lm.encode_prompts([prompt])[0] + list(prefix)
    return np.asarray(jax.nn.softmax(lm.logits(ids)[-1]), np.float64)


def exact_posterior(
    prompts: tuple[str, ...], pattern: str | None, language: Callable[[bytes], bool] | None = None
) -> tuple[dict, float]:
    """π(x) ∝ Π_k p(x | prompt_k) 1[x matches] over every complete x, and log Z (`language`
    instead of `pattern`: any membership test)."""
    automaton = regex(pattern) if pattern else None
    if language is None:
        language = lambda data: automaton is None or automaton.complete(data) == 0.0  # noqa: E731
    token_bytes = language_model().tokenizer.token_bytes()
    mass = {}
    for length in range(1, MAX_TOKENS + 1):
        for tokens in itertools.product(range(4), repeat=length):
            if EOS in tokens[:-1] or (length < MAX_TOKENS and tokens[-1] != EOS):
                continue
            p = 1.0
            for k, prompt in itertools.product(range(length), prompts):
                p *= next_token_probs(prompt, tokens[:k])[tokens[k]]
            data = b"".join(token_bytes[t] for t in tokens)
            if language(data):
                mass[tokens] = p
    z = sum(mass.values())
    return {x: m / z for x, m in mass.items()}, float(np.log(z))


def test_enumeration_is_complete():
    posterior, log_z = exact_posterior(("ab",), None)
    assert abs(log_z) < 1e-6 and len(posterior) == 1 + 3 + 3 * 3 * 4


def random_twist(seed: int) -> TwistHead:
    hidden = language_model().config.hidden_size
    mlp = eqx.nn.MLP(hidden + 1, "scalar", 8, 1, jax.nn.tanh, key=jax.random.key(seed))
    return TwistHead(mlp, jnp.zeros(hidden + 1), jnp.ones(hidden + 1))


def runs(
    method,
    prompts=("ab",),
    pattern=PATTERN,
    num_particles=3,
    num_runs=300,
    as_critic=False,
    grammar=None,
    **options,
):
    lm = language_model()
    automaton = regex(pattern) if pattern else None
    problem = steering_problem(
        lm,
        prompts,
        MAX_TOKENS,
        None if as_critic else automaton,
        critic=automaton if as_critic else None,
        chat=False,
        grammar=grammar(lm.tokenizer) if grammar is not None else None,
    )
    keys = jax.random.split(jax.random.key(7), num_runs)
    return [steer(k, lm, problem, method, num_particles, **options) for k in keys]


def check_against_enumeration(results, prompts=("ab",), pattern=PATTERN, language=None):
    posterior, log_z = exact_posterior(prompts, pattern, language)
    log_estimates = np.asarray([r.log_evidence for r in results])
    assert abs(evidence_ratio_z(log_estimates, log_z)) < Z_BOUND
    # E[Z_hat Σ_i W_i 1[x_i = s]] = Z π(s) for every complete s
    ratio = np.exp(log_estimates - log_z)
    mass = np.zeros((len(results), len(posterior)))
    index = {x: j for j, x in enumerate(posterior)}
    for r, result in enumerate(results):
        if np.isfinite(result.log_evidence):  # what breaks the constraint has weight 0
            assert np.all(result.satisfied | np.isneginf(result.log_weights))
        for ids, lw in zip(result.token_ids, result.log_weights, strict=True):
            if ratio[r] * np.exp(lw) > 0:
                mass[r, index[tuple(ids)]] += ratio[r] * np.exp(lw)
    target = np.asarray(list(posterior.values()))
    frequent = target > 0.02
    z = mean_z(mass[:, frequent], target[frequent])
    assert np.all(np.abs(z) < Z_BOUND), z


@pytest.mark.parametrize(
    "method, options",
    [
        ("smc", {"ess_threshold": 0.9}),
        ("smc", {"ess_threshold": 1.0, "resampling": "multinomial"}),
        ("is", {}),
        ("steer", {"num_beams": 2}),
        ("twisted", {"twist": random_twist(3), "ess_threshold": 1.0}),
    ],
)
def test_samplers_match_enumeration(method, options):
    check_against_enumeration(runs(method, **options))


def test_a_host_critic_matches_enumeration():
    """The constraint checked on the host after each token (no mask) targets the same π."""
    check_against_enumeration(runs("smc", as_critic=True, ess_threshold=1.0, num_particles=4))


def test_an_llguidance_regex_matches_enumeration():
    """The same language as a host-side llguidance mask instead of the token automaton."""
    mask = functools.partial(GrammarMask.regex, PATTERN)
    check_against_enumeration(runs("smc", pattern=None, grammar=mask, ess_threshold=0.9))


# a^n b a^n: not regular; "aba" fills the 3-token limit, so the mask cannot see the end
PALINDROME = 'start: "b" | "a" start "a"'


def test_an_llguidance_grammar_matches_enumeration():
    """A context-free grammar's mask, with rows cut by the token limit weighted by whether
    they are complete (llguidance cannot look ahead to the limit)."""
    language = lambda data: re.fullmatch(rb"(a*)b\1", data) is not None  # noqa: E731
    mask = functools.partial(GrammarMask.lark, PALINDROME)
    for method, options in [("smc", {"ess_threshold": 0.9}), ("is", {})]:
        results = runs(method, pattern=None, grammar=mask, **options)
        check_against_enumeration(results, pattern=None, language=language)


def test_prompt_intersection_matches_enumeration():
    check_against_enumeration(runs("smc", prompts=PROMPTS, ess_threshold=1.0), prompts=PROMPTS)


def test_sampling_from_the_model_estimates_the_satisfaction_probability():
    results = runs("rejection", num_particles=4, num_runs=200)
    _, log_z = exact_posterior(("ab",), PATTERN)
    log_estimates = [r.log_evidence for r in results]
    assert abs(evidence_ratio_z(log_estimates, log_z)) < Z_BOUND
    for r in results:  # weight 1 on the samples that satisfy (uniform if none does)
        if r.satisfied.any():
            np.testing.assert_array_equal(np.isfinite(r.log_weights), r.satisfied)


def test_conditional_smc_keeps_the_posterior_and_brackets_log_z():
    pattern = "b*a?"  # log Z_hat varies enough at N = 2 for the bracket to be measurable
    posterior, log_z = exact_posterior(("ab",), pattern)
    paths = list(posterior)
    rng = np.random.default_rng(0)
    references = rng.choice(len(paths), size=300, p=list(posterior.values()))
    lm = language_model()
    problem = steering_problem(lm, ["ab"], MAX_TOKENS, regex(pattern), chat=False)
    keys = jax.random.split(jax.random.key(11), references.size)
    counts = np.zeros((references.size, len(paths)))
    upper = []
    for r, (key, ref) in enumerate(zip(keys, references, strict=True)):
        key_run, key_pick = jax.random.split(key)
        result = steer(key_run, lm, problem, "csmc", 2, reference=list(paths[ref]))
        upper.append(result.log_evidence)
        counts[r, paths.index(tuple(result.token_ids[result.select(key_pick)]))] = 1
    target = np.asarray(list(posterior.values()))
    frequent = target > 0.02
    assert np.all(np.abs(mean_z(counts[:, frequent], target[frequent])) < Z_BOUND)
    smc_runs = runs("smc", pattern=pattern, num_particles=2, ess_threshold=1.0)
    lower = np.asarray([r.log_evidence for r in smc_runs])
    upper = np.asarray(upper)
    assert mean_z(upper, log_z) > 2.0  # E[log Z_cSMC] >= log Z, here with a visible gap
    assert mean_z(lower, log_z) < -2.0  # E[log Z_SMC] <= log Z


def test_a_fitted_twist_is_finite_and_keeps_the_target():
    lm = language_model()
    problem = steering_problem(lm, ["ab"], MAX_TOKENS, regex(PATTERN), chat=False)
    twist = train_twist(jax.random.key(0), lm, problem, num_rollouts=32, steps=50)
    values = twist(jnp.ones((2, lm.config.hidden_size)), jnp.asarray([1, 2]))
    assert np.all(np.isfinite(np.asarray(values)))
    check_against_enumeration(runs("twisted", twist=twist, ess_threshold=1.0, num_runs=200))


def test_conditional_smc_needs_a_reference_and_twisted_a_twist():
    lm = language_model()
    problem = steering_problem(lm, ["ab"], MAX_TOKENS, regex(PATTERN), chat=False)
    with pytest.raises(ValueError, match="reference"):
        steer(jax.random.key(0), lm, problem, "csmc", 2)
    with pytest.raises(ValueError, match="twist"):
        steer(jax.random.key(0), lm, problem, "twisted", 2)
    with pytest.raises(ValueError, match="unknown method"):
        steer(jax.random.key(0), lm, problem, "beam", 2)
