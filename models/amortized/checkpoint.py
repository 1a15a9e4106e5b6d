"""Checkpoints of a network and its optimiser state as safetensors (no pickle).

Every array leaf of the pytree `{"network": ..., "optimizer": ...}` is stored under its key path
(`jax.tree_util.keystr`); `load` needs a template with the same structure (a freshly built
network and `optimizer.init(...)`), so a checkpoint never executes code. The training step is
kept in the file's metadata, so training resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from ppl import checks


def _named_leaves(tree: Any) -> dict[str, np.ndarray]:
    arrays = eqx.filter(tree, eqx.is_array)
    leaves = jax.tree_util.tree_leaves_with_path(arrays)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def save(path: str | Path, network: Any, optimizer_state: Any = None, step: int = 0) -> None:
    """Write the network's (and optionally the optimiser's) arrays and the step to `path`."""
    path = Path(path)
    step = checks.count("step", step, 0)
    if path.is_dir():
        raise ValueError(
            f"{path} is a directory; give a file path such as {path / 'dt.safetensors'}"
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist")
    tree = {"network": network, "optimizer": optimizer_state}
    save_file(_named_leaves(tree), str(path), metadata={"step": str(step)})


def load(path: str | Path, network: Any, optimizer_state: Any = None) -> tuple[Any, Any, int]:
    """(network, optimizer_state, step) with the arrays of `path` put into the templates.

    Raises a ValueError naming the first array that is missing or has another shape, and for
    a directory, an empty file or one that is not safetensors; FileNotFoundError if nothing
    is at `path`. Static settings (such as a network's head count) are not stored or checked.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty, not a checkpoint")
    try:
        stored = load_file(str(path))
        with safe_open(str(path), framework="numpy") as handle:  # the step is in the metadata
            metadata = handle.metadata() or {}
    except SafetensorError as error:
        raise ValueError(
            f"{path} is not a readable safetensors checkpoint (truncated or another format): "
            f"{error}"
        ) from None
    try:
        step = int(metadata.get("step", 0))
    except ValueError:
        raise ValueError(f"{path} has step {metadata['step']!r} in its metadata") from None
    template = {"network": network, "optimizer": optimizer_state}
    arrays, static = eqx.partition(template, eqx.is_array)
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(arrays)
    filled = []
    for key_path, leaf in leaves_with_paths:
        name = jax.tree_util.keystr(key_path)
        if name not in stored:
            raise ValueError(f"checkpoint {path} has no array {name}")
        if stored[name].shape != leaf.shape:
            raise ValueError(
                f"array {name} has shape {stored[name].shape} in {path}, {leaf.shape} in the model"
            )
        filled.append(jnp.asarray(stored[name], leaf.dtype))
    restored = eqx.combine(jax.tree_util.tree_unflatten(treedef, filled), static)
    return restored["network"], restored["optimizer"], step
