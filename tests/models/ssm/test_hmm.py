"""The forward algorithm against brute-force enumeration of state paths, and SMC on an HMM:
unbiased evidence for every resampling scheme and threshold, filtering probabilities within
Monte Carlo error."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.models.ssm.hmm import HiddenMarkov, bootstrap, forward_algorithm, simulate
from ppl.samplers import smc
from ppl.samplers.resampling import SCHEMES
from tests.monte_carlo import evidence_ratio_z

Z_BOUND = 4.0  # |z| bound for one test statistic at a fixed seed
NUM_STEPS = 15


def tiny_model() -> HiddenMarkov:
    """K = 3, M = 2, with a zero transition probability (a -inf in log space)."""
    return HiddenMarkov(
        initial_probs=jnp.asarray([0.5, 0.3, 0.2]),
        transition_matrix=jnp.asarray([[0.7, 0.2, 0.1], [0.0, 0.6, 0.4], [0.3, 0.3, 0.4]]),
        emission_probs=jnp.asarray([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]]),
    )


def brute_force(model: HiddenMarkov, ys: np.ndarray) -> tuple[float, np.ndarray]:
    """log p(y_{0:T-1}) and p(x_t | y_{0:t}) [T, K] by summing p(x_{0:t}, y_{0:t}) over all
    K^(t+1) state paths, in float64."""
    pi, a, b = (np.asarray(v, np.float64) for v in model)
    k = pi.size
    filtered, evidence = [], 0.0
    for t in range(len(ys)):
        marginal = np.zeros(k)
        for path in itertools.product(range(k), repeat=t + 1):
            p = pi[path[0]] * b[path[0], ys[0]]
            for s in range(1, t + 1):
                p *= a[path[s - 1], path[s]] * b[path[s], ys[s]]
            marginal[path[-1]] += p
        evidence = marginal.sum()
        filtered.append(marginal / evidence)
    return float(np.log(evidence)), np.stack(filtered)


def test_forward_algorithm_matches_enumeration():
    model = tiny_model()
    for seed in range(3):
        _, ys = simulate(jax.random.key(seed), model, 5)
        expected_ll, expected_filtered = brute_force(model, np.asarray(ys))
        result = forward_algorithm(model, ys)
        np.testing.assert_allclose(result.log_likelihood, expected_ll, rtol=1e-5)
        np.testing.assert_allclose(result.filtered_probs, expected_filtered, atol=1e-6)


def test_simulate_shapes_and_support():
    states, ys = simulate(jax.random.key(0), tiny_model(), 50)
    assert states.shape == ys.shape == (50,)
    assert states.dtype == ys.dtype == jnp.int32
    assert set(np.asarray(states).tolist()) <= {0, 1, 2}
    assert set(np.asarray(ys).tolist()) <= {0, 1}
    # the zero transition 1 -> 0 never happens
    pairs = set(zip(np.asarray(states[:-1]).tolist(), np.asarray(states[1:]).tolist(), strict=True))
    assert (1, 0) not in pairs


def smc_model() -> HiddenMarkov:
    """K = 3 with informative emissions; state 2 is impossible at t = 0."""
    return HiddenMarkov(
        initial_probs=jnp.asarray([0.6, 0.4, 0.0]),
        transition_matrix=jnp.asarray([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]),
        emission_probs=jnp.asarray([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]),
    )


@functools.cache
def problem():
    model = smc_model()
    _, ys = simulate(jax.random.key(3), model, NUM_STEPS)
    return model, ys, forward_algorithm(model, ys)


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@pytest.mark.parametrize("threshold", [0.5, 1.0])
def test_evidence_is_unbiased_on_the_natural_scale(scheme, threshold):
    model, ys, exact = problem()
    fk = bootstrap(model, ys)

    def one(key):
        result = smc.run(key, fk, 16, NUM_STEPS, scheme, threshold, keep_history=False)
        return result.log_evidence

    runs = 2000
    log_z = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(11), runs))
    z = evidence_ratio_z(log_z, float(exact.log_likelihood))
    assert abs(z) < Z_BOUND, z


def test_filtering_probabilities_match_forward_algorithm():
    model, ys, exact = problem()
    fk = bootstrap(model, ys)
    num_states = model.initial_probs.shape[0]

    def one(key):
        result = smc.run(key, fk, 2000, NUM_STEPS)
        weights = jax.nn.softmax(result.log_weights, axis=-1)  # [T, N]
        one_hot = jax.nn.one_hot(result.particles, num_states)  # [T, N, K]
        return jnp.einsum("tn,tnk->tk", weights, one_hot)

    runs = 100
    probs = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(5), runs)))
    mean, sd = probs.mean(0), probs.std(0, ddof=1)
    expected = np.asarray(exact.filtered_probs)
    exact_cells = sd == 0  # e.g. the impossible state at t = 0
    assert exact_cells[0, 2]
    np.testing.assert_allclose(mean[exact_cells], expected[exact_cells], atol=1e-6)
    z = (mean[~exact_cells] - expected[~exact_cells]) / (sd[~exact_cells] / np.sqrt(runs))
    assert np.all(np.abs(z) < Z_BOUND + 0.5), z  # max over T * K cells


GOOD = {
    "initial_probs": jnp.asarray([0.5, 0.5]),
    "transition_matrix": jnp.asarray([[0.9, 0.1], [0.2, 0.8]]),
    "emission_probs": jnp.asarray([[0.7, 0.3], [0.1, 0.9]]),
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"transition_matrix": jnp.asarray([[0.9, 0.6], [0.2, 0.8]])},
            r"transition_matrix must sum to 1 \(rows \[0\]\), got sums \[1.5, 1.0\]",
        ),
        (
            {"transition_matrix": jnp.asarray([[1.1, -0.1], [0.2, 0.8]])},
            "transition_matrix has negative entries",
        ),
        ({"initial_probs": jnp.asarray([1.0, 1.0])}, "initial_probs must sum to 1, got sums 2.0"),
        (
            {"emission_probs": jnp.asarray([[jnp.nan, 0.3], [0.1, 0.9]])},
            "emission_probs holds 1 NaN or infinite",
        ),
    ],
)
def test_rows_that_are_not_probabilities_are_named(change, message):
    model = HiddenMarkov(**(GOOD | change))
    ys = jnp.zeros(3, jnp.int32)
    for call in (
        lambda: simulate(jax.random.key(0), model, 3),
        lambda: forward_algorithm(model, ys),
        lambda: bootstrap(model, ys),
    ):
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize(
    ("observations", "message"),
    [
        (jnp.asarray([0, 5, 1]), r"symbols in \[0, 2\); at t = \[1\] they are \[5\]"),
        (jnp.asarray([-1, 0]), r"at t = \[0\] they are \[-1\]"),
        (jnp.asarray([0.5, 1.0]), "observations must be integer symbols, got dtype float32"),
        (jnp.zeros((3, 1), jnp.int32), r"1-D \[T >= 1\] array of symbols, got \(3, 1\)"),
        (jnp.zeros(0, jnp.int32), r"got \(0,\)"),
    ],
)
def test_bad_observations_are_named(observations, message):
    model = HiddenMarkov(**GOOD)
    with pytest.raises(ValueError, match=message):
        forward_algorithm(model, observations)
    with pytest.raises(ValueError, match=message):
        bootstrap(model, observations)


@pytest.mark.parametrize("num_steps", [0, -1, 2.5])
def test_bad_step_counts_are_named(num_steps):
    with pytest.raises(ValueError, match=f"num_steps must be .*>= 1, got {num_steps}"):
        simulate(jax.random.key(0), HiddenMarkov(**GOOD), num_steps)
