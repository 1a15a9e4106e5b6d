"""The settings of `ppl.samplers.mcmc` (one frozen, hashable `MCMCSettings`, checked once) and
its result, `MCMCSamples`."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import jax
import numpy as np

__all__ = [
    "CHAIN_METHODS",
    "DEFAULT_TARGET_ACCEPTANCE",
    "KERNELS",
    "ChainMethod",
    "Kernel",
    "MCMCSamples",
    "MCMCSettings",
]

Kernel = Literal["nuts", "hmc", "mala"]
ChainMethod = Literal["auto", "vectorized", "sequential", "parallel"]
KERNELS: tuple[str, ...] = ("nuts", "hmc", "mala")
CHAIN_METHODS: tuple[str, ...] = ("auto", "vectorized", "sequential", "parallel")
DEFAULT_TARGET_ACCEPTANCE = {"nuts": 0.8, "hmc": 0.8, "mala": 0.574}
_INTEGER_FIELDS = (
    "num_warmup",
    "num_samples",
    "num_integration_steps",
    "max_tree_depth",
    "max_reinitializations",
)


@dataclass(frozen=True)
class MCMCSettings:
    """What to run; passed whole to `run` and `warmup` (and hashable, so it keys the compiled
    programs).

    kernel: ``"nuts"``, ``"hmc"`` or ``"mala"``.
    num_warmup / num_samples: adaptation steps and draws per chain (0 warm-up steps: step
        size 0.1, unit mass matrix).
    chain_method: how chains share the hardware (module docstring).
    target_acceptance_rate: of the step-size adaptation, in (0, 1) (None: 0.8 for NUTS/HMC,
        0.574 MALA).
    num_integration_steps: HMC's leapfrog steps per draw.
    max_tree_depth: NUTS's most trajectory doublings per draw (2^depth leapfrog steps; Stan
        and NumPyro default to 10).
    dense_mass: adapt a dense inverse mass matrix (NUTS/HMC; BlackJAX's
        ``is_mass_matrix_diagonal=False``) instead of a diagonal one.
    max_reinitializations: per chain, how many times a chain left degenerate by warm-up is
        restarted from a fresh point and warmed up again (module docstring; 0: never).
    """

    kernel: Kernel = "nuts"
    num_warmup: int = 1000
    num_samples: int = 1000
    chain_method: ChainMethod = "auto"
    target_acceptance_rate: float | None = None
    num_integration_steps: int = 16
    max_tree_depth: int = 10
    dense_mass: bool = False
    max_reinitializations: int = 5

    def __post_init__(self) -> None:
        for name in _INTEGER_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.kernel not in KERNELS:
            raise ValueError(f"unknown kernel {self.kernel!r}; choose one of {KERNELS}")
        if self.chain_method not in CHAIN_METHODS:
            raise ValueError(
                f"unknown chain_method {self.chain_method!r}; choose one of {CHAIN_METHODS}"
            )
        if self.num_samples < 1 or self.num_warmup < 0:
            raise ValueError(
                f"need num_samples >= 1 and num_warmup >= 0, got {self.num_samples}, "
                f"{self.num_warmup}"
            )
        target = self.target_acceptance_rate
        if target is not None and not 0.0 < target < 1.0:  # NaN fails both comparisons
            raise ValueError(f"need 0 < target_acceptance_rate < 1, got {target}")
        if self.num_integration_steps < 1:
            raise ValueError(f"need num_integration_steps >= 1, got {self.num_integration_steps}")
        if not 1 <= self.max_tree_depth <= 30:
            raise ValueError(f"need 1 <= max_tree_depth <= 30, got {self.max_tree_depth}")
        if self.dense_mass and self.kernel == "mala":
            raise ValueError("dense_mass needs a kernel with a mass matrix (nuts or hmc), not mala")
        if self.max_reinitializations < 0:
            raise ValueError(f"need max_reinitializations >= 0, got {self.max_reinitializations}")


class MCMCSamples(NamedTuple):
    """Draws and per-draw statistics; leading axes [num_chains, num_samples].

    `sample_stats` holds ``lp`` (log density), ``acceptance_rate``, and for NUTS/HMC
    ``diverging``, ``energy`` (Hamiltonian at the draw, for BFMI) and ``n_steps`` (leapfrog
    steps), plus ``tree_depth`` for NUTS. `step_size` [num_chains] and `inverse_mass_matrix`
    [num_chains, d] (ones for MALA; [num_chains, d, d] with `dense_mass`) are the adapted
    parameters. `reinitialized` counts per chain the restarts of a degenerate warm-up and
    `degenerate` marks the chains still degenerate after them (`degenerate_chains`).
    """

    positions: Any
    sample_stats: dict[str, jax.Array]
    step_size: jax.Array
    inverse_mass_matrix: jax.Array
    warmup_seconds: float
    sampling_seconds: float
    reinitialized: np.ndarray  # [num_chains] restarts after a degenerate warm-up
    degenerate: np.ndarray  # [num_chains] bool: still degenerate after the restarts
