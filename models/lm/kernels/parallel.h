// Work splitting shared by the FFI kernels: chunks of work claimed from an atomic counter by the
// caller and by tasks on XLA's intra-op thread pool. The caller never waits for a chunk nobody
// has claimed, so this cannot deadlock when the pool runs tasks late or on the caller's thread.

#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace ppl {

namespace ffi = xla::ffi;

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
  std::unique_lock<std::mutex> lock(work->mutex);
  work->finished.wait(lock, [&] { return work->done.load() == chunks; });
}

}  // namespace ppl
