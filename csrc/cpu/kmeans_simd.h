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
inline T sqdist(const T* x, const T* c, int64_t D, bool avx2) {
#if TLK_KMEANS_X86
  if (avx2) return sqdist_avx2(x, c, D);
#endif
  return sqdist_scalar(x, c, D);
}

// Minimum of s[k] = b[k] + g[k] over k, written back into g (scalar and AVX2 versions).
template <typename T>
inline T min_scores_scalar(T* g, const T* b, int64_t K) {
  T m = std::numeric_limits<T>::infinity();
  for (int64_t k = 0; k < K; ++k) {
    g[k] = b[k] + g[k];
    m = g[k] < m ? g[k] : m;
  }
  return m;
}

#if TLK_KMEANS_X86
__attribute__((target("avx2"))) inline float min_scores_avx2(float* g, const float* b, int64_t K) {
  __m256 vmin = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    const __m256 s = _mm256_add_ps(_mm256_loadu_ps(b + k), _mm256_loadu_ps(g + k));
    _mm256_storeu_ps(g + k, s);
    vmin = _mm256_min_ps(vmin, s);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmin);
  float m = lanes[0];
  for (int i = 1; i < 8; ++i) m = lanes[i] < m ? lanes[i] : m;
  for (; k < K; ++k) {
    g[k] = b[k] + g[k];
    m = g[k] < m ? g[k] : m;
  }
  return m;
}

__attribute__((target("avx2"))) inline double min_scores_avx2(double* g, const double* b, int64_t K) {
  __m256d vmin = _mm256_set1_pd(std::numeric_limits<double>::infinity());
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    const __m256d s = _mm256_add_pd(_mm256_loadu_pd(b + k), _mm256_loadu_pd(g + k));
    _mm256_storeu_pd(g + k, s);
    vmin = _mm256_min_pd(vmin, s);
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, vmin);
  double m = lanes[0];
  for (int i = 1; i < 4; ++i) m = lanes[i] < m ? lanes[i] : m;
  for (; k < K; ++k) {
    g[k] = b[k] + g[k];
    m = g[k] < m ? g[k] : m;
  }
  return m;
}

// Bit mask of the lanes of g[k0 .. k0 + lanes) that are <= thr.
__attribute__((target("avx2"))) inline unsigned band_mask_avx2(const float* g, float thr) {
  return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(g), _mm256_set1_ps(thr), _CMP_LE_OQ)));
}
__attribute__((target("avx2"))) inline unsigned band_mask_avx2(const double* g, double thr) {
  return static_cast<unsigned>(_mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(g), _mm256_set1_pd(thr), _CMP_LE_OQ)));
}
#endif

struct RowResult {
  int64_t label;
  double dist2;
};

// The nearest centroid of one row x (D,), given its GEMM row g (K,) = −2 x·c'_k.
// Scores s_k = b_k + g_k carry a rounding error below `band`; every k with s_k <= min + band is a
// candidate and the candidate of least exact distance Σ (x − c_k)² wins, ties to the lowest
// index. So the label is the truly nearest centroid (exact ties: the lowest index) whatever the
// rounding of the GEMM. Usually there is one candidate, whose exact distance is needed anyway.
template <typename T>
inline RowResult assign_row(T* g, const T* b, int64_t K, const T* x, const T* C, int64_t D, T band, bool avx2) {
  T m;
#if TLK_KMEANS_X86
  m = avx2 ? min_scores_avx2(g, b, K) : min_scores_scalar(g, b, K);
#else
  m = min_scores_scalar(g, b, K);
#endif
  const T thr = m + band;
  int64_t best = -1;
  T best_d = std::numeric_limits<T>::infinity();
  auto consider = [&](int64_t k) {
    const T d = sqdist(x, C + k * D, D, avx2);
    if (best < 0 || d < best_d) {
      best = k;
      best_d = d;
    }
  };
  int64_t k = 0;
#if TLK_KMEANS_X86
  if (avx2) {
    constexpr int64_t W = 32 / sizeof(T);
    for (; k + W <= K; k += W) {
      unsigned mask = band_mask_avx2(g + k, thr);
      while (mask != 0) {
        consider(k + __builtin_ctz(mask));
        mask &= mask - 1;
      }
    }
  }
#endif
  for (; k < K; ++k) {
    if (g[k] <= thr) consider(k);
  }
  if (best < 0) {  // NaN scores (NaN / inf in x): report label 0 and its (non-finite) distance
    best = 0;
    best_d = sqdist(x, C, D, avx2);
  }
  return {best, static_cast<double>(best_d)};
}

}  // namespace tlk::kmeans_cpu
