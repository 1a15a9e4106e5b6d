"""Training on fresh simulations moves the network toward the exact posterior."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from ppl.gaussian_mixture import kl_divergence, linear_gaussian_update
from ppl.models.amortized.distribution_transformer import DistributionTransformer
from ppl.models.amortized.tasks import LinearGaussianTask
from ppl.models.amortized.training import fit

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


def test_masked_points_leave_the_exact_posterior_unchanged():
    task = TASK._replace(min_data=0, correlated=True)
    problem = task.sample(jax.random.key(3))
    mask = jnp.array([True, False, True, False, False])
    masked = task.exact_posterior(problem.prior, problem.data, mask)
    subset = task.exact_posterior(problem.prior, problem.data[mask])
    for ours, theirs in zip(masked, subset, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    nothing = task.exact_posterior(problem.prior, problem.data, jnp.zeros(5, bool))
    for ours, theirs in zip(nothing, problem.prior, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    # The number of used points is uniform on [min_data, num_data]; padding is zeroed.
    counts = jax.vmap(lambda k: task.sample(k).mask.sum())(jax.random.split(jax.random.key(4), 600))
    np.testing.assert_array_equal(np.unique(counts), np.arange(6))
    assert abs(float(counts.mean()) - 2.5) < 4 * np.sqrt(35 / 12 / 600)


def test_log_likelihood_and_evidence_with_masks_are_exact():
    task = TASK._replace(min_data=0, correlated=True)
    problem = task.sample(jax.random.key(5))
    mask = jnp.array([True, False, True, True, False])
    x = jnp.array([0.3])
    by_scipy = sum(
        stats.multivariate_normal.logpdf(
            np.asarray(problem.data[n]),
            np.asarray(task.observation_matrix @ x),
            np.asarray(task.noise_covariance),
        )
        for n in np.flatnonzero(mask)
    )
    np.testing.assert_allclose(task.log_likelihood(x, problem.data, mask), by_scipy, rtol=1e-5)
    joint = task.logdensity_fn(problem._replace(mask=mask))(x)
    np.testing.assert_allclose(joint, problem.prior.log_prob(x) + by_scipy, rtol=1e-5)
    # log p(y[mask]) is the sum of one-point-at-a-time evidences over the unmasked points,
    # and log p(y, x) − log p(x | y) = log p(y) at any x.
    state, total = problem.prior, 0.0
    for n in np.flatnonzero(mask):
        state, log_z = linear_gaussian_update(
            state, task.observation_matrix, task.noise_covariance, problem.data[n]
        )
        total += float(log_z)
    evidence = task.exact_log_evidence(problem.prior, problem.data, mask)
    np.testing.assert_allclose(evidence, total, rtol=1e-5)
    posterior = task.exact_posterior(problem.prior, problem.data, mask)
    np.testing.assert_allclose(joint - posterior.log_prob(x), total, rtol=1e-4)


def test_correlated_meta_prior_gives_full_covariances():
    task = LinearGaussianTask(jnp.eye(3), jnp.eye(3), num_components=4, num_data=2, correlated=True)
    priors = jax.vmap(task.sample_prior)(jax.random.split(jax.random.key(0), 200))
    covariances = np.asarray(priors.covariances)
    scales = np.sqrt(np.diagonal(covariances, axis1=-2, axis2=-1))
    correlations = covariances / scales[..., :, None] / scales[..., None, :]
    off_diagonal = correlations[..., 0, 1]
    assert np.all(np.linalg.eigvalsh(covariances) > 0)
    # LKJ(2) in 3-D: each correlation is Beta(2.5, 2.5) on [-1, 1], variance 1/6.
    assert abs(off_diagonal.mean()) < 4 * np.sqrt(1 / 6 / off_diagonal.size)
    assert abs(off_diagonal.var() - 1 / 6) < 0.03
    np.testing.assert_allclose(scales.min(), 0.3, atol=0.05)
    assert scales.max() <= 2.0 + 1e-4


def test_prior_reconstruction_term_adds_the_no_data_loss():
    network = DistributionTransformer(1, 1, width=16, depth=1, num_heads=2, key=jax.random.key(0))
    with_prior = fit(
        jax.random.key(1),
        network,
        TASK.sample,
        num_steps=1,
        batch_size=8,
        progress=False,
        optimizer=optax.sgd(0.0),
        prior_weight=0.5,
    )
    without = fit(
        jax.random.key(1),
        network,
        TASK.sample,
        num_steps=1,
        batch_size=8,
        progress=False,
        optimizer=optax.sgd(0.0),
        prior_weight=0.0,
    )
    # The untrained network returns its prior whatever the data, so the no-data term is the
    # negative log prior density of the same latents, computed here independently.
    keys = jax.random.split(jax.random.split(jax.random.key(1), 1)[0], 8)
    problems = jax.vmap(TASK.sample)(keys)
    prior_nll = -jnp.mean(jax.vmap(lambda p, x: p.log_prob(x))(problems.prior, problems.latent))
    np.testing.assert_allclose(without.losses[0], prior_nll, rtol=1e-5)
    np.testing.assert_allclose(with_prior.losses[0], 1.5 * prior_nll, rtol=1e-5)
    with pytest.raises(ValueError, match="prior_weight"):
        fit(jax.random.key(1), network, TASK.sample, num_steps=1, prior_weight=-1.0)


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


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"num_steps": 0}, "num_steps must be >= 1, got 0"),
        ({"num_steps": -1}, "num_steps must be >= 1, got -1"),
        ({"num_steps": 2.5}, "num_steps must be an integer >= 1, got 2.5"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"prior_weight": float("nan")}, "prior_weight must be a finite number >= 0, got nan"),
        ({"prior_weight": -1.0}, "prior_weight must be a finite number >= 0, got -1.0"),
    ],
)
def test_bad_training_settings_are_named(settings, message):
    network = DistributionTransformer(1, 1, width=8, depth=1, num_heads=2, key=jax.random.key(0))
    arguments = {"num_steps": 1, "batch_size": 2, "progress": False} | settings
    with pytest.raises(ValueError, match=message):
        fit(jax.random.key(0), network, TASK.sample, **arguments)


class Shift(eqx.Module):
    """A one-parameter stand-in for the network (compiles in a moment): shifts the means."""

    offset: jax.Array

    def __call__(self, prior, data, mask):
        return prior._replace(means=prior.means + self.offset)


def test_a_nan_learning_rate_is_reported_as_divergence():
    network = Shift(jnp.zeros(()))
    with pytest.raises(ValueError, match="training diverged: .* not finite from step 1"):
        fit(
            jax.random.key(0),
            network,
            TASK.sample,
            num_steps=2,
            batch_size=2,
            optimizer=optax.adam(float("nan")),
            progress=False,
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_components": 0}, "num_components must be >= 1, got 0"),
        ({"num_components": 2.5}, "num_components must be an integer >= 1, got 2.5"),
        ({"num_data": 0}, "num_data must be >= 1, got 0"),
        ({"scale_low": float("nan")}, "scale_low must be a finite number >= 0, got nan"),
        ({"scale_low": 3.0}, "need 0 < scale_low <= scale_high, got 3.0, 2.0"),
        ({"mean_scale": -1.0}, "mean_scale must be a finite number >= 0"),
        ({"noise_covariance": -jnp.eye(1)}, "noise_covariance must be positive definite"),
        ({"noise_covariance": jnp.eye(2)}, r"noise_covariance must be \[1, 1\]"),
        ({"observation_matrix": jnp.ones(1)}, r"observation_matrix must be \[M, D\]"),
        ({"min_data": 6}, "need 0 <= min_data <= num_data, got 6, 5"),
    ],
)
def test_bad_task_settings_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        TASK._replace(**change).sample(jax.random.key(0))
