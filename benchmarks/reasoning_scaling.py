"""Accuracy against budget for every inference-scaling method on the default reasoning task.

    .venv/bin/python benchmarks/reasoning_scaling.py [--problems 100] [--seed 0]

Runs `ppl scale` (the same `run_sweep`) on chained arithmetic with the in-repo organism and
the arithmetic process verifier, for every method at budgets 1..32, then reports accuracy
per (method, budget) with standard errors, pass@k of independent sampling, and the budget at
which particle filtering matches best-of-N and beam search at 32 (Puri et al.'s "scaling
rate"). Writes benchmarks/results/reasoning_scaling.jsonl (the raw sweep, resumable),
benchmarks/results/reasoning_scaling.json and docs/figures/reasoning_scaling.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ppl.experiments.plots import accuracy_table, budget_ratios, format_table, plot_accuracy
from ppl.experiments.sweep import METHODS, read_results, run_sweep
from ppl.models.reasoning.tasks import get_task
from ppl.scaling import coverage_curve, fit_power_law_coverage, matching_budget

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--budgets", default="1,2,4,8,16,32")
    args = parser.parse_args()
    methods = args.methods.split(",")
    budgets = [int(b) for b in args.budgets.split(",")]
    task = get_task("chained_arithmetic")
    jsonl = ROOT / "benchmarks" / "results" / "reasoning_scaling.jsonl"
    start = time.perf_counter()
    run_sweep(task, methods, budgets, args.problems, args.seed, jsonl)
    seconds = time.perf_counter() - start
    records = [r for r in read_results(jsonl) if r["method"] in methods]
    table = accuracy_table(records)
    print(format_table(table))

    # coverage of independent samples (best-of-N's candidates), pass@k and a power-law fit
    largest = max(budgets)
    bon = [r for r in records if r["method"] == "bon" and r["budget"] == largest]
    correct = np.asarray([sum(c == r["reference"] for c in r["candidates"]) for r in bon], np.int64)
    ks = [k for k in budgets if k <= largest]
    coverage = coverage_curve(largest, correct, ks) if bon else np.zeros(len(ks))
    fit = fit_power_law_coverage(ks, coverage) if bon else None

    matches = {}
    for other in ("bon", "beam"):
        if "pf" in table and other in table and largest in table[other]:
            target = table[other][largest]["accuracy"]
            pf_budgets = sorted(table["pf"])
            matches[other] = {
                "accuracy_at_32": target,
                "pf_matching_budget": matching_budget(
                    pf_budgets, [table["pf"][b]["accuracy"] for b in pf_budgets], target
                ),
            }
    report = {
        "task": task.name,
        "problems": args.problems,
        "seed": args.seed,
        "seconds": seconds,
        "table": {m: {str(b): row for b, row in curve.items()} for m, curve in table.items()},
        "pass_at_k": dict(zip(map(str, ks), map(float, coverage), strict=True)),
        "power_law": None if fit is None else {"a": fit.a, "b": fit.b},
        "pf_budget_ratios": budget_ratios(table, "pf"),
        "pf_matches": matches,
    }
    out = ROOT / "benchmarks" / "results" / "reasoning_scaling.json"
    out.write_text(json.dumps(report, indent=2))
    plot_accuracy(
        table,
        ROOT / "docs" / "figures" / "reasoning_scaling.png",
        title="chained arithmetic, organism, arithmetic verifier",
    )
    print(json.dumps({k: report[k] for k in ("pass_at_k", "power_law", "pf_matches")}, indent=2))
    print(f"{seconds:.0f} s; wrote {out}")


if __name__ == "__main__":
    main()
