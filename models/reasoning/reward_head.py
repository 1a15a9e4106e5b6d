"""A learned process reward model: a small MLP on the generator's final hidden states.

Features. For a candidate (prompt, text) the language model runs once over the token ids of
the prompt (as the generator saw it, optionally in its chat template) followed by the text,
and `ppl.models.lm.transformer.forward` returns the final-normed hidden states h_1..h_S. They
are pooled to one vector

    mean:  phi = (1/|T|) sum_{s in T} h_s   over the text's positions T (each has seen the
           prompt); an empty text uses the prompt's last position
    last:  phi = h_S                        the last token's state

Head. r = sigmoid(f((phi - mu) / sigma)), with f an Equinox MLP and mu, sigma the feature
mean and standard deviation of the training set (fixed, not trained).

Training. `train_reward_head` computes the features of labelled rollouts once (the language
model is frozen) and fits f with AdamW on the binary cross-entropy
-[y log r + (1 - y) log(1 - r)], labels y in [0, 1] (soft labels allowed).

A candidate longer than the model's context gets NaN ("could not score"); training refuses
such examples instead.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ppl.models.lm.cache import init_cache
from ppl.models.lm.config import DecoderConfig
from ppl.models.lm.errors import ContextLengthError, ModelLoadError
from ppl.models.lm.language_model import LanguageModel, pad_batch
from ppl.models.lm.params import Params
from ppl.models.lm.transformer import forward
from ppl.models.reasoning.judge import row_buckets
from ppl.models.reasoning.verifiers import Candidates

Pooling = Literal["mean", "last"]
_MAGIC = b"ppl-jax reward head v1\n"
_WIDTH_MULTIPLE = 32


@final
class RewardNetwork(eqx.Module):
    """logit = mlp((features - feature_mean) / feature_scale) for one feature vector [d]."""

    mlp: eqx.nn.MLP
    feature_mean: jax.Array  # [d]
    feature_scale: jax.Array  # [d]

    def __call__(self, features: jax.Array) -> jax.Array:
        return self.mlp((features - self.feature_mean) / self.feature_scale)


def _new_mlp(rng_key: jax.Array, hidden_size: int, width: int, depth: int) -> eqx.nn.MLP:
    return eqx.nn.MLP(hidden_size, "scalar", width, depth, activation=jax.nn.gelu, key=rng_key)


def _skeleton(hidden_size: int, width: int, depth: int) -> RewardNetwork:
    """A network of the right structure whose leaves are shapes only (for deserialising)."""

    def build() -> RewardNetwork:
        mlp = _new_mlp(jax.random.key(0), hidden_size, width, depth)
        return RewardNetwork(mlp, jnp.zeros(hidden_size), jnp.ones(hidden_size))

    return eqx.filter_eval_shape(build)


@dataclasses.dataclass(frozen=True)
class RewardHead:
    """A verifier: r = sigmoid(network(pooled hidden states of prompt + text)) (module doc).

    `chat` must match how the generator was prompted (`StepSettings.chat`); `batch_size`
    bounds the rows of one feature pass.
    """

    network: RewardNetwork
    lm: LanguageModel
    pooling: Pooling = "mean"
    chat: bool = False
    batch_size: int = 16

    def __call__(self, candidates: Candidates) -> np.ndarray:
        return self.score(candidates.prompts, candidates.texts)

    def score(self, prompts: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """[K] rewards in (0, 1); NaN where prompt + text does not fit in the context."""
        features, fits = hidden_features(
            self.lm,
            prompts,
            texts,
            pooling=self.pooling,
            chat=self.chat,
            batch_size=self.batch_size,
        )
        rewards = np.full(len(texts), np.nan)
        if fits.any():
            rewards[fits] = _rewards(self.network, features[fits])
        return rewards

    @property
    def hidden_size(self) -> int:
        return int(self.network.feature_mean.shape[0])

    def save(self, path: str | Path) -> None:
        """Write the head: a JSON header (structure, pooling, chat) then the weights as
        `.npy` arrays through `eqx.tree_serialise_leaves` (no pickle)."""
        header = {
            "hidden_size": self.hidden_size,
            "width": self.network.mlp.width_size,
            "depth": self.network.mlp.depth,
            "pooling": self.pooling,
            "chat": self.chat,
            "model": self.lm.name,
        }
        encoded = json.dumps(header).encode()
        with open(path, "wb") as file:
            file.write(_MAGIC + len(encoded).to_bytes(8, "little") + encoded)
            eqx.tree_serialise_leaves(file, self.network)

    @classmethod
    def load(cls, path: str | Path, lm: LanguageModel, batch_size: int = 16) -> RewardHead:
        """Read a head written by `save`, for the generator `lm` (its hidden size must match)."""
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"reward head file not found: {path}")
        with open(path, "rb") as file:
            if file.read(len(_MAGIC)) != _MAGIC:
                raise ModelLoadError(f"{path} is not a reward head written by RewardHead.save")
            header = json.loads(file.read(int.from_bytes(file.read(8), "little")))
            if header["hidden_size"] != lm.config.hidden_size:
                raise ModelLoadError(
                    f"{path} was trained on hidden states of size {header['hidden_size']} "
                    f"(model {header['model']!r}), but {lm.name!r} has hidden size "
                    f"{lm.config.hidden_size}"
                )
            like = _skeleton(header["hidden_size"], header["width"], header["depth"])
            network = eqx.tree_deserialise_leaves(file, like)
        if _shapes(network) != _shapes(like):
            raise ModelLoadError(f"{path}: the weights do not have the shapes its header implies")
        return cls(network, lm, header["pooling"], header["chat"], batch_size)


def _shapes(tree: object) -> list[tuple[int, ...]]:
    return [tuple(x.shape) for x in jax.tree.leaves(tree) if hasattr(x, "shape")]


def hidden_features(
    lm: LanguageModel,
    prompts: Sequence[str],
    texts: Sequence[str],
    *,
    pooling: Pooling = "mean",
    chat: bool = False,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled final hidden states [K, d] (float32) of prompt + text, and [K] bool: fits.

    Rows whose prompt + text is longer than the context are NaN and `fits` is False there.
    """
    if pooling not in ("mean", "last"):
        raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
    if len(prompts) != len(texts):
        raise ValueError(f"{len(prompts)} prompts but {len(texts)} texts; pass one each")
    prompt_ids = lm.encode_prompts(prompts, chat=chat) if len(prompts) else []
    text_ids = [lm.tokenizer.encode(text, add_special_tokens=False) for text in texts]
    joined = [p + t for p, t in zip(prompt_ids, text_ids, strict=True)]
    fits = np.asarray([len(ids) <= lm.config.context_length for ids in joined], bool)
    features = np.full((len(joined), lm.config.hidden_size), np.nan, np.float32)
    rows = np.flatnonzero(fits)
    for start, stop, padded in row_buckets(len(rows), batch_size):
        chunk = rows[start:stop]
        batch = [joined[i] for i in chunk] + [[0]] * (padded - len(chunk))
        tokens, lengths = pad_batch(batch, _WIDTH_MULTIPLE)
        starts = [min(len(prompt_ids[i]), len(joined[i]) - 1) for i in chunk]
        starts += [0] * (padded - len(chunk))
        pooled = _pooled_hidden(
            lm.params, lm.config, tokens, lengths, jnp.asarray(starts, jnp.int32), pooling
        )
        features[chunk] = np.asarray(pooled)[: len(chunk)]
    return features, fits


