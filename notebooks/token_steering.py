# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Token-level steering with sequential Monte Carlo
#
# Constrained generation as posterior inference, in the style of the examples of Lew et al.
# (2023), "Sequential Monte Carlo Steering of Large Language Models using Probabilistic
# Programs" (LLaMPPL): the default model (SmolLM2-135M-Instruct) is steered to write only short
# words, to avoid the letter "e", to answer in a JSON schema, and to continue two prompts at
# once.
#
# Set `PPL_NOTEBOOK_TINY=1` to run everything on a tiny random byte-level model with 4
# particles and a few tokens, in well under a minute (the tests do); its texts are noise.
#
# ## The model
# Decoding is a Feynman-Kac model with one token per step. The target over complete
# generations x is
#
#     π(x) ∝ Π_k p(x | prompt_k) · 1[x satisfies the constraint] · φ(x),
#
# with no critic here (φ = 1) and one prompt in all but the intersection section, so that
# Z = P(the model's output satisfies the constraint). The constraint is an automaton over
# bytes lifted to the vocabulary: a particle keeps its automaton state s, and the mask m_s(v)
# allows exactly the tokens that keep the text completable (end-of-sequence only in accepting
# states). Each particle draws its next token from the locally optimal proposal
#
#     q(v | x_<t) ∝ p(v | x_<t) m(v),   with weight   G_t = Σ_v p(v | x_<t) m(v),
#
# the probability mass that survives the mask. SMC resamples the particles when the effective
# sample size (ESS) of the weights drops below N/2, and Ẑ = Π_t (weighted mean of G_t) is an
# unbiased estimate of Z.

# %%
import os
import sys

import matplotlib

if "ipykernel" not in sys.modules and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")  # no display and no notebook front end: render off screen
import jax
import matplotlib.pyplot as plt
import numpy as np

from ppl.experiments.steering import SteeringResult, steer, steering_problem
from ppl.models.lm import LanguageModel
from ppl.models.lm.tiny import tiny_language_model
from ppl.models.steering.tasks import get_task

TINY = os.environ.get("PPL_NOTEBOOK_TINY") == "1"
NUM_PARTICLES = 4 if TINY else 16
# the random byte-level model spends a token per byte: JSON needs ~60 tokens there
TINY_MAX_TOKENS = {"json": 96}

lm = tiny_language_model(jax.random.key(0)) if TINY else LanguageModel.load()
print(lm.name)


def problem_for(name: str):
    """The task's problem; the tiny model gets fewer tokens and raw (non-chat) prompts."""
    task = get_task(name)
    max_tokens = TINY_MAX_TOKENS.get(name, 8) if TINY else task.max_tokens
    chat = task.chat and not TINY
    return steering_problem(lm, task.prompts, max_tokens, task.make_constraint(), chat=chat)


def grouped(texts, log_weights, satisfied=None):
    """Identical texts merged, heaviest first: (weight, count, satisfied, text)."""
    satisfied = np.ones(len(texts), bool) if satisfied is None else satisfied
    groups: dict[str, list] = {}
    for text, weight, ok in zip(texts, np.exp(log_weights), satisfied, strict=True):
        group = groups.setdefault(text, [0.0, 0, bool(ok), text])
        group[0] += weight
        group[1] += 1
    return sorted(groups.values(), key=lambda g: -g[0])


def show_final(result: SteeringResult, top: int = 6) -> None:
    """The final particles by weight, and the log Z estimate."""
    groups = grouped(result.texts, result.log_weights, result.satisfied)
    for weight, count, ok, text in groups[:top]:
        print(f"{weight:7.4f}  x{count:<3}{'ok' if ok else 'NO'}  {text!r}")
    if len(groups) > top:
        print(f"   ... and {len(groups) - top} more distinct texts")
    print(f"log Z estimate: {result.log_evidence:.3f}   (wall {result.wall_s:.1f} s)")


def lineages(result: SteeringResult) -> int:
    """How many particles at t = 0 have descendants among the final particles."""
    index = np.arange(result.history_ancestors.shape[1])
    for ancestors in result.history_ancestors[:0:-1]:
        index = ancestors[index]
    return len(set(index.tolist()))


def show_history(result: SteeringResult, num_steps: int = 4, top: int = 3) -> None:
    """The particles at a few steps: the heaviest distinct prefixes and their weights."""
    last = len(result.ess) - 1
    print("steps that resampled:", np.flatnonzero(result.resampled).tolist())
    print(f"surviving lineages: {lineages(result)} of {len(result.texts)}")
    for step in sorted(set(np.linspace(1, last, num_steps).astype(int).tolist())):
        texts = result.history_texts(lm.tokenizer, step)
        groups = grouped(texts, result.history_log_weights[step])
        flag = ", resampled" if result.resampled[step] else ""
        print(f"step {step} (ESS {result.ess[step]:.1f}{flag}, {len(groups)} distinct):")
        for weight, count, _, text in groups[:top]:
            print(f"    {weight:.3f} x{count:<3}{text!r}")


runs: dict[str, SteeringResult] = {}

