"""How often llama.cpp's server and the in-process runtime write the same greedy first step.

    .venv/bin/python benchmarks/served_agreement.py [--problems 40] [--task word_arithmetic]

Serves the embedded GGUF (and a float32 copy of it) with llama.cpp's OpenAI-compatible server
on a free loopback port, and for each of the task's first problems generates the first
reasoning step at temperature 0 with both backends. Prints JSON: the fraction of identical
steps for the Q4_1 file and for the float32 copy, the first differing problem of each, and
the load average. On the Q4_1 file llama.cpp multiplies 8-bit-quantized activations, so
near-ties can go the other way; the float32 copy computes the same float32 products.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ppl.models.lm import LanguageModel, SamplingParams  # noqa: E402
from ppl.models.lm.default_model import default_model_path  # noqa: E402
from ppl.models.lm.served import ServedModel, load_tokenizer  # noqa: E402
from ppl.models.reasoning.served_ssm import ServedReasoningSSM  # noqa: E402
from ppl.models.reasoning.ssm import ReasoningSSM  # noqa: E402
from ppl.models.reasoning.tasks import get_task  # noqa: E402
from tests.llamacpp_server import float32_copy, llamacpp_server  # noqa: E402


def first_steps(ssm: ReasoningSSM | ServedReasoningSSM) -> list[str]:
    key = jax.random.key(0)
    particles = ssm.transition_sample(key, 0, ssm.initial_sample(key, 1))
    return ssm.texts(particles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--task", default="word_arithmetic")
    args = parser.parse_args()
    task = get_task(args.task)
    settings = dataclasses.replace(task.settings, sampling=SamplingParams(temperature=0))
    prompts = [p.prompt for p in task.make_problems(0, args.problems)]
    report: dict[str, object] = {"task": task.name, "problems": len(prompts)}
    with tempfile.TemporaryDirectory() as scratch:
        q4 = Path(default_model_path())
        for label, model in (
            ("q4_1", q4),
            ("float32", float32_copy(q4, Path(scratch) / "f32.gguf")),
        ):
            lm = LanguageModel.load(model)
            local = first_steps(
                ReasoningSSM(lm, prompts, lambda c: [1.0] * len(c), settings=settings)
            )
            with llamacpp_server(
                model, Path(scratch) / f"{label}.log", threads=os.cpu_count() or 1
            ) as server:
                served = ServedModel(server.base_url, str(model), load_tokenizer(model))
                remote = first_steps(
                    ServedReasoningSSM(served, prompts, lambda c: [1.0] * len(c), settings=settings)
                )
            same = [a == b for a, b in zip(local, remote, strict=True)]
            report[label] = {
                "identical_fraction": sum(same) / len(same),
                "first_difference": next(
                    (
                        {"problem": i, "in_process": local[i], "served": remote[i]}
                        for i, s in enumerate(same)
                        if not s
                    ),
                    None,
                ),
            }
    report["load_average"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
