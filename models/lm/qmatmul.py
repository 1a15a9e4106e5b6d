"""Matrix products that read GGUF-quantized weights directly (a C++ kernel behind `jax.ffi`).

A `QuantizedWeight` holds a weight W [N, K] (GGUF's row order: N output features, blocks along
the K inputs) repacked from GGUF blocks into separate arrays, the float16 block scales widened
to float32 (exact):

| format | codes | per-block arrays | weight |
|---|---|---|---|
| Q8_0 | int8 [N, K] | scales [N, K/32] | w = d·q, q in [-128, 127] |
| Q6_K | int8 [N, K] | scales [N, K/16] | w = d·q, q in [-32, 31], d = d_super·s (int8 s) |
| Q4_0 | uint8 [N, K/2] | scales [N, K/32] | w = d·(q - 8), q in [0, 15] |
| Q4_1 | uint8 [N, K/2] | scales, mins [N, K/32] | w = d·q + m, q in [0, 15] |
| Q4_K | uint8 [N, K/2] | scales, mins [N, K/32] | w = d·q + m, d = d_super·s, m = -dmin·m6 |

4-bit codes keep GGUF's Q4_0/Q4_1 nibble order: in a block's 16 bytes, byte j holds q[j] (low
nibble) and q[j + 16] (high nibble); Q4_K's sub-blocks are reordered into it at load. Every
dequantized weight equals the float32 value of `gguf.quants.dequantize` exactly.

`qmatmul(x, w)` is `x @ dequantize(w).T` for float32 x [..., K], computed by
`kernels/qmatmul.cc` (AVX2+FMA with a portable fallback), which the first call compiles with
the machine's C++ compiler into the user cache, in one library with the other CPU kernels
(`SOURCES`; `make kernels` builds it ahead of time).
`linear(x, w)` is the runtime's `x @ w` for a float [in, out] matrix or a `QuantizedWeight`,
falling back to dequantizing in the graph (with a warning) where no kernel can be built.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import math
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import gguf
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from ppl.models.lm.default_model import cache_dir

Q = gguf.GGMLQuantizationType
KERNELS = Path(__file__).resolve().parent / "kernels"
# every FFI kernel of the runtime, built into one library: these products and decode attention
SOURCES = (KERNELS / "qmatmul.cc", KERNELS / "attention.cc")
HEADERS = (KERNELS / "common.h",)
CXX_FLAGS = ("-O3", "-shared", "-fPIC", "-std=c++17")
FORMATS = ("Q8_0", "Q6_K", "Q4_0", "Q4_1", "Q4_K")
INT8_GROUP = {"Q8_0": 32, "Q6_K": 16}  # weights per scale of the int8 formats
NIBBLE_BLOCK = 32


class KernelUnavailableError(RuntimeError):
    """The quantized-matmul kernel cannot be built or loaded on this machine."""


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["codes", "scales", "mins", "layer"],
    meta_fields=["format"],
)
@dataclasses.dataclass(frozen=True)
class QuantizedWeight:
    """A weight W [N, K] in a repacked GGUF block layout (see the module docstring).

    The arrays may carry leading axes (layers stacked for a scan); `mins` is None except for
    Q4_1 and Q4_K. With `layer` (an int32 scalar) the arrays are stacked [L, N, ...] and the
    weight is their layer `layer`, which the kernel reads in place (slicing a layer out in the
    graph copies it before every product).
    """

    codes: jax.Array | np.ndarray
    scales: jax.Array | np.ndarray
    mins: jax.Array | np.ndarray | None
    format: str
    layer: jax.Array | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(N, K) of one matrix."""
        n, width = self.codes.shape[-2:]
        return n, width if self.format in INT8_GROUP else 2 * width

    @property
    def nbytes(self) -> int:
        """Bytes the arrays hold."""
        return sum(int(a.nbytes) for a in (self.codes, self.scales, self.mins) if a is not None)


