"""Amortized filtering against exact answers: the Kalman filter, a reweighted bank of Kalman
filters, grid quadrature, the locally optimal proposal, and natural-scale unbiasedness of the
particle filters' evidence estimates."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp
from jax.scipy.stats import multivariate_normal, norm

from ppl import state_space
from ppl.gaussian_mixture import GaussianMixture, linear_gaussian_update, mixture
from ppl.models.amortized.distribution_transformer import DistributionTransformer
from ppl.models.amortized.filtering import (
    FilterResult,
    MixtureLinearGaussian,
    amortized_filter,
    amortized_proposal,
    exact_filter,
    filter_kl,
    from_linear_gaussian,
    simulate,
    state_space_model,
)
from ppl.models.ssm.linear_gaussian import LinearGaussian, kalman_filter, optimal_proposal
from ppl.samplers import smc
from tests.monte_carlo import evidence_ratio_z, mean_z

NUM_STEPS = 10
NUM_PARTICLES = 128
NUM_RUNS = 64


def gaussian_model() -> LinearGaussian:
    return LinearGaussian(
        initial_mean=jnp.asarray([0.5, -1.0]),
        initial_cov=jnp.asarray([[1.0, 0.3], [0.3, 0.5]]),
        transition=jnp.asarray([[0.9, 0.1], [-0.2, 0.8]]),
        transition_cov=jnp.asarray([[0.3, 0.05], [0.05, 0.2]]),
        observation=jnp.asarray([[1.0, 0.5]]),
        observation_cov=jnp.asarray([[0.1]]),
    )


def mixture_model() -> MixtureLinearGaussian:
    initial = mixture(
        jnp.array([0.2, 0.5, 0.3]),
        jnp.array([[-2.0, 0.0], [1.0, 1.5], [0.5, -1.0]]),
        jnp.array([[[1.0, 0.3], [0.3, 0.5]], [[0.4, -0.1], [-0.1, 0.8]], [[2.0, 0.0], [0.0, 0.3]]]),
    )
    return from_linear_gaussian(gaussian_model())._replace(initial=initial)


def oracle(model: MixtureLinearGaussian, inflation: jax.Array | float = 1.0):
    """The exact update, with its covariances optionally inflated by `inflation`."""

    def update(prior: GaussianMixture, data: jax.Array) -> GaussianMixture:
        posterior, _ = linear_gaussian_update(
            prior, model.observation, model.observation_cov, data[0]
        )
        return posterior._replace(cholesky=posterior.cholesky * jnp.sqrt(inflation))

    return update


@pytest.fixture(scope="module")
def observations() -> jax.Array:
    _, ys = jax.jit(simulate, static_argnums=2)(jax.random.key(1), mixture_model(), NUM_STEPS)
    return ys


@pytest.fixture(scope="module")
def exact(observations) -> FilterResult:
    return jax.jit(exact_filter)(mixture_model(), observations)


def test_simulate_draws_the_initial_mixture_and_the_dynamics():
    model = mixture_model()
    keys = jax.random.split(jax.random.key(0), 4000)
    states, ys = jax.jit(jax.vmap(lambda key: simulate(key, model, 2)))(keys)
    assert states.shape == (4000, 2, 2) and ys.shape == (4000, 2, 1)
    # P(x_0[0] < 0) = Σ_k w_k Φ(-m_k[0] / σ_k[0]) = 0.33; a moment-matched Gaussian gives
    # 0.44 (14 standard errors away), so this sees the mixture, not just its first two moments
    scales = np.sqrt(np.asarray(model.initial.covariances)[:, 0, 0])
    below = np.exp(model.initial.log_weights) @ norm.cdf(-model.initial.means[:, 0] / scales)
    assert abs(float(mean_z(np.asarray(states[:, 0, 0] < 0, float), float(below)))) < 4
    mean = np.asarray(model.initial.mean())
    assert np.all(np.abs(mean_z(states[:, 0], mean)) < 4)
    squares = np.einsum("ni,nj->nij", states[:, 0], states[:, 0])
    second_moment = np.asarray(model.initial.covariance()) + np.outer(mean, mean)
    assert np.all(np.abs(mean_z(squares, second_moment)) < 4)
    next_mean = np.asarray(model.observation @ model.transition @ mean)
    assert np.all(np.abs(mean_z(ys[:, 1], next_mean)) < 4)


def test_exact_filter_of_a_gaussian_prior_is_the_kalman_filter():
    """Over 30 steps, with p_0 as one component and as three identical ones."""
    model = gaussian_model()._replace(observation_cov=jnp.asarray([[0.4]]))

    @jax.jit
    def run(key: jax.Array):
        _, ys = simulate(key, from_linear_gaussian(model), 30)
        one = exact_filter(from_linear_gaussian(model, 1), ys)
        three = exact_filter(from_linear_gaussian(model, 3), ys)
        return kalman_filter(model, ys), one, three

    kalman, *results = run(jax.random.key(2))
    for components, result in zip([1, 3], results, strict=True):
        assert result.filtered.means.shape == (30, components, 2)
        np.testing.assert_allclose(result.log_likelihood, kalman.log_likelihood, rtol=1e-5)
        filtered_means = jax.vmap(GaussianMixture.mean)(result.filtered)
        filtered_covs = jax.vmap(GaussianMixture.covariance)(result.filtered)
        predicted_means = jax.vmap(GaussianMixture.mean)(result.predicted)
        predicted_covs = jax.vmap(GaussianMixture.covariance)(result.predicted)
        np.testing.assert_allclose(filtered_means, kalman.filtered_means, atol=1e-5)
        np.testing.assert_allclose(filtered_covs, kalman.filtered_covs, atol=1e-5)
        np.testing.assert_allclose(predicted_means, kalman.predicted_means, atol=1e-5)
        np.testing.assert_allclose(predicted_covs, kalman.predicted_covs, atol=1e-5)


def test_exact_filter_of_a_mixture_prior_is_a_reweighted_bank_of_kalman_filters(
    observations, exact
):
    """Component k is the Kalman filter started at N(m_k, Σ_k); its weight at t is
    ∝ w_k p_k(y_{0:t}), and log p(y_{0:T-1}) = log Σ_k w_k p_k(y_{0:T-1})."""
    model = mixture_model()

    def one_kalman(mean: jax.Array, cov: jax.Array):
        kalman = kalman_filter(LinearGaussian(mean, cov, *model[1:]), observations)
        innovation_covs = (
            model.observation @ kalman.predicted_covs @ model.observation.T + model.observation_cov
        )
        step_log_liks = jax.vmap(multivariate_normal.logpdf)(
            observations, kalman.predicted_means @ model.observation.T, innovation_covs
        )
        return kalman.filtered_means, kalman.filtered_covs, jnp.cumsum(step_log_liks)

    bank = jax.jit(jax.vmap(one_kalman))
    means, covs, cumulative = bank(model.initial.means, model.initial.covariances)
    joint = model.initial.log_weights[:, None] + cumulative  # [K, T]
    np.testing.assert_allclose(exact.filtered.means, jnp.swapaxes(means, 0, 1), atol=1e-5)
    np.testing.assert_allclose(exact.filtered.covariances, jnp.swapaxes(covs, 0, 1), atol=1e-5)
    weights = (joint - logsumexp(joint, axis=0)).T
    np.testing.assert_allclose(exact.filtered.log_weights, weights, atol=1e-4)
    np.testing.assert_allclose(exact.log_likelihood, logsumexp(joint[:, -1]), rtol=1e-5)


def test_first_filtered_mixture_matches_grid_quadrature(observations, exact):
    """p(x_0 | y_0) ∝ p_0(x_0) N(y_0; H x_0, R) on a 2-D grid: evidence, mean, covariance."""
    model = mixture_model()
    axis = np.linspace(-8.0, 8.0, 401)
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)

    @jax.jit
    def log_joint(x: jax.Array) -> jax.Array:
        log_lik = multivariate_normal.logpdf(
            observations[0], x @ model.observation.T, model.observation_cov
        )
        return jax.vmap(model.initial.log_prob)(x) + log_lik

    density = (
        np.exp(np.asarray(log_joint(jnp.asarray(grid)), np.float64)) * (axis[1] - axis[0]) ** 2
    )
    evidence = density.sum()
    mean = density @ grid / evidence
    cov = (density[:, None] * (grid - mean)).T @ (grid - mean) / evidence
    first = jax.tree.map(lambda leaf: leaf[0], exact.filtered)
    first_log_evidence = (
        exact.log_likelihood
        - jax.jit(exact_filter)(
            model._replace(initial=jax.tree.map(lambda leaf: leaf[1], exact.predicted)),
            observations[1:],
        ).log_likelihood
    )  # log p(y_{0:T-1}) − log p(y_{1:T-1} | y_0) = log p(y_0)
    np.testing.assert_allclose(first_log_evidence, np.log(evidence), atol=1e-4)
    np.testing.assert_allclose(first.mean(), mean, atol=1e-4)
    np.testing.assert_allclose(first.covariance(), cov, atol=1e-4)


def test_amortized_filter_with_the_exact_update_is_the_exact_filter(observations, exact):
    model = mixture_model()

    @jax.jit
    def run(ys: jax.Array):
        amortized = amortized_filter(oracle(model), model, ys)
        return amortized, filter_kl(jax.random.key(3), exact, amortized, 1000)

    amortized, (kl, _) = run(observations)
    for got, want in zip(jax.tree.leaves(amortized), jax.tree.leaves(exact), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert kl.shape == (NUM_STEPS,)
    np.testing.assert_allclose(kl, 0.0, atol=1e-5)


def test_an_untrained_network_filter_is_detectably_wrong(observations, exact):
    """An untrained Distribution Transformer returns its prior: it never conditions on y_t."""
    model = mixture_model()
    network = DistributionTransformer(2, 1, width=32, depth=1, key=jax.random.key(0))

    @eqx.filter_jit
    def run(network: DistributionTransformer, ys: jax.Array):
        amortized = amortized_filter(network, model, ys)
        return amortized, filter_kl(jax.random.key(4), exact, amortized, 2000)

    amortized, (kl, se) = run(network, observations)
    np.testing.assert_allclose(amortized.filtered.means, amortized.predicted.means, atol=1e-5)
    assert np.all(kl - 4 * se > 0.2), (kl, se)
    # its evidence is exact given its own predicted mixtures, which ignore the data: too low
    assert float(amortized.log_likelihood) < float(exact.log_likelihood) - 0.5


def test_oracle_proposal_is_the_locally_optimal_proposal():
    """With a Gaussian p_0 the oracle network's proposal is p(x_t | x_{t-1}, y_t)."""
    model = gaussian_model()
    t = jnp.asarray(3)
    x_prev, x = jax.random.normal(jax.random.key(6), (2, 7, 2))

    @jax.jit
    def run(key: jax.Array):
        _, ys = simulate(key, from_linear_gaussian(model), 5)
        optimal = optimal_proposal(model, ys)
        mixture_ = from_linear_gaussian(model, 2)
        amortized = amortized_proposal(oracle(mixture_), mixture_, ys, num_components=3)
        draws = amortized.transition_sample(jax.random.key(7), t, jnp.tile(x_prev[0], (4000, 1)))
        return (
            ys,
            draws,
            (amortized.initial_log_density(x), optimal.initial_log_density(x)),
            (
                amortized.transition_log_density(t, x_prev, x),
                optimal.transition_log_density(t, x_prev, x),
            ),
        )

    ys, draws, *log_densities = run(jax.random.key(5))
    for got, want in log_densities:
        np.testing.assert_allclose(got, want, atol=1e-4)
    # its draws have the optimal mean S (Q⁻¹ A x_prev + Hᵀ R⁻¹ y_t), S = (Q⁻¹ + Hᵀ R⁻¹ H)⁻¹
    q_inv, r_inv = np.linalg.inv(model.transition_cov), np.linalg.inv(model.observation_cov)
    H = np.asarray(model.observation)
    cov = np.linalg.inv(q_inv + H.T @ r_inv @ H)
    mean = cov @ (q_inv @ model.transition @ x_prev[0] + H.T @ r_inv @ ys[3])
    assert draws.shape == (4000, 2)
    assert np.all(np.abs(mean_z(draws, mean)) < 4)
    assert np.all(np.abs(mean_z(np.einsum("ni,nj->nij", draws - mean, draws - mean), cov)) < 4)


