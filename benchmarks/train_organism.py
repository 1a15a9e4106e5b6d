"""Train the reasoning model organism: a small Llama-layout decoder on chained arithmetic.

    .venv/bin/python benchmarks/train_organism.py --seed 0 --steps 900 \
        --out models/reasoning/organism

Builds the data with `ppl.models.reasoning.chained_arithmetic.make_problems`, a byte-level BPE
tokenizer (256 byte tokens, merges for the task's fixed phrases, `<|bos|>`/`<|eos|>`), and a
decoder over `ppl.models.lm.params.Params`, trained with optax AdamW (warm-up, cosine decay) on the
next-token loss of the solution tokens and the end-of-sequence token (the prompt is masked).
The training forward pass is the runtime's own `ppl.models.lm.transformer.forward` (a prefill into
a fresh cache), so the saved weights run unchanged in `LanguageModel`. Writes config.json,
model.safetensors, tokenizer.json, tokenizer_config.json and training_summary.json to `--out`,
then reloads the directory through `LanguageModel.from_directory` and measures accuracy on
held-out problems: pass@1 at temperatures 1.0 and 0.7 (mean over samples), greedy accuracy,
pass@k, and how often an arithmetic check of the steps flags wrong and right answers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tokenizers
from safetensors.numpy import save_file
from tokenizers import decoders, models, pre_tokenizers
from tqdm import tqdm

from ppl.models.lm import DecoderConfig, LanguageModel, SamplingParams, init_cache
from ppl.models.lm.config import rope_inverse_frequencies
from ppl.models.lm.params import LayerParams, Params
from ppl.models.lm.tokenizer import _unicode_to_byte
from ppl.models.lm.transformer import forward, output_logits
from ppl.models.reasoning.chained_arithmetic import (
    STEP_SEPARATOR,
    Problem,
    answer_line,
    apply_operation,
    make_problems,
    parse_answer,
    parse_step,
    prompt_text,
    solution_text,
    split_steps,
)

SPECIAL_TOKENS = ("<|bos|>", "<|eos|>")
# Fixed phrases of the task, merged left to right into single tokens. Digits are split one per
# token by the pre-tokenizer, so every number is spelled digit by digit.
PHRASES = (
    "\n\n",
    " + ",
    " - ",
    " * ",
    " = ",
    "Start with ",
    ". Add ",
    ". Subtract ",
    ". Multiply by ",
    ". What is the result?",
    "The answer is ",
)
ROPE_THETA = 10000.0
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "models" / "reasoning" / "organism"
_DECAYED = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
_FIELDS = LayerParams._fields


# Tokenizer -------------------------------------------------------------------------------
def build_tokenizer() -> tokenizers.Tokenizer:
    """Byte-level BPE: 256 byte tokens, the merges of `PHRASES`, then the special tokens."""
    to_char = {b: c for c, b in _unicode_to_byte().items()}
    tokens = [to_char[b] for b in range(256)]
    merges: list[tuple[str, str]] = []
    for phrase in PHRASES:
        chars = [to_char[b] for b in phrase.encode("ascii")]
        prefix = chars[0]
        for char in chars[1:]:
            if prefix + char not in tokens:
                merges.append((prefix, char))
                tokens.append(prefix + char)
            prefix += char
    tokens += SPECIAL_TOKENS
    backend = tokenizers.Tokenizer(
        models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(
        [tokenizers.AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]
    )
    return backend


def encode_examples(
    backend: tokenizers.Tokenizer,
    prompts: Sequence[str],
    solutions: Sequence[str],
    eos_id: int,
    multiple: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded token rows [N, S] (prompt, solution, EOS; S a multiple of `multiple`) and
    a target mask [N, S] marking the tokens to predict (solution and EOS)."""
    prompt_ids = backend.encode_batch(list(prompts))
    solution_ids = backend.encode_batch(list(solutions), add_special_tokens=False)
    rows = [[*p.ids, *s.ids, eos_id] for p, s in zip(prompt_ids, solution_ids, strict=True)]
    width = multiple * math.ceil(max(map(len, rows)) / multiple)
    tokens = np.zeros((len(rows), width), np.int32)
    targets = np.zeros((len(rows), width), bool)
    for i, (row, prompt) in enumerate(zip(rows, prompt_ids, strict=True)):
        tokens[i, : len(row)] = row
        targets[i, len(prompt.ids) : len(row)] = True
    return tokens, targets


