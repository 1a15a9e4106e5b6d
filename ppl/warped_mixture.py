"""Gaussian mixtures warped onto a bounded support by an elementwise bijection.

A Gaussian mixture q(z) over unconstrained z ∈ ℝᴰ, pushed through a bijection θ = T(z) that
acts on each coordinate separately, has the density of a change of variables,

    log p(θ) = log q(T⁻¹(θ)) − Σ_d log |T'(z_d)|,   z = T⁻¹(θ).

With T = exp this is a mixture of log-normals on θ > 0; with T(z) = low + (high − low) σ(z)
a mixture of logit-normals on (low, high). The mixture itself is what the Distribution
Transformer (Whittle et al. 2025) reads and writes, so bounded parameters are handled by
warping and the network never sees the constraint. Transforms are NumPyro's
(`numpyro.distributions.transforms`), and `warp_for` picks NumPyro's own bijection onto a
constraint (`biject_to`), the same one NumPyro's inference uses for that support.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from numpyro.distributions import biject_to, constraints
from numpyro.distributions.constraints import Constraint
from numpyro.distributions.transforms import ExpTransform, Transform

from ppl.gaussian_mixture import GaussianMixture


class WarpedMixture(NamedTuple):
    """The law of θ = T(z), z ~ `mixture`, for an elementwise bijection `transform` T."""

    mixture: GaussianMixture
    transform: Transform

    @property
    def dimension(self) -> int:
        return self.mixture.dimension

    def unwarp(self, theta: jax.Array) -> jax.Array:
        """z = T⁻¹(θ) for θ [..., D]."""
        _check_elementwise(self.transform)
        return self.transform.inv(self._checked(theta))

    def warp(self, z: jax.Array) -> jax.Array:
        """θ = T(z) for z [..., D]."""
        _check_elementwise(self.transform)
        return self.transform(self._checked(z))

    def log_prob(self, theta: jax.Array) -> jax.Array:
        """log p(θ) = log q(T⁻¹θ) − Σ_d log|T'(z_d)| for one point θ [D] (vmap for many)."""
        _check_elementwise(self.transform)
        theta = self._checked(theta)
        if theta.ndim != 1:
            raise ValueError(f"log_prob takes one point [{self.dimension}], got {theta.shape}")
        z = self.transform.inv(theta)
        log_jacobian = jnp.sum(self.transform.log_abs_det_jacobian(z, theta))
        return self.mixture.log_prob(z) - log_jacobian

    def sample(self, rng_key: jax.Array, num_samples: int) -> jax.Array:
        """`num_samples` draws θ = T(z) [num_samples, D]."""
        _check_elementwise(self.transform)
        return self.transform(self.mixture.sample(rng_key, num_samples))

    def _checked(self, values: jax.Array) -> jax.Array:
        values = jnp.asarray(values)
        if values.ndim == 0 or values.shape[-1] != self.dimension:
            raise ValueError(
                f"need points [..., {self.dimension}] for a {self.dimension}-D mixture, "
                f"got shape {values.shape}"
            )
        return values


def _check_elementwise(transform: Transform) -> None:
    if not isinstance(transform, Transform):
        raise ValueError(f"transform must be a numpyro Transform, got {type(transform).__name__}")
    if transform.domain.event_dim != 0 or transform.codomain.event_dim != 0:
        raise ValueError(
            f"{type(transform).__name__} is not elementwise (event dims "
            f"{transform.domain.event_dim} -> {transform.codomain.event_dim}); a warped mixture "
            "needs a bijection applied to each coordinate separately"
        )


def log_warp() -> Transform:
    """T(z) = exp(z), onto θ > 0 (log-normal components)."""
    return ExpTransform()


def logit_warp(low: float | jax.Array, high: float | jax.Array) -> Transform:
    """T(z) = low + (high − low) sigmoid(z), onto (low, high) (logit-normal components).

    `low` and `high` are scalars or [D] arrays. Raises a ValueError unless low < high.
    """
    try:
        ordered = bool(jnp.all(jnp.asarray(low) < jnp.asarray(high)))
    except jax.errors.ConcretizationTypeError:  # traced bounds: cannot check here
        ordered = True
    if not ordered:
        raise ValueError(f"need low < high, got low={low}, high={high}")
    return warp_for(constraints.interval(low, high))


def warp_for(constraint: Constraint) -> Transform:
    """NumPyro's bijection from ℝ onto `constraint` (`biject_to`); it must be elementwise.

    E.g. `constraints.positive` gives exp and `constraints.interval(a, b)` a scaled sigmoid;
    a ValueError names a constraint whose bijection is not elementwise (simplex, ordered, ...).
    """
    transform = biject_to(constraint)
    _check_elementwise(transform)
    return transform
