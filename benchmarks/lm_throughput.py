"""Prefill and decode throughput: ppl-jax's JAX runtime against llama.cpp, side by side.

    make bench                       # or: .venv/bin/python benchmarks/lm_throughput.py
    python benchmarks/lm_throughput.py --batch 1,16,64 --prompt-tokens 64 --new-tokens 64
    python benchmarks/lm_throughput.py --context 64,1024 --no-llamacpp   # long-context decode

Both run the default SmolLM2-135M-Instruct GGUF on the same prompt tokens with the same thread
count (llama.cpp: llama-cpp-python built from source in .venv-bench by
benchmarks/setup_llamacpp.sh, batched `llama_decode` for batch > 1; JAX: XLA's CPU backend,
which uses every core), in `--rounds` interleaved rounds (ppl-jax, then llama.cpp), the best
round per batch kept, with the load average before and after each run. Beside each ppl-jax
figure: the bytes a decode step must read (`benchmarks/bandwidth.decode_step_bytes`) over the
copy bandwidth measured at the start (`benchmarks/bandwidth.py`), the step's memory bound; the
step's matrix-product flops over the peak float32 FMA rate measured likewise
(`benchmarks/fma_peak.c`), its compute bound; and the resident weight memory against the
GGUF's size. Writes
benchmarks/results/lm_throughput.json and docs/figures/lm_throughput.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"


def run_llamacpp(model: Path, args: argparse.Namespace, prompt: list[int]) -> dict | None:
    if not BENCH_PYTHON.exists():
        print("llama.cpp environment missing: run benchmarks/setup_llamacpp.sh", file=sys.stderr)
        return None
    command = [
        str(BENCH_PYTHON),
        str(ROOT / "benchmarks" / "llamacpp_throughput.py"),
        str(model),
        "--batch",
        args.batch,
        "--prompt-ids",
        ",".join(map(str, prompt)),
        "--new-tokens",
        str(args.new_tokens),
        "--threads",
        str(args.threads),
        "--repeats",
        str(args.repeats),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, rows in report["runs"].items():
        batches = [r["batch"] for r in rows]
        for ax, key in zip(axes, ["prefill_tokens_per_s", "decode_tokens_per_s"], strict=True):
            ax.plot(batches, [r[key] for r in rows], marker="o", label=name)
    for ax, title in zip(axes, ["prefill", "decode"], strict=True):
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="batch (independent sequences)",
            ylabel="tokens / s",
            title=f"{title}, SmolLM2-135M Q4_1, 2 CPU cores",
        )
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def best_of(rounds: list[list[dict]]) -> list[dict]:
    """Per batch, the round with the highest decode throughput."""
    return [max(rows, key=lambda r: r["decode_tokens_per_s"]) for rows in zip(*rounds, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", default="1,16,64")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per measurement")
    parser.add_argument(
        "--rounds", type=int, default=2, help="interleaved rounds of ppl-jax then llama.cpp"
    )
    parser.add_argument(
        "--configs",
        default="quantized:float32,float:float32",
        help="ppl-jax weights:dtype pairs; the first is compared with llama.cpp, the others "
        "run once",
    )
    parser.add_argument(
        "--context",
        default="",
        help="cached tokens, e.g. 64,1024: also time batch-16 decode steps after prompts this "
        "long, shared by the rows and copied per row",
    )
    parser.add_argument("--no-llamacpp", action="store_true", help="skip the llama.cpp run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/lm_throughput.json")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs/figures/lm_throughput.png")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from benchmarks.bandwidth import compute_peak, decode_step_bytes, decode_step_flops
    from benchmarks.bandwidth import measure as measure_bandwidth
    from ppl.models.lm import LanguageModel
    from ppl.models.lm.default_model import default_model_path
    from ppl.models.lm.throughput import (
        benchmark_prompt,
        environment,
        format_context_table,
        format_table,
        measure,
        measure_context,
    )

    model = default_model_path()
    batches = [int(b) for b in args.batch.split(",")]
    configs = [tuple(c.split(":")) for c in args.configs.split(",")]
    bandwidth = measure_bandwidth()
    peak = compute_peak(args.threads)
    print(f"copy bandwidth {bandwidth['bound']:.1f} GB/s, peak {peak}, load {os.getloadavg()}")
    loaded = {c: LanguageModel.from_gguf(model, dtype=c[1], weights=c[0]) for c in configs}
    prompt = benchmark_prompt(loaded[configs[0]], args.prompt_tokens)
    rounds: dict[str, list[list[dict]]] = {}
    loads: list[dict] = []
    peer_version = None
    for index in range(args.rounds):
        for config in configs if index == 0 else configs[:1]:
            name = f"ppl-jax {config[0]} {config[1]}"
            before = os.getloadavg()
            rows = measure(
                loaded[config], batches, args.prompt_tokens, args.new_tokens, args.repeats
            )
            rounds.setdefault(name, []).append(rows)
            loads.append({"run": name, "round": index, "before": before, "after": os.getloadavg()})
            print(f"{name}, round {index}, load {before}\n{format_table(rows)}\n", flush=True)
        if not args.no_llamacpp:
            before = os.getloadavg()
            peer = run_llamacpp(model, args, prompt)
            if peer is not None:
                peer_version = peer["llama_cpp_python"]
                name = f"llama.cpp {peer_version}"
                rounds.setdefault(name, []).append(peer["results"])
                loads.append(
                    {"run": name, "round": index, "before": before, "after": os.getloadavg()}
                )
                print(f"{name}, round {index}, load {before}\n{format_table(peer['results'])}\n")
    runs = {name: best_of(rows) for name, rows in rounds.items()}
    first = f"ppl-jax {configs[0][0]} {configs[0][1]}"
    for config, lm in loaded.items():
        for row in runs[f"ppl-jax {config[0]} {config[1]}"]:
            cached = args.prompt_tokens + args.new_tokens // 2  # the average over the decode
            step = decode_step_bytes(lm, row["batch"], cached)
            row["bytes_per_step"] = step
            row["bound_ms_per_step"] = 1000 * step / (bandwidth["bound"] * 1e9)
            if peak is not None:
                flops = decode_step_flops(lm, row["batch"])
                row["flops_per_step"] = flops
                row["compute_bound_ms_per_step"] = 1000 * flops / (peak["f32_gflop_s"] * 1e9)
    resident = {
        f"{w} {d}": sum(int(a.nbytes) for a in jax.tree.leaves(lm.params))
        for (w, d), lm in loaded.items()
    }
    gguf_bytes = model.stat().st_size
    for name, size in resident.items():
        print(f"resident weights, {name}: {size / 1e6:.1f} MB = {size / gguf_bytes:.2f}x the GGUF")
    contexts: dict[str, list[dict]] = {}
    if args.context:
        lengths = [int(c) for c in args.context.split(",")]
        lm = loaded[configs[0]]
        contexts[first] = measure_context(lm, lengths, repeats=args.repeats)
        table = format_context_table(contexts[first])
        print(f"{first}, decode after long prompts, load {os.getloadavg()}\n{table}\n")
    report: dict = {
        "model": model.name,
        "gguf_bytes": gguf_bytes,
        "threads": args.threads,
        "environment": environment(),
        "bandwidth_gb_s": bandwidth,
        "compute_peak": peak,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "resident_weight_bytes": resident,
        "load_average": loads,
        "runs": runs,
        "rounds": rounds,
    }
    if contexts:
        report["contexts"] = contexts
    if peer_version is not None:
        theirs = runs[f"llama.cpp {peer_version}"]
        report["ratios"] = [
            {
                "batch": a["batch"],
                "prefill_ratio": a["prefill_tokens_per_s"] / b["prefill_tokens_per_s"],
                "decode_ratio": a["decode_tokens_per_s"] / b["decode_tokens_per_s"],
                "bound_ms_per_step": a["bound_ms_per_step"],
                "compute_bound_ms_per_step": a.get("compute_bound_ms_per_step"),
            }
            for a, b in zip(runs[first], theirs, strict=True)
        ]
        for r in report["ratios"]:
            print(
                f"batch {r['batch']:>3}: prefill x{r['prefill_ratio']:.2f}, "
                f"decode x{r['decode_ratio']:.2f} (ppl-jax / llama.cpp; bandwidth bound "
                f"{r['bound_ms_per_step']:.1f} ms/step, float32 compute bound "
                f"{r['compute_bound_ms_per_step'] or float('nan'):.1f} ms/step)"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    plot(report, args.figure)
    print(f"wrote {args.out} and {args.figure}")


if __name__ == "__main__":
    main()
