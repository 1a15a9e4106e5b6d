"""LLM decoding as a Feynman-Kac model with one token per step (token-level steering).

The target over complete generations x (ending at an end-of-sequence token or cut at
`max_tokens` tokens) is

    π(x) ∝ Π_k p_k(x) · 1[x satisfies the constraint] · φ(x),

where p_k is the language model given prompt k (one prompt: the base model; several: their
product, "prompt intersection"), the constraint is a token automaton (`TokenConstraint`) and φ
is an optional host-side critic (any sequence potential, see `ppl.models.constraints.critic`). The
evidence Z is the target's normalizing constant; with one prompt and no critic it is the
probability that the base model's output satisfies the constraint.

A step draws x_t for every live particle from

- the locally optimal proposal (`proposal="masked"`): q(v) ∝ Π_k p_k(v | x_<t) m(v), where
  m masks the tokens the constraint forbids, with incremental weight
  log G_t = log Σ_v Π_k p_k(v | x_<t) m(v) (the mass that survived the mask; it depends on
  x_<t only, so every draw of the step has the same weight), or
- the model itself (`proposal="model"`): q(v) ∝ Π_k p_k(v | x_<t), weight
  log Σ_v Π_k p_k(v | x_<t) + log m(x_t) (sample, then check).

A twist ψ_t(x_{1:t}) (a learned critic of prefixes; see `ppl.models.steering.twist`) and the
critic's prefix weight multiply in telescoping ratios,

    G_t ← G_t · ψ_t(x_{1:t}) / ψ_{t-1}(x_{1:t-1}) · φ_t(x_{1:t}) / φ_{t-1}(x_{1:t-1}),

with ψ = 1 on complete sequences and φ the critic's complete weight there, so both only
reshape the intermediate targets: Z and the final target are unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ppl.feynman_kac import FeynmanKac
from ppl.models.constraints.llguidance_mask import HostMask
from ppl.models.constraints.token_constraint import TokenConstraint
from ppl.models.lm.cache import KVCache, gather_cache
from ppl.models.lm.config import DecoderConfig
from ppl.models.lm.decoding import NO_TOKEN
from ppl.models.lm.params import Params
from ppl.models.lm.sampling import inverse_cdf_sample
from ppl.models.lm.transformer import forward, output_logits

PROPOSALS = ("masked", "model")
LogTwist = Callable[[jax.Array, jax.Array], jax.Array]  # features [B, d], tokens left [B]
Critic = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # tokens, lengths, finished


class TokenParticles(NamedTuple):
    """B partial generations; the cache holds K prompt contexts per particle (rows b*K + k)."""

    cache: KVCache  # [L, B*K, ...]
    logits: jax.Array  # [B*K, V] next-token logits of every context
    features: jax.Array  # [B, d] final hidden state of context 0 at the last token
    tokens: jax.Array  # [B, M] generated tokens, NO_TOKEN beyond num_tokens
    num_tokens: jax.Array  # [B]
    finished: jax.Array  # [B] bool
    state: jax.Array  # [B] constraint automaton state
    log_p: jax.Array  # [B] Σ_k log p_k(x_1:t): the target's language-model factor
    step_log_weight: jax.Array  # [B] the proposal's weight of the latest step
    log_twist: jax.Array  # [B] log ψ of the current prefix (0 once finished)
    log_critic: jax.Array  # [B] the critic's log weight of the current prefix
    decoded: jax.Array  # [B] tokens decoded in this row (a work meter: stays with its row)


@dataclasses.dataclass(frozen=True)
class TokenSettings:
    """Static settings of the token-level model. `grammar`: a host-side token mask (a Lark
    grammar, JSON Schema or regex through llguidance) intersected with the constraint's; it
    cannot look ahead to the token limit, so a row the limit cuts short of a complete match
    gets weight 0 there."""

    max_tokens: int
    num_contexts: int = 1
    proposal: str = "masked"
    grammar: HostMask | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.num_contexts < 1:
            raise ValueError(f"num_contexts must be >= 1, got {self.num_contexts}")
        if self.proposal not in PROPOSALS:
            raise ValueError(f"proposal must be one of {PROPOSALS}, got {self.proposal!r}")


def _rows(ancestors: jax.Array, num_contexts: int) -> jax.Array:
    return (ancestors[:, None] * num_contexts + jnp.arange(num_contexts)).reshape(-1)


def gather_token_particles(
    particles: TokenParticles, ancestors: jax.Array, num_contexts: int
) -> TokenParticles:
    """Particles `ancestors`. The work meter `decoded` stays with the rows (its total moves to
    row 0 when the batch changes size)."""
    rows = _rows(ancestors, num_contexts)
    decoded = particles.decoded
    if ancestors.shape[0] != decoded.shape[0]:
        decoded = jnp.zeros(ancestors.shape, decoded.dtype).at[0].set(decoded.sum())
    by_row = ("cache", "logits", "decoded")
    taken = {k: v[ancestors] for k, v in particles._asdict().items() if k not in by_row}
    return TokenParticles(
        cache=gather_cache(particles.cache, rows),
        logits=particles.logits[rows],
        decoded=decoded,
        **taken,
    )


def start_particles(
    cache: KVCache,
    logits: jax.Array,
    num_particles: int,
    settings: TokenSettings,
    hidden_size: int,
) -> TokenParticles:
    """`num_particles` empty generations after the K prompts in `cache` (rows 0..K-1)."""
    num_contexts = settings.num_contexts
    if logits.shape[0] != num_contexts:
        raise ValueError(
            f"the cache holds {logits.shape[0]} prompts but num_contexts is {num_contexts}"
        )
    rows = jnp.tile(jnp.arange(num_contexts), num_particles)
    zeros = jnp.zeros((num_particles,), jnp.float32)
    return TokenParticles(
        cache=gather_cache(cache, rows),
        logits=logits[rows].astype(jnp.float32),
        features=jnp.zeros((num_particles, hidden_size), jnp.float32),
        tokens=jnp.full((num_particles, settings.max_tokens), NO_TOKEN, jnp.int32),
        num_tokens=jnp.zeros((num_particles,), jnp.int32),
        finished=jnp.zeros((num_particles,), bool),
        state=jnp.zeros((num_particles,), jnp.int32),
        log_p=zeros,
        step_log_weight=zeros,
        log_twist=zeros,
        log_critic=zeros,
        decoded=jnp.zeros((num_particles,), jnp.int32),
    )


class _StepProposal(NamedTuple):
    log_q: jax.Array  # [B, V] the proposal (normalized; -inf off its support)
    combined: jax.Array  # [B, V] Σ_k log p_k(v | x_<t)
    allowed: jax.Array  # [B, V] bool: tokens the constraint allows
    next_states: jax.Array  # [B, V]
    log_norm: jax.Array  # [B] the step weight of an allowed token


def _step_proposal(
    particles: TokenParticles, constraint: TokenConstraint, settings: TokenSettings
) -> _StepProposal:
    batch = particles.num_tokens.shape[0]
    log_probs = jax.nn.log_softmax(particles.logits, axis=-1)
    combined = log_probs.reshape(batch, settings.num_contexts, -1).sum(axis=1)
    remaining = settings.max_tokens - particles.num_tokens
    allowed, next_states = constraint.allowed(particles.state, remaining)
    if settings.grammar is not None:
        allowed = allowed & settings.grammar.allowed(particles.tokens, particles.num_tokens)
    support = jnp.where(allowed, combined, -jnp.inf) if settings.proposal == "masked" else combined
    log_norm = jax.nn.logsumexp(support, axis=-1)
    # a row with nothing allowed (ended, or a dead end of an intersection) draws an end of
    # sequence from a finite proposal; its weight is -inf all the same (`_take`)
    dead = log_norm == -jnp.inf
    eos_only = jnp.where(constraint.eos, 0.0, -jnp.inf)
    log_q = jnp.where(
        dead[:, None], eos_only - jnp.log(constraint.eos.sum()), support - log_norm[:, None]
    )
    return _StepProposal(log_q, combined, allowed, next_states, log_norm)


def _take(proposal: _StepProposal, tokens: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Σ_k log p_k of `tokens`, their step log weights and the next automaton states."""

    def at(x: jax.Array) -> jax.Array:
        return jnp.take_along_axis(x, tokens[:, None], axis=-1)[:, 0]

    weight = jnp.where(at(proposal.allowed), proposal.log_norm, -jnp.inf)
    return at(proposal.combined), weight, at(proposal.next_states)


