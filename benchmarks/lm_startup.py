"""Cold start: seconds from process start to the first generated token, ppl-jax against
llama.cpp, on the first run (empty caches) and the second (warm caches).

    .venv/bin/python benchmarks/lm_startup.py --repeats 2

Each measurement is a fresh process that generates one greedy token of the same prompt and
prints it: `ppl generate ... --max-new-tokens 1` (with `PPL_JAX_CACHE` in a temporary
directory, emptied before each first run except for the quantized-matmul kernel, which `make
model` builds at install time and is copied in) and a llama-cpp-python script (.venv-bench,
built by benchmarks/setup_llamacpp.sh) loading the same GGUF with the same thread count. The
time is taken when the process's first line of output arrives; the CPU time of the whole
process (user and system, all threads) is printed beside it, as it depends less on what else
the machine runs. llama.cpp keeps no cache of its own; for both, the operating system's page
cache holds the GGUF after the first read. Writes benchmarks/results/lm_startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "The capital of France is"
LLAMACPP = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_threads=int(sys.argv[2]), n_ctx=512, verbose=False)
out = llm.create_completion(sys.argv[3], max_tokens=1, temperature=0.0)
print(repr(out["choices"][0]["text"]), flush=True)
"""


def first_line_seconds(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Seconds from starting `command` to its first line of output, the CPU seconds (user and
    system) the whole process used, and that line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    elapsed = time.perf_counter() - start
    process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} exited with {process.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return elapsed, cpu, line.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="GGUF (default: SmolLM2-135M)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each kind")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--bench-python", type=Path, default=ROOT / ".venv-bench" / "bin" / "python"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/lm_startup.json")
    args = parser.parse_args()
    if args.model is None:
        from ppl.models.lm.default_model import default_model_path

        args.model = default_model_path()

    from ppl.models.lm.default_model import cache_dir
    from ppl.models.lm.qmatmul import build_kernel

    kernel = build_kernel()  # an install-time artifact (make model), not a start-up cache
    cache = Path(tempfile.mkdtemp(prefix="ppl-jax-startup-"))
    env = {**os.environ, "PPL_JAX_CACHE": str(cache)}
    env.pop("PPL_JAX_NO_COMPILATION_CACHE", None)
    ours = [sys.executable, "-m", "ppl.experiments.cli", "generate", PROMPT]
    ours += ["--max-new-tokens", "1", "--temperature", "0", "--model", str(args.model)]
    peer = [str(args.bench_python), "-c", LLAMACPP, str(args.model), str(args.threads), PROMPT]
    runs: list[dict[str, object]] = []

    def record(runtime: str, kind: str, seconds: float, cpu: float, token: str, load: Any) -> None:
        runs.append({"runtime": runtime, "run": kind, "seconds": seconds, "cpu_seconds": cpu})
        runs[-1]["load"] = load
        print(
            f"{runtime:9} {kind:6} run: {seconds:5.2f} s (CPU {cpu:5.2f} s) {token:8} load {load}"
        )

    try:
        for kind in ("first", "second"):
            for _ in range(args.repeats):
                if kind == "first":
                    shutil.rmtree(cache, ignore_errors=True)
                    shutil.copytree(kernel.parent, cache / kernel.parent.relative_to(cache_dir()))
                load = os.getloadavg()
                seconds, cpu, token = first_line_seconds(ours, env)
                record("ppl-jax", kind, seconds, cpu, repr(token), load)
                if not args.bench_python.exists():
                    continue
                load = os.getloadavg()
                seconds, cpu, token = first_line_seconds(peer, env)
                record("llama.cpp", kind, seconds, cpu, token, load)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    report = {"model": args.model.name, "threads": args.threads, "cpus": os.cpu_count()}
    report["runs"] = runs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