@functools.partial(jax.jit, static_argnames=("config", "pooling"))
def _pooled_hidden(
    params: Params,
    config: DecoderConfig,
    tokens: jax.Array,
    lengths: jax.Array,
    starts: jax.Array,
    pooling: Pooling,
) -> jax.Array:
    # A scoring pass: no cache is kept (capacity 0, every write is dropped).
    cache = init_cache(config, tokens.shape[0], 0, params.final_norm.dtype)
    hidden, _ = forward(params, config, tokens, cache, lengths, attend_cache=False)
    hidden = hidden.astype(jnp.float32)
    if pooling == "last":
        return jnp.take_along_axis(hidden, (lengths - 1)[:, None, None], axis=1)[:, 0]
    positions = jnp.arange(tokens.shape[1])[None, :]
    mask = (positions >= starts[:, None]) & (positions < lengths[:, None])
    total = jnp.sum(jnp.where(mask[..., None], hidden, 0.0), axis=1)
    return total / jnp.sum(mask, axis=1, keepdims=True)


def _rewards(network: RewardNetwork, features: np.ndarray) -> np.ndarray:
    count = len(features)
    padded = 1 << (count - 1).bit_length()  # few distinct shapes to compile
    rows = np.zeros((padded, features.shape[1]), np.float32)
    rows[:count] = features
    return np.asarray(_sigmoid_logits(network, jnp.asarray(rows)), np.float64)[:count]


