"""Agreement of the JAX runtime with transformers' Llama (PyTorch) on the default GGUF.

    .venv/bin/python benchmarks/reference_logits.py

Both read the same GGUF and dequantize it with the `gguf` package. Records, per prompt, the
largest logit difference relative to the largest logit, and whether 32 greedy tokens agree
(each generated token is the reference's argmax at its position). Writes
benchmarks/results/reference_logits.json. Needs PyTorch, transformers and accelerate.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import torch
import transformers

from ppl.models.lm import LanguageModel, SamplingParams
from ppl.models.lm.default_model import default_model_path

PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n    ",
    "Question: 17 + 25 = ? Answer step by step.\n\n",
]
OUT = Path(__file__).resolve().parent / "results" / "reference_logits.json"


def main() -> None:
    path = default_model_path()
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    lm = LanguageModel.from_gguf(path)
    token_ids = lm.encode_prompts(PROMPTS)
    logits, cache = lm.prefill(token_ids, 128)
    greedy = lm.decode(jax.random.key(0), cache, logits, 32, SamplingParams(0.0), stop_at_eos=False)
    rows = []
    for prompt, ids, generated in zip(PROMPTS, token_ids, np.asarray(greedy.tokens), strict=True):
        sequence = list(ids) + generated.tolist()
        with torch.no_grad():
            expected = reference(torch.tensor([sequence])).logits[0].numpy()
        actual = np.asarray(lm.logits(sequence))
        relative = float(np.abs(actual - expected).max() / np.abs(expected).max())
        agree = expected[len(ids) - 1 : -1].argmax(axis=-1) == generated
        rows.append(
            {
                "prompt": prompt,
                "tokens": len(sequence),
                "max_relative_logit_difference": relative,
                "greedy_tokens_agreeing": int(agree.sum()),
                "greedy_tokens": int(agree.size),
            }
        )
        print(f"{relative:.2e}  {int(agree.sum())}/{agree.size} greedy tokens  {prompt[:40]!r}")
    report = {"model": path.name, "transformers": transformers.__version__, "results": rows}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