@pytest.fixture(scope="module")
def bootstrap_log_ratios(observations, exact) -> np.ndarray:
    """log Ẑ − log Z of the bootstrap filter on the mixture-initial model, NUM_RUNS runs."""
    feynman_kac = state_space.bootstrap(state_space_model(mixture_model(), observations))

    def run(key: jax.Array) -> jax.Array:
        return smc.run(key, feynman_kac, NUM_PARTICLES, NUM_STEPS, keep_history=False).log_evidence

    keys = jax.random.split(jax.random.key(9), NUM_RUNS)
    return np.asarray(jax.jit(jax.vmap(run))(keys) - exact.log_likelihood)


@pytest.fixture(scope="module")
def guided_log_ratios(observations, exact):
    """`(sample_inflation, density_inflation) -> log Ẑ − log Z` [NUM_RUNS] of the guided filter
    whose proposal samples from the oracle with covariances inflated by one factor and reports
    the log density of the oracle inflated by the other (equal factors: a proper proposal).
    The factors are traced, so every setting shares one compilation."""
    model = mixture_model()
    ssm = state_space_model(model, observations)

    @jax.jit
    def runs(keys: jax.Array, sample_inflation: jax.Array, density_inflation: jax.Array):
        sampler = amortized_proposal(oracle(model, sample_inflation), model, observations, 3)
        density = amortized_proposal(oracle(model, density_inflation), model, observations, 3)
        proposal = sampler._replace(
            initial_log_density=density.initial_log_density,
            transition_log_density=density.transition_log_density,
        )
        feynman_kac = state_space.guided(ssm, proposal)

        def run(key: jax.Array) -> jax.Array:
            result = smc.run(key, feynman_kac, NUM_PARTICLES, NUM_STEPS, keep_history=False)
            return result.log_evidence

        return jax.vmap(run)(keys) - exact.log_likelihood

    keys = jax.random.split(jax.random.key(10), NUM_RUNS)
    return lambda sample, density: np.asarray(runs(keys, jnp.asarray(sample), jnp.asarray(density)))


