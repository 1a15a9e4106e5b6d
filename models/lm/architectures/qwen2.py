"""Qwen2 (Qwen2 and Qwen2.5): the Llama layout with biases on the q/k/v projections.

GGUF: metadata keys `qwen2.*`; llama.cpp stores Wq and Wk unpermuted (half-split already).
Hugging Face: `Qwen2ForCausalLM`; its optional sliding-window attention only differs from full
attention past the window, so the context is capped at the window when it is on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from ppl.models.lm.architectures.base import PreTokenizerRule
from ppl.models.lm.architectures.llama import Llama
from ppl.models.lm.architectures.registry import register
from ppl.models.lm.config import DecoderConfig

QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class Qwen2(Llama):
    """Llama with q/k/v biases; GGUF files keep the half-split rotary layout."""

    name: ClassVar[str] = "qwen2"
    pre_tokenizers: ClassVar[Mapping[str, PreTokenizerRule]] = {
        "qwen2": PreTokenizerRule(split_pattern=QWEN2_PATTERN)
    }
    gguf_rotary_permuted = False

    def hf_attention_bias(self, hf: Mapping[str, Any]) -> bool:
        return True

    def config_from_hf(self, hf: Mapping[str, Any]) -> DecoderConfig:
        config = super().config_from_hf(hf)
        window = hf.get("sliding_window")
        if hf.get("use_sliding_window") and window and window < config.context_length:
            config = dataclasses.replace(config, context_length=int(window))
        return config


QWEN2 = register("qwen2")(Qwen2())
