"""Tokenizers built from GGUF metadata: pre-tokenizer rules, special tokens, token bytes."""

from __future__ import annotations

import pytest

from ppl.models.lm import ModelLoadError, Tokenizer
from ppl.models.lm.tiny import SPECIAL_TOKENS, byte_level_vocabulary, byte_tokenizer


def gguf_fields(pre: str, add_bos: bool = False) -> dict:
    tokens, merges = byte_level_vocabulary()
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [3 if t in SPECIAL_TOKENS else 1 for t in tokens],
        "tokenizer.ggml.merges": [f"{a} {b}" for a, b in merges],
        "tokenizer.ggml.bos_token_id": tokens.index("<|bos|>"),
        "tokenizer.ggml.eos_token_id": tokens.index("<|eos|>"),
        "tokenizer.ggml.add_bos_token": add_bos,
    }


def pieces(tokenizer: Tokenizer, text: str) -> list[str]:
    return [tokenizer.decode([i]) for i in tokenizer.encode(text)]


@pytest.mark.parametrize(
    ("pre", "expected"),
    [
        ("smollm", ["1", "2", "3", "4", "5"]),  # digits split one by one
        ("qwen2", ["1", "2", "3", "4", "5"]),
        ("llama-bpe", ["12", "3", "4", "5"]),  # groups of up to three digits, then merges
        ("gpt-2", ["12", "3", "4", "5"]),
    ],
)
def test_pre_tokenizers_split_digits_by_their_rule(pre, expected):
    assert pieces(Tokenizer.from_gguf_fields(gguf_fields(pre)), "12345") == expected


def test_special_tokens_are_single_tokens_and_bos_is_added_when_asked():
    tokenizer = Tokenizer.from_gguf_fields(gguf_fields("smollm", add_bos=True))
    ids = tokenizer.encode("a<|eos|>b")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_ids[0]
    assert ids[0] == bos and eos in ids and len(ids) == 4
    assert tokenizer.encode("a", add_special_tokens=False) == [ord("a")]


def test_unsupported_tokenizer_and_pre_tokenizer_are_named():
    with pytest.raises(ModelLoadError, match="unsupported GGUF pre-tokenizer 'mystery'"):
        Tokenizer.from_gguf_fields(gguf_fields("mystery"))
    with pytest.raises(ModelLoadError, match="tokenizer model 'llama'"):
        Tokenizer.from_gguf_fields({**gguf_fields("smollm"), "tokenizer.ggml.model": "llama"})


def test_token_bytes_round_trip_text_and_specials_are_empty():
    tokenizer = byte_tokenizer()
    table = tokenizer.token_bytes()
    text = "héllo the 12\n\n"
    assert b"".join(table[i] for i in tokenizer.encode(text)) == text.encode()
    assert table[tokenizer.eos_token_ids[0]] == b""


def test_chat_template_needs_a_template():
    tokenizer = Tokenizer.from_gguf_fields(gguf_fields("smollm"))
    with pytest.raises(ValueError, match="no chat template"):
        tokenizer.apply_chat_template([{"role": "user", "content": "x"}])