@eqx.filter_jit
def _sigmoid_logits(network: RewardNetwork, features: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(jax.vmap(network)(features))


def train_reward_head(
    rng_key: jax.Array,
    lm: LanguageModel,
    prompts: Sequence[str],
    texts: Sequence[str],
    labels: Sequence[float] | np.ndarray,
    *,
    pooling: Pooling = "mean",
    chat: bool = False,
    width: int = 64,
    depth: int = 1,
    num_steps: int = 300,
    minibatch_size: int = 64,
    learning_rate: float = 3e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 16,
) -> RewardHead:
    """Fit a reward head to labelled rollouts (label 1: the steps so far are correct).

    The features of every example are computed once; then `num_steps` AdamW steps on the
    mean binary cross-entropy of minibatches of `minibatch_size` examples drawn without
    replacement (the whole set when it is smaller). `rng_key` seeds the initialisation and
    the minibatches. `batch_size` bounds the rows of one feature pass.
    """
    targets = np.asarray(labels, np.float32)
    if targets.shape != (len(texts),) or len(prompts) != len(texts):
        raise ValueError(
            f"pass one prompt and one label per text: {len(prompts)} prompts, {len(texts)} "
            f"texts, labels of shape {targets.shape}"
        )
    if not len(texts):
        raise ValueError("no training examples")
    if np.any(np.isnan(targets)) or targets.min() < 0 or targets.max() > 1:
        raise ValueError("labels must be in [0, 1]")
    if num_steps < 1 or minibatch_size < 1:
        raise ValueError("num_steps and minibatch_size must be >= 1")
    features, fits = hidden_features(
        lm, prompts, texts, pooling=pooling, chat=chat, batch_size=batch_size
    )
    if not fits.all():
        index = int(np.flatnonzero(~fits)[0])
        raise ContextLengthError(
            f"training example {index} (prompt + text) is longer than the model's context "
            f"length {lm.config.context_length}"
        )
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    scale = np.where(std > 1e-6, std, 1.0).astype(np.float32)
    init_key, train_key = jax.random.split(rng_key)
    mlp = _new_mlp(init_key, lm.config.hidden_size, width, depth)
    standardised = jnp.asarray((features - mean) / scale)
    mlp = _fit(
        mlp,
        standardised,
        jnp.asarray(targets),
        train_key,
        optax.adamw(learning_rate, weight_decay=weight_decay),
        num_steps,
        min(minibatch_size, len(texts)),
    )
    network = RewardNetwork(mlp, jnp.asarray(mean), jnp.asarray(scale))
    return RewardHead(network, lm, pooling, chat, batch_size)


@eqx.filter_jit
def _fit(
    mlp: eqx.nn.MLP,
    features: jax.Array,
    labels: jax.Array,
    rng_key: jax.Array,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    minibatch_size: int,
) -> eqx.nn.MLP:
    weights, structure = eqx.partition(mlp, eqx.is_inexact_array)
    count = features.shape[0]

    def loss(weights: eqx.nn.MLP, x: jax.Array, y: jax.Array) -> jax.Array:
        logits = jax.vmap(eqx.combine(weights, structure))(x)
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y))

    def step(
        carry: tuple[eqx.nn.MLP, optax.OptState], key: jax.Array
    ) -> tuple[tuple[eqx.nn.MLP, optax.OptState], jax.Array]:
        weights, state = carry
        rows = jax.random.choice(key, count, (minibatch_size,), replace=False)
        value, grads = jax.value_and_grad(loss)(weights, features[rows], labels[rows])
        updates, state = optimizer.update(grads, state, weights)
        return (optax.apply_updates(weights, updates), state), value

    init = (weights, optimizer.init(weights))
    (weights, _), _ = jax.lax.scan(step, init, jax.random.split(rng_key, num_steps))
    return eqx.combine(weights, structure)
