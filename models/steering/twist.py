"""Learned twists: a critic of prefixes that guides resampling in twisted SMC.

A twist ψ_t(x_1:t) > 0 reshapes the intermediate targets of token-level SMC to
π_t(x_1:t) ∝ γ_t(x_1:t) ψ_t(x_1:t) while the final target stays π (the model divides ψ out
when a sequence finishes; see `ppl.models.steering.token_model`), so any twist gives a correct
sampler and a good one makes resampling look ahead. The ideal twist is the expected remaining
weight, ψ*_t(x_1:t) = E_q[Π_{s>t} G_s | x_1:t] (Zhao et al. 2024).

`TwistHead` is an Equinox MLP on the language model's final hidden state after the latest
token and the number of tokens left before the limit: log ψ_t = f((u_t - μ) / σ) with
u_t = (h_t, M - t) (the remaining weight grows with the tokens left, which the hidden state
alone does not know). `fit_twist` trains it by regression, on rollouts of the
proposal without resampling, of the remaining log weight Σ_{s>t} log G_s (a Monte Carlo
estimate of log ψ*; by Jensen's inequality its mean sits below log ψ*, which is harmless since
the twist is corrected away).
"""

from __future__ import annotations

from typing import NamedTuple, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ppl.models.constraints.token_constraint import TokenConstraint
from ppl.models.lm.config import DecoderConfig
from ppl.models.lm.params import Params
from ppl.models.steering.token_model import TokenParticles, TokenSettings, advance


@final
class TwistHead(eqx.Module):
    """log ψ = mlp((u - feature_mean) / feature_scale), u = (h, tokens left), for hidden
    states h [B, d] and tokens left [B]."""

    mlp: eqx.nn.MLP
    feature_mean: jax.Array  # [d + 1]
    feature_scale: jax.Array  # [d + 1]

    def __call__(self, features: jax.Array, tokens_left: jax.Array) -> jax.Array:
        inputs = jnp.concatenate([features, tokens_left[:, None].astype(features.dtype)], -1)
        return jax.vmap(self.mlp)((inputs - self.feature_mean) / self.feature_scale)


class Rollouts(NamedTuple):
    features: jax.Array  # [T, B, d] hidden state after token t
    tokens_left: jax.Array  # [T, B] tokens left before the limit after token t
    step_log_weights: jax.Array  # [T, B] log G_t of the proposal
    scored: jax.Array  # [T, B] bool: the row was live and unfinished after token t


@eqx.filter_jit
def rollouts(
    rng_key: jax.Array,
    params: Params,
    config: DecoderConfig,
    initial: TokenParticles,
    constraint: TokenConstraint,
    settings: TokenSettings,
) -> Rollouts:
    """Draw every particle of `initial` to the end with the proposal, no resampling."""

    def body(particles: TokenParticles, key: jax.Array) -> tuple[TokenParticles, tuple]:
        new = advance(key, particles, params, config, constraint, settings)
        left = settings.max_tokens - new.num_tokens
        scored = ~particles.finished & ~new.finished
        return new, (new.features, left, new.step_log_weight, scored)

    keys = jax.random.split(rng_key, settings.max_tokens)
    _, (features, left, weights, scored) = jax.lax.scan(body, initial, keys)
    return Rollouts(features, left, weights, scored)


def remaining_log_weight(step_log_weights: np.ndarray) -> np.ndarray:
    """[T, B]: Σ_{s>t} log G_s, the regression target after token t."""
    reverse = np.cumsum(step_log_weights[::-1], axis=0)[::-1]
    return reverse - step_log_weights


def fit_twist(
    rng_key: jax.Array,
    data: Rollouts,
    width: int = 64,
    depth: int = 2,
    steps: int = 500,
    learning_rate: float = 3e-3,
) -> TwistHead:
    """Fit a `TwistHead` to the remaining log weights of `data` (mean squared error, AdamW).

    Rows with a -inf remaining weight (a dead end) are clipped to the lowest finite target.
    """
    targets = remaining_log_weight(np.asarray(data.step_log_weights))
    scored = np.asarray(data.scored)
    features = np.concatenate(
        [np.asarray(data.features), np.asarray(data.tokens_left)[..., None]], axis=-1
    )[scored]
    y = targets[scored]
    if y.size == 0:
        raise ValueError("the rollouts contain no unfinished prefix to learn from")
    finite = np.isfinite(y)
    y = np.where(finite, y, y[finite].min() if finite.any() else -30.0).astype(np.float32)
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-6
    key_init, _ = jax.random.split(rng_key)
    mlp = eqx.nn.MLP(features.shape[1], "scalar", width, depth, jax.nn.gelu, key=key_init)
    head = TwistHead(mlp, jnp.asarray(mean), jnp.asarray(scale))
    optimizer = optax.adamw(learning_rate)
    state = optimizer.init(eqx.filter(head, eqx.is_array))
    x, left = jnp.asarray(features[:, :-1]), jnp.asarray(features[:, -1])
    target = jnp.asarray(y)

    @eqx.filter_jit
    def update(head: TwistHead, state: optax.OptState) -> tuple[TwistHead, optax.OptState]:
        def loss(head: TwistHead) -> jax.Array:
            return jnp.mean((head(x, left) - target) ** 2)

        grads = eqx.filter_grad(loss)(head)
        updates, state = optimizer.update(grads, state, eqx.filter(head, eqx.is_array))
        return eqx.apply_updates(head, updates), state

    for _ in range(steps):
        head, state = update(head, state)
    return head
