"""Models whose steps run on the host: the protocol for LLM reasoning steps scored by verifiers.

A `StepwiseModel` is a Feynman-Kac model (see `ppl.feynman_kac`) whose transition and
potential are ordinary Python callables rather than traceable functions, because a step may
decode text with a language model and score it with a programmatic checker or another model.
The particles are an opaque pytree holding B = G x N rows: G independent particle systems
(one per prompt) of N particles each, in one batch so that the device runs them together.

    x_t ~ M_t(x_{t-1}, .)                  `extend(rng_key, particles)`
    log G_t(x_{t-1}, x_t)                  `log_potential(previous, particles)`   [B]
    finished rows are absorbed             `finished(particles)`                  [B] bool
    resampling is a gather by ancestors    `gather(particles, ancestors)`         ancestors [B]

`extend` must leave finished rows unchanged, and `log_potential` gives every row its
incremental log weight (0 keeps an absorbed row's weight as it is).
"""

from __future__ import annotations

from typing import Protocol

import jax
import numpy as np

from ppl.feynman_kac import Particles


class StepwiseModel(Protocol):
    """G particle systems of N particles in one batch of B = G x N rows, stepped from the host."""

    @property
    def num_groups(self) -> int:
        """G, the number of independent particle systems (prompts) in the batch."""
        ...

    def extend(self, rng_key: jax.Array, particles: Particles) -> Particles:
        """One step for every live row; finished rows come back unchanged."""
        ...

    def log_potential(self, previous: Particles, particles: Particles) -> np.ndarray:
        """Incremental log weights [B] of the step `previous -> particles` (NaN counts as -inf)."""
        ...

    def finished(self, particles: Particles) -> np.ndarray:
        """[B] bool: rows that are complete and must not be extended."""
        ...

    def gather(self, particles: Particles, ancestors: jax.Array) -> Particles:
        """Rows `ancestors` [B] of the batch (global row indices)."""
        ...