def advance(
    rng_key: jax.Array,
    particles: TokenParticles,
    params: Params,
    config: DecoderConfig,
    constraint: TokenConstraint,
    settings: TokenSettings,
    log_twist: LogTwist | None = None,
    critic: Critic | None = None,
    forced: jax.Array | None = None,
) -> TokenParticles:
    """One token for every live particle (finished ones come back unchanged).

    `forced` [B] int: rows with a value >= 0 take that token instead of a draw (the reference
    of conditional SMC); their weight is the same proposal weight a draw would get.
    """
    proposal = _step_proposal(particles, constraint, settings)
    tokens = inverse_cdf_sample(rng_key, proposal.log_q)
    if forced is not None:
        tokens = jnp.where(forced >= 0, forced, tokens)
    token_log_p, step_log_weight, state = _take(proposal, tokens)
    active = ~particles.finished
    k = settings.num_contexts
    step = jnp.where(active, tokens, 0)
    hidden, cache = forward(
        params,
        config,
        jnp.repeat(step, k)[:, None],
        particles.cache,
        jnp.repeat(active, k).astype(jnp.int32),
    )
    logits = output_logits(params, hidden[:, 0])
    features = hidden[::k, 0].astype(jnp.float32)
    num_tokens = particles.num_tokens + active
    finished = particles.finished | constraint.eos[tokens] | (num_tokens >= settings.max_tokens)
    index = jnp.minimum(particles.num_tokens, settings.max_tokens - 1)
    written = jnp.where(active, tokens, particles.tokens[jnp.arange(tokens.shape[0]), index])
    new = TokenParticles(
        cache=cache,
        logits=jnp.where(jnp.repeat(active, k)[:, None], logits, particles.logits),
        features=jnp.where(active[:, None], features, particles.features),
        tokens=particles.tokens.at[jnp.arange(tokens.shape[0]), index].set(written),
        num_tokens=num_tokens,
        finished=finished,
        state=jnp.where(active, state, particles.state),
        log_p=particles.log_p + jnp.where(active, token_log_p, 0.0),
        step_log_weight=jnp.where(active, step_log_weight, 0.0),
        log_twist=particles.log_twist,
        log_critic=particles.log_critic,
        decoded=particles.decoded + active,
    )
    if settings.grammar is not None:  # the limit cut a row: it counts if it is a complete match
        cut = active & (num_tokens >= settings.max_tokens) & ~constraint.eos[tokens]
        grammar = settings.grammar
        complete = jax.lax.cond(  # a host call only on the steps that cut rows
            jnp.any(cut),
            lambda: grammar.accepting(new.tokens, new.num_tokens),
            lambda: jnp.ones_like(cut),
        )
        weight = jnp.where(cut & ~complete, -jnp.inf, new.step_log_weight)
        new = new._replace(step_log_weight=weight)
    if log_twist is not None:
        left = settings.max_tokens - new.num_tokens
        twist = jnp.where(new.finished, 0.0, log_twist(new.features, left))
        new = new._replace(log_twist=jnp.where(active, twist, particles.log_twist))
    if critic is not None:
        score = critic(new.tokens, new.num_tokens, new.finished)
        new = new._replace(log_critic=jnp.where(active, score, particles.log_critic))
    return new


