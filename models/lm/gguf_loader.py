"""Load a decoder checkpoint (config, float weights, tokenizer) from a GGUF file.

The file's `general.architecture` picks the registered architecture
(`ppl.models.lm.architectures`), which names the metadata keys and tensors and converts their
layout (the rotary permute llama.cpp applies to Wq and Wk of `llama` files). With
`quantized=True`, matrices in a format `ppl.models.lm.qmatmul` computes with (Q8_0, Q4_0, Q4_1,
Q4_K, Q6_K) stay in their block layout as `QuantizedWeight`s, when every layer of a parameter
has the same format (a stack mixing formats, as some Q4_K_M files have, is dequantized); every
other tensor is dequantized once at load with the `gguf` package.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from ppl.models.lm import architectures
from ppl.models.lm.architectures import Architecture
from ppl.models.lm.config import DecoderConfig
from ppl.models.lm.errors import ModelLoadError, require_finite
from ppl.models.lm.params import (
    MATRIX_FIELDS,
    OPTIONAL_LAYER_FIELDS,
    LayerParams,
    Params,
    check_shapes,
    stack_layers,
)
from ppl.models.lm.qmatmul import FORMATS, QuantizedWeight, from_gguf_tensor
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


def architecture_of(fields: dict[str, Any]) -> Architecture:
    """The registered architecture a GGUF file names in `general.architecture`."""
    name = fields.get("general.architecture")
    try:
        return architectures.get(str(name))
    except ValueError as error:
        raise ModelLoadError(f"{error} (GGUF general.architecture)") from error


def _dequantize(tensor: gguf.ReaderTensor, path: str | Path) -> np.ndarray:
    return require_finite(tensor.name, _dequantized(tensor), path)


def _dequantized(tensor: gguf.ReaderTensor) -> np.ndarray:
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


def _quantizable(tensor: gguf.ReaderTensor) -> bool:
    """Whether a tensor is a matrix in a format the quantized matmul computes with."""
    kind = Q(tensor.tensor_type)
    block = gguf.GGML_QUANT_SIZES[kind][0]
    return kind.name in FORMATS and len(tensor.shape) == 2 and int(tensor.shape[0]) % block == 0


def _repacked(tensor: gguf.ReaderTensor, path: str | Path) -> QuantizedWeight:
    weight = from_gguf_tensor(tensor)
    for array in (weight.scales, weight.mins):
        if array is not None:
            require_finite(tensor.name, np.asarray(array), path)
    return weight


def _rows(weight: QuantizedWeight, relayout: Any) -> QuantizedWeight:
    """Apply a row permutation (`relayout` of an [N, ...] array) to every array of a weight."""
    return dataclasses.replace(
        weight,
        codes=relayout(weight.codes),
        scales=relayout(weight.scales),
        mins=None if weight.mins is None else relayout(weight.mins),
    )


def load_gguf(path: str | Path, quantized: bool = False) -> tuple[DecoderConfig, Params, Tokenizer]:
    """Read config, weights (numpy; float32, or `QuantizedWeight`s with `quantized`) and
    tokenizer from a GGUF file."""
    config, params, tokenizer_fields = convert_gguf(path, quantized)
    return config, params, gguf_tokenizer(tokenizer_fields, path)


def gguf_tokenizer(tokenizer_fields: dict[str, Any], path: str | Path) -> Tokenizer:
    """The tokenizer of the GGUF file `path` from its `tokenizer.*` metadata."""
    tokenizer = Tokenizer.from_gguf_fields(tokenizer_fields)
    tokenizer.template_name = f"the chat template (tokenizer.chat_template) of {path}"
    return tokenizer


def convert_gguf(
    path: str | Path, quantized: bool = False
) -> tuple[DecoderConfig, Params, dict[str, Any]]:
    """Config, weights (as `load_gguf`) and the `tokenizer.*` metadata of a GGUF file."""
    reader = open_gguf(path)
    fields = read_fields(reader)
    arch = architecture_of(fields)
    try:
        config = arch.config_from_gguf(fields)
    except ModelLoadError:
        raise
    except ValueError as error:  # a size of the wrong type or sign, named by its key
        raise ModelLoadError(f"{path}: {error}") from error
    tensors = {t.name: t for t in reader.tensors}

    def read(name: str) -> np.ndarray | None:
        return _dequantize(tensors[name], path) if name in tensors else None

    def take(name: str) -> np.ndarray:
        if name not in tensors:
            raise ModelLoadError(f"{path} lacks tensor {name}")
        return _dequantize(tensors[name], path)

    def matrix(name: str) -> np.ndarray | QuantizedWeight:
        """A matrix kept quantized where it can be, else float; [out, in] either way."""
        if quantized and name in tensors and _quantizable(tensors[name]):
            return _repacked(tensors[name], path)
        return take(name)

    def uniform(field: str) -> bool:
        """Whether every layer's `field` can stay quantized in one common format."""
        names = [arch.gguf_layer_tensors[field].format(i=i) for i in range(config.num_layers)]
        found = [tensors[n] for n in names if n in tensors]
        return (
            bool(found)
            and all(map(_quantizable, found))
            and len({t.tensor_type for t in found}) == 1
        )

    keep = {f for f in MATRIX_FIELDS if quantized and uniform(f)}
    embed = matrix(arch.gguf_tensors["embed"])
    final_norm = take(arch.gguf_tensors["final_norm"])
    layers = []
    for i in range(config.num_layers):
        layer: dict[str, np.ndarray | QuantizedWeight | None] = {}
        for field in LayerParams._fields:
            name = arch.gguf_layer_tensors[field].format(i=i)
            if field in OPTIONAL_LAYER_FIELDS and name not in tensors:
                continue
            if field in keep:
                layer[field] = _rows(
                    _repacked(tensors[name], path),
                    lambda a, f=field: arch.from_gguf_layout(f, a, config),
                )
                continue
            value = arch.from_gguf_layout(field, take(name), config)
            layer[field] = value.T if value.ndim == 2 else value  # [out, in] -> [in, out]
        layers.append(layer)
    inv_freq = arch.rope_from_gguf(fields, config, read)
    head_name = arch.gguf_tensors["lm_head"]
    lm_head = matrix(head_name) if head_name in tensors else None
    stacked = stack_layers(layers)
    config = dataclasses.replace(
        config, tie_embeddings=lm_head is None, attention_bias=stacked.bq is not None
    )
    params = Params(
        embed=embed,
        layers=stacked,
        final_norm=final_norm,
        lm_head=lm_head.T if isinstance(lm_head, np.ndarray) else lm_head,
        rope_inv_freq=inv_freq,
    )
    try:
        check_shapes(params, config)
    except ValueError as error:
        raise ModelLoadError(f"{path}: {error}") from error
    return config, params, {k: v for k, v in fields.items() if k.startswith("tokenizer.")}
