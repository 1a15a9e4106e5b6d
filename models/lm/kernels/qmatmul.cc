// Matrix products with GGUF-quantized weights, as XLA FFI handlers for the CPU.
//
// y[b, n] = sum_k x[b, k] * W[n, k] for float32 activations x [B, K] and a weight W [N, K] kept
// quantized along K (the repacked layouts of ppl/models/lm/qmatmul.py):
//
//   int8:   codes int8 [N, K], scales float32 [N, K / G]:        w = d * q
//           (Q8_0 with G = 32; Q6_K with G = 16 and q = code - 32)
//   q4:     codes uint8 [N, K / 2], scales float32 [N, K / 32]:  w = d * (q - 8)         (Q4_0)
//   q4min:  as q4 plus mins float32 [N, K / 32]:                  w = d * q + m           (Q4_1, Q4_K)
//
// A 4-bit block of 32 weights is 16 bytes: byte j holds q[j] in its low and q[j + 16] in its high
// nibble (GGUF's Q4_0/Q4_1 order). Each array carries a leading layer axis (layers stacked for
// the forward pass's scan) and a layer index picks the matrix. Weights are dequantized in
// registers to exactly the float32 values gguf's dequantize gives (the products d * q are
// exact, d * q + m is rounded once) and accumulated in float32; only the summation order
// differs from a float matmul.
//
// The AVX2+FMA path (chosen at run time) keeps R rows of x times NC output columns in registers.
// Up to 4 rows, blocks are dequantized into registers and used by every row; for more rows a
// panel of 24 columns is dequantized into a float32 buffer (in cache) that all row tiles of 4
// read, so each weight is dequantized once per call. Output columns are split into chunks
// claimed by the caller and XLA's intra-op thread pool.
// `force_scalar` selects the portable path (for tests and machines without AVX2).

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kPanel = 24;  // columns dequantized at a time on the panel path

// ----------------------------------------------------------------------------------------------
// Weight formats: `scalar(n, i)` is weight W[n, i]; `Block(n, b, out)` writes the 32 weights
// W[n, 32·b .. 32·b + 32) into four 8-lane vectors.

template <int64_t kGroup>
struct Int8Weight {
  const int8_t* codes;
  const float* scales;
  int64_t k;

  float scalar(int64_t n, int64_t i) const {
    return scales[n * (k / kGroup) + i / kGroup] * static_cast<float>(codes[n * k + i]);
  }

#if PPL_X86
  // W[n, 32·b .. 32·b + 32) as four 8-lane chunks (two scales each when group = 16).
  PPL_AVX2 void Block(int64_t n, int64_t b, __m256* out) const {
    const int8_t* q = codes + n * k + b * 32;
    const float* d = scales + n * (k / kGroup) + b * (32 / kGroup);
    for (int c = 0; c < 4; ++c) {
      __m128i qc = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 8 * c));
      __m256 dc = _mm256_broadcast_ss(d + (kGroup == 32 ? 0 : c / 2));
      out[c] = _mm256_mul_ps(dc, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(qc)));
    }
  }
#endif
};

template <bool kHasMin>
struct Nibble4Weight {
  const uint8_t* codes;
  const float* scales;
  const float* mins;  // nullptr unless kHasMin
  int64_t k;

  float scalar(int64_t n, int64_t i) const {
    int64_t block = n * (k / 32) + i / 32, j = i % 32;
    uint8_t byte = codes[block * 16 + (j & 15)];
    float q = static_cast<float>(j < 16 ? byte & 15 : byte >> 4);
    float d = scales[block];
    return kHasMin ? d * q + mins[block] : d * (q - 8.0f);
  }

#if PPL_X86
  PPL_AVX2 void Block(int64_t n, int64_t b, __m256* out) const {
    int64_t block = n * (k / 32) + b;
    __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + block * 16));
    __m128i mask = _mm_set1_epi8(0x0F);
    __m128i low = _mm_and_si128(raw, mask), high = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    __m128i parts[4] = {low, _mm_srli_si128(low, 8), high, _mm_srli_si128(high, 8)};
    __m256 d = _mm256_broadcast_ss(scales + block);
    __m256 m = kHasMin ? _mm256_broadcast_ss(mins + block) : _mm256_set1_ps(0.0f);
    for (int c = 0; c < 4; ++c) {
      __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[c]));
      out[c] = kHasMin ? _mm256_fmadd_ps(d, q, m)
                       : _mm256_mul_ps(d, _mm256_sub_ps(q, _mm256_set1_ps(8.0f)));
    }
  }
