/* Peak float32 FMA and int8 multiply-add rates of this CPU (AVX2), on 1..N threads.
 *
 *   gcc -O3 -mavx2 -mfma -fopenmp benchmarks/fma_peak.c -o fma_peak && ./fma_peak 2
 *
 * Independent accumulator chains per thread (enough to cover the latencies on two pipes) kept
 * in registers; float32: ten chains, 8 lanes x 2 flops per FMA; int8: six chains of vpmaddubsw
 * + vpmaddwd + vpaddd, 32 byte products (64 operations) per step, the instructions llama.cpp's
 * quantized dot products use. Each int8 chain multiplies its own bytes, and the shared operand
 * changes every iteration, so the compiler can neither merge the products nor hoist them out
 * of the loop. Prints one JSON line: GFLOP/s and int8 GOP/s for 1 thread and for N threads.
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define R10(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9)
#define R6(X) X(0) X(1) X(2) X(3) X(4) X(5)

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

static double fma_rate(int threads, long iters) {
  double start = now();
  float sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
  {
#define DECLARE(i) __m256 a##i = _mm256_set1_ps(1.0f + i * 1e-7f);
    R10(DECLARE)
    __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (long k = 0; k < iters; k++) {
#define STEP(i) a##i = _mm256_fmadd_ps(a##i, b, c);
      R10(STEP)
      __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5),
                       "+x"(a6), "+x"(a7), "+x"(a8), "+x"(a9));
    }
    __m256 s = _mm256_setzero_ps();
#define SUM(i) s = _mm256_add_ps(s, a##i);
    R10(SUM)
    float out[8];
    _mm256_storeu_ps(out, s);
    sink += out[0];
  }
  double seconds = now() - start;
  if (sink == 12345.0f) puts("");
  return threads * (double)iters * 10 * 16 / seconds / 1e9;
}

static double int8_rate(int threads, long iters) {
  double start = now();
  int sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
  {
#define DECLARE_I(i) __m256i c##i = _mm256_set1_epi32(i), x##i = _mm256_set1_epi8(3 + i);
    R6(DECLARE_I)
    __m256i y = _mm256_set1_epi8(5), one = _mm256_set1_epi16(1);
    for (long k = 0; k < iters; k++) {
#define STEP_I(i) \
  c##i = _mm256_add_epi32(c##i, _mm256_madd_epi16(_mm256_maddubs_epi16(x##i, y), one));
      R6(STEP_I)
      __asm__ volatile("" : "+x"(y));
    }
    __m256i s = _mm256_setzero_si256();
#define SUM_I(i) s = _mm256_add_epi32(s, c##i);
    R6(SUM_I)
    sink += _mm256_extract_epi32(s, 0);
  }
  double seconds = now() - start;
  if (sink == 12345) puts("");
  return threads * (double)iters * 6 * 64 / seconds / 1e9;
}

int main(int argc, char** argv) {
  int threads = argc > 1 ? atoi(argv[1]) : omp_get_max_threads();
  long iters = 50000000;
  double f1 = 0, fn = 0, i1 = 0, in = 0;
  for (int r = 0; r < 3; r++) { /* best of 3 */
    double v;
    if ((v = fma_rate(1, iters)) > f1) f1 = v;
    if ((v = fma_rate(threads, iters)) > fn) fn = v;
    if ((v = int8_rate(1, iters)) > i1) i1 = v;
    if ((v = int8_rate(threads, iters)) > in) in = v;
  }
  printf("{\"threads\": %d, \"f32_gflop_s_1_thread\": %.1f, \"f32_gflop_s\": %.1f, "
         "\"int8_gop_s_1_thread\": %.1f, \"int8_gop_s\": %.1f}\n",
         threads, f1, fn, i1, in);
  return 0;
}
