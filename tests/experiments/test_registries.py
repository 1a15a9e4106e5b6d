"""Registries: unknown names are clear errors that list the choices (through the real CLI),
duplicates are rejected, the CLI offers exactly what is registered, and a method and a verifier
registered from this file run through `run_sweep`."""

from __future__ import annotations

import argparse
import dataclasses
import re

import numpy as np
import pytest

from ppl.experiments.cli import build_parser, main
from ppl.experiments.methods import METHODS, MethodInputs, ProblemOutcome
from ppl.experiments.methods.independent_samples import IndependentSamples
from ppl.experiments.steering import STEERING_METHODS
from ppl.experiments.sweep import VERIFIERS, VerifierSpec, read_results
from ppl.models.constraints.sequence_potential import CONSTRAINTS
from ppl.models.reasoning.tasks import TASKS
from ppl.models.steering.tasks import TASKS as STEERING_TASKS
from ppl.registry import Registry
from tests.experiments.test_sweep import letters_task, sweep


def test_registry_lookup_help_and_errors():
    colours: Registry[int] = Registry("colour")
    assert colours.register("red", "the first")(1) == 1

    @colours.register("blue", "the second")
    def blue() -> int:
        return 2

    assert colours.names() == ("red", "blue") and list(colours) == ["red", "blue"]
    assert colours.get("blue") is blue and colours["red"] == 1 and "red" in colours
    assert colours.help("red") == "the first"
    assert colours.describe().splitlines() == ["  red   the first", "  blue  the second"]
    with pytest.raises(ValueError, match="unknown colour 'green'; choose from red, blue"):
        colours.get("green")
    with pytest.raises(ValueError, match="colour 'red' is already registered"):
        colours.register("red", "again")(3)
    colours.unregister("red")
    assert colours.names() == ("blue",)


def test_an_unknown_method_is_named_by_the_cli_with_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["scale", "--methods", "pf,magic"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"unknown method 'magic'; choose from {', '.join(METHODS)}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["scale", "--verifier", "oracle"], "invalid choice: 'oracle'"),
        (["scale", "--task", "chess"], "invalid choice: 'chess'"),
        (["steer", "--method", "beam"], "invalid choice: 'beam'"),
        (["steer", "--task", "haiku"], "invalid choice: 'haiku'"),
        (["steer", "--sweep", "--methods", "smc,csmc"], "unknown sweep method 'csmc'"),
        (["steer", "--constraint", "rhyme:abab"], "unknown constraint 'rhyme'; choose from"),
    ],
)
def test_unknown_names_are_named_by_the_cli(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def _options(command: str) -> dict[str, argparse.Action]:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.option_strings[-1]: a for a in commands.choices[command]._actions if a.option_strings}


def test_the_cli_offers_exactly_what_is_registered(capsys):
    scale, steer = _options("scale"), _options("steer")
    assert tuple(scale["--verifier"].choices) == VERIFIERS.names()
    assert set(VERIFIERS) >= {"arithmetic", "outcome", "self_certainty", "judge"}
    assert tuple(scale["--task"].choices) == TASKS.names()
    assert tuple(steer["--task"].choices) == STEERING_TASKS.names()
    assert tuple(steer["--method"].choices) == STEERING_METHODS.names()
    assert scale["--methods"].type("pf,beam") == ["pf", "beam"]
    with pytest.raises(SystemExit):
        main(["scale", "--help"])
    text = capsys.readouterr().out
    for registry in (METHODS, VERIFIERS, TASKS):
        for name in registry:
            line = rf"^ +{re.escape(name)} +{re.escape(registry.help(name))}$"
            assert re.search(line, text, re.MULTILINE), name
    with pytest.raises(SystemExit):
        main(["steer", "--help"])
    text = capsys.readouterr().out
    assert all(CONSTRAINTS.help(name) in text for name in CONSTRAINTS)


def first_sample(rng_key, inputs: MethodInputs) -> list[ProblemOutcome]:
    """A method as a user writes one: N independent samples, the first one's answer."""
    outcomes = IndependentSamples("first", "argmax_weight")(rng_key, inputs)
    return [dataclasses.replace(o, answer=o.candidates[0]) for o in outcomes]


def ends_with_a(spec, references, lm):
    """A verifier builder as a user writes one: reward 0.9 for texts ending in "a"."""
    return lambda c: np.asarray([0.9 if t.endswith("a") else 0.1 for t in c.texts])


@pytest.fixture
def registered():
    METHODS.register("first", "the first of N independent samples")(first_sample)
    VERIFIERS.register("ends_with_a", "0.9 for texts that end in 'a'")(ends_with_a)
    yield
    METHODS.unregister("first")
    VERIFIERS.unregister("ends_with_a")


def test_a_method_and_a_verifier_registered_here_run_in_a_sweep(tmp_path, registered):
    assert _options("scale")["--methods"].type("first,pf") == ["first", "pf"]
    assert "ends_with_a" in _options("scale")["--verifier"].choices
    verifier = VerifierSpec("ends_with_a")
    out = sweep(tmp_path, letters_task(), methods=["first", "pf"], budgets=[2], verifier=verifier)
    records = read_results(out)
    assert sorted({r["method"] for r in records}) == ["first", "pf"]
    assert all("error" not in r and r["verifier"] == "ends_with_a" for r in records)
    for r in records:
        if r["method"] == "first":
            assert r["answer"] == r["candidates"][0]


def test_an_unknown_verifier_fails_the_sweep_before_it_runs(tmp_path):
    with pytest.raises(ValueError, match="unknown verifier 'oracle'; choose from arithmetic"):
        sweep(tmp_path, letters_task(), verifier=VerifierSpec("oracle"))
    assert not (tmp_path / "results.jsonl").exists()
