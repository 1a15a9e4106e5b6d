"""Tiny byte-level models for tests, examples and exact-enumeration experiments.

`byte_tokenizer()` is a real byte-level BPE tokenizer (256 byte tokens, a few merges, special
tokens) and `tiny_language_model()` pairs it with random weights, so every text-level path of
the runtime runs in milliseconds.
"""

from __future__ import annotations

import jax
import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from ppl.models.lm.config import DecoderConfig
from ppl.models.lm.language_model import LanguageModel
from ppl.models.lm.params import init_random_params
from ppl.models.lm.tokenizer import Tokenizer, _unicode_to_byte

SPECIAL_TOKENS = ("<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>")
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|eos|>"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def byte_level_vocabulary() -> tuple[list[str], list[tuple[str, str]]]:
    """Tokens (256 bytes, then merges, then specials) and merges of the tiny tokenizer."""
    to_char = {b: c for c, b in _unicode_to_byte().items()}
    tokens = [to_char[b] for b in range(256)]
    merges = [("Ċ", "Ċ"), ("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("1", "2")]
    tokens += [a + b for a, b in merges]
    return [*tokens, *SPECIAL_TOKENS], merges


def byte_tokenizer() -> Tokenizer:
    """A byte-level BPE tokenizer with 265 tokens; `<|eos|>` ends sequences."""
    tokens, merges = byte_level_vocabulary()
    backend = tokenizers.Tokenizer(
        models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)
    )
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(
        [tokenizers.AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]
    )
    return Tokenizer(
        backend,
        eos_token_ids=[tokens.index("<|eos|>")],
        bos_token_id=tokens.index("<|bos|>"),
        chat_template=TINY_CHAT_TEMPLATE,
    )


def tiny_config(**overrides: object) -> DecoderConfig:
    """A two-layer decoder over the tiny tokenizer's vocabulary (GQA with 2 groups)."""
    fields: dict[str, object] = {
        "vocab_size": len(byte_level_vocabulary()[0]),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_layers": 2,
        "num_heads": 4,
        "num_kv_heads": 2,
        "head_dim": 8,
        "rms_norm_eps": 1e-5,
        "context_length": 256,
        "tie_embeddings": True,
    }
    fields.update(overrides)
    return DecoderConfig(**fields)  # type: ignore[arg-type]


def tiny_language_model(
    rng_key: jax.Array, config: DecoderConfig | None = None, dtype: str = "float32"
) -> LanguageModel:
    """Random weights over the tiny byte-level tokenizer."""
    config = config or tiny_config()
    params = init_random_params(rng_key, config)
    return LanguageModel(config, params, byte_tokenizer(), name="tiny", dtype=dtype)


def alphabet_tokenizer(letters: str = "ab") -> Tokenizer:
    """A tokenizer whose vocabulary is `letters`, the newline and `<|eos|>` (one token each),
    for language models small enough to enumerate every sequence."""
    to_char = {b: c for c, b in _unicode_to_byte().items()}
    tokens = [to_char[ord(c)] for c in letters + "\n"]
    backend = tokenizers.Tokenizer(
        models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[])
    )
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([tokenizers.AddedToken("<|eos|>", special=True, normalized=False)])
    return Tokenizer(backend, eos_token_ids=[len(tokens)], bos_token_id=None, chat_template=None)


def alphabet_language_model(
    rng_key: jax.Array, letters: str = "ab", scale: float = 1.0
) -> LanguageModel:
    """A random one-layer decoder over `alphabet_tokenizer(letters)` (len(letters) + 2 tokens);
    `scale` sets how far its next-token distributions are from uniform."""
    config = tiny_config(vocab_size=len(letters) + 2, num_layers=1, context_length=64)
    params = init_random_params(rng_key, config, scale=scale)
    return LanguageModel(config, params, alphabet_tokenizer(letters), name="alphabet")
