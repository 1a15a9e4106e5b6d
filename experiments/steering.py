"""Token-level steering of a language model: samplers and baselines on one constrained target.

A `SteeringProblem` fixes the target π(x) ∝ Π_k p(x | prompt_k) · 1[constraint] · φ(x) (see
`ppl.models.steering.token_model`). `steer` runs one method on it in one compiled loop and returns
weighted complete sequences, the log evidence estimate and per-step diagnostics:

    smc          SMC with the locally optimal (masked) proposal, ESS-triggered resampling
    is           importance sampling: the same proposal and weights, never resampled
    steer        SMC steer (Lew et al. 2023): K children per particle, N kept without
                 replacement
    twisted      SMC whose resampling is guided by a learned twist (`TwistHead`)
    csmc         conditional SMC around a reference sequence (the evidence upper bound)
    rejection    direct sampling from the model; returns a sequence that satisfies the
                 constraint (weight 0 or 1), or, if no sample does, an unsatisfying one
                 (`SteeringResult.satisfied` says which)
    best_of_n    direct sampling; returns the satisfying sample of highest model likelihood
    masked       locally constrained decoding: masked proposal, weights ignored (the usual
                 "structured generation" of grammar-constrained decoders; biased)

Each method is a `SteeringMethod` (which loop, which proposal, whether it resamples, how it
picks the returned sequence) registered in `STEERING_METHODS`; `ppl steer --method` offers the
registered names.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ppl.models.constraints.automata import ByteAutomaton
from ppl.models.constraints.critic import HostCritic
from ppl.models.constraints.llguidance_mask import GrammarMask, HostMask
from ppl.models.constraints.sequence_potential import SequencePotential
from ppl.models.constraints.token_constraint import TokenConstraint, lift, unconstrained
from ppl.models.lm.cache import KVCache
from ppl.models.lm.config import DecoderConfig
from ppl.models.lm.decoding import NO_TOKEN
from ppl.models.lm.language_model import LanguageModel
from ppl.models.lm.params import Params
from ppl.models.lm.tokenizer import Tokenizer
from ppl.models.steering.token_model import TokenSettings, start_particles, token_feynman_kac
from ppl.models.steering.twist import TwistHead, fit_twist, rollouts
from ppl.registry import Registry
from ppl.samplers import pinned_conditional_smc, smc, smc_steer
from ppl.samplers.weighting import check_num_particles

SAMPLERS = ("smc", "steer", "csmc")
SELECTIONS = ("weight", "likelihood", "satisfied", "uniform")


@dataclasses.dataclass(frozen=True)
class SteeringMethod:
    """How `steer` runs a method and picks its returned sequence.

    `sampler`: the compiled loop, "smc" (SMC, or importance sampling when it never resamples),
    "steer" (SMC steer) or "csmc" (conditional SMC around a reference); `proposal`: "masked"
    (locally optimal) or "model" (direct sampling); `resamples`: False sets the ESS threshold
    to 0; `twisted`: the run uses a twist; `uniform_weights`: the weights are ignored (uniform,
    no log Z). `selection` is `SteeringResult.select`'s rule: "weight" (draw by weight),
    "likelihood" (the satisfying sequence of highest likelihood), "satisfied" (a uniform
    satisfying one) or "uniform"."""

    sampler: str = "smc"
    proposal: str = "masked"
    resamples: bool = True
    twisted: bool = False
    uniform_weights: bool = False
    selection: str = "weight"

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")

    @property
    def needs_reference(self) -> bool:
        return self.sampler == "csmc"

    @property
    def keeps_history(self) -> bool:
        """Whether the loop can return every step's particles (`keep_history`)."""
        return self.sampler == "smc"


STEERING_METHODS: Registry[SteeringMethod] = Registry("method")
STEERING_METHODS.register("smc", "SMC with the masked proposal, ESS-triggered resampling")(
    SteeringMethod()
)
STEERING_METHODS.register("is", "importance sampling: the masked proposal, never resampled")(
    SteeringMethod(resamples=False)
)
STEERING_METHODS.register("steer", "SMC steer: K children per particle, N kept")(
    SteeringMethod(sampler="steer")
)
STEERING_METHODS.register("twisted", "SMC whose resampling is guided by a learned twist")(
    SteeringMethod(twisted=True)
)
STEERING_METHODS.register("csmc", "conditional SMC around a reference sequence")(
    SteeringMethod(sampler="csmc")
)
STEERING_METHODS.register("rejection", "direct sampling; a satisfying sample if any")(
    SteeringMethod(proposal="model", resamples=False, selection="satisfied")
)
STEERING_METHODS.register("best_of_n", "direct sampling; the likeliest satisfying sample")(
    SteeringMethod(proposal="model", resamples=False, selection="likelihood")
)
STEERING_METHODS.register("masked", "locally constrained decoding, weights ignored (biased)")(
    SteeringMethod(resamples=False, uniform_weights=True, selection="uniform")
)