def test_bootstrap_filter_on_a_mixture_initial_model_is_unbiased(bootstrap_log_ratios):
    assert abs(evidence_ratio_z(bootstrap_log_ratios, 0.0)) < 3


def test_guided_filter_with_an_imperfect_network_proposal_is_unbiased(guided_log_ratios):
    inflated = guided_log_ratios(1.5, 1.5)
    assert abs(evidence_ratio_z(inflated, 0.0)) < 3
    # The test has power: a proposal that draws from the exact update q but reports the density
    # of the inflated q̃ is biased upwards, each step by about ∫ q² / q̃ = 1 + χ²(q ‖ q̃) = 1.125
    # (2-D, covariance ratio 1.5), so E[Ẑ / Z] ≈ 1.125^T ≈ 3 (measured 2.9).
    misreported = guided_log_ratios(1.0, 1.5)
    assert evidence_ratio_z(misreported, 0.0) > 3


def test_oracle_proposal_has_far_lower_variance_than_bootstrap(
    guided_log_ratios, bootstrap_log_ratios
):
    exact_guided = guided_log_ratios(1.0, 1.0)
    assert abs(evidence_ratio_z(exact_guided, 0.0)) < 3
    variance, bootstrap_variance = np.var(exact_guided), np.var(bootstrap_log_ratios)
    assert variance < bootstrap_variance / 10, (variance, bootstrap_variance)


