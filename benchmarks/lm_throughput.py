"""Prefill and decode throughput: ppl-jax's JAX runtime against llama.cpp, side by side.

    make bench                       # or: .venv/bin/python benchmarks/lm_throughput.py
    python benchmarks/lm_throughput.py --batch 1,16,64 --prompt-tokens 64 --new-tokens 64
    python benchmarks/lm_throughput.py --context 64,1024 --no-llamacpp   # long-context decode

Both run the default SmolLM2-135M-Instruct GGUF on the same prompt tokens with the same thread
count (llama.cpp: llama-cpp-python built from source in .venv-bench by
benchmarks/setup_llamacpp.sh; JAX: XLA's CPU backend, which uses every core). Writes
benchmarks/results/lm_throughput.json and docs/figures/lm_throughput.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", default="1,16,64")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtypes", default="float32", help="JAX computation dtypes to run")
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
    runs: dict[str, list[dict]] = {}
    contexts: dict[str, list[dict]] = {}
    prompt: list[int] = []
    for dtype in args.dtypes.split(","):
        lm = LanguageModel.from_gguf(model, dtype=dtype)
        prompt = benchmark_prompt(lm, args.prompt_tokens)
        runs[f"ppl-jax {dtype}"] = measure(
            lm, batches, args.prompt_tokens, args.new_tokens, args.repeats
        )
        print(f"ppl-jax ({dtype})\n{format_table(runs[f'ppl-jax {dtype}'])}\n", flush=True)
        if args.context:
            lengths = [int(c) for c in args.context.split(",")]
            contexts[f"ppl-jax {dtype}"] = measure_context(lm, lengths, repeats=args.repeats)
            table = format_context_table(contexts[f"ppl-jax {dtype}"])
            print(f"ppl-jax ({dtype}), decode after long prompts\n{table}\n", flush=True)
    peer = None if args.no_llamacpp else run_llamacpp(model, args, prompt)
    if peer is not None:
        runs[f"llama.cpp {peer['llama_cpp_python']}"] = peer["results"]
        print(f"llama.cpp\n{format_table(peer['results'])}\n")
    report = {
        "model": model.name,
        "threads": args.threads,
        "environment": environment(),
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "runs": runs,
    }
    if contexts:
        report["contexts"] = contexts
    if peer is not None:
        ours = runs[f"ppl-jax {args.dtypes.split(',')[0]}"]
        report["ratios"] = [
            {
                "batch": a["batch"],
                "prefill_ratio": a["prefill_tokens_per_s"] / b["prefill_tokens_per_s"],
                "decode_ratio": a["decode_tokens_per_s"] / b["decode_tokens_per_s"],
            }
            for a, b in zip(ours, peer["results"], strict=True)
        ]
        for r in report["ratios"]:
            print(
                f"batch {r['batch']:>3}: prefill x{r['prefill_ratio']:.2f}, "
                f"decode x{r['decode_ratio']:.2f} (ppl-jax / llama.cpp)"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    plot(report, args.figure)
    print(f"wrote {args.out} and {args.figure}")


if __name__ == "__main__":
    main()