# ------------------------------------------------------------------------------------------
# Repacking GGUF blocks.


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    """The float16 at byte `start` of every block, as float32 [blocks]."""
    return blocks[:, start : start + 2].copy().view(np.float16)[:, 0].astype(np.float32)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """4-bit values [..., 32] -> bytes [..., 16]: byte j = q[j] | q[j + 16] << 4."""
    return (q[..., :16] | (q[..., 16:] << 4)).astype(np.uint8)


def _q4_k_scales_mins(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K's twelve bytes -> eight 6-bit scales and mins per super-block (ggml's layout)."""
    low, mid, high = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = np.concatenate([low & 63, (high & 15) | ((low >> 6) << 4)], axis=1)
    mins = np.concatenate([mid & 63, (high >> 4) | ((mid >> 6) << 4)], axis=1)
    return scales.astype(np.float32), mins.astype(np.float32)


def from_blocks(data: np.ndarray, kind: str, shape: tuple[int, int]) -> QuantizedWeight:
    """Repack raw GGUF block bytes of a [N, K] matrix (rows of K, blocks along K)."""
    if kind not in FORMATS:
        raise ValueError(f"unsupported quantized format {kind!r} (supported: {FORMATS})")
    n, k = shape
    block_size, type_size = gguf.GGML_QUANT_SIZES[Q.__members__[kind]]
    if k % block_size:
        raise ValueError(f"{kind}: K = {k} is not a multiple of the block size {block_size}")
    raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    if raw.size != n * k // block_size * type_size:
        raise ValueError(f"{kind}: {raw.size} bytes do not hold a [{n}, {k}] matrix")
    blocks = raw.reshape(-1, type_size)
    if kind == "Q8_0":  # d (f16), q (32 int8)
        codes = blocks[:, 2:].view(np.int8)
        return QuantizedWeight(codes.reshape(n, k), _f16(blocks, 0).reshape(n, -1), None, kind)
    if kind == "Q4_0":  # d, qs (16 bytes)
        return QuantizedWeight(
            blocks[:, 2:].reshape(n, k // 2), _f16(blocks, 0).reshape(n, -1), None, kind
        )
    if kind == "Q4_1":  # d, m, qs
        scales, mins = _f16(blocks, 0).reshape(n, -1), _f16(blocks, 2).reshape(n, -1)
        return QuantizedWeight(blocks[:, 4:].reshape(n, k // 2), scales, mins, kind)
    if kind == "Q4_K":  # d, dmin, 12 bytes of 6-bit scales and mins, qs (128 bytes)
        sub_scales, sub_mins = _q4_k_scales_mins(blocks[:, 4:16])
        scales = _f16(blocks, 0)[:, None] * sub_scales
        mins = -(_f16(blocks, 2)[:, None] * sub_mins)
        # qs chunk c (32 bytes): low nibbles are sub-block 2c, high nibbles sub-block 2c + 1.
        qs = blocks[:, 16:].reshape(-1, 4, 1, 32) >> np.array([0, 4], np.uint8)[:, None]
        codes = _pack_nibbles((qs & 15).reshape(-1, 8, 32))
        return QuantizedWeight(
            codes.reshape(n, k // 2), scales.reshape(n, -1), mins.reshape(n, -1), kind
        )
    # Q6_K: ql (128 bytes: low 4 bits), qh (64: high 2 bits), 16 int8 scales, d (f16). In each
    # half of 128 weights, weight 32·s + l has low bits from ql[l + 32·(s % 2)] (nibble s // 2)
    # and high bits (qh[l] >> 2·s) & 3; the code is that 6-bit value minus 32.
    ql = blocks[:, :128].reshape(-1, 2, 1, 64) >> np.array([0, 4], np.uint8)[:, None]
    qh = blocks[:, 128:192].reshape(-1, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8)[:, None]
    q = (ql & 15).reshape(-1, 2, 128) | ((qh & 3).reshape(-1, 2, 128) << 4)
    codes = (q.astype(np.int16) - 32).astype(np.int8)
    scales = _f16(blocks, 208)[:, None] * blocks[:, 192:208].view(np.int8).astype(np.float32)
    return QuantizedWeight(codes.reshape(n, k), scales.reshape(n, -1), None, kind)


def from_gguf_tensor(tensor: gguf.ReaderTensor) -> QuantizedWeight:
    """Repack a quantized 2-D tensor of a `gguf.GGUFReader` (GGUF shape [K, N], fastest first)."""
    kind = Q(tensor.tensor_type)
    if kind.name not in FORMATS:
        raise ValueError(f"tensor {tensor.name}: {kind.name} is not one of {FORMATS}")
    if len(tensor.shape) != 2:
        raise ValueError(f"tensor {tensor.name}: expected a matrix, got shape {tensor.shape}")
    k, n = (int(d) for d in tensor.shape)
    return from_blocks(np.asarray(tensor.data), kind.name, (n, k))


# ------------------------------------------------------------------------------------------
# The float path.


def selected(weight: QuantizedWeight) -> QuantizedWeight:
    """The weight with its `layer` sliced out of the stacked arrays (itself without one)."""
    if weight.layer is None:
        return weight
    index = weight.layer
    mins = None if weight.mins is None else jnp.asarray(weight.mins)[index]
    codes, scales = jnp.asarray(weight.codes)[index], jnp.asarray(weight.scales)[index]
    return QuantizedWeight(codes, scales, mins, weight.format)


def dequantize(weight: QuantizedWeight) -> jax.Array:
    """W [..., N, K] as float32 (the same values as `gguf.quants.dequantize`)."""
    weight = selected(weight)
    lead, (n, k) = tuple(weight.codes.shape[:-2]), weight.shape
    scales = jnp.asarray(weight.scales)
    if weight.format in INT8_GROUP:
        q = (
            jnp.asarray(weight.codes)
            .astype(jnp.float32)
            .reshape(*lead, n, -1, INT8_GROUP[weight.format])
        )
        return (q * scales[..., None]).reshape(*lead, n, k)
    codes = jnp.asarray(weight.codes).reshape(*lead, n, -1, NIBBLE_BLOCK // 2)
    q = jnp.concatenate([codes & 15, codes >> 4], axis=-1).astype(jnp.float32)
    if weight.mins is None:
        w = scales[..., None] * (q - 8.0)
    else:
        w = scales[..., None] * q + jnp.asarray(weight.mins)[..., None]
    return w.reshape(*lead, n, k)


def dequantize_rows(weight: QuantizedWeight, ids: jax.Array) -> jax.Array:
    """Rows W[ids] [..., K] as float32, e.g. an embedding lookup in a quantized table."""
    weight = selected(weight)
    picked = jax.tree.map(lambda a: jnp.asarray(a)[ids][..., None, :], weight)
    return dequantize(picked)[..., 0, :]


# ------------------------------------------------------------------------------------------
# Building and loading the kernel.


def _compiler() -> str:
    name = os.environ.get("CXX", "g++")
    path = shutil.which(name)
    if path is None:
        raise KernelUnavailableError(
            f"no C++ compiler {name!r} on PATH to build the CPU kernels (set CXX, or use "
            "float weights)"
        )
    return path


def kernel_path() -> Path:
    """Where the shared library for this source, jaxlib, compiler and flags lives (or will)."""
    compiler = _compiler()
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=False
    ).stdout.split("\n")[0]
    key = hashlib.sha256(
        b"\0".join(
            s.encode()
            for s in (
                *(path.read_text() for path in (*SOURCES, *HEADERS)),
                jaxlib.__version__,
                compiler,
                version,
                *CXX_FLAGS,
            )
        )
    ).hexdigest()[:16]
    return cache_dir() / "kernels" / key / "kernels.so"


def build_kernel() -> Path:
    """Compile the kernels (`SOURCES`) into one library in the user cache if it is not there;
    its path."""
    target = kernel_path()
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    command = [
        _compiler(),
        *CXX_FLAGS,
        "-isystem",
        jax.ffi.include_dir(),
        *(str(path) for path in SOURCES),
        "-o",
        temporary,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        os.unlink(temporary)
        raise KernelUnavailableError(
            f"building the CPU kernels failed ({' '.join(command)}):\n{result.stderr[-2000:]}"
        )
    os.replace(temporary, target)  # atomic: a concurrent build renames the same bytes
    return target


TARGETS = {  # FFI target name: handler symbol
    "ppl_qmatmul_int8": "PplQMatmulInt8",
    "ppl_qmatmul_q4": "PplQMatmulQ4",
    "ppl_qmatmul_q4min": "PplQMatmulQ4Min",
    "ppl_row_attention": "PplRowAttention",
}


@functools.cache
def _library() -> ctypes.CDLL:
    library = ctypes.CDLL(str(build_kernel()))
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(
            target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu"
        )
    return library


def kernel_uses_avx2() -> bool:
    """Whether the kernel takes its AVX2+FMA path on this machine (builds it if needed)."""
    return bool(_library().PplQMatmulHasAvx2())


@functools.cache
def kernel_available() -> bool:
    """Whether the kernel builds and loads here (warns with the reason once when not)."""
    try:
        _library()
    except (KernelUnavailableError, OSError) as error:
        warnings.warn(
            f"quantized matmul kernel unavailable, dequantizing instead: {error}", stacklevel=2
        )
        return False
    return True


# ------------------------------------------------------------------------------------------
# The products.

CODE_DTYPES = {
    "Q8_0": np.int8,
    "Q6_K": np.int8,
    "Q4_0": np.uint8,
    "Q4_1": np.uint8,
    "Q4_K": np.uint8,
}


def _check(x: jax.Array, weight: QuantizedWeight) -> None:
    if weight.format not in FORMATS:
        raise ValueError(f"qmatmul: unsupported format {weight.format!r}")
    if x.dtype != jnp.float32:
        raise TypeError(f"qmatmul: x must be float32, got {x.dtype}")
    if weight.codes.dtype != CODE_DTYPES[weight.format]:
        raise TypeError(
            f"qmatmul: {weight.format} codes must be {np.dtype(CODE_DTYPES[weight.format])}, "
            f"got {weight.codes.dtype}"
        )
    for name in ("scales", "mins"):
        array = getattr(weight, name)
        if array is not None and array.dtype != jnp.float32:
            raise TypeError(f"qmatmul: {name} must be float32, got {array.dtype}")
    if (weight.mins is None) != (weight.format in ("Q8_0", "Q6_K", "Q4_0")):
        raise ValueError(
            f"qmatmul: {weight.format} {'has no' if weight.mins is None else 'takes no'} mins"
        )
    stacked = weight.layer is not None
    if weight.codes.ndim != 2 + stacked:
        wanted = "[L, N, K] weights and a layer" if stacked else "one [N, K] weight"
        raise ValueError(f"qmatmul: expected {wanted}, got codes {weight.codes.shape}")
    if weight.layer is not None and jnp.ndim(weight.layer) != 0:
        raise ValueError(f"qmatmul: layer must be a scalar, got shape {jnp.shape(weight.layer)}")
    n, k = weight.shape
    block = gguf.GGML_QUANT_SIZES[Q.__members__[weight.format]][0]
    if x.ndim < 1 or x.shape[-1] != k:
        raise ValueError(f"qmatmul: x {x.shape} does not end in K = {k} of the weight [{n}, {k}]")
    if k % block:
        raise ValueError(f"qmatmul: K = {k} is not a multiple of the block size {block}")
    per_block = (n, k // INT8_GROUP.get(weight.format, NIBBLE_BLOCK))
    expected = (*weight.codes.shape[:-2], *per_block)
    for name in ("scales", "mins"):
        array = getattr(weight, name)
        if array is not None and tuple(array.shape) != expected:
            raise ValueError(f"qmatmul: {name} {array.shape}, expected {expected}")


def _kernel(x: jax.Array, weight: QuantizedWeight, portable: bool) -> jax.Array:
    """One FFI call for float32 x [..., K] and one weight [N, K] (or layer `weight.layer` of
    stacked ones: the kernel takes [L, N, ...] arrays and a layer index)."""
    n, k = weight.shape
    rows = x.reshape(-1, k)
    out = jax.ShapeDtypeStruct((rows.shape[0], n), jnp.float32)
    # the kernel's layout: a leading layer axis and a layer index (a lone matrix is layer 0 of 1)
    lone = weight.layer is None
    codes, scales = (jnp.asarray(a)[None] if lone else a for a in (weight.codes, weight.scales))
    mins = weight.mins if weight.mins is None or not lone else jnp.asarray(weight.mins)[None]
    layer = jnp.asarray(0 if weight.layer is None else weight.layer, jnp.int32)
    if weight.format in INT8_GROUP:
        call = jax.ffi.ffi_call("ppl_qmatmul_int8", out, vmap_method="sequential")
        group = np.int64(INT8_GROUP[weight.format])
        y = call(rows, codes, scales, layer, group=group, force_scalar=portable)
    elif mins is None:
        call = jax.ffi.ffi_call("ppl_qmatmul_q4", out, vmap_method="sequential")
        y = call(rows, codes, scales, layer, force_scalar=portable)
    else:
        call = jax.ffi.ffi_call("ppl_qmatmul_q4min", out, vmap_method="sequential")
        y = call(rows, codes, scales, mins, layer, force_scalar=portable)
    return jnp.reshape(y, (*x.shape[:-1], n))


def qmatmul(x: jax.Array, weight: QuantizedWeight, *, portable: bool = False) -> jax.Array:
    """`x @ dequantize(weight).T`: float32 x [..., K] -> [..., N], by the FFI kernel.

    Works under `jax.jit`. Under `vmap` over x alone the mapped axis joins the rows of one
    kernel call; mapping over weights runs one call per element. A weight with a `layer` is
    read in place from its stacked arrays. `portable` forces the scalar C++ path instead of
    AVX2.
    """
    x = jnp.asarray(x)
    _check(x, weight)
    _library()

    @jax.custom_batching.custom_vmap
    def apply(x: jax.Array, weight: QuantizedWeight) -> jax.Array:
        return _kernel(x, weight, portable)

    @apply.def_vmap
    def apply_batched(
        axis_size: int, in_batched: list, x: jax.Array, weight: QuantizedWeight
    ) -> tuple[jax.Array, bool]:
        x_batched, weight_batched = in_batched
        if not any(jax.tree.leaves(weight_batched)):
            return apply(x, weight), True  # x is batched on axis 0: more rows
        if not x_batched:
            x = jnp.broadcast_to(x, (axis_size, *x.shape))
        weight = jax.tree.map(
            lambda a, batched: a if batched else jnp.broadcast_to(a, (axis_size, *a.shape)),
            weight,
            weight_batched,
        )
        return jax.lax.map(lambda pair: apply(*pair), (x, weight)), True

    return apply(x, weight)


# Above this many rows of x (a long prefill) dequantizing in the graph and XLA's float32 product
# beat the kernel: on SmolLM2's [1536, 576] MLP stack at 1024 rows 619 against 692 ms, while at
# 512 rows the kernel still wins (341 against 361 ms; 16 rows: 19 against 56 ms).
KERNEL_MAX_ROWS = 768


def linear(x: jax.Array, weight: jax.Array | np.ndarray | QuantizedWeight) -> jax.Array:
    """The runtime's `x @ w` for a float [in, out] matrix, or `x @ W.T` for a
    `QuantizedWeight` W [out, in] (computed in float32, returned in x's dtype): by the kernel
    up to `KERNEL_MAX_ROWS` rows of x, else dequantized in the graph."""
    if not isinstance(weight, QuantizedWeight):
        return x @ weight
    if math.prod(x.shape[:-1]) <= KERNEL_MAX_ROWS and kernel_available():
        return qmatmul(x.astype(jnp.float32), weight).astype(x.dtype)
    return x @ dequantize(weight).T.astype(x.dtype)


def main() -> None:
    """`python -m ppl.models.lm.qmatmul`: build the kernel ahead of time (`make kernels`)."""
    print(f"{build_kernel()} (AVX2+FMA path: {kernel_uses_avx2()})")


if __name__ == "__main__":
    main()
