"""Process reward models (PRMs) from Hugging Face checkpoint directories, in the JAX runtime.

A PRM reads a prompt and the steps s_1..s_n of a solution and gives each step a reward in
[0, 1], read from the backbone's final hidden states h (`ppl.models.lm.transformer.forward`)
at one position per step. `load_prm` finds the head layout from config.json's `architectures`
and the tensor names:

- `qwen2_math_prm` (Qwen2.5-Math-PRM): a Qwen2 backbone (`model.*`, no lm_head) with the head
  `score.0` (Linear d -> d), ReLU, `score.2` (Linear d -> 2). Steps are separated by the
  special token `<extra_0>`; at the separator after step i,
  r_i = softmax(W2 relu(W1 h + b1) + b2)[1].
- `math_shepherd` (Math-Shepherd): a causal LM (Llama, Mistral, ...) read at the step tag
  ("ки") after each step: r_i = softmax([z_+, z_-])[0], z_+ and z_- the LM's logits of the
  good and bad tokens ("+", "-") there.
- `value_head`: a `*ForTokenClassification` with one label, `score.weight` [1, d] (+ bias):
  r_i = sigmoid(w h + b) at the last token of step i (with two labels, softmax(..)[1]).

How steps are written for each layout (chat turns, separators, tags) is the layout's frozen
format (`QwenMathFormat`, `MathShepherdFormat`, `ValueHeadFormat`). Many candidates are scored
at once: right-padded batches of up to `batch_size` rows, one jit-compiled forward pass per
batch, with rows, widths and steps bucketed to limit recompilation. A candidate longer than the
context gets NaN rewards ("could not score"). Users bring the weights; nothing here downloads.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppl.models.lm.cache import init_cache
from ppl.models.lm.config import DecoderConfig
from ppl.models.lm.errors import ModelLoadError
from ppl.models.lm.language_model import DTYPES, pad_batch
from ppl.models.lm.params import Params, cast_params
from ppl.models.lm.safetensors_loader import decoder_from_tensors, read_config, read_tensors
from ppl.models.lm.tokenizer import Tokenizer
from ppl.models.lm.transformer import forward
from ppl.models.reasoning.judge import row_buckets

QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
LAYOUTS = {
    "qwen2_math_prm": "a Qwen2 backbone with score.0 [d, d], ReLU, score.2 [2, d] "
    "(Qwen2.5-Math-PRM)",
    "math_shepherd": "a *ForCausalLM read at a step tag (Math-Shepherd)",
    "value_head": "a *ForTokenClassification with score.weight [1, d] (or [2, d])",
}


@dataclasses.dataclass(frozen=True)
class QwenMathFormat:
    """qwen2_math_prm: the chat [system, user: prompt, assistant: s_1 SEP s_2 SEP .. s_n SEP]
    in the checkpoint's chat template (with `chat=False`: prompt + "\\n" + the assistant
    text). Separators inside a step are removed."""

    separator: str = "<extra_0>"
    system_prompt: str = QWEN_MATH_SYSTEM  # empty: no system turn
    chat: bool = True

    def text(self, tokenizer: Tokenizer, prompt: str, steps: Sequence[str]) -> str:
        """The text the PRM reads: the steps, each followed by the separator, as the
        assistant's turn (or after the prompt and a newline without `chat`)."""
        content = "".join(step.replace(self.separator, "") + self.separator for step in steps)
        if not self.chat:
            return f"{prompt}\n{content}"
        messages = [{"role": "system", "content": self.system_prompt}] * bool(self.system_prompt)
        messages += [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": content},
        ]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=False)


@dataclasses.dataclass(frozen=True)
class MathShepherdFormat:
    """math_shepherd: prompt + `prompt_joiner` + the steps `s_i + " " + step_tag` joined by
    `step_joiner` ("Q s_1 ки\\ns_2 ки"); r_i from the logits of `good_token` / `bad_token`
    at the tag."""

    step_tag: str = "ки"
    good_token: str = "+"
    bad_token: str = "-"
    prompt_joiner: str = " "
    step_joiner: str = "\n"


