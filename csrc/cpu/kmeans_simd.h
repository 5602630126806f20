// Row kernels of the CPU k-means path, with an AVX2 version chosen at run time (the package is
// built for baseline x86-64) and a portable scalar version. Every kernel sums in a fixed order,
// so results are identical run to run on one machine.
#pragma once

#include <cstdint>
#include <limits>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define TLK_KMEANS_X86 1
#else
#define TLK_KMEANS_X86 0
#endif

namespace tlk::kmeans_cpu {

// Scores s[k] = cn[k] + g[k] written back into g, and the lowest k of the minimum score.
// A row whose scores are all NaN returns 0 (its exact distance is then NaN: the caller raises).
template <typename T>
inline int64_t argmin_scores_scalar(T* g, const T* cn, int64_t K) {
  T best = std::numeric_limits<T>::infinity();
  int64_t idx = 0;
  for (int64_t k = 0; k < K; ++k) {
    const T s = cn[k] + g[k];
    if (s < best) {
      best = s;
      idx = k;
    }
  }
  return idx;
}

// sum_d (x[d] - c[d])^2, sequential.
template <typename T>
inline T sqdist_scalar(const T* x, const T* c, int64_t D) {
  T acc = 0;
  for (int64_t d = 0; d < D; ++d) {
    const T t = x[d] - c[d];
    acc += t * t;
  }
  return acc;
}

#if TLK_KMEANS_X86
__attribute__((target("avx2"))) inline int64_t argmin_scores_avx2(float* g, const float* cn, int64_t K) {
  __m256 vmin = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    const __m256 s = _mm256_add_ps(_mm256_loadu_ps(cn + k), _mm256_loadu_ps(g + k));
    _mm256_storeu_ps(g + k, s);
    vmin = _mm256_min_ps(vmin, s);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmin);
  float m = lanes[0];
  for (int i = 1; i < 8; ++i) m = lanes[i] < m ? lanes[i] : m;
  for (int64_t j = k; j < K; ++j) {
    g[j] = cn[j] + g[j];
    m = g[j] < m ? g[j] : m;
  }
  // The first k holding the minimum: ties go to the lowest index.
  const __m256 vm = _mm256_set1_ps(m);
  for (k = 0; k + 8 <= K; k += 8) {
    const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(g + k), vm, _CMP_EQ_OQ));
    if (mask != 0) return k + __builtin_ctz(static_cast<unsigned>(mask));
  }
  for (; k < K; ++k) {
    if (g[k] == m) return k;
  }
  return 0;
}

__attribute__((target("avx2"))) inline int64_t argmin_scores_avx2(double* g, const double* cn, int64_t K) {
  __m256d vmin = _mm256_set1_pd(std::numeric_limits<double>::infinity());
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    const __m256d s = _mm256_add_pd(_mm256_loadu_pd(cn + k), _mm256_loadu_pd(g + k));
    _mm256_storeu_pd(g + k, s);
    vmin = _mm256_min_pd(vmin, s);
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, vmin);
  double m = lanes[0];
  for (int i = 1; i < 4; ++i) m = lanes[i] < m ? lanes[i] : m;
  for (int64_t j = k; j < K; ++j) {
    g[j] = cn[j] + g[j];
    m = g[j] < m ? g[j] : m;
  }
  const __m256d vm = _mm256_set1_pd(m);
  for (k = 0; k + 4 <= K; k += 4) {
    const int mask = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(g + k), vm, _CMP_EQ_OQ));
    if (mask != 0) return k + __builtin_ctz(static_cast<unsigned>(mask));
  }
  for (; k < K; ++k) {
    if (g[k] == m) return k;
  }
  return 0;
}

// Eight (four) running lanes, then a fixed-order horizontal sum and a sequential tail.
__attribute__((target("avx2"))) inline float sqdist_avx2(const float* x, const float* c, int64_t D) {
  __m256 acc = _mm256_setzero_ps();
  int64_t d = 0;
  for (; d + 8 <= D; d += 8) {
    const __m256 t = _mm256_sub_ps(_mm256_loadu_ps(x + d), _mm256_loadu_ps(c + d));
    acc = _mm256_add_ps(acc, _mm256_mul_ps(t, t));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  float s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
  for (; d < D; ++d) {
    const float t = x[d] - c[d];
    s += t * t;
  }
  return s;
}

__attribute__((target("avx2"))) inline double sqdist_avx2(const double* x, const double* c, int64_t D) {
  __m256d acc = _mm256_setzero_pd();
  int64_t d = 0;
  for (; d + 4 <= D; d += 4) {
    const __m256d t = _mm256_sub_pd(_mm256_loadu_pd(x + d), _mm256_loadu_pd(c + d));
    acc = _mm256_add_pd(acc, _mm256_mul_pd(t, t));
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, acc);
  double s = (lanes[0] + lanes[2]) + (lanes[1] + lanes[3]);
  for (; d < D; ++d) {
    const double t = x[d] - c[d];
    s += t * t;
  }
  return s;
}

inline bool has_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2");
  return ok;
}
#endif

template <typename T>
inline int64_t argmin_scores(T* g, const T* cn, int64_t K, bool avx2) {
#if TLK_KMEANS_X86
  if (avx2) return argmin_scores_avx2(g, cn, K);
#endif
  return argmin_scores_scalar(g, cn, K);
}

template <typename T>
inline T sqdist(const T* x, const T* c, int64_t D, bool avx2) {
#if TLK_KMEANS_X86
  if (avx2) return sqdist_avx2(x, c, D);
#endif
  return sqdist_scalar(x, c, D);
}

}  // namespace tlk::kmeans_cpu
