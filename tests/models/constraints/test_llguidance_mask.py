"""llguidance token masks: every completed sample is valid, the masks depend on the tokens
only (not on row order or history), and bad grammars fail with llguidance's message."""

from __future__ import annotations

import json
import re

import jax.numpy as jnp
import jsonschema
import lark
import numpy as np
import pytest

from ppl.models.constraints.llguidance_mask import GrammarError, GrammarMask, unpack_bitmask
from ppl.models.lm.tiny import byte_tokenizer

ARITHMETIC = r"""
start: expr
expr: term (("+" | "-") term)*
term: NUMBER | "(" expr ")"
NUMBER: /[0-9]{1,3}/
"""

SCHEMA = {
    "$defs": {"name": {"type": "string", "pattern": "^[a-z]{1,6}$"}},
    "type": "object",
    "properties": {
        "who": {"$ref": "#/$defs/name"},
        "age": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 120}, {"type": "null"}]},
    },
    "required": ["who", "age"],
    "additionalProperties": False,
}


def sample(mask: GrammarMask, num: int, max_tokens: int, seed: int) -> list[list[int]]:
    """Uniform draws among the allowed tokens, ending at end-of-sequence when it is allowed
    (half the time) or at `max_tokens`: a stress test of the masks, not of a language model."""
    rng = np.random.default_rng(seed)
    eos = mask.tokenizer.eos_token_ids[0]
    tokens = np.zeros((num, max_tokens), np.int32)
    lengths = np.zeros(num, np.int32)
    done = np.zeros(num, bool)
    for _ in range(max_tokens):
        allowed = mask.allowed(tokens, lengths)
        for b in np.flatnonzero(~done):
            choices = np.flatnonzero(allowed[b])
            assert choices.size, "a live row with nothing allowed"
            pick = eos if allowed[b, eos] and rng.random() < 0.5 else rng.choice(choices)
            tokens[b, lengths[b]] = pick
            lengths[b] += 1
            done[b] = pick == eos
        if done.all():
            break
    return [list(row[:n]) for row, n in zip(tokens, lengths, strict=True)]


def texts(mask: GrammarMask, rows: list[list[int]]) -> list[str | None]:
    """Each finished row's text (None where the token limit cut it)."""
    eos = mask.tokenizer.eos_token_ids[0]
    return [mask.tokenizer.decode(row[:-1]) if row and row[-1] == eos else None for row in rows]


def test_lark_samples_parse_with_lark() -> None:
    mask = GrammarMask.lark(ARITHMETIC, byte_tokenizer())
    parser = lark.Lark(ARITHMETIC)
    finished = [t for t in texts(mask, sample(mask, 16, 40, seed=0)) if t is not None]
    assert len(finished) >= 8
    for text in finished:
        parser.parse(text)  # raises if not in the language
    assert mask.accepts_text(finished).all()
    assert not mask.accepts_text(["1+", "(2"]).any()


def test_json_schema_samples_validate() -> None:
    mask = GrammarMask.json_schema(SCHEMA, byte_tokenizer())
    finished = [t for t in texts(mask, sample(mask, 16, 60, seed=1)) if t is not None]
    assert len(finished) >= 8
    for text in finished:
        jsonschema.validate(json.loads(text), SCHEMA)
        assert " " not in text  # compact JSON by default


def test_regex_samples_match() -> None:
    pattern = r"(ab|c)+d?"
    mask = GrammarMask.regex(pattern, byte_tokenizer())
    finished = [t for t in texts(mask, sample(mask, 16, 20, seed=2)) if t is not None]
    assert finished and all(re.fullmatch(pattern, t) for t in finished)


def test_masks_depend_only_on_the_tokens() -> None:
    """Resampling permutes and duplicates rows; the masks follow the tokens, and equal the
    masks of a fresh matcher set that never saw the history."""
    tokenizer = byte_tokenizer()
    mask = GrammarMask.lark(ARITHMETIC, tokenizer)
    rows = sample(mask, 6, 12, seed=3)
    width = max(len(r) for r in rows)
    tokens = np.zeros((6, width), np.int32)
    for b, row in enumerate(rows):
        tokens[b, : len(row)] = row
    lengths = np.array([max(len(r) - 1, 0) for r in rows], np.int32)
    before = mask.bitmask(tokens, lengths)
    order = np.array([5, 5, 0, 2, 1, 3])  # an ancestor vector
    after = mask.bitmask(tokens[order], lengths[order])
    np.testing.assert_array_equal(after, before[order])
    fresh = GrammarMask.lark(ARITHMETIC, tokenizer).bitmask(tokens[order], lengths[order])
    np.testing.assert_array_equal(after, fresh)


def test_rejected_and_finished_rows_allow_nothing() -> None:
    tokenizer = byte_tokenizer()
    mask = GrammarMask.regex("ab", tokenizer)
    a, b, z = (tokenizer.encode(c, add_special_tokens=False)[0] for c in "abz")
    eos = tokenizer.eos_token_ids[0]
    tokens = np.array([[a, b, 0], [z, 0, 0], [a, b, eos]], np.int32)
    allowed = mask.allowed(tokens, np.array([2, 1, 3]))
    assert np.flatnonzero(allowed[0]).tolist() == [eos]  # complete: only the end
    assert not allowed[1].any() and not allowed[2].any()
    assert mask.accepting(tokens, np.array([2, 1, 1])).tolist() == [True, False, False]


def test_unpack_bitmask_matches_numpy() -> None:
    mask = GrammarMask.lark(ARITHMETIC, byte_tokenizer())
    tokens, lengths = np.zeros((3, 4), np.int32), np.zeros(3, np.int32)
    bits = mask.bitmask(tokens, lengths)
    unpacked = unpack_bitmask(jnp.asarray(bits), mask.vocab_size)
    np.testing.assert_array_equal(np.asarray(unpacked), mask.allowed(tokens, lengths))


def test_bad_grammars_are_named() -> None:
    tokenizer = byte_tokenizer()
    with pytest.raises(GrammarError, match="Expected token"):
        GrammarMask.lark("start: (", tokenizer)
    with pytest.raises(GrammarError, match='Unimplemented keys: \\["not"\\]'):
        GrammarMask.json_schema({"type": "string", "not": {"const": "a"}}, tokenizer)
    with pytest.raises(GrammarError, match="not a JSON schema"):
        GrammarMask.json_schema("{not json", tokenizer)
    with pytest.raises(GrammarError):
        GrammarMask.regex("(ab", tokenizer)
    with pytest.raises(ValueError, match=r"expected tokens \[B, M\]"):
        GrammarMask.regex("ab", tokenizer).bitmask(np.zeros(3, np.int32), np.zeros(3, np.int32))


def test_smollm2_tokenizer_json(default_model_path: str) -> None:
    """The embedded model's 49k-token vocabulary: masks in llguidance's threads, valid JSON."""
    from ppl.models.lm.served import load_tokenizer

    mask = GrammarMask.json_schema(SCHEMA, load_tokenizer(default_model_path))
    finished = [t for t in texts(mask, sample(mask, 8, 40, seed=4)) if t is not None]
    assert len(finished) >= 4
    for text in finished:
        jsonschema.validate(json.loads(text), SCHEMA)