@dataclasses.dataclass(frozen=True, eq=False)
class SteeringProblem:
    """The prompts (token ids), the constraint (a token automaton, an llguidance grammar, or
    both: their intersection) and critic, and the token limit."""

    prompt_ids: tuple[tuple[int, ...], ...]
    constraint: TokenConstraint
    max_tokens: int
    automaton: ByteAutomaton | None = None
    critic: HostCritic | None = None
    grammar: HostMask | None = None  # one per problem: the compiled loops key on it

    def settings(self, proposal: str) -> TokenSettings:
        """The token model's static settings for this problem."""
        return TokenSettings(self.max_tokens, self.num_contexts, proposal, self.grammar)

    @property
    def num_contexts(self) -> int:
        return len(self.prompt_ids)

    def satisfied(self, data: bytes) -> bool:
        """Whether a complete generation's bytes satisfy the constraint and the critic."""
        if self.automaton is not None and self.automaton.complete(data) == -np.inf:
            return False
        text = data.decode("utf-8", errors="replace")
        if self.grammar is not None and not self.grammar.grammar.accepts_text([text])[0]:
            return False
        return self.critic is None or self.critic.potential.complete(data) > -np.inf


def steering_problem(
    lm: LanguageModel,
    prompts: Sequence[str],
    max_tokens: int,
    constraint: ByteAutomaton | None = None,
    critic: SequencePotential | None = None,
    chat: bool = True,
    grammar: GrammarMask | None = None,
) -> SteeringProblem:
    """A problem on `lm`: several prompts make their product the target (intersection);
    `constraint` and `grammar` (built for `lm.tokenizer`) both hold where both are given."""
    if grammar is not None and grammar.tokenizer is not lm.tokenizer:
        raise ValueError("the grammar mask was built for another tokenizer than the model's")
    prompt_ids = lm.encode_prompts(list(prompts), chat=chat)
    lm.cache_capacity(max(map(len, prompt_ids)), max_tokens)  # fail early if too long
    token_bytes = lm.tokenizer.token_bytes()
    eos = lm.tokenizer.eos_token_ids
    if constraint is None:
        table = unconstrained(lm.config.vocab_size, eos)
    else:
        table = lift(constraint, token_bytes, eos)
    return SteeringProblem(
        tuple(tuple(p) for p in prompt_ids),
        table,
        max_tokens,
        constraint,
        HostCritic.of(critic, token_bytes) if critic is not None else None,
        HostMask(grammar) if grammar is not None else None,
    )


@dataclasses.dataclass
class SteeringResult:
    """Weighted complete sequences from one run, with the run's diagnostics."""

    method: str
    texts: list[str]
    token_ids: list[list[int]]
    log_weights: np.ndarray  # [N] normalized
    log_evidence: float  # log Z_hat (nan for methods without one)
    log_likelihood: np.ndarray  # [N] Σ_k log p(x | prompt_k)
    satisfied: np.ndarray  # [N] bool
    ess: np.ndarray  # [T] effective sample size per step
    resampled: np.ndarray  # [T] bool
    decoded_tokens: int  # language-model forward rows spent (tokens x contexts)
    wall_s: float  # the compiled loop's run time (with compilation on a first call)
    history_tokens: np.ndarray | None = None  # [T, N, M] every step's particles (smc, is)
    history_log_weights: np.ndarray | None = None  # [T, N]
    history_ancestors: np.ndarray | None = None  # [T, N] parent at t - 1 of each particle

    def history_texts(self, tokenizer: Tokenizer, step: int) -> list[str]:
        """The particles' texts at time `step` (needs `keep_history=True`)."""
        if self.history_tokens is None:
            raise ValueError("this run kept no history; call steer(..., keep_history=True)")
        rows = self.history_tokens[step]
        return [
            tokenizer.decode([t for t in row if t >= 0], skip_special_tokens=True) for row in rows
        ]

    def select(self, rng_key: jax.Array) -> int:
        """The index of the returned sequence under the method's own selection rule."""
        n = len(self.texts)
        selection = STEERING_METHODS.get(self.method).selection
        if selection == "weight":
            return int(jax.random.categorical(rng_key, jnp.asarray(self.log_weights)))
        ok = np.flatnonzero(self.satisfied)
        if selection == "likelihood":
            return int(ok[np.argmax(self.log_likelihood[ok])]) if ok.size else 0
        if selection == "satisfied":
            return int(ok[jax.random.randint(rng_key, (), 0, ok.size)]) if ok.size else 0
        return int(jax.random.randint(rng_key, (), 0, n))


