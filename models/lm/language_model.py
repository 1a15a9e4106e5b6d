"""`LanguageModel`: a loaded checkpoint with text-level generation and scoring.

The jit-compiled pieces (`prefill`, `decode`, `extend`) live in `ppl.models.lm.decoding`; this class
tokenizes, pads, checks shapes and context length, and turns arrays back into text.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ppl.models.lm.cache import KVCache, gather_cache, init_cache, share_prefix
from ppl.models.lm.config import DecoderConfig
from ppl.models.lm.decoding import FINISH_EOS, FINISH_STOP, DecodeOutput, decode, extend, prefill
from ppl.models.lm.errors import BatchShapeError, ContextLengthError, ModelLoadError
from ppl.models.lm.params import Params, cast_params
from ppl.models.lm.qmatmul import QuantizedWeight, kernel_available
from ppl.models.lm.sampling import SamplingParams
from ppl.models.lm.stopping import StopAutomata, build_stop_automata
from ppl.models.lm.tokenizer import Tokenizer
from ppl.models.lm.transformer import ATTENTION_BLOCK

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
WEIGHTS = ("quantized", "float")  # how GGUF matrices are held: see `LanguageModel.from_gguf`
FINISH_NAMES = {0: "length", FINISH_EOS: "eos", FINISH_STOP: "stop"}
_PAD_MULTIPLE = 16
_CAPACITY_MULTIPLE = 64
_STOP_AUTOMATA_KEPT = 32


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, math.ceil(n / multiple) * multiple)


@dataclass(frozen=True)
class Generation:
    """Text-level result of `LanguageModel.generate`, one entry per sequence.

    Sequences are ordered prompt-major: sample j of prompt i is row `i * num_samples + j`.
    """

    texts: list[str]
    token_ids: list[list[int]]
    finish_reasons: list[str]
    output: DecodeOutput  # the arrays, including the cache and per-token log-probabilities

    @property
    def sampling_logprobs(self) -> np.ndarray:
        """[B] total log q of each sequence under the sampling distribution."""
        return np.asarray(self.output.sampling_logprobs.sum(axis=-1))

    @property
    def model_logprobs(self) -> np.ndarray:
        """[B] total log p of each sequence under the untempered model."""
        return np.asarray(self.output.model_logprobs.sum(axis=-1))


@dataclass(frozen=True)
class Scores:
    """Log-probabilities of continuations given prompts."""

    token_logprobs: list[np.ndarray]  # per continuation, log p(token_i | prompt, tokens_<i)
    total: np.ndarray  # [B] sums


class LanguageModel:
    """A decoder checkpoint ready to run: config, device parameters and tokenizer."""

    def __init__(
        self,
        config: DecoderConfig,
        params: Params,
        tokenizer: Tokenizer,
        name: str = "model",
        dtype: str = "float32",
    ) -> None:
        _check_dtype(dtype)
        self.config = config
        self.dtype = DTYPES[dtype]
        self.params = cast_params(params, self.dtype)
        if self.params.lm_head is None and not isinstance(self.params.embed, QuantizedWeight):
            # tied: a transposed copy makes the head matmul faster
            self.params = self.params._replace(lm_head=jnp.asarray(self.params.embed.T))
        self.tokenizer = tokenizer
        self.name = name

    # Loading ---------------------------------------------------------------------------
    @classmethod
    def from_gguf(
        cls,
        path: str | Path,
        dtype: str = "float32",
        cache: bool = True,
        weights: str = "quantized",
    ) -> LanguageModel:
        """Load a GGUF file; with `cache`, through the converted-model cache on disk
        (`ppl.models.lm.model_cache`), which skips the conversion after the first load.

        `weights="quantized"` keeps Q8_0, Q4_0, Q4_1, Q4_K and Q6_K matrices in their block
        layout, multiplied by the `ppl.models.lm.qmatmul` kernel (activations in `dtype`, the
        products in float32); other tensors, every tensor where the kernel cannot be built (with
        a warning), and every tensor on a GPU (whose path is `dtype="bfloat16"` float weights)
        are dequantized to `dtype`. `weights="float"` dequantizes all.
        """
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
        _check_dtype(dtype)  # before the load, not after it
        # the kernel is a CPU one: on an accelerator the weights load as float in `dtype`
        quantized = weights == "quantized" and jax.default_backend() == "cpu" and kernel_available()
        if cache:
            from ppl.models.lm.model_cache import load_gguf_cached as load_gguf
        else:
            from ppl.models.lm.gguf_loader import load_gguf

        config, params, tokenizer = load_gguf(path, quantized)
        return cls(config, params, tokenizer, name=Path(path).name, dtype=dtype)

    @classmethod
    def from_directory(cls, directory: str | Path, dtype: str = "float32") -> LanguageModel:
        from ppl.models.lm.safetensors_loader import load_safetensors

        config, params, tokenizer = load_safetensors(directory)
        return cls(config, params, tokenizer, name=Path(directory).name, dtype=dtype)

    @classmethod
    def load(
        cls,
        source: str | Path | None = None,
        dtype: str = "float32",
        cache: bool = True,
        weights: str = "quantized",
    ) -> LanguageModel:
        """Load a GGUF file, a Hugging Face directory, or (None) the embedded default model;
        `cache` and `weights` are `from_gguf`'s (a directory's float tensors load as float)."""
        if source is None:
            from ppl.models.lm.default_model import default_model_path

            return cls.from_gguf(default_model_path(), dtype=dtype, cache=cache, weights=weights)
        path = Path(source)
        if path.is_dir():
            return cls.from_directory(path, dtype=dtype)
        if path.suffix == ".gguf" or path.is_file():
            return cls.from_gguf(path, dtype=dtype, cache=cache, weights=weights)
        raise ModelLoadError(f"model file or directory not found: {path}")

    # Text -> tokens --------------------------------------------------------------------
    def encode_prompts(self, prompts: Sequence[str], chat: bool = False) -> list[list[int]]:
        """Token ids of each prompt; with `chat`, each is one user turn in the chat template."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not a single string")
        encoded = []
        for prompt in prompts:
            if chat:
                text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
                encoded.append(self.tokenizer.encode(text, add_special_tokens=False))
            else:
                encoded.append(self.tokenizer.encode(prompt))
            if not encoded[-1]:
                raise ValueError(f"prompt {len(encoded) - 1} encodes to no tokens")
        return encoded

    def stop_automata(self, stop: Sequence[str]) -> StopAutomata:
        """Automata that spot the `stop` strings in this vocabulary's tokens; the last
        `_STOP_AUTOMATA_KEPT` built are kept on the model (they live and die with it)."""
        key = tuple(stop)
        built = self._stop_automata
        if key not in built:
            if len(built) >= _STOP_AUTOMATA_KEPT:
                del built[next(iter(built))]  # the oldest
            # no stop strings need only the vocabulary's size, not every token's bytes
            token_bytes = self._token_bytes if key else [b""] * self.tokenizer.vocab_size
            built[key] = build_stop_automata(key, token_bytes)
        return built[key]

    @functools.cached_property
    def _stop_automata(self) -> dict[tuple[str, ...], StopAutomata]:
        return {}

    @functools.cached_property
    def _token_bytes(self) -> tuple[bytes, ...]:
        """Each token's bytes, computed once per model."""
        return tuple(self.tokenizer.token_bytes())

    def cache_capacity(self, longest_prompt: int, max_new_tokens: int) -> int:
        """Cache positions for prompts of up to `longest_prompt` tokens and `max_new_tokens`
        more (rounded up, at most the context length); ContextLengthError if they do not fit."""
        needed = longest_prompt + max_new_tokens
        if needed > self.config.context_length:
            raise ContextLengthError(
                f"a prompt of {longest_prompt} tokens plus {max_new_tokens} new tokens needs "
                f"{needed} positions, more than the model's context length "
                f"{self.config.context_length}"
            )
        return min(_round_up(needed, _CAPACITY_MULTIPLE), self.config.context_length)

    # Arrays ----------------------------------------------------------------------------
    def prefill(
        self, token_ids: Sequence[Sequence[int]], capacity: int
    ) -> tuple[jax.Array, KVCache]:
        """Logits after each prompt and a cache of `capacity` positions holding the prompts."""
        tokens, lengths = pad_batch(token_ids, _PAD_MULTIPLE)
        if tokens.shape[1] > capacity:
            raise ContextLengthError(
                f"prompts of {tokens.shape[1]} tokens exceed capacity {capacity}"
            )
        cache = init_cache(self.config, len(token_ids), capacity, self.dtype)
        return prefill(self.params, self.config, tokens, lengths, cache)

    def prefill_shared(
        self, prompt_ids: Sequence[int], num_rows: int, capacity: int
    ) -> tuple[jax.Array, KVCache]:
        """Logits [num_rows, V] after one prompt and a cache of `num_rows` rows holding it,
        its first floor(n / ATTENTION_BLOCK) blocks stored once as the shared prefix.

        Each row keeps its own copy of the prompt's last n mod ATTENTION_BLOCK tokens (so the
        prefix has few distinct shapes to compile for); a prompt shorter than a block gives a
        prefix-less cache. `lengths` are n for every row and `capacity` is `capacity`.
        """
        logits, cache = self.prefill([prompt_ids], capacity)
        rows = jnp.zeros((num_rows,), jnp.int32)
        prefix = len(prompt_ids) // ATTENTION_BLOCK * ATTENTION_BLOCK
        if prefix == 0:
            return logits[rows], gather_cache(cache, rows)
        return logits[rows], share_prefix(cache, prefix, num_rows)

    def decode(
        self,
        rng_key: jax.Array,
        cache: KVCache,
        logits: jax.Array,
        max_new_tokens: int,
        sampling: SamplingParams,
        *,
        stop: Sequence[str] = (),
        stop_at_eos: bool = True,
    ) -> DecodeOutput:
        """Continue every row of `cache` (next-token `logits` [B, V]) by up to `max_new_tokens`.

        The array-level counterpart of `generate`: rows stop at the checkpoint's
        end-of-sequence tokens (unless `stop_at_eos` is False) and after any of `stop`.
        """
        expected = (cache.batch_size, self.config.vocab_size)
        if tuple(logits.shape) != expected:
            raise BatchShapeError(
                f"logits have shape {tuple(logits.shape)} but the cache holds "
                f"{cache.batch_size} rows of a {self.config.vocab_size}-token vocabulary: "
                f"expected {expected}"
            )
        if int(jnp.max(cache.lengths)) + max_new_tokens > cache.capacity:
            raise ContextLengthError(
                f"{max_new_tokens} new tokens after {int(jnp.max(cache.lengths))} cached ones "
                f"exceed the cache capacity {cache.capacity}"
            )
        eos = self.tokenizer.eos_token_ids if stop_at_eos else ()
        return decode(
            self.params,
            self.config,
            rng_key,
            cache,
            logits,
            max_new_tokens=max_new_tokens,
            sampling=sampling,
            eos_token_ids=jnp.asarray(eos, jnp.int32),
            stop=self.stop_automata(stop),
        )

    def generate(
        self,
        rng_key: jax.Array,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 64,
        sampling: SamplingParams | None = None,
        stop: Sequence[str] = (),
        chat: bool = False,
        num_samples: int = 1,
    ) -> Generation:
        """Sample `num_samples` continuations of each prompt in one batch.

        Each prompt is prefilled once; its cache is then gathered to `num_samples` rows and all
        rows decode together (one prompt sampled several times is stored once, as the cache's
        shared prefix: `prefill_shared`). A row stops at an end-of-sequence token, after a stop
        string, or after `max_new_tokens` tokens. NaN log-probabilities (overflow in a
        low-precision dtype, weights that are not finite) raise a ValueError rather than return
        garbage text.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        sampling = sampling or SamplingParams()
        token_ids = self.encode_prompts(prompts, chat=chat)
        capacity = self.cache_capacity(max(map(len, token_ids)), max_new_tokens)
        if len(token_ids) == 1 and num_samples > 1:
            logits, cache = self.prefill_shared(token_ids[0], num_samples, capacity)
        else:
            logits, cache = self.prefill(token_ids, capacity)
            rows = jnp.repeat(jnp.arange(len(token_ids)), num_samples)
            cache, logits = gather_cache(cache, rows), logits[rows]
        output = self.decode(rng_key, cache, logits, max_new_tokens, sampling, stop=stop)
        counts = np.asarray(output.num_tokens)
        tokens = np.asarray(output.tokens)
        ids = [tokens[b, : counts[b]].tolist() for b in range(len(counts))]
        nan_rows = np.flatnonzero(np.isnan(np.asarray(output.model_logprobs)).any(axis=-1))
        if nan_rows.size:
            raise ValueError(
                f"{self.name} produced NaN log-probabilities in {nan_rows.size} of {len(ids)} "
                f"rows (dtype {np.dtype(self.dtype).name}); its weights or activations are not "
                "finite: try --dtype float32 or check the model file"
            )
        return Generation(
            texts=[self.tokenizer.decode(row, skip_special_tokens=True) for row in ids],
            token_ids=ids,
            finish_reasons=[FINISH_NAMES[int(r)] for r in np.asarray(output.finish_reason)],
            output=output,
        )

    def logits(self, token_ids: Sequence[int]) -> jax.Array:
        """Next-token logits [S, V] at every position of one token sequence."""
        tokens = jnp.asarray([list(token_ids)], jnp.int32)
        self.cache_capacity(tokens.shape[1], 0)
        cache = init_cache(self.config, 1, tokens.shape[1], self.dtype)
        out, _ = extend(self.params, self.config, tokens, jnp.asarray([tokens.shape[1]]), cache)
        return out[0]

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> Scores:
        """log p(continuation | prompt) per token and in total, for each pair, in one batch."""
        if len(prompts) != len(continuations):
            raise BatchShapeError(
                f"{len(prompts)} prompts but {len(continuations)} continuations; pass one each"
            )
        prompt_ids = self.encode_prompts(prompts)
        cont_ids = [self.tokenizer.encode(c, add_special_tokens=False) for c in continuations]
        return self.score_tokens(prompt_ids, cont_ids)

    def score_tokens(
        self, prompt_ids: Sequence[Sequence[int]], continuation_ids: Sequence[Sequence[int]]
    ) -> Scores:
        """Token-level version of `score`."""
        if len(prompt_ids) != len(continuation_ids):
            raise BatchShapeError(
                f"{len(prompt_ids)} prompts but {len(continuation_ids)} continuations"
            )
        joined = [list(p) + list(c) for p, c in zip(prompt_ids, continuation_ids, strict=True)]
        tokens, lengths = pad_batch(joined, _PAD_MULTIPLE)
        self.cache_capacity(tokens.shape[1], 0)
        cache = init_cache(self.config, len(joined), tokens.shape[1], self.dtype)
        logits, _ = extend(self.params, self.config, tokens, lengths, cache)
        logprobs = np.asarray(_token_logprobs(logits, tokens))  # [B, S-1]: predicts token s+1
        per_token = [
            logprobs[b, len(p) - 1 : len(p) - 1 + len(c)]
            for b, (p, c) in enumerate(zip(prompt_ids, continuation_ids, strict=True))
        ]
        return Scores(per_token, np.asarray([x.sum() for x in per_token]))


@jax.jit
def _token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    logprobs = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    return jnp.take_along_axis(logprobs, tokens[:, 1:, None], axis=-1)[..., 0]


def pad_batch(token_ids: Sequence[Sequence[int]], multiple: int) -> tuple[jax.Array, jax.Array]:
    """Right-pad token lists to a common length (a multiple of `multiple`); return lengths."""
    if not token_ids:
        raise BatchShapeError("the batch is empty")
    lengths = [len(row) for row in token_ids]
    if min(lengths) == 0:
        raise BatchShapeError(f"row {lengths.index(0)} of the batch has no tokens")
    width = _round_up(max(lengths), multiple)
    padded = np.zeros((len(token_ids), width), np.int32)
    for b, row in enumerate(token_ids):
        padded[b, : len(row)] = row
    return jnp.asarray(padded), jnp.asarray(lengths, jnp.int32)
