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
// nibble (GGUF's Q4_0/Q4_1 order). Weights are dequantized in registers to exactly the float32
// values gguf's dequantize gives (the products d * q are exact, d * q + m is rounded once) and
// accumulated in float32; only the summation order differs from a float matmul.
//
// The AVX2+FMA path (chosen at run time) holds a tile of R rows of x times NC output columns in
// registers, so each dequantized 8-weight chunk is used R times and each loaded x chunk NC times.
// Output columns are split into chunks claimed by the caller and XLA's intra-op thread pool.
// `force_scalar` selects the portable path (for tests and machines without AVX2).

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

#define PPL_AVX2 __attribute__((target("avx2,fma")))

namespace {

// ----------------------------------------------------------------------------------------------
// Weight formats: `scalar(n, i)` is weight W[n, i]; `chunk(n, i)` is W[n, i .. i + 8) (i % 8 == 0).

struct Int8Weight {
  const int8_t* codes;
  const float* scales;
  int64_t k;
  int64_t group;

  float scalar(int64_t n, int64_t i) const {
    return scales[n * (k / group) + i / group] * static_cast<float>(codes[n * k + i]);
  }

  PPL_AVX2 __m256 chunk(int64_t n, int64_t i) const {
    __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + n * k + i));
    __m256 d = _mm256_broadcast_ss(scales + n * (k / group) + i / group);
    return _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)));
  }
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

  PPL_AVX2 __m256 chunk(int64_t n, int64_t i) const {
    int64_t block = n * (k / 32) + i / 32, part = (i / 8) % 4;
    __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + block * 16 + (part & 1) * 8));
    if (part & 2) q = _mm_srli_epi16(q, 4);
    q = _mm_and_si128(q, _mm_set1_epi8(0x0F));
    __m256 qf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q));
    __m256 d = _mm256_broadcast_ss(scales + block);
    if (kHasMin) return _mm256_fmadd_ps(d, qf, _mm256_broadcast_ss(mins + block));
    return _mm256_mul_ps(d, _mm256_sub_ps(qf, _mm256_set1_ps(8.0f)));
  }
};

// ----------------------------------------------------------------------------------------------
// AVX2 tiles.

PPL_AVX2 inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// y[r, n0 + j] for r < R, j < NC.
template <int R, int NC, class W>
PPL_AVX2 void Tile(const W& w, const float* x, int64_t k, int64_t n0, float* y, int64_t n_out) {
  __m256 acc[R][NC];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int j = 0; j < NC; ++j) acc[r][j] = _mm256_setzero_ps();
  for (int64_t i = 0; i < k; i += 8) {
    __m256 wv[NC];
#pragma GCC unroll 16
    for (int j = 0; j < NC; ++j) wv[j] = w.chunk(n0 + j, i);
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
    for (int j = 0; j < NC; ++j) y[r * n_out + n0 + j] = HorizontalSum(acc[r][j]);
}

// Columns [n0, n1) for rows [b0, b0 + R).
template <int R, int NC, class W>
PPL_AVX2 void Columns(const W& w, const float* x, int64_t k, int64_t n0, int64_t n1, float* y,
                      int64_t n_out) {
  int64_t n = n0;
  for (; n + NC <= n1; n += NC) Tile<R, NC>(w, x, k, n, y, n_out);
  for (; n < n1; ++n) Tile<R, 1>(w, x, k, n, y, n_out);
}

template <class W>
PPL_AVX2 void RangeAvx2(const W& w, const float* x, int64_t rows, int64_t k, int64_t n0,
                        int64_t n1, float* y, int64_t n_out) {
  if (rows == 1) return Columns<1, 4>(w, x, k, n0, n1, y, n_out);
  // Weights of a few columns stay in L1 while all row tiles pass over them.
  constexpr int64_t kColumnStep = 16;
  for (int64_t c0 = n0; c0 < n1; c0 += kColumnStep) {
    int64_t c1 = std::min(n1, c0 + kColumnStep), b = 0;
    for (; b + 4 <= rows; b += 4) Columns<4, 2>(w, x + b * k, k, c0, c1, y + b * n_out, n_out);
    switch (rows - b) {
      case 3: Columns<3, 2>(w, x + b * k, k, c0, c1, y + b * n_out, n_out); break;
      case 2: Columns<2, 2>(w, x + b * k, k, c0, c1, y + b * n_out, n_out); break;
      case 1: Columns<1, 4>(w, x + b * k, k, c0, c1, y + b * n_out, n_out); break;
      default: break;
    }
  }
}

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

bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

// ----------------------------------------------------------------------------------------------
// Work splitting: chunks of output columns claimed from an atomic counter by the caller and by
// tasks on XLA's thread pool. The caller never waits for a chunk nobody has claimed, so this
// cannot deadlock when the pool runs tasks late or on the caller's thread.

struct Work {
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  int64_t chunks = 0;
  std::function<void(int64_t)> run;
  std::mutex mutex;
  std::condition_variable finished;

  void Drain() {
    for (int64_t c; (c = next.fetch_add(1)) < chunks;) {
      run(c);
      if (done.fetch_add(1) + 1 == chunks) {
        std::lock_guard<std::mutex> lock(mutex);
        finished.notify_all();
      }
    }
  }
};

