"""Warped mixtures are exact changes of variables: scipy's log-normal, quadrature on θ."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.distributions import constraints
from scipy import integrate, stats

from ppl.gaussian_mixture import mixture
from ppl.warped_mixture import WarpedMixture, log_warp, logit_warp, warp_for

# Two well-separated components in 1-D, so a wrong Jacobian or a lost weight shows.
TWO = mixture(
    jnp.array([0.3, 0.7]), jnp.array([[-0.5], [0.8]]), jnp.array([[[0.4**2]], [[0.6**2]]])
)
Z_CRITICAL = 4.0
# The densities are float32, so ask quadrature for no more than float32 can give.
QUAD = {"limit": 200, "epsabs": 1e-7, "epsrel": 1e-6}


def density(warped: WarpedMixture):
    log_prob = jax.jit(warped.log_prob)
    return lambda theta: float(jnp.exp(log_prob(jnp.array([theta]))))


def test_a_log_warped_normal_is_scipys_lognormal():
    warped = WarpedMixture(
        mixture(jnp.ones(1), jnp.array([[0.4]]), jnp.array([[[0.7**2]]])), log_warp()
    )
    theta = jnp.array([0.05, 0.3, 1.0, 1.5, 4.0, 20.0])
    ours = jax.vmap(warped.log_prob)(theta[:, None])
    expected = stats.lognorm.logpdf(np.asarray(theta), s=0.7, scale=np.exp(0.4))
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def test_a_diagonal_two_dimensional_warp_is_a_product_of_lognormals():
    base = mixture(jnp.ones(1), jnp.array([[0.4, -1.0]]), jnp.diag(jnp.array([0.49, 0.09]))[None])
    warped = WarpedMixture(base, log_warp())
    theta = jnp.array([[0.5, 0.3], [2.0, 0.4], [1.0, 0.1]])
    expected = stats.lognorm.logpdf(np.asarray(theta), s=[0.7, 0.3], scale=np.exp([0.4, -1.0])).sum(
        -1
    )
    np.testing.assert_allclose(jax.vmap(warped.log_prob)(theta), expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("transform", "support"),
    [(log_warp(), (0.0, 400.0)), (logit_warp(-1.0, 3.0), (-1.0, 3.0))],  # mass above 400: ~1e-10
    ids=["log", "logit"],
)
def test_warped_densities_integrate_to_one_and_sample_their_moments(transform, support):
    warped = WarpedMixture(TWO, transform)
    pdf = density(warped)
    mass, _ = integrate.quad(pdf, *support, **QUAD)
    assert mass == pytest.approx(1.0, abs=1e-5)
    # Moments by quadrature on θ against sample moments with their standard errors.
    moments = [
        integrate.quad(lambda t, p=p: t**p * pdf(t), *support, **QUAD)[0] for p in (1, 2, 3, 4)
    ]
    mean, variance = moments[0], moments[1] - moments[0] ** 2
    draws = np.asarray(warped.sample(jax.random.key(0), 20_000))[:, 0]
    assert support[0] < draws.min() and draws.max() < support[1]
    mean_se = np.sqrt(variance / draws.size)
    assert abs(draws.mean() - mean) < Z_CRITICAL * mean_se, (draws.mean(), mean, mean_se)
    fourth_central = moments[3] - 4 * mean * moments[2] + 6 * mean**2 * moments[1] - 3 * mean**4
    variance_se = np.sqrt((fourth_central - variance**2) / draws.size)
    assert abs(draws.var() - variance) < Z_CRITICAL * variance_se, (draws.var(), variance)


def test_a_jacobian_of_the_wrong_sign_would_fail_the_integral():
    # The oracle can fail: the base density read on θ (no Jacobian) does not integrate to one.
    warped = WarpedMixture(TWO, logit_warp(-1.0, 3.0))
    log_prob = jax.jit(lambda t: TWO.log_prob(warped.unwarp(t)))
    mass, _ = integrate.quad(lambda t: float(jnp.exp(log_prob(jnp.array([t])))), -1.0, 3.0, **QUAD)
    assert abs(mass - 1.0) > 0.1


def test_warp_for_is_numpyros_bijection_and_unwarp_inverts_sample():
    theta = jnp.array([0.2])
    positive = WarpedMixture(TWO, warp_for(constraints.positive))
    np.testing.assert_allclose(
        positive.log_prob(theta), WarpedMixture(TWO, log_warp()).log_prob(theta), rtol=1e-6
    )
    interval = WarpedMixture(TWO, warp_for(constraints.interval(0.0, 1.0)))
    np.testing.assert_allclose(
        interval.log_prob(theta), WarpedMixture(TWO, logit_warp(0.0, 1.0)).log_prob(theta)
    )
    key = jax.random.key(1)
    draws = interval.sample(key, 100)
    np.testing.assert_allclose(interval.unwarp(draws), TWO.sample(key, 100), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(interval.warp(interval.unwarp(draws)), draws, rtol=1e-5)
    # Pytrees: jit and vmap see through the transform.
    batched = jax.jit(jax.vmap(interval.log_prob))(draws)
    assert batched.shape == (100,) and bool(jnp.all(jnp.isfinite(batched)))


def test_bad_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="not elementwise"):
        warp_for(constraints.simplex)
    with pytest.raises(ValueError, match="not elementwise"):
        WarpedMixture(TWO, warp_for(constraints.ordered_vector))
    with pytest.raises(ValueError, match="low < high"):
        logit_warp(2.0, 1.0)
    warped = WarpedMixture(TWO, log_warp())
    with pytest.raises(ValueError, match=r"points \[\.\.\., 1\]"):
        warped.log_prob(jnp.ones(2))
    with pytest.raises(ValueError, match="one point"):
        warped.log_prob(jnp.ones((3, 1)))
    with pytest.raises(ValueError, match="numpyro Transform"):
        WarpedMixture(TWO, jnp.exp).sample(jax.random.key(0), 2)
