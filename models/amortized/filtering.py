"""Recursive filtering with a Distribution Transformer, beside the exact filter and the
particle filter, on a linear-Gaussian state-space model whose initial state is a mixture:

    x_0 ~ Σ_k w_k N(m_k, Σ_k),  x_t = A x_{t-1} + N(0, Q),  y_t = H x_t + N(0, R),  t = 0..T-1.

The filter alternates predict and update (x_0 is updated without a predict, as in
`ppl.models.ssm.linear_gaussian.kalman_filter`):

    predicted_t = ∫ p(x_t | x_{t-1}) filtered_{t-1}(x_{t-1}) dx_{t-1}   (predicted_0 = p_0),
    filtered_t ∝ predicted_t(x_t) N(y_t; H x_t, R),
    log p(y_{0:T-1}) = Σ_t log ∫ predicted_t(x) N(y_t; H x, R) dx.

Mixtures are closed under both steps, so `exact_filter` is a bank of Kalman filters. In
`amortized_filter` the update is a network, filtered_t = network(predicted_t, y_t), which
(Whittle et al. 2025) works because a posterior mixture can be the next prior; its
log-likelihood is the exact evidence of its own predicted mixtures.

The same network gives a particle-filter proposal (`amortized_proposal`):
q_t(x_t | x_{t-1}) = network(N(A x_{t-1}, Q), y_t); the guided filter weights by
p(x_t | x_{t-1}) N(y_t; H x_t, R) / q_t, so its evidence estimate stays unbiased however
imperfect the network is, and its variance shrinks as the network nears the exact update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ppl import checks
from ppl.gaussian_mixture import (
    GaussianMixture,
    kl_divergence,
    linear_gaussian_predict,
    linear_gaussian_update,
)
from ppl.models.ssm import linear_gaussian
from ppl.models.ssm.linear_gaussian import LinearGaussian
from ppl.state_space import Proposal, StateSpaceModel

Network = Callable[[GaussianMixture, jax.Array], GaussianMixture]
"""`(prior, data [N, M]) -> posterior`: a `DistributionTransformer` or any exact oracle."""


class MixtureLinearGaussian(NamedTuple):
    """A linear-Gaussian state-space model whose initial state is a Gaussian mixture."""

    initial: GaussianMixture  # p_0: K components in D dimensions
    transition: jax.Array  # A [D, D]
    transition_cov: jax.Array  # Q [D, D]
    observation: jax.Array  # H [M, D]
    observation_cov: jax.Array  # R [M, M]


class FilterResult(NamedTuple):
    """Per-step mixtures (leaves with a leading time axis [T]) and log p(y_{0:T-1})."""

    filtered: GaussianMixture  # p(x_t | y_{0:t}), or the network's approximation
    log_likelihood: jax.Array  # scalar Σ_t log ∫ predicted_t(x) N(y_t; H x, R) dx
    predicted: GaussianMixture  # p(x_t | y_{0:t-1}) (p_0 at t = 0)


def from_linear_gaussian(model: LinearGaussian, num_components: int = 1) -> MixtureLinearGaussian:
    """The same model with p_0 = N(m_0, P_0) written as `num_components` equal-weight copies."""
    linear_gaussian.validate(model)
    num_components = checks.count("num_components", num_components)
    initial = _copies(model.initial_mean, jnp.linalg.cholesky(model.initial_cov), num_components)
    return MixtureLinearGaussian(
        initial,
        model.transition,
        model.transition_cov,
        model.observation,
        model.observation_cov,
    )


def _copies(mean: jax.Array, cholesky: jax.Array, num_components: int) -> GaussianMixture:
    """`num_components` identical copies of N(mean, cholesky choleskyᵀ), equal weights."""
    return GaussianMixture(
        jnp.full((num_components,), -jnp.log(num_components), mean.dtype),
        jnp.broadcast_to(mean, (num_components, *mean.shape)),
        jnp.broadcast_to(cholesky, (num_components, *cholesky.shape)),
    )


def _check_model(model: MixtureLinearGaussian) -> None:
    """Shapes that fit together; on concrete values, finite matrices and positive-definite
    Q and R."""
    dimension, data_size = model.initial.dimension, model.observation.shape[0]
    shapes = {
        "transition": (model.transition.shape, (dimension, dimension)),
        "transition_cov": (model.transition_cov.shape, (dimension, dimension)),
        "observation": (model.observation.shape, (data_size, dimension)),
        "observation_cov": (model.observation_cov.shape, (data_size, data_size)),
    }
    for name, (got, want) in shapes.items():
        if tuple(got) != want:
            raise ValueError(f"{name} must be {list(want)} for a {dimension}-D state, got {got}")
    checks.finite_array("transition", model.transition)
    checks.finite_array("observation", model.observation)
    checks.positive_definite("transition_cov", model.transition_cov)
    checks.positive_definite("observation_cov", model.observation_cov)


def _check(model: MixtureLinearGaussian, observations: jax.Array) -> None:
    """The model (`_check_model`) and observations [T >= 1, M], finite where concrete."""
    _check_model(model)
    data_size = model.observation.shape[0]
    if observations.ndim != 2 or observations.shape[1] != data_size or observations.shape[0] < 1:
        raise ValueError(
            f"observations must be [T >= 1, {data_size}], got shape {observations.shape}"
        )
    checks.finite_array("observations", observations)


def simulate(
    rng_key: jax.Array, model: MixtureLinearGaussian, num_steps: int
) -> tuple[jax.Array, jax.Array]:
    """States [T, D] and observations [T, M]: x_0 ~ p_0, then the linear-Gaussian chain."""
    _check_model(model)
    num_steps = checks.count("num_steps", num_steps)
    initial_key, steps_key = jax.random.split(rng_key)
    chol_q = jnp.linalg.cholesky(model.transition_cov)
    chol_r = jnp.linalg.cholesky(model.observation_cov)
    x0 = model.initial.sample(initial_key, 1)[0]

    def body(x: jax.Array, key: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        observation_key, transition_key = jax.random.split(key)
        y = model.observation @ x + chol_r @ jax.random.normal(observation_key, chol_r.shape[:1])
        x_next = model.transition @ x + chol_q @ jax.random.normal(transition_key, x.shape)
        return x_next, (x, y)

    _, (states, observations) = jax.lax.scan(body, x0, jax.random.split(steps_key, num_steps))
    return states, observations


def state_space_model(model: MixtureLinearGaussian, observations: jax.Array) -> StateSpaceModel:
    """Prior dynamics and observation likelihood for `ppl.samplers.smc` through
    `ppl.state_space.bootstrap` / `guided` (particles [N, D])."""
    _check(model, observations)
    gaussian = LinearGaussian(
        model.initial.mean(),
        model.initial.covariance(),
        model.transition,
        model.transition_cov,
        model.observation,
        model.observation_cov,
    )
    return linear_gaussian.state_space_model(gaussian, observations)._replace(
        initial_sample=model.initial.sample,
        initial_log_density=jax.vmap(model.initial.log_prob),
    )


def _run_filter(
    update: Callable[[GaussianMixture, jax.Array], tuple[GaussianMixture, jax.Array]],
    model: MixtureLinearGaussian,
    observations: jax.Array,
) -> FilterResult:
    """Predict-update recursion in one scan; `update(predicted, y) -> (filtered, log p(y_t|·))`.

    Step 0 runs in the same scan body (predicted_0 = p_0 selected by `where`), so a network
    `update` is traced once.
    """
    _check(model, observations)
    initial = jax.tree.map(jnp.asarray, model.initial)

    def body(
        filtered: GaussianMixture, inputs: tuple[jax.Array, jax.Array]
    ) -> tuple[GaussianMixture, tuple[GaussianMixture, GaussianMixture, jax.Array]]:
        y, first = inputs
        propagated = linear_gaussian_predict(filtered, model.transition, model.transition_cov)
        predicted = jax.tree.map(lambda a, b: jnp.where(first, a, b), initial, propagated)
        new, log_evidence = update(predicted, y)
        new = jax.tree.map(lambda leaf, like: leaf.astype(like.dtype), new, initial)
        return new, (new, predicted, log_evidence)

    firsts = jnp.arange(observations.shape[0]) == 0
    _, (filtered, predicted, log_evidence) = jax.lax.scan(body, initial, (observations, firsts))
    return FilterResult(filtered, jnp.sum(log_evidence), predicted)


def exact_filter(model: MixtureLinearGaussian, observations: jax.Array) -> FilterResult:
    """The bank of Kalman filters: exact filtered mixtures and log p(y_{0:T-1})."""

    def update(predicted: GaussianMixture, y: jax.Array) -> tuple[GaussianMixture, jax.Array]:
        return linear_gaussian_update(predicted, model.observation, model.observation_cov, y)

    return _run_filter(update, model, observations)


def amortized_filter(
    network: Network, model: MixtureLinearGaussian, observations: jax.Array
) -> FilterResult:
    """The filter with filtered_t = network(predicted_t, y_t[None]) and the exact predict.

    log_likelihood = Σ_t log ∫ predicted_t(x) N(y_t; H x, R) dx, exact given the (approximate)
    predicted mixtures; the network's output must keep the prior's number of components.
    """

    def update(predicted: GaussianMixture, y: jax.Array) -> tuple[GaussianMixture, jax.Array]:
        _, log_evidence = linear_gaussian_update(
            predicted, model.observation, model.observation_cov, y
        )
        return network(predicted, y[None]), log_evidence

    return _run_filter(update, model, observations)


def filter_kl(
    rng_key: jax.Array, exact: FilterResult, approximate: FilterResult, num_samples: int
) -> tuple[jax.Array, jax.Array]:
    """Monte Carlo KL(exact_t ‖ approximate_t) of the filtered mixtures and its standard
    error, per step [T]."""
    num_samples = checks.count("num_samples", num_samples)
    num_steps = exact.filtered.means.shape[0]
    keys = jax.random.split(rng_key, num_steps)
    return jax.vmap(lambda key, p, q: kl_divergence(key, p, q, num_samples))(
        keys, exact.filtered, approximate.filtered
    )


def amortized_proposal(
    network: Network,
    model: MixtureLinearGaussian,
    observations: jax.Array,
    num_components: int = 1,
) -> Proposal:
    """A guided particle-filter proposal from a network, evaluated per particle:

        q_0 = network(p_0, y_0),
        q_t(· | x_{t-1}) = network(`num_components` equal copies of N(A x_{t-1}, Q), y_t).

    Sampling and the log density each call the network once per particle (vmap).
    """
    _check(model, observations)
    num_components = checks.count("num_components", num_components)
    chol_q = jnp.linalg.cholesky(model.transition_cov)
    initial = network(model.initial, observations[0][None])

    def conditional(t: jax.Array, x_prev: jax.Array) -> GaussianMixture:
        prior = _copies(model.transition @ x_prev, chol_q, num_components)
        return network(prior, observations[t][None])

    def transition_sample(rng_key: jax.Array, t: jax.Array, x_prev: jax.Array) -> jax.Array:
        keys = jax.random.split(rng_key, x_prev.shape[0])
        return jax.vmap(lambda key, x: conditional(t, x).sample(key, 1)[0])(keys, x_prev)

    def transition_log_density(t: jax.Array, x_prev: jax.Array, x: jax.Array) -> jax.Array:
        return jax.vmap(lambda a, b: conditional(t, a).log_prob(b))(x_prev, x)

    return Proposal(
        initial_sample=initial.sample,
        initial_log_density=jax.vmap(initial.log_prob),
        transition_sample=transition_sample,
        transition_log_density=transition_log_density,
    )
