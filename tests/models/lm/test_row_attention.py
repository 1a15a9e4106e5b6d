"""The row-attention kernel against a float64 NumPy oracle and against XLA's blocked loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.models.lm import row_attention as ra
from ppl.models.lm import transformer


def oracle(q, keys, values, layer, lengths, scale):
    """float64 max, total and weighted of each (row, head, query)."""
    batch, heads, queries, dim = q.shape
    top = np.full((batch, heads, queries), -np.inf)
    total = np.zeros((batch, heads, queries))
    weighted = np.zeros((batch, heads, queries, dim))
    for b in range(batch):
        n = int(np.clip(lengths[b], 0, keys.shape[3]))
        if n == 0:
            continue
        k = keys[layer, b, :, :n].astype(np.float64)
        v = values[layer, b, :, :n].astype(np.float64)
        s = scale * np.einsum("kmd,ktd->kmt", q[b].astype(np.float64), k)
        top[b] = s.max(-1)
        e = np.exp(s - top[b][..., None])
        total[b] = e.sum(-1)
        weighted[b] = np.einsum("kmt,ktd->kmd", e, v)
    return top, total, weighted


def random_case(dim: int, queries: int, capacity: int = 80, seed: int = 0):
    rng = np.random.default_rng(seed)
    layers, batch, heads = 3, 5, 2
    q = rng.normal(size=(batch, heads, queries, dim)).astype(np.float32)
    keys = rng.normal(size=(layers, batch, heads, capacity, dim)).astype(np.float32)
    values = rng.normal(size=(layers, batch, heads, capacity, dim)).astype(np.float32)
    lengths = np.array([0, 1, 9, capacity, capacity + 7], np.int32)  # past capacity: clipped
    return q, keys, values, lengths


@pytest.mark.parametrize("portable", [False, True])
@pytest.mark.parametrize(("dim", "queries"), [(64, 3), (64, 1), (16, 7), (12, 2)])
def test_kernel_matches_float64_oracle(dim: int, queries: int, portable: bool) -> None:
    q, keys, values, lengths = random_case(dim, queries)
    scale = dim**-0.5
    got = ra.row_attention(
        jnp.asarray(q),
        jnp.asarray(keys),
        jnp.asarray(values),
        2,
        jnp.asarray(lengths),
        scale,
        portable=portable,
    )
    want = oracle(q, keys, values, 2, lengths, scale)
    np.testing.assert_array_equal(np.isinf(got[0]), np.isinf(want[0]))  # the empty row
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(
            np.nan_to_num(g, neginf=0), np.nan_to_num(w, neginf=0), rtol=2e-5, atol=2e-5
        )


def test_attention_equals_the_blocked_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """`_attention` through the kernel and through XLA's loop over 64-position blocks."""
    rng = np.random.default_rng(3)
    batch, seq, heads, group, dim, capacity = 4, 2, 3, 3, 64, 192
    keys = jnp.asarray(rng.normal(size=(2, batch, heads, capacity, dim)), jnp.float32)
    values = jnp.asarray(rng.normal(size=(2, batch, heads, capacity, dim)), jnp.float32)
    q = jnp.asarray(rng.normal(size=(batch, seq, heads, group, dim)), jnp.float32)
    k_new = jnp.asarray(rng.normal(size=(batch, seq, heads, dim)), jnp.float32)
    view = transformer.LayerCache(
        keys, values, jnp.int32(1), jnp.asarray([0, 63, 64, 190], jnp.int32), None, None
    )
    attend = jax.jit(lambda q, k: transformer._attention(q, k, k, view))
    assert ra.kernel_applies(q, keys)
    fast = attend(q, k_new)
    monkeypatch.setattr(transformer, "kernel_applies", lambda *arrays: False)
    looped = jax.jit(lambda q, k: transformer._attention(q, k, k, view))(q, k_new)
    np.testing.assert_allclose(fast, looped, rtol=1e-5, atol=1e-5)


def test_kernel_is_skipped_for_bfloat16() -> None:
    q = jnp.zeros((1, 1, 1, 8), jnp.bfloat16)
    assert not ra.kernel_applies(q, jnp.zeros((1, 1, 1, 4, 8), jnp.bfloat16))


def test_bad_shapes_and_layer_are_clear_errors() -> None:
    q, keys, values, lengths = random_case(16, 2)
    with pytest.raises(ValueError, match=r"keys \(3, 5, 2, 80, 8\) do not match q"):
        ra.row_attention(
            jnp.asarray(q),
            jnp.asarray(keys[..., :8]),
            jnp.asarray(values),
            0,
            jnp.asarray(lengths),
            1.0,
        )
    with pytest.raises(Exception, match="row_attention: layer 3 of 3"):
        jax.block_until_ready(
            ra.row_attention(
                jnp.asarray(q), jnp.asarray(keys), jnp.asarray(values), 3, jnp.asarray(lengths), 1.0
            )
        )
