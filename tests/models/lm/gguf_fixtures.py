"""Write tiny GGUF files the way llama.cpp's converter lays them out (for loader tests)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from ppl.models.lm import LanguageModel
from ppl.models.lm.tiny import SPECIAL_TOKENS, byte_level_vocabulary

Q = gguf.GGMLQuantizationType


def permute_for_gguf(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """The converter's rotary permute: half-split pairs -> interleaved pairs (rows = out)."""
    rows = weight.shape[0]
    return (
        weight.reshape(num_heads, 2, rows // num_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def write_tiny_gguf(
    path: Path,
    lm: LanguageModel,
    matrix_type: Q = Q.F32,
    raw_tensors: dict[str, tuple[np.ndarray, Q]] | None = None,
    architecture: str | None = None,
    chat_template: str | None = None,
    metadata: Mapping[str, tuple[Any, gguf.GGUFValueType]] | None = None,
) -> Path:
    """Write `lm` (float32 params) as GGUF; matrices quantized to `matrix_type`;
    `chat_template` and `metadata` (key -> (value, type)) replace what `lm` would write."""
    config, params = lm.config, lm.params
    arch = architecture or config.architecture
    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_block_count(config.num_layers)
    writer.add_context_length(config.context_length)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_heads)
    writer.add_head_count_kv(config.num_kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    tokens, merges = byte_level_vocabulary()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in SPECIAL_TOKENS else 1 for t in tokens])
    writer.add_token_merges([f"{a} {b}" for a, b in merges])
    writer.add_bos_token_id(tokens.index("<|bos|>"))
    writer.add_eos_token_id(tokens.index("<|eos|>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(chat_template or lm.tokenizer.chat_template or "")
    for key, (value, kind) in (metadata or {}).items():
        writer.add_key_value(key, value, kind)

    def add(name: str, value: np.ndarray, matrix: bool) -> None:
        value = np.asarray(value, np.float32)
        if raw_tensors and name in raw_tensors:
            data, kind = raw_tensors[name]
            writer.add_tensor(name, data, raw_dtype=kind)
        elif matrix and matrix_type != Q.F32:
            writer.add_tensor(name, gguf.quants.quantize(value, matrix_type), raw_dtype=matrix_type)
        else:
            writer.add_tensor(name, value)

    add("token_embd.weight", params.embed, True)
    add("output_norm.weight", params.final_norm, False)
    if not config.tie_embeddings:
        add("output.weight", np.asarray(params.lm_head).T, True)
    names = {
        "wq": "attn_q",
        "wk": "attn_k",
        "wv": "attn_v",
        "wo": "attn_output",
        "w_gate": "ffn_gate",
        "w_up": "ffn_up",
        "w_down": "ffn_down",
    }
    for i in range(config.num_layers):
        layer = {
            k: (None if v is None else np.asarray(v[i])) for k, v in params.layers._asdict().items()
        }
        add(f"blk.{i}.attn_norm.weight", layer["attn_norm"], False)
        add(f"blk.{i}.ffn_norm.weight", layer["ffn_norm"], False)
        for field, gguf_name in names.items():
            weight = layer[field].T  # [out, in]
            if arch == "llama" and field == "wq":
                weight = permute_for_gguf(weight, config.num_heads)
            elif arch == "llama" and field == "wk":
                weight = permute_for_gguf(weight, config.num_kv_heads)
            add(f"blk.{i}.{gguf_name}.weight", weight, True)
        if layer["bq"] is not None:
            for field, gguf_name in (("bq", "attn_q"), ("bk", "attn_k"), ("bv", "attn_v")):
                add(f"blk.{i}.{gguf_name}.bias", layer[field], False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
