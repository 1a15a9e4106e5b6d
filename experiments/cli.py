"""The `ppl` command line, `ppl.experiments.cli`: the top of the stack, which wires models to
samplers for the user.

The choices and the help of `--methods`, `--verifier`, `--task`, `--method` and `--constraint`
come from the registries (`ppl.registry.Registry`) of `ppl.experiments.methods`,
`ppl.models.reasoning.verifiers`, the task modules, `ppl.experiments.steering` and
`ppl.models.constraints`, so a newly registered entry is offered here with no edit. Commands
import their runners when they run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppl.models.lm.language_model import DTYPES, WEIGHTS
from ppl.models.lm.served import ServerError
from ppl.registry import Registry, import_modules

if TYPE_CHECKING:
    from ppl.models.constraints.sequence_potential import SequencePotential

SCALE_HELP = "accuracy against budget of inference-scaling methods (JSONL, resumable)"
STEER_HELP = "token-level SMC steering of the model under a constraint"


def _constraints() -> Registry[Any]:
    """The constraint registry, once every constraint module has registered its builders."""
    from ppl.models.constraints.sequence_potential import CONSTRAINTS

    import_modules("ppl.models.constraints")
    return CONSTRAINTS


def _name_list(kind: str, choices: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type: comma-separated names, each one of `choices`."""

    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        for name in names:
            if name not in choices:
                raise argparse.ArgumentTypeError(
                    f"unknown {kind} {name!r}; choose from {', '.join(choices)}"
                )
        return names

    return parse


