"""The forward pass of a decoder as pure functions over `Params`.

RMSNorm -> grouped-query attention with rotary embeddings (half-split layout) -> residual ->
RMSNorm -> SwiGLU -> residual, for every block; then a final RMSNorm and the (tied or untied)
output projection. Every registered architecture (`ppl.models.lm.architectures`) loads into
this one layout; the loaders convert checkpoints whose rotary layout is interleaved (GGUF files
of the llama architecture) to the half-split layout, so one rotary convention serves all.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ppl.models.lm.cache import KVCache
from ppl.models.lm.config import DecoderConfig
from ppl.models.lm.params import LayerParams, Params, Tensor
from ppl.models.lm.qmatmul import QuantizedWeight, dequantize_rows, linear


def rms_norm(x: jax.Array, weight: Tensor, eps: float) -> jax.Array:
    """x / sqrt(mean(x^2) + eps) * weight, accumulated in float32."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return normed.astype(x.dtype) * weight


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: Tensor) -> jax.Array:
    """Rotate `x` [B, S, heads, hd] at `positions` [B, S] (half-split pairs (i, i + hd/2))."""
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, S, hd/2]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x.dtype)


def _attention(
    q: jax.Array,
    k_new: jax.Array,
    v_new: jax.Array,
    k_cache: jax.Array | None,
    v_cache: jax.Array | None,
    cache_lengths: jax.Array,
) -> jax.Array:
    """Softmax attention of a chunk of queries over the cached prefix and the chunk itself.

    q: [B, S, Hkv, G, hd]; k_new, v_new: [B, S, Hkv, hd]; caches: [B, Hkv, T, hd] or None.
    Query s of row b sees cache positions t < cache_lengths[b] and chunk positions u <= s.
    The G query heads of a group and the S chunk positions are merged into one matrix
    dimension, so each (row, KV head) is a plain matrix product against a contiguous cache
    block (3x faster on CPU than keeping S as its own dimension).
    """
    batch, seq, hkv, group, hd = q.shape
    scale = hd**-0.5
    q = jnp.transpose(q, (0, 2, 3, 1, 4)).reshape(batch, hkv, group * seq, hd)  # [B, K, G*S, hd]
    k_new, v_new = jnp.transpose(k_new, (0, 2, 1, 3)), jnp.transpose(v_new, (0, 2, 1, 3))
    scores_new = jnp.einsum("bkmd,bkud->bkmu", q, k_new, preferred_element_type=jnp.float32)
    query_position = jnp.tile(jnp.arange(seq), group)  # row m of the merged dim is s = m % S
    causal = query_position[:, None] >= jnp.arange(seq)[None, :]
    scores_new = jnp.where(causal, scores_new * scale, -jnp.inf)
    if k_cache is None or v_cache is None:
        probs = jax.nn.softmax(scores_new, axis=-1).astype(v_new.dtype)
        out = jnp.einsum("bkmu,bkud->bkmd", probs, v_new)
    else:
        scores_cache = jnp.einsum("bkmd,bktd->bkmt", q, k_cache, preferred_element_type=jnp.float32)
        visible = jnp.arange(k_cache.shape[2]) < cache_lengths[:, None]  # [B, T]
        scores_cache = jnp.where(visible[:, None, None, :], scores_cache * scale, -jnp.inf)
        probs = jax.nn.softmax(jnp.concatenate([scores_cache, scores_new], axis=-1), axis=-1)
        probs = probs.astype(v_new.dtype)
        capacity = k_cache.shape[2]
        out = jnp.einsum("bkmt,bktd->bkmd", probs[..., :capacity], v_cache) + jnp.einsum(
            "bkmu,bkud->bkmd", probs[..., capacity:], v_new
        )
    return jnp.transpose(out.reshape(batch, hkv, group, seq, hd), (0, 3, 1, 2, 4))


