"""The reasoning model organism: a small decoder trained on chained arithmetic.

The checkpoint in this directory (Hugging Face Llama layout: config.json, model.safetensors,
tokenizer.json, tokenizer_config.json) was written by `benchmarks/train_organism.py`; see
docs/organism.md for the task, the training run and the measured accuracy. Prompts are
`ppl.models.reasoning.chained_arithmetic.prompt_text(problem)`; the model writes one step per
blank-line-separated block and ends with "The answer is N." and its end-of-sequence token.
"""

from __future__ import annotations

from pathlib import Path

from ppl.models.lm import LanguageModel


def organism_path() -> Path:
    """The checkpoint directory shipped with the package."""
    return Path(__file__).resolve().parent


def load_organism(dtype: str = "float32") -> LanguageModel:
    """Load the organism through the runtime's Hugging Face directory loader."""
    return LanguageModel.from_directory(organism_path(), dtype=dtype)
