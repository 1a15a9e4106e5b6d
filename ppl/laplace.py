"""A Gaussian reference distribution from the Laplace approximation of a log density.

For a log density log p̃(u) on Rᵈ (unnormalised, e.g. a posterior on the unconstrained space)
the mode û = argmax log p̃ is found with optax's L-BFGS, and the reference is

    q(u) = N(u; û, s² H⁻¹),   H = −∇² log p̃(û),

with `inflation` s (default 3) so that q's tails cover p̃'s (with 2, gp_pois_regr's q was
lighter-tailed than its posterior and tempered SMC's log Ẑ ran 0.1 low; docs/bayesian.md).
Tempered SMC starts from q (`ppl.experiments.bayes.run_tempered_smc`): the path q^{1−β} p̃^β
ends at the posterior and its evidence estimate is ∫ p̃. A mode that is not found, or a
Hessian that is not negative definite there, is a `LaplaceError` saying which.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ppl.small_linalg import solve_lower


class LaplaceError(ValueError):
    """The mode search failed or the Hessian at the mode is not negative definite."""


class GaussianReference(NamedTuple):
    """N(mean, L Lᵀ) on flat vectors: its log density and draws."""

    mean: jax.Array
    cholesky: jax.Array

    def log_density(self, u: jax.Array) -> jax.Array:
        # `solve_lower`, not a LAPACK triangular solve: this is vmapped over the particles
        # (`ppl.small_linalg` says why batched LAPACK calls are avoided).
        whitened = solve_lower(self.cholesky, u - self.mean)
        dimension = self.mean.shape[0]
        return (
            -0.5 * jnp.sum(whitened**2)
            - jnp.sum(jnp.log(jnp.diag(self.cholesky)))
            - 0.5 * dimension * math.log(2 * math.pi)
        )

    def sample(self, rng_key: jax.Array, num_samples: int) -> jax.Array:
        noise = jax.random.normal(rng_key, (num_samples, self.mean.shape[0]), self.mean.dtype)
        return self.mean + noise @ self.cholesky.T


def laplace_reference(
    log_density_fn: Callable[[jax.Array], jax.Array],
    initial: jax.Array,
    *,
    inflation: float = 3.0,
    max_iterations: int = 500,
    tolerance: float = 1e-5,
) -> GaussianReference:
    """The inflated Laplace approximation N(û, inflation² H⁻¹) of `log_density_fn` (see the
    module docstring), searching for the mode from the flat vector `initial`."""
    if not (math.isfinite(inflation) and inflation > 0):
        raise ValueError(f"inflation must be a finite number > 0, got {inflation!r}")

    def loss(u: jax.Array) -> jax.Array:
        return -log_density_fn(u)

    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    @jax.jit
    def minimise(u: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        def step(carry: tuple) -> tuple:
            u, state, _ = carry
            value, grad = value_and_grad(u, state=state)
            updates, state = solver.update(grad, state, u, value=value, grad=grad, value_fn=loss)
            return optax.apply_updates(u, updates), state, jnp.linalg.norm(grad)

        def keep_going(carry: tuple) -> jax.Array:
            _, state, grad_norm = carry
            count = optax.tree_utils.tree_get(state, "count")
            return (count < max_iterations) & (grad_norm > tolerance)

        u, _, grad_norm = jax.lax.while_loop(
            keep_going, step, (u, solver.init(u), jnp.asarray(jnp.inf, u.dtype))
        )
        return u, loss(u), grad_norm, jax.hessian(loss)(u)

    mode, value, grad_norm, hessian = minimise(jnp.asarray(initial))
    if not bool(jnp.all(jnp.isfinite(mode))) or not np.isfinite(float(value)):
        raise LaplaceError("the mode search left the region where the log density is finite")
    hessian = 0.5 * (hessian + hessian.T)
    # Σ = s² H⁻¹; its Cholesky factor is NaN unless −∇² log p̃ is positive definite at û.
    covariance = inflation**2 * jnp.linalg.inv(hessian)
    cholesky = jnp.linalg.cholesky(0.5 * (covariance + covariance.T))
    if not bool(jnp.all(jnp.isfinite(cholesky))):
        eigenvalues = np.linalg.eigvalsh(np.asarray(hessian, np.float64))
        raise LaplaceError(
            f"the log density's Hessian at the mode found is not negative definite (smallest "
            f"eigenvalue of −H {eigenvalues.min():.3g}; gradient norm {float(grad_norm):.3g}): "
            "no Gaussian reference"
        )
    return GaussianReference(mode, cholesky)