def _ratio(new: jax.Array, old: jax.Array) -> jax.Array:
    """log(new / old) for log weights, -inf (not NaN) once `old` is -inf."""
    return jnp.where(old == -jnp.inf, -jnp.inf, new - old)


def log_potential(parents: TokenParticles, particles: TokenParticles) -> jax.Array:
    """log G_t: the proposal weight times the twist's and the critic's ratios."""
    return (
        particles.step_log_weight
        + _ratio(particles.log_twist, parents.log_twist)
        + _ratio(particles.log_critic, parents.log_critic)
    )


def token_feynman_kac(
    params: Params,
    config: DecoderConfig,
    initial: TokenParticles,
    constraint: TokenConstraint,
    settings: TokenSettings,
    log_twist: LogTwist | None = None,
    critic: Critic | None = None,
    reference: jax.Array | None = None,
) -> FeynmanKac:
    """The token-level model as a `FeynmanKac` (build it inside the compiled function, so
    that `params` and `initial` are traced arguments rather than constants).

    Time t = 0 is the empty generation `initial` (N particles, from `start_particles`); each
    later step adds one token. Run it for `settings.max_tokens + 1` steps. `reference`
    [max_tokens] pins row 0 to those tokens (NO_TOKEN once it has ended), for conditional SMC.
    """
    num_particles = initial.num_tokens.shape[0]

    def initial_sample(rng_key: jax.Array, n: int) -> TokenParticles:
        if n != num_particles:
            raise ValueError(f"the model was built for {num_particles} particles, not {n}")
        if critic is None:
            return initial
        return initial._replace(
            log_critic=critic(initial.tokens, initial.num_tokens, initial.finished)
        )

    def initial_log_potential(particles: TokenParticles) -> jax.Array:
        return particles.log_critic + particles.log_twist

    def transition_sample(
        rng_key: jax.Array, t: jax.Array, parents: TokenParticles
    ) -> TokenParticles:
        forced = None
        if reference is not None:
            position = jnp.minimum(parents.num_tokens[0], settings.max_tokens - 1)
            first = jnp.where(parents.finished[0], NO_TOKEN, reference[position])
            forced = jnp.full((num_particles,), NO_TOKEN, jnp.int32).at[0].set(first)

        def step() -> TokenParticles:
            return advance(
                rng_key, parents, params, config, constraint, settings, log_twist, critic, forced
            )

        def unchanged() -> TokenParticles:
            return parents._replace(step_log_weight=jnp.zeros_like(parents.step_log_weight))

        return jax.lax.cond(jnp.all(parents.finished), unchanged, step)

    def potential(t: jax.Array, parents: TokenParticles, particles: TokenParticles) -> jax.Array:
        return log_potential(parents, particles)

    def finished(particles: TokenParticles) -> jax.Array:
        return particles.finished

    def gather(particles: TokenParticles, ancestors: jax.Array) -> TokenParticles:
        return gather_token_particles(particles, ancestors, settings.num_contexts)

    return FeynmanKac(
        initial_sample, initial_log_potential, transition_sample, potential, finished, gather
    )