# %% [markdown]
# ## Short words
# Every word has at most five letters: the automaton counts the letters of the current word
# (states 0..5 and a dead state). It reads every byte of a token, so the mask forbids any
# token that would push a word past five letters, also when the word spans several tokens.

# %%
problem = problem_for("short-words")
runs["short-words"] = steer(jax.random.key(0), lm, problem, "smc", NUM_PARTICLES, keep_history=True)
show_final(runs["short-words"])

# %% [markdown]
# Particles over time: at each step the heaviest distinct prefixes and their total weight.
# After a resampling step the population concentrates on the prefixes whose masks kept most
# of the model's probability, and the number of lineages reaching the end shrinks.

# %%
show_history(runs["short-words"])

# %% [markdown]
# ## A lipogram: no letter "e"
# A two-state automaton (alive, dead). Most of the model's continuations contain an "e", so
# direct sampling almost never succeeds; the weight of a step is the probability the model
# gives to the e-free tokens, and log Z estimates log P(no "e" in the whole answer).

# %%
problem = problem_for("lipogram")
runs["lipogram"] = steer(jax.random.key(0), lm, problem, "smc", NUM_PARTICLES, keep_history=True)
show_final(runs["lipogram"])
show_history(runs["lipogram"])

# %% [markdown]
# ## A JSON schema
# The schema {name: string ≤ 16 characters, age: integer, city: string ≤ 16 characters} is a
# regular language (`ppl.models.constraints.json_schema.schema_regex`), compiled to a byte
# automaton and lifted to the vocabulary like the others; every particle is a valid document. The
# mask also looks ahead to the token limit (a token is allowed only if the object can still be
# closed in the tokens left), so no particle is spent on a document it cannot finish.

# %%
problem = problem_for("json")
runs["json"] = steer(jax.random.key(0), lm, problem, "smc", NUM_PARTICLES, keep_history=True)
show_final(runs["json"], top=4)
show_history(runs["json"], top=2)

# %% [markdown]
# ## Prompt intersection
# Two prompts, one continuation: the target is the product Π_k p(x | prompt_k) of the model
# under both prompts (a product of experts), with no constraint. The proposal draws from the
# normalized product of the next-token distributions and the weight is
# log Σ_v Π_k p_k(v | x_<t), so Z is the probability that two independent continuations of
# the two prompts agree, token for token.

# %%
problem = problem_for("intersection")
runs["intersection"] = steer(
    jax.random.key(0), lm, problem, "smc", NUM_PARTICLES, keep_history=True
)
show_final(runs["intersection"])
show_history(runs["intersection"], num_steps=3)

# %% [markdown]
# ## Effective sample size over time
# The ESS after each step's reweighting; dots mark the steps that resampled (the ESS had
# fallen below N/2 before them). Once every particle has finished, the weights stop moving.

# %%
fig, axes = plt.subplots(1, len(runs), figsize=(3.2 * len(runs), 2.8), sharey=True)
for ax, (name, result) in zip(axes, runs.items(), strict=True):
    steps = np.arange(len(result.ess))
    ax.plot(steps, result.ess, lw=1.5)
    ax.plot(steps[result.resampled], result.ess[result.resampled], "o", ms=4, label="resampled")
    ax.axhline(NUM_PARTICLES / 2, color="grey", lw=0.8, ls="--")
    ax.set_title(name)
    ax.set_xlabel("token step")
    ax.set_ylim(0, NUM_PARTICLES * 1.05)
axes[0].set_ylabel("ESS")
axes[0].legend(loc="lower left", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Direct sampling, masked decoding and SMC
# On the lipogram, with N sequences each:
#
# - **rejection**: sample from the model and keep what satisfies the constraint (weight 1,
#   else 0); the satisfying fraction is itself an estimate of Z;
# - **masked**: the locally optimal proposal with its weights ignored, as grammar-constrained
#   decoders do; it always satisfies the constraint but samples from the locally renormalized
#   distribution Π_t q(x_t | x_<t), not from π: it is biased towards prefixes that leave few
#   good continuations;
# - **smc**: the same proposal, weighted and resampled; it targets π.
#
# `E log p` is the mean log-likelihood log p(x | prompt) of the satisfying sequences, under
# each method's weights (uniform for rejection and masked).

# %%
problem = problem_for("lipogram")
compared = {
    method: steer(jax.random.key(0), lm, problem, method, NUM_PARTICLES)
    for method in ("rejection", "masked")
}
compared["smc"] = runs["lipogram"]
print(f"{'method':<10}{'satisfied':>10}{'E log p':>10}{'log Z':>9}  returned")
for method, result in compared.items():
    weights = np.exp(result.log_weights) * result.satisfied
    mean_log_p = np.sum(weights * result.log_likelihood) / weights.sum() if weights.any() else None
    chosen = result.select(jax.random.key(1))
    print(
        f"{method:<10}{result.satisfied.mean():>10.2f}"
        f"{'-' if mean_log_p is None else f'{mean_log_p:.2f}':>10}"
        f"{'-' if np.isnan(result.log_evidence) else f'{result.log_evidence:.2f}':>9}"
        f"  {'ok' if result.satisfied[chosen] else 'NO'} {result.texts[chosen]!r}"
    )
