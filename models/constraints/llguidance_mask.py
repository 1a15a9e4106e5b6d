"""Token masks of Lark grammars, JSON Schemas and regexes from llguidance, for batches of
partial generations.

A `GrammarMask` holds one llguidance `LLMatcher` per distinct token prefix. Asked for the masks
of a batch `tokens [B, M]` with `num_tokens [B]`, it finds each row's longest prefix it already
has a matcher for (after one step: the row's parent, whatever resampling did to the rows),
copies it (`deep_copy`), feeds it the row's remaining tokens, and fills the batch bitmask in
llguidance's threads (`fill_next_token_bitmask_par`). Rows are therefore looked up by their
tokens, not by their position, so the masks need no bookkeeping of ancestors and are a pure
function of the tokens, as a `jax.pure_callback` requires. Matchers no row used in the last call
are dropped.

Bitmask layout (llguidance's): int32 [B, ceil(V / 32)], token v allowed iff bit v % 32 of word
v // 32 is set. End-of-sequence tokens are allowed exactly where the prefix is a complete match
(only they, where nothing can extend it); a row whose tokens the grammar rejects, or that has
ended, gets an all-zero mask.
"""

from __future__ import annotations

import dataclasses
import json
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import llguidance
import llguidance.numpy as llg_numpy
import numpy as np

from ppl.models.lm.tokenizer import Tokenizer

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

__all__ = ["GrammarError", "GrammarMask", "HostMask", "unpack_bitmask"]


class GrammarError(ValueError):
    """A grammar, schema or regex that llguidance rejects; the message is llguidance's."""


class _TokenizerView:
    """What `llguidance.TokenizerWrapper` reads from a tokenizer: token bytes, special ids,
    end of sequence, and an encoder."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokens = tokenizer.token_bytes()
        self.eos_token_id = tokenizer.eos_token_ids[0]
        self.bos_token_id = tokenizer.bos_token_id
        self.special_token_ids = [i for i, data in enumerate(self.tokens) if not data]
        self._tokenizer = tokenizer

    def __call__(self, text: str | bytes) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return self._tokenizer.encode(text, add_special_tokens=False)


_LL_TOKENIZERS: weakref.WeakKeyDictionary[Tokenizer, llguidance.LLTokenizer] = (
    weakref.WeakKeyDictionary()
)


def ll_tokenizer(tokenizer: Tokenizer) -> llguidance.LLTokenizer:
    """llguidance's view of `tokenizer` (built once per tokenizer: ~0.3 s for 49k tokens)."""
    if tokenizer not in _LL_TOKENIZERS:
        if not tokenizer.eos_token_ids:
            raise ValueError("grammar masks need a tokenizer with an end-of-sequence token")
        wrapper = llguidance.TokenizerWrapper(_TokenizerView(tokenizer))
        _LL_TOKENIZERS[tokenizer] = llguidance.LLTokenizer(
            wrapper, n_vocab=tokenizer.vocab_size, eos_token=list(tokenizer.eos_token_ids)
        )
    return _LL_TOKENIZERS[tokenizer]


