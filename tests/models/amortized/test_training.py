"""Training on fresh simulations moves the network toward the exact posterior."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from models.amortized.distribution_transformer import DistributionTransformer
from models.amortized.tasks import LinearGaussianTask
from models.amortized.training import fit
from ppl.gaussian_mixture import kl_divergence, linear_gaussian_update

TASK = LinearGaussianTask(jnp.eye(1), 0.5**2 * jnp.eye(1), num_components=2, num_data=5)


def mean_kl(network, num_problems=30):
    """Mean KL(exact ‖ network) over held-out problems (keys unused in training)."""
    total = []
    for index in range(num_problems):
        problem = TASK.sample(jax.random.fold_in(jax.random.key(99), index))
        exact = TASK.exact_posterior(problem.prior, problem.data)
        kl, _ = kl_divergence(jax.random.key(index), exact, network(problem.prior, problem.data))
        total.append(float(kl))
    return float(np.mean(total))


def test_the_stacked_update_equals_observing_one_point_at_a_time():
    problem = TASK.sample(jax.random.key(0))
    stacked = TASK.exact_posterior(problem.prior, problem.data)
    state = problem.prior
    for point in problem.data:
        state, _ = linear_gaussian_update(
            state, TASK.observation_matrix, TASK.noise_covariance, point
        )
    for ours, theirs in zip(stacked, state, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    assert problem.data.shape == (5, 1) and problem.latent.shape == (1,)


def test_training_cuts_the_kl_to_the_exact_posterior():
    network = DistributionTransformer(1, 1, width=16, depth=1, num_heads=2, key=jax.random.key(0))
    before = mean_kl(network)
    result = fit(
        jax.random.key(1), network, TASK.sample, num_steps=600, batch_size=32, progress=False
    )
    after = mean_kl(result.network)
    assert np.all(np.isfinite(result.losses))
    assert float(result.losses[-50:].mean()) < float(result.losses[:50].mean())
    assert after < before / 5, (before, after)
    # Resuming continues from the optimiser state without error.
    more = fit(
        jax.random.key(2),
        result.network,
        TASK.sample,
        num_steps=10,
        batch_size=8,
        optimizer_state=result.optimizer_state,
        progress=False,
    )
    assert more.losses.shape == (10,)