def slipped_solution(
    problem: Problem, rng: np.random.Generator, max_value: int = 999, tries: int = 8
) -> str | None:
    """The solution with one non-arithmetic slip, or None if no slip keeps values in range.

    One step copies a wrong operand (another operation's operand, or the right one with a
    digit changed) or the wrong operation (+ for - or back); that step and all later ones are
    computed correctly from there, so every line is arithmetically right but the answer is
    wrong. Training on a few such solutions gives sampled generations errors that a per-step
    arithmetic check cannot see.
    """
    steps = [parse_step(s) for s in problem.steps]
    chain = [(s.op, s.right) for s in steps if s is not None]
    start = steps[0].left if steps and steps[0] else 0
    for _ in range(tries):
        i = int(rng.integers(len(chain)))
        op, right = chain[i]
        others = [r for o, r in chain if o == op and r != right]
        kind = int(rng.integers(3))
        if kind == 0 and others:
            right = others[int(rng.integers(len(others)))]
        elif kind == 1 and op in "+-":
            op = "-" if op == "+" else "+"
        else:
            digits = list(str(right))
            position = int(rng.integers(len(digits)))
            digits[position] = str((int(digits[position]) + int(rng.integers(1, 10))) % 10)
            right = int("".join(digits))
        if right == 0 or (op, right) == chain[i]:
            continue
        slipped = [*chain[:i], (op, right), *chain[i + 1 :]]
        value, lines = start, []
        for o, r in slipped:
            result = apply_operation(value, o, r)
            lines.append(f"{value} {o} {r} = {result}")
            value = result
            if not 0 <= value <= max_value:
                break
        else:
            return STEP_SEPARATOR.join([*lines, answer_line(value)])
    return None


def training_solutions(
    problems: Sequence[Problem], slip_rate: float, rng: np.random.Generator
) -> list[str]:
    """Reference solutions, with a share `slip_rate` replaced by `slipped_solution`."""
    texts = []
    for problem in problems:
        slipped = slipped_solution(problem, rng) if rng.random() < slip_rate else None
        texts.append(slipped or solution_text(problem))
    return texts


# Model -----------------------------------------------------------------------------------
def init_params(rng_key: jax.Array, config: DecoderConfig) -> Params:
    """Scaled normal initialisation (GPT-2 style: residual outputs shrunk by sqrt(2 L)), unit
    norm weights, tied embeddings, the runtime's `Params` layout."""
    d, f, n = config.hidden_size, config.intermediate_size, config.num_layers
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    keys = iter(jax.random.split(rng_key, 8))

    def normal(std: float, *shape: int) -> jax.Array:
        return std * jax.random.normal(next(keys), shape, jnp.float32)

    residual = 1.0 / math.sqrt(2 * n)
    layers = LayerParams(
        attn_norm=jnp.ones((n, d)),
        wq=normal(d**-0.5, n, d, q),
        wk=normal(d**-0.5, n, d, kv),
        wv=normal(d**-0.5, n, d, kv),
        wo=normal(q**-0.5 * residual, n, q, d),
        bq=None,
        bk=None,
        bv=None,
        ffn_norm=jnp.ones((n, d)),
        w_gate=normal(d**-0.5, n, d, f),
        w_up=normal(d**-0.5, n, d, f),
        w_down=normal(f**-0.5 * residual, n, f, d),
    )
    return Params(
        embed=normal(d**-0.5, config.vocab_size, d),
        layers=layers,
        final_norm=jnp.ones((d,)),
        lm_head=None,
        rope_inv_freq=jnp.asarray(rope_inverse_frequencies(config.head_dim, ROPE_THETA)),
    )


def loss_fn(
    params: Params, config: DecoderConfig, tokens: jax.Array, targets: jax.Array
) -> jax.Array:
    """Mean next-token cross-entropy over the target positions, through the runtime forward."""
    batch, width = tokens.shape
    cache = init_cache(config, batch, width)
    lengths = jnp.full((batch,), width, jnp.int32)
    hidden, _ = forward(params, config, tokens, cache, lengths, attend_cache=False)
    logits = output_logits(params, hidden[:, :-1])
    logprobs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logprobs, tokens[:, 1:, None], axis=-1)[..., 0]
    mask = targets[:, 1:].astype(jnp.float32)
    return -jnp.sum(picked * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def make_optimizer(steps: int, learning_rate: float, weight_decay: float) -> Any:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, max(1, steps // 20), steps, learning_rate * 0.05
    )

    def decay_mask(params: Params) -> Params:
        layers = {k: getattr(params.layers, k) is not None and k in _DECAYED for k in _FIELDS}
        return Params(True, LayerParams(**layers), False, None, False)  # type: ignore[arg-type]

    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(schedule, b1=0.9, b2=0.98, weight_decay=weight_decay, mask=decay_mask),
    )


