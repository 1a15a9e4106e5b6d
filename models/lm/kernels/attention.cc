// Decode attention over each row's cached positions, as an XLA FFI handler for the CPU.
//
// For every row b and KV head k, the M queries q[b, k, m] (a group's query heads times the chunk
// positions) attend to the row's own cached keys t < lengths[b] of layer `layer`:
//
//   s[m, t] = scale * q[b, k, m] . K[layer, b, k, t]
//   max[m] = max_t s[m, t],  total[m] = sum_t e^(s[m, t] - max[m]),
//   weighted[m] = sum_t e^(s[m, t] - max[m]) V[layer, b, k, t]
//
// the unnormalized softmax part that transformer.py merges exactly with the chunk's own keys and
// the shared prefix. A row with no cached position gets max = -inf, total = 0, weighted = 0.
// Only the positions in use are read, once each: the work is memory-bound, so one pass over the
// keys for all M queries and one over the values. XLA's batched dot over blocks of 64 positions
// did the same at a quarter of the memory bandwidth for a batch of 64 rows of SmolLM2-135M.
//
// The AVX2+FMA path (chosen at run time) uses an 8-lane exp (Cephes' range reduction and
// degree-5 polynomial, about 1 ulp); the portable path uses std::exp. Summation order differs
// from XLA's, so results agree to float32 rounding, not bitwise.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Layout {
  int64_t batch, heads, queries, dim, capacity;
};

// ----------------------------------------------------------------------------------------------
// Portable path.

void UnitScalar(const float* q, const float* keys, const float* values, int64_t length,
                const Layout& s, float scale, float* scores, float* max, float* total,
                float* weighted) {
  const int64_t m_count = s.queries, d = s.dim;
  for (int64_t t = 0; t < length; ++t)
    for (int64_t m = 0; m < m_count; ++m) {
      float acc = 0.0f;
      for (int64_t i = 0; i < d; ++i) acc += q[m * d + i] * keys[t * d + i];
      scores[m * length + t] = scale * acc;
    }
  for (int64_t m = 0; m < m_count; ++m) {
    float* row = scores + m * length;
    float top = -std::numeric_limits<float>::infinity(), sum = 0.0f;
    for (int64_t t = 0; t < length; ++t) top = std::max(top, row[t]);
    for (int64_t t = 0; t < length; ++t) sum += (row[t] = std::exp(row[t] - top));
    max[m] = top;
    total[m] = sum;
    std::fill(weighted + m * d, weighted + (m + 1) * d, 0.0f);
  }
  for (int64_t t = 0; t < length; ++t)
    for (int64_t m = 0; m < m_count; ++m) {
      float p = scores[m * length + t];
      for (int64_t i = 0; i < d; ++i) weighted[m * d + i] += p * values[t * d + i];
    }
}

#if PPL_X86
// ----------------------------------------------------------------------------------------------
// AVX2 path (dim a multiple of 8).

// e^x for x <= 0 (scores minus their max): x = n ln2 + r, |r| <= ln2 / 2, e^r by a degree-5
// polynomial, 2^n added to the exponent bits; below -87 the result is flushed to 0.
PPL_AVX2 inline __m256 Exp(__m256 x) {
  const __m256 low = _mm256_set1_ps(-87.0f);
  __m256 tiny = _mm256_cmp_ps(x, low, _CMP_LT_OQ);
  x = _mm256_max_ps(x, low);
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(tiny, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)));
}