#endif
};

#if PPL_X86
// ----------------------------------------------------------------------------------------------
// AVX2 tiles.


// Small batches straight from the quantized weights: y[r, n0 + j] for r < R, j < NC, each
// dequantized block used by all R rows.
template <int R, int NC, class W>
PPL_AVX2 void DirectTile(const W& w, const float* x, int64_t k, int64_t n0, float* y,
                         int64_t n_out) {
  constexpr int A = R == 1 ? 2 : 1;  // accumulators per output, for enough FMA chains
  __m256 acc[R][NC][A];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int j = 0; j < NC; ++j)
#pragma GCC unroll 2
      for (int a = 0; a < A; ++a) acc[r][j][a] = _mm256_setzero_ps();
  for (int64_t b = 0; b < k / 32; ++b) {
    __m256 wv[NC][4];
#pragma GCC unroll 16
    for (int j = 0; j < NC; ++j) w.Block(n0 + j, b, wv[j]);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        __m256 xv = _mm256_loadu_ps(x + r * k + b * 32 + c * 8);
#pragma GCC unroll 16
        for (int j = 0; j < NC; ++j)
          acc[r][j][c % A] = _mm256_fmadd_ps(xv, wv[j][c], acc[r][j][c % A]);
      }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int j = 0; j < NC; ++j) {
      __m256 sum = acc[r][j][0];
      if (A == 2) sum = _mm256_add_ps(sum, acc[r][j][A - 1]);
      y[r * n_out + n0 + j] = ppl::HorizontalSum(sum);
    }
}

template <int R, int NC, class W>
PPL_AVX2 void DirectColumns(const W& w, const float* x, int64_t k, int64_t n0, int64_t n1,
                            float* y, int64_t n_out) {
  int64_t n = n0;
  for (; n + NC <= n1; n += NC) DirectTile<R, NC>(w, x, k, n, y, n_out);
  for (; n < n1; ++n) DirectTile<R, 1>(w, x, k, n, y, n_out);
}

// Larger batches: a panel of dequantized columns (float32, row p = column n0 + p) times row
// tiles of x, R x NC outputs in registers.
template <int R, int NC>
PPL_AVX2 void PanelTile(const float* panel, const float* x, int64_t k, int64_t n0, float* y,
                        int64_t n_out) {
  __m256 acc[R][NC];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int j = 0; j < NC; ++j) acc[r][j] = _mm256_setzero_ps();
  for (int64_t i = 0; i < k; i += 8) {
    __m256 wv[NC];
#pragma GCC unroll 16
    for (int j = 0; j < NC; ++j) wv[j] = _mm256_loadu_ps(panel + j * k + i);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      __m256 xv = _mm256_loadu_ps(x + r * k + i);
#pragma GCC unroll 16
      for (int j = 0; j < NC; ++j) acc[r][j] = _mm256_fmadd_ps(xv, wv[j], acc[r][j]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int j = 0; j < NC; ++j) y[r * n_out + n0 + j] = ppl::HorizontalSum(acc[r][j]);
}

template <int R>
PPL_AVX2 void PanelColumns(const float* panel, const float* x, int64_t k, int64_t n0, int64_t n1,
                           float* y, int64_t n_out) {
  constexpr int NC = 3;
  int64_t n = n0;
  for (; n + NC <= n1; n += NC) PanelTile<R, NC>(panel + (n - n0) * k, x, k, n, y, n_out);
  for (; n < n1; ++n) PanelTile<R, 1>(panel + (n - n0) * k, x, k, n, y, n_out);
}

