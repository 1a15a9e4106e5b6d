"""Mistral (Hugging Face `MistralForCausalLM`): the Llama layout with sliding-window attention.

Sliding-window attention equals full causal attention on sequences no longer than the window,
so the context is capped at `sliding_window` (Mistral 7B v0.1: 4096; later versions set none).
llama.cpp writes Mistral checkpoints as `llama` GGUF files, which `llama` reads; a GGUF file
that names `mistral` is read with the same layout.

The smallest architecture module: copy it to add one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from ppl.models.lm.architectures.llama import Llama
from ppl.models.lm.architectures.registry import register
from ppl.models.lm.config import DecoderConfig


class Mistral(Llama):
    """Llama whose attention sees the last `sliding_window` positions."""

    name: ClassVar[str] = "mistral"

    def config_from_hf(self, hf: Mapping[str, Any]) -> DecoderConfig:
        config = super().config_from_hf(hf)
        window = hf.get("sliding_window")
        if window and window < config.context_length:
            config = dataclasses.replace(config, context_length=int(window))
        return config


MISTRAL = register("mistral")(Mistral())
