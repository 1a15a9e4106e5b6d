"""An independent NumPy implementation of the decoder, for exact-oracle tests.

Written plainly from the math (no cache, explicit head loop, repeated KV heads, float64), so it
shares no code with `ppl.models.lm.transformer`.
"""

from __future__ import annotations

import numpy as np

from ppl.models.lm.config import DecoderConfig
from ppl.models.lm.params import Params


def _rms(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + eps) * w


def _rope(x: np.ndarray, inv_freq: np.ndarray) -> np.ndarray:
    """x: [S, hd]; pairs (i, i + hd/2) rotate by angle pos * inv_freq[i]."""
    seq, hd = x.shape
    out = np.empty_like(x)
    for pos in range(seq):
        for i in range(hd // 2):
            c, s = np.cos(pos * inv_freq[i]), np.sin(pos * inv_freq[i])
            a, b = x[pos, i], x[pos, i + hd // 2]
            out[pos, i] = a * c - b * s
            out[pos, i + hd // 2] = b * c + a * s
    return out


def reference_logits(params: Params, config: DecoderConfig, tokens: list[int]) -> np.ndarray:
    """Logits [S, V] at every position of one sequence."""

    def f64(x: object) -> np.ndarray:
        return np.asarray(x, np.float64)

    embed, final_norm, inv_freq = (
        f64(params.embed),
        f64(params.final_norm),
        f64(params.rope_inv_freq),
    )
    lm_head = None if params.lm_head is None else f64(params.lm_head)
    layers = params.layers
    hd, heads, kv_heads = config.head_dim, config.num_heads, config.num_kv_heads
    x = embed[np.asarray(tokens)]
    seq = len(tokens)
    for layer_index in range(config.num_layers):
        w = {
            k: (None if v is None else np.asarray(v[layer_index], np.float64))
            for k, v in layers._asdict().items()
        }
        h = _rms(x, w["attn_norm"], config.rms_norm_eps)
        q, k, v = h @ w["wq"], h @ w["wk"], h @ w["wv"]
        if w["bq"] is not None:
            q, k, v = q + w["bq"], k + w["bk"], v + w["bv"]
        heads_out = []
        for head in range(heads):
            kv = head // (heads // kv_heads)
            qh = _rope(q[:, head * hd : (head + 1) * hd], inv_freq)
            kh = _rope(k[:, kv * hd : (kv + 1) * hd], inv_freq)
            vh = v[:, kv * hd : (kv + 1) * hd]
            scores = qh @ kh.T / np.sqrt(hd)
            scores[np.triu_indices(seq, 1)] = -np.inf
            probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
            probs /= probs.sum(axis=-1, keepdims=True)
            heads_out.append(probs @ vh)
        x = x + np.concatenate(heads_out, axis=-1) @ w["wo"]
        h = _rms(x, w["ffn_norm"], config.rms_norm_eps)
        gate = h @ w["w_gate"]
        x = x + (gate / (1 + np.exp(-gate)) * (h @ w["w_up"])) @ w["w_down"]
    h = _rms(x, final_norm, config.rms_norm_eps)
    return h @ (embed.T if lm_head is None else lm_head)