template <class W>
PPL_AVX2 void RangeAvx2(const W& w, const float* x, int64_t rows, int64_t k, int64_t n0,
                        int64_t n1, float* y, int64_t n_out) {
  switch (rows) {
    case 1: return DirectColumns<1, 2>(w, x, k, n0, n1, y, n_out);
    case 2: return DirectColumns<2, 2>(w, x, k, n0, n1, y, n_out);
    case 3: return DirectColumns<3, 2>(w, x, k, n0, n1, y, n_out);
    case 4: return DirectColumns<4, 2>(w, x, k, n0, n1, y, n_out);
    default: break;
  }
  std::vector<float> panel(static_cast<size_t>(kPanel * k));
  for (int64_t c0 = n0; c0 < n1; c0 += kPanel) {
    int64_t c1 = std::min(n1, c0 + kPanel);
    for (int64_t n = c0; n < c1; ++n)
      for (int64_t b = 0; b < k / 32; ++b) {
        __m256 v[4];
        w.Block(n, b, v);
        for (int c = 0; c < 4; ++c) _mm256_storeu_ps(&panel[(n - c0) * k + b * 32 + c * 8], v[c]);
      }
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) PanelColumns<4>(panel.data(), x + r * k, k, c0, c1, y + r * n_out, n_out);
    switch (rows - r) {
      case 3: PanelColumns<3>(panel.data(), x + r * k, k, c0, c1, y + r * n_out, n_out); break;
      case 2: PanelColumns<2>(panel.data(), x + r * k, k, c0, c1, y + r * n_out, n_out); break;
      case 1: PanelColumns<1>(panel.data(), x + r * k, k, c0, c1, y + r * n_out, n_out); break;
      default: break;
    }
  }
}

#endif  // PPL_X86

// Portable path: dequantize one column, then one dot product per row.
template <class W>
void RangeScalar(const W& w, const float* x, int64_t rows, int64_t k, int64_t n0, int64_t n1,
                 float* y, int64_t n_out) {
  std::vector<float> column(static_cast<size_t>(k));
  for (int64_t n = n0; n < n1; ++n) {
    for (int64_t i = 0; i < k; ++i) column[i] = w.scalar(n, i);
    for (int64_t b = 0; b < rows; ++b) {
      const float* xb = x + b * k;
      float acc = 0.0f;
      for (int64_t i = 0; i < k; ++i) acc += xb[i] * column[i];
      y[b * n_out + n] = acc;
    }
  }
}


template <class W>
void Matmul(ffi::ThreadPool& pool, const W& w, const float* x, int64_t rows, int64_t k,
            int64_t n_out, float* y, bool force_scalar) {
  if (rows == 0 || n_out == 0) return;
  [[maybe_unused]] const bool vector = !force_scalar && ppl::HasAvx2();
  // Enough chunks to balance two or more threads; whole panels each.
  int64_t step = std::max<int64_t>(kPanel, (n_out / 64 + kPanel - 1) / kPanel * kPanel);
  int64_t chunks = (n_out + step - 1) / step;
  ppl::ParallelFor(pool, chunks, [&](int64_t c) {
    int64_t n0 = c * step, n1 = std::min(n_out, n0 + step);
#if PPL_X86
    if (vector) return RangeAvx2(w, x, rows, k, n0, n1, y, n_out);
#endif
    RangeScalar(w, x, rows, k, n0, n1, y, n_out);
  });
}

// ----------------------------------------------------------------------------------------------
// Shape checks and handlers.


// x [B, K] and y [B, N]; codes [L, N, K / per_byte] and each scale array [L, N, K / group] (the
// weights of L layers stacked, of which `layer` is used: slicing a layer out in XLA would copy
// it before every call). Sets the layer's offsets into codes and into the scale arrays.
ffi::Error CheckShapes(ffi::Span<const int64_t> x, ffi::Span<const int64_t> codes,
                       int64_t per_byte, std::vector<ffi::Span<const int64_t>> scales,
                       int64_t group, ffi::Span<const int64_t> y,
                       const ffi::Buffer<ffi::S32>& layer, int64_t& code_offset,
                       int64_t& scale_offset) {
  if (x.size() != 2 || codes.size() != 3 || y.size() != 2)
    return ffi::Error::InvalidArgument("qmatmul: x and y must be rank 2 and codes rank 3, got x " +
                                       ppl::Shape(x) + ", codes " + ppl::Shape(codes) + ", y " +
                                       ppl::Shape(y));
  int64_t k = x[1], n = codes[1];
  if (k % 32 != 0)
    return ffi::Error::InvalidArgument("qmatmul: K = " + std::to_string(k) +
                                       " is not a multiple of 32 weights (one block)");
  if (codes[2] * per_byte != k)
    return ffi::Error::InvalidArgument("qmatmul: codes " + ppl::Shape(codes) + " do not match x " +
                                       ppl::Shape(x));
  for (auto s : scales)
    if (s.size() != 3 || s[0] != codes[0] || s[1] != n || s[2] != k / group)
      return ffi::Error::InvalidArgument("qmatmul: scales " + ppl::Shape(s) +
                                         " do not match codes " + ppl::Shape(codes));
  if (y[0] != x[0] || y[1] != n)
    return ffi::Error::InvalidArgument("qmatmul: result " + ppl::Shape(y) + " does not match");
  int64_t l;
  if (auto e = ppl::LayerIndex(layer, codes[0], "qmatmul", l); e.failure()) return e;
  code_offset = l * n * codes[2];
  scale_offset = l * n * (k / group);
  return ffi::Error::Success();
}

