"""Configuration of a Llama-family decoder (SmolLM2, Llama 3, Qwen2 layouts)."""

from __future__ import annotations

import dataclasses

SUPPORTED_ARCHITECTURES = ("llama", "qwen2")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Static hyper-parameters of a decoder; hashable, so it is a static argument under `jit`.

    The rotary frequencies are not stored here: they are an array in the parameters
    (`Params.rope_inv_freq`), so checkpoint-specific scalings (Llama 3's) need no code path.
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
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {self.architecture!r}; supported: {SUPPORTED_ARCHITECTURES}"
            )
        positive = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads")
        for name in (*positive, "num_kv_heads", "head_dim", "context_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
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


def rope_inverse_frequencies(
    head_dim: int,
    theta: float,
    llama3_scaling: dict[str, float] | None = None,
) -> list[float]:
    """Inverse frequencies theta^(-2i/d), i < d/2, with Llama 3's optional long-context scaling.

    Llama 3 scaling divides the frequencies of long wavelengths by `factor`, keeps short ones,
    and interpolates smoothly between `original_max_position_embeddings / low_freq_factor` and
    `... / high_freq_factor`.
    """
    import math

    inv = [theta ** (-(2 * i) / head_dim) for i in range(head_dim // 2)]
    if not llama3_scaling:
        return inv
    factor = llama3_scaling["factor"]
    low = llama3_scaling.get("low_freq_factor", 1.0)
    high = llama3_scaling.get("high_freq_factor", 4.0)
    original = llama3_scaling.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = original / low, original / high
    scaled = []
    for f in inv:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            scaled.append(f)
        elif wavelen > low_wavelen:
            scaled.append(f / factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            scaled.append((1 - smooth) * f / factor + smooth * f)
    return scaled
