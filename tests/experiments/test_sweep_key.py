"""The resume key hashes every setting that changes results: a rerun with another weighting
rule does not resume the old numbers; the same settings resume."""

from __future__ import annotations

import dataclasses

from ppl.experiments.sweep import read_results
from ppl.experiments.sweep_key import SweepConfig
from ppl.models.reasoning.reward_weighting import RewardWeighting
from tests.experiments.test_sweep import letters_task, sweep


def test_each_setting_changes_the_key():
    base = SweepConfig("t", "m", "v", "w", "s", 0)
    for field in dataclasses.fields(SweepConfig):
        value = getattr(base, field.name)
        changed = dataclasses.replace(
            base, **{field.name: value + 1 if field.type == "int" else value + "x"}
        )
        assert changed.key() != base.key(), field.name


def test_another_weighting_does_not_resume_the_old_results(tmp_path):
    messages: list[str] = []
    arguments = dict(methods=["pf"], budgets=[2], log=messages.append)
    out = sweep(tmp_path, letters_task(), **arguments)
    sweep(tmp_path, letters_task(), **arguments)
    assert messages == [f"resuming: 3 results in {out}"]
    sweep(tmp_path, letters_task(), weighting=RewardWeighting("softmax"), **arguments)
    assert messages == [f"resuming: 3 results in {out}"]  # nothing resumed for softmax
    records = read_results(out)
    assert len(records) == 6 and len({r["config_key"] for r in records}) == 2
    assert sum('"rule": "softmax"' in r["config"]["weighting"] for r in records) == 3
