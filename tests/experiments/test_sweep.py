"""Sweeps: one JSON line per (problem, method, budget), resumable after a crash, errors
recorded per problem; the plot command reads them back."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from ppl.experiments import cli
from ppl.experiments.plots import accuracy_table, budget_ratios, ratio_lines
from ppl.experiments.sweep import read_results, run_sweep
from ppl.models.lm.sampling import SamplingParams
from ppl.models.lm.tiny import alphabet_language_model
from ppl.models.reasoning.step_model import StepSettings
from ppl.models.reasoning.tasks import Task, TaskProblem


def letters_task(long_prompt_at: int | None = None) -> Task:
    def problems(seed, count):
        rng = np.random.default_rng(seed)
        out = [TaskProblem("ab"[rng.integers(2)] + "b", "a") for _ in range(count)]
        if long_prompt_at is not None:
            out[long_prompt_at] = TaskProblem("ab" * 40, "a")
        return out

    return Task(
        name="letters",
        description="test task",
        make_problems=problems,
        load_model=lambda: alphabet_language_model(jax.random.key(0), scale=0.3),
        settings=StepSettings(
            delimiter="\n", max_step_tokens=2, max_steps=2, sampling=SamplingParams(1.0)
        ),
    )


def sweep(tmp_path, task, **overrides):
    arguments = dict(
        methods=["pf", "bon"],
        budgets=[1, 2],
        num_problems=3,
        seed=0,
        out=tmp_path / "results.jsonl",
        progress=False,
        log=lambda message: None,
    )
    arguments.update(overrides)
    return run_sweep(task, **arguments)


def test_one_line_per_problem_method_and_budget(tmp_path):
    out = sweep(tmp_path, letters_task())
    records = read_results(out)
    keys = {(r["method"], r["budget"], r["problem"]) for r in records}
    assert len(records) == len(keys) == 2 * 2 * 3
    for record in records:
        assert record["spent"]["generations"] == record["budget"]
        assert record["reference"] == "a" and record["correct"] is False  # no answer lines


def test_resumes_after_a_crash_without_duplicates(tmp_path):
    task = letters_task()
    out = sweep(tmp_path, task)
    complete = out.read_text().splitlines()
    out.write_text("\n".join(complete[:5]) + "\n" + complete[5][:20])  # a crash mid-line
    sweep(tmp_path, task)
    records = read_results(out)
    keys = [(r["method"], r["budget"], r["problem"]) for r in records]
    assert len(keys) == len(set(keys)) == 12


def test_a_failing_problem_is_recorded_and_the_others_run(tmp_path):
    out = sweep(tmp_path, letters_task(long_prompt_at=1), methods=["pf"], budgets=[2])
    records = sorted(read_results(out), key=lambda r: r["problem"])
    assert "context length" in records[1]["error"] and records[1]["correct"] is False
    assert "error" not in records[0] and "error" not in records[2]


def test_plot_command_reads_a_sweep(tmp_path, capsys):
    out = sweep(tmp_path, letters_task())
    figure = tmp_path / "figure.png"
    assert cli.main(["plot", str(out), "--out", str(figure)]) == 0
    assert figure.stat().st_size > 0
    assert "pf vs bon" in capsys.readouterr().out


def test_budget_ratio_from_a_table():
    records = [
        {"method": m, "budget": b, "correct": c}
        for m, curve in {"pf": [0.2, 0.6, 0.8], "bon": [0.2, 0.4, 0.6]}.items()
        for b, accuracy in zip([1, 4, 16], curve, strict=True)
        for c in [True] * int(accuracy * 10) + [False] * (10 - int(accuracy * 10))
    ]
    table = accuracy_table(records)
    assert table["pf"][4]["accuracy"] == pytest.approx(0.6)
    assert budget_ratios(table)["bon"] == pytest.approx(4.0)  # pf reaches 0.6 at N = 4


def test_ratio_lines_say_when_ten_problems_do_not_decide_the_ratio():
    """The curves of test_budget_ratio_from_a_table, each cell's correct problems drawn at
    random: the paired bootstrap over ten problems leaves the ratio undecided."""
    rng = np.random.default_rng(0)
    records = [
        {"method": m, "budget": b, "problem": int(p), "correct": bool(rank < accuracy * 10)}
        for m, curve in {"pf": [0.2, 0.6, 0.8], "bon": [0.2, 0.4, 0.6]}.items()
        for b, accuracy in zip([1, 4, 16], curve, strict=True)
        for rank, p in enumerate(rng.permutation(10))
    ]
    [line] = ratio_lines(accuracy_table(records), "pf", records)
    assert line.startswith("pf vs bon: 4.00x less budget (95% bootstrap interval ")
    assert line.endswith(": not decided)")


def test_every_method_runs_in_a_sweep(tmp_path):
    from ppl.experiments.sweep import METHODS

    out = sweep(tmp_path, letters_task(), methods=list(METHODS), budgets=[8], num_problems=1)
    records = read_results(out)
    assert sorted(r["method"] for r in records) == sorted(METHODS)
    assert all("error" not in r for r in records), [r.get("error") for r in records]


def test_bad_method_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        sweep(tmp_path, letters_task(), methods=["magic"])


def test_records_are_json(tmp_path):
    out = sweep(tmp_path, letters_task(), methods=["bon"], budgets=[1], num_problems=1)
    record = json.loads(out.read_text().splitlines()[0])
    assert set(record) >= {"task", "model", "verifier", "seed", "answer", "spent", "seconds"}
    assert dataclasses.is_dataclass(letters_task())


@pytest.mark.parametrize("name", ["self_certainty", "judge", "outcome"])
def test_model_based_verifiers_run_in_a_sweep(tmp_path, name):
    from ppl.experiments.sweep import VerifierSpec
    from ppl.models.lm.tiny import tiny_language_model

    task = letters_task()  # the judge needs a byte-level vocabulary: the tiny chat model
    task = dataclasses.replace(task, load_model=lambda: tiny_language_model(jax.random.key(0)))
    out = sweep(
        tmp_path,
        task,
        methods=["pf"],
        budgets=[2],
        num_problems=2,
        verifier=VerifierSpec(name),
    )
    records = read_results(out)
    assert len(records) == 2 and all("error" not in r for r in records)
    assert all(r["verifier"] == name for r in records)


def test_plot_prints_no_ratio_for_flat_curves(tmp_path, capsys):
    """Two all-zero curves: no budget ratio, and the table carries the binomial interval."""
    out = tmp_path / "flat.jsonl"
    rows = [
        {"method": m, "budget": b, "problem": p, "correct": False}
        for m in ("pf", "bon")
        for b in (1, 4)
        for p in range(6)
    ]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli.main(["plot", str(out), "--out", str(tmp_path / "flat.png")]) == 0
    printed = capsys.readouterr().out
    assert "less budget" not in printed
    assert "pf vs bon: no ratio: pf and bon do not rise above their standard errors" in printed
    assert "0.00 [0.00,0.39]" in printed  # 0 of 6: Wilson upper bound 3.84 / 9.84


def test_the_sweep_grades_with_the_task_s_grader(tmp_path):
    """`Task.grade` decides `correct`: a grader that accepts everything makes every cell 1."""
    task = dataclasses.replace(letters_task(), grade=lambda answer, reference: True)
    records = read_results(sweep(tmp_path, task, methods=["bon"], budgets=[1]))
    assert records and all(r["correct"] for r in records)


def _by_cell(records):
    return {
        (r["method"], r["budget"], r["problem"]): {k: v for k, v in r.items() if k != "seconds"}
        for r in records
    }


def _assert_same_results(first, second):
    assert first.keys() == second.keys()
    for cell, record in first.items():
        other = second[cell]
        assert record["spent"] == other["spent"], cell
        assert record["candidates"] == other["candidates"], cell
        np.testing.assert_allclose(record["scores"], other["scores"], rtol=1e-5, atol=1e-6)


def test_results_do_not_depend_on_batching_or_on_a_resume(tmp_path):
    """Every problem draws from its own key: one batch, one problem per batch, and a sweep
    resumed after losing cells all give the same results (and another seed does not)."""
    from ppl.experiments.methods import METHODS

    task = letters_task()
    arguments = dict(methods=list(METHODS.names()), budgets=[2, 3], num_problems=4)
    together = _by_cell(read_results(sweep(tmp_path / "a", task, **arguments)))
    one_by_one = _by_cell(read_results(sweep(tmp_path / "b", task, max_rows=1, **arguments)))
    _assert_same_results(together, one_by_one)
    out = sweep(tmp_path / "c", task, max_rows=6, **arguments)
    kept = [line for line in out.read_text().splitlines() if '"problem": 1' not in line]
    out.write_text("\n".join(kept[: len(kept) // 2]) + "\n")  # a crash lost problem 1 and more
    resumed = _by_cell(read_results(sweep(tmp_path / "c", task, max_rows=6, **arguments)))
    _assert_same_results(together, resumed)
    other_seed = _by_cell(read_results(sweep(tmp_path / "d", task, seed=1, **arguments)))
    assert any(together[c]["spent"] != other_seed[c]["spent"] for c in together)


def test_a_configuration_error_writes_nothing_and_names_the_setting(tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    code = cli.main(
        ["scale", "--problems", "2", "--false-positive-rate", "2", "--out", str(out), "--quiet"]
    )
    assert code == 2 and not out.exists()
    assert "false_positive_rate must be a number in [0, 1], got 2.0" in capsys.readouterr().err


def test_only_problem_failures_are_recorded_and_the_table_counts_them(tmp_path):
    from ppl.experiments.plots import format_table
    from ppl.models.lm.errors import ContextLengthError, InvalidRewardsError, ProblemFailure
    from ppl.models.lm.served import ServerError

    for error in (ContextLengthError, InvalidRewardsError, ServerError):
        assert issubclass(error, ProblemFailure)
    out = sweep(tmp_path, letters_task(long_prompt_at=1), methods=["pf"], budgets=[2])
    table = accuracy_table(read_results(out))
    assert table["pf"][2]["errors"] == 1 and table["pf"][2]["problems"] == 3
    assert "1 err, 0 failed" in format_table(table)


def test_two_writers_on_one_file_write_each_key_once(tmp_path):
    """Two sweeps started together on one file both run everything, but the lock and the
    re-read under it keep one line per key, and readers count each problem once."""
    import threading

    task = letters_task()
    runs = [
        threading.Thread(target=sweep, args=(tmp_path, task), kwargs={"max_rows": 2})
        for _ in range(2)
    ]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    records = read_results(tmp_path / "results.jsonl")
    keys = [(r["method"], r["budget"], r["problem"]) for r in records]
    assert len(keys) == len(set(keys)) == 12
    doubled = records + records  # a file written before the lock existed
    assert accuracy_table(doubled)["pf"][2]["problems"] == 3


def test_the_resume_key_holds_the_weights_and_every_setting(tmp_path):
    """Same model name with other weights, or another weighting rule, runs again; the same
    settings resume."""
    from ppl.models.reasoning.reward_weighting import RewardWeighting

    task = letters_task()
    logs: list[str] = []
    arguments = dict(methods=["pf"], budgets=[2], log=logs.append)
    sweep(tmp_path, task, **arguments)
    other = dataclasses.replace(
        task, load_model=lambda: alphabet_language_model(jax.random.key(1), scale=0.3)
    )
    sweep(tmp_path, other, **arguments)
    sweep(tmp_path, task, weighting=RewardWeighting(rule="softmax"), **arguments)
    assert not logs  # nothing resumed: three configurations
    sweep(tmp_path, task, **arguments)
    assert logs == [f"resuming: 3 results in {tmp_path / 'results.jsonl'}"]
    assert len({r["config_key"] for r in read_results(tmp_path / "results.jsonl")}) == 3