class GrammarMask:
    """Token masks of one grammar for batches of token prefixes (see the module docstring)."""

    def __init__(self, grammar: str, tokenizer: Tokenizer, num_threads: int | None = None):
        """`grammar`: llguidance's grammar text (from `lark`, `json_schema` or `regex`, or any
        `LLMatcher.grammar_from_*`). Raises `GrammarError` with llguidance's message if it is
        invalid."""
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.vocab_size
        self._ll = ll_tokenizer(tokenizer)
        problem = llguidance.LLMatcher.validate_grammar(grammar, self._ll)
        if problem:
            raise GrammarError(problem)
        self.grammar = grammar
        self._executor = llguidance.LLExecutor(num_threads=num_threads)
        self._root = llguidance.LLMatcher(self._ll, grammar, log_level=0)
        if self._root.is_error():
            raise GrammarError(self._root.get_error())
        self._matchers: dict[tuple[int, ...], llguidance.LLMatcher] = {(): self._root}
        eos = np.zeros(32 * llg_numpy.get_bitmask_shape(1, self.vocab_size)[1], bool)
        eos[list(tokenizer.eos_token_ids)] = True
        self._eos_bits = np.packbits(eos, bitorder="little").view(np.int32)  # mask: only the end

    @classmethod
    def lark(cls, grammar: str, tokenizer: Tokenizer) -> GrammarMask:
        """A Lark grammar (llguidance's Lark dialect: `start` is the start rule)."""
        return cls(llguidance.LLMatcher.grammar_from_lark(grammar), tokenizer)

    @classmethod
    def json_schema(
        cls,
        schema: Mapping[str, Any] | str,
        tokenizer: Tokenizer,
        whitespace_flexible: bool = False,
    ) -> GrammarMask:
        """JSON text valid under `schema` (a dict or its JSON text). Without
        `whitespace_flexible` the JSON is compact (`{"a":1}`), which keeps a sampler from
        spending its token budget on whitespace. Keywords llguidance cannot compile (e.g.
        `not`) are a `GrammarError` that names them."""
        try:
            text = schema if isinstance(schema, str) else json.dumps(schema)
            options: JsonCompileOptions = {"whitespace_flexible": whitespace_flexible}
            grammar = llguidance.LLMatcher.grammar_from_json_schema(text, overrides=options)
        except ValueError as error:
            raise GrammarError(f"not a JSON schema: {error}") from None
        return cls(grammar, tokenizer)

    @classmethod
    def regex(cls, pattern: str, tokenizer: Tokenizer) -> GrammarMask:
        """Text that `pattern` matches in full."""
        return cls(llguidance.LLMatcher.grammar_from_regex(pattern), tokenizer)

    # ------------------------------------------------------------------------------------
    def _matcher(self, prefix: tuple[int, ...], fresh: dict) -> llguidance.LLMatcher:
        """The matcher after `prefix`, from the longest prefix already known."""
        if prefix in fresh:
            return fresh[prefix]
        known = len(prefix)
        while prefix[:known] not in self._matchers and prefix[:known] not in fresh:
            known -= 1
        base = fresh[prefix[:known]] if prefix[:known] in fresh else self._matchers[prefix[:known]]
        if known == len(prefix):
            fresh[prefix] = base
            return base
        matcher = base.deep_copy()
        for token in prefix[known:]:
            if not matcher.consume_token(int(token)):  # the grammar rejects it: an error state
                break
        fresh[prefix] = matcher
        return matcher

    def _rows(self, tokens: np.ndarray, num_tokens: np.ndarray) -> list[llguidance.LLMatcher]:
        tokens, num_tokens = np.asarray(tokens), np.asarray(num_tokens)
        if tokens.ndim != 2 or num_tokens.shape != tokens.shape[:1]:
            raise ValueError(
                f"expected tokens [B, M] and num_tokens [B], got {tokens.shape} and "
                f"{num_tokens.shape}"
            )
        fresh: dict[tuple[int, ...], llguidance.LLMatcher] = {(): self._root}
        rows = [
            self._matcher(tuple(int(t) for t in row[:n]), fresh)
            for row, n in zip(tokens, num_tokens, strict=True)
        ]
        self._matchers = fresh  # keep what this batch uses: its rows' children come next
        return rows

    def bitmask(self, tokens: np.ndarray, num_tokens: np.ndarray) -> np.ndarray:
        """int32 [B, ceil(V / 32)]: the tokens each row may take next (all zero for a row the
        grammar has rejected or that has ended)."""
        tokens, num_tokens = np.asarray(tokens), np.asarray(num_tokens)
        rows = self._rows(tokens, num_tokens)
        # rows with one prefix share a matcher: one mask per distinct matcher, then copied
        slot: dict[int, int] = {}
        distinct = [slot.setdefault(id(m), len(slot)) for m in rows]
        unique = list({id(m): m for m in rows}.values())
        masks = np.zeros(llg_numpy.get_bitmask_shape(len(unique), self.vocab_size), np.int32)
        live = [(m, i) for i, m in enumerate(unique) if not m.is_error() and not m.is_stopped()]
        if live:
            llg_numpy.fill_next_token_bitmask_par(self._executor, live, masks)
        out = masks[np.asarray(distinct, np.int64)]
        # a match that nothing can extend stops the matcher: it may still end, unless it has
        ended = set(self.tokenizer.eos_token_ids)
        for b, (m, n) in enumerate(zip(rows, num_tokens, strict=True)):
            last = int(tokens[b, n - 1]) if n > 0 else None
            if m.is_stopped() and not m.is_error() and m.is_accepting() and last not in ended:
                out[b] = self._eos_bits
        return out

    def allowed(self, tokens: np.ndarray, num_tokens: np.ndarray) -> np.ndarray:
        """bool [B, V]: `bitmask` unpacked."""
        bits = np.unpackbits(self.bitmask(tokens, num_tokens).view(np.uint8), bitorder="little")
        return bits.reshape(len(num_tokens), -1)[:, : self.vocab_size].astype(bool)

    def accepting(self, tokens: np.ndarray, num_tokens: np.ndarray) -> np.ndarray:
        """bool [B]: whether each row's tokens are a complete match (an end-of-sequence token
        included or not)."""
        rows = self._rows(tokens, num_tokens)
        return np.array([not m.is_error() and m.is_accepting() for m in rows], bool)

    def accepts_text(self, texts: Sequence[str]) -> np.ndarray:
        """bool [len(texts)]: whether each text, tokenized, is a complete match (for checking
        results; a text can match and still be reachable by other tokenizations)."""
        out = []
        for text in texts:
            matcher = self._root.deep_copy()
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            out.append(matcher.consume_tokens(ids) and matcher.is_accepting())
        return np.array(out, bool)


