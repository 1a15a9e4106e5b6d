"""llama.cpp's prefill and decode throughput (run inside the benchmark's own environment).

Usage: python benchmarks/llamacpp_throughput.py MODEL.gguf --batch 1,16,64 --prompt-ids 1,2,3
    --new-tokens 64 --threads 2

Prints JSON. A batch of B independent sequences decodes as llama.cpp serves parallel requests:
one `llama_decode` per step holding one token of each of the B sequences (distinct sequence
ids in one KV cache), greedy next tokens picked from the returned logits with NumPy.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import time

import llama_cpp
import numpy as np


def run(args: argparse.Namespace) -> list[dict[str, float]]:
    prompt = [int(t) for t in args.prompt_ids.split(",")]
    batches = [int(b) for b in args.batch.split(",")]
    per_seq = len(prompt) + args.new_tokens
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=64, verbose=args.verbose)  # weights
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = max(batches) * per_seq
    params.n_batch = params.n_ubatch = max(batches) * len(prompt)
    params.n_seq_max = max(batches)
    params.n_threads = params.n_threads_batch = args.threads
    params.kv_unified = False
    ctx = llama_cpp.llama_init_from_model(llm.model, params)
    n_vocab = llama_cpp.llama_n_vocab(llama_cpp.llama_model_get_vocab(llm.model))
    memory = llama_cpp.llama_get_memory(ctx)
    batch = llama_cpp.llama_batch_init(max(batches) * len(prompt), 0, max(batches))

    def submit(items: list[tuple[int, int, int, bool]]) -> None:
        for i, (token, pos, seq, logits) in enumerate(items):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        batch.n_tokens = len(items)
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    def next_tokens(indices: list[int]) -> list[int]:
        """Greedy tokens from the logits at these positions of the last batch."""
        out = []
        for i in indices:
            pointer = llama_cpp.llama_get_logits_ith(ctx, i)
            row = np.ctypeslib.as_array(
                ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,)
            )
            out.append(int(row.argmax()))
        return out

    results = []
    for b in batches:
        prefill_times, decode_times = [], []
        for _ in range(args.repeats + 1):  # the first run warms up
            llama_cpp.llama_memory_clear(memory, True)
            start = time.perf_counter()
            submit(
                [(t, p, s, p == len(prompt) - 1) for s in range(b) for p, t in enumerate(prompt)]
            )
            prefill_times.append(time.perf_counter() - start)
            tokens = next_tokens([s * len(prompt) + len(prompt) - 1 for s in range(b)])
            start = time.perf_counter()
            for step in range(args.new_tokens):
                submit([(tokens[s], len(prompt) + step, s, True) for s in range(b)])
                tokens = next_tokens(list(range(b)))
            decode_times.append(time.perf_counter() - start)
        results.append(
            {
                "batch": b,
                "prefill_tokens_per_s": b * len(prompt) / min(prefill_times[1:]),
                "decode_tokens_per_s": b * args.new_tokens / min(decode_times[1:]),
                "decode_ms_per_step": 1000 * min(decode_times[1:]) / args.new_tokens,
            }
        )
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--batch", default="1,16,64")
    parser.add_argument("--prompt-ids", required=True)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    print(json.dumps({"llama_cpp_python": llama_cpp.__version__, "results": run(args)}))


if __name__ == "__main__":
    main()
