"""Parameter pytrees of a decoder (every registered architecture loads into these).

Float matrices are stored `[in, out]` so a layer computes `x @ w`; a matrix kept quantized is a
`QuantizedWeight` in GGUF's `[out, in]` row order, and the forward pass computes
`qmatmul.linear(x, w)` for either. The per-layer parameters are stacked on a leading axis of
size `num_layers` and the forward pass scans over it, which keeps compile time independent of
depth.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppl.models.lm.config import DecoderConfig, rope_inverse_frequencies
from ppl.models.lm.qmatmul import QuantizedWeight

Tensor = jax.Array | np.ndarray  # loaders build parameters in NumPy; the runtime casts to JAX
Matrix = Tensor | QuantizedWeight  # a float [in, out] matrix or a quantized [out, in] one


class LayerParams(NamedTuple):
    """One decoder block (or all blocks, stacked on a leading axis)."""

    attn_norm: Tensor  # [d]
    wq: Matrix  # [d, H * hd]
    wk: Matrix  # [d, Hkv * hd]
    wv: Matrix  # [d, Hkv * hd]
    wo: Matrix  # [H * hd, d]
    bq: Tensor | None  # [H * hd] (Qwen2) or None
    bk: Tensor | None
    bv: Tensor | None
    ffn_norm: Tensor  # [d]
    w_gate: Matrix  # [d, F]
    w_up: Matrix  # [d, F]
    w_down: Matrix  # [F, d]


MATRIX_FIELDS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")  # may be quantized
OPTIONAL_LAYER_FIELDS = ("bq", "bk", "bv")  # None where a checkpoint has no attention biases


class Params(NamedTuple):
    """All weights of a decoder. `lm_head` is None when the output embedding is tied."""

    embed: Tensor | QuantizedWeight  # [V, d] (quantized: rows V, blocks along d)
    layers: LayerParams  # stacked, leading axis L
    final_norm: Tensor  # [d]
    lm_head: Matrix | None  # [d, V] (quantized: [V, d]) or None
    rope_inv_freq: Tensor  # [hd / 2], float32


def stack_layers(layers: list[dict[str, Any]]) -> LayerParams:
    """Stack per-layer dicts (keys as `LayerParams` fields, numpy arrays or `QuantizedWeight`s
    of one format per field) into one `LayerParams`."""
    fields: dict[str, Any] = {}
    for name in LayerParams._fields:
        values = [layer.get(name) for layer in layers]
        if any(v is None for v in values):
            if not all(v is None for v in values):
                raise ValueError(f"parameter {name!r} is present in some layers but not all")
            fields[name] = None
        else:
            kinds = {v.format if isinstance(v, QuantizedWeight) else "float" for v in values}
            if len(kinds) > 1:
                raise ValueError(f"parameter {name!r} mixes weight formats {sorted(kinds)}")
            fields[name] = jax.tree.map(lambda *xs: np.stack(xs), *values)
    return LayerParams(**fields)


def _is_quantized(x: Any) -> bool:
    return isinstance(x, QuantizedWeight)


def cast_params(params: Params, dtype: jnp.dtype) -> Params:
    """Cast the float weights to the computation dtype; quantized weights keep their codes and
    float32 scales, and rotary frequencies stay float32."""
    weights = params._replace(rope_inv_freq=None)  # type: ignore[arg-type]

    def to_device(x: Any) -> Any:
        if isinstance(x, QuantizedWeight):
            return jax.tree.map(jnp.asarray, x)
        return jnp.asarray(x, dtype)

    cast = jax.tree.map(to_device, weights, is_leaf=_is_quantized)
    return cast._replace(rope_inv_freq=jnp.asarray(params.rope_inv_freq, jnp.float32))


def check_shapes(params: Params, config: DecoderConfig) -> None:
    """Raise a ValueError naming the first parameter whose shape disagrees with `config`."""
    d, f, v, n = config.hidden_size, config.intermediate_size, config.vocab_size, config.num_layers
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    expected: dict[str, tuple[int, ...]] = {
        "embed": (v, d),
        "final_norm": (d,),
        "rope_inv_freq": (config.head_dim // 2,),
        "layers.attn_norm": (n, d),
        "layers.wq": (n, d, q),
        "layers.wk": (n, d, kv),
        "layers.wv": (n, d, kv),
        "layers.wo": (n, q, d),
        "layers.ffn_norm": (n, d),
        "layers.w_gate": (n, d, f),
        "layers.w_up": (n, d, f),
        "layers.w_down": (n, f, d),
    }
    if config.attention_bias:
        expected.update({"layers.bq": (n, q), "layers.bk": (n, kv), "layers.bv": (n, kv)})
    if not config.tie_embeddings:
        expected["lm_head"] = (d, v)
    for name, shape in expected.items():
        obj: Any = params
        for part in name.split("."):
            obj = getattr(obj, part)
        if obj is None:
            raise ValueError(f"parameter {name} is missing (expected shape {shape})")
        actual = tuple(obj.shape)
        if isinstance(obj, QuantizedWeight):  # [.., N, K]: transposed except the embedding
            rows, cols = obj.shape
            lead = tuple(obj.codes.shape[:-2])
            actual = (*lead, rows, cols) if name == "embed" else (*lead, cols, rows)
        if actual != shape:
            raise ValueError(f"parameter {name} has shape {actual}, expected {shape}")


def named_params(params: Params) -> dict[str, Any]:
    """Every parameter by dotted name ("embed", "layers.wq"), None where absent."""
    named = {f"layers.{k}": v for k, v in params.layers._asdict().items()}
    named.update({k: v for k, v in params._asdict().items() if k != "layers"})
    return named


def quantized_formats(params: Params) -> dict[str, str]:
    """The quantized format of each parameter kept quantized, by dotted name ("layers.wq")."""
    named = named_params(params)
    return {k: v.format for k, v in named.items() if isinstance(v, QuantizedWeight)}


def init_random_params(key: jax.Array, config: DecoderConfig, scale: float = 0.2) -> Params:
    """Random weights for tests and tiny experiments (normal with std `scale`, unit norms)."""
    d, f, v, n = config.hidden_size, config.intermediate_size, config.vocab_size, config.num_layers
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    keys = iter(jax.random.split(key, 16))

    def normal(*shape: int) -> jax.Array:
        return scale * jax.random.normal(next(keys), shape, jnp.float32)

    bias = config.attention_bias
    layers = LayerParams(
        attn_norm=1.0 + normal(n, d),
        wq=normal(n, d, q),
        wk=normal(n, d, kv),
        wv=normal(n, d, kv),
        wo=normal(n, q, d),
        bq=normal(n, q) if bias else None,
        bk=normal(n, kv) if bias else None,
        bv=normal(n, kv) if bias else None,
        ffn_norm=1.0 + normal(n, d),
        w_gate=normal(n, d, f),
        w_up=normal(n, d, f),
        w_down=normal(n, f, d),
    )
    inv_freq = jnp.asarray(rope_inverse_frequencies(config.head_dim, 10000.0), jnp.float32)
    return Params(
        embed=normal(v, d) * 0.5,
        layers=layers,
        final_norm=1.0 + normal(d),
        lm_head=None if config.tie_embeddings else normal(d, v),
        rope_inv_freq=inv_freq,
    )
