"""The forward pass of a decoder as pure functions over `Params`.

RMSNorm -> grouped-query attention with rotary embeddings (half-split layout) -> residual ->
RMSNorm -> SwiGLU -> residual, for every block; then a final RMSNorm and the (tied or untied)
output projection. Every registered architecture (`ppl.models.lm.architectures`) loads into
this one layout; the loaders convert checkpoints whose rotary layout is interleaved (GGUF files
of the llama architecture) to the half-split layout, so one rotary convention serves all.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ppl.models.lm.cache import KVCache
from ppl.models.lm.config import DecoderConfig
from ppl.models.lm.params import LayerParams, Params, Tensor
from ppl.models.lm.qmatmul import QuantizedWeight, dequantize_rows, linear
from ppl.models.lm.row_attention import kernel_applies, row_attention


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


ATTENTION_BLOCK = 64  # cache positions per block of the per-row attention


class LayerCache(NamedTuple):
    """One layer's view of a `KVCache` for attention."""

    keys: jax.Array  # [L, B, Hkv, T, hd] every layer's rows, read block by block at `layer`
    values: jax.Array  # [L, B, Hkv, T, hd]
    layer: jax.Array  # [] int32
    row_lengths: jax.Array  # [B] valid row positions, `lengths - P`
    prefix_keys: jax.Array | None  # [Hkv, P, hd] this layer's shared prefix, or None
    prefix_values: jax.Array | None


class _Partial(NamedTuple):
    """Softmax attention over a subset of the keys, unnormalized, for an exact merge."""

    max: jax.Array  # [..., M] float32 max score, -inf where no key is visible
    total: jax.Array  # [..., M] float32 sum_t exp(s_t - max)
    weighted: jax.Array  # [..., M, hd] float32 sum_t exp(s_t - max) v_t


def _softmax_part(scores: jax.Array, values: jax.Array, spec: str) -> _Partial:
    """`_Partial` of float32 `scores` [..., M, T] (-inf where masked) over `values`."""
    top = jnp.max(scores, axis=-1)
    weights = jnp.exp(scores - jnp.where(jnp.isfinite(top), top, 0.0)[..., None])
    weighted = jnp.einsum(
        spec, weights.astype(values.dtype), values, preferred_element_type=jnp.float32
    )
    return _Partial(top, jnp.sum(weights, axis=-1), weighted)


def _merge(a: _Partial, b: _Partial) -> _Partial:
    """Softmax over the union of two disjoint key sets, exactly (the log-sum-exp merge).

    With m = max(m_a, m_b): total = l_a e^(m_a - m) + l_b e^(m_b - m), and likewise for the
    weighted values; a part with no visible key (m = -inf) gets weight 0.
    """
    top = jnp.maximum(a.max, b.max)
    safe = jnp.where(jnp.isfinite(top), top, 0.0)
    wa, wb = jnp.exp(a.max - safe), jnp.exp(b.max - safe)
    return _Partial(
        top,
        a.total * wa + b.total * wb,
        a.weighted * wa[..., None] + b.weighted * wb[..., None],
    )


def _row_scores(
    q: jax.Array, keys: jax.Array, start: int | jax.Array, lengths: jax.Array, scale: float
) -> jax.Array:
    """Scores [B, K, M, t] of q [B, K, M, hd] against row keys [B, K, t, hd] at `start`."""
    scores = jnp.einsum("bkmd,bktd->bkmt", q, keys, preferred_element_type=jnp.float32)
    visible = start + jnp.arange(keys.shape[2]) < lengths[:, None]  # [B, t]
    return jnp.where(visible[:, None, None, :], scores * scale, -jnp.inf)


