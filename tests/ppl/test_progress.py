"""Chunked host-driven scans equal the one-call scan."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.progress import scan_with_progress


def body(carry, x):
    key, total = carry
    key, sub = jax.random.split(key)
    total = total + x * jax.random.normal(sub)
    return (key, total), total


@pytest.mark.parametrize("chunk_size", [1, 7, 10, 25, 100])
def test_chunks_reproduce_the_scan(chunk_size):
    init = (jax.random.key(0), jnp.zeros(()))
    xs = jnp.arange(25.0)
    expected_carry, expected = jax.lax.scan(body, init, xs)
    carry, out = scan_with_progress(body, init, xs, chunk_size=chunk_size, progress=False)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(carry[1], expected_carry[1], rtol=1e-6)


def test_bad_chunk_size():
    with pytest.raises(ValueError, match="chunk_size"):
        scan_with_progress(body, (jax.random.key(0), 0.0), jnp.ones(3), chunk_size=0)
