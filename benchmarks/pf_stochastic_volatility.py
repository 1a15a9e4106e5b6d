"""Bootstrap particle filter on stochastic volatility: ppl-jax against `particles`, side by side.

    .venv-bench/bin/pip install particles    # once; benchmarks/setup_llamacpp.sh makes .venv-bench
    .venv/bin/python benchmarks/pf_stochastic_volatility.py

Both filter the same simulated series (T = 1000, mu = -1.02, phi = 0.9702, sigma = 0.178, the
Pitt-Shephard values that `particles` uses as defaults) with systematic resampling when
ESS < N/2, for N = 100 ... 100 000. Reports wall time per run and per particle-step, and the
variance of the log-likelihood estimate across independent runs at equal N. Writes
benchmarks/results/pf_stochastic_volatility.json and docs/figures/pf_stochastic_volatility.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

import ppl.random
from ppl.models.ssm.stochastic_volatility import StochasticVolatility, bootstrap, simulate
from ppl.samplers import smc

ROOT = Path(__file__).resolve().parents[1]
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
OURS = "ppl-jax (ppl.random.key)"
OURS_DEFAULT_KEY = "ppl-jax (jax.random.key)"
PARAMS = {"mu": -1.02, "phi": 0.9702, "sigma": 0.178}


def run_ours(
    data: np.ndarray, sizes: list[int], repeats: list[int], make_key: Callable[[int], jax.Array]
) -> list[dict]:
    fk = bootstrap(StochasticVolatility(**PARAMS), data)
    rows = []
    for n, reps in zip(sizes, repeats, strict=True):
        run = jax.jit(
            lambda key, n=n: smc.run(key, fk, n, len(data), keep_history=False).log_evidence
        )
        jax.block_until_ready(run(make_key(10_000)))  # compile
        times, log_z = [], []
        for seed in range(reps):
            start = time.perf_counter()
            value = float(jax.block_until_ready(run(make_key(seed))))
            times.append(time.perf_counter() - start)
            log_z.append(value)
        rows.append({"num_particles": n, "seconds": times, "log_evidence": log_z})
    return rows


def run_particles(data: np.ndarray, sizes: list[int], repeats: list[int]) -> dict | None:
    if not BENCH_PYTHON.exists():
        print("no .venv-bench: install `particles` there to compare")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "y.npy"
        np.save(path, data)
        command = [
            str(BENCH_PYTHON),
            str(ROOT / "benchmarks" / "particles_sv.py"),
            str(path),
            "--sizes",
            ",".join(map(str, sizes)),
            "--repeats",
            ",".join(map(str, repeats)),
        ]
        command += [f"--{k}={v}" for k, v in PARAMS.items()]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarize(rows: list[dict], steps: int) -> list[dict]:
    return [
        {
            "num_particles": r["num_particles"],
            "seconds_per_run": float(np.median(r["seconds"])),
            "ns_per_particle_step": 1e9
            * float(np.median(r["seconds"]))
            / (r["num_particles"] * steps),
            "log_evidence_mean": float(np.mean(r["log_evidence"])),
            "log_evidence_var": float(np.var(r["log_evidence"], ddof=1)),
            "runs": len(r["seconds"]),
        }
        for r in rows
    ]


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, rows in report["summary"].items():
        n = [r["num_particles"] for r in rows]
        axes[0].plot(n, [r["seconds_per_run"] for r in rows], marker="o", label=name)
        axes[1].plot(n, [r["log_evidence_var"] for r in rows], marker="o", label=name)
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="particles N",
        ylabel="seconds per run (T=1000)",
        title="bootstrap PF, stochastic volatility",
    )
    axes[1].set(
        xscale="log",
        yscale="log",
        xlabel="particles N",
        ylabel="Var[log Z_hat]",
        title="variance of the log-likelihood estimate",
    )
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000,100000")
    parser.add_argument("--repeats", default="50,50,40,8")
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    repeats = [int(r) for r in args.repeats.split(",")]
    _, data = simulate(jax.random.key(0), StochasticVolatility(**PARAMS), args.steps)
    data = np.asarray(data, np.float64)
    raw = {
        OURS: run_ours(data.astype(np.float32), sizes, repeats, ppl.random.key),
        OURS_DEFAULT_KEY: run_ours(data.astype(np.float32), sizes, repeats, jax.random.key),
    }
    peer = run_particles(data, sizes, repeats)
    if peer is not None:
        raw[f"particles {peer['particles']}"] = peer["results"]
    summary = {name: summarize(rows, args.steps) for name, rows in raw.items()}
    report = {"steps": args.steps, "params": PARAMS, "summary": summary, "raw": raw}
    for name, rows in summary.items():
        print(name)
        for r in rows:
            print(
                f"  N={r['num_particles']:>6}: {r['seconds_per_run']:8.3f} s/run, "
                f"{r['ns_per_particle_step']:7.1f} ns/particle-step, "
                f"var log Z {r['log_evidence_var']:.3g} ({r['runs']} runs)"
            )
    if peer is not None:
        theirs = summary[f"particles {peer['particles']}"]
        report["speedup"] = {
            name: [
                {
                    "num_particles": a["num_particles"],
                    "speedup": b["seconds_per_run"] / a["seconds_per_run"],
                }
                for a, b in zip(summary[name], theirs, strict=True)
            ]
            for name in (OURS, OURS_DEFAULT_KEY)
        }
        for name, rows in report["speedup"].items():
            for r in rows:
                print(f"N={r['num_particles']:>6}: {name} is {r['speedup']:.1f}x faster")
    out = ROOT / "benchmarks" / "results" / "pf_stochastic_volatility.json"
    out.write_text(json.dumps(report, indent=2))
    plot(report, ROOT / "docs" / "figures" / "pf_stochastic_volatility.png")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