def _row_attention(q: jax.Array, cache: LayerCache, scale: float) -> _Partial:
    """Attention over each row's own cached positions, flash-decoding style: a loop over
    blocks of `ATTENTION_BLOCK` positions with a trip count of ceil(max(row_lengths) / block),
    so a step costs the positions in use, not the capacity T. Each block is a `_Partial`
    merged into the running one (running max, sum and accumulator in float32). On the CPU with
    float32 caches the C++ kernel of `row_attention` computes the same part in one pass (4-5x
    faster per layer at a batch of 64; the loop stays for other backends and dtypes).

    (Static length buckets chosen by `lax.switch`, each a dense softmax over a prefix slice,
    measured slower on CPU: 186 / 525 ms against 118 / 196 ms per batch-16 step of
    SmolLM2-135M with 64 / 1024 cached tokens at capacity 2048.)"""
    if kernel_applies(q, cache.keys):  # the same part in one pass over the used positions
        return _Partial(
            *row_attention(q, cache.keys, cache.values, cache.layer, cache.row_lengths, scale)
        )
    _, batch, hkv, capacity, hd = cache.keys.shape
    block = math.gcd(capacity, ATTENTION_BLOCK)
    longest = jnp.max(cache.row_lengths)

    empty = _Partial(
        jnp.full(q.shape[:-1], -jnp.inf, jnp.float32),
        jnp.zeros(q.shape[:-1], jnp.float32),
        jnp.zeros(q.shape, jnp.float32),
    )

    def body(i: jax.Array, part: _Partial) -> _Partial:
        start = i * block
        corner = (cache.layer, 0, 0, start, 0)
        k = jax.lax.dynamic_slice(cache.keys, corner, (1, batch, hkv, block, hd))[0]
        v = jax.lax.dynamic_slice(cache.values, corner, (1, batch, hkv, block, hd))[0]
        scores = _row_scores(q, k, start, cache.row_lengths, scale)
        return _merge(part, _softmax_part(scores, v, "bkmt,bktd->bkmd"))

    return jax.lax.fori_loop(0, (longest + block - 1) // block, body, empty)


def _attention(
    q: jax.Array, k_new: jax.Array, v_new: jax.Array, cache: LayerCache | None
) -> jax.Array:
    """Softmax attention of a chunk of queries over the shared prefix, each row's cached
    positions and the chunk itself.

    q: [B, S, Hkv, G, hd]; k_new, v_new: [B, S, Hkv, hd]. Query s of row b sees every prefix
    position, row positions t < row_lengths[b] and chunk positions u <= s. The G query heads of
    a group and the S chunk positions are merged into one matrix dimension M, so each
    (row, KV head) is a plain matrix product against a contiguous cache block; the prefix is
    one product per KV head for all B * M query rows, read once for the batch.

    The three key sets are attended separately and merged exactly (`_merge`): each part keeps
    its max score m, l = sum exp(s - m) and sum exp(s - m) v, so the result equals one softmax
    over all keys to float32 rounding.
    """
    batch, seq, hkv, group, hd = q.shape
    scale = hd**-0.5
    q = jnp.transpose(q, (0, 2, 3, 1, 4)).reshape(batch, hkv, group * seq, hd)  # [B, K, G*S, hd]
    k_new, v_new = jnp.transpose(k_new, (0, 2, 1, 3)), jnp.transpose(v_new, (0, 2, 1, 3))
    scores_new = jnp.einsum("bkmd,bkud->bkmu", q, k_new, preferred_element_type=jnp.float32)
    query_position = jnp.tile(jnp.arange(seq), group)  # row m of the merged dim is s = m % S
    causal = query_position[:, None] >= jnp.arange(seq)[None, :]
    scores_new = jnp.where(causal, scores_new * scale, -jnp.inf)
    part = _softmax_part(scores_new, v_new, "bkmu,bkud->bkmd")
    if cache is not None:
        if cache.keys.shape[3] > 0:
            part = _merge(part, _row_attention(q, cache, scale))
        if cache.prefix_keys is not None and cache.prefix_values is not None:
            rows = jnp.transpose(q, (1, 0, 2, 3)).reshape(hkv, batch * group * seq, hd)
            scores = jnp.einsum(
                "knd,kpd->knp", rows, cache.prefix_keys, preferred_element_type=jnp.float32
            )
            shared = _softmax_part(scores * scale, cache.prefix_values, "knp,kpd->knd")
            part = _merge(
                part,
                _Partial(
                    jnp.transpose(shared.max.reshape(hkv, batch, -1), (1, 0, 2)),
                    jnp.transpose(shared.total.reshape(hkv, batch, -1), (1, 0, 2)),
                    jnp.transpose(shared.weighted.reshape(hkv, batch, -1, hd), (1, 0, 2, 3)),
                ),
            )
    out = (part.weighted / part.total[..., None]).astype(v_new.dtype)
    return jnp.transpose(out.reshape(batch, hkv, group, seq, hd), (0, 3, 1, 2, 4))


def _block(
    config: DecoderConfig,
    layer: LayerParams,
    x: jax.Array,
    positions: jax.Array,
    inv_freq: Tensor,
    cache: LayerCache | None,
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
    attn = _attention(q.reshape(batch, seq, hkv, group, hd), k, v, cache)
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
        cache: the cached prefixes; row b's new tokens take positions `cache.lengths[b] + s`
            (rotary positions; with a shared prefix of P positions they are stored at row
            index `cache.lengths[b] - P + s`, and the prefix itself never changes).
        num_new: [B] int, tokens appended per row (0 leaves a row unchanged, as for finished
            sequences).
        attend_cache: static; False skips attention to the cache (a prefill into an empty cache).

    Returns:
        The final-normed hidden states [B, S, d] and the cache with the new keys and values
        written and `lengths + num_new`. Writes past the capacity are dropped; callers check the
        capacity first.
    """
    if cache.prefix_keys is not None and not attend_cache:
        raise ValueError("attend_cache=False is for empty caches; this one has a shared prefix")
    batch, seq = tokens.shape
    prefix = cache.prefix_length
    positions = cache.lengths[:, None] + jnp.arange(seq)[None, :]
    x = embed_tokens(params, tokens)

    def body(x: jax.Array, index: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        layer = layer_params(params.layers, index)
        view = None
        if attend_cache:  # the whole cache is passed, so attention reads only the blocks in use
            view = LayerCache(
                cache.keys,
                cache.values,
                index,
                cache.lengths - prefix,
                None if cache.prefix_keys is None else cache.prefix_keys[index],
                None if cache.prefix_values is None else cache.prefix_values[index],
            )
        return _block(config, layer, x, positions, params.rope_inv_freq, view)

    x, (k_new, v_new) = jax.lax.scan(body, x, jnp.arange(config.num_layers))
    # k_new, v_new: [L, B, S, Hkv, hd]; write them at each row's positions in one scatter. The
    # indexed axes (B, T) are split by the head axis, so the update is laid out [B, S, L, Hkv, hd].
    rows = jnp.arange(batch)[:, None]
    k_update = jnp.transpose(k_new, (1, 2, 0, 3, 4)).astype(cache.keys.dtype)
    v_update = jnp.transpose(v_new, (1, 2, 0, 3, 4)).astype(cache.values.dtype)
    keys = cache.keys.at[:, rows, :, positions - prefix].set(k_update, mode="drop")
    values = cache.values.at[:, rows, :, positions - prefix].set(v_update, mode="drop")
    hidden = rms_norm(x, params.final_norm, config.rms_norm_eps)
    lengths = cache.lengths + num_new.astype(jnp.int32)
    return hidden, cache._replace(keys=keys, values=values, lengths=lengths)


def layer_params(layers: LayerParams, index: jax.Array) -> LayerParams:
    """Layer `index` of the stacked parameters. Quantized matrices stay stacked and carry the
    index, so the kernel reads the layer in place; the scan's slicing would copy every matrix
    before its product (all the weights, every step). The rest is sliced."""
    return jax.tree.map(
        lambda a: (
            dataclasses.replace(a, layer=index) if isinstance(a, QuantizedWeight) else a[index]
        ),
        layers,
        is_leaf=lambda a: isinstance(a, QuantizedWeight),
    )


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
