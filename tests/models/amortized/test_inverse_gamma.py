"""The inverse-gamma variance task against exact answers: scipy's inverse gamma, quadrature
posteriors on z = log σ², digamma/trigamma moments and quadrature KLs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from numpyro.infer.util import log_density
from scipy import integrate, special, stats

from ppl.gaussian_mixture import GaussianMixture
from ppl.models.amortized.distribution_transformer import DistributionTransformer
from ppl.models.amortized.inverse_gamma import (
    InverseGammaTask,
    fit_log_inverse_gamma,
    kl_to_exact,
    log_density_z,
    numpyro_model,
    posterior_parameters,
    prior_fit_kl,
    svi_posterior,
)
from ppl.models.amortized.training import fit

Z_CRITICAL = 4.0
NARROW = InverseGammaTask.narrow(5)
# (α, β) from both meta-priors' corners: skewed (α = 1) to nearly normal (α = 20).
PARAMETERS = [(1.0, 0.1), (3.0, 2.0), (4.5, 3.5), (20.0, 10.0)]


def z_grid(alpha: float, beta: float, size: int = 20_001) -> np.ndarray:
    """A grid over all but ~1e-12 of p(z) (the right tail falls like e^{−α z})."""
    center = np.log(beta) - special.digamma(alpha)
    scale = np.sqrt(special.polygamma(1, alpha))
    return np.linspace(center - 9 * scale, center + 30 * scale, size)


def quadrature_kl(alpha: float, beta: float, q: GaussianMixture) -> float:
    """KL(log-inverse-gamma ‖ q) by the trapezoid rule in float64."""
    z = z_grid(alpha, beta)
    log_p = stats.invgamma.logpdf(np.exp(z), alpha, scale=beta) + z
    log_q = np.asarray(jax.vmap(q.log_prob)(jnp.asarray(z, jnp.float32)[:, None]), np.float64)
    return float(integrate.trapezoid(np.exp(log_p) * (log_p - log_q), z))


@pytest.mark.parametrize(("alpha", "beta"), PARAMETERS)
def test_log_density_z_is_scipys_inverse_gamma_with_the_jacobian(alpha, beta):
    z = np.linspace(np.log(beta) - 3, np.log(beta) + 3, 13)
    expected = stats.invgamma.logpdf(np.exp(z), alpha, scale=beta) + z
    np.testing.assert_allclose(log_density_z(alpha, beta, jnp.asarray(z)), expected, rtol=2e-5)
    density = jax.jit(lambda t: jnp.exp(log_density_z(alpha, beta, t)))
    grid = z_grid(alpha, beta)  # float32 densities: ask no more than float32 can give
    mass, _ = integrate.quad(
        lambda t: float(density(t)), grid[0], grid[-1], epsabs=1e-7, epsrel=1e-6, limit=200
    )
    assert mass == pytest.approx(1.0, abs=1e-5)


def test_posterior_parameters_match_a_quadrature_posterior_and_ignore_masked_points():
    alpha, beta = 3.5, 2.5
    clean = np.random.default_rng(0).normal(0.0, 1.3, (20, 1))
    mask = jnp.arange(20) < 7
    # Garbage in the masked slots must change nothing.
    data = jnp.where(mask[:, None], jnp.asarray(clean), 100.0)
    posterior = posterior_parameters(alpha, beta, data, mask)
    used = clean[:7, 0]
    z = z_grid(float(posterior[0]), float(posterior[1]))
    log_joint = (
        stats.invgamma.logpdf(np.exp(z), alpha, scale=beta)
        + z
        + stats.norm.logpdf(used[:, None], 0.0, np.exp(0.5 * z)).sum(0)
    )
    brute = np.exp(log_joint - log_joint.max())
    brute /= integrate.trapezoid(brute, z)
    ours = np.exp(np.asarray(log_density_z(*posterior, jnp.asarray(z)), np.float64))
    np.testing.assert_allclose(ours, brute, atol=2e-5 * brute.max())
    # The prior with every point masked; all points used gives a different answer.
    np.testing.assert_allclose(
        np.asarray(posterior_parameters(alpha, beta, data, jnp.zeros_like(mask))), [alpha, beta]
    )
    assert float(posterior_parameters(alpha, beta, data)[1]) > float(posterior[1]) + 100


@pytest.mark.parametrize(("alpha", "beta"), PARAMETERS)
def test_the_fit_keeps_the_exact_mean_and_variance(alpha, beta):
    for components in (1, 2, 5):
        q = fit_log_inverse_gamma(alpha, beta, components)
        variance = special.polygamma(1, alpha)
        assert float(q.mean()[0]) == pytest.approx(
            np.log(beta) - special.digamma(alpha), abs=1e-4 * np.sqrt(variance)
        )
        assert float(q.covariance()[0, 0]) == pytest.approx(variance, rel=1e-4)


def test_more_components_fit_the_prior_better():
    # Measured (quadrature KL): α = 1: K=1 0.091, K=2 0.014, K=5 4.5e-4; α = 3: 0.030, 3.3e-3,
    # 1.6e-4; α = 20: 4.2e-3, 2.2e-4, 1.8e-5. Over 1000 meta-prior draws, mean prior_fit_kl for
    # K = 2 / 5 was 0.0019 / 0.0001 (narrow) and 0.0034 / 0.00015 (wide).
    for alpha, beta in PARAMETERS:
        kls = [quadrature_kl(alpha, beta, fit_log_inverse_gamma(alpha, beta, k)) for k in (1, 2, 5)]
        assert 0 < kls[2] < kls[1] < kls[0], (alpha, kls)
        assert kls[1] < 0.02 and kls[2] < 1e-3, (alpha, kls)
    # The Monte Carlo estimate agrees with quadrature.
    alpha, beta = 3.0, 2.0
    kl, se = prior_fit_kl(jax.random.key(0), alpha, beta, 2, 20_000)
    exact = quadrature_kl(alpha, beta, fit_log_inverse_gamma(alpha, beta, 2))
    assert abs(float(kl) - exact) < Z_CRITICAL * float(se), (kl, se, exact)


def test_kl_to_exact_is_near_zero_for_a_close_fit_and_positive_for_a_wrong_one():
    alpha, beta = 8.0, 3.0  # a posterior-like shape
    close = fit_log_inverse_gamma(alpha, beta, 5)
    kl, se = kl_to_exact(jax.random.key(1), alpha, beta, close, 20_000)
    exact = quadrature_kl(alpha, beta, close)
    assert exact < 1e-4 and abs(float(kl) - exact) < Z_CRITICAL * float(se) + 1e-5, (kl, exact)
    wrong = close._replace(means=close.means + 0.2)
    kl, se = kl_to_exact(jax.random.key(2), alpha, beta, wrong, 20_000)
    exact = quadrature_kl(alpha, beta, wrong)
    assert exact > 0.1 and abs(float(kl) - exact) < Z_CRITICAL * float(se), (kl, se, exact)


def test_simulate_draws_latents_from_the_true_prior_not_the_mixture():
    # With one component the mixture is the moment-matched normal; at α = 1 the log-inverse
    # gamma is a skewed Gumbel, so a KS test tells them apart.
    task = InverseGammaTask(1, num_data=6, min_data=2)
    alpha, beta = 1.0, 2.0
    problems = jax.vmap(lambda key: task.simulate(key, alpha, beta))(
        jax.random.split(jax.random.key(3), 4000)
    )
    z = np.asarray(problems.latent[:, 0], np.float64)
    assert stats.kstest(np.exp(z), stats.invgamma(alpha, scale=beta).cdf).pvalue > 1e-3
    normal = problems.prior.means[0, 0, 0], problems.prior.cholesky[0, 0, 0, 0]
    assert stats.kstest(z, stats.norm(*map(float, normal)).cdf).pvalue < 1e-6
    mean, variance = np.log(beta) - special.digamma(alpha), special.polygamma(1, alpha)
    assert abs(z.mean() - mean) < Z_CRITICAL * np.sqrt(variance / z.size)
    # Data: x / σ ~ N(0, 1) where used, zero where masked; 2..6 points used.
    used = np.asarray(problems.mask)
    standardised = np.asarray(problems.data[..., 0]) * np.exp(-0.5 * z)[:, None]
    assert np.all(standardised[~used] == 0)
    assert abs(np.mean(standardised[used] ** 2) - 1) < Z_CRITICAL * np.sqrt(2 / used.sum())
    assert set(used.sum(1)) == {2, 3, 4, 5, 6}


@pytest.mark.parametrize("preset", ["narrow", "wide"])
def test_sample_parameters_follow_the_meta_prior(preset):
    task = getattr(InverseGammaTask, preset)(2)
    alpha, beta = jax.vmap(task.sample_parameters)(jax.random.split(jax.random.key(4), 2000))
    for draws, low, high in [
        (alpha, task.alpha_low, task.alpha_high),
        (beta, task.beta_low, task.beta_high),
    ]:
        values, low, high = np.asarray(draws, np.float64), low, high
        if task.log_uniform:  # wide: log-uniform
            values, low, high = np.log(values), np.log(low), np.log(high)
        assert low <= values.min() and values.max() <= high
        se = (high - low) / np.sqrt(12 * values.size)
        assert abs(values.mean() - (low + high) / 2) < Z_CRITICAL * se


def conjugate_problems(num: int, seed: int) -> tuple[np.ndarray, ...]:
    """(α, β, data [num, 20, 1], mask [num, 20]) from the narrow meta-prior, by numpy/scipy."""
    rng = np.random.default_rng(seed)
    alpha, beta = rng.uniform(3, 6, num), rng.uniform(2, 5, num)
    variance = np.atleast_1d(stats.invgamma.rvs(alpha, scale=beta, random_state=rng))
    data = rng.normal(0, np.sqrt(variance)[:, None, None], (num, 20, 1))
    mask = np.arange(20) < rng.integers(1, 21, num)[:, None]
    return alpha, beta, np.where(mask[..., None], data, 0.0), mask


def test_the_numpyro_model_is_the_masked_conjugate_model():
    alpha, beta, data, mask = (x[0] for x in conjugate_problems(1, 7))
    variance = 1.7
    ours, _ = log_density(numpyro_model, (alpha, beta, data, mask), {}, {"variance": variance})
    expected = stats.invgamma.logpdf(variance, alpha, scale=beta) + np.sum(
        stats.norm.logpdf(data[mask, 0], 0.0, np.sqrt(variance))
    )
    assert float(ours) == pytest.approx(expected, rel=1e-5)


def test_svi_is_close_to_the_exact_posterior_but_short_of_five_components():
    # Measured on these problems (quadrature KL): SVI 0.016-0.037, the best normal (moment
    # matched) 0.007-0.016, five components 2e-5 to 7e-5. Over 100 problems SVI averaged
    # 0.021 (narrow) and 0.040 (wide, one run left unconverged at 1.5).
    num = 4
    alpha, beta, data, mask = map(jnp.asarray, conjugate_problems(num, 8))
    svi = jax.jit(jax.vmap(lambda *args: svi_posterior(*args, num_steps=2000)))(
        jax.random.split(jax.random.key(10), num), alpha, beta, data, mask
    )
    assert svi.means.shape == (num, 1, 1)
    for index in range(num):
        a, b = map(float, posterior_parameters(alpha[index], beta[index], data[index], mask[index]))
        svi_kl = quadrature_kl(a, b, GaussianMixture(*(x[index] for x in svi)))
        best_normal = quadrature_kl(a, b, fit_log_inverse_gamma(a, b, 1))
        five = quadrature_kl(a, b, fit_log_inverse_gamma(a, b, 5))
        # No normal beats the moment-matched one in KL(p ‖ q); five components beat both.
        assert five < best_normal <= svi_kl < 0.06, (index, five, best_normal, svi_kl)


def test_expected_kl_of_the_exact_fit_is_small():
    # Measured over 1000 problems: the 5-component fit of the exact posterior 3e-5 (wide). A
    # predict that saw a different problem than the KL's exact posterior would be far off.
    task = InverseGammaTask.wide(5, num_data=10)
    exact = task.expected_kl(
        jax.random.key(12), lambda k, a, b, p: task.posterior_mixture(a, b, p.data, p.mask), 40
    )
    assert exact.per_problem.shape == (40,)
    assert float(exact.mean) < 1e-3, exact


def test_training_on_the_task_lowers_the_loss():
    # Every point used and no prior term, so the data term's drop shows within 120 steps
    # (measured: about 0.7 -> 0.4 nats); a coarse 20-step EM prior keeps the steps cheap.
    task = InverseGammaTask(2, num_data=20, min_data=None, em_steps=20)
    network = DistributionTransformer(1, 1, width=16, depth=1, num_heads=2, key=jax.random.key(0))
    result = fit(
        jax.random.key(1),
        network,
        task.sample,
        num_steps=120,
        batch_size=16,
        optimizer=optax.adam(1e-2),
        prior_weight=0.0,
        progress=False,
        chunk_size=120,
    )
    assert np.all(np.isfinite(result.losses))
    assert float(result.losses[-30:].mean()) < float(result.losses[:30].mean()) - 0.1


def test_bad_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="num_components"):
        fit_log_inverse_gamma(2.0, 1.0, 0)
    with pytest.raises(ValueError, match=r"\[num_points, 1\]"):
        posterior_parameters(2.0, 1.0, jnp.ones(5))
    with pytest.raises(ValueError, match="mask"):
        posterior_parameters(2.0, 1.0, jnp.ones((5, 1)), jnp.ones(4, bool))
    two_d = GaussianMixture(jnp.zeros(1), jnp.zeros((1, 2)), jnp.eye(2)[None])
    with pytest.raises(ValueError, match="1-D"):
        kl_to_exact(jax.random.key(0), 2.0, 1.0, two_d, 10)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((-1.0, 1.0, 2), r"alpha must be finite and > 0, got -1"),
        ((float("nan"), 1.0, 2), "alpha must be finite and > 0, got nan"),
        ((2.0, 0.0, 2), "beta must be finite and > 0, got 0"),
        ((2.0, 1.0, 2.5), "num_components must be an integer >= 1, got 2.5"),
    ],
)
def test_bad_fit_arguments_are_named(arguments, message):
    with pytest.raises(ValueError, match=message):
        fit_log_inverse_gamma(*arguments)


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"grid_size": 1}, "grid_size must be >= 2, got 1"), ({"num_steps": -1}, "got -1")],
)
def test_bad_fit_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        fit_log_inverse_gamma(2.0, 1.0, 2, **settings)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"num_components": 0}, "num_components must be >= 1, got 0"),
        ({"num_components": 2, "num_data": -2}, "num_data must be >= 1, got -2"),
        ({"num_components": 2, "alpha_low": -1.0}, "alpha_low must be a finite number >= 0"),
        ({"num_components": 2, "beta_low": 0.0}, "need 0 < beta_low <= beta_high, got 0.0"),
        ({"num_components": 2, "alpha_low": 7.0}, "need 0 < alpha_low <= alpha_high, got 7.0"),
        ({"num_components": 2, "em_steps": -1}, "em_steps must be >= 0, got -1"),
    ],
)
def test_bad_task_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        InverseGammaTask(**settings).sample(jax.random.key(0))


def test_traced_parameters_are_not_checked():
    means = jax.jit(lambda a: fit_log_inverse_gamma(a, 1.0, 2, num_steps=2).means)(-1.0)
    assert np.isnan(np.asarray(means)).all()  # no check under jit, NaN as before
