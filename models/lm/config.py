"""Configuration of a decoder-only transformer, whatever architecture its checkpoint names.

The architectures this runtime reads (`ppl.models.lm.architectures`) all map their checkpoints
onto this one config and the `Params` pytree; the forward pass knows no architecture.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Static hyper-parameters of a decoder; hashable, so it is a static argument under `jit`.

    The rotary frequencies are not stored here: they are an array in the parameters
    (`Params.rope_inv_freq`), so checkpoint-specific scalings (Llama 3's) need no code path.
    `architecture` names the registered architecture the checkpoint came from (it decides
    nothing in the forward pass; writers of checkpoint files read it).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    context_length: int
    tie_embeddings: bool
    attention_bias: bool = False
    architecture: str = "llama"

    def __post_init__(self) -> None:
        from ppl.models.lm import architectures  # the architectures import this module

        architectures.get(self.architecture)  # a ValueError listing the registered ones
        positive = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads")
        for name in (*positive, "num_kv_heads", "head_dim", "context_length"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        eps = self.rms_norm_eps
        if not isinstance(eps, numbers.Real) or not math.isfinite(eps) or eps < 0:
            raise ValueError(f"rms_norm_eps must be a finite number >= 0, got {eps!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads}) for grouped-query attention"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")

    @property
    def group_size(self) -> int:
        """Query heads per key/value head."""
        return self.num_heads // self.num_kv_heads


def config_int(key: str, value: Any) -> int:
    """A positive integer from checkpoint metadata, or a ValueError naming `key` and `value`
    (a string, a float with a fraction, an array or a bool where the file needs a size)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number != int(number) or number <= 0:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return int(number)


def config_float(key: str, value: Any) -> float:
    """A finite number from checkpoint metadata, or a ValueError naming `key` and `value`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number, got {value!r}")
    return float(value)


def default_head_dim(hidden: int, heads: int, keys: str) -> int:
    """hidden / heads when the checkpoint gives no head size; `keys` names both in errors."""
    if hidden % heads:
        raise ValueError(f"{keys}: head count {heads} does not divide the width {hidden}")
    return hidden // heads


def rope_inverse_frequencies(head_dim: int, theta: float) -> list[float]:
    """Inverse frequencies theta^(-2i/d), i < d/2, of rotary embeddings on a head of size d.

    Architectures that rescale them (Llama 3's long-context scaling) do so in their own module.
    """
    return [theta ** (-(2 * i) / head_dim) for i in range(head_dim // 2)]
