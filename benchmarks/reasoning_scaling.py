"""Accuracy against budget for every inference-scaling method on a reasoning task.

    .venv/bin/python benchmarks/reasoning_scaling.py [--task chained_arithmetic]
        [--backend jax|llamacpp] [--problems 100] [--seed 0] [--verifier NAME]

Runs `ppl scale` (the same `run_sweep`) on the task (default: chained arithmetic with the
in-repo organism and the arithmetic process verifier) for every method at budgets 1..32,
then reports accuracy per (method, budget) with standard errors, pass@k of independent
sampling with the fitted power law, the budget at which particle filtering matches best-of-N
and beam search at the largest budget (Puri et al.'s "scaling rate") with its paired bootstrap
interval, and the wall time per problem.
`--backend llamacpp` serves the task's GGUF with llama.cpp's OpenAI-compatible server (built by
benchmarks/setup_llamacpp.sh) on a free loopback port and runs the served backend against it.
Writes benchmarks/results/reasoning_scaling[_TASK][_BACKEND].jsonl (the raw sweep,
resumable), the .json summary and docs/figures/reasoning_scaling[_TASK][_BACKEND].png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ppl.experiments.plots import (
    accuracy_table,
    budget_ratios,
    format_table,
    plot_accuracy,
    ratio_intervals,
    ratio_lines,
)
from ppl.experiments.sweep import METHODS, VerifierSpec, read_results, run_sweep
from ppl.models.reasoning.tasks import get_task
from ppl.scaling import coverage_curve, fit_power_law_coverage, matching_budget

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@contextlib.contextmanager
def generator(backend: str, task_name: str, log: Path) -> Iterator[object | None]:
    """The sweep's generator: None (the task's in-process model) or a served copy of it."""
    if backend == "jax":
        yield None
        return
    from ppl.models.lm.default_model import default_model_path
    from ppl.models.lm.served import ServedModel, load_tokenizer
    from tests.llamacpp_server import llamacpp_server

    if task_name == "chained_arithmetic":
        raise SystemExit("the organism has no GGUF: serve a task on the default model")
    model = Path(default_model_path())
    with llamacpp_server(model, log, threads=os.cpu_count() or 1) as server:
        yield ServedModel(server.base_url, str(model), load_tokenizer(model))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--budgets", default="1,2,4,8,16,32")
    parser.add_argument("--task", default="chained_arithmetic")
    parser.add_argument("--verifier", default="arithmetic")
    parser.add_argument("--backend", choices=("jax", "llamacpp"), default="jax")
    args = parser.parse_args()
    methods = args.methods.split(",")
    budgets = [int(b) for b in args.budgets.split(",")]
    task = get_task(args.task)
    suffix = "" if args.task == "chained_arithmetic" else f"_{args.task}"
    suffix += "" if args.backend == "jax" else f"_{args.backend}"
    results = ROOT / "benchmarks" / "results"
    jsonl = results / f"reasoning_scaling{suffix}.jsonl"
    start = time.perf_counter()
    with generator(args.backend, args.task, results / f"server{suffix}.log") as lm:
        run_sweep(
            task,
            methods,
            budgets,
            args.problems,
            args.seed,
            jsonl,
            lm=lm,  # type: ignore[arg-type]
            verifier=VerifierSpec(args.verifier),
        )
    seconds = time.perf_counter() - start
    records = [r for r in read_results(jsonl) if r["method"] in methods and not r.get("failed")]
    seconds_per_problem = {
        m: {
            str(b): float(
                np.mean(
                    [r["seconds"] for r in records if r["method"] == m and r["budget"] == b] or [0]
                )
            )
            for b in budgets
        }
        for m in methods
    }
    table = accuracy_table(records)
    print(format_table(table))

    # coverage of independent samples (best-of-N's candidates), pass@k and a power-law fit
    largest = max(budgets)
    bon = [r for r in records if r["method"] == "bon" and r["budget"] == largest]
    correct = np.asarray(
        [sum(task.grade(c, r["reference"]) for c in r["candidates"]) for r in bon], np.int64
    )
    ks = [k for k in budgets if k <= largest]
    coverage = coverage_curve(largest, correct, ks) if bon else np.zeros(len(ks))
    fit = fit_power_law_coverage(ks, coverage) if bon else None

    matches = {}
    for other in ("bon", "beam"):
        if "pf" in table and other in table and largest in table[other]:
            target = table[other][largest]["accuracy"]
            pf_budgets = sorted(table["pf"])
            matches[other] = {
                "largest_budget": largest,
                "accuracy_at_largest": target,
                "pf_matching_budget": matching_budget(
                    pf_budgets, [table["pf"][b]["accuracy"] for b in pf_budgets], target
                ),
            }
    report = {
        "task": task.name,
        "backend": args.backend,
        "load_average": os.getloadavg(),
        "seconds_per_problem": seconds_per_problem,
        "problems": args.problems,
        "seed": args.seed,
        "seconds": seconds,  # this invocation (a resumed sweep skips what is done)
        "sweep_seconds": float(sum(r["seconds"] for r in records)),  # every cell, all runs
        "table": {m: {str(b): row for b, row in curve.items()} for m, curve in table.items()},
        "pass_at_k": dict(zip(map(str, ks), map(float, coverage), strict=True)),
        "power_law": None if fit is None else {"a": fit.a, "b": fit.b},
        "pf_budget_ratios": budget_ratios(table, "pf"),
        "pf_budget_ratio_intervals": ratio_intervals(records, "pf"),
        "pf_matches": matches,
    }
    out = results / f"reasoning_scaling{suffix}.json"
    out.write_text(json.dumps(report, indent=2))
    plot_accuracy(
        table,
        ROOT / "docs" / "figures" / f"reasoning_scaling{suffix}.png",
        title=f"{task.name}, {args.verifier} verifier, {args.backend}",
    )
    print("\n".join(ratio_lines(table, "pf", records)))
    print(json.dumps({k: report[k] for k in ("pass_at_k", "power_law", "pf_matches")}, indent=2))
    print(f"{seconds:.0f} s; wrote {out}")


if __name__ == "__main__":
    main()
