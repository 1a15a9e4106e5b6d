"""Step-level decoding as a state-space model on an enumerable language model: particle
filtering's log Z and posterior over complete sequences against exact enumeration, the KV-cache
gather against recomputation, budget metering and the reporting of dead or NaN rewards."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.models.lm.errors import ContextLengthError
from ppl.models.lm.sampling import SamplingParams
from ppl.models.lm.tiny import alphabet_language_model
from ppl.models.reasoning.reward_weighting import RewardWeighting
from ppl.models.reasoning.ssm import ReasoningSSM, StepSettings
from ppl.samplers import host_smc
from tests.monte_carlo import evidence_ratio_z, mean_z

PROMPT = "ab"
STEP_CAP, MAX_STEPS = 2, 2
Z_BOUND = 4.0
KEY = jax.random.key(0)  # for initial_sample, which does not use it (prefill is deterministic)


@functools.cache
def language_model():
    return alphabet_language_model(jax.random.key(0), scale=0.3)


def reward_of_text(text: str) -> float:
    letters = [c for c in text if c in "ab"]
    return 0.2 + 0.6 * (letters.count("a") / len(letters) if letters else 0.5)


def letter_verifier(candidates):
    return np.asarray([reward_of_text(t) for t in candidates.texts])


@functools.cache
def next_token_probs(tokens: tuple[int, ...]) -> np.ndarray:
    lm = language_model()
    logits = lm.logits(lm.tokenizer.encode(PROMPT) + list(tokens))[-1]
    return np.asarray(jax.nn.softmax(np.asarray(logits, np.float64)))


def enumerate_generations() -> list[tuple[tuple[int, ...], float, list[float]]]:
    """Every complete generation: (tokens, log p, reward after each step)."""
    tokenizer = language_model().tokenizer
    newline, eos = tokenizer.encode("\n")[0], tokenizer.eos_token_ids[0]

    def steps_from(prefix, log_p, rewards):
        outcomes = []

        def tokens_from(step, log_p_step):
            probs = next_token_probs(prefix + step)
            for token, p in enumerate(probs):
                extended, lp = (*step, token), log_p_step + np.log(p)
                if token in (newline, eos) or len(extended) == STEP_CAP:
                    outcomes.append((extended, lp, token == eos))
                else:
                    tokens_from(extended, lp)

        tokens_from((), 0.0)
        complete = []
        for step, lp, ended in outcomes:
            tokens = prefix + step
            text = tokenizer.decode(list(tokens), skip_special_tokens=True)
            path_rewards = [*rewards, reward_of_text(text)]
            if ended or len(path_rewards) == MAX_STEPS:
                complete.append((tokens, log_p + lp, path_rewards))
            else:
                complete += steps_from(tokens, log_p + lp, path_rewards)
        return complete

    return steps_from((), 0.0, [])


def steps_of(tokens: tuple[int, ...]) -> list[list[int]]:
    """An enumerated generation split into its steps (as `ReasoningSSM.trace` gives them)."""
    tokenizer = language_model().tokenizer
    newline, eos = tokenizer.encode("\n")[0], tokenizer.eos_token_ids[0]
    steps, current = [], []
    for token in tokens:
        current.append(token)
        if token in (newline, eos) or len(current) == STEP_CAP:
            steps.append(current)
            current = []
    return steps


AGGREGATE = {"product": np.prod, "min": np.min, "last": lambda r: r[-1]}


def exact_posterior(aggregation: str) -> tuple[dict, float]:
    paths = enumerate_generations()
    assert abs(sum(np.exp(lp) for _, lp, _ in paths) - 1) < 1e-6  # the enumeration is complete
    mass = {tokens: np.exp(lp) * AGGREGATE[aggregation](r) for tokens, lp, r in paths}
    z = sum(mass.values())
    return {tokens: m / z for tokens, m in mass.items()}, float(np.log(z))


def make_ssm(num_groups, weighting, temperature=1.0, correction=False, verifier=letter_verifier):
    settings = StepSettings(
        delimiter="\n",
        max_step_tokens=STEP_CAP,
        max_steps=MAX_STEPS,
        sampling=SamplingParams(temperature=temperature),
    )
    return ReasoningSSM(
        language_model(), [PROMPT] * num_groups, verifier, weighting, settings, correction
    )


@pytest.mark.parametrize(
    ("aggregation", "temperature", "correction"),
    [("product", 1.0, False), ("min", 1.0, False), ("last", 1.0, False), ("product", 0.7, True)],
)
def test_particle_filter_matches_enumeration(aggregation, temperature, correction):
    posterior, log_z = exact_posterior(aggregation)
    groups, particles = 500, 8
    ssm = make_ssm(groups, RewardWeighting("bernoulli", aggregation), temperature, correction)
    result = host_smc.run(
        jax.random.key(1),
        ssm,
        particles,
        ssm.num_steps,
        ess_threshold=1.0,
        progress=False,
    )
    assert abs(evidence_ratio_z(result.log_evidence, log_z)) < Z_BOUND
    # Z_hat * Σ_i W_i 1[x_i = s] is unbiased for Z * π(s)
    paths = ssm.token_ids(result.state.particles.generations)
    weights = np.exp(result.log_weights) * np.exp(result.log_evidence - log_z)[:, None]
    keys = sorted(posterior)
    index = {tokens: k for k, tokens in enumerate(keys)}
    estimates = np.zeros((groups, len(keys)))
    for row, tokens in enumerate(paths):
        estimates[row // particles, index[tuple(tokens)]] += weights.reshape(-1)[row]
    target = np.asarray([posterior[k] for k in keys])
    # sequences with posterior >= 1% one by one (>= 40 expected hits), the rest pooled
    common = target >= 0.01
    pooled = np.column_stack([estimates[:, common], estimates[:, ~common].sum(axis=1)])
    pooled_target = np.append(target[common], target[~common].sum())
    assert np.all(np.abs(mean_z(pooled, pooled_target)) < Z_BOUND + 0.5)


def test_gathered_cache_gives_the_same_next_token_distribution_as_recomputation():
    lm = language_model()
    ssm = ReasoningSSM(
        lm,
        ["ab", "b"],
        letter_verifier,
        settings=StepSettings(delimiter="\n", max_step_tokens=4, max_steps=3),
    )
    particles = ssm.transition_sample(jax.random.key(2), 1, ssm.initial_sample(KEY, 4))
    ancestors = np.asarray([3, 3, 0, 1, 6, 4, 4, 5])
    gathered = ssm.gather(particles, ancestors)
    extended = ssm.transition_sample(jax.random.key(3), 2, gathered)
    for state in (gathered, extended):
        generations = state.generations
        for row, tokens in enumerate(ssm.token_ids(generations)):
            prompt = lm.tokenizer.encode(ssm.prompts[row // 4])
            expected = lm.logits(prompt + tokens)[-1]
            np.testing.assert_allclose(generations.logits[row], expected, atol=2e-5)


def test_budget_counts_what_was_generated_and_scored():
    ssm = make_ssm(3, RewardWeighting())
    result = host_smc.run(
        jax.random.key(4), ssm, 5, ssm.num_steps, ess_threshold=0.0, progress=False
    )
    generations = result.state.particles.generations  # no resampling: rows are lineages
    spent = result.state.particles.spent
    per_group = lambda x: np.asarray(x).reshape(3, 5).sum(axis=1)  # noqa: E731
    assert spent.generations.tolist() == [5, 5, 5]
    assert spent.tokens.tolist() == per_group(generations.num_tokens).tolist()
    assert spent.steps.tolist() == per_group(generations.num_steps).tolist()
    assert spent.verifier_calls.tolist() == spent.steps.tolist()


def test_zero_and_nan_rewards_are_reported_not_raised():
    def verifier(candidates):  # prompt group 0: every reward 0; group 1: NaN for one row
        rewards = np.where(candidates.groups == 0, 0.0, 0.5)
        rewards[candidates.rows == 5] = np.nan
        return rewards

    ssm = make_ssm(2, RewardWeighting(), verifier=verifier)
    result = host_smc.run(jax.random.key(5), ssm, 4, ssm.num_steps, progress=False)
    assert result.all_dead.tolist() == [True, False]
    assert result.infos[0].num_nan.tolist() == [0, 1]
    assert np.isfinite(result.log_evidence[1])


def test_verifier_output_is_checked():
    ssm = make_ssm(1, RewardWeighting(), verifier=lambda c: np.full(len(c), 2.0))
    with pytest.raises(ValueError, match="outside"):
        ssm.transition_sample(jax.random.key(0), 1, ssm.initial_sample(KEY, 2))


def test_prompt_longer_than_the_context_is_a_clear_error():
    with pytest.raises(ContextLengthError, match="context length"):
        ReasoningSSM(language_model(), ["ab" * 40], letter_verifier)


def test_replayed_reference_matches_the_original_generation():
    ssm = make_ssm(2, RewardWeighting())
    result = host_smc.run(jax.random.key(6), ssm, 3, ssm.num_steps, progress=False)
    final = result.state.particles
    rows = [1, 5]
    reference = ssm.trace(final, rows)
    replay = make_ssm(2, RewardWeighting())
    particles = replay.conditional_initial_sample(KEY, 3, [0, 3], reference)
    for t in range(MAX_STEPS):
        particles = replay.conditional_transition_sample(
            jax.random.key(t), t + 1, particles, [0, 3], reference
        )
    for original, copy in zip(rows, [0, 3], strict=True):
        a, b = final.generations, particles.generations
        assert ssm.token_ids(a, [original]) == replay.token_ids(b, [copy])
        for field in ("model_logprob", "sampling_logprob", "log_value"):
            source = final if field == "log_value" else a
            target = particles if field == "log_value" else b
            np.testing.assert_allclose(
                getattr(target, field)[copy], getattr(source, field)[original], atol=1e-4
            )
        np.testing.assert_allclose(b.logits[copy], a.logits[original], atol=1e-4)
        assert bool(b.finished[copy]) == bool(a.finished[original])


def test_conditional_kernel_leaves_the_exact_posterior_invariant():
    """References drawn from the enumerated posterior; one conditional SMC sweep and a draw
    from its final weights give draws from the same posterior."""
    from ppl.samplers import host_particle_gibbs as pg

    posterior, _ = exact_posterior("product")
    keys = sorted(posterior)
    probs = np.asarray([posterior[k] for k in keys])
    groups, particles = 1500, 4
    picks = np.random.default_rng(0).choice(len(keys), size=groups, p=probs)
    ssm = make_ssm(groups, RewardWeighting("bernoulli", "product"))
    reference = [steps_of(keys[i]) for i in picks]
    result = pg.run_conditional(
        jax.random.key(8), ssm, particles, ssm.num_steps, reference, progress=False
    )
    _, drawn = pg.draw_reference(jax.random.key(9), ssm, result)
    index = {k: i for i, k in enumerate(keys)}
    hits = np.zeros((groups, len(keys)))
    for g, path in enumerate(drawn):
        hits[g, index[tuple(t for step in path for t in step)]] = 1
    common = probs >= 0.01
    pooled = np.column_stack([hits[:, common], hits[:, ~common].sum(axis=1)])
    target = np.append(probs[common], probs[~common].sum())
    assert np.all(np.abs(mean_z(pooled, target)) < Z_BOUND + 0.5)


def test_in_place_gather_equals_the_full_gather():
    from ppl.models.reasoning.generations import gather_generations, gather_generations_in_place

    ssm = make_ssm(2, RewardWeighting())
    particles = ssm.transition_sample(jax.random.key(1), 1, ssm.initial_sample(KEY, 4))
    for ancestors in ([0, 0, 2, 2, 4, 5, 5, 5], [1, 1, 2, 3, 4, 5, 6, 7], [3, 2, 1, 0, 4, 5, 6, 7]):
        expected = jax.tree.map(
            np.asarray, gather_generations(particles.generations, jnp.asarray(ancestors))
        )
        copy = jax.tree.map(jnp.copy, particles.generations)  # the in-place gather consumes it
        result = gather_generations_in_place(copy, np.asarray(ancestors))
        jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, result), expected)


def tempered_posterior(beta: float) -> dict:
    paths = enumerate_generations()
    mass = {tokens: np.exp(lp) * np.prod(r) ** beta for tokens, lp, r in paths}
    total = sum(mass.values())
    return {tokens: m / total for tokens, m in mass.items()}


def test_parallel_tempering_sweep_leaves_the_tempered_posteriors_invariant():
    """Two-level ladders (beta 1 and 0.3) started from exact draws of each level's posterior:
    after one conditional sweep and a swap move, each level still draws from its posterior."""
    from ppl.samplers import host_parallel_tempering as pt

    ladders_count, particles, betas = 1000, 4, (1.0, 0.3)
    rng = np.random.default_rng(1)
    posteriors = [tempered_posterior(b) for b in betas]
    keys = sorted(posteriors[0])
    references = []
    for _ in range(ladders_count):
        for posterior in posteriors:
            probs = np.asarray([posterior[k] for k in keys])
            references.append(steps_of(keys[rng.choice(len(keys), p=probs)]))
    inverse_temperatures = np.tile(betas, ladders_count)
    settings = StepSettings(
        delimiter="\n", max_step_tokens=STEP_CAP, max_steps=MAX_STEPS, sampling=SamplingParams()
    )
    ssm = ReasoningSSM(
        language_model(),
        [PROMPT] * (2 * ladders_count),
        letter_verifier,
        RewardWeighting("bernoulli", "product"),
        settings,
        inverse_temperatures=inverse_temperatures,
    )
    result = pt.run(
        jax.random.key(3),
        ssm,
        particles,
        ssm.num_steps,
        1,
        np.arange(2 * ladders_count).reshape(-1, 2),
        inverse_temperatures,
        initial_references=references,
        progress=False,
    )
    assert 0.05 < result.swap_accepted.mean() < 0.95  # swaps happen, not always
    states = result.references
    index = {k: i for i, k in enumerate(keys)}
    for level, posterior in enumerate(posteriors):
        probs = np.asarray([posterior[k] for k in keys])
        hits = np.zeros((ladders_count, len(keys)))
        for ladder in range(ladders_count):
            path = states[2 * ladder + level]
            hits[ladder, index[tuple(t for step in path for t in step)]] = 1
        common = probs >= 0.01
        pooled = np.column_stack([hits[:, common], hits[:, ~common].sum(axis=1)])
        target = np.append(probs[common], probs[~common].sum())
        assert np.all(np.abs(mean_z(pooled, target)) < Z_BOUND + 0.5), level


def test_the_model_is_immutable_and_reads_n_from_the_particles():
    ssm = make_ssm(2, RewardWeighting())
    with pytest.raises(AttributeError, match="immutable"):
        ssm.settings = StepSettings()
    for n in (3, 5):  # one model object, two particle counts: nothing is kept on the model
        particles = ssm.transition_sample(jax.random.key(n), 1, ssm.initial_sample(KEY, n))
        assert ssm.groups(particles).tolist() == [0] * n + [1] * n
        assert particles.spent.generations.tolist() == [n, n]
        assert particles.spent.steps.tolist() == [n, n]
        assert particles.generations.cache.keys.shape[1] == 2 * n  # the KV cache's batch axis
    gathered = ssm.gather(particles, np.zeros(10, np.int32))
    assert gathered.spent is particles.spent  # what dead rows spent is not lost
