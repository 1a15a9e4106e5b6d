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


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        (b"", "is empty, not a checkpoint"),
        (b"ab", "not a readable safetensors checkpoint .*header too small"),
        (b'{"network": 1}', "not a readable safetensors checkpoint .*header too large"),
        (bytes(range(256)) * 4, "not a readable safetensors checkpoint"),
        ("half", "not a readable safetensors checkpoint .*incomplete metadata"),
    ],
)
def test_files_that_are_not_checkpoints_are_named(tmp_path, contents, message):
    path = tmp_path / "dt.safetensors"
    if contents == "half":
        save(path, network(0))
        contents = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(contents)
    with pytest.raises(ValueError, match=message) as error:
        load(path, network(0))
    assert str(path) in str(error.value)


def test_directories_and_missing_folders_are_named(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path} is a directory, not a checkpoint file"):
        load(tmp_path, network(0))
    with pytest.raises(ValueError, match=f"{tmp_path} is a directory; give a file path"):
        save(tmp_path, network(0))
    with pytest.raises(FileNotFoundError, match="the folder .*/nowhere does not exist"):
        save(tmp_path / "nowhere" / "dt.safetensors", network(0))
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load(tmp_path / "missing.safetensors", network(0))


@pytest.mark.parametrize(
    ("step", "message"),
    [(-1, "step must be >= 0, got -1"), (2.5, "step must be an integer >= 0, got 2.5")],
)
def test_bad_steps_are_refused(tmp_path, step, message):
    with pytest.raises(ValueError, match=message):
        save(tmp_path / "dt.safetensors", network(0), step=step)
    assert not (tmp_path / "dt.safetensors").exists()


def test_a_checkpoint_of_another_depth_names_the_missing_array(tmp_path):
    save(tmp_path / "dt.safetensors", network(0))
    deeper = DistributionTransformer(2, 3, width=16, depth=2, num_heads=2, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"has no array \['network'\].blocks\[1\]"):
        load(tmp_path / "dt.safetensors", deeper)
