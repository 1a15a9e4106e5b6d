"""Token-level SMC steering under hard constraints: genlm's llamppl (the peer) against ppl-jax.

    bash benchmarks/setup_llamppl.sh
    .venv-llamppl/bin/python benchmarks/steering_llamppl.py --peers llamppl \\
        --particles 4,16 --max-tokens 32 --seeds 0

Both peers target the same distribution: SmolLM2-135M-Instruct's continuation of a chat-templated
prompt, ending at end-of-sequence or after `--max-tokens` tokens, conditioned on a constraint on
the generated text, with a locally optimal proposal (each step weights a particle by the model's
probability of the allowed tokens and samples from the model restricted to them). Tasks:

- `lipogram`: the text never contains "e" or "E";
- `short-words`: every word (maximal run of ASCII letters) has at most 5 letters.

A constraint is a byte automaton (`ppl.models.constraints.automata`) lifted to the vocabulary
with the rules of `ppl.models.constraints.token_constraint`: special tokens other than
end-of-sequence are never allowed, end-of-sequence is allowed in accepting states. llamppl gets one
precomputed token set per automaton state and the state transition table, and tracks the state in
its model.

For each run: wall time (model loading and the one-off mask tables excluded; one untimed warm-up
run per configuration first), tokens generated, tokens/s, the log marginal likelihood estimate,
the particles' texts and normalized weights, and the fraction of them that satisfy the constraint
(checked on the decoded text by plain Python). Writes JSON (default
benchmarks/results/steering_llamppl.json) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
from llamppl import CachedCausalLM, LMContext, Model, smc_standard, smc_steer

from ppl.models.constraints.automata import (
    ByteAutomaton,
    forbidden_bytes,
    max_word_length,
    token_table,
)
from ppl.models.lm.default_model import default_model_path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "steering_llamppl.json"
HF_DIRECTORY_NAME = "SmolLM2-135M-Instruct-hf"
PEERS = ("llamppl", "ppl-jax")
METHODS = ("smc_standard", "smc_steer")
BATCH_TIMEOUT_S = 1e-3  # a step queues all its queries in one event-loop pass (run_llamppl)


# Tasks, shared by both peers.


def no_letter_e(text: str) -> bool:
    return not any(c in "eE" for c in text)


def short_words(text: str, limit: int = 5) -> bool:
    return all(len(word) <= limit for word in re.findall(r"[A-Za-z]+", text))


@dataclass(frozen=True)
class Task:
    """A constrained-generation task: the user turn, the constraint as a byte automaton, and an
    independent check of a finished text."""

    name: str
    user_message: str
    automaton: Callable[[], ByteAutomaton]
    check: Callable[[str], bool]


TASKS = {
    "lipogram": Task(
        "lipogram", "Write a sentence about the sea.", lambda: forbidden_bytes(b"eE"), no_letter_e
    ),
    "short-words": Task(
        "short-words",
        "Write a sentence about the sea.",
        lambda: max_word_length(5),
        short_words,
    ),
}


# llamppl.


@dataclass(frozen=True)
class LlampplTask:
    """A task lifted to llamppl's vocabulary: `allowed[s]` are the tokens allowed in automaton
    state s, `next_state[s, v]` the state after token v."""

    task: Task
    prompt: str
    prompt_ids: list[int]
    allowed: tuple[frozenset[int], ...]
    next_state: np.ndarray
    eos: frozenset[int]


@dataclass
class TokenCounter:
    """Tokens sampled across all particles (shared by the particles, never copied)."""

    tokens: int = 0


class ConstrainedGeneration(Model):
    """One particle: observe that the next token is allowed, then sample it (the locally optimal
    proposal: the weight gains log p(allowed), the token is drawn from p restricted to it)."""

    def __init__(
        self, lm: CachedCausalLM, spec: LlampplTask, max_tokens: int, counter: TokenCounter
    ) -> None:
        super().__init__()
        self.context = LMContext(lm, spec.prompt)
        self.spec = spec
        self.max_tokens = max_tokens
        self.counter = counter
        self.state = 0
        self.ended_by_eos = False

    def immutable_properties(self) -> set[str]:
        return {"spec", "counter", "max_tokens"}  # shared, not deep-copied on resampling

    async def step(self) -> None:
        await self.observe(self.context.mask_dist(self.spec.allowed[self.state]), True)
        token = await self.sample(self.context.next_token())
        self.counter.tokens += 1
        if token.token_id in self.spec.eos:
            self.ended_by_eos = True
            self.finish()
            return
        self.state = int(self.spec.next_state[self.state, token.token_id])
        if self.context.token_count >= self.max_tokens:
            self.finish()

    def generated_text(self) -> str:
        ids = self.context.tokens[self.context.prompt_token_count :]
        return self.context.lm.tokenizer.decode(ids, skip_special_tokens=True)


def hf_model_directory() -> Path:
    return default_model_path(download=False).parent / HF_DIRECTORY_NAME


def load_llamppl(batch_size: int = 16) -> CachedCausalLM:
    """SmolLM2-135M-Instruct (float32) on llamppl's Hugging Face backend (`AsyncTransformer`)
    with auto-batching of concurrent next-token queries."""
    directory = hf_model_directory()
    if not (directory / "config.json").is_file():
        raise SystemExit(f"{directory} is missing: run `bash benchmarks/setup_llamppl.sh` first")
    return CachedCausalLM.from_pretrained(
        str(directory),
        backend="hf",
        hf_opts={"torch_dtype": torch.float32},
        batch_size=batch_size,
        timeout=BATCH_TIMEOUT_S,
    )


@cache
def llamppl_task(lm: CachedCausalLM, name: str) -> LlampplTask:
    """Lift a task's automaton to llamppl's vocabulary, once."""
    task = TASKS[name]
    tokenizer = lm.tokenizer
    special = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    token_bytes = [b"" if i in special else bytes(b) for i, b in enumerate(lm.byte_vocab)]
    automaton = task.automaton()
    table = token_table(automaton, token_bytes)
    eos = frozenset({tokenizer.eos_token_id})
    table[:, sorted(special - eos)] = automaton.dead
    live = np.arange(automaton.accepting.size) != automaton.dead
    # ppl-jax also restricts a sequence's last token to those ending in an accepting state; every
    # live state accepts here, so that rule removes nothing and llamppl needs no special last step.
    assert automaton.accepting[live].all()
    allowed = []
    for state in range(automaton.accepting.size):
        tokens = set(np.flatnonzero(table[state] != automaton.dead).tolist()) - eos
        if state != automaton.dead and automaton.accepting[state]:
            tokens |= eos
        allowed.append(frozenset(tokens))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": task.user_message}], tokenize=False, add_generation_prompt=True
    )
    return LlampplTask(task, prompt, tokenizer.encode(prompt), tuple(allowed), table, eos)


def run_llamppl(
    lm: CachedCausalLM,
    task: str,
    num_particles: int,
    max_tokens: int,
    seed: int,
    method: str = "smc_standard",
    beams: int = 3,
) -> dict[str, Any]:
    """One llamppl SMC run: `smc_standard` (multinomial resampling when the ESS falls below half
    the particles) or `smc_steer` (without-replacement resampling of `beams` extensions each).

    The LM's caches are cleared first, so runs do not share cached next-token distributions; the
    prompt's key/value cache (`cache_kv`) is rebuilt inside the timed region."""
    spec = llamppl_task(lm, task)
    lm.clear_cache()
    lm.reset_async_queries()
    # A full batch is evaluated at once; fewer queries (finished particles, duplicate or cached
    # prefixes) wait `timeout` seconds, and all of a step's queries are queued by then.
    lm.model.batch_size = num_particles * (beams if method == "smc_steer" else 1)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (llamppl samples with numpy's global RNG)
    torch.manual_seed(seed)
    counter = TokenCounter()
    start = time.perf_counter()
    lm.cache_kv(spec.prompt_ids)
    model = ConstrainedGeneration(lm, spec, max_tokens, counter)
    if method == "smc_standard":
        particles = asyncio.run(smc_standard(model, num_particles))
    elif method == "smc_steer":
        particles = asyncio.run(smc_steer(model, num_particles, beams))
    else:
        raise ValueError(f"unknown llamppl method {method!r}")
    wall = time.perf_counter() - start

    log_weights = np.asarray([p.weight for p in particles], np.float64)
    finite = np.isfinite(log_weights)
    if finite.any():
        top = log_weights[finite].max()
        log_z = float(top + np.log(np.exp(log_weights[finite] - top).sum() / len(particles)))
        weights = np.where(finite, np.exp(log_weights - log_z) / len(particles), 0.0)
    else:
        log_z, weights = float("-inf"), np.zeros(len(particles))
    texts = [p.generated_text() for p in particles]
    satisfied = np.asarray([spec.task.check(text) for text in texts])
    return {
        "peer": "llamppl",
        "method": method,
        "task": task,
        "particles": num_particles,
        "beams": beams if method == "smc_steer" else None,
        "max_tokens": max_tokens,
        "seed": seed,
        "wall_s": wall,
        "tokens_generated": counter.tokens,
        "tokens_per_s": counter.tokens / wall,
        "final_tokens": int(sum(p.context.token_count for p in particles)),
        "log_z": log_z,
        "satisfied_fraction": float(satisfied.mean()),
        "satisfied_weighted": float(weights @ satisfied),
        "ended_by_eos_fraction": float(np.mean([p.ended_by_eos for p in particles])),
        "weights": weights.tolist(),
        "texts": texts,
    }


def llamppl_options(lm: CachedCausalLM) -> dict[str, Any]:
    return {
        "backend": lm.backend,
        "model_directory": str(hf_model_directory()),
        "dtype": str(lm.model.model.dtype),
        "device": str(lm.model.device),
        "auto_batching": "AsyncTransformer: batch_size = particles (x beams for smc_steer), "
        f"timeout = {BATCH_TIMEOUT_S} s",
        "prompt_kv_cache": "lm.cache_kv(prompt_ids) at the start of each run",
        "smc_standard": "ess_threshold=0.5, resampling_method='multinomial' (defaults)",
        "torch_threads": torch.get_num_threads(),
        "temperature": 1.0,
    }


# ppl-jax.


def load_ppl_jax() -> Any:
    """The default model in ppl-jax's runtime (the same GGUF, dequantized to float32)."""
    from ppl.models.lm.language_model import LanguageModel

    return LanguageModel.from_gguf(default_model_path())


@cache
def ppl_jax_problem(lm: Any, task: str, max_tokens: int) -> Any:
    from ppl.experiments.steering import steering_problem

    spec = TASKS[task]
    return steering_problem(lm, [spec.user_message], max_tokens, spec.automaton(), chat=True)


def run_ppl_jax(
    lm: Any, task: str, num_particles: int, max_tokens: int, seed: int
) -> dict[str, Any]:
    """One ppl-jax run of the same target: token-level SMC with the masked (locally optimal)
    proposal, multinomial resampling when the ESS falls below half, as llamppl's defaults."""
    import jax

    from ppl.experiments.steering import steer

    problem = ppl_jax_problem(lm, task, max_tokens)
    result = steer(
        jax.random.key(seed),
        lm,
        problem,
        "smc",
        num_particles,
        ess_threshold=0.5,
        resampling="multinomial",
    )
    weights = np.exp(result.log_weights)
    satisfied = np.asarray([TASKS[task].check(text) for text in result.texts], float)
    eos = set(lm.tokenizer.eos_token_ids)
    return {
        "peer": "ppl-jax",
        "method": "smc",
        "task": task,
        "particles": num_particles,
        "beams": None,
        "max_tokens": max_tokens,
        "seed": seed,
        "wall_s": result.wall_s,
        "tokens_generated": result.decoded_tokens,
        "tokens_per_s": result.decoded_tokens / result.wall_s,
        "final_tokens": int(sum(len(ids) for ids in result.token_ids)),
        "log_z": result.log_evidence,
        "satisfied_fraction": float(satisfied.mean()),
        "satisfied_weighted": float(weights @ satisfied),
        "ended_by_eos_fraction": float(
            np.mean([bool(ids) and ids[-1] in eos for ids in result.token_ids])
        ),
        "weights": weights.tolist(),
        "texts": result.texts,
    }


# Driver.


HEADER = (
    f"{'peer':<8} {'method':<13} {'task':<12} {'N':>3} {'seed':>4} {'wall s':>7} "
    f"{'tokens':>6} {'tok/s':>7} {'log Z':>8} {'sat':>5} {'eos':>5}"
)


def table_row(r: dict[str, Any]) -> str:
    return (
        f"{r['peer']:<8} {r['method']:<13} {r['task']:<12} {r['particles']:>3} "
        f"{r['seed']:>4} {r['wall_s']:>7.2f} {r['tokens_generated']:>6} "
        f"{r['tokens_per_s']:>7.1f} {r['log_z']:>8.3f} {r['satisfied_fraction']:>5.2f} "
        f"{r.get('ended_by_eos_fraction', float('nan')):>5.2f}"
    )


def speedups(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, float]]:
    """Per (task, N): mean wall time and tokens/s of each peer (llamppl's smc_standard) and the
    ratio of llamppl's time per generated token to ppl-jax's."""
    cells: dict[tuple[str, int], dict[str, float]] = {}
    for task in sorted({r["task"] for r in rows}):
        for n in sorted({r["particles"] for r in rows}):
            per_peer = {}
            for peer, method in (("llamppl", "smc_standard"), ("ppl-jax", "smc")):
                runs = [
                    r
                    for r in rows
                    if (r["peer"], r["method"], r["task"], r["particles"])
                    == (peer, method, task, n)
                ]
                if runs:
                    tokens = sum(r["tokens_generated"] for r in runs)
                    per_peer[peer] = tokens / sum(r["wall_s"] for r in runs)
                    per_peer[f"{peer}_wall_s"] = float(np.mean([r["wall_s"] for r in runs]))
            if "llamppl" in per_peer and "ppl-jax" in per_peer:
                per_peer["speedup"] = per_peer["ppl-jax"] / per_peer["llamppl"]
                cells[(task, n)] = per_peer
    return cells


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Tokens per second of both peers against the particle count, one panel per task."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = speedups(rows)
    tasks = sorted({task for task, _ in cells})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        ns = sorted(n for t, n in cells if t == task)
        for peer in ("ppl-jax", "llamppl"):
            ax.plot(ns, [cells[(task, n)][peer] for n in ns], "o-", label=peer)
        for n in ns:
            ax.annotate(
                f"{cells[(task, n)]['speedup']:.1f}x",
                (n, cells[(task, n)]["ppl-jax"]),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=8,
            )
        ax.set(xscale="log", yscale="log", xlabel="particles", title=task)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0][0].set_ylabel("generated tokens / s")
    axes[0][0].legend()
    fig.suptitle("Token-level SMC on SmolLM2-135M, 2 CPU cores", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def comma_list(kind: type) -> Callable[[str], list[Any]]:
    return lambda text: [kind(item) for item in text.split(",") if item]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers", type=comma_list(str), default=list(PEERS))
    parser.add_argument("--task", choices=[*TASKS, "all"], default="all")
    parser.add_argument("--particles", type=comma_list(int), default=[4, 16])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--seeds", type=comma_list(int), default=[0])
    parser.add_argument(
        "--llamppl-methods", type=comma_list(str), default=["smc_standard"], help=str(METHODS)
    )
    parser.add_argument("--beams", type=int, default=3, help="extensions per particle, smc_steer")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    parser.add_argument("--output", type=Path, default=OUT)
    parser.add_argument(
        "--replot", action="store_true", help="summarize and plot --output, run nothing"
    )
    args = parser.parse_args()
    if args.replot:
        report(json.loads(args.output.read_text()), args.output)
        return
    unknown = set(args.peers) - set(PEERS) or set(args.llamppl_methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown peers or methods: {sorted(unknown)}")
    tasks = list(TASKS) if args.task == "all" else [args.task]

    models: dict[str, Any] = {}
    config: dict[str, Any] = {
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to float32)",
        "max_tokens": args.max_tokens,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "versions": {
            name: version(name)
            for name in ("torch", "transformers", "llamppl", "genlm-backend", "ppl-jax")
        },
    }
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if "llamppl" in args.peers:
        start = time.perf_counter()
        models["llamppl"] = load_llamppl(batch_size=max(args.particles))
        config["llamppl"] = llamppl_options(models["llamppl"]) | {
            "load_s": time.perf_counter() - start
        }
        for task in tasks:
            llamppl_task(models["llamppl"], task)
    if "ppl-jax" in args.peers:
        models["ppl-jax"] = load_ppl_jax()

    jobs = [("llamppl", method) for method in args.llamppl_methods if "llamppl" in args.peers]
    jobs += [("ppl-jax", "smc")] if "ppl-jax" in args.peers else []

    def run(peer: str, method: str, task: str, num_particles: int, seed: int) -> dict:
        if peer == "llamppl":
            return run_llamppl(
                models[peer], task, num_particles, args.max_tokens, seed, method, args.beams
            )
        return run_ppl_jax(models[peer], task, num_particles, args.max_tokens, seed)

    rows: list[dict[str, Any]] = []
    print(HEADER)
    for task in tasks:
        for num_particles in args.particles:
            for peer, method in jobs:
                run(peer, method, task, num_particles, 10_000 + max(args.seeds))  # warm-up
                for seed in args.seeds:
                    load = os.getloadavg()[0]  # other processes on the machine skew timings
                    rows.append(run(peer, method, task, num_particles, seed) | {"loadavg_1m": load})
                    print(table_row(rows[-1]))

    args.output.parent.mkdir(parents=True, exist_ok=True)
    report({"config": config, "runs": rows}, args.output)


def report(results: dict[str, Any], output: Path) -> None:
    """Add the per-cell speed-ups to `results`, write it to `output`, print and plot them."""
    cells = speedups(results["runs"])
    results["summary"] = [{"task": t, "particles": n, **v} for (t, n), v in cells.items()]
    for cell in results["summary"]:
        print(
            f"{cell['task']:<12} N={cell['particles']:<3} ppl-jax {cell['ppl-jax']:7.1f} tok/s, "
            f"llamppl {cell['llamppl']:6.1f} tok/s: {cell['speedup']:.1f}x"
        )
    output.write_text(json.dumps(results, indent=2))
    print(f"wrote {output}")
    if cells:
        plot(results["runs"], output.with_suffix(".png"))
        print(f"figure: {output.with_suffix('.png')}")


if __name__ == "__main__":
    main()
