"""The NumPyro bridge against densities written by hand (scipy), and its contracts."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import stats

from ppl.numpyro_bridge import from_numpyro
from tests.monte_carlo import mean_z

Y = jnp.array([1.2, -0.3, 0.8, 2.1])


def scale_model(y):
    """loc ~ N(0, 2), scale ~ LogNormal(0, 1), y ~ N(loc, scale), a factor on loc."""
    loc = numpyro.sample("loc", dist.Normal(0.0, 2.0))
    scale = numpyro.sample("scale", dist.LogNormal(0.0, 1.0))
    numpyro.deterministic("precision", 1.0 / scale**2)
    numpyro.factor("penalty", -0.5 * loc**2)
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(loc, scale), obs=y)


@pytest.fixture(scope="module")
def model():
    return from_numpyro(scale_model, rng_key=jax.random.key(0), model_kwargs={"y": Y})


def by_hand(loc: float, log_scale: float) -> tuple[float, float]:
    """(log prior on (loc, log scale) with the Jacobian, log likelihood incl. the factor)."""
    scale = np.exp(log_scale)
    log_prior = (
        stats.norm.logpdf(loc, 0, 2) + stats.lognorm.logpdf(scale, 1.0) + log_scale  # |d scale|
    )
    log_likelihood = stats.norm.logpdf(np.asarray(Y), loc, scale).sum() - 0.5 * loc**2
    return log_prior, log_likelihood


def test_sites(model):
    assert model.latent_sites == ("loc", "scale")
    assert model.observed_sites == ("penalty", "y")
    assert model.factor_sites == ("penalty",)
    assert model.deterministic_sites == ("precision",)
    assert model.dimension == 2


@pytest.mark.parametrize("point", [(0.3, -0.2), (-1.5, 0.7), (2.0, 0.0)])
def test_densities_match_hand_written_ones(model, point):
    position = {"loc": jnp.asarray(point[0]), "scale": jnp.asarray(point[1])}
    log_prior, log_likelihood = by_hand(*point)
    np.testing.assert_allclose(model.log_prior_fn(position), log_prior, rtol=1e-5)
    np.testing.assert_allclose(model.log_likelihood_fn(position), log_likelihood, rtol=1e-5)
    np.testing.assert_allclose(model.logdensity_fn(position), log_prior + log_likelihood, rtol=1e-5)


def test_constrain_round_trip_and_deterministic_sites(model):
    position = {"loc": jnp.asarray(0.4), "scale": jnp.asarray(-0.5)}
    values = model.constrain(position)
    np.testing.assert_allclose(values["scale"], np.exp(-0.5), rtol=1e-6)
    np.testing.assert_allclose(values["precision"], np.exp(1.0), rtol=1e-5)
    back = model.unconstrain(values)
    np.testing.assert_allclose(back["scale"], -0.5, rtol=1e-6)
    np.testing.assert_allclose(model.unravel(model.ravel(position))["loc"], 0.4)


def test_pointwise_log_likelihood_leaves_out_factors(model):
    values = model.constrain({"loc": jnp.asarray(0.4), "scale": jnp.asarray(-0.5)})
    pointwise = model.pointwise_log_likelihood(values)
    assert set(pointwise) == {"y"}
    np.testing.assert_allclose(
        pointwise["y"], stats.norm.logpdf(np.asarray(Y), 0.4, np.exp(-0.5)), rtol=1e-5
    )
    assert set(model.observed_data()) == {"y"}


def test_prior_draws_follow_the_prior(model):
    draws = model.sample_prior(jax.random.key(1), 4000)
    assert draws["loc"].shape == (4000,)
    # loc ~ N(0, 2) and log scale ~ N(0, 1): means and second moments, as z-scores.
    loc, log_scale = np.asarray(draws["loc"]), np.asarray(draws["scale"])
    z = mean_z(np.stack([loc, log_scale, loc**2, log_scale**2], axis=1), [0, 0, 4, 1])
    assert np.all(np.abs(z) < 4), z


def test_initial_positions_are_valid_and_distinct(model):
    starts = model.initial_positions(jax.random.key(2), 3)
    assert starts["loc"].shape == (3,)
    assert len(set(np.asarray(starts["loc"]).tolist())) == 3
    assert np.all(np.isfinite(jax.vmap(model.logdensity_fn)(starts)))


def test_improper_prior_cannot_be_sampled():
    def flat(y):
        mu = numpyro.sample("mu", dist.ImproperUniform(dist.constraints.real, (), ()))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    model = from_numpyro(flat, rng_key=jax.random.key(0), model_kwargs={"y": Y})
    assert np.isfinite(model.logdensity_fn(model.initial_position))
    with pytest.raises(ValueError, match="improper prior"):
        model.sample_prior(jax.random.key(0), 2)


def test_discrete_latents_and_empty_models_are_refused():
    def discrete():
        numpyro.sample("k", dist.Poisson(3.0))

    def observed_only(y):
        numpyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    with pytest.raises(ValueError, match="discrete latent"):
        from_numpyro(discrete, rng_key=jax.random.key(0))
    with pytest.raises(ValueError, match="no latent"):
        from_numpyro(observed_only, rng_key=jax.random.key(0), model_kwargs={"y": Y})


@pytest.mark.filterwarnings("ignore:gp_pois_regr needs 64-bit floats")
def test_float32_gp_pois_regr_finds_a_valid_start_on_20_of_20_keys():
    """In float32 the GP's Cholesky is NaN for large length scales, which NumPyro's argument
    checks reject at some uniform starts (5 of 20 keys failed before the retries)."""
    from ppl.models.bayes.posteriordb import load_posterior

    assert not jax.config.jax_enable_x64
    posterior = load_posterior("gp_pois_regr-gp_pois_regr")
    for seed in range(20):
        bound = from_numpyro(
            posterior.model, rng_key=jax.random.key(seed), model_kwargs=posterior.data
        )
        assert np.isfinite(bound.logdensity_fn(bound.initial_position))


def test_init_strategies_and_values_per_chain(model):
    from numpyro.infer import init_to_median, init_to_value

    fixed = model.initial_positions(jax.random.key(0), 3, init_to_value(values={"loc": 0.25}))
    np.testing.assert_allclose(np.asarray(fixed["loc"]), 0.25)
    assert len(set(np.asarray(fixed["scale"]).tolist())) == 3  # the other site stays uniform
    median = model.initial_positions(jax.random.key(0), 2, init_to_median(num_samples=200))
    # The prior median of scale ~ LogNormal(0, 1) is 1, so its unconstrained start is near 0.
    assert np.all(np.abs(np.asarray(median["scale"])) < 0.3)
    given = {"loc": np.array([0.0, 1.0]), "scale": np.array([0.5, 2.0])}
    starts = model.initial_positions(jax.random.key(0), 2, given)
    np.testing.assert_allclose(np.exp(np.asarray(starts["scale"])), [0.5, 2.0], rtol=1e-6)


@pytest.mark.parametrize(
    ("init", "message"),
    [
        ({"loc": np.zeros(3), "scale": np.ones(2)}, "site 'loc' has shape (3,); expected (2,)"),
        ({"loc": np.zeros(2)}, "missing ['scale']"),
        ({"loc": np.zeros(2), "scale": np.ones(2), "x": 1}, "unknown ['x']"),
        ({"loc": np.zeros(2), "scale": np.array([1.0, -1.0])}, "outside its support for chain"),
        ({"loc": np.array([0.0, np.nan]), "scale": np.ones(2)}, "site 'loc' is not finite"),
        ("uniform", "init must be a NumPyro init strategy"),
    ],
)
def test_bad_initial_values_are_named(model, init, message):
    with pytest.raises(ValueError) as caught:
        model.initial_positions(jax.random.key(0), 2, init)
    assert message in str(caught.value)


def test_no_valid_start_says_what_was_not_finite_and_after_how_many_tries(model):
    from numpyro.infer import init_to_value

    def kinked(y):
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        numpyro.factor("kink", jnp.sqrt(jnp.abs(x)))  # finite at 0, infinite gradient there
        numpyro.sample("y", dist.Normal(x, 1.0), obs=y)

    bound = from_numpyro(kinked, rng_key=jax.random.key(0), model_kwargs={"y": Y})
    with pytest.raises(ValueError) as caught:
        bound.initial_positions(jax.random.key(0), 2, init_to_value(values={"x": 0.0}), max_tries=7)
    assert str(caught.value) == (
        "no valid initial point after 7 tries per chain (needs a finite log density and "
        "gradient); chain 0: the gradient is not finite at sites ['x']; chain 1: the gradient "
        "is not finite at sites ['x']"
    )
    with pytest.raises(ValueError, match="chain 0: the log density is -inf"):
        model.initial_positions(jax.random.key(0), 1, {"loc": [0.0], "scale": [1e-30]})
    with pytest.raises(ValueError, match="need an integer num_chains >= 1, got 0"):
        model.initial_positions(jax.random.key(0), 0)


def test_init_to_value_off_the_support_is_named(model):
    from numpyro.infer import init_to_value

    with pytest.raises(ValueError) as caught:
        model.initial_positions(
            jax.random.key(0), 1, init_to_value(values={"scale": -1.0}), max_tries=2
        )
    # scale is Normal's scale parameter too, and NumPyro's argument check rejects it first.
    assert str(caught.value) == (
        "no valid initial point: NumPyro rejected a start drawn by init_to_value: Normal "
        "distribution got invalid scale parameter."
    )

    # A value off the support that no argument check sees: the unconstrained start is NaN.
    def positive(y):
        size = numpyro.sample("size", dist.HalfNormal(1.0))
        numpyro.factor("shrink", -size)
        numpyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    bound = from_numpyro(positive, rng_key=jax.random.key(0), model_kwargs={"y": Y})
    with pytest.raises(ValueError) as caught, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NumPyro's out-of-support warning
        bound.initial_positions(jax.random.key(0), 1, init_to_value(values={"size": -1.0}))
    assert str(caught.value).endswith("chain 0: sites ['size'] are outside their supports")


def test_the_start_search_goes_with_the_model():
    import gc
    import weakref

    bound = from_numpyro(scale_model, rng_key=jax.random.key(0), model_kwargs={"y": Y})
    bound.initial_positions(jax.random.key(0), 2)
    density = weakref.ref(bound.logdensity_fn)
    del bound
    gc.collect()
    assert density() is None