def test_bad_shapes_are_named(observations):
    model = mixture_model()
    with pytest.raises(ValueError, match="observations must be"):
        exact_filter(model, observations[:, 0])
    with pytest.raises(ValueError, match="observation must be"):
        exact_filter(model._replace(observation=jnp.ones((1, 3))), observations)
    with pytest.raises(ValueError, match="num_components"):
        from_linear_gaussian(gaussian_model(), 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"transition_cov": -jnp.eye(2)}, "transition_cov must be positive definite"),
        ({"observation_cov": jnp.asarray([[jnp.nan]])}, "observation_cov holds 1 NaN"),
        ({"transition": jnp.full((2, 2), jnp.inf)}, "transition holds 4 NaN or infinite"),
    ],
)
def test_bad_parameters_are_named(observations, change, message):
    model = mixture_model()._replace(**change)
    with pytest.raises(ValueError, match=message):
        exact_filter(model, observations)
    with pytest.raises(ValueError, match=message):
        simulate(jax.random.key(0), model, 3)


def test_bad_counts_and_observations_are_named(observations):
    model = mixture_model()
    with pytest.raises(ValueError, match="observations holds 1 NaN or infinite"):
        exact_filter(model, observations.at[1, 0].set(jnp.nan))
    with pytest.raises(ValueError, match="num_steps must be >= 1, got 0"):
        simulate(jax.random.key(0), model, 0)
    with pytest.raises(ValueError, match="num_components must be an integer >= 1, got 2.5"):
        from_linear_gaussian(gaussian_model(), 2.5)
    with pytest.raises(ValueError, match="initial_cov must be positive definite"):
        from_linear_gaussian(gaussian_model()._replace(initial_cov=-jnp.eye(2)), 1)
    exact = exact_filter(model, observations)
    with pytest.raises(ValueError, match="num_samples must be >= 1, got 0"):
        filter_kl(jax.random.key(0), exact, exact, 0)
