"""Six posteriordb posteriors written in NumPyro, with their data and Stan reference draws.

posteriordb (stan-dev/posteriordb, BSD-3-Clause) pairs Stan models with data and reference
posterior draws: 10 chains x 1,000 draws from long, checked Stan runs. The files are vendored in
``posteriordb_data/`` (see its README). :func:`load_posterior` returns a :class:`Posterior`: the
NumPyro model, its data (``model(**data)``), the shape of each reference parameter and the
ArviZ ``dims`` of its sites (``run_mcmc(..., dims=posterior.dims)``); every
reference parameter is a site of the model (a sample or a deterministic site) with the same name
and shape, so :func:`stan_names` of MCMC samples [chains, draws, *shape] gives the keys of
:func:`load_reference_draws`.

The models, as Stan writes them (constrained parameters are sampled on their support; a Stan
parameter with no prior statement is flat on its support):

- ``eight_schools-eight_schools_noncentered``: mu ~ N(0, 5²), tau ~ HalfCauchy(5),
  theta_trans_j ~ N(0, 1), theta = mu + tau·theta_trans, y_j ~ N(theta_j, sigma_j²).
- ``kidiq-kidscore_momiq``: beta ∈ R² flat, sigma ~ HalfCauchy(2.5),
  kid_score_n ~ N(beta_1 + beta_2·mom_iq_n, sigma²).
- ``arK-arK``: alpha ~ N(0, 10²), beta_k ~ N(0, 10²) (k = 1..K), sigma ~ HalfCauchy(2.5),
  y_t ~ N(alpha + Σ_k beta_k y_{t-k}, sigma²) for t = K+1..T.
- ``garch-garch11``: mu flat, alpha0 > 0 flat, (alpha1, beta1) flat on 0 < alpha1 < 1,
  0 < beta1 < 1 − alpha1; sigma_1 = sigma1, sigma_t² = alpha0 + alpha1 (y_{t-1} − mu)² +
  beta1 sigma_{t-1}²; y_t ~ N(mu, sigma_t²) for t = 1..T.
- ``gp_pois_regr-gp_pois_regr``: rho ~ Gamma(25, rate 4), alpha ~ HalfNormal(2),
  f_tilde ~ N(0, I_N), K_ij = alpha² exp(−(x_i − x_j)² / (2 rho²)) + 10⁻¹⁰ δ_ij,
  f = chol(K) f_tilde, k_i ~ Poisson(exp(f_i)).
- ``low_dim_gauss_mix-low_dim_gauss_mix``: mu ∈ R² ordered (mu_1 < mu_2) with N(0, 2²) on each,
  sigma_k ~ HalfNormal(2), theta ~ Beta(5, 5),
  y_n ~ theta N(mu_1, sigma_1²) + (1 − theta) N(mu_2, sigma_2²).

Data arrays are float64 NumPy arrays (int64 for the Poisson counts ``k``); JAX casts them to
float32 unless 64-bit mode is on. ``gp_pois_regr`` needs 64-bit mode (``jax.enable_x64``): its
10⁻¹⁰ jitter is below float32 resolution and the float32 Cholesky of K is NaN for rho ≳ 6, well
inside the posterior (rho's median is 5.65).
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from collections.abc import Callable, Mapping
from importlib.resources import files
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.typing import ArrayLike
from numpyro.distributions import constraints

__all__ = [
    "POSTERIOR_NAMES",
    "Posterior",
    "arK",
    "eight_schools_noncentered",
    "garch11",
    "gp_pois_regr",
    "kidscore_momiq",
    "load_posterior",
    "load_reference_draws",
    "low_dim_gauss_mix",
    "stan_names",
]


class Posterior(NamedTuple):
    name: str  # posteriordb name, e.g. "eight_schools-eight_schools_noncentered"
    model: Callable[..., None]  # NumPyro model; call as model(**data)
    data: dict[str, Any]  # NumPy arrays; Python ints only where they fix a shape (arK's K)
    parameter_shapes: dict[str, tuple[int, ...]]  # per reference parameter, e.g. {"theta": (8,)}
    dims: dict[str, list[str]]  # ArviZ dims of the sites with axes, e.g. {"theta": ["school"]}


# ---------------------------------------------------------------------------------------------
# Models


def eight_schools_noncentered(sigma: ArrayLike, y: ArrayLike | None = None) -> None:
    """Non-centred eight schools; sites mu, tau, theta_trans [J], deterministic theta [J], obs y.

    mu ~ N(0, 5²), tau ~ HalfCauchy(5), theta_trans_j ~ N(0, 1), theta = mu + tau·theta_trans,
    y_j ~ N(theta_j, sigma_j²).
    """
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("schools", jnp.shape(sigma)[0]):
        theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_trans)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def kidscore_momiq(mom_iq: ArrayLike, kid_score: ArrayLike | None = None) -> None:
    """Linear regression; sites beta [2] (flat), sigma, obs kid_score.

    beta ∈ R² flat, sigma ~ HalfCauchy(2.5), kid_score_n ~ N(beta_1 + beta_2·mom_iq_n, sigma²).
    """
    beta = numpyro.sample("beta", dist.ImproperUniform(constraints.real, (), event_shape=(2,)))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    with numpyro.plate("children", jnp.shape(mom_iq)[0]):
        numpyro.sample("kid_score", dist.Normal(beta[0] + beta[1] * mom_iq, sigma), obs=kid_score)


def arK(K: int, y: ArrayLike) -> None:
    """AR(K); sites alpha, beta [K], sigma, obs y (the T − K values y_{K+1..T}).

    alpha ~ N(0, 10²), beta_k ~ N(0, 10²), sigma ~ HalfCauchy(2.5),
    y_t ~ N(alpha + Σ_k beta_k y_{t-k}, sigma²) for t = K+1..T. ``K`` is a Python int (it fixes
    beta's shape): keep MCMC's default ``jit_model_args=False``.
    """
    y = jnp.asarray(y)
    num_times = y.shape[0]
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
    with numpyro.plate("lags", K):
        beta = numpyro.sample("beta", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    # lagged[t, k] = y_{t-k} (0-based: row t - K for t = K..T-1, column k - 1 for lag k = 1..K)
    lagged = jnp.stack([y[K - k : num_times - k] for k in range(1, K + 1)], axis=-1)
    with numpyro.plate("times", num_times - K):
        numpyro.sample("y", dist.Normal(alpha + lagged @ beta, sigma), obs=y[K:])


def garch11(y: ArrayLike, sigma1: ArrayLike) -> None:
    """GARCH(1, 1); sites mu, alpha0, alpha1, beta1, obs y (all T values).

    mu flat, alpha0 > 0 flat; (alpha1, beta1) flat on the triangle 0 < alpha1 < 1,
    0 < beta1 < 1 − alpha1, as in Stan, which declares these bounds and states no prior. Flat on
    the triangle is alpha1 ~ Beta(1, 2), beta1 | alpha1 ~ Uniform(0, 1 − alpha1). (alpha1 ~
    Uniform(0, 1) would add −log(1 − alpha1) to the log density and move alpha1's posterior mean
    by 0.4 posterior sd.) sigma_1 = sigma1,
    sigma_t² = alpha0 + alpha1 (y_{t-1} − mu)² + beta1 sigma_{t-1}², y_t ~ N(mu, sigma_t²).
    """
    y = jnp.asarray(y)
    mu = numpyro.sample("mu", dist.ImproperUniform(constraints.real, (), ()))
    alpha0 = numpyro.sample("alpha0", dist.ImproperUniform(constraints.positive, (), ()))
    alpha1 = numpyro.sample("alpha1", dist.Beta(1.0, 2.0))
    # Uniform, not ImproperUniform(interval(0, 1 - alpha1)): NumPyro spots a parameter-dependent
    # bound only on an Interval support, ImproperUniform wraps its support in an
    # IndependentConstraint, and NUTS would then keep the bound of the initial point.
    beta1 = numpyro.sample("beta1", dist.Uniform(0.0, 1.0 - alpha1))

    def step(variance: jax.Array, squared_error: jax.Array) -> tuple[jax.Array, jax.Array]:
        variance = alpha0 + alpha1 * squared_error + beta1 * variance
        return variance, variance

    initial_variance = jnp.square(sigma1) * jnp.ones_like(alpha0)
    _, variances = jax.lax.scan(step, initial_variance, jnp.square(y[:-1] - mu))
    sigma = jnp.sqrt(jnp.concatenate([initial_variance[None], variances]))
    with numpyro.plate("times", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def gp_pois_regr(x: ArrayLike, k: ArrayLike | None = None) -> None:
    """Poisson regression with a latent GP; sites rho, alpha, f_tilde [N], deterministic f [N],
    obs k.

    rho ~ Gamma(25, rate 4), alpha ~ HalfNormal(2), f_tilde ~ N(0, I),
    K_ij = alpha² exp(−(x_i − x_j)² / (2 rho²)) + 10⁻¹⁰ δ_ij, f = chol(K) f_tilde,
    k_i ~ Poisson(exp(f_i)). Needs 64-bit mode (see the module docstring).
    """
    x = jnp.asarray(x)
    num_points = x.shape[0]
    rho = numpyro.sample("rho", dist.Gamma(25.0, 4.0))
    alpha = numpyro.sample("alpha", dist.HalfNormal(2.0))
    with numpyro.plate("points", num_points):
        f_tilde = numpyro.sample("f_tilde", dist.Normal(0.0, 1.0))
    squared_distance = jnp.square(x[:, None] - x[None, :])
    cov = jnp.square(alpha) * jnp.exp(-squared_distance / (2.0 * jnp.square(rho)))
    cov = cov + 1e-10 * jnp.eye(num_points)
    if cov.dtype != jnp.float64:
        warnings.warn(
            "gp_pois_regr needs 64-bit floats (jax.enable_x64): in float32 the Cholesky factor of "
            "K is NaN for rho ≳ 6, inside the posterior",
            stacklevel=2,
        )
    f = numpyro.deterministic("f", jnp.linalg.cholesky(cov) @ f_tilde)
    with numpyro.plate("points", num_points):
        numpyro.sample("k", dist.Poisson(rate=jnp.exp(f)), obs=k)


def low_dim_gauss_mix(y: ArrayLike) -> None:
    """Two-component Gaussian mixture; sites mu [2] (ordered), sigma [2], theta, obs y, and the
    factor mu_prior.

    mu_1 < mu_2 with N(0, 2²) on each, sigma_k ~ HalfNormal(2), theta ~ Beta(5, 5),
    y_n ~ theta N(mu_1, sigma_1²) + (1 − theta) N(mu_2, sigma_2²). The prior on mu is the factor
    site "mu_prior", which NumPyro's ``log_likelihood`` reports next to "y"; drop it there.
    """
    y = jnp.asarray(y)
    mu = numpyro.sample(
        "mu", dist.ImproperUniform(constraints.ordered_vector, (), event_shape=(2,))
    )
    numpyro.factor("mu_prior", dist.Normal(0.0, 2.0).log_prob(mu).sum())
    with numpyro.plate("components", 2):
        sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    theta = numpyro.sample("theta", dist.Beta(5.0, 5.0))
    mixture = dist.MixtureSameFamily(
        dist.Categorical(probs=jnp.stack([theta, 1.0 - theta])), dist.Normal(mu, sigma)
    )
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", mixture, obs=y)


# ---------------------------------------------------------------------------------------------
# Data: posteriordb's JSON -> the model's keyword arguments


def _floats(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def _check_length(raw: Mapping[str, Any], size: str, *arrays: str) -> None:
    for array in arrays:
        if len(raw[array]) != raw[size]:
            raise ValueError(f"data: len({array}) = {len(raw[array])} but {size} = {raw[size]}")


def _eight_schools_data(raw: Mapping[str, Any]) -> dict[str, Any]:
    _check_length(raw, "J", "y", "sigma")
    return {"sigma": _floats(raw["sigma"]), "y": _floats(raw["y"])}


def _kidiq_data(raw: Mapping[str, Any]) -> dict[str, Any]:
    _check_length(raw, "N", "mom_iq", "kid_score")
    return {"mom_iq": _floats(raw["mom_iq"]), "kid_score": _floats(raw["kid_score"])}


def _ark_data(raw: Mapping[str, Any]) -> dict[str, Any]:
    _check_length(raw, "T", "y")
    return {"K": int(raw["K"]), "y": _floats(raw["y"])}


def _garch_data(raw: Mapping[str, Any]) -> dict[str, Any]:
    _check_length(raw, "T", "y")
    return {"y": _floats(raw["y"]), "sigma1": _floats(raw["sigma1"])}


def _gp_pois_regr_data(raw: Mapping[str, Any]) -> dict[str, Any]:
    # The data set also holds a real-valued "y" that this model does not use.
    _check_length(raw, "N", "x", "k")
    return {"x": _floats(raw["x"]), "k": np.asarray(raw["k"], dtype=np.int64)}


def _low_dim_gauss_mix_data(raw: Mapping[str, Any]) -> dict[str, Any]:
    _check_length(raw, "N", "y")
    return {"y": _floats(raw["y"])}


_MODELS: dict[str, tuple[Callable[..., None], Callable[[Mapping[str, Any]], dict[str, Any]]]] = {
    "eight_schools-eight_schools_noncentered": (eight_schools_noncentered, _eight_schools_data),
    "kidiq-kidscore_momiq": (kidscore_momiq, _kidiq_data),
    "arK-arK": (arK, _ark_data),
    "garch-garch11": (garch11, _garch_data),
    "gp_pois_regr-gp_pois_regr": (gp_pois_regr, _gp_pois_regr_data),
    "low_dim_gauss_mix-low_dim_gauss_mix": (low_dim_gauss_mix, _low_dim_gauss_mix_data),
}

POSTERIOR_NAMES: tuple[str, ...] = tuple(_MODELS)

# Names of the axes of every site with axes (latent, deterministic, observed), for ArviZ:
# `run_mcmc(..., dims=posterior.dims)`.
_DIMS: dict[str, dict[str, list[str]]] = {
    "eight_schools-eight_schools_noncentered": {
        "theta_trans": ["school"],
        "theta": ["school"],
        "y": ["school"],
    },
    "kidiq-kidscore_momiq": {"beta": ["coefficient"], "kid_score": ["child"]},
    "arK-arK": {"beta": ["lag"], "y": ["time"]},
    "garch-garch11": {"y": ["time"]},
    "gp_pois_regr-gp_pois_regr": {"f_tilde": ["point"], "f": ["point"], "k": ["point"]},
    "low_dim_gauss_mix-low_dim_gauss_mix": {
        "mu": ["component"],
        "sigma": ["component"],
        "y": ["observation"],
    },
}


# ---------------------------------------------------------------------------------------------
# Loaders


def _check_name(name: str) -> None:
    if name not in _MODELS:
        raise ValueError(f"unknown posterior {name!r}; known: {', '.join(POSTERIOR_NAMES)}")


def _read_zipped_json(*parts: str) -> Any:
    """The single JSON file inside the zip archive posteriordb_data/*parts."""
    resource = files("ppl.models.bayes").joinpath("posteriordb_data", *parts)
    with zipfile.ZipFile(io.BytesIO(resource.read_bytes())) as archive:
        (member,) = archive.namelist()
        return json.loads(archive.read(member))


def _posterior_info(name: str) -> dict[str, Any]:
    resource = files("ppl.models.bayes").joinpath("posteriordb_data", "posteriors", f"{name}.json")
    return json.loads(resource.read_text(encoding="utf-8"))


def load_posterior(name: str) -> Posterior:
    """The NumPyro model, data and reference-parameter shapes of the posteriordb posterior
    ``name`` (one of :data:`POSTERIOR_NAMES`).

    Shapes come from posteriordb's ``dimensions``: a length of 1 is a scalar, n > 1 a vector (n,).
    """
    _check_name(name)
    model, make_data = _MODELS[name]
    info = _posterior_info(name)
    data = make_data(_read_zipped_json("data", f"{info['data_name']}.json.zip"))
    shapes: dict[str, tuple[int, ...]] = {
        key: () if n == 1 else (int(n),) for key, n in info["dimensions"].items()
    }
    dims = {site: list(names) for site, names in _DIMS[name].items()}
    return Posterior(name=name, model=model, data=data, parameter_shapes=shapes, dims=dims)


def load_reference_draws(name: str) -> dict[str, np.ndarray]:
    """Stan-indexed parameter name (``theta[1]``) -> reference draws, float64 [chains, draws]
    (10 x 1,000), in posteriordb's order."""
    _check_name(name)
    chains = _read_zipped_json("reference_draws", f"{name}.json.zip")
    return {key: np.asarray([chain[key] for chain in chains], np.float64) for key in chains[0]}


def stan_names(samples: Mapping[str, ArrayLike], batch_ndims: int = 2) -> dict[str, np.ndarray]:
    """Flatten samples [*batch, *shape] into Stan-indexed names, 1-based, in row-major order.

    A site ``x`` of shape (2, 3) becomes ``x[1,1]``, ``x[1,2]``, ..., ``x[2,3]``, each [*batch];
    a scalar site keeps its name. ``batch_ndims`` is the number of leading batch axes (2 for
    [chains, draws]).
    """
    out: dict[str, np.ndarray] = {}
    for name, value in samples.items():
        array = np.asarray(value)
        if array.ndim < batch_ndims:
            raise ValueError(f"{name}: {array.ndim} axes but batch_ndims = {batch_ndims}")
        event_shape = array.shape[batch_ndims:]
        if not event_shape:
            out[name] = array
            continue
        for index in np.ndindex(*event_shape):
            out[f"{name}[{','.join(str(i + 1) for i in index)}]"] = array[(..., *index)]
    return out