def unpack_bitmask(bitmask: jax.Array, vocab_size: int) -> jax.Array:
    """bool [..., V] from llguidance's int32 bitmask [..., ceil(V / 32)] (jittable)."""
    bits = (bitmask[..., :, None] >> jnp.arange(32, dtype=jnp.int32)) & 1
    return bits.reshape(*bitmask.shape[:-1], -1)[..., :vocab_size].astype(bool)


@dataclasses.dataclass(frozen=True, eq=False)
class HostMask:
    """A `GrammarMask` inside compiled loops: `allowed` and `accepting` run it on the host
    through `jax.pure_callback`, once per step for the whole batch. Hashable by identity, so it
    can be part of a loop's static settings."""

    grammar: GrammarMask

    def allowed(self, tokens: jax.Array, num_tokens: jax.Array) -> jax.Array:
        """bool [B, V]: the tokens each row may take next."""
        batch = num_tokens.shape[0]
        width = llg_numpy.get_bitmask_shape(batch, self.grammar.vocab_size)[1]
        shape = jax.ShapeDtypeStruct((batch, width), jnp.int32)

        def host(tokens: np.ndarray, num_tokens: np.ndarray) -> np.ndarray:
            return self.grammar.bitmask(np.asarray(tokens), np.asarray(num_tokens))

        bits = jax.pure_callback(host, shape, tokens, num_tokens)
        return unpack_bitmask(bits, self.grammar.vocab_size)

    def accepting(self, tokens: jax.Array, num_tokens: jax.Array) -> jax.Array:
        """bool [B]: whether each row's tokens are a complete match."""
        shape = jax.ShapeDtypeStruct(num_tokens.shape, jnp.bool_)

        def host(tokens: np.ndarray, num_tokens: np.ndarray) -> np.ndarray:
            return self.grammar.accepting(np.asarray(tokens), np.asarray(num_tokens))

        return jax.pure_callback(host, shape, tokens, num_tokens)
