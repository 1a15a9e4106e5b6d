"""The constraint registry: every built-in constraint builds from one text argument and keeps
the prefix/complete contract; an unknown name or a bad argument is named."""

from __future__ import annotations

import numpy as np
import pytest

from ppl.models.constraints import grammar, json_schema  # noqa: F401  (register constraints)
from ppl.models.constraints.automata import ByteAutomaton
from ppl.models.constraints.grammar import LarkGrammar
from ppl.models.constraints.sequence_potential import CONSTRAINTS, check_contract

CASES = {  # name: (argument, accepted, rejected)
    "forbidden": ("eE", b"a dog ran", b"the sea"),
    "max-word-length": ("3", b"a cat ran", b"a horse"),
    "regex": ("[0-9]+-[0-9]+", b"12-3", b"12-"),
    "json-schema": ('{"type": "integer"}', b"42", b'"42"'),
    "grammar": ("arithmetic", b"1+2*3", b"1+"),
}


def test_every_built_in_constraint_is_registered():
    assert set(CONSTRAINTS) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_constraint_builds_from_its_argument(name):
    argument, accepted, rejected = CASES[name]
    potential = CONSTRAINTS.get(name)(argument)
    assert isinstance(potential, LarkGrammar if name == "grammar" else ByteAutomaton)
    assert potential.complete(accepted) == 0.0
    assert potential.complete(rejected) == -np.inf
    assert check_contract(potential, b"a1-+", 3) == []


def test_unknown_constraints_and_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown constraint 'rhyme'; choose from .*json-schema"):
        CONSTRAINTS.get("rhyme")
    with pytest.raises(ValueError, match="not valid JSON"):
        CONSTRAINTS.get("json-schema")("{type: integer}")
    with pytest.raises(ValueError, match="LALR"):
        CONSTRAINTS.get("grammar")("start: (")
