"""Steering sweeps: every method at every particle count and seed on one task, to JSONL.

One line per (method, particles, seed) with the constraint-satisfaction of the returned
sequence, its log-likelihood under the model (Σ over prompts), the run's log Z estimate, the
wall time and the decoded tokens. Lines already in the file are skipped, so a sweep resumes
after a crash. `twisted` trains its twist once per task on rollouts of the masked proposal
(the training time is recorded on each of its lines).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from ppl.experiments.plots import first_of_each
from ppl.experiments.steering import STEERING_METHODS, steer, steering_problem, train_twist
from ppl.experiments.sweep import append_new, check_out_path, read_results
from ppl.experiments.sweep_key import config_key, model_identity
from ppl.models.lm.language_model import LanguageModel
from ppl.models.steering.tasks import SteeringTask
from ppl.models.steering.twist import TwistHead


def sweep_methods() -> tuple[str, ...]:
    """The registered steering methods a sweep can run: those that need no reference."""
    return tuple(m for m in STEERING_METHODS if not STEERING_METHODS[m].needs_reference)


def _key(record: dict[str, Any]) -> tuple[str | None, str, int, int]:
    return record.get("config_key"), record["method"], record["particles"], record["seed"]


def _constraint_hash(task: SteeringTask) -> str | None:
    """sha256 of the task's constraint automaton (transitions, accepting states, dead state)."""
    automaton = task.make_constraint()
    if automaton is None:
        return None
    digest = hashlib.sha256(str(automaton.dead).encode())
    for array in (automaton.transitions, automaton.accepting):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _config(lm: LanguageModel, task: SteeringTask, twist_rollouts: int) -> dict[str, Any]:
    """Every setting that changes a line's result but its method, particles and seed."""
    return {
        "task": task.name,
        "prompts": list(task.prompts),
        "max_tokens": task.max_tokens,
        "chat": task.chat,
        "constraint": _constraint_hash(task),
        "model": model_identity(lm),
        "twist_rollouts": twist_rollouts,
    }


STEERING_FIELDS = ("task", "method", "particles", "seed")  # what a line must hold


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The complete lines of a sweep file (none if it does not exist yet)."""
    return read_results(path, STEERING_FIELDS) if Path(path).exists() else []


def run_steering_sweep(
    lm: LanguageModel,
    task: SteeringTask,
    methods: Sequence[str],
    particles: Sequence[int],
    seeds: Sequence[int],
    out: str | Path,
    twist_rollouts: int = 64,
    progress: bool = True,
) -> Path:
    """Run every (method, particles, seed) not yet in `out` and append its line."""
    choices = sweep_methods()
    unknown = [m for m in methods if m not in choices]
    if unknown:
        raise ValueError(f"unknown sweep methods {unknown}; choose from {', '.join(choices)}")
    out = check_out_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = _config(lm, task, twist_rollouts)
    key = config_key(config)
    done = {_key(r) for r in read_records(out)}
    problem = steering_problem(
        lm, task.prompts, task.max_tokens, task.make_constraint(), chat=task.chat
    )
    todo = [
        (m, n, s) for m in methods for n in particles for s in seeds if (key, m, n, s) not in done
    ]
    twist: TwistHead | None = None
    twist_seconds = 0.0
    compiled: set[tuple[str, int]] = set()
    for method, num_particles, seed in tqdm(todo, disable=not progress, desc=task.name):
        if method == "twisted" and twist is None:
            start = time.perf_counter()
            twist = train_twist(jax.random.key(10_000), lm, problem, twist_rollouts)
            twist_seconds = time.perf_counter() - start
        key_run, key_pick = jax.random.split(jax.random.key(seed))
        if (method, num_particles) not in compiled:  # time runs, not compilation
            steer(key_run, lm, problem, method, num_particles, twist=twist)
            compiled.add((method, num_particles))
        result = steer(key_run, lm, problem, method, num_particles, twist=twist)
        chosen = result.select(key_pick)
        record = {
            "task": task.name,
            "config_key": key,
            "model": lm.name,
            "method": method,
            "particles": num_particles,
            "seed": seed,
            "satisfied": bool(result.satisfied[chosen]),
            "log_likelihood": float(result.log_likelihood[chosen]),
            "log_evidence": _number(result.log_evidence),
            "wall_s": result.wall_s,
            "decoded_tokens": result.decoded_tokens,
            "min_ess": float(np.min(result.ess)),
            "text": result.texts[chosen],
            "twist_training_s": twist_seconds if method == "twisted" else 0.0,
        }
        append_new(out, [record], _key, STEERING_FIELDS)
    return out


def _number(value: float) -> float | str | None:
    """JSON has no inf or NaN: a log Z of ±inf is stored as the string "-inf" / "inf"; NaN,
    a method without an estimate, as null."""
    if math.isnan(value):
        return None
    return value if math.isfinite(value) else str(value)


def summary(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (task, model, method, particles): satisfaction rate, mean log-likelihood of satisfying
    outputs, mean log Z, mean wall time and tokens per second."""
    groups: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    for r in first_of_each(records, _key):
        cell = (r["task"], r.get("model", ""), r["method"], r["particles"])
        groups.setdefault(cell, []).append(r)
    rows = []
    for (task, model, method, n), group in sorted(groups.items()):
        ok = [r for r in group if r["satisfied"]]
        # every estimate counts: one run with log Z = -inf makes the mean -inf
        log_z = [float(r["log_evidence"]) for r in group if r["log_evidence"] is not None]
        wall = float(np.mean([r["wall_s"] for r in group]))
        tokens = float(np.mean([r["decoded_tokens"] for r in group]))
        rows.append(
            {
                "task": task,
                "model": model,
                "method": method,
                "particles": n,
                "runs": len(group),
                "satisfied": len(ok) / len(group),
                "log_likelihood": float(np.mean([r["log_likelihood"] for r in ok])) if ok else None,
                "log_evidence": float(np.mean(log_z)) if log_z else None,
                "log_evidence_not_finite": sum(not math.isfinite(z) for z in log_z),
                "wall_s": wall,
                "tokens_per_s": tokens / wall if wall > 0 else None,
            }
        )
    return rows


def format_summary(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as a table; with several models in one file, one block per model."""
    models = sorted({r.get("model", "") for r in rows})
    if len(models) > 1:
        return "\n\n".join(
            f"model {m}\n" + format_summary([r for r in rows if r.get("model", "") == m])
            for m in models
        )
    lines = [
        f"{'task':<13}{'method':<11}{'N':>4}{'runs':>5}{'sat':>6}{'log p':>9}{'log Z':>9}"
        f"{'wall s':>8}{'tok/s':>7}"
    ]
    for r in rows:

        def show(value: float | None, width: int, digits: int = 2) -> str:
            if value is None:
                return f"{'-':>{width}}"
            return f"{value:>{width}.{digits}f}" if math.isfinite(value) else f"{value:>{width}}"

        lines.append(
            f"{r['task']:<13}{r['method']:<11}{r['particles']:>4}{r['runs']:>5}"
            f"{show(r['satisfied'], 6)}{show(r['log_likelihood'], 9)}{show(r['log_evidence'], 9)}"
            f"{show(r['wall_s'], 8)}{show(r['tokens_per_s'], 7, 0)}"
        )
    return "\n".join(lines)
