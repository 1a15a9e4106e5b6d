"""Checkpoints round-trip the network, the optimiser state and the step."""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np
import optax
import pytest

from ppl.models.amortized.checkpoint import load, save
from ppl.models.amortized.distribution_transformer import DistributionTransformer


def network(seed):
    return DistributionTransformer(2, 3, width=16, depth=1, num_heads=2, key=jax.random.key(seed))


def test_round_trip(tmp_path):
    trained = network(0)
    optimizer = optax.adamw(1e-3)
    state = optimizer.init(eqx.filter(trained, eqx.is_inexact_array))
    save(tmp_path / "dt.safetensors", trained, state, step=123)
    restored, restored_state, step = load(tmp_path / "dt.safetensors", network(1), state)
    assert step == 123
    for ours, theirs in zip(
        jax.tree.leaves(eqx.filter(restored, eqx.is_array)),
        jax.tree.leaves(eqx.filter(trained, eqx.is_array)),
        strict=True,
    ):
        np.testing.assert_array_equal(ours, theirs)
    assert jax.tree.structure(restored_state) == jax.tree.structure(state)


def test_mismatches_are_named(tmp_path):
    save(tmp_path / "dt.safetensors", network(0))
    wider = DistributionTransformer(2, 3, width=32, depth=1, num_heads=2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="shape"):
        load(tmp_path / "dt.safetensors", wider)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.safetensors", network(0))
