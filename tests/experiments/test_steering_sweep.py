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
