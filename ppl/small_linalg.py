"""Cholesky factorisation and triangular solves for small matrices, in plain XLA ops.

Why not `jnp.linalg.cholesky` and `jax.scipy.linalg.solve_triangular`: vmapped over many
problems, jaxlib 0.10's CPU LAPACK kernels split the batch into sub-tasks on XLA's thread
pool and block until they finish; two such calls in flight at once can deadlock a small pool
(seen on 2 cores: every thread asleep, the main thread waiting in `BlockUntilReady`). The
mixtures of the amortized-posterior code have D ≲ 20 (and a stacked update has D·N ≲ a few
hundred), where a loop over rows of vectorised XLA ops costs little and vmaps into batched
matrix-vector products with no custom call.

Cholesky–Banachiewicz by columns: with the first j columns of L known,

    c = A[:, j] − L[:, :j] L[j, :j]ᵀ,   L[j, j] = √c_j,   L[i, j] = c_i / L[j, j]  (i > j).

Forward substitution L z = b: z_i = (b_i − Σ_{k<i} L_ik z_k) / L_ii; backward substitution
Lᵀ z = b: z_i = (b_i − Σ_{k>i} L_ki z_k) / L_ii. A matrix that is not positive definite gives
NaN, as `jnp.linalg.cholesky` does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cholesky(matrix: jax.Array) -> jax.Array:
    """The lower-triangular L with L Lᵀ = `matrix` [D, D] (symmetric positive definite).

    Like `jnp.linalg.cholesky`, it factors ½ (A + Aᵀ), so gradients are symmetric.
    """
    matrix = 0.5 * (matrix + matrix.T)
    size = matrix.shape[-1]
    rows = jnp.arange(size)

    def column(j: int, factor: jax.Array) -> jax.Array:
        residual = matrix[:, j] - factor @ factor[j]
        pivot = jnp.sqrt(residual[j])
        value = jnp.where(rows > j, residual / pivot, jnp.where(rows == j, pivot, 0.0))
        return factor.at[:, j].set(value)

    return jax.lax.fori_loop(0, size, column, jnp.zeros_like(matrix))


def solve_lower(factor: jax.Array, rhs: jax.Array) -> jax.Array:
    """L⁻¹ B for lower-triangular L [D, D] and B [D] or [D, M] (forward substitution)."""

    def row(i: int, solution: jax.Array) -> jax.Array:
        return solution.at[i].set((rhs[i] - factor[i] @ solution) / factor[i, i])

    return jax.lax.fori_loop(0, factor.shape[-1], row, jnp.zeros_like(rhs))


def solve_lower_transposed(factor: jax.Array, rhs: jax.Array) -> jax.Array:
    """L⁻ᵀ B for lower-triangular L [D, D] and B [D] or [D, M] (backward substitution)."""
    size = factor.shape[-1]

    def row(step: int, solution: jax.Array) -> jax.Array:
        i = size - 1 - step
        return solution.at[i].set((rhs[i] - factor[:, i] @ solution) / factor[i, i])

    return jax.lax.fori_loop(0, size, row, jnp.zeros_like(rhs))


def cholesky_solve(factor: jax.Array, rhs: jax.Array) -> jax.Array:
    """A⁻¹ B given the Cholesky factor L of A = L Lᵀ."""
    return solve_lower_transposed(factor, solve_lower(factor, rhs))