class LengthBuckets:
    """Minibatches of rows of similar length (padded widths rounded up to `multiple`).

    A step draws a bucket with probability proportional to its size, then the next rows of
    that bucket's shuffled order, so every row is used about equally often and short rows
    are not padded to the longest one.
    """

    def __init__(
        self, targets: np.ndarray, batch_size: int, rng: np.random.Generator, multiple: int = 16
    ) -> None:
        lengths = targets.shape[1] - np.argmax(targets[:, ::-1], axis=1)
        widths = np.minimum(multiple * np.ceil(lengths / multiple), targets.shape[1]).astype(int)
        self.buckets = [np.flatnonzero(widths == w) for w in np.unique(widths)]
        self.buckets = [b for b in self.buckets if len(b) >= batch_size]
        if not self.buckets:
            raise ValueError(f"fewer than {batch_size} training rows of any one length")
        self.widths = [int(widths[b[0]]) for b in self.buckets]
        self.sizes = np.asarray([len(b) for b in self.buckets], float)
        self.batch_size, self.rng = batch_size, rng
        self.orders = [rng.permutation(b) for b in self.buckets]
        self.cursors = [0] * len(self.buckets)

    def next(self) -> tuple[np.ndarray, int]:
        """Row indices of the next minibatch and the padded width it needs."""
        k = int(self.rng.choice(len(self.buckets), p=self.sizes / self.sizes.sum()))
        if self.cursors[k] + self.batch_size > len(self.orders[k]):
            self.orders[k], self.cursors[k] = self.rng.permutation(self.buckets[k]), 0
        rows = self.orders[k][self.cursors[k] : self.cursors[k] + self.batch_size]
        self.cursors[k] += self.batch_size
        return rows, self.widths[k]


def train(
    config: DecoderConfig,
    params: Params,
    tokens: np.ndarray,
    targets: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    seed: int,
) -> tuple[Params, list[float]]:
    """AdamW over shuffled minibatches; the rotary frequencies stay fixed."""
    optimizer = make_optimizer(steps, learning_rate, weight_decay)
    inv_freq = params.rope_inv_freq
    trainable = params._replace(rope_inv_freq=jnp.zeros(()))
    opt_state = optimizer.init(trainable)

    @jax.jit
    def step(trainable: Params, opt_state: Any, x: jax.Array, y: jax.Array) -> Any:
        def objective(p: Params) -> jax.Array:
            return loss_fn(p._replace(rope_inv_freq=inv_freq), config, x, y)

        loss, grads = jax.value_and_grad(objective)(trainable)
        grads = grads._replace(rope_inv_freq=jnp.zeros(()))
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, loss

    batches = LengthBuckets(targets, batch_size, np.random.default_rng(seed))
    losses: list[float] = []
    bar = tqdm(range(steps), desc="train", unit="step")
    for i in bar:
        rows, width = batches.next()
        x, y = tokens[rows, :width], targets[rows, :width]
        trainable, opt_state, loss = step(trainable, opt_state, x, y)
        if i % 25 == 0 or i == steps - 1:
            losses.append(float(loss))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return trainable._replace(rope_inv_freq=inv_freq), losses


# Checkpoint ------------------------------------------------------------------------------
HF_NAMES = {
    "attn_norm": "input_layernorm.weight",
    "wq": "self_attn.q_proj.weight",
    "wk": "self_attn.k_proj.weight",
    "wv": "self_attn.v_proj.weight",
    "wo": "self_attn.o_proj.weight",
    "ffn_norm": "post_attention_layernorm.weight",
    "w_gate": "mlp.gate_proj.weight",
    "w_up": "mlp.up_proj.weight",
    "w_down": "mlp.down_proj.weight",
}


