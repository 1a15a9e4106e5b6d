"""Plain-XLA Cholesky and triangular solves against numpy/scipy, and the jaxlib hang they avoid."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg

from ppl.small_linalg import cholesky, cholesky_solve, solve_lower, solve_lower_transposed


def spd_matrix(seed: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    root = rng.normal(size=(size, size))
    return root @ root.T + 0.5 * np.eye(size)


@pytest.mark.parametrize("size", [1, 2, 5, 13])
def test_cholesky_matches_numpy(size):
    matrix = spd_matrix(size, size)
    ours = np.asarray(cholesky(jnp.asarray(matrix)))
    np.testing.assert_allclose(ours, np.linalg.cholesky(matrix), rtol=1e-4, atol=1e-5)
    assert np.all(np.triu(ours, 1) == 0.0)


def test_solves_match_scipy_for_vectors_and_matrices():
    matrix = spd_matrix(0, 6)
    factor = np.linalg.cholesky(matrix)
    rng = np.random.default_rng(1)
    for rhs in (rng.normal(size=6), rng.normal(size=(6, 3))):
        lower = solve_lower(jnp.asarray(factor), jnp.asarray(rhs))
        upper = solve_lower_transposed(jnp.asarray(factor), jnp.asarray(rhs))
        full = cholesky_solve(jnp.asarray(factor), jnp.asarray(rhs))
        np.testing.assert_allclose(lower, linalg.solve_triangular(factor, rhs, lower=True), 1e-4)
        np.testing.assert_allclose(upper, linalg.solve_triangular(factor.T, rhs), rtol=1e-4)
        np.testing.assert_allclose(full, np.linalg.solve(matrix, rhs), rtol=1e-3, atol=1e-5)


def test_not_positive_definite_gives_nan_like_jax():
    matrix = jnp.array([[1.0, 2.0], [2.0, 1.0]])
    assert np.isnan(np.asarray(cholesky(matrix))).any()
    assert np.isnan(np.asarray(jnp.linalg.cholesky(matrix))).any()


def test_gradients_match_lapack_versions():
    matrix = jnp.asarray(spd_matrix(3, 4))
    rhs = jnp.arange(4.0)

    def ours(a: jax.Array) -> jax.Array:
        return jnp.sum(cholesky(a) ** 2) + jnp.sum(solve_lower(cholesky(a), rhs) ** 3)

    def reference(a: jax.Array) -> jax.Array:
        factor = jnp.linalg.cholesky(a)
        solved = jax.scipy.linalg.solve_triangular(factor, rhs, lower=True)
        return jnp.sum(factor**2) + jnp.sum(solved**3)

    np.testing.assert_allclose(jax.grad(ours)(matrix), jax.grad(reference)(matrix), rtol=1e-3)


def test_vmap_matches_loop():
    matrices = jnp.stack([jnp.asarray(spd_matrix(seed, 3)) for seed in range(5)])
    batched = jax.vmap(cholesky)(matrices)
    for matrix, factor in zip(matrices, batched, strict=True):
        np.testing.assert_allclose(factor, cholesky(matrix), rtol=1e-6)


HANG_REPRO = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from ppl.gaussian_mixture import GaussianMixture, kl_divergence

    batch, draws = 64, 1000
    p = GaussianMixture(
        jnp.full((batch, 3), -jnp.log(3.0)),
        jax.random.normal(jax.random.key(0), (batch, 3, 2)),
        jnp.tile(jnp.eye(2) * 0.5, (batch, 3, 1, 1)),
    )
    q = p._replace(means=p.means + 0.1)
    kls = jax.jit(jax.vmap(lambda key, a, b: kl_divergence(key, a, b, draws)[0]))
    for it in range(60):
        np.asarray(kls(jax.random.split(jax.random.key(it), batch), p, q))
    print("done")
    """
)


def test_vmapped_kl_does_not_hang():
    """jaxlib 0.10 on 2 CPU cores hung within ~15 calls of this when mixtures used LAPACK trsm."""
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", HANG_REPRO],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("done")
