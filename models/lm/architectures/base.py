"""What an LM architecture tells the generic loaders.

An architecture maps its checkpoints onto the runtime's one `DecoderConfig` and `Params`
pytree: how its GGUF metadata keys and Hugging Face config.json fields give the config and
the rotary frequencies, the file's name for every parameter, and the layout conversions
(GGUF's permuted Q/K rows) that bring a tensor to the runtime's half-split rotary layout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from ppl.models.lm.config import DecoderConfig

TensorReader = Callable[[str], np.ndarray | None]  # a GGUF tensor as float32, None if absent


@dataclasses.dataclass(frozen=True)
class PreTokenizerRule:
    """How a GGUF tokenizer (`tokenizer.ggml.pre`) splits text before byte-level BPE.

    Words are split by `split_pattern` (None: GPT-2's own pattern), after splitting digits one
    by one when `individual_digits`; with `ignore_merges`, a word that is a vocabulary entry
    stays one token without applying merges (Llama 3).
    """

    split_pattern: str | None = None
    individual_digits: bool = False
    ignore_merges: bool = False


class Architecture:
    """One decoder family's checkpoint formats. Subclass it in a module of its own, fill in
    the class attributes and the `config_from_*` / `rope_from_*` methods, and register an
    instance (see `ppl.models.lm.architectures.mistral` for a small example).

    Tensor maps go from a `Params` field (`embed`, `final_norm`, `lm_head`) or a `LayerParams`
    field (`wq`, ..., with `{i}` for the block index) to the file's tensor name. Matrices in
    both formats are stored `[out, in]`; the loaders transpose them after `from_*_layout`.
    """

    name: ClassVar[str]
    gguf_tensors: ClassVar[Mapping[str, str]]
    gguf_layer_tensors: ClassVar[Mapping[str, str]]
    hf_tensors: ClassVar[Mapping[str, str]]
    hf_layer_tensors: ClassVar[Mapping[str, str]]
    pre_tokenizers: ClassVar[Mapping[str, PreTokenizerRule]] = {}

    # GGUF ------------------------------------------------------------------------------
    def config_from_gguf(self, metadata: Mapping[str, Any]) -> DecoderConfig:
        """The config from GGUF metadata. The loader then sets `tie_embeddings` and
        `attention_bias` from the tensors the file holds."""
        raise NotImplementedError

    def rope_from_gguf(
        self, metadata: Mapping[str, Any], config: DecoderConfig, read_tensor: TensorReader
    ) -> np.ndarray:
        """The rotary inverse frequencies [head_dim / 2] (float32) of a GGUF file."""
        raise NotImplementedError

    def from_gguf_layout(self, field: str, value: np.ndarray, config: DecoderConfig) -> np.ndarray:
        """Bring a GGUF tensor (`[out, in]` or a vector) to the runtime's layout."""
        return value

    # Hugging Face ----------------------------------------------------------------------
    def config_from_hf(self, hf: Mapping[str, Any]) -> DecoderConfig:
        """The config from a config.json dict. The loader then sets `tie_embeddings` from
        the tensors present (an `lm_head.weight` beside `tie_word_embeddings: false`)."""
        raise NotImplementedError

    def rope_from_hf(self, hf: Mapping[str, Any], config: DecoderConfig) -> np.ndarray:
        """The rotary inverse frequencies [head_dim / 2] (float32) of a config.json dict."""
        raise NotImplementedError

    def from_hf_layout(self, field: str, value: np.ndarray, config: DecoderConfig) -> np.ndarray:
        """Bring a safetensors tensor (`[out, in]` or a vector) to the runtime's layout."""
        return value