@dataclasses.dataclass(frozen=True)
class ValueHeadFormat:
    """value_head: prompt + `prompt_joiner` + the steps joined by `step_joiner`; r_i at the
    last token of s_i."""

    prompt_joiner: str = "\n"
    step_joiner: str = "\n\n"


PRMFormat = QwenMathFormat | MathShepherdFormat | ValueHeadFormat
_FORMATS: dict[str, type] = {
    "qwen2_math_prm": QwenMathFormat,
    "math_shepherd": MathShepherdFormat,
    "value_head": ValueHeadFormat,
}
_MIN_WIDTH = 32


class PRMHead(NamedTuple):
    """logits = (relu(h W1 + b1) if W1 else h) W + b, at the step positions."""

    hidden_weight: jax.Array | None  # [d, d] (qwen2_math_prm's score.0) or None
    hidden_bias: jax.Array | None  # [d]
    weight: jax.Array  # [d, C]
    bias: jax.Array  # [C]


@dataclasses.dataclass(frozen=True, eq=False)
class ProcessRewardModel:
    """A loaded PRM (see the module doc); `positive` is the class whose softmax probability
    is the reward (None: sigmoid of the one logit)."""

    layout: str
    config: DecoderConfig
    params: Params
    head: PRMHead
    tokenizer: Tokenizer
    step_format: PRMFormat
    positive: int | None
    name: str = "prm"
    batch_size: int = 16

    def encode(self, prompt: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """Token ids of the prompt and steps as the layout writes them, and the position of
        each step's reward (-1 where the tokenization lost it)."""
        fmt = self.step_format
        if isinstance(fmt, QwenMathFormat):
            text = fmt.text(self.tokenizer, prompt, steps)
            ids = self.tokenizer.encode(text, add_special_tokens=not fmt.chat)
            separator = self.tokenizer.token_to_id(fmt.separator)
            found = [i for i, token in enumerate(ids) if token == separator][-len(steps) :]
            return ids, found if len(found) == len(steps) else [-1] * len(steps)
        if isinstance(fmt, MathShepherdFormat):
            chunks, joiner = [f"{step} {fmt.step_tag}" for step in steps], fmt.step_joiner
        else:
            chunks, joiner = list(steps), fmt.step_joiner
        text, marks = prompt + fmt.prompt_joiner, []
        for i, chunk in enumerate(chunks):
            text += (joiner if i else "") + chunk
            marks.append(len(text) - len(chunk) + len(chunk.rstrip()) - 1)  # its last visible char
        encoding = self.tokenizer.backend.encode(text)
        offsets = np.asarray(encoding.offsets, np.int64).reshape(-1, 2)
        positions = []
        for mark in marks:
            covering = np.flatnonzero((offsets[:, 0] <= mark) & (mark < offsets[:, 1]))
            positions.append(int(covering[-1]) if covering.size else -1)
        return list(encoding.ids), positions

    def head_logits(
        self, prompts: Sequence[str], steps: Sequence[Sequence[str]]
    ) -> list[np.ndarray]:
        """The head's logits [n_k, C] (float32) at the n_k steps of each candidate; NaN for a
        candidate longer than the context or one whose step positions were lost."""
        if len(prompts) != len(steps):
            raise ValueError(f"{len(prompts)} prompts but {len(steps)} step lists; pass one each")
        width = int(self.head.weight.shape[1])
        encoded = [self.encode(p, s) for p, s in zip(prompts, steps, strict=True)]
        out = [np.full((len(s), width), np.nan, np.float32) for s in steps]
        fits = [
            k
            for k, (ids, positions) in enumerate(encoded)
            if positions and min(positions) >= 0 and len(ids) <= self.config.context_length
        ]
        for start, stop, padded in row_buckets(len(fits), self.batch_size):
            chunk = fits[start:stop]
            rows = [encoded[k][0] for k in chunk] + [[0]] * (padded - len(chunk))
            tokens, lengths = pad_batch(rows, bucket_width(max(map(len, rows))))
            most = max(len(encoded[k][1]) for k in chunk)
            positions = np.zeros((padded, 1 << (most - 1).bit_length()), np.int32)
            for row, k in enumerate(chunk):
                positions[row, : len(encoded[k][1])] = encoded[k][1]
            logits = np.asarray(
                _head_logits(
                    self.params, self.config, self.head, tokens, lengths, jnp.asarray(positions)
                )
            )
            for row, k in enumerate(chunk):
                out[k] = logits[row, : len(encoded[k][1])]
        return out

    def step_rewards(
        self, prompts: Sequence[str], steps: Sequence[Sequence[str]]
    ) -> list[np.ndarray]:
        """The reward r_i in [0, 1] of every step of every candidate ([n_k] float64 each)."""
        return [self.rewards_from_logits(z) for z in self.head_logits(prompts, steps)]

    def rewards_from_logits(self, logits: np.ndarray) -> np.ndarray:
        """r = softmax(logits)[positive], or sigmoid(logits[0]) for a one-logit head."""
        z = np.asarray(logits, np.float64)
        if self.positive is None:
            return 0.5 * (1.0 + np.tanh(0.5 * z[:, 0]))  # sigmoid, without overflow
        z = z - z.max(axis=1, keepdims=True)
        return np.exp(z[:, self.positive]) / np.exp(z).sum(axis=1)


def bucket_width(length: int) -> int:
    """Padded width for `length` tokens: at least 32, else rounded up to an eighth of its
    power-of-two octave (about 8 shapes per doubling, at most 12.5% padding)."""
    if length <= _MIN_WIDTH:
        return _MIN_WIDTH
    step = 1 << (length.bit_length() - 4)
    return -(-length // step) * step


def detect_layout(directory: Path, hf: dict, tensors: dict[str, np.ndarray]) -> str:
    """The head layout of a checkpoint (module doc); a ModelLoadError naming the known ones."""
    architectures = [str(a) for a in hf.get("architectures") or []]
    if "score.0.weight" in tensors and "score.2.weight" in tensors:
        return "qwen2_math_prm"
    classifier = any(a.endswith("ForTokenClassification") for a in architectures)
    if classifier and "score.weight" in tensors:
        return "value_head"
    head_tensors = sorted(name for name in tensors if not name.startswith("model."))
    causal = any(a.endswith("ForCausalLM") for a in architectures)
    if causal and not any(name.startswith("score.") for name in head_tensors):
        return "math_shepherd"
    known = "; ".join(f"{name}: {what}" for name, what in LAYOUTS.items())
    raise ModelLoadError(
        f"{directory} has no known process reward head (architectures {architectures}, "
        f"tensors outside model.*: {head_tensors[:6] or 'none'}); known layouts: {known}"
    )


def load_prm(
    directory: str | Path,
    step_format: PRMFormat | None = None,
    dtype: str = "float32",
    batch_size: int = 16,
) -> ProcessRewardModel:
    """Load a PRM from a checkpoint directory (config.json, *.safetensors, tokenizer.json).

    Args:
        step_format: how steps are written; by default the detected layout's format class with
            its defaults (a format of another layout is an error).
        dtype: the backbone's computation dtype (a `ppl.models.lm` dtype name); the head
            runs in float32.
        batch_size: candidates per forward pass.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelLoadError(f"process reward model directory not found: {directory}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    hf = read_config(directory)
    tensors = read_tensors(directory)
    layout = detect_layout(directory, hf, tensors)
    if step_format is None:
        step_format = _FORMATS[layout]()
    elif not isinstance(step_format, _FORMATS[layout]):
        raise ValueError(
            f"{directory} has the {layout} layout, which takes a {_FORMATS[layout].__name__}, "
            f"not a {type(step_format).__name__}"
        )
    config, params = decoder_from_tensors(directory, hf, tensors)
    tokenizer = Tokenizer.from_directory(directory)
    if tokenizer.vocab_size > config.vocab_size:
        raise ModelLoadError(
            f"{directory}: the tokenizer has {tokenizer.vocab_size} tokens, more than the "
            f"model's vocabulary of {config.vocab_size}"
        )
    d = config.hidden_size

    def tensor(name: str, shape: tuple[int, ...], optional: bool = False) -> jax.Array:
        if name not in tensors and optional:
            return jnp.zeros(shape, jnp.float32)
        if name not in tensors or tensors[name].shape != shape:
            found = tensors[name].shape if name in tensors else "absent"
            raise ModelLoadError(f"{directory}: tensor {name} should be {shape}, is {found}")
        return jnp.asarray(tensors[name], jnp.float32)

    positive: int | None = 1
    if isinstance(step_format, QwenMathFormat):
        if len(tokenizer.encode(step_format.separator, add_special_tokens=False)) != 1:
            raise ModelLoadError(
                f"{directory}: the step separator {step_format.separator!r} is not one token"
            )
        if step_format.chat and not tokenizer.chat_template:
            raise ModelLoadError(
                f"{directory} has no chat template; pass QwenMathFormat(chat=False)"
            )
        head = PRMHead(
            tensor("score.0.weight", (d, d)).T,
            tensor("score.0.bias", (d,), optional=True),
            tensor("score.2.weight", (2, d)).T,
            tensor("score.2.bias", (2,), optional=True),
        )
    elif isinstance(step_format, MathShepherdFormat):
        ids = [
            _token_id(tokenizer, t, directory)
            for t in (step_format.good_token, step_format.bad_token)
        ]
        # safetensors load as float: [V, d] embedding or [d, V] head
        embed, lm_head = np.asarray(params.embed), params.lm_head
        output = embed.T if lm_head is None else np.asarray(lm_head)
        head = PRMHead(None, None, jnp.asarray(output[:, ids], jnp.float32), jnp.zeros(2))
        positive = 0
    else:
        labels = tensors["score.weight"].shape[0]
        if labels not in (1, 2):
            raise ModelLoadError(
                f"{directory}: a value head has 1 label (or 2), score.weight has {labels}"
            )
        weight = tensor("score.weight", (labels, d)).T
        head = PRMHead(None, None, weight, tensor("score.bias", (labels,), optional=True))
        positive = None if labels == 1 else 1
    tensors.clear()  # the layers are stacked copies now; free the file's arrays before casting
    return ProcessRewardModel(
        layout,
        config,
        cast_params(params, DTYPES[dtype]),
        head,
        tokenizer,
        step_format,
        positive,
        name=directory.name,
        batch_size=batch_size,
    )


def _token_id(tokenizer: Tokenizer, token: str, directory: Path) -> int:
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) == 1:
        return ids[0]
    found = tokenizer.token_to_id(token)
    if found is None:
        raise ModelLoadError(f"{directory}: {token!r} is not one token of the vocabulary ({ids})")
    return found


@functools.partial(jax.jit, static_argnames=("config",))
def _head_logits(
    params: Params,
    config: DecoderConfig,
    head: PRMHead,
    tokens: jax.Array,
    lengths: jax.Array,
    positions: jax.Array,
) -> jax.Array:
    """[B, P, C] head logits at `positions` [B, P] of right-padded `tokens` [B, S]."""
    cache = init_cache(config, tokens.shape[0], 0, params.final_norm.dtype)  # nothing is kept
    hidden, _ = forward(params, config, tokens, cache, lengths, attend_cache=False)
    picked = jnp.take_along_axis(hidden, positions[:, :, None], axis=1).astype(jnp.float32)
    if head.hidden_weight is not None and head.hidden_bias is not None:
        picked = jax.nn.relu(picked @ head.hidden_weight + head.hidden_bias)
    return picked @ head.weight + head.bias
