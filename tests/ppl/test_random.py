"""`ppl.random.key` draws exactly the numbers of `jax.random.key`, eagerly, under jit and vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl.random

SHAPES = [(), (7,), (3, 5), (2, 3, 4), (10_001,)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.uint16, jnp.uint32])
def test_bits_are_those_of_jax_threefry(shape, dtype):
    ours = jax.random.bits(ppl.random.key(11), shape, dtype)
    theirs = jax.random.bits(jax.random.key(11), shape, dtype)
    np.testing.assert_array_equal(ours, theirs)


def test_derived_keys_and_distributions_agree():
    ours, theirs = ppl.random.key(3), jax.random.key(3)
    for split in (lambda k: jax.random.split(k, 3)[2], lambda k: jax.random.fold_in(k, 17)):
        ours, theirs = split(ours), split(theirs)
        assert jax.random.key_impl(ours) == ppl.random.FAST_THREEFRY
        for draw in (
            lambda k: jax.random.normal(k, (4, 5)),
            lambda k: jax.random.uniform(k, (9,)),
            lambda k: jax.random.categorical(k, jnp.zeros((6, 3))),
        ):
            np.testing.assert_array_equal(draw(ours), draw(theirs))
            np.testing.assert_array_equal(jax.jit(draw)(ours), draw(theirs))


def test_vmapped_keys_agree():
    draw = jax.vmap(lambda k: jax.random.normal(k, (3,)))
    ours = draw(jax.random.split(ppl.random.key(5), 4))
    theirs = draw(jax.random.split(jax.random.key(5), 4))
    np.testing.assert_array_equal(ours, theirs)


def test_non_partitionable_mode_falls_back_to_jax():
    previous = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", False)
    try:
        ours = jax.random.normal(ppl.random.key(2), (5,))
        theirs = jax.random.normal(jax.random.key(2), (5,))
    finally:
        jax.config.update("jax_threefry_partitionable", previous)
    np.testing.assert_array_equal(ours, theirs)
