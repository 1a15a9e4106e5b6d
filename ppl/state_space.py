"""State-space models and the particle filters built from them as Feynman-Kac models.

A state-space model is  x_0 ~ p_0,  x_t ~ p(x_t | x_{t-1}),  y_t ~ p(y_t | x_t)  with the
observations fixed (closed over by `observation_log_likelihood`). The filters differ only in
the Feynman-Kac model they hand to SMC; all three estimate Z = p(y_{0:T-1}) without bias:

- bootstrap:  M_t = p(x_t | x_{t-1}),  G_t = p(y_t | x_t);
- guided:     M_t = q_t(x_t | x_{t-1}),
              G_t = p(x_t | x_{t-1}) p(y_t | x_t) / q_t(x_t | x_{t-1})  (and likewise at t = 0);
- auxiliary:  any Feynman-Kac model twisted by look-ahead weights eta_{t+1}(x_t) ~ p(y_{t+1} | x_t):
              G'_t = G_t * eta_{t+1}(x_t) / eta_t(x_{t-1}), with eta_T = 1, so the product of the
              potentials telescopes to the same Z while resampling already favours particles
              whose children will fit the next observation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ppl.feynman_kac import FeynmanKac, Particles


class StateSpaceModel(NamedTuple):
    """Prior dynamics and observation likelihood, vectorized over a particle axis.

    Attributes:
        initial_sample: `(rng_key, N) -> x_0` from p_0.
        initial_log_density: `x_0 -> log p_0(x_0)` [N].
        transition_sample: `(rng_key, t, x_{t-1}) -> x_t` from p(x_t | x_{t-1}).
        transition_log_density: `(t, x_{t-1}, x_t) -> log p(x_t | x_{t-1})` [N].
        observation_log_likelihood: `(t, x_t) -> log p(y_t | x_t)` [N].
        num_steps: the number of observations (None: defined for any t); carried to the
            Feynman-Kac models built from it, whose samplers refuse a longer run.
    """

    initial_sample: Callable[[jax.Array, int], Particles]
    initial_log_density: Callable[[Particles], jax.Array]
    transition_sample: Callable[[jax.Array, jax.Array, Particles], Particles]
    transition_log_density: Callable[[jax.Array, Particles, Particles], jax.Array]
    observation_log_likelihood: Callable[[jax.Array, Particles], jax.Array]
    num_steps: int | None = None


class Proposal(NamedTuple):
    """A proposal q for a guided filter (may look at the observations it closes over).

    Attributes:
        initial_sample, initial_log_density: q_0 and its log density.
        transition_sample: `(rng_key, t, x_{t-1}) -> x_t` from q_t(. | x_{t-1}).
        transition_log_density: `(t, x_{t-1}, x_t) -> log q_t(x_t | x_{t-1})` [N].
    """

    initial_sample: Callable[[jax.Array, int], Particles]
    initial_log_density: Callable[[Particles], jax.Array]
    transition_sample: Callable[[jax.Array, jax.Array, Particles], Particles]
    transition_log_density: Callable[[jax.Array, Particles, Particles], jax.Array]


def bootstrap(model: StateSpaceModel) -> FeynmanKac:
    """Propose from the dynamics and weight by the observation likelihood."""
    return FeynmanKac(
        initial_sample=model.initial_sample,
        initial_log_potential=lambda x: model.observation_log_likelihood(
            jnp.zeros((), jnp.int32), x
        ),
        transition_sample=model.transition_sample,
        log_potential=lambda t, x_prev, x: model.observation_log_likelihood(t, x),
        num_steps=model.num_steps,
    )


def guided(model: StateSpaceModel, proposal: Proposal) -> FeynmanKac:
    """Propose from q and correct by the weight p(x_t | x_{t-1}) p(y_t | x_t) / q(x_t | x_{t-1})."""

    def initial_log_potential(x: Particles) -> jax.Array:
        t0 = jnp.zeros((), jnp.int32)
        log_prior = model.initial_log_density(x) - proposal.initial_log_density(x)
        return log_prior + model.observation_log_likelihood(t0, x)

    def log_potential(t: jax.Array, x_prev: Particles, x: Particles) -> jax.Array:
        correction = model.transition_log_density(t, x_prev, x) - proposal.transition_log_density(
            t, x_prev, x
        )
        return correction + model.observation_log_likelihood(t, x)

    return FeynmanKac(
        initial_sample=proposal.initial_sample,
        initial_log_potential=initial_log_potential,
        transition_sample=proposal.transition_sample,
        log_potential=log_potential,
        num_steps=model.num_steps,
    )


def auxiliary(
    model: FeynmanKac,
    log_lookahead: Callable[[jax.Array, Particles], jax.Array],
    num_steps: int,
) -> FeynmanKac:
    """Twist `model` by look-ahead weights: `log_lookahead(t, x_t)` = log eta_{t+1}(x_t).

    The look-ahead is dropped after the last step (t = num_steps - 1), so the evidence is
    unchanged; the closer eta_{t+1}(x_t) is to p(y_{t+1} | x_t), the lower its variance.
    """

    def eta(t: jax.Array, x: Particles) -> jax.Array:
        return jnp.where(t < num_steps - 1, log_lookahead(t, x), 0.0)

    return model._replace(
        initial_log_potential=lambda x: (
            model.initial_log_potential(x) + eta(jnp.zeros((), jnp.int32), x)
        ),
        log_potential=lambda t, x_prev, x: (
            model.log_potential(t, x_prev, x) - eta(t - 1, x_prev) + eta(t, x)
        ),
    )
