"""The prefix/complete contract of sequence potentials (as in genlm-control), and a checker.

A sequence potential gives a log weight to every prefix x of a generation and to every
complete generation. The contract that lets a sampler prune early:

1. a prefix weight of -inf means no extension succeeds: prefix(x) = -inf implies
   prefix(x y) = -inf and complete(x y) = -inf for every continuation y;
2. a complete sequence that succeeds is a live prefix: complete(x) > -inf implies
   prefix(x) > -inf.

`check_contract` verifies both on every byte string up to a given length over a small
alphabet; tests run it on every built-in potential, the way genlm-control's property tests do.

`CONSTRAINTS` names the constraints the command line can build from one text argument
(`ppl steer --constraint NAME:ARGUMENT`); each module registers its own builders,
`argument -> SequencePotential`, with `@CONSTRAINTS.register(name, help)`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Protocol

import numpy as np

from ppl.registry import Registry


class SequencePotential(Protocol):
    def prefix(self, data: bytes) -> float:
        """log weight of `data` as a prefix (-inf: no extension can succeed)."""
        ...

    def complete(self, data: bytes) -> float:
        """log weight of `data` as a complete sequence."""
        ...


ConstraintBuilder = Callable[[str], SequencePotential]
CONSTRAINTS: Registry[ConstraintBuilder] = Registry("constraint")


def check_contract(potential: SequencePotential, alphabet: bytes, max_length: int) -> list[str]:
    """Violations of the contract on all strings over `alphabet` up to `max_length` bytes
    (an empty list when the potential is consistent there)."""
    violations = []
    for length in range(max_length + 1):
        for letters in itertools.product(alphabet, repeat=length):
            data = bytes(letters)
            prefix = potential.prefix(data)
            if np.isnan(prefix) or np.isnan(potential.complete(data)):
                violations.append(f"{data!r}: NaN weight")
                continue
            if potential.complete(data) > -np.inf and prefix == -np.inf:
                violations.append(f"{data!r}: complete but its prefix weight is -inf")
            if prefix == -np.inf and length < max_length:
                for byte in alphabet:
                    longer = data + bytes([byte])
                    if potential.prefix(longer) > -np.inf or potential.complete(longer) > -np.inf:
                        violations.append(f"{data!r} is dead but {longer!r} is not")
    return violations