def save_checkpoint(
    out: Path, config: DecoderConfig, params: Params, backend: tokenizers.Tokenizer
) -> None:
    """Hugging Face Llama layout: [out, in] matrices, half-split rotary (the runtime's own)."""
    out.mkdir(parents=True, exist_ok=True)
    tensors = {
        "model.embed_tokens.weight": np.asarray(params.embed),
        "model.norm.weight": np.asarray(params.final_norm),
    }
    for field, name in HF_NAMES.items():
        stacked = np.asarray(getattr(params.layers, field))
        for i in range(config.num_layers):
            value = stacked[i]
            tensors[f"model.layers.{i}.{name}"] = value.T if value.ndim == 2 else value
    save_file(
        {k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    (out / "model.safetensors").chmod(0o644)  # safetensors writes it owner-only
    bos, eos = (backend.token_to_id(t) for t in SPECIAL_TOKENS)
    hf_config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": ROPE_THETA,
        "max_position_embeddings": config.context_length,
        "tie_word_embeddings": True,
        "attention_bias": False,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": "float32",
    }
    (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    backend.save(str(out / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIAL_TOKENS[0],
        "eos_token": SPECIAL_TOKENS[1],
        "add_bos_token": False,
        "model_max_length": config.context_length,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")


# Evaluation ------------------------------------------------------------------------------
def check_generation(text: str, problem: Problem) -> dict[str, bool]:
    """A local checker: is the final answer right, and which kinds of error does the text show.

    `arithmetic`: some step "a op b = c" has c != a op b (what a step verifier sees).
    `chain`: a step does not start from the previous result (or the start value).
    `operand`: a step's operation or operand differs from the question's.
    `malformed`: a block is neither a step nor the answer line, or the answer is missing.
    """
    blocks = split_steps(text)
    answer = parse_answer(blocks[-1]) if blocks else None
    parsed = [parse_step(b) for b in blocks[:-1]]
    reference = [parse_step(s) for s in problem.steps]
    start = reference[0].left if reference and reference[0] else None
    arithmetic = chain = operand = False
    previous = start
    for i, step in enumerate(parsed):
        if step is None:
            continue
        arithmetic |= not step.is_correct
        chain |= step.left != previous
        ref = reference[i] if i < len(reference) else None
        operand |= ref is None or (step.op, step.right) != (ref.op, ref.right)
        previous = step.result
    return {
        "correct": answer == problem.answer,
        "arithmetic": arithmetic,
        "chain": chain,
        "operand": operand or len(parsed) != len(reference),
        "malformed": answer is None or any(s is None for s in parsed),
    }


def evaluate(
    lm: LanguageModel,
    problems: Sequence[Problem],
    rng_key: jax.Array,
    temperature: float,
    num_samples: int,
    batch_prompts: int,
    max_new_tokens: int,
) -> tuple[dict[str, Any], list[list[dict[str, bool]]]]:
    """Sample `num_samples` full solutions per problem; accuracy, pass@k and error kinds."""
    checks: list[list[dict[str, bool]]] = []
    sampling = SamplingParams(temperature=temperature)
    for start in range(0, len(problems), batch_prompts):
        chunk = problems[start : start + batch_prompts]
        out = lm.generate(
            jax.random.fold_in(rng_key, start),
            [prompt_text(p) for p in chunk],
            max_new_tokens=max_new_tokens,
            sampling=sampling,
            num_samples=num_samples,
        )
        for i, problem in enumerate(chunk):
            texts = out.texts[i * num_samples : (i + 1) * num_samples]
            checks.append([check_generation(t, problem) for t in texts])
    return summarize(checks), checks


def summarize(checks: list[list[dict[str, bool]]]) -> dict[str, Any]:
    correct = np.asarray([[c["correct"] for c in row] for row in checks])
    flagged = np.asarray([[c["arithmetic"] for c in row] for row in checks])
    n = correct.shape[1]
    summary: dict[str, Any] = {
        "problems": len(checks),
        "samples_per_problem": n,
        "accuracy": float(correct.mean()),
        "accuracy_stderr": float(correct.mean(axis=1).std(ddof=1) / math.sqrt(len(checks))),
        "pass_at_k": {str(k): pass_at_k(correct, k) for k in (1, 2, 4, 8, 16) if k <= n},
        "flagged_among_wrong": _rate(flagged[~correct]),
        "flagged_among_right": _rate(flagged[correct]),
    }
    wrong = [c for row in checks for c in row if not c["correct"]]
    for kind in ("arithmetic", "chain", "operand", "malformed"):
        summary[f"wrong_with_{kind}_error"] = _rate(np.asarray([c[kind] for c in wrong]))
    summary["wrong_without_arithmetic_error"] = (
        1.0 - summary["wrong_with_arithmetic_error"] if wrong else None
    )
    return summary


def accuracy_by_operations(
    problems: Sequence[Problem], checks: list[list[dict[str, bool]]]
) -> dict[str, float]:
    """Mean accuracy of the samples, grouped by the problems' number of operations."""
    groups: dict[int, list[bool]] = {}
    for problem, row in zip(problems, checks, strict=True):
        groups.setdefault(len(problem.steps), []).extend(c["correct"] for c in row)
    return {str(n): float(np.mean(groups[n])) for n in sorted(groups)}


def _rate(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def pass_at_k(correct: np.ndarray, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021) averaged over problems; correct: [P, n] bool."""
    n = correct.shape[1]
    c = correct.sum(axis=1)
    failing = np.asarray([math.comb(n - int(ci), k) / math.comb(n, k) for ci in c])
    return float(np.mean(1.0 - failing))


# Main ------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--train-problems", type=int, default=100_000)
    parser.add_argument("--min-operations", type=int, default=3)
    parser.add_argument("--max-operations", type=int, default=6)
    parser.add_argument("--add-max", type=int, default=999, help="largest add/subtract operand")
    parser.add_argument("--multiply-max", type=int, default=9, help="largest multiplier")
    parser.add_argument(
        "--slip-rate", type=float, default=0.1, help="share of training solutions with a slip"
    )
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--ffn", type=int, default=384)
    parser.add_argument("--context-length", type=int, default=256)
    parser.add_argument("--eval-seed", type=int, default=1_000_003)
    parser.add_argument("--eval-problems", type=int, default=256)
    parser.add_argument("--num-samples", type=int, default=16)
    parser.add_argument("--skip-eval", action="store_true")
    return parser.parse_args(argv)


def task_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `make_problems` keyword arguments chosen on the command line."""
    return {
        "num_operations": (args.min_operations, args.max_operations),
        "add_range": (1, args.add_max),
        "multiply_range": (2, args.multiply_max),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started = time.perf_counter()
    backend = build_tokenizer()
    eos_id = backend.token_to_id(SPECIAL_TOKENS[1])
    assert eos_id is not None
    config = DecoderConfig(
        vocab_size=backend.get_vocab_size(with_added_tokens=True),
        hidden_size=args.hidden_size,
        intermediate_size=args.ffn,
        num_layers=args.layers,
        num_heads=args.heads,
        num_kv_heads=args.kv_heads,
        head_dim=args.hidden_size // args.heads,
        rms_norm_eps=1e-5,
        context_length=args.context_length,
        tie_embeddings=True,
    )
    problems = make_problems(args.seed, args.train_problems, **task_options(args))
    solutions = training_solutions(problems, args.slip_rate, np.random.default_rng(args.seed + 1))
    prompts = [prompt_text(p) for p in problems]
    tokens, targets = encode_examples(backend, prompts, solutions, eos_id)
    width = tokens.shape[1]
    params = init_params(jax.random.key(args.seed), config)
    num_params = sum(int(np.size(x)) for x in jax.tree.leaves(params)) - config.head_dim // 2
    print(f"{num_params} parameters, {len(problems)} problems of width {width} tokens")
    train_start = time.perf_counter()
    params, losses = train(
        config,
        params,
        tokens,
        targets,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )
    train_seconds = time.perf_counter() - train_start
    save_checkpoint(args.out, config, params, backend)
    summary: dict[str, Any] = {
        "command": " ".join(
            ["benchmarks/train_organism.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "task": task_options(args),
        "slip_rate": args.slip_rate,
        "train_problems": args.train_problems,
        "parameters": num_params,
        "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
        "checkpoint_bytes": sum(f.stat().st_size for f in args.out.iterdir() if f.is_file()),
        "train_seconds": round(train_seconds, 1),
        "final_loss": losses[-1],
        "loss_curve": losses[:: max(1, len(losses) // 20)],
    }
    if not args.skip_eval:
        summary["evaluation"] = run_evaluation(args, {p.question for p in problems})
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    (args.out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


def run_evaluation(args: argparse.Namespace, train_questions: set[str]) -> dict[str, Any]:
    """Reload the checkpoint through the runtime and measure it on held-out problems."""
    lm = LanguageModel.from_directory(args.out)
    problems = make_problems(args.eval_seed, args.eval_problems, **task_options(args))
    result: dict[str, Any] = {
        "eval_seed": args.eval_seed,
        "overlap_with_training": sum(p.question in train_questions for p in problems),
    }
    key = jax.random.key(args.seed + 1)
    settings = [
        ("greedy", 0.0, 1),
        ("t1.0", 1.0, args.num_samples),
        ("t0.7", 0.7, args.num_samples),
    ]
    for name, temperature, samples in settings:
        start = time.perf_counter()
        summary, checks = evaluate(
            lm,
            problems,
            jax.random.fold_in(key, int(temperature * 10)),
            temperature,
            samples,
            batch_prompts=max(1, 1024 // samples),
            max_new_tokens=128,
        )
        summary["accuracy_by_operations"] = accuracy_by_operations(problems, checks)
        summary["seconds"] = round(time.perf_counter() - start, 1)
        result[name] = summary
        print(name, json.dumps(summary))
    return result


if __name__ == "__main__":
    main()