PPL_AVX2 void UnitAvx2(const float* q, const float* keys, const float* values, int64_t length,
                       const Layout& s, float scale, float* scores, float* max, float* total,
                       float* weighted) {
  const int64_t m_count = s.queries, d = s.dim;
  for (int64_t t = 0; t < length; ++t) {
    const float* k = keys + t * d;
    for (int64_t m = 0; m < m_count; ++m) {
      const float* qm = q + m * d;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      int64_t i = 0;
      for (; i + 16 <= d; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qm + i), _mm256_loadu_ps(k + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qm + i + 8), _mm256_loadu_ps(k + i + 8), a1);
      }
      if (i < d) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qm + i), _mm256_loadu_ps(k + i), a0);
      scores[m * length + t] = scale * ppl::HorizontalSum(_mm256_add_ps(a0, a1));
    }
  }
  for (int64_t m = 0; m < m_count; ++m) {
    float* row = scores + m * length;
    float top = -std::numeric_limits<float>::infinity();
    for (int64_t t = 0; t < length; ++t) top = std::max(top, row[t]);
    __m256 shift = _mm256_set1_ps(top), acc = _mm256_setzero_ps();
    int64_t t = 0;
    for (; t + 8 <= length; t += 8) {
      __m256 e = Exp(_mm256_sub_ps(_mm256_loadu_ps(row + t), shift));
      _mm256_storeu_ps(row + t, e);
      acc = _mm256_add_ps(acc, e);
    }
    float sum = ppl::HorizontalSum(acc);
    for (; t < length; ++t) sum += (row[t] = std::exp(row[t] - top));
    max[m] = top;
    total[m] = sum;
    std::fill(weighted + m * d, weighted + (m + 1) * d, 0.0f);
  }
  for (int64_t t = 0; t < length; ++t) {
    const float* v = values + t * d;
    for (int64_t m = 0; m < m_count; ++m) {
      __m256 p = _mm256_set1_ps(scores[m * length + t]);
      float* w = weighted + m * d;
      for (int64_t i = 0; i < d; i += 8)
        _mm256_storeu_ps(w + i, _mm256_fmadd_ps(p, _mm256_loadu_ps(v + i), _mm256_loadu_ps(w + i)));
    }
  }
}
#endif  // PPL_X86



ffi::Error RowAttentionImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q,
                            ffi::Buffer<ffi::F32> keys, ffi::Buffer<ffi::F32> values,
                            ffi::Buffer<ffi::S32> layer, ffi::Buffer<ffi::S32> lengths,
                            ffi::ResultBuffer<ffi::F32> max, ffi::ResultBuffer<ffi::F32> total,
                            ffi::ResultBuffer<ffi::F32> weighted, float scale,
                            bool force_scalar) {
  auto qd = q.dimensions(), kd = keys.dimensions(), vd = values.dimensions();
  if (qd.size() != 4 || kd.size() != 5 || vd.size() != 5 ||
      !std::equal(kd.begin(), kd.end(), vd.begin()))
    return ffi::Error::InvalidArgument("row_attention: q must be [B, K, M, D] and keys, values [L, B, K, T, D], got q " +
                                       ppl::Shape(qd) + ", keys " + ppl::Shape(kd) + ", values " +
                                       ppl::Shape(values.dimensions()));
  Layout s{qd[0], qd[1], qd[2], qd[3], kd[3]};
  if (kd[1] != s.batch || kd[2] != s.heads || kd[4] != s.dim)
    return ffi::Error::InvalidArgument("row_attention: keys " + ppl::Shape(kd) + " do not match q " + ppl::Shape(qd));
  if (lengths.element_count() != s.batch)
    return ffi::Error::InvalidArgument("row_attention: expected B lengths");
  int64_t l;
  if (auto e = ppl::LayerIndex(layer, kd[0], "row_attention", l); e.failure()) return e;
  const bool vector = !force_scalar && ppl::HasAvx2() && s.dim % 8 == 0;
  const int64_t units = s.batch * s.heads, head = s.capacity * s.dim;
  const int64_t chunks = std::min<int64_t>(units, 64);
  const float* key_base = keys.typed_data() + l * units * head;
  const float* value_base = values.typed_data() + l * units * head;
  ppl::ParallelFor(pool, chunks, [&](int64_t c) {
    std::vector<float> scores;
    for (int64_t u = c * units / chunks; u < (c + 1) * units / chunks; ++u) {
      int64_t length = std::clamp<int64_t>(lengths.typed_data()[u / s.heads], 0, s.capacity);
      float* mx = max->typed_data() + u * s.queries;
      float* tot = total->typed_data() + u * s.queries;
      float* w = weighted->typed_data() + u * s.queries * s.dim;
      if (length == 0) {
        std::fill(mx, mx + s.queries, -std::numeric_limits<float>::infinity());
        std::fill(tot, tot + s.queries, 0.0f);
        std::fill(w, w + s.queries * s.dim, 0.0f);
        continue;
      }
      scores.resize(static_cast<size_t>(s.queries * length));
      const float* qu = q.typed_data() + u * s.queries * s.dim;
#if PPL_X86
      if (vector) {
        UnitAvx2(qu, key_base + u * head, value_base + u * head, length, s, scale, scores.data(),
                 mx, tot, w);
        continue;
      }
#endif
      UnitScalar(qu, key_base + u * head, value_base + u * head, length, s, scale, scores.data(),
                 mx, tot, w);
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PplRowAttention, RowAttentionImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("scale")
                                  .Attr<bool>("force_scalar"));
