"""Tempered SMC's log evidence at its defaults on the six posteriordb posteriors and the three
conjugate problems, from each reference, against bridge sampling or the exact value.

    PYTHONPATH=. .venv/bin/python benchmarks/tempered_smc_evidence.py \
        [--seeds 8] [--references auto prior] [--posteriors arK-arK normal_normal ...]

For each posterior and reference, `run_tempered_smc(jax.random.key(seed), model,
reference=...)` at the defaults (1000 particles, `TemperedSMCSettings()`) for seeds 0..S−1,
in one process (the runs after the first reuse the compiled iteration). The posteriordb
values are compared with bridge sampling from posteriordb's reference draws
(tests/experiments/posteriordb_bridge_evidence.json, written by
benchmarks/posteriordb_bridge_reference.py, which does not involve tempered SMC); the
conjugate ones with their closed-form evidence. "agrees" is |mean − reference| < 2 combined
standard errors. A reference that cannot start (the prior of a model with an improper prior)
is recorded as skipped. Writes `--out` (JSON, rewritten after each cell) and prints a markdown
table with the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ppl.experiments.bayes import run_tempered_smc
from ppl.models.bayes.conjugate import conjugate_problems
from ppl.models.bayes.posteriordb import POSTERIOR_NAMES, load_posterior
from ppl.numpyro_bridge import NumPyroModel, from_numpyro

BRIDGE = Path(__file__).parents[1] / "tests/experiments/posteriordb_bridge_evidence.json"
OUT = Path(__file__).parent / "results/tempered_smc_evidence.json"
NEEDS_X64 = {"gp_pois_regr-gp_pois_regr"}


def load(name: str) -> tuple[NumPyroModel, float, float]:
    """The bound model, the reference log evidence and its standard error."""
    conjugate = {p.name: p for p in conjugate_problems(jax.random.key(2026))}
    if name in conjugate:
        problem = conjugate[name]
        model = from_numpyro(problem.model, rng_key=jax.random.key(0), model_kwargs=problem.data)
        return model, float(problem.log_evidence), 0.0
    posterior = load_posterior(name)
    model = from_numpyro(posterior.model, rng_key=jax.random.key(0), model_kwargs=posterior.data)
    bridge = json.loads(BRIDGE.read_text())["posteriors"][name]
    return model, bridge["log_evidence"], bridge["standard_error"]


def cell(name: str, reference: str, seeds: int) -> dict[str, Any]:
    model, target, target_se = load(name)
    estimates, seconds, iterations = [], [], []
    for seed in range(seeds):
        start = time.perf_counter()
        try:
            fit = run_tempered_smc(
                jax.random.key(seed), model, reference=reference, progress=False,
                log_likelihood=False,
            )  # fmt: skip
        except ValueError as error:  # the prior path on an improper prior
            return {"skipped": str(error)}
        seconds.append(time.perf_counter() - start)
        estimates.append(fit.log_evidence)
        iterations.append(len(fit.result.temperatures))
        print(f"  {name} {reference} seed {seed}: {fit.log_evidence:.3f}", flush=True)
    values = np.asarray(estimates)
    mean, se = float(values.mean()), float(values.std(ddof=1) / np.sqrt(seeds))
    combined = float(np.hypot(se, target_se))
    return {
        "estimates": estimates,
        "mean": mean,
        "standard_error": se,
        "reference": target,
        "reference_standard_error": target_se,
        "z": (mean - target) / combined,
        "agrees": abs(mean - target) < 2 * combined,
        "first_seconds": seconds[0],
        "median_seconds_after_first": float(np.median(seconds[1:])) if seeds > 1 else None,
        "median_iterations": float(np.median(iterations)),
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| posterior | reference | log Ẑ (mean ± SE) | bridge or exact | z | agrees | "
        "iterations | s (first / later) |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for name, by_reference in results.items():
        for reference, row in by_reference.items():
            if "skipped" in row:
                lines.append(f"| {name} | {reference} | skipped: improper prior | | | | | |")
                continue
            later = row["median_seconds_after_first"]
            lines.append(
                f"| {name} | {reference} | {row['mean']:.3f} ± {row['standard_error']:.3f} | "
                f"{row['reference']:.3f} ± {row['reference_standard_error']:.3f} | "
                f"{row['z']:+.1f} | {'yes' if row['agrees'] else 'NO'} | "
                f"{row['median_iterations']:.0f} | {row['first_seconds']:.1f} / "
                f"{later if later is None else f'{later:.1f}'} |"
            )
    return "\n".join(lines)


def main() -> None:
    conjugate = [p.name for p in conjugate_problems(jax.random.key(2026))]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--references", nargs="+", default=["auto", "prior"])
    parser.add_argument("--posteriors", nargs="+", default=[*POSTERIOR_NAMES, *conjugate])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    report = {
        "command": "PYTHONPATH=. .venv/bin/python benchmarks/tempered_smc_evidence.py "
        f"--seeds {args.seeds} --references {' '.join(args.references)}",
        "load_average_start": os.getloadavg(),
        "results": results,
    }
    for name in args.posteriors:
        context = jax.enable_x64(True) if name in NEEDS_X64 else contextlib.nullcontext()
        with context:
            for reference in args.references:
                results.setdefault(name, {})[reference] = cell(name, reference, args.seeds)
                report["load_average_end"] = os.getloadavg()
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(report, indent=1))
    print(f"load average at start {report['load_average_start']}, end {os.getloadavg()}")
    print(table(results))


if __name__ == "__main__":
    main()
