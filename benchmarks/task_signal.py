"""Whether a reasoning task shows inference-scaling signal on its model: pass@1 and pass@k.

    .venv/bin/python benchmarks/task_signal.py --task word_sums --problems 100 --samples 32 \
        [--verifier grounded] [--seed 0] [--out benchmarks/results/task_signal_word_sums.json]

Draws `--samples` independent generations per problem with the task's own step settings (the
`bon` method of `ppl scale`, through `run_sweep`, so exactly what a sweep generates), grades
every candidate answer with the task's grader, and prints JSON: pass@k for k = 1, 2, 4, ...,
`--samples` (the unbiased estimator of Chen et al., averaged over problems) with standard
errors over problems (pass@1 is the mean fraction of correct samples), the accuracy of
best-of-N's pick under `--verifier` with its standard error, the mean aggregated log reward
of correct and of wrong candidates (does the verifier separate them?), the wall time and
`os.getloadavg()` at the end (the CPU may be shared). A task has signal when 0.05 <= pass@1 <=
0.5 and pass@`samples` >= 2 pass@1 (`has_signal`).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ppl.experiments.sweep import read_results, run_sweep
from ppl.models.reasoning.tasks import TASKS, get_task
from ppl.models.reasoning.verifiers import VerifierSpec
from ppl.scaling import accuracy_standard_error, pass_at_k_per_problem


def _standard_error(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else 0.0


def signal_report(
    records: list[dict[str, Any]], grade: Callable[[str | None, str], bool], samples: int
) -> dict[str, Any]:
    """pass@k (k = 1, 2, 4, ... samples) with standard errors, best-of-N's accuracy and the
    verifier's mean score on correct and wrong candidates, from `bon` sweep records."""
    correct = [
        [grade(answer, record["reference"]) for answer in record["candidates"]]
        for record in records
    ]
    if any(len(row) != samples for row in correct):
        raise ValueError(f"every record needs {samples} candidates")
    counts = np.asarray([sum(row) for row in correct], np.int64)
    ks = [2**i for i in range(samples.bit_length()) if 2**i <= samples]
    pass_at = {}
    for k in ks:
        per_problem = pass_at_k_per_problem(samples, counts, k)
        pass_at[str(k)] = {"mean": float(per_problem.mean()), "se": _standard_error(per_problem)}
    picked = np.asarray([bool(r["correct"]) for r in records], np.float64)
    scores = np.asarray([s for r in records for s in r["scores"]], np.float64)
    flat = np.asarray([c for row in correct for c in row], bool)
    finite = np.isfinite(scores)
    mean_score = {
        name: float(scores[mask & finite].mean()) if (mask & finite).any() else None
        for name, mask in (("correct", flat), ("wrong", ~flat))
    }
    first, last = pass_at["1"]["mean"], pass_at[str(ks[-1])]["mean"]
    return {
        "pass_at_k": pass_at,
        "best_of_n_accuracy": {"mean": float(picked.mean()), "se": accuracy_standard_error(picked)},
        "mean_log_reward": mean_score,
        "has_signal": bool(0.05 <= first <= 0.5 and last >= 2 * first),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="word_sums", choices=sorted(TASKS))
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verifier", default="outcome", help="scores best-of-N's pick")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args()
    if args.problems < 2 or args.samples < 1:
        parser.error("--problems must be >= 2 and --samples >= 1")
    task = get_task(args.task)
    start = time.perf_counter()
    lm = task.load_model()
    with tempfile.TemporaryDirectory() as scratch:
        sweep = Path(scratch) / "sweep.jsonl"
        run_sweep(
            task,
            ["bon"],
            [args.samples],
            args.problems,
            args.seed,
            sweep,
            lm=lm,
            verifier=VerifierSpec(args.verifier),
            progress=False,
        )
        records = read_results(sweep)
    failed = [r for r in records if "error" in r]
    if failed:
        raise SystemExit(f"{len(failed)} problems failed, first: {failed[0]['error']}")
    report = {
        "task": task.name,
        "model": lm.name,
        "problems": args.problems,
        "samples": args.samples,
        "seed": args.seed,
        "verifier": args.verifier,
        **signal_report(records, task.grade, args.samples),
        "tokens_per_sample": float(np.mean([r["spent"]["tokens"] / args.samples for r in records])),
        "wall_seconds": time.perf_counter() - start,
        "load_average": os.getloadavg(),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
