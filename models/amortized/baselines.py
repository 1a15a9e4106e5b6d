"""The per-problem SVI baseline of the Distribution Transformer's conjugate mixture experiment.

The model of `LinearGaussianTask`, written in NumPyro:

    x ~ Σ_k w_k N(m_k, L_k L_kᵀ)            (MixtureSameFamily of MultivariateNormals),
    y_n | x ~ N(H x, R),  n with mask_n,    (masked points contribute nothing).

`svi_posterior` fits a Gaussian guide, mean-field (`AutoNormal`) or full-covariance
(`AutoMultivariateNormal`), by maximising the ELBO with Adam, one optimisation per problem
(`run_svi`, a `lax.scan`, so it `jax.vmap`s over problems). When the prior has one component
the posterior is Gaussian and the full-covariance guide can be exact; when it is multimodal a
single Gaussian cannot be, which is the gap an amortized mixture posterior closes.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

from ppl.gaussian_mixture import GaussianMixture
from ppl.models.amortized.svi import run_svi
from ppl.models.amortized.tasks import LinearGaussianTask, Problem


def linear_gaussian_model(
    prior: GaussianMixture,
    observation_matrix: jax.Array,
    noise_covariance: jax.Array,
    data: jax.Array,
    mask: jax.Array,
) -> None:
    """NumPyro model: x from the mixture prior, then y_n ~ N(H x, R) for the N rows of `data`
    [N, M] whose `mask` [N] is True."""
    components = dist.MultivariateNormal(prior.means, scale_tril=prior.cholesky)
    x = numpyro.sample(
        "x", dist.MixtureSameFamily(dist.Categorical(logits=prior.log_weights), components)
    )
    likelihood = dist.MultivariateNormal(
        observation_matrix @ x, scale_tril=jnp.linalg.cholesky(noise_covariance)
    )
    with numpyro.plate("data", data.shape[0]):
        numpyro.sample("y", likelihood.mask(mask), obs=data)


def svi_posterior(
    rng_key: jax.Array,
    task: LinearGaussianTask,
    problem: Problem,
    *,
    num_steps: int,
    learning_rate: float = 0.05,
    num_particles: int = 1,
    guide: Literal["normal", "multivariate_normal"] = "normal",
) -> GaussianMixture:
    """A one-component mixture fitted to the posterior of `problem` by SVI with the mean-field
    (`guide="normal"`) or full-covariance (`"multivariate_normal"`) Gaussian guide."""
    if guide == "normal":
        auto_guide = AutoNormal(linear_gaussian_model)
    elif guide == "multivariate_normal":
        auto_guide = AutoMultivariateNormal(linear_gaussian_model)
    else:
        raise ValueError(f"guide must be 'normal' or 'multivariate_normal', got {guide!r}")
    result = run_svi(
        rng_key,
        linear_gaussian_model,
        auto_guide,
        (problem.prior, task.observation_matrix, task.noise_covariance, problem.data, problem.mask),
        num_steps=num_steps,
        learning_rate=learning_rate,
        num_particles=num_particles,
    )
    if guide == "normal":
        mean = result.params["x_auto_loc"]
        cholesky = jnp.diag(result.params["x_auto_scale"])
    else:
        mean = result.params["auto_loc"]
        cholesky = result.params["auto_scale_tril"]
    return GaussianMixture(jnp.zeros(1), mean[None], cholesky[None])
