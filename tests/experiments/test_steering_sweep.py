"""Steering sweeps write one line per (method, particles, seed), resume without repeating
work, and summarize satisfaction, likelihood and log Z per cell."""

from __future__ import annotations

import jax
import pytest

from ppl.experiments.steering_sweep import format_summary, read_records, run_steering_sweep, summary
from ppl.models.constraints.automata import regex
from ppl.models.lm.tiny import alphabet_language_model
from ppl.models.steering.tasks import TASKS, SteeringTask, get_task

TASK = SteeringTask("tiny-regex", "a+b?", ("ab",), lambda: regex("a+b?"), 3, chat=False)


def test_sweep_writes_resumes_and_summarizes(tmp_path):
    lm = alphabet_language_model(jax.random.key(0), scale=0.3)
    out = tmp_path / "sweep.jsonl"
    methods = ["rejection", "best_of_n", "masked", "is", "smc", "steer", "twisted"]
    run_steering_sweep(lm, TASK, methods, [2, 4], [0, 1], out, twist_rollouts=8, progress=False)
    records = read_records(out)
    assert len(records) == len(methods) * 2 * 2
    with out.open("a") as sink:
        sink.write('{"task": "tiny-regex", "method": "sm')  # a line cut by a crash
    run_steering_sweep(lm, TASK, methods, [2, 4], [0, 1, 2], out, twist_rollouts=8, progress=False)
    records = read_records(out)
    assert len(records) == len(methods) * 2 * 3
    rows = summary(records)
    by_method = {(r["method"], r["particles"]): r for r in rows}
    for method in ("masked", "is", "smc", "steer", "twisted"):  # masks always satisfy
        assert by_method[(method, 4)]["satisfied"] == 1.0
    assert by_method[("masked", 4)]["log_evidence"] is None
    assert "twisted" in format_summary(rows)


def test_unknown_methods_and_tasks_are_named():
    lm = alphabet_language_model(jax.random.key(0), scale=0.3)
    with pytest.raises(ValueError, match="beam"):
        run_steering_sweep(lm, TASK, ["beam"], [2], [0], "unused.jsonl")
    with pytest.raises(ValueError, match="lipogram"):
        get_task("nope")


def test_task_checks_match_their_constraints():
    assert TASKS["lipogram"].check("A dog ran far.")
    assert not TASKS["lipogram"].check("The sea.")
    assert TASKS["short-words"].check("Tiny words only here.")
    assert not TASKS["short-words"].check("Enormous words")
    assert TASKS["regex"].check("1969-07-20")
    assert not TASKS["regex"].check("July 20, 1969")
    assert TASKS["json"].check('{"name": "Ana", "age": 31, "city": "Oslo"}')
    assert not TASKS["json"].check('{"name": "Ana"}')
    assert TASKS["intersection"].check("anything")


def test_the_resume_key_has_the_model_and_minus_infinity_is_kept(tmp_path):
    """Another model on the same file runs again instead of printing the first model's
    numbers; a run whose log Z is -inf is stored as "-inf" and makes its cell's mean -inf."""
    from ppl.experiments.steering_sweep import _number

    out = tmp_path / "sweep.jsonl"
    first = alphabet_language_model(jax.random.key(0), scale=0.3)
    second = alphabet_language_model(jax.random.key(1), scale=0.3)  # same name, other weights
    run_steering_sweep(first, TASK, ["smc"], [2], [0], out, progress=False)
    run_steering_sweep(second, TASK, ["smc"], [2], [0], out, progress=False)
    records = read_records(out)
    assert len(records) == 2 and records[0]["config_key"] != records[1]["config_key"]
    assert _number(float("-inf")) == "-inf" and _number(float("nan")) is None
    records[1]["log_evidence"] = "-inf"
    rows = summary(records)
    assert rows[0]["runs"] == 2 and rows[0]["log_evidence"] == float("-inf")
    assert rows[0]["log_evidence_not_finite"] == 1
    assert "-inf" in format_summary(rows)
