"""The quantized-matmul kernel against gguf's dequantize followed by a float64 matmul."""

from __future__ import annotations

import dataclasses

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.models.lm import qmatmul
from ppl.models.lm.qmatmul import QuantizedWeight

Q = gguf.GGMLQuantizationType
N = 40  # not a multiple of the kernel's column tiles or panel


def gguf_blocks(kind: str, n: int, k: int, seed: int = 0) -> np.ndarray:
    """GGUF block bytes of a random [n, k] matrix: quantized by gguf where it can, else random
    blocks with float16 super-block scales in a sensible range."""
    rng = np.random.default_rng(seed)
    qtype = Q[kind]
    if kind in ("Q8_0", "Q4_0", "Q4_1"):
        return gguf.quants.quantize(rng.normal(0.0, 1.0, (n, k)).astype(np.float32), qtype)
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    data = rng.integers(0, 256, (n, k // block_size * type_size), np.uint8)
    blocks = data.reshape(-1, type_size)
    for start in (0, 2) if kind == "Q4_K" else (208,):
        scale = rng.uniform(1e-3, 1e-2, (blocks.shape[0], 1)).astype(np.float16)
        blocks[:, start : start + 2] = scale.view(np.uint8)
    return data


def reference(x: np.ndarray, data: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """x @ W.T in float64 from gguf's dequantize, and the scale |x| @ |W|.T of each output."""
    w = gguf.quants.dequantize(data, Q[kind]).astype(np.float64)
    x64 = x.astype(np.float64)
    return x64 @ w.T, np.abs(x64) @ np.abs(w).T


def assert_close(y: jax.Array, x: np.ndarray, data: np.ndarray, kind: str) -> None:
    expected, scale = reference(x, data, kind)
    error = np.abs(np.asarray(y, np.float64) - expected) / scale
    assert error.max() < 1e-5, f"{kind}: largest error {error.max():.2e} of |x|·|W|"


@pytest.mark.parametrize("kind", qmatmul.FORMATS)
def test_dequantize_matches_gguf_exactly(kind: str) -> None:
    data = gguf_blocks(kind, N, 512)
    weight = qmatmul.from_blocks(data, kind, (N, 512))
    expected = gguf.quants.dequantize(data, Q[kind])
    np.testing.assert_array_equal(np.asarray(qmatmul.dequantize(weight)), expected)


@pytest.mark.parametrize("kind", qmatmul.FORMATS)
@pytest.mark.parametrize("batch", [1, 3, 16])
def test_qmatmul_matches_float64_reference(kind: str, batch: int) -> None:
    k = 512
    data = gguf_blocks(kind, N, k)
    weight = qmatmul.from_blocks(data, kind, (N, k))
    x = np.random.default_rng(1).normal(size=(batch, k)).astype(np.float32)
    assert_close(qmatmul.qmatmul(jnp.asarray(x), weight), x, data, kind)


@pytest.mark.parametrize("kind", qmatmul.FORMATS)
@pytest.mark.parametrize("batch", [1, 5, 16])
def test_portable_path_matches_avx2_path(kind: str, batch: int) -> None:
    k = 256
    data = gguf_blocks(kind, N, k, seed=2)
    weight = qmatmul.from_blocks(data, kind, (N, k))
    x = jnp.asarray(np.random.default_rng(3).normal(size=(batch, k)), jnp.float32)
    portable = qmatmul.qmatmul(x, weight, portable=True)
    assert_close(portable, np.asarray(x), data, kind)
    np.testing.assert_allclose(portable, qmatmul.qmatmul(x, weight), rtol=1e-4, atol=1e-4)


def test_under_jit_with_leading_axes_and_stacked_layers() -> None:
    kind, k, layers = "Q4_1", 96, 3
    data = [gguf_blocks(kind, N, k, seed=s) for s in range(layers)]
    weights = [qmatmul.from_blocks(d, kind, (N, k)) for d in data]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *weights)
    x = np.random.default_rng(4).normal(size=(2, 3, k)).astype(np.float32)

    @jax.jit
    def run(x: jax.Array, stacked: QuantizedWeight) -> jax.Array:
        def body(carry: None, w: QuantizedWeight) -> tuple[None, jax.Array]:
            return carry, qmatmul.linear(x, w)

        return jax.lax.scan(body, None, stacked)[1]

    y = run(jnp.asarray(x), stacked)
    assert y.shape == (layers, 2, 3, N)
    for layer in range(layers):
        assert_close(y[layer].reshape(6, N), x.reshape(6, k), data[layer], kind)


@pytest.mark.parametrize("kind", ["Q6_K", "Q4_0", "Q4_1"])
def test_a_layer_of_stacked_weights_is_read_in_place(kind: str) -> None:
    """`layer` picks one matrix of stacked arrays inside the kernel: the same products as the
    sliced weight, under jit with a traced index, and through the dequantizing fallback."""
    k, layers = 256, 3
    data = [gguf_blocks(kind, N, k, seed=s) for s in range(layers)]
    weights = [qmatmul.from_blocks(d, kind, (N, k)) for d in data]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *weights)
    x = np.random.default_rng(6).normal(size=(3, k)).astype(np.float32)

    @jax.jit
    def product(x: jax.Array, index: jax.Array) -> jax.Array:
        return qmatmul.qmatmul(x, dataclasses.replace(stacked, layer=index))

    for index in range(layers):
        assert_close(product(jnp.asarray(x), jnp.int32(index)), x, data[index], kind)
        picked = dataclasses.replace(stacked, layer=jnp.int32(index))
        np.testing.assert_array_equal(
            np.asarray(qmatmul.dequantize(picked)), np.asarray(qmatmul.dequantize(weights[index]))
        )
    with pytest.raises(ValueError, match=r"expected \[L, N, K\] weights and a layer"):
        qmatmul.qmatmul(jnp.asarray(x), dataclasses.replace(weights[0], layer=jnp.int32(0)))
    with pytest.raises(ValueError, match="layer must be a scalar"):
        qmatmul.qmatmul(jnp.asarray(x), dataclasses.replace(stacked, layer=jnp.zeros(2, int)))


def test_vmap_over_activations() -> None:
    data = gguf_blocks("Q8_0", N, 64)
    weight = qmatmul.from_blocks(data, "Q8_0", (N, 64))
    x = np.random.default_rng(5).normal(size=(4, 2, 64)).astype(np.float32)
    y = jax.vmap(lambda rows: qmatmul.qmatmul(rows, weight))(jnp.asarray(x))
    assert_close(y.reshape(8, N), x.reshape(8, 64), data, "Q8_0")


def test_from_gguf_tensor(tmp_path: pytest.TempPathFactory) -> None:
    data = gguf_blocks("Q4_0", N, 64)
    path = f"{tmp_path}/w.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_tensor("w", data, raw_dtype=Q.Q4_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tensor = gguf.GGUFReader(path).tensors[0]
    weight = qmatmul.from_gguf_tensor(tensor)
    assert weight.shape == (N, 64) and weight.format == "Q4_0"
    assert weight.nbytes == N * 64 // 2 + N * 2 * 4  # codes + float32 scales
    np.testing.assert_array_equal(
        np.asarray(qmatmul.dequantize(weight)), gguf.quants.dequantize(data, Q.Q4_0)
    )


def test_bad_inputs_are_named() -> None:
    weight = qmatmul.from_blocks(gguf_blocks("Q4_1", N, 64), "Q4_1", (N, 64))
    with pytest.raises(TypeError, match="x must be float32, got bfloat16"):
        qmatmul.qmatmul(jnp.ones((1, 64), jnp.bfloat16), weight)
    with pytest.raises(ValueError, match=r"does not end in K = 64"):
        qmatmul.qmatmul(jnp.ones((1, 60), jnp.float32), weight)
    bad_codes = QuantizedWeight(weight.codes.view(np.int8), weight.scales, weight.mins, "Q4_1")
    with pytest.raises(TypeError, match="codes must be uint8, got int8"):
        qmatmul.qmatmul(jnp.ones((1, 64), jnp.float32), bad_codes)
    with pytest.raises(ValueError, match="not a multiple of the block size 32"):
        qmatmul.from_blocks(np.zeros(N * 2 * 20, np.uint8), "Q4_1", (N, 48))
    odd = QuantizedWeight(np.zeros((N, 24), np.uint8), np.zeros((N, 1), np.float32), None, "Q4_0")
    with pytest.raises(ValueError, match="K = 48 is not a multiple of the block size 32"):
        qmatmul.qmatmul(jnp.ones((1, 48), jnp.float32), odd)
    with pytest.raises(ValueError, match="unsupported quantized format 'Q5_0'"):
        qmatmul.from_blocks(np.zeros(22, np.uint8), "Q5_0", (1, 32))


def test_kernel_rejects_mismatched_shapes_itself() -> None:
    """The C++ handler checks shapes too (for callers that bypass `qmatmul`)."""
    qmatmul.kernel_available()
    call = jax.ffi.ffi_call("ppl_qmatmul_q4", jax.ShapeDtypeStruct((1, N), jnp.float32))
    x, layer = jnp.ones((1, 64), jnp.float32), jnp.zeros((), jnp.int32)
    codes, scales = np.zeros((1, N, 32), np.uint8), np.zeros((1, N, 3), np.float32)
    with pytest.raises(Exception, match="scales \\[1, 40, 3\\] do not match"):
        jax.block_until_ready(call(x, codes, scales, layer, force_scalar=False))
    scales = np.zeros((1, N, 2), np.float32)
    with pytest.raises(Exception, match="layer 1 of 1"):
        jax.block_until_ready(call(x, codes, scales, layer + 1, force_scalar=False))
    with pytest.raises(Exception, match="codes rank 3"):
        jax.block_until_ready(call(x, codes[0], scales, layer, force_scalar=False))


def test_missing_compiler_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory
) -> None:
    monkeypatch.setenv("PPL_JAX_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler")
    with pytest.raises(qmatmul.KernelUnavailableError, match="no C\\+\\+ compiler 'no-such"):
        qmatmul.build_kernel()