def _block(
    config: DecoderConfig,
    layer: LayerParams,
    x: jax.Array,
    positions: jax.Array,
    inv_freq: Tensor,
    k_cache: jax.Array | None,
    v_cache: jax.Array | None,
    cache_lengths: jax.Array,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    batch, seq, _ = x.shape
    hkv, hd, group = config.num_kv_heads, config.head_dim, config.group_size
    h = rms_norm(x, layer.attn_norm, config.rms_norm_eps)
    q, k, v = linear(h, layer.wq), linear(h, layer.wk), linear(h, layer.wv)
    if layer.bq is not None and layer.bk is not None and layer.bv is not None:
        q, k, v = q + layer.bq, k + layer.bk, v + layer.bv
    q = apply_rope(q.reshape(batch, seq, hkv * group, hd), positions, inv_freq)
    k = apply_rope(k.reshape(batch, seq, hkv, hd), positions, inv_freq)
    v = v.reshape(batch, seq, hkv, hd)
    attn = _attention(q.reshape(batch, seq, hkv, group, hd), k, v, k_cache, v_cache, cache_lengths)
    x = x + linear(attn.reshape(batch, seq, hkv * group * hd), layer.wo)
    h = rms_norm(x, layer.ffn_norm, config.rms_norm_eps)
    x = x + linear(jax.nn.silu(linear(h, layer.w_gate)) * linear(h, layer.w_up), layer.w_down)
    return x, (k, v)


def forward(
    params: Params,
    config: DecoderConfig,
    tokens: jax.Array,
    cache: KVCache,
    num_new: jax.Array,
    *,
    attend_cache: bool = True,
) -> tuple[jax.Array, KVCache]:
    """Run a chunk of tokens after each row's cached prefix; return hidden states and the cache.

    Args:
        tokens: [B, S] int; row b's first `num_new[b]` tokens are real, the rest padding.
        cache: the cached prefixes; row b's new tokens take positions `cache.lengths[b] + s`.
        num_new: [B] int, tokens appended per row (0 leaves a row unchanged, as for finished
            sequences).
        attend_cache: static; False skips attention to the cache (a prefill into an empty cache).

    Returns:
        The final-normed hidden states [B, S, d] and the cache with the new keys and values
        written and `lengths + num_new`. Writes past the capacity are dropped; callers check the
        capacity first.
    """
    batch, seq = tokens.shape
    positions = cache.lengths[:, None] + jnp.arange(seq)[None, :]
    x = embed_tokens(params, tokens)

    def body(
        x: jax.Array, per_layer: tuple[LayerParams, jax.Array, jax.Array]
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        layer, k_cache, v_cache = per_layer
        return _block(
            config,
            layer,
            x,
            positions,
            params.rope_inv_freq,
            k_cache if attend_cache else None,
            v_cache if attend_cache else None,
            cache.lengths,
        )

    x, (k_new, v_new) = jax.lax.scan(body, x, (params.layers, cache.keys, cache.values))
    # k_new, v_new: [L, B, S, Hkv, hd]; write them at each row's positions in one scatter. The
    # indexed axes (B, T) are split by the head axis, so the update is laid out [B, S, L, Hkv, hd].
    rows = jnp.arange(batch)[:, None]
    k_update = jnp.transpose(k_new, (1, 2, 0, 3, 4)).astype(cache.keys.dtype)
    v_update = jnp.transpose(v_new, (1, 2, 0, 3, 4)).astype(cache.values.dtype)
    keys = cache.keys.at[:, rows, :, positions].set(k_update, mode="drop")
    values = cache.values.at[:, rows, :, positions].set(v_update, mode="drop")
    hidden = rms_norm(x, params.final_norm, config.rms_norm_eps)
    return hidden, KVCache(keys, values, cache.lengths + num_new.astype(jnp.int32))


def embed_tokens(params: Params, tokens: jax.Array) -> jax.Array:
    """The embedding rows of `tokens` [...] -> [..., d], in the dtype of the other weights."""
    if isinstance(params.embed, QuantizedWeight):
        return dequantize_rows(params.embed, tokens).astype(params.final_norm.dtype)
    return jnp.take(params.embed, tokens, axis=0)


def output_logits(params: Params, hidden: jax.Array) -> jax.Array:
    """Logits [..., V] in float32 from final hidden states [..., d].

    With tied embeddings and no `lm_head`, the embedding is used transposed (a quantized one
    directly, as the [V, d] weight of `linear`); `LanguageModel` stores a float embedding's
    transposed copy as `lm_head` instead, which is ~20% faster on CPU.
    """
    head = params.embed if params.lm_head is None else params.lm_head
    if isinstance(head, QuantizedWeight):
        return linear(hidden.astype(jnp.float32), head)
    if params.lm_head is None:
        logits = jnp.einsum("...d,vd->...v", hidden, head)
    else:
        logits = hidden @ head
    return logits.astype(jnp.float32)
