"""Argument checks shared by the public entry points, each raising a ValueError that names the
argument and its value.

Counts and numbers are Python (or NumPy) scalars and are always checked. Array checks run only
on concrete values: a traced array (under `jax.jit`, `vmap` or `grad`) passes unchecked, so
the checked functions stay traceable.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np


def is_concrete(*values: Any) -> bool:
    """Whether no leaf of `values` is a JAX tracer."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(values))


def count(name: str, value: object, minimum: int = 1) -> int:
    """`value` as an int >= `minimum` (bools and floats such as 2.5 or 2.0 are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def number(name: str, value: Any, low: float = -math.inf, high: float = math.inf) -> Any:
    """`value` as a finite float in [low, high] (a traced `value` is returned unchecked)."""
    if not is_concrete(value):
        return value
    try:
        result = float(value)
    except (TypeError, ValueError):
        result = math.nan
    if isinstance(value, (str, bytes)) or not (math.isfinite(result) and low <= result <= high):
        if math.isinf(high):
            bound = "" if math.isinf(low) else f" >= {low:g}"
        else:
            bound = f" in [{low:g}, {high:g}]"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return result


def shown(array: Any) -> str:
    """A short one-line text of an array (at most about 20 entries)."""
    return np.array2string(np.asarray(array), threshold=20, precision=4).replace("\n", "")


def finite_array(name: str, value: Any) -> None:
    """A ValueError if a concrete numeric `value` holds NaN or infinite entries."""
    if not is_concrete(value):
        return
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be numbers, got dtype {array.dtype}")
    bad = int(np.sum(~np.isfinite(array)))
    if bad:
        raise ValueError(f"{name} holds {bad} NaN or infinite value(s): {shown(array)}")


def positive_definite(name: str, value: Any) -> None:
    """A ValueError unless a concrete `value` is a finite, symmetric positive-definite [n, n]
    matrix (the Cholesky factor exists)."""
    if not is_concrete(value):
        return
    matrix = np.asarray(value, np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"{name} must be a square [n, n] matrix, got shape {matrix.shape}")
    finite_array(name, matrix)
    scale = max(float(np.max(np.abs(matrix))), 1.0)
    if not np.allclose(matrix, matrix.T, rtol=1e-5, atol=1e-6 * scale):
        raise ValueError(f"{name} must be symmetric, got {shown(matrix)}")
    try:
        np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        raise ValueError(f"{name} must be positive definite, got {shown(matrix)}") from None