class _RunOutput(eqx.Module):
    tokens: jax.Array
    num_tokens: jax.Array
    log_weights: jax.Array
    log_evidence: jax.Array
    log_likelihood: jax.Array
    ess: jax.Array
    resampled: jax.Array
    decoded: jax.Array
    history_tokens: jax.Array | None
    history_log_weights: jax.Array | None
    history_ancestors: jax.Array | None


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """The static settings of one compiled steering loop (it compiles once per value)."""

    sampler: str  # "smc", "steer" or "csmc" (`SteeringMethod.sampler`)
    num_particles: int
    ess_threshold: float
    resampling: str
    num_beams: int  # children per particle of SMC steer
    keep_history: bool


class LoopInputs(eqx.Module):
    """What one compiled steering loop reads, passed whole to `_run`: the model, the prefilled
    prompts, the factors of the target (constraint table, twist, critic, reference) and the
    settings."""

    params: Params
    config: DecoderConfig
    cache: KVCache
    logits: jax.Array
    constraint: TokenConstraint
    twist: TwistHead | None
    critic: HostCritic | None
    reference: jax.Array | None
    settings: TokenSettings
    loop: LoopSettings


@eqx.filter_jit
def _run(rng_key: jax.Array, inputs: LoopInputs) -> _RunOutput:
    params, config, cache, logits = inputs.params, inputs.config, inputs.cache, inputs.logits
    constraint, twist, critic, reference = (
        inputs.constraint,
        inputs.twist,
        inputs.critic,
        inputs.reference,
    )
    settings, loop = inputs.settings, inputs.loop
    sampler, num_particles, num_beams = loop.sampler, loop.num_particles, loop.num_beams
    ess_threshold, resampling, keep_history = loop.ess_threshold, loop.resampling, loop.keep_history
    initial = start_particles(cache, logits, num_particles, settings, config.hidden_size)
    model = token_feynman_kac(
        params, config, initial, constraint, settings, twist, critic, reference
    )
    num_steps = settings.max_tokens + 1
    history: tuple[jax.Array | None, ...] = (None, None, None)
    if sampler == "steer":
        steered = smc_steer.run(rng_key, model, num_particles, num_steps, num_beams)
        state, ess = steered.state, steered.info.ess
        resampled = jnp.ones(ess.shape, bool)
    elif sampler == "csmc":
        result = pinned_conditional_smc.run(rng_key, model, num_particles, num_steps)
        state, ess, resampled = result.state, result.info.ess, result.info.resampled
    else:
        result = smc.run(
            rng_key,
            model,
            num_particles,
            num_steps,
            resampling,
            ess_threshold,
            keep_history=False,
            record=(lambda particles: particles.tokens) if keep_history else None,
        )
        state, ess, resampled = result.state, result.info.ess, result.info.resampled
        if keep_history:
            history = (result.particles, result.log_weights, result.info.ancestors)
    final = state.particles
    return _RunOutput(
        final.tokens,
        final.num_tokens,
        state.log_weights,
        state.log_evidence,
        final.log_p,
        ess,
        resampled,
        jnp.sum(final.decoded) * settings.num_contexts,
        *history,
    )


