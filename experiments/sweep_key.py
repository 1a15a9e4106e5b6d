"""The resume key of a sweep: a sha256 over a canonical JSON of every setting that changes
results, built in one place (`SweepConfig`) so that a new setting cannot be left out.

key = sha256(json.dumps(asdict(config), sort_keys=True)) truncated to 16 hex digits; a line
is done when its (key, method, budget, problem) is in the file."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import weakref
from typing import Any

import jax
import numpy as np

from ppl.models.lm.served import ServedModel


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Every setting of `ppl scale` that changes a problem's result (method, budget and
    problem are keyed per line). `model` is `model_identity`: for an in-process model its
    name, dtype, config and weights' hash; for a served one its model name and server kind."""

    task: str
    model: str
    verifier: str
    weighting: str
    settings: str
    seed: int

    def key(self) -> str:
        return config_key(dataclasses.asdict(self))


def config_key(settings: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of `settings`, 16 hex digits: the resume key of a sweep."""
    text = json.dumps(settings, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe(value: Any) -> str:
    """A canonical text of a setting object (dataclass, named tuple or other) for hashing."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    elif hasattr(value, "_asdict"):
        value = value._asdict()
    return json.dumps(value, sort_keys=True, default=repr)


def model_identity(lm: Any) -> str:
    """What makes a generator's results: for an in-process `LanguageModel` its name, dtype,
    architecture config and a sha256 of its weights as loaded (`weights_hash`: two files with
    one basename and other weights differ); for a `ServedModel` the model name and the server
    kind it reported (not its URL: the same model restarted on another port, or served from
    another node, resumes)."""
    if isinstance(lm, ServedModel):
        return describe({"served": lm.model, "server": lm.capabilities.kind})
    return describe(
        {
            "name": getattr(lm, "name", type(lm).__name__),
            "dtype": str(getattr(lm, "dtype", "")),
            "config": describe(getattr(lm, "config", None)),
            "weights": weights_hash(lm) if hasattr(lm, "params") else None,
        }
    )


_WEIGHT_HASHES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def weights_hash(lm: Any) -> str:
    """sha256 over every parameter array of `lm.params` (name, shape, dtype and bytes, in
    pytree order), computed once per model object (about 1 s for SmolLM2-135M in float32)."""
    cached = _WEIGHT_HASHES.get(lm)
    if cached is None:
        digest = hashlib.sha256()
        for path, leaf in jax.tree_util.tree_flatten_with_path(lm.params)[0]:
            array = np.ascontiguousarray(np.asarray(leaf))
            digest.update(f"{jax.tree_util.keystr(path)}{array.shape}{array.dtype}".encode())
            digest.update(array.reshape(-1).view(np.uint8).data)
        cached = _WEIGHT_HASHES[lm] = digest.hexdigest()
    return cached
