"""Llama: SmolLM2, Llama 2 and 3, and every checkpoint llama.cpp writes as `llama`
(Mistral's included).

GGUF: metadata keys `llama.*`; llama.cpp's converter permutes the rows of Wq and Wk so that
rotary pairs are interleaved (ggml's "normal" rope), and `from_gguf_layout` undoes it; Llama 3's
long-context scaling comes as a `rope_freqs.weight` tensor of factors. Hugging Face:
`LlamaForCausalLM`'s config.json (with Llama 3's `rope_scaling`) and tensors already in the
half-split rotary layout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ppl.models.lm.architectures.base import Architecture, PreTokenizerRule, TensorReader
from ppl.models.lm.architectures.registry import register
from ppl.models.lm.config import (
    DecoderConfig,
    config_float,
    config_int,
    default_head_dim,
    rope_inverse_frequencies,
)
from ppl.models.lm.errors import ModelLoadError

GGUF_TENSORS = {
    "embed": "token_embd.weight",
    "final_norm": "output_norm.weight",
    "lm_head": "output.weight",
}
GGUF_LAYER_TENSORS = {
    "attn_norm": "blk.{i}.attn_norm.weight",
    "wq": "blk.{i}.attn_q.weight",
    "wk": "blk.{i}.attn_k.weight",
    "wv": "blk.{i}.attn_v.weight",
    "wo": "blk.{i}.attn_output.weight",
    "bq": "blk.{i}.attn_q.bias",
    "bk": "blk.{i}.attn_k.bias",
    "bv": "blk.{i}.attn_v.bias",
    "ffn_norm": "blk.{i}.ffn_norm.weight",
    "w_gate": "blk.{i}.ffn_gate.weight",
    "w_up": "blk.{i}.ffn_up.weight",
    "w_down": "blk.{i}.ffn_down.weight",
}
GGUF_ROPE_FACTORS = "rope_freqs.weight"
HF_TENSORS = {
    "embed": "model.embed_tokens.weight",
    "final_norm": "model.norm.weight",
    "lm_head": "lm_head.weight",
}
HF_LAYER_TENSORS = {
    "attn_norm": "model.layers.{i}.input_layernorm.weight",
    "wq": "model.layers.{i}.self_attn.q_proj.weight",
    "wk": "model.layers.{i}.self_attn.k_proj.weight",
    "wv": "model.layers.{i}.self_attn.v_proj.weight",
    "wo": "model.layers.{i}.self_attn.o_proj.weight",
    "bq": "model.layers.{i}.self_attn.q_proj.bias",
    "bk": "model.layers.{i}.self_attn.k_proj.bias",
    "bv": "model.layers.{i}.self_attn.v_proj.bias",
    "ffn_norm": "model.layers.{i}.post_attention_layernorm.weight",
    "w_gate": "model.layers.{i}.mlp.gate_proj.weight",
    "w_up": "model.layers.{i}.mlp.up_proj.weight",
    "w_down": "model.layers.{i}.mlp.down_proj.weight",
}
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS = {
    "smollm": PreTokenizerRule(individual_digits=True),
    "llama-bpe": PreTokenizerRule(split_pattern=LLAMA3_PATTERN, ignore_merges=True),
    "llama3": PreTokenizerRule(split_pattern=LLAMA3_PATTERN, ignore_merges=True),
}


def unpermute_rotary(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's conversion permute: interleaved rotary pairs -> half-split (rows = out)."""
    rows = weight.shape[0]
    rest = weight.shape[1:]
    return (
        weight.reshape(num_heads, rows // num_heads // 2, 2, *rest)
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def llama3_scaled(inv_freq: list[float], scaling: Mapping[str, float]) -> list[float]:
    """Llama 3's long-context scaling of rotary inverse frequencies.

    Long wavelengths are divided by `factor`, short ones kept, and the band between
    `original_max_position_embeddings / low_freq_factor` and `... / high_freq_factor`
    interpolated smoothly.
    """
    factor = scaling["factor"]
    low = scaling.get("low_freq_factor", 1.0)
    high = scaling.get("high_freq_factor", 4.0)
    original = scaling.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = original / low, original / high
    scaled = []
    for f in inv_freq:
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            scaled.append(f)
        elif wavelen > low_wavelen:
            scaled.append(f / factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            scaled.append((1 - smooth) * f / factor + smooth * f)
    return scaled


def _require(values: Mapping[str, Any], key: str, where: str) -> Any:
    value = values.get(key)
    if value is None:
        raise ModelLoadError(f"{where} lacks {key}")
    return value


class Llama(Architecture):
    """RMSNorm, grouped-query attention with rotary embeddings, SwiGLU; no biases."""

    name: ClassVar[str] = "llama"
    gguf_tensors = GGUF_TENSORS
    gguf_layer_tensors = GGUF_LAYER_TENSORS
    hf_tensors = HF_TENSORS
    hf_layer_tensors = HF_LAYER_TENSORS
    pre_tokenizers: ClassVar[Mapping[str, PreTokenizerRule]] = PRE_TOKENIZERS
    gguf_rotary_permuted: ClassVar[bool] = True  # llama.cpp permutes Wq and Wk of this family

    # GGUF ------------------------------------------------------------------------------
    def config_from_gguf(self, metadata: Mapping[str, Any]) -> DecoderConfig:
        prefix = self.name

        def get(key: str, default: Any = None) -> Any:
            value = metadata.get(f"{prefix}.{key}", default)
            if value is None:
                raise ModelLoadError(f"GGUF metadata lacks {prefix}.{key}")
            return value

        def size(key: str, default: Any = None) -> int:
            return config_int(f"GGUF {prefix}.{key}", get(key, default))

        hidden, heads = size("embedding_length"), size("attention.head_count")
        vocab = metadata.get(f"{prefix}.vocab_size") or len(metadata["tokenizer.ggml.tokens"])
        width = f"GGUF {prefix}.embedding_length / attention.head_count"
        key_length = metadata.get(f"{prefix}.attention.key_length")
        return DecoderConfig(
            vocab_size=config_int(f"GGUF {prefix}.vocab_size", vocab),
            hidden_size=hidden,
            intermediate_size=size("feed_forward_length"),
            num_layers=size("block_count"),
            num_heads=heads,
            num_kv_heads=size("attention.head_count_kv", heads),
            head_dim=default_head_dim(hidden, heads, width)
            if key_length is None
            else size("attention.key_length"),
            # stored as float32: recover the shortest decimal it came from (1e-5, not 9.99999974e-6)
            rms_norm_eps=float(
                str(
                    np.float32(
                        config_float(
                            f"GGUF {prefix}.attention.layer_norm_rms_epsilon",
                            get("attention.layer_norm_rms_epsilon"),
                        )
                    )
                )
            ),
            context_length=size("context_length"),
            tie_embeddings=True,  # the loader sets these two from the tensors present
            attention_bias=False,
            architecture=self.name,
        )

    def rope_from_gguf(
        self, metadata: Mapping[str, Any], config: DecoderConfig, read_tensor: TensorReader
    ) -> np.ndarray:
        theta = float(metadata.get(f"{self.name}.rope.freq_base", 10000.0))
        inv_freq = np.asarray(rope_inverse_frequencies(config.head_dim, theta), np.float32)
        factors = read_tensor(GGUF_ROPE_FACTORS)  # Llama 3 long context: divide the frequencies
        return inv_freq if factors is None else inv_freq / factors.reshape(-1)

    def from_gguf_layout(self, field: str, value: np.ndarray, config: DecoderConfig) -> np.ndarray:
        if not self.gguf_rotary_permuted:
            return value
        if field in ("wq", "bq"):
            return unpermute_rotary(value, config.num_heads)
        if field in ("wk", "bk"):
            return unpermute_rotary(value, config.num_kv_heads)
        return value

    # Hugging Face ----------------------------------------------------------------------
    def hf_attention_bias(self, hf: Mapping[str, Any]) -> bool:
        """Whether the q/k/v projections carry biases. Llama's `attention_bias` also puts one
        on the output projection, which this runtime does not have: refuse it."""
        for flag in ("attention_bias", "mlp_bias"):
            if hf.get(flag):
                raise ModelLoadError(
                    f"config.json sets {flag}: true; the {self.name} layout here has no biases "
                    "on the output or MLP projections"
                )
        return False

    def config_from_hf(self, hf: Mapping[str, Any]) -> DecoderConfig:
        where = "config.json"

        def size(key: str, value: Any) -> int:
            return config_int(f"{where} {key}", value)

        heads = size("num_attention_heads", _require(hf, "num_attention_heads", where))
        hidden = size("hidden_size", _require(hf, "hidden_size", where))
        width = f"{where} hidden_size / num_attention_heads"
        return DecoderConfig(
            vocab_size=size("vocab_size", _require(hf, "vocab_size", where)),
            hidden_size=hidden,
            intermediate_size=size("intermediate_size", _require(hf, "intermediate_size", where)),
            num_layers=size("num_hidden_layers", _require(hf, "num_hidden_layers", where)),
            num_heads=heads,
            num_kv_heads=size("num_key_value_heads", hf.get("num_key_value_heads") or heads),
            head_dim=size("head_dim", hf["head_dim"])
            if hf.get("head_dim") is not None
            else default_head_dim(hidden, heads, width),
            rms_norm_eps=config_float(f"{where} rms_norm_eps", hf.get("rms_norm_eps", 1e-6)),
            context_length=size("max_position_embeddings", hf.get("max_position_embeddings", 2048)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            attention_bias=self.hf_attention_bias(hf),
            architecture=self.name,
        )

    def rope_from_hf(self, hf: Mapping[str, Any], config: DecoderConfig) -> np.ndarray:
        # transformers >= 5 writes `rope_parameters` (theta and scaling together); older files
        # write `rope_theta` and `rope_scaling`.
        rope = dict(hf.get("rope_parameters") or {})
        theta = float(hf.get("rope_theta") or rope.get("rope_theta") or 10000.0)
        scaling = hf.get("rope_scaling") or rope or None
        inv_freq = rope_inverse_frequencies(config.head_dim, theta)
        if scaling is not None:
            kind = scaling.get("rope_type", scaling.get("type"))
            if kind == "llama3":
                inv_freq = llama3_scaled(inv_freq, scaling)
            elif kind not in (None, "default"):
                raise ModelLoadError(f"unsupported rope scaling type {kind!r} (supported: llama3)")
        return np.asarray(inv_freq, np.float32)


LLAMA = register("llama")(Llama())