def steer(
    rng_key: jax.Array,
    lm: LanguageModel,
    problem: SteeringProblem,
    method: str = "smc",
    num_particles: int = 16,
    *,
    ess_threshold: float = 0.5,
    resampling: str = "systematic",
    num_beams: int = 3,
    twist: TwistHead | None = None,
    reference: Sequence[int] | None = None,
    keep_history: bool = False,
) -> SteeringResult:
    """Run `method` (see the module doc) with `num_particles` particles on `problem`.

    `keep_history` (smc, is, twisted, and the baselines) also returns every step's
    particles, weights and ancestors (`SteeringResult.history_*`).

    The loop compiles once per model, constraint shape, method, particle count and setting;
    `wall_s` of that first call includes the compilation, so time a second call. A run whose
    particles all die (log Z_hat = -inf) returns uniform weights over meaningless texts;
    `satisfied` is False for them.
    """
    num_particles = check_num_particles(num_particles)
    spec = STEERING_METHODS.get(method)
    if keep_history and not spec.keeps_history:
        raise ValueError(f"keep_history is not available for method {method!r}")
    if spec.twisted and twist is None:
        raise ValueError(
            f"method {method!r} needs a twist (fit one with ppl.models.steering.twist)"
        )
    if spec.needs_reference and reference is None:
        raise ValueError(f"method {method!r} needs a reference sequence (token ids)")
    reference_array = None
    if reference is not None:
        reference_array = _reference_tokens(reference, problem.max_tokens)
    logits, cache = _prefill(lm, problem)
    inputs = LoopInputs(
        params=lm.params,
        config=lm.config,
        cache=cache,
        logits=logits,
        constraint=problem.constraint,
        twist=twist if spec.twisted else None,
        critic=problem.critic,
        reference=reference_array,
        settings=problem.settings(spec.proposal),
        loop=LoopSettings(
            sampler=spec.sampler,
            num_particles=num_particles,
            ess_threshold=ess_threshold if spec.resamples else 0.0,
            resampling=resampling,
            num_beams=num_beams,
            keep_history=keep_history,
        ),
    )
    start = time.perf_counter()
    out = _run(rng_key, inputs)
    out = jax.block_until_ready(out)
    wall = time.perf_counter() - start
    tokens, counts = np.asarray(out.tokens), np.asarray(out.num_tokens)
    ids = [tokens[b, : counts[b]].tolist() for b in range(num_particles)]
    token_bytes = lm.tokenizer.token_bytes()
    texts = [lm.tokenizer.decode(row, skip_special_tokens=True) for row in ids]
    satisfied = np.asarray([problem.satisfied(b"".join(token_bytes[t] for t in r)) for r in ids])
    log_weights = np.asarray(out.log_weights)
    if spec.uniform_weights:
        log_weights = np.full(num_particles, -np.log(num_particles))
    return SteeringResult(
        method=method,
        texts=texts,
        token_ids=ids,
        log_weights=log_weights,
        log_evidence=float("nan") if spec.uniform_weights else float(out.log_evidence),
        log_likelihood=np.asarray(out.log_likelihood),
        satisfied=satisfied,
        ess=np.asarray(out.ess),
        resampled=np.asarray(out.resampled),
        decoded_tokens=int(out.decoded),
        wall_s=wall,
        history_tokens=_numpy(out.history_tokens),
        history_log_weights=_numpy(out.history_log_weights),
        history_ancestors=_numpy(out.history_ancestors),
    )


def _numpy(x: jax.Array | None) -> np.ndarray | None:
    return None if x is None else np.asarray(x)


def _prefill(lm: LanguageModel, problem: SteeringProblem) -> tuple[jax.Array, KVCache]:
    """The prompts' next-token logits and a cache with room for `max_tokens` more."""
    capacity = lm.cache_capacity(max(map(len, problem.prompt_ids)), problem.max_tokens)
    return lm.prefill([list(p) for p in problem.prompt_ids], capacity)


def _reference_tokens(reference: Sequence[int], max_tokens: int) -> jax.Array:
    if len(reference) > max_tokens:
        raise ValueError(f"the reference has {len(reference)} tokens, more than {max_tokens}")
    padded = np.full(max_tokens, NO_TOKEN, np.int32)
    padded[: len(reference)] = reference
    return jnp.asarray(padded)


def train_twist(
    rng_key: jax.Array,
    lm: LanguageModel,
    problem: SteeringProblem,
    num_rollouts: int = 64,
    steps: int = 500,
) -> TwistHead:
    """Fit a `TwistHead` for `problem` on `num_rollouts` draws of its masked proposal."""
    key_rollouts, key_fit = jax.random.split(rng_key)
    settings = problem.settings("masked")
    logits, cache = _prefill(lm, problem)
    initial = start_particles(cache, logits, num_rollouts, settings, lm.config.hidden_size)
    data = rollouts(key_rollouts, lm.params, lm.config, initial, problem.constraint, settings)
    return fit_twist(key_fit, data, steps=steps)
