"""Count XLA compilations, to check that a warm call compiles nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import jax

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def counting_compilations() -> Iterator[list[str]]:
    """Yields a list that gets one entry per backend compilation inside the block."""
    compiled: list[str] = []

    def listener(event: str, duration: float, **_: Any) -> None:
        if event == BACKEND_COMPILE:
            compiled.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
