// What the FFI kernels share: the x86 dispatch macros and run-time AVX2 check, a horizontal sum,
// shape strings for error messages, and the work splitting (below).

#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "xla/ffi/api/ffi.h"

#if (defined(__x86_64__) || defined(__i386__)) && !defined(PPL_NO_X86)
#define PPL_X86 1
#include <immintrin.h>
#define PPL_AVX2 __attribute__((target("avx2,fma")))
#else
#define PPL_X86 0  // other CPUs compile only the portable paths
#endif

namespace ppl {

namespace ffi = xla::ffi;

// Whether the AVX2+FMA paths can run on this CPU.
inline bool HasAvx2() {
#if PPL_X86
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

#if PPL_X86
PPL_AVX2 inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

// "[d0, d1, ...]" for error messages.
inline std::string Shape(ffi::Span<const int64_t> dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// The layer a kernel reads from arrays with `layers` stacked layers: `index` holds one int32 in
// [0, layers). `kernel` names the caller in the error messages.
inline ffi::Error LayerIndex(const ffi::Buffer<ffi::S32>& index, int64_t layers,
                             const std::string& kernel, int64_t& layer) {
  if (index.element_count() != 1)
    return ffi::Error::InvalidArgument(kernel + ": expected one layer index");
  layer = index.typed_data()[0];
  if (layer < 0 || layer >= layers)
    return ffi::Error::InvalidArgument(kernel + ": layer " + std::to_string(layer) + " of " +
                                       std::to_string(layers));
  return ffi::Error::Success();
}

inline void Pause() {
#if PPL_X86
  _mm_pause();
#endif
}

// Work splitting: chunks of work claimed from an atomic counter by the caller and by tasks on
// XLA's intra-op thread pool. The caller never waits for a chunk nobody has claimed, so this
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

inline void ParallelFor(ffi::ThreadPool& pool, int64_t chunks, std::function<void(int64_t)> run) {
  auto work = std::make_shared<Work>();
  work->chunks = chunks;
  work->run = std::move(run);
  int64_t helpers = std::min<int64_t>(pool.num_threads(), chunks - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([work] { work->Drain(); });
  work->Drain();
  // The chunks still running elsewhere are short: spin for them (about 50 us) before sleeping,
  // since waking a sleeping caller costs a VM tens of microseconds, hundreds of times a step.
  for (int spin = 0; spin < 20000 && work->done.load(std::memory_order_acquire) != chunks; ++spin)
    Pause();
  if (work->done.load(std::memory_order_acquire) == chunks) return;
  std::unique_lock<std::mutex> lock(work->mutex);
  work->finished.wait(lock, [&] { return work->done.load() == chunks; });
}

}  // namespace ppl
