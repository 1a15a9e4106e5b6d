"""LM architectures: one module each, registered by name.

`get(name)` gives the architecture a checkpoint names (GGUF's `general.architecture`, the
`model_type` of a Hugging Face config.json); the generic loaders in `ppl.models.lm` ask it
for metadata keys, tensor names and layout conversions. Adding an architecture is one module
(copy `mistral.py`) whose last line registers it: every module of this folder is imported
with the package.
"""

from ppl.models.lm.architectures.base import Architecture, PreTokenizerRule
from ppl.models.lm.architectures.registry import get, names, register
from ppl.registry import import_modules

import_modules(__name__)


def pre_tokenizer_rules() -> dict[str, PreTokenizerRule]:
    """Every registered architecture's GGUF pre-tokenizers, by `tokenizer.ggml.pre` name."""
    rules: dict[str, PreTokenizerRule] = {}
    for name in names():
        for pre, rule in get(name).pre_tokenizers.items():
            if rules.setdefault(pre, rule) != rule:
                raise ValueError(f"pre-tokenizer {pre!r} is defined twice, differently")
    return rules


__all__ = ["Architecture", "PreTokenizerRule", "get", "names", "pre_tokenizer_rules", "register"]