def test_linear_falls_back_to_dequantizing_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable() -> None:
        raise qmatmul.KernelUnavailableError("no compiler here")

    data = gguf_blocks("Q6_K", N, 256)
    weight = qmatmul.from_blocks(data, "Q6_K", (N, 256))
    x = np.random.default_rng(6).normal(size=(2, 256)).astype(np.float32)
    monkeypatch.setattr(qmatmul, "_library", unavailable)
    qmatmul.kernel_available.cache_clear()
    try:
        with pytest.warns(UserWarning, match="dequantizing instead: no compiler here"):
            y = qmatmul.linear(jnp.asarray(x), weight)
    finally:
        qmatmul.kernel_available.cache_clear()
    assert_close(y, x, data, "Q6_K")
    dense = np.asarray(qmatmul.dequantize(weight)).T
    np.testing.assert_array_equal(qmatmul.linear(jnp.asarray(x), dense), jnp.asarray(x) @ dense)


def test_linear_takes_the_kernel_up_to_its_row_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both sides of `KERNEL_MAX_ROWS` give the product; only small row counts call the kernel."""
    data = gguf_blocks("Q4_1", N, 64, seed=8)
    weight = qmatmul.from_blocks(data, "Q4_1", (N, 64))
    monkeypatch.setattr(qmatmul, "KERNEL_MAX_ROWS", 4)
    calls = []
    kernel = qmatmul.qmatmul
    monkeypatch.setattr(qmatmul, "qmatmul", lambda x, w: calls.append(x.shape) or kernel(x, w))
    for rows in (4, 5):
        x = np.random.default_rng(rows).normal(size=(rows, 64)).astype(np.float32)
        assert_close(qmatmul.linear(jnp.asarray(x), weight), x, data, "Q4_1")
    assert calls == [(4, 64)]


def test_vmap_over_weights() -> None:
    data = [gguf_blocks("Q4_0", N, 64, seed=s) for s in range(3)]
    stacked = jax.tree.map(
        lambda *a: jnp.stack(a), *[qmatmul.from_blocks(d, "Q4_0", (N, 64)) for d in data]
    )
    x = np.random.default_rng(7).normal(size=(2, 64)).astype(np.float32)
    y = jax.jit(jax.vmap(lambda w: qmatmul.qmatmul(jnp.asarray(x), w)))(stacked)
    for index in range(3):
        assert_close(y[index], x, data[index], "Q4_0")


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_K"])
def test_dequantize_rows(kind: str) -> None:
    data = gguf_blocks(kind, N, 256)
    weight = qmatmul.from_blocks(data, kind, (N, 256))
    ids = jnp.array([[3, 0], [39, 3]])
    expected = gguf.quants.dequantize(data, Q[kind])[np.asarray(ids)]
    np.testing.assert_array_equal(np.asarray(qmatmul.dequantize_rows(weight, ids)), expected)


def test_build_goes_to_a_keyed_cache_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory
) -> None:
    monkeypatch.setenv("PPL_JAX_CACHE", str(tmp_path))
    path = qmatmul.build_kernel()
    assert path.parent.parent == tmp_path / "kernels" and len(path.parent.name) == 16
    assert sorted(p.name for p in path.parent.iterdir()) == ["kernels.so"]  # no temporary left
    assert qmatmul.build_kernel() == path  # built once
