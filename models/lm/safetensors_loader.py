"""Load a Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json).

The config's `model_type` picks the registered architecture (`ppl.models.lm.architectures`:
`LlamaForCausalLM` with Llama 3 rotary scaling, `Qwen2ForCausalLM`, `MistralForCausalLM`),
which reads the config and names the tensors. Weights are read with `safetensors` only;
nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from ppl.models.lm import architectures
from ppl.models.lm.architectures import Architecture
from ppl.models.lm.config import DecoderConfig
from ppl.models.lm.errors import ModelLoadError, require_finite
from ppl.models.lm.params import (
    OPTIONAL_LAYER_FIELDS,
    LayerParams,
    Params,
    check_shapes,
    stack_layers,
)
from ppl.models.lm.tokenizer import Tokenizer


def architecture_of(hf: dict[str, Any]) -> Architecture:
    """The registered architecture a config.json names in `model_type`."""
    try:
        return architectures.get(str(hf.get("model_type")))
    except ValueError as error:
        raise ModelLoadError(f"{error} (config.json model_type)") from error


def read_tensors(directory: Path) -> dict[str, np.ndarray]:
    """Every tensor of the directory's *.safetensors files, as float32 numpy arrays."""
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
    for name, value in tensors.items():
        require_finite(name, value, directory)
    return tensors


def read_config(directory: Path) -> dict[str, Any]:
    """The directory's config.json as a dict."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"no config.json in {directory}")
    try:
        return dict(json.loads(config_path.read_text()))
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{config_path} is not valid JSON: {error}") from error


def load_safetensors(directory: str | Path) -> tuple[DecoderConfig, Params, Tokenizer]:
    """Read config, float32 weights (numpy) and tokenizer from a checkpoint directory."""
    directory = Path(directory)
    hf = read_config(directory)
    architecture_of(hf)  # an unknown model_type is named before the weights are read
    config, params = decoder_from_tensors(directory, hf, read_tensors(directory))
    return config, params, Tokenizer.from_directory(directory)


def decoder_from_tensors(
    directory: Path, hf: dict[str, Any], tensors: dict[str, np.ndarray]
) -> tuple[DecoderConfig, Params]:
    """The decoder of a config.json dict and its tensors (`model.*`, and `lm_head.weight` when
    untied); other tensors, such as a reward model's head, are ignored."""
    arch = architecture_of(hf)
    try:
        config = arch.config_from_hf(hf)
    except ModelLoadError:
        raise
    except ValueError as error:  # a size of the wrong type or sign, named by its key
        raise ModelLoadError(f"{directory / 'config.json'}: {error}") from error
    inv_freq = arch.rope_from_hf(hf, config)

    def take(name: str) -> np.ndarray:
        if name not in tensors:
            raise ModelLoadError(f"{directory} lacks tensor {name}")
        return tensors[name]

    layers = []
    for i in range(config.num_layers):
        layer: dict[str, np.ndarray | None] = {}
        for field in LayerParams._fields:
            if field in OPTIONAL_LAYER_FIELDS and not config.attention_bias:
                continue
            value = arch.from_hf_layout(
                field, take(arch.hf_layer_tensors[field].format(i=i)), config
            )
            layer[field] = value.T if value.ndim == 2 else value  # [out, in] -> [in, out]
        layers.append(layer)
    lm_head_name = arch.hf_tensors["lm_head"]
    untied = lm_head_name in tensors and not config.tie_embeddings
    params = Params(
        embed=take(arch.hf_tensors["embed"]),
        layers=stack_layers(layers),
        final_norm=take(arch.hf_tensors["final_norm"]),
        lm_head=take(lm_head_name).T if untied else None,
        rope_inv_freq=inv_freq,
    )
    if config.tie_embeddings == untied:
        config = dataclasses.replace(config, tie_embeddings=not untied)
    try:
        check_shapes(params, config)
    except ValueError as error:
        raise ModelLoadError(f"{directory}: {error}") from error
    return config, params
