"""The resume key of a sweep: a sha256 over a canonical JSON of every setting that changes
results, built in one place (`SweepConfig`) so that a new setting cannot be left out.

key = sha256(json.dumps(asdict(config), sort_keys=True)) truncated to 16 hex digits; a line
is done when its (key, method, budget, problem) is in the file."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Every setting of `ppl scale` that changes a problem's result (method, budget and
    problem are keyed per line). `model` is the model's name, dtype and architecture config
    (not yet its file's content hash)."""

    task: str
    model: str
    verifier: str
    weighting: str
    settings: str
    seed: int

    def key(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe(value: Any) -> str:
    """A canonical text of a setting object (dataclass, named tuple or other) for hashing."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    elif hasattr(value, "_asdict"):
        value = value._asdict()
    return json.dumps(value, sort_keys=True, default=repr)


def model_identity(lm: Any) -> str:
    """The name, dtype and architecture config of an in-process model, or the name of a
    served one."""
    parts = [getattr(lm, "name", type(lm).__name__), str(getattr(lm, "dtype", ""))]
    if hasattr(lm, "config"):
        parts.append(describe(lm.config))
    return " ".join(parts)
