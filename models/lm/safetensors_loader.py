"""Load a Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json).

Covers `LlamaForCausalLM` (SmolLM2, Llama 3.x, with Llama 3 rotary scaling) and
`Qwen2ForCausalLM` (attention biases, tied or untied output). Weights are read with
`safetensors` only; nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from ppl.models.lm.config import LlamaConfig, rope_inverse_frequencies
from ppl.models.lm.errors import ModelLoadError
from ppl.models.lm.params import Params, check_shapes, stack_layers
from ppl.models.lm.tokenizer import Tokenizer

_MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2"}
_LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm",
    "self_attn.q_proj.weight": "wq",
    "self_attn.k_proj.weight": "wk",
    "self_attn.v_proj.weight": "wv",
    "self_attn.o_proj.weight": "wo",
    "self_attn.q_proj.bias": "bq",
    "self_attn.k_proj.bias": "bk",
    "self_attn.v_proj.bias": "bv",
    "post_attention_layernorm.weight": "ffn_norm",
    "mlp.gate_proj.weight": "w_gate",
    "mlp.up_proj.weight": "w_up",
    "mlp.down_proj.weight": "w_down",
}


def config_from_hf(hf: dict[str, Any]) -> tuple[LlamaConfig, list[float]]:
    """A `LlamaConfig` and the rotary inverse frequencies from a config.json dict."""
    model_type = hf.get("model_type")
    if model_type not in _MODEL_TYPES:
        raise ModelLoadError(
            f"unknown architecture {model_type!r} in config.json; supported: "
            f"{', '.join(_MODEL_TYPES)}"
        )
    heads = int(hf["num_attention_heads"])
    head_dim = int(hf.get("head_dim") or hf["hidden_size"] // heads)
    # transformers >= 5 writes `rope_parameters` (theta and scaling together); older files
    # write `rope_theta` and `rope_scaling`.
    rope = dict(hf.get("rope_parameters") or {})
    theta = float(hf.get("rope_theta") or rope.get("rope_theta") or 10000.0)
    scaling = hf.get("rope_scaling") or rope or None
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind in (None, "default"):
            scaling = None
        elif kind != "llama3":
            raise ModelLoadError(f"unsupported rope scaling type {kind!r} (supported: llama3)")
    config = LlamaConfig(
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        intermediate_size=int(hf["intermediate_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=head_dim,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        context_length=int(hf.get("max_position_embeddings", 2048)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        attention_bias=model_type == "qwen2" or bool(hf.get("attention_bias", False)),
        architecture=_MODEL_TYPES[model_type],
    )
    inv_freq = rope_inverse_frequencies(head_dim, theta, scaling)
    return config, inv_freq


def _read_tensors(directory: Path) -> dict[str, np.ndarray]:
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"no *.safetensors files in {directory}")
    tensors: dict[str, np.ndarray] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="flax") as handle:
                for name in handle.keys():
                    tensors[name] = np.asarray(handle.get_tensor(name), np.float32)
        except Exception as error:
            raise ModelLoadError(f"{file} is not a readable safetensors file: {error}") from error
    return tensors


def load_safetensors(directory: str | Path) -> tuple[LlamaConfig, Params, Tokenizer]:
    """Read config, float32 weights (numpy) and tokenizer from a checkpoint directory."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"no config.json in {directory}")
    try:
        hf = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{config_path} is not valid JSON: {error}") from error
    config, inv_freq = config_from_hf(hf)
    tensors = _read_tensors(directory)

    def take(name: str) -> np.ndarray:
        if name not in tensors:
            raise ModelLoadError(f"{directory} lacks tensor {name}")
        return tensors[name]

    layers = []
    for i in range(config.num_layers):
        layer: dict[str, np.ndarray | None] = {}
        for suffix, field in _LAYER_TENSORS.items():
            name = f"model.layers.{i}.{suffix}"
            if field.startswith("b") and not config.attention_bias:
                continue
            value = take(name)
            layer[field] = value.T if value.ndim == 2 else value  # [out, in] -> [in, out]
        layers.append(layer)
    untied = "lm_head.weight" in tensors and not config.tie_embeddings
    params = Params(
        embed=take("model.embed_tokens.weight"),
        layers=stack_layers(layers),
        final_norm=take("model.norm.weight"),
        lm_head=take("lm_head.weight").T if untied else None,
        rope_inv_freq=np.asarray(inv_freq, np.float32),
    )
    if config.tie_embeddings == untied:
        config = LlamaConfig(**{**config.__dict__, "tie_embeddings": not untied})
    try:
        check_shapes(params, config)
    except ValueError as error:
        raise ModelLoadError(f"{directory}: {error}") from error
    return config, params, Tokenizer.from_directory(directory)
