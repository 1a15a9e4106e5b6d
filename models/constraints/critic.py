"""Any sequence potential as a critic of token-level particles, evaluated on the host.

A critic φ follows the prefix/complete contract of `ppl.models.constraints.sequence_potential`: it
scores the decoded bytes of every prefix (`prefix`) and of every finished generation (`complete`).
Inside the compiled sampling loop it runs through `jax.pure_callback`, once per step for the whole
batch, so it may be arbitrary Python: a context-free grammar
(`ppl.models.constraints.grammar.LarkGrammar`), a regular expression too large to lift to a token
table, or a programmatic checker. The sampler multiplies in φ_t(x_1:t) / φ_{t-1}(x_1:t-1), which
telescopes to φ(x) on complete sequences.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ppl.models.constraints.sequence_potential import SequencePotential


@dataclasses.dataclass(frozen=True, eq=False)
class HostCritic:
    """`critic(tokens [B, M], num_tokens [B], finished [B]) -> log φ [B]` (float32)."""

    potential: SequencePotential
    token_bytes: tuple[bytes, ...]

    @classmethod
    def of(cls, potential: SequencePotential, token_bytes: Sequence[bytes]) -> HostCritic:
        return cls(potential, tuple(token_bytes))

    def text(self, tokens: np.ndarray, num_tokens: int) -> bytes:
        return b"".join(self.token_bytes[t] for t in tokens[:num_tokens])

    def scores(
        self, tokens: np.ndarray, num_tokens: np.ndarray, finished: np.ndarray
    ) -> np.ndarray:
        out = np.empty(tokens.shape[0], np.float32)
        for b in range(tokens.shape[0]):
            data = self.text(tokens[b], int(num_tokens[b]))
            score = self.potential.complete(data) if finished[b] else self.potential.prefix(data)
            out[b] = score
        return out

    def __call__(self, tokens: jax.Array, num_tokens: jax.Array, finished: jax.Array) -> jax.Array:
        shape = jax.ShapeDtypeStruct(num_tokens.shape, jnp.float32)

        def host(tokens: np.ndarray, num_tokens: np.ndarray, finished: np.ndarray) -> np.ndarray:
            return self.scores(np.asarray(tokens), np.asarray(num_tokens), np.asarray(finished))

        return jax.pure_callback(host, shape, tokens, num_tokens, finished)
