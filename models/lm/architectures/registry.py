"""The registry of LM architectures, a `ppl.registry.Registry`: `register(name)`, `get(name)`,
`names()`.

Keyed by the name a checkpoint gives its architecture: GGUF's `general.architecture` and
the `model_type` of a Hugging Face config.json (the same string for every architecture here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ppl.models.lm.architectures.base import Architecture
from ppl.registry import Registry

A = TypeVar("A", bound=Architecture)
ARCHITECTURES = Registry[Architecture]("architecture")


def register(name: str) -> Callable[[A], A]:
    """`register("llama")(Llama())` adds an architecture under `name` and returns it."""

    def add(architecture: A) -> A:
        if name in ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is registered twice")
        if architecture.name != name:
            raise ValueError(f"architecture {architecture.name!r} registered as {name!r}")
        summary = (type(architecture).__doc__ or name).strip().splitlines()[0]
        ARCHITECTURES.register(name, summary)(architecture)
        return architecture

    return add


def get(name: str) -> Architecture:
    """The architecture registered as `name`; a ValueError listing the registered ones."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; supported: {', '.join(names())}")
    return ARCHITECTURES.get(name)


def names() -> tuple[str, ...]:
    """The registered architectures, sorted."""
    return tuple(sorted(ARCHITECTURES.names()))
