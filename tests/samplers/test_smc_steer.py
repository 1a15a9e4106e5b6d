"""Fearnhead-Clifford resampling without replacement: unbiased weights, exact totals, the
deterministic survivors; SMC steer's evidence on a linear-Gaussian model against Kalman."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.samplers import smc_steer
from tests.monte_carlo import mean_z

Z_BOUND = 4.0


def threshold(weights: np.ndarray, num_samples: int) -> float:
    """c with Σ min(c w, 1) = N, by bisection (the oracle)."""
    low, high = 0.0, 1e12
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if np.minimum(mid * weights, 1).sum() < num_samples else (low, mid)
    return high


@pytest.mark.parametrize("seed", range(5))
def test_survivors_and_their_weights(seed):
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(12, 0.3))
    indices, log_weights, num_kept = smc_steer.resample_without_replacement(
        jax.random.key(seed), jnp.log(jnp.asarray(weights)), 5
    )
    indices, new = np.asarray(indices), np.exp(np.asarray(log_weights))
    np.testing.assert_allclose(new.sum(), 1.0, rtol=1e-5)
    c = threshold(weights, 5)
    kept = np.flatnonzero(c * weights >= 1)
    assert int(num_kept) == kept.size
    assert set(indices[: kept.size]) == set(kept)
    np.testing.assert_allclose(new[: kept.size], weights[indices[: kept.size]], rtol=1e-5)
    np.testing.assert_allclose(new[kept.size :], 1 / c, rtol=1e-4)
    assert len(set(indices[kept.size :]) & set(kept)) == 0


def test_expected_weight_of_every_candidate_is_its_weight():
    weights = np.asarray([0.4, 0.2, 0.1, 0.1, 0.08, 0.06, 0.04, 0.02])
    keys = jax.random.split(jax.random.key(0), 4000)
    draw = jax.vmap(lambda k: smc_steer.resample_without_replacement(k, jnp.log(weights), 3))
    indices, log_weights, _ = draw(keys)
    mass = np.zeros((keys.shape[0], weights.size))
    np.add.at(mass, (np.arange(keys.shape[0])[:, None], np.asarray(indices)), np.exp(log_weights))
    np.testing.assert_allclose(mass[:, 0], 0.4, rtol=1e-5)  # kept deterministically
    z = mean_z(mass[:, 1:], weights[1:])
    assert np.all(np.abs(z) < Z_BOUND), z


def test_few_positive_weights_all_survive():
    log_weights = jnp.log(jnp.asarray([0.5, 0.0, 0.5, 0.0, 0.0]))
    indices, new, num_kept = smc_steer.resample_without_replacement(
        jax.random.key(0), log_weights, 3
    )
    assert int(num_kept) == 2
    assert set(np.asarray(indices)[:2]) == {0, 2}
    assert np.isneginf(np.asarray(new)[2])


def test_evidence_is_unbiased_on_a_linear_gaussian_model():
    from ppl.models.ssm.linear_gaussian import LinearGaussian, bootstrap, kalman_filter, simulate

    params = LinearGaussian(
        initial_mean=jnp.zeros(1),
        initial_cov=jnp.eye(1),
        transition=jnp.asarray([[0.9]]),
        transition_cov=jnp.asarray([[0.5]]),
        observation=jnp.eye(1),
        observation_cov=jnp.eye(1),
    )
    _, observations = simulate(jax.random.key(1), params, 8)
    exact = float(kalman_filter(params, observations).log_likelihood)
    model = bootstrap(params, observations)
    run = jax.jit(jax.vmap(lambda k: smc_steer.run(k, model, 4, 8, 3).log_evidence))
    estimates = np.asarray(run(jax.random.split(jax.random.key(2), 2000)))
    assert abs(mean_z(np.exp(estimates - exact), 1.0)) < Z_BOUND
    assert np.std(estimates) > 0.05  # an estimate, not the exact value
