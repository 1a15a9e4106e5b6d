"""Load a Llama-family checkpoint (config, float weights, tokenizer) from a GGUF file.

Quantized tensors are dequantized once at load with the `gguf` package (the runtime computes
in float32 or bfloat16; see docs/benchmarks.md for why dequantizing once is the faster choice
on CPU). GGUF files of the `llama` architecture store the query and key projections permuted
for rotary embeddings on interleaved pairs; they are un-permuted here to the half-split layout
that `ppl.models.lm.transformer` uses. `qwen2` files are stored unpermuted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np

from ppl.models.lm.config import LlamaConfig, rope_inverse_frequencies
from ppl.models.lm.errors import ModelLoadError
from ppl.models.lm.params import Params, check_shapes, stack_layers
from ppl.models.lm.tokenizer import Tokenizer

Q = gguf.GGMLQuantizationType
SUPPORTED_TYPES = (
    Q.F32,
    Q.F16,
    Q.BF16,
    Q.Q8_0,
    Q.Q4_0,
    Q.Q4_1,
    Q.Q5_0,
    Q.Q5_1,
    Q.Q2_K,
    Q.Q3_K,
    Q.Q4_K,
    Q.Q5_K,
    Q.Q6_K,
)
_LAYER_TENSORS = {
    "attn_norm.weight": "attn_norm",
    "attn_q.weight": "wq",
    "attn_k.weight": "wk",
    "attn_v.weight": "wv",
    "attn_output.weight": "wo",
    "attn_q.bias": "bq",
    "attn_k.bias": "bk",
    "attn_v.bias": "bv",
    "ffn_norm.weight": "ffn_norm",
    "ffn_gate.weight": "w_gate",
    "ffn_up.weight": "w_up",
    "ffn_down.weight": "w_down",
}


def read_fields(reader: gguf.GGUFReader) -> dict[str, Any]:
    """All metadata key/value pairs as Python values."""
    return {name: field.contents() for name, field in reader.fields.items()}


def open_gguf(path: str | Path) -> gguf.GGUFReader:
    """Open a GGUF file, turning a missing or corrupt file into a `ModelLoadError`."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        return gguf.GGUFReader(path)
    except Exception as error:  # the gguf package raises ValueError, struct and OS errors
        raise ModelLoadError(f"{path} is not a readable GGUF file: {error}") from error


def config_from_fields(fields: dict[str, Any]) -> LlamaConfig:
    arch = fields.get("general.architecture")
    if arch not in ("llama", "qwen2"):
        raise ModelLoadError(
            f"unknown architecture {arch!r} in GGUF metadata; supported: 'llama', 'qwen2'"
        )

    def get(key: str, default: Any = None) -> Any:
        value = fields.get(f"{arch}.{key}", default)
        if value is None:
            raise ModelLoadError(f"GGUF metadata lacks {arch}.{key}")
        return value

    hidden = int(get("embedding_length"))
    heads = int(get("attention.head_count"))
    vocab = fields.get(f"{arch}.vocab_size") or len(fields["tokenizer.ggml.tokens"])
    return LlamaConfig(
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(get("feed_forward_length")),
        num_layers=int(get("block_count")),
        num_heads=heads,
        num_kv_heads=int(get("attention.head_count_kv", heads)),
        head_dim=int(get("attention.key_length", hidden // heads)),
        # stored as float32: recover the shortest decimal it came from (1e-5, not 9.99999974e-6)
        rms_norm_eps=float(str(np.float32(get("attention.layer_norm_rms_epsilon")))),
        context_length=int(get("context_length")),
        tie_embeddings=True,  # set below from the tensors present
        attention_bias=arch == "qwen2",
        architecture=str(arch),
    )


def _dequantize(tensor: gguf.ReaderTensor) -> np.ndarray:
    kind = Q(tensor.tensor_type)
    if kind not in SUPPORTED_TYPES:
        supported = ", ".join(t.name for t in SUPPORTED_TYPES)
        raise ModelLoadError(
            f"tensor {tensor.name} uses quantization type {kind.name}, which this loader does "
            f"not support (supported: {supported})"
        )
    shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists dimensions fastest-first
    if kind in (Q.F32, Q.F16):
        return np.asarray(tensor.data, np.float32).reshape(shape)
    return np.asarray(gguf.quants.dequantize(tensor.data, kind), np.float32).reshape(shape)


def _unpermute_rotary(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's conversion permute: interleaved rotary pairs -> half-split (rows = out)."""
    rows = weight.shape[0]
    rest = weight.shape[1:]
    return (
        weight.reshape(num_heads, rows // num_heads // 2, 2, *rest)
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def load_gguf(path: str | Path) -> tuple[LlamaConfig, Params, Tokenizer]:
    """Read config, float32 weights (numpy) and tokenizer from a GGUF file."""
    reader = open_gguf(path)
    fields = read_fields(reader)
    config = config_from_fields(fields)
    tensors = {t.name: t for t in reader.tensors}
    for required in ("token_embd.weight", "output_norm.weight"):
        if required not in tensors:
            raise ModelLoadError(f"{path} lacks tensor {required}")
    permute = config.architecture == "llama"
    layers = []
    for i in range(config.num_layers):
        layer: dict[str, np.ndarray | None] = {}
        for suffix, field in _LAYER_TENSORS.items():
            tensor = tensors.get(f"blk.{i}.{suffix}")
            if tensor is None:
                if field.startswith("b"):
                    continue
                raise ModelLoadError(f"{path} lacks tensor blk.{i}.{suffix}")
            value = _dequantize(tensor)
            if permute and field in ("wq", "bq"):
                value = _unpermute_rotary(value, config.num_heads)
            elif permute and field in ("wk", "bk"):
                value = _unpermute_rotary(value, config.num_kv_heads)
            layer[field] = value.T if value.ndim == 2 else value  # [out, in] -> [in, out]
        layers.append(layer)
    theta = float(fields.get(f"{config.architecture}.rope.freq_base", 10000.0))
    inv_freq = np.asarray(rope_inverse_frequencies(config.head_dim, theta), np.float32)
    if "rope_freqs.weight" in tensors:  # Llama 3 long-context factors: divide the frequencies
        inv_freq = inv_freq / _dequantize(tensors["rope_freqs.weight"]).reshape(-1)
    untied = "output.weight" in tensors
    config = LlamaConfig(**{**config.__dict__, "tie_embeddings": not untied})
    stacked = stack_layers(layers)
    if config.attention_bias and stacked.bq is None:
        config = LlamaConfig(**{**config.__dict__, "attention_bias": False})
    params = Params(
        embed=_dequantize(tensors["token_embd.weight"]),
        layers=stacked,
        final_norm=_dequantize(tensors["output_norm.weight"]),
        lm_head=_dequantize(tensors["output.weight"]).T if untied else None,
        rope_inv_freq=inv_freq,
    )
    try:
        check_shapes(params, config)
    except ValueError as error:
        raise ModelLoadError(f"{path}: {error}") from error
    return config, params, Tokenizer.from_gguf_fields(fields)
