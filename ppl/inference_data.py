"""Draws as ArviZ `InferenceData`, so `az.summary`, `az.plot_trace`, `az.loo` work on them.

Groups: ``posterior`` (constrained latent and deterministic sites), ``sample_stats`` (ArviZ's
names: ``lp``, ``acceptance_rate``, ``diverging``, ``energy``, ``n_steps``, ``tree_depth``,
``step_size``), ``log_likelihood`` (pointwise, one variable per observed site) and
``observed_data``. Every array has leading axes [chain, draw]; `dims` and `coords` name the
others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import arviz as az
import jax
import numpy as np

from ppl.numpyro_bridge import NumPyroModel


def constrained_draws(model: NumPyroModel, positions: Any) -> dict[str, jax.Array]:
    """`model.constrain` over unconstrained positions with leading axes [chain, draw]."""
    return jax.jit(jax.vmap(jax.vmap(model.constrain)))(positions)


def pointwise_log_likelihood(
    model: NumPyroModel, draws: Mapping[str, jax.Array]
) -> dict[str, jax.Array]:
    """log p(y_n | z) per observed site, for constrained draws [chain, draw, ...]."""
    latent = {name: draws[name] for name in model.latent_sites}
    return jax.jit(jax.vmap(jax.vmap(model.pointwise_log_likelihood)))(latent)


def to_inference_data(
    model: NumPyroModel,
    positions: Any,
    sample_stats: Mapping[str, Any] | None = None,
    *,
    log_likelihood: bool = True,
    dims: Mapping[str, list[str]] | None = None,
    coords: Mapping[str, Any] | None = None,
) -> az.InferenceData:
    """Build `InferenceData` from unconstrained `positions` [chain, draw, ...] of `model`.

    `dims` names the axes after [chain, draw] per variable (``{"theta": ["school"]}``, for
    every group the variable is in) and `coords` their labels (``{"school": names}``), as in
    `az.from_dict`.
    """
    draws = constrained_draws(model, positions)
    groups: dict[str, Any] = {
        "posterior": {name: np.asarray(value) for name, value in draws.items()},
        "observed_data": {name: np.asarray(v) for name, v in model.observed_data().items()},
    }
    if sample_stats:
        groups["sample_stats"] = {name: np.asarray(v) for name, v in sample_stats.items()}
    if log_likelihood:
        pointwise = pointwise_log_likelihood(model, draws)
        groups["log_likelihood"] = {name: np.asarray(v) for name, v in pointwise.items()}
    if dims is not None or coords is not None:
        shapes = {name: np.shape(v)[2:] for name, v in groups["posterior"].items()}
        shapes |= {name: np.shape(v) for name, v in groups["observed_data"].items()}
        _check_dims(shapes, dims or {}, coords or {})
    return az.from_dict(
        **groups,
        dims=None if dims is None else {k: list(v) for k, v in dims.items()},
        coords=None if coords is None else dict(coords),
    )


def _check_dims(
    shapes: Mapping[str, tuple[int, ...]],
    dims: Mapping[str, list[str]],
    coords: Mapping[str, Any],
) -> None:
    """ValueError unless every `dims` entry is a site with one name per axis (after [chain,
    draw]) and every coordinate has the length of the axes it names."""
    sizes: dict[str, int] = {}
    for site, names in dims.items():
        if site not in shapes:
            raise ValueError(f"dims name {site!r}, which is not a site; sites: {sorted(shapes)}")
        if isinstance(names, str) or len(names) != len(shapes[site]):
            raise ValueError(
                f"dims of site {site!r} are {names!r}, but it has {len(shapes[site])} axes "
                f"(shape {shapes[site]}): give one name per axis"
            )
        for name, size in zip(names, shapes[site], strict=True):
            if sizes.setdefault(name, size) != size:
                raise ValueError(f"dimension {name!r} has lengths {sizes[name]} and {size}")
    for name, labels in coords.items():
        if name in sizes and len(labels) != sizes[name]:
            raise ValueError(
                f"coords of {name!r} have {len(labels)} labels, but its axes have length "
                f"{sizes[name]}"
            )
