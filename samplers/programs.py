"""Compiled programs that live as long as the functions they were compiled from.

The samplers that drive jitted pieces from a host loop (`mcmc`'s warm-up and sampling chunks,
`tempered_smc`'s iteration) reuse them across calls: a second run on the same log density with
the same settings compiles nothing. A cache keyed on the functions themselves (an `lru_cache`,
or `jax.jit` with the function as a static argument) would hold every closure, the data it
captures and its executables for the life of the process. `ProgramCache` instead keys each
program on weak references to the functions and builds it from callers that reach the
functions through those references, so nothing in the cache keeps a function alive, and the
entry (with its executables) goes when the first of its functions goes: a program lives as
long as the model that owns it.

A function that cannot be weakly referenced (or whose weak reference is not hashable, e.g. a
bound method of an unhashable object) gets a fresh program on every call: correct, but it
compiles each time.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from types import MethodType
from typing import Any


def _weak(fn: Callable, callback: Callable[[Any], None]) -> weakref.ref:
    """A weak reference to `fn` (a `WeakMethod` for a bound method, whose object is ephemeral)."""
    if isinstance(fn, MethodType):
        return weakref.WeakMethod(fn, callback)
    return weakref.ref(fn, callback)


def _through(ref: weakref.ref) -> Callable:
    """A caller of the function behind `ref` that does not keep it alive."""

    def call(*args: Any) -> Any:
        fn = ref()
        if fn is None:
            raise ReferenceError("the function this program was compiled from no longer exists")
        return fn(*args)

    return call


def weak_caller(fn: Callable) -> Callable:
    """A caller of `fn` that does not keep it alive (for values cached on `fn` itself)."""
    return _through(_weak(fn, lambda _: None))


class ProgramCache:
    """`cache.get(functions, *static)`: the program `build(functions, *static)`, built once per
    (functions, static) while every one of `functions` is alive.

    `build` receives stand-ins for `functions` (same calls, weak references underneath) and
    must capture nothing else that refers to them; `static` must be hashable (settings as
    frozen dataclasses).
    """

    def __init__(self, build: Callable[..., Any]) -> None:
        self._build = build
        self._programs: dict[tuple[Any, ...], Any] = {}

    def __len__(self) -> int:
        return len(self._programs)

    def _forget(self, dead: weakref.ref) -> None:
        for key in [key for key in self._programs if any(ref is dead for ref in key[0])]:
            del self._programs[key]

    def get(self, functions: tuple[Callable, ...], *static: Hashable) -> Any:
        try:
            refs = tuple(_weak(fn, self._forget) for fn in functions)
            key = (refs, *static)
            program = self._programs.get(key)
        except TypeError:  # not weakly referenceable, or not hashable: no caching
            return self._build(functions, *static)
        if program is None:
            program = self._build(tuple(_through(ref) for ref in refs), *static)
            self._programs[key] = program
        return program
