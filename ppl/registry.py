"""Named registries: methods, verifiers, tasks and constraints register themselves by name.

A `Registry[T]` maps names to entries (a function, a builder, a settings object) with one line
of help each. The code that defines an entry registers it where it is defined::

    METHODS = Registry[Method]("method")

    @METHODS.register("pf", "particle filtering over reasoning steps")
    def particle_filtering(rng_key, inputs): ...

and the code that chooses one looks it up by name (`METHODS.get("pf")`), so the command line's
choices and help come from the registry (`names()`, `describe()`) and adding an entry edits no
if-chain. An unknown name is a `ValueError` that names it and lists the choices; registering a
name twice is an error too, so two entries never shadow each other silently.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind (`kind` names it in error messages: "method", "verifier", ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str) -> Callable[[T], T]:
        """Register an entry under `name` with one line of `help`: a decorator,
        `@registry.register(name, help)`, or a call, `registry.register(name, help)(entry)`.
        Returns the entry unchanged."""
        if not name or not isinstance(name, str):
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = entry
            self._help[name] = help
            return entry

        return add

    def unregister(self, name: str) -> None:
        """Remove `name` (for entries registered for a while, as tests do)."""
        self.get(name)
        del self._entries[name], self._help[name]

    def get(self, name: str) -> T:
        """The entry named `name`; a ValueError naming it and listing the choices if none is."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose from {', '.join(self)}")
        return self._entries[name]

    def help(self, name: str) -> str:
        """The one-line help of `name`."""
        self.get(name)
        return self._help[name]

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def describe(self, indent: str = "  ") -> str:
        """One line per entry, its name then its help, in registration order (for command-line
        help)."""
        width = max(map(len, self._entries), default=0)
        return "\n".join(f"{indent}{n:<{width}}  {h}" for n, h in self._help.items())

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self)})"


def import_modules(package: str, first: Sequence[str] = ()) -> None:
    """Import every module of `package` (its direct children), the ones named in `first` in that
    order and the rest sorted, so that the entries they register are there: a new module of a
    plugin folder (`ppl.experiments.methods`, `ppl.models.constraints`, the verifiers of
    `ppl.models.reasoning`) registers itself with no import line to edit."""
    path = importlib.import_module(package).__path__
    rest = sorted(m.name for m in pkgutil.iter_modules(path) if m.name not in first)
    for name in (*first, *rest):
        importlib.import_module(f"{package}.{name}")
