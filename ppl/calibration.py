"""Simulation-based calibration (Talts et al. 2018): are posterior draws calibrated on average?

Draw a latent from the prior, x̃ ~ p(x), data from the likelihood, y ~ p(y | x̃), and L draws
x_1..L from the posterior under test for y. If that posterior is exact, x̃ and x_1..L are
exchangeable draws from p(x | y), so the rank of x̃ among them in each dimension,

    r = #{l : x_l < x̃} ∈ {0, ..., L},

is uniform on its L + 1 values, whatever the prior and the problem. Over P simulated problems,
a rank histogram that is ∪-shaped means an overconfident posterior (too narrow), ∩-shaped an
underconfident one, and a slope a biased one.

Uniformity is tested per dimension with Pearson's chi-square on B bins. Bin b holds the ranks
{b m, ..., b m + m − 1} with m = (L + 1) / B, so B must divide L + 1 and every bin has
probability 1/B under uniformity (equal expected counts P/B; keep P/B ≳ 5 for the chi-square
approximation; the default aims at P/B ≥ 20 with B ≤ 20, see `default_num_bins`). Ties
between the latent and a draw have probability zero for continuous posteriors and are not
broken.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from scipy.stats import chisquare


class SBCResult(NamedTuple):
    """Ranks [P, D] of the latents among `num_draws` posterior draws, their histogram over
    `num_bins` equal-probability bins [B, D] and the chi-square p-value of uniformity [D]."""

    ranks: np.ndarray
    num_draws: int
    num_bins: int
    counts: np.ndarray
    p_values: np.ndarray


def sbc_ranks(latents: ArrayLike, posterior_draws: ArrayLike) -> jax.Array:
    """The rank of each latent [P, D] among its posterior draws [P, L, D]: the number of draws
    below it, in 0..L, per problem and dimension [P, D]."""
    latents, posterior_draws = jnp.asarray(latents), jnp.asarray(posterior_draws)
    if (
        latents.ndim != 2
        or posterior_draws.ndim != 3
        or posterior_draws.shape[::2] != latents.shape
    ):
        raise ValueError(
            f"need latents [P, D] and posterior_draws [P, L, D]; "
            f"got {latents.shape}, {posterior_draws.shape}"
        )
    return jnp.sum(posterior_draws < latents[:, None, :], axis=1)


def rank_histogram(ranks: ArrayLike, num_draws: int, num_bins: int) -> np.ndarray:
    """Counts [B, D] of ranks [P, D] (in 0..L) in B bins of (L + 1) / B consecutive ranks."""
    ranks = np.asarray(ranks)
    if ranks.ndim != 2:
        raise ValueError(f"need ranks [P, D], got shape {ranks.shape}")
    if num_bins < 2 or (num_draws + 1) % num_bins:
        raise ValueError(
            f"num_bins must be >= 2 and divide num_draws + 1 = {num_draws + 1} "
            f"(equal-probability bins), got {num_bins}"
        )
    if ranks.size and (ranks.min() < 0 or ranks.max() > num_draws):
        raise ValueError(f"ranks must lie in 0..{num_draws}")
    bins = ranks // ((num_draws + 1) // num_bins)
    return np.stack([np.bincount(column, minlength=num_bins) for column in bins.T], axis=1)


def sbc_uniformity(ranks: ArrayLike, num_draws: int, num_bins: int) -> np.ndarray:
    """Per dimension [D], the chi-square p-value of the rank histogram against uniform (module
    docstring: B must divide L + 1)."""
    counts = rank_histogram(ranks, num_draws, num_bins)
    return np.asarray(chisquare(counts, axis=0).pvalue)


def default_num_bins(num_draws: int, num_problems: int) -> int:
    """The most bins, at most 20, that divide L + 1 and expect at least 20 ranks each; the
    fewest bins that divide L + 1 when none does.

    Few, well-filled bins: the usual miscalibrations (a slope, a ∪ or ∩) are smooth, and the
    chi-square spreads its power over B − 1 degrees of freedom, so 100 bins of 10 ranks can
    miss a bias that 20 bins of 50 flag.
    """
    divisors = [b for b in range(2, num_draws + 2) if (num_draws + 1) % b == 0]
    if not divisors:
        raise ValueError(f"num_draws + 1 = {num_draws + 1} has no divisor >= 2")
    fitting = [b for b in divisors if b <= 20 and num_problems / b >= 20]
    return max(fitting) if fitting else min(divisors)


def simulation_based_calibration(
    rng_key: jax.Array,
    sample_problem: Callable[[jax.Array], tuple[jax.Array, Any]],
    posterior_sampler: Callable[[jax.Array, Any, int], jax.Array],
    num_problems: int,
    num_draws: int,
    num_bins: int | None = None,
) -> SBCResult:
    """Run SBC on `num_problems` problems, each with `num_draws` posterior draws.

    `sample_problem(rng_key) -> (latent [D], problem)` simulates a latent from the prior and its
    data; `posterior_sampler(rng_key, problem, num_draws) -> [num_draws, D]` draws from the
    posterior under test. Both are `jax.vmap`-ed over problems and compiled (cached per
    function object, so passing the same functions again does not recompile). `num_bins` defaults to
    `default_num_bins(num_draws, num_problems)`.
    """
    if num_problems < 1 or num_draws < 1:
        raise ValueError(f"need num_problems, num_draws >= 1, got {num_problems}, {num_draws}")
    problem_key, posterior_key = jax.random.split(rng_key)
    latents, problems = _sample_problems(
        sample_problem, jax.random.split(problem_key, num_problems)
    )
    draws = _posterior_draws(
        posterior_sampler, num_draws, jax.random.split(posterior_key, num_problems), problems
    )
    ranks = np.asarray(sbc_ranks(latents, draws))
    num_bins = default_num_bins(num_draws, num_problems) if num_bins is None else num_bins
    counts = rank_histogram(ranks, num_draws, num_bins)
    return SBCResult(ranks, num_draws, num_bins, counts, np.asarray(chisquare(counts).pvalue))


@partial(jax.jit, static_argnums=0)
def _sample_problems(
    sample_problem: Callable[[jax.Array], tuple[jax.Array, Any]], keys: jax.Array
) -> tuple[jax.Array, Any]:
    return jax.vmap(sample_problem)(keys)


@partial(jax.jit, static_argnums=(0, 1))
def _posterior_draws(
    posterior_sampler: Callable[[jax.Array, Any, int], jax.Array],
    num_draws: int,
    keys: jax.Array,
    problems: Any,
) -> jax.Array:
    return jax.vmap(lambda key, problem: posterior_sampler(key, problem, num_draws))(keys, problems)