ffi::Error Int8Impl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S8> codes,
                    ffi::Buffer<ffi::F32> scales, ffi::Buffer<ffi::S32> layer,
                    ffi::ResultBuffer<ffi::F32> y, int64_t group, bool force_scalar) {
  if (group != 16 && group != 32)
    return ffi::Error::InvalidArgument("qmatmul: int8 group must be 16 or 32, got " +
                                       std::to_string(group));
  int64_t co, so;
  if (auto e = CheckShapes(x.dimensions(), codes.dimensions(), 1, {scales.dimensions()}, group,
                           y->dimensions(), layer, co, so);
      e.failure())
    return e;
  int64_t rows = x.dimensions()[0], k = x.dimensions()[1], n = codes.dimensions()[1];
  const int8_t* c = codes.typed_data() + co;
  const float* d = scales.typed_data() + so;
  if (group == 16)
    Matmul(pool, Int8Weight<16>{c, d, k}, x.typed_data(), rows, k, n, y->typed_data(),
           force_scalar);
  else
    Matmul(pool, Int8Weight<32>{c, d, k}, x.typed_data(), rows, k, n, y->typed_data(),
           force_scalar);
  return ffi::Error::Success();
}

ffi::Error Q4Impl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::U8> codes,
                  ffi::Buffer<ffi::F32> scales, ffi::Buffer<ffi::S32> layer,
                  ffi::ResultBuffer<ffi::F32> y, bool force_scalar) {
  int64_t co, so;
  if (auto e = CheckShapes(x.dimensions(), codes.dimensions(), 2, {scales.dimensions()}, 32,
                           y->dimensions(), layer, co, so);
      e.failure())
    return e;
  int64_t rows = x.dimensions()[0], k = x.dimensions()[1], n = codes.dimensions()[1];
  Nibble4Weight<false> w{codes.typed_data() + co, scales.typed_data() + so, nullptr, k};
  Matmul(pool, w, x.typed_data(), rows, k, n, y->typed_data(), force_scalar);
  return ffi::Error::Success();
}

ffi::Error Q4MinImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::U8> codes,
                     ffi::Buffer<ffi::F32> scales, ffi::Buffer<ffi::F32> mins,
                     ffi::Buffer<ffi::S32> layer, ffi::ResultBuffer<ffi::F32> y,
                     bool force_scalar) {
  int64_t co, so;
  if (auto e = CheckShapes(x.dimensions(), codes.dimensions(), 2,
                           {scales.dimensions(), mins.dimensions()}, 32, y->dimensions(), layer,
                           co, so);
      e.failure())
    return e;
  int64_t rows = x.dimensions()[0], k = x.dimensions()[1], n = codes.dimensions()[1];
  Nibble4Weight<true> w{codes.typed_data() + co, scales.typed_data() + so,
                        mins.typed_data() + so, k};
  Matmul(pool, w, x.typed_data(), rows, k, n, y->typed_data(), force_scalar);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PplQMatmulInt8, Int8Impl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("group")
                                  .Attr<bool>("force_scalar"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(PplQMatmulQ4, Q4Impl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("force_scalar"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(PplQMatmulQ4Min, Q4MinImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("force_scalar"));

// 1 when the AVX2+FMA path is used on this machine.
extern "C" int PplQMatmulHasAvx2() { return ppl::HasAvx2() ? 1 : 0; }