void ParallelFor(ffi::ThreadPool& pool, int64_t chunks, std::function<void(int64_t)> run) {
  auto work = std::make_shared<Work>();
  work->chunks = chunks;
  work->run = std::move(run);
  int64_t helpers = std::min<int64_t>(pool.num_threads(), chunks - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([work] { work->Drain(); });
  work->Drain();
  std::unique_lock<std::mutex> lock(work->mutex);
  work->finished.wait(lock, [&] { return work->done.load() == chunks; });
}

template <class W>
void Matmul(ffi::ThreadPool& pool, const W& w, const float* x, int64_t rows, int64_t k,
            int64_t n_out, float* y, bool force_scalar) {
  if (rows == 0 || n_out == 0) return;
  const bool vector = !force_scalar && HasAvx2();
  // Enough chunks to balance two or more threads; a multiple of 16 columns each.
  int64_t step = std::max<int64_t>(16, (n_out / 64 + 15) / 16 * 16);
  int64_t chunks = (n_out + step - 1) / step;
  ParallelFor(pool, chunks, [&](int64_t c) {
    int64_t n0 = c * step, n1 = std::min(n_out, n0 + step);
    if (vector) {
      RangeAvx2(w, x, rows, k, n0, n1, y, n_out);
    } else {
      RangeScalar(w, x, rows, k, n0, n1, y, n_out);
    }
  });
}

// ----------------------------------------------------------------------------------------------
// Shape checks and handlers.

std::string Shape(ffi::Span<const int64_t> dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// x [B, K] and y [B, N]; codes [N, K / per_byte]; each scale array [N, K / group].
ffi::Error CheckShapes(ffi::Span<const int64_t> x, ffi::Span<const int64_t> codes,
                       int64_t per_byte, std::vector<ffi::Span<const int64_t>> scales,
                       int64_t group, ffi::Span<const int64_t> y) {
  if (x.size() != 2 || codes.size() != 2 || y.size() != 2)
    return ffi::Error::InvalidArgument("qmatmul: x, codes and y must be rank 2, got x " +
                                       Shape(x) + ", codes " + Shape(codes) + ", y " + Shape(y));
  int64_t k = x[1], n = codes[0];
  if (k % group != 0 || k % 8 != 0)
    return ffi::Error::InvalidArgument("qmatmul: K = " + std::to_string(k) +
                                       " is not a multiple of the block size " +
                                       std::to_string(group));
  if (codes[1] * per_byte != k)
    return ffi::Error::InvalidArgument("qmatmul: codes " + Shape(codes) + " do not match x " +
                                       Shape(x));
  for (auto s : scales)
    if (s.size() != 2 || s[0] != n || s[1] != k / group)
      return ffi::Error::InvalidArgument("qmatmul: scales " + Shape(s) + " do not match codes " +
                                         Shape(codes));
  if (y[0] != x[0] || y[1] != n)
    return ffi::Error::InvalidArgument("qmatmul: result " + Shape(y) + " does not match");
  return ffi::Error::Success();
}

ffi::Error Int8Impl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S8> codes,
                    ffi::Buffer<ffi::F32> scales, ffi::ResultBuffer<ffi::F32> y, int64_t group,
                    bool force_scalar) {
  if (group != 16 && group != 32)
    return ffi::Error::InvalidArgument("qmatmul: int8 group must be 16 or 32, got " +
                                       std::to_string(group));
  if (auto e = CheckShapes(x.dimensions(), codes.dimensions(), 1, {scales.dimensions()}, group,
                           y->dimensions());
      e.failure())
    return e;
  int64_t rows = x.dimensions()[0], k = x.dimensions()[1], n = codes.dimensions()[0];
  Int8Weight w{codes.typed_data(), scales.typed_data(), k, group};
  Matmul(pool, w, x.typed_data(), rows, k, n, y->typed_data(), force_scalar);
  return ffi::Error::Success();
}

ffi::Error Q4Impl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::U8> codes,
                  ffi::Buffer<ffi::F32> scales, ffi::ResultBuffer<ffi::F32> y,
                  bool force_scalar) {
  if (auto e = CheckShapes(x.dimensions(), codes.dimensions(), 2, {scales.dimensions()}, 32,
                           y->dimensions());
      e.failure())
    return e;
  int64_t rows = x.dimensions()[0], k = x.dimensions()[1], n = codes.dimensions()[0];
  Nibble4Weight<false> w{codes.typed_data(), scales.typed_data(), nullptr, k};
  Matmul(pool, w, x.typed_data(), rows, k, n, y->typed_data(), force_scalar);
  return ffi::Error::Success();
}

ffi::Error Q4MinImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::U8> codes,
                     ffi::Buffer<ffi::F32> scales, ffi::Buffer<ffi::F32> mins,
                     ffi::ResultBuffer<ffi::F32> y, bool force_scalar) {
  if (auto e = CheckShapes(x.dimensions(), codes.dimensions(), 2,
                           {scales.dimensions(), mins.dimensions()}, 32, y->dimensions());
      e.failure())
    return e;
  int64_t rows = x.dimensions()[0], k = x.dimensions()[1], n = codes.dimensions()[0];
  Nibble4Weight<true> w{codes.typed_data(), scales.typed_data(), mins.typed_data(), k};
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
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("group")
                                  .Attr<bool>("force_scalar"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(PplQMatmulQ4, Q4Impl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("force_scalar"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(PplQMatmulQ4Min, Q4MinImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("force_scalar"));

// 1 when the AVX2+FMA path is used on this machine.
extern "C" int PplQMatmulHasAvx2() { return HasAvx2() ? 1 : 0; }