def _seed(text: str) -> int:
    """An argparse type: a seed, an integer in [0, 2**62) (jax.random.key's range, with room)."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed must be an integer, got {text!r}") from None
    if not 0 <= seed < 2**62:
        raise argparse.ArgumentTypeError(f"a seed must be in [0, 2**62), got {text}")
    return seed


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"need an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"need an integer >= {minimum}, got {value}")
        return value

    return parse


def _positive(text: str) -> float:
    """An argparse type: a finite number > 0 (NaN and inf are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"need a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"need a finite number > 0, got {text}")
    return value


def _utf8(text: str) -> str:
    """An argparse type: text that was valid UTF-8 on the command line."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid UTF-8") from None
    return text


def _constraint(text: str) -> tuple[str, str]:
    """An argparse type: NAME:ARGUMENT with NAME a registered constraint."""
    name, _, argument = _utf8(text).partition(":")
    constraints = _constraints()
    if name not in constraints:
        raise argparse.ArgumentTypeError(
            f"unknown constraint {name!r}; choose from {', '.join(constraints)} "
            "(written NAME:ARGUMENT)"
        )
    return name, argument


def _listing(**registries: Registry[Any]) -> str:
    """The help's epilog: every registry's names with their one-line help."""
    return "\n\n".join(f"{kind}:\n{registry.describe()}" for kind, registry in registries.items())


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="a GGUF file or a Hugging Face checkpoint directory (default: embedded SmolLM2-135M)",
    )
    _add_precision_args(parser)


def _add_precision_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="activations")
    parser.add_argument(
        "--weights",
        choices=WEIGHTS,
        default="quantized",
        help="GGUF matrices: kept in their quantized blocks (Q8_0, Q4_0, Q4_1, Q4_K, Q6_K; "
        "default) or all dequantized to --dtype",
    )


def _load(args: argparse.Namespace) -> Any:
    from ppl.models.lm import LanguageModel

    return LanguageModel.load(args.model, dtype=args.dtype, weights=args.weights)


def _generator(args: argparse.Namespace) -> Any:
    """`ppl scale`'s generator: the in-process model (None: the task's own) or a served one."""
    if args.backend == "jax":
        if args.base_url:
            raise ValueError("--base-url is for --backend openai")
        return _load(args) if args.model else None
    from ppl.models.lm.served import SERVER_KINDS, ClientSettings, ServedModel, load_tokenizer

    if not args.base_url or not args.model:
        raise ValueError("--backend openai needs --base-url URL and --model NAME (as served)")
    tokenizer_path = args.tokenizer or (args.model if Path(args.model).exists() else None)
    tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else None
    settings = ClientSettings(timeout_s=args.timeout, concurrency=args.concurrency)
    kind = None if args.server_kind == "auto" else SERVER_KINDS[args.server_kind]
    return ServedModel(args.base_url, args.model, tokenizer, kind, settings)


def _json(value: Any) -> str:
    """`value` as JSON; NaN and ±inf, which JSON has no words for, become the strings "nan",
    "inf" and "-inf" (never bare NaN, which JSON parsers reject)."""

    def finite(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return str(item)
        if isinstance(item, dict):
            return {key: finite(v) for key, v in item.items()}
        if isinstance(item, list | tuple):
            return [finite(v) for v in item]
        return item

    return json.dumps(finite(value), indent=2, allow_nan=False)


def _generate(args: argparse.Namespace) -> int:
    import jax

    from ppl.models.lm import SamplingParams

    sampling = SamplingParams(args.temperature, top_k=args.top_k, top_p=args.top_p)
    for flag, value in (
        ("--max-new-tokens", args.max_new_tokens),
        ("--num-samples", args.num_samples),
    ):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if not 0 <= args.seed < 2**32:
        raise ValueError(f"--seed must be in [0, 2**32), got {args.seed}")
    if not args.prompt:
        raise ValueError("the prompt is empty")
    try:
        args.prompt.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"the prompt is not valid UTF-8: {error}") from error
    lm = _load(args)
    result = lm.generate(
        jax.random.key(args.seed),
        [args.prompt],
        max_new_tokens=args.max_new_tokens,
        sampling=sampling,
        stop=args.stop or (),
        chat=args.chat,
        num_samples=args.num_samples,
    )
    if args.json:
        rows = [
            {"text": t, "token_ids": ids, "finish_reason": r, "model_logprob": float(lp)}
            for t, ids, r, lp in zip(
                result.texts,
                result.token_ids,
                result.finish_reasons,
                result.model_logprobs,
                strict=True,
            )
        ]
        print(_json(rows))
    else:
        for i, text in enumerate(result.texts):
            if args.num_samples > 1:
                print(f"--- sample {i} ({result.finish_reasons[i]})")
            print(text)
    return 0


def _bench_lm(args: argparse.Namespace) -> int:
    from ppl.models.lm.throughput import environment, format_table, measure

    try:
        batches = [int(b) for b in args.batch.split(",")]
    except ValueError as error:
        raise ValueError(f"--batch must be comma-separated integers, got {args.batch!r}") from error
    for flag, value in (
        *(("--batch", b) for b in batches),
        ("--prompt-tokens", args.prompt_tokens),
        ("--new-tokens", args.new_tokens),
    ):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    lm = _load(args)
    rows = measure(lm, batches, args.prompt_tokens, args.new_tokens, args.repeats)
    if args.json:
        print(
            _json(
                {
                    "model": lm.name,
                    "dtype": args.dtype,
                    "weights": args.weights,
                    "environment": environment(),
                    "results": rows,
                },
            )
        )
    else:
        print(f"{lm.name} ({args.dtype}, {args.weights} weights)")
        print(format_table(rows))
    return 0


def _fetch_model(args: argparse.Namespace) -> int:
    from ppl.models.lm.default_model import default_model_path

    print(default_model_path())
    return 0


def _scale(args: argparse.Namespace) -> int:
    from ppl.experiments.plots import accuracy_table, format_table
    from ppl.experiments.sweep import VerifierSpec, read_results, run_sweep
    from ppl.models.reasoning.problems_file import problems_file_task
    from ppl.models.reasoning.reward_weighting import RewardWeighting
    from ppl.models.reasoning.tasks import get_task

    if args.problems_file and args.task:
        raise ValueError("give --task or --problems-file, not both")
    task = problems_file_task(args.problems_file) if args.problems_file else get_task(args.task)
    lm = _generator(args)
    out = run_sweep(
        task,
        methods=args.methods,
        budgets=[int(b) for b in args.budgets.split(",")],
        num_problems=args.problems,
        seed=args.seed,
        out=args.out,
        lm=lm,
        verifier=VerifierSpec(
            args.verifier,
            args.false_positive_rate,
            args.false_negative_rate,
            args.epsilon,
            checkpoint=args.prm_checkpoint,
        ),
        weighting=RewardWeighting(args.weighting, args.aggregation, args.softmax_temperature),
        max_rows=args.max_rows,
        progress=not args.quiet,
    )
    print(format_table(accuracy_table(read_results(out))))
    print(f"results: {out}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from ppl.experiments.plots import accuracy_table, format_table, plot_accuracy, ratio_lines
    from ppl.experiments.sweep import read_results

    records = read_results(args.results, ("method", "budget"))
    if not records:
        raise ValueError(f"no results in {args.results}")
    table = accuracy_table(records)
    out = args.out or str(Path(args.results).with_suffix(".plot.png"))
    if Path(out).resolve() == Path(args.results).resolve():
        raise ValueError(f"--out {out} is the results file; give another figure path")
    plot_accuracy(table, out, title=args.title or Path(args.results).stem)
    print(format_table(table))
    for line in ratio_lines(table, args.reference, records):
        print(line)
    print(f"figure: {out}")
    return 0


def _particle_counts(text: str, sweep: bool) -> list[int]:
    """`--particles`: one count, or with `--sweep` a comma-separated list; each >= 1."""
    items = text.split(",")
    if len(items) > 1 and not sweep:
        raise ValueError(f"--particles takes one count without --sweep, got {text!r}")
    counts = []
    for item in items:
        try:
            count = int(item)
        except ValueError:
            raise ValueError(f"--particles must be an integer, got {item!r}") from None
        if count < 1:
            raise ValueError(f"--particles must be >= 1, got {count}")
        counts.append(count)
    return counts


def _steer(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from ppl.experiments.steering import STEERING_METHODS, steer, steering_problem, train_twist
    from ppl.models.constraints.automata import ByteAutomaton
    from ppl.models.steering.tasks import get_task

    particles = _particle_counts(args.particles, args.sweep)  # before the model loads
    task = get_task(args.task)
    automaton: ByteAutomaton | None = task.make_constraint()
    critic: SequencePotential | None = None
    if args.constraint is not None:  # the task's prompts under another constraint
        name, argument = args.constraint
        potential = _constraints().get(name)(argument)
        if isinstance(potential, ByteAutomaton):
            automaton = potential
        elif args.sweep:
            raise ValueError(f"constraint {name!r} runs as a critic; sweeps take automata only")
        else:
            automaton, critic = None, potential
        chosen = automaton
        task = dataclasses.replace(
            task, name=f"{task.name}[{name}:{argument}]", make_constraint=lambda: chosen
        )
    lm = _load(args)
    if args.sweep:
        from ppl.experiments.steering_sweep import (
            format_summary,
            read_records,
            run_steering_sweep,
            summary,
        )

        out = run_steering_sweep(
            lm,
            task,
            methods=args.methods,
            particles=particles,
            seeds=list(range(args.seed, args.seed + args.seeds)),
            out=args.out,
            progress=not args.quiet,
        )
        print(format_summary(summary(read_records(out))))
        print(f"results: {out}")
        return 0
    problem = steering_problem(lm, task.prompts, task.max_tokens, automaton, critic, task.chat)
    twist = None
    if STEERING_METHODS.get(args.method).twisted:
        twist = train_twist(jax.random.key(args.seed + 10_000), lm, problem)
    (num_particles,) = particles
    result = steer(jax.random.key(args.seed), lm, problem, args.method, num_particles, twist=twist)
    weights = np.exp(result.log_weights)
    print(f"task {task.name}: {task.description}; method {args.method}, {num_particles} particles")
    for i in np.argsort(-weights)[: args.show]:
        mark = "ok " if result.satisfied[i] else "NO "
        print(f"{weights[i]:7.4f} {mark} {result.texts[i]!r}")
    print(f"log Z estimate: {result.log_evidence:.4f}")
    print(
        f"ESS per step: min {result.ess.min():.1f}, resampled {int(result.resampled.sum())} times"
    )
    rate = result.decoded_tokens / result.wall_s
    print(f"{result.decoded_tokens} tokens in {result.wall_s:.2f} s ({rate:.0f} tokens/s)")
    return 0


def _add_scale(commands: Any) -> None:
    from ppl.experiments.methods import METHODS
    from ppl.experiments.sweep import VERIFIERS
    from ppl.models.reasoning.reward_weighting import AGGREGATIONS, RULES
    from ppl.models.reasoning.tasks import DEFAULT_TASK, TASKS

    scale = commands.add_parser(
        "scale",
        help=SCALE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_listing(methods=METHODS, verifiers=VERIFIERS, tasks=TASKS),
    )
    scale.add_argument(
        "--task", default=None, choices=TASKS.names(), help=f"default: {DEFAULT_TASK}"
    )
    scale.add_argument(
        "--methods",
        default="bon,wbon,sc,beam,dvts,pf",
        type=_name_list("method", METHODS.names()),
        help=f"comma-separated, from: {', '.join(METHODS)} (listed below)",
    )
    scale.add_argument(
        "--problems-file",
        default=None,
        help="a local JSONL of GSM8K/MATH500-style problems ({question|problem, answer} per "
        "line), graded with math-verify; the first --problems of them are used",
    )
    scale.add_argument("--budgets", default="1,2,4,8,16,32")
    scale.add_argument("--problems", type=_count(1), default=50)
    scale.add_argument("--seed", type=_seed, default=0)
    scale.add_argument("--out", default="results.jsonl")
    scale.add_argument(
        "--model",
        default=None,
        help="a GGUF file or checkpoint directory; with --backend openai, the served model name",
    )
    scale.add_argument(
        "--backend",
        default="jax",
        choices=("jax", "openai"),
        help="jax: the in-process runtime; openai: an OpenAI-compatible completions server "
        "(vLLM, SGLang, llama.cpp's) at --base-url",
    )
    scale.add_argument("--base-url", default=None, help="e.g. http://127.0.0.1:8000/v1")
    scale.add_argument(
        "--tokenizer",
        default=None,
        help="with --backend openai: a GGUF file or checkpoint directory whose chat template "
        "formats chat prompts (default: --model when it is a local path)",
    )
    scale.add_argument(
        "--server-kind",
        default="auto",
        choices=("auto", "vllm", "sglang", "llama-cpp-python", "generic"),
        help="what the server returns (auto: detected from /v1/models; docs/reasoning.md)",
    )
    scale.add_argument("--concurrency", type=_count(1), default=16, help="requests in flight")
    scale.add_argument("--timeout", type=_positive, default=300.0, help="seconds per request")
    _add_precision_args(scale)
    scale.add_argument(
        "--verifier",
        default="arithmetic",
        choices=VERIFIERS.names(),
        help="process verifier (listed below)",
    )
    scale.add_argument(
        "--prm-checkpoint", default=None, metavar="PATH", help="--verifier prm's weights directory"
    )
    scale.add_argument("--false-positive-rate", type=float, default=0.0)
    scale.add_argument("--false-negative-rate", type=float, default=0.0)
    scale.add_argument("--epsilon", type=float, default=0.05, help="softening of 0/1 verdicts")
    scale.add_argument("--weighting", default="bernoulli", choices=RULES)
    scale.add_argument("--aggregation", default="product", choices=AGGREGATIONS)
    scale.add_argument("--softmax-temperature", type=_positive, default=1.0)
    scale.add_argument("--max-rows", type=_count(1), default=256, help="prompts x budget per batch")
    scale.add_argument("--quiet", action="store_true", help="no progress bar")
    scale.set_defaults(func=_scale)


def _add_steer(commands: Any) -> None:
    from ppl.experiments.steering import STEERING_METHODS
    from ppl.experiments.steering_sweep import sweep_methods
    from ppl.models.steering.tasks import TASKS as STEERING_TASKS

    steer = commands.add_parser(
        "steer",
        help=STEER_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_listing(methods=STEERING_METHODS, tasks=STEERING_TASKS, constraints=_constraints()),
    )
    steer.add_argument("--task", default="short-words", choices=STEERING_TASKS.names())
    steer.add_argument(
        "--constraint",
        type=_constraint,
        default=None,
        metavar="NAME:ARGUMENT",
        help="the task's prompts under this constraint instead (listed below), e.g. "
        "max-word-length:4 or 'regex:[a-z ]+'",
    )
    _add_model_args(steer)
    steer.add_argument(
        "--method", default="smc", choices=STEERING_METHODS.names(), help="listed below"
    )
    steer.add_argument("--particles", default="16", help="a count (a list with --sweep)")
    steer.add_argument("--seed", type=_seed, default=0)
    steer.add_argument("--show", type=_count(0), default=8, help="samples to print, by weight")
    steer.add_argument("--sweep", action="store_true", help="run methods x particles x seeds")
    steer.add_argument(
        "--methods",
        default="rejection,best_of_n,masked,is,smc,twisted",
        type=_name_list("sweep method", sweep_methods()),
        help=f"comma-separated, for --sweep, from: {', '.join(sweep_methods())}",
    )
    steer.add_argument("--seeds", type=_count(1), default=3, help="seeds per cell of the sweep")
    steer.add_argument("--out", default="steering.jsonl")
    steer.add_argument("--quiet", action="store_true", help="no progress bar")
    steer.set_defaults(func=_steer)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `ppl` parser; given `only`, the commands whose options come from registries
    (`scale`, `steer`) are built in full only when `only` names them."""
    parser = argparse.ArgumentParser(prog="ppl", description="ppl-jax command line")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="generate text with a language model")
    gen.add_argument("prompt")
    _add_model_args(gen)
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=1.0, help="0 for greedy decoding")
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--stop", action="append", help="a stop string (repeatable)")
    gen.add_argument("--num-samples", type=int, default=1)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--json", action="store_true", help="print JSON with token ids and logprobs")
    gen.set_defaults(func=_generate)

    bench = commands.add_parser("bench-lm", help="prefill and decode throughput of the runtime")
    _add_model_args(bench)
    bench.add_argument("--batch", default="1,16,64", help="comma-separated batch sizes")
    bench.add_argument("--prompt-tokens", type=int, default=64)
    bench.add_argument("--new-tokens", type=int, default=64)
    bench.add_argument("--repeats", type=_count(1), default=2)
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=_bench_lm)

    fetch = commands.add_parser("fetch-model", help="download and cache the default model")
    fetch.set_defaults(func=_fetch_model)

    for name, helptext, add in (
        ("scale", SCALE_HELP, _add_scale),
        ("steer", STEER_HELP, _add_steer),
    ):
        if only in (None, name):
            add(commands)
        else:  # listed, with no options: `ppl generate` need not import their registries
            commands.add_parser(name, help=helptext)

    plot = commands.add_parser("plot", help="plot accuracy against budget from a sweep")
    plot.add_argument("results")
    plot.add_argument("--out", default=None, help="figure path (default: <results stem>.plot.png)")
    plot.add_argument("--title", default=None)
    plot.add_argument("--reference", default="pf", help="method for the budget ratios")
    plot.set_defaults(func=_plot)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ppl.models.lm.model_cache import compilation_cache_wanted, enable_compilation_cache

    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(only=command).parse_args(argv)
    if compilation_cache_wanted():  # compiled programs persist across runs (docs/lm-runtime.md)
        enable_compilation_cache()
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, ServerError) as error:  # they name the problem
        print(f"ppl {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, no stack, the shell's code for SIGINT
        writes = args.command == "scale" or (args.command == "steer" and args.sweep)
        where = f"; results so far are in {args.out}" if writes else ""
        print(f"ppl {args.command}: interrupted{where}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
