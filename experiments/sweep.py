"""Accuracy-against-budget sweeps of reasoning methods, written to JSONL as they go.

`run_sweep` evaluates every (method, budget) on the same problems and appends one JSON line
per (problem, method, budget) to `out` as soon as a batch of problems is done, flushing each
line. Re-running with the same arguments skips the lines already in the file, so a crash
loses nothing finished. Problems run in batches of prompts x budget rows (`max_rows`); every
draw of problem i comes from a key folded from (seed, method, budget, i) alone
(`MethodInputs.problem_ids`), so neither `max_rows` nor where a crash cut the sweep changes a
result. A line is done when its (configuration hash, method, budget, problem) is in the file
(`ppl.experiments.sweep_key.SweepConfig`: every setting that changes results, the model's
weights hash included), and lines are appended under an exclusive lock with the done keys
re-read, so concurrent runs on one file write each key once.
A problem that fails with a `ppl.models.lm.errors.ProblemFailure` (a prompt longer than the
context, a verifier's invalid rewards) is recorded with its error and the sweep goes on; any
other exception is a bug or a bad setting and stops the sweep with its traceback. A batch
that a served model could not answer (a `ppl.models.lm.served.ServerError`: the server went
away, timed out, or answered with an error) is recorded as `"failed": true` with the error,
not as a wrong answer: accuracy tables leave it out and a re-run retries it. When the server
cannot be reached at all the sweep stops there, after writing what it has.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
from tqdm.auto import tqdm

from ppl.experiments.methods import METHODS
from ppl.experiments.reasoning import MethodInputs, ProblemOutcome
from ppl.experiments.sweep_key import SweepConfig, describe, model_identity
from ppl.models.lm.errors import ProblemFailure
from ppl.models.lm.language_model import LanguageModel
from ppl.models.lm.served import ServedModel, ServerError, ServerUnreachableError
from ppl.models.reasoning.reward_weighting import RewardWeighting
from ppl.models.reasoning.tasks import Task, TaskProblem
from ppl.models.reasoning.verifiers import VERIFIERS, VerifierSpec
from ppl.registry import import_modules

import_modules("ppl.models.reasoning")  # every verifier module registers its verifiers

__all__ = [
    "METHODS",
    "VERIFIERS",
    "VerifierSpec",
    "check_out_path",
    "read_results",
    "run_method",
    "run_sweep",
]


def run_method(method: str, rng_key: jax.Array, inputs: MethodInputs) -> list[ProblemOutcome]:
    """Run the registered method `method` (see `ppl.experiments.methods`) on `inputs`."""
    return METHODS.get(method)(rng_key, inputs)


def _done_keys(
    out: Path,
    key: Callable[[dict[str, Any]], tuple] | None = None,
    required: Sequence[str] | None = None,
) -> set[tuple]:
    key = key or _key
    done: set[tuple] = set()
    if not out.exists():
        return done
    for record in read_results(out, required or RESULT_FIELDS):  # cut or foreign: run again
        if not record.get("failed"):  # a cell the server failed is run again
            done.add(key(record))
    return done


def _key(record: dict[str, Any]) -> tuple:
    return (record.get("config_key"), record["method"], record["budget"], record["problem"])


def _batches(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_sweep(
    task: Task,
    methods: Sequence[str],
    budgets: Sequence[int],
    num_problems: int,
    seed: int,
    out: str | Path,
    lm: LanguageModel | ServedModel | None = None,
    verifier: VerifierSpec | None = None,
    weighting: RewardWeighting | None = None,
    max_rows: int = 256,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Run every method at every budget on `num_problems` problems of `task` (drawn with
    `seed`), appending JSON lines to `out`; returns the path. `lm` (default: the task's model)
    may be a `ServedModel`."""
    for method in methods:
        METHODS.get(method)  # an unknown name fails here, naming the choices
    if not budgets or min(budgets) < 1:
        raise ValueError(f"budgets must be positive integers, got {list(budgets)}")
    verifier = verifier or VerifierSpec()
    VERIFIERS.get(verifier.name)  # an unknown name fails here, naming the choices
    weighting = (weighting or RewardWeighting()).validate()
    out = check_out_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lm = lm or task.load_model()
    problems = task.make_problems(seed, num_problems)
    verifier.build([p.answer for p in problems], lm)  # a verifier that cannot load fails here
    config = SweepConfig(
        task.name,
        model_identity(lm),
        describe(verifier),
        describe(weighting),
        describe(task.settings),
        seed,
    )
    base = {
        "task": task.name,
        "model": lm.name,
        "verifier": verifier.label(),
        "seed": seed,
        "config_key": config.key(),
        "config": dataclasses.asdict(config),
    }
    done = _done_keys(out)
    work = []
    for m, method in enumerate(methods):
        for budget in budgets:
            pending = [
                i
                for i in range(num_problems)
                if _key({**base, "method": method, "budget": budget, "problem": i}) not in done
            ]
            work.append((m, method, budget, pending))
    total = sum(len(p) for *_, p in work)
    if total < num_problems * len(methods) * len(budgets):
        log(f"resuming: {num_problems * len(methods) * len(budgets) - total} results in {out}")
    root = jax.random.key(seed)
    with tqdm(total=total, desc="sweep", unit="problem", disable=not progress) as bar:
        for m, method, budget, pending in work:
            bar.set_postfix_str(f"{method} N={budget}")
            for batch in _batches(pending, max(1, max_rows // budget)):
                key = jax.random.fold_in(jax.random.fold_in(root, m), budget)
                records = _run_batch(
                    method, key, lm, problems, batch, budget, task, verifier, weighting
                )
                lines = [
                    {**base, "method": method, "budget": budget, "problem": problem, **record}
                    for problem, record in zip(batch, records, strict=True)
                ]
                append_new(out, lines, _key)
                bar.update(len(batch))
                if any(r.get("unreachable") for r in records):
                    raise ServerUnreachableError(
                        f"{records[0]['error']}; the sweep stopped, its results so far are in "
                        f"{out} (run the same command again to resume)"
                    )
    return out


def _run_batch(
    method: str,
    rng_key: jax.Array,
    lm: LanguageModel | ServedModel,
    problems: Sequence[TaskProblem],
    batch: Sequence[int],
    budget: int,
    task: Task,
    verifier: VerifierSpec,
    weighting: RewardWeighting,
) -> list[dict[str, Any]]:
    chosen = [problems[i] for i in batch]
    start = time.perf_counter()
    try:
        inputs = MethodInputs(
            lm,
            tuple(p.prompt for p in chosen),
            verifier.build([p.answer for p in chosen], lm),
            budget,
            weighting,
            task.settings,
            problem_ids=tuple(batch),  # each problem's draws from its own key
        )
        outcomes = run_method(method, rng_key, inputs)
    except ServerError as error:  # not the answer's fault: recorded as failed, retried later
        failed = {"failed": True, "correct": None, "error": f"{type(error).__name__}: {error}"}
        if isinstance(error, ServerUnreachableError):
            failed["unreachable"] = True
        return [{"reference": p.answer, **failed} for p in chosen]
    except ProblemFailure as error:  # this problem's fault (a prompt too long, bad rewards)
        if len(batch) > 1:  # isolate the problem that fails; the others still run
            return [
                record
                for i in batch
                for record in _run_batch(
                    method, rng_key, lm, problems, [i], budget, task, verifier, weighting
                )
            ]
        return [{"reference": chosen[0].answer, "correct": False, "error": str(error)}]
    seconds = (time.perf_counter() - start) / len(batch)
    return [
        {
            "reference": problem.answer,
            "answer": outcome.answer,
            "correct": task.grade(outcome.answer, problem.answer),
            "candidates": outcome.candidates,
            "scores": outcome.scores,
            "spent": outcome.spent,
            "all_dead": outcome.all_dead,
            "num_nan": outcome.num_nan,
            "log_evidence": outcome.log_evidence,
            "seconds": seconds,
        }
        for problem, outcome in zip(chosen, outcomes, strict=True)
    ]


def append_new(
    out: Path,
    records: Sequence[dict[str, Any]],
    key: Callable[[dict[str, Any]], tuple],
    required: Sequence[str] | None = None,
) -> int:
    """Append the `records` whose `key` is not yet done in `out`, under an exclusive lock on
    the file (`fcntl.flock`), re-reading it under the lock: two runs writing one file cannot
    write a key twice (the slower one's copy is dropped). Returns the number written."""
    with out.open("a") as sink:
        fcntl.flock(sink.fileno(), fcntl.LOCK_EX)
        try:
            end_cut_line(out)
            done = _done_keys(out, key, required) if out.stat().st_size else set()
            new = [r for r in records if r.get("failed") or key(r) not in done]
            sink.write("".join(json.dumps(r) + "\n" for r in new))
            sink.flush()
        finally:
            fcntl.flock(sink.fileno(), fcntl.LOCK_UN)
    return len(new)


def end_cut_line(out: Path) -> None:
    """End a last line cut short by a crash, so that appended lines start on their own (the
    cut line is skipped by `read_results`)."""
    if out.exists() and out.stat().st_size and not out.read_bytes().endswith(b"\n"):
        with out.open("a") as sink:
            sink.write("\n")


RESULT_FIELDS = ("task", "model", "verifier", "seed", "method", "budget", "problem")


def check_out_path(out: str | Path) -> Path:
    """`out` as a Path, or a ValueError if it names a directory (checked before a sweep
    starts, so nothing is run for a file that cannot be written)."""
    path = Path(out)
    if path.is_dir():
        raise ValueError(
            f"--out {out} is a directory; give a file path such as {path / 'results.jsonl'}"
        )
    return path


def read_results(path: str | Path, required: Sequence[str] = ("method",)) -> list[dict[str, Any]]:
    """The records of a sweep file: JSON objects holding every key in `required`.

    A line cut short by a crash (an unterminated object, `{...`) is skipped silently and its
    problem runs again on resume; any other line that is not such an
    object is skipped with a warning naming its line numbers. A directory or a file that is
    not UTF-8 text is a ValueError."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a results file")
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not a results file: not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    records, skipped = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if not line.lstrip().startswith("{"):  # not a line cut short by a crash
                skipped.append(number)
            continue
        if isinstance(record, dict) and all(k in record for k in required):
            records.append(record)
        else:
            skipped.append(number)
    if skipped:
        shown = ", ".join(map(str, skipped[:10])) + (" ..." if len(skipped) > 10 else "")
        warnings.warn(
            f"{path}: skipped {len(skipped)} line(s) that are not results "
            f"(JSON objects with {', '.join(required)}): line {shown}",
            stacklevel=2,
        )
    return records
