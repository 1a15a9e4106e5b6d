"""Overhead of the SMC machinery in step-level particle filtering on the default model.

    .venv/bin/python benchmarks/smc_overhead.py [--particles 16] [--context 1024]

One `ppl.samplers.host_smc.step` on `ppl.models.reasoning.ssm.ReasoningSSM` with
SmolLM2-135M-Instruct, N particles after a prompt of about `--context` tokens, is timed by parts:
generating one reasoning step (`transition_sample`: decode until "\\n\\n" or the step cap,
plus the verifier), and the SMC machinery (ESS, within-group resampling, the KV-cache gather
by ancestors, reweighting). Resampling runs at every step (threshold 1.0) so the gather is
always paid. Reports the machinery's share of step time; writes
benchmarks/results/smc_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ppl.models.lm import LanguageModel, SamplingParams
from ppl.models.reasoning.ssm import ReasoningSSM, StepSettings
from ppl.models.reasoning.verifiers import ArithmeticSteps
from ppl.samplers import host_smc

ROOT = Path(__file__).resolve().parents[1]


def timed(function, *args):
    start = time.perf_counter()
    out = jax.block_until_ready(function(*args))
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--particles", type=int, default=16)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--step-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    lm = LanguageModel.load()
    filler = "The quick brown fox jumps over the lazy dog. " * 200
    ids = lm.tokenizer.encode(filler)[: args.context - 32]
    prompt = lm.tokenizer.decode(ids) + "\n\nQuestion: what is 12 + 30? Think step by step."
    settings = StepSettings(
        max_step_tokens=args.step_tokens, max_steps=4, sampling=SamplingParams(temperature=0.8)
    )
    ssm = ReasoningSSM(lm, [prompt], ArithmeticSteps(), settings=settings)
    state, _ = host_smc.init(jax.random.key(0), ssm, args.particles)
    cached = int(np.asarray(state.particles.generations.cache.lengths)[0])

    rows = []
    particles = state.particles
    log_weights = jnp.asarray(state.log_weights)
    resample_all = jnp.ones(1, bool)
    for repeat in range(args.repeats + 1):  # the first repeat compiles
        key = jax.random.key(repeat)
        start = time.perf_counter()
        ancestors = host_smc.survivors_in_place(
            np.asarray(
                host_smc._resample_groups(key[None], log_weights, resample_all, "systematic")
            ),
            args.particles,
        )
        t_resample = time.perf_counter() - start
        gathered, t_gather = timed(ssm.gather, particles, ancestors)
        extended, t_extend = timed(ssm.transition_sample, key, repeat + 1, gathered)
        start = time.perf_counter()
        log_potentials = ssm.log_potential(repeat + 1, gathered, extended)
        new = jax.block_until_ready(
            host_smc._reweight_groups(
                jnp.full((1, args.particles), -np.log(args.particles)),
                jnp.asarray(log_potentials, jnp.float32).reshape(1, -1),
            )
        )
        t_weights = time.perf_counter() - start
        if repeat:
            rows.append(
                {
                    "resample": t_resample,
                    "gather": t_gather,
                    "extend": t_extend,
                    "weights": t_weights,
                }
            )
        particles, log_weights = extended, new.log_weights

    median = {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
    machinery = median["resample"] + median["gather"] + median["weights"]
    step = machinery + median["extend"]
    report = {
        "model": lm.name,
        "particles": args.particles,
        "cached_tokens": cached,
        "step_tokens": args.step_tokens,
        "seconds_per_step": step,
        "seconds": median,
        "machinery_share": machinery / step,
        "raw": rows,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "raw"}, indent=2))
    out = ROOT / "benchmarks" / "results" / "smc_overhead.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
