// Row kernels of the CPU k-means path, with an AVX2 version chosen at run time (the package is
// built for baseline x86-64) and a portable scalar version. Every kernel sums in a fixed order,
// so results are identical run to run on one machine.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

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
// Horizontal reductions in registers (a fixed order), result broadcast to every lane.
__attribute__((target("avx2"))) inline __m256 hmin_ps(__m256 v) {
  v = _mm256_min_ps(v, _mm256_permute2f128_ps(v, v, 1));
  v = _mm256_min_ps(v, _mm256_shuffle_ps(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm256_min_ps(v, _mm256_shuffle_ps(v, v, _MM_SHUFFLE(2, 3, 0, 1)));
}
__attribute__((target("avx2"))) inline __m256d hmin_pd(__m256d v) {
  v = _mm256_min_pd(v, _mm256_permute2f128_pd(v, v, 1));
  return _mm256_min_pd(v, _mm256_shuffle_pd(v, v, 0x5));
}
__attribute__((target("avx2"))) inline float hsum_ps(__m256 v) {
  v = _mm256_add_ps(v, _mm256_permute2f128_ps(v, v, 1));
  v = _mm256_add_ps(v, _mm256_shuffle_ps(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  v = _mm256_add_ps(v, _mm256_shuffle_ps(v, v, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm256_cvtss_f32(v);
}
__attribute__((target("avx2"))) inline double hsum_pd(__m256d v) {
  v = _mm256_add_pd(v, _mm256_permute2f128_pd(v, v, 1));
  v = _mm256_add_pd(v, _mm256_shuffle_pd(v, v, 0x5));
  return _mm256_cvtsd_f64(v);
}

// Eight (four) running lanes, then a fixed-order horizontal sum and a sequential tail.
__attribute__((target("avx2"))) inline float sqdist_avx2(const float* x, const float* c, int64_t D) {
  __m256 acc = _mm256_setzero_ps();
  int64_t d = 0;
  for (; d + 8 <= D; d += 8) {
    const __m256 t = _mm256_sub_ps(_mm256_loadu_ps(x + d), _mm256_loadu_ps(c + d));
    acc = _mm256_add_ps(acc, _mm256_mul_ps(t, t));
  }
  float s = hsum_ps(acc);
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
  double s = hsum_pd(acc);
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

// Minimum of s[k] = b[k] + g[k] over k, written back into g (the scalar row).
template <typename T>
inline T min_scores_scalar(T* g, const T* b, int64_t K) {
  T m = std::numeric_limits<T>::infinity();
  for (int64_t k = 0; k < K; ++k) {
    g[k] = b[k] + g[k];
    m = g[k] < m ? g[k] : m;
  }
  return m;
}


struct RowResult {
  int64_t label;
  double dist2;
};

// The nearest centroid of one row x (D,), given its GEMM row g (K,) = −2 x·c'_k.
// Scores s_k = b_k + g_k carry a rounding error below `band`; every k with s_k <= min + band is a
// candidate and the candidate of least exact distance Σ (x − c_k)² wins, ties to the lowest
// index. So the label is the truly nearest centroid (exact ties: the lowest index) whatever the
// rounding of the GEMM. Usually there is one candidate, whose exact distance is needed anyway.
// The AVX2 version is one function (its helpers inline into it): no call per vector.
template <typename T>
inline RowResult assign_row_scalar(T* g, const T* b, int64_t K, const T* x, const T* C, int64_t D, T band) {
  const T thr = min_scores_scalar(g, b, K) + band;
  int64_t best = -1;
  T best_d = std::numeric_limits<T>::infinity();
  for (int64_t k = 0; k < K; ++k) {
    if (g[k] <= thr) {
      const T d = sqdist_scalar(x, C + k * D, D);
      if (best < 0 || d < best_d) {
        best = k;
        best_d = d;
      }
    }
  }
  if (best < 0) {  // NaN scores (NaN / inf in x): report label 0 and its (non-finite) distance
    best = 0;
    best_d = sqdist_scalar(x, C, D);
  }
  return {best, static_cast<double>(best_d)};
}

#if TLK_KMEANS_X86
// The minimum score of a row, min_k (b_k + g_k), over independent accumulators (no loop-carried
// chain longer than K / 32 vectors). min(s, acc) keeps acc when s is NaN, so NaN scores are
// never the minimum. The minimum of a set does not depend on the order it is taken in.
__attribute__((target("avx2"), always_inline)) inline float min_score_avx2(const float* g, const float* b, int64_t K) {
  const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  __m256 a0 = inf, a1 = inf, a2 = inf, a3 = inf;
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    a0 = _mm256_min_ps(_mm256_add_ps(_mm256_loadu_ps(b + k), _mm256_loadu_ps(g + k)), a0);
    a1 = _mm256_min_ps(_mm256_add_ps(_mm256_loadu_ps(b + k + 8), _mm256_loadu_ps(g + k + 8)), a1);
    a2 = _mm256_min_ps(_mm256_add_ps(_mm256_loadu_ps(b + k + 16), _mm256_loadu_ps(g + k + 16)), a2);
    a3 = _mm256_min_ps(_mm256_add_ps(_mm256_loadu_ps(b + k + 24), _mm256_loadu_ps(g + k + 24)), a3);
  }
  for (; k + 8 <= K; k += 8) a0 = _mm256_min_ps(_mm256_add_ps(_mm256_loadu_ps(b + k), _mm256_loadu_ps(g + k)), a0);
  float m = _mm256_cvtss_f32(hmin_ps(_mm256_min_ps(_mm256_min_ps(a0, a1), _mm256_min_ps(a2, a3))));
  for (; k < K; ++k) {
    const float sk = b[k] + g[k];
    m = sk < m ? sk : m;
  }
  return m;
}

__attribute__((target("avx2"), always_inline)) inline double min_score_avx2(const double* g, const double* b, int64_t K) {
  const __m256d inf = _mm256_set1_pd(std::numeric_limits<double>::infinity());
  __m256d a0 = inf, a1 = inf, a2 = inf, a3 = inf;
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    a0 = _mm256_min_pd(_mm256_add_pd(_mm256_loadu_pd(b + k), _mm256_loadu_pd(g + k)), a0);
    a1 = _mm256_min_pd(_mm256_add_pd(_mm256_loadu_pd(b + k + 4), _mm256_loadu_pd(g + k + 4)), a1);
    a2 = _mm256_min_pd(_mm256_add_pd(_mm256_loadu_pd(b + k + 8), _mm256_loadu_pd(g + k + 8)), a2);
    a3 = _mm256_min_pd(_mm256_add_pd(_mm256_loadu_pd(b + k + 12), _mm256_loadu_pd(g + k + 12)), a3);
  }
  for (; k + 4 <= K; k += 4) a0 = _mm256_min_pd(_mm256_add_pd(_mm256_loadu_pd(b + k), _mm256_loadu_pd(g + k)), a0);
  double m = _mm256_cvtsd_f64(hmin_pd(_mm256_min_pd(_mm256_min_pd(a0, a1), _mm256_min_pd(a2, a3))));
  for (; k < K; ++k) {
    const double sk = b[k] + g[k];
    m = sk < m ? sk : m;
  }
  return m;
}

__attribute__((target("avx2"), always_inline)) inline unsigned le_mask_avx2(const float* g, const float* b, __m256 thr) {
  return static_cast<unsigned>(
      _mm256_movemask_ps(_mm256_cmp_ps(_mm256_add_ps(_mm256_loadu_ps(b), _mm256_loadu_ps(g)), thr, _CMP_LE_OQ)));
}
__attribute__((target("avx2"), always_inline)) inline unsigned le_mask_avx2(const double* g, const double* b, __m256d thr) {
  return static_cast<unsigned>(
      _mm256_movemask_pd(_mm256_cmp_pd(_mm256_add_pd(_mm256_loadu_pd(b), _mm256_loadu_pd(g)), thr, _CMP_LE_OQ)));
}

__attribute__((target("avx2"), always_inline)) inline __m256 set1_avx2(float v) { return _mm256_set1_ps(v); }
__attribute__((target("avx2"), always_inline)) inline __m256d set1_avx2(double v) { return _mm256_set1_pd(v); }

// How many scores lie within the band [min, min + band]; `only` is the index of the hit when
// there is exactly one. Branch-free: which vector holds the minimum is random, a branch on it
// would mispredict; `only` sums k + ctz over the vectors with a hit.
template <typename T>
__attribute__((target("avx2,popcnt"), always_inline)) inline int64_t band_avx2(const T* g, const T* b, int64_t K, T thr,
                                                                           int64_t& only) {
  constexpr int64_t W = 32 / sizeof(T);
  const auto vthr = set1_avx2(thr);
  int64_t cnt = 0, k = 0;
  only = 0;
  for (; k + W <= K; k += W) {
    const unsigned m = le_mask_avx2(g + k, b + k, vthr);
    cnt += __builtin_popcount(m);
    only += m ? k + __builtin_ctz(m) : 0;
  }
  for (; k < K; ++k) {
    const bool hit = b[k] + g[k] <= thr;
    cnt += hit;
    only += hit ? k : 0;
  }
  return cnt;
}

// Candidates of a row that has several scores within the band: the least exact distance wins,
// ties to the lowest index; no candidate (NaN scores): label 0 and its (non-finite) distance.
// g[k * g_stride] is the row's GEMM entry of centroid k (stride 1 in a row block, the leading
// dimension in a transposed one).
template <typename T, typename SqDist>
inline RowResult resolve_band(const T* g, int64_t g_stride, const T* b, int64_t K, const T* x, const T* C, int64_t D,
                              T thr, SqDist sqd) {
  int64_t best = -1;
  T best_d = std::numeric_limits<T>::infinity();
  for (int64_t k = 0; k < K; ++k) {
    if (b[k] + g[k * g_stride] <= thr) {
      const T d = sqd(x, C + k * D, D);
      if (best < 0 || d < best_d) {
        best = k;
        best_d = d;
      }
    }
  }
  if (best < 0) {
    best = 0;
    best_d = sqd(x, C, D);
  }
  return {best, static_cast<double>(best_d)};
}

template <typename T>
__attribute__((target("avx2,popcnt"), always_inline)) inline RowResult assign_row_avx2(T* g, const T* b, int64_t K, const T* x,
                                                                 const T* C, int64_t D, T band) {
  const T thr = min_score_avx2(g, b, K) + band;
  int64_t only = 0;
  if (band_avx2<T>(g, b, K, thr, only) == 1) {  // the usual case: no other centroid within the band
    return {only, static_cast<double>(sqdist_avx2(x, C + only * D, D))};
  }
  return resolve_band<T>(g, 1, b, K, x, C, D, thr, [](const T* u, const T* v, int64_t n) { return sqdist_avx2(u, v, n); });
}

template <typename T>
__attribute__((target("avx2"), always_inline)) inline T sqnorm_avx2(const T* x, int64_t D) {
  T s = 0;
  if constexpr (sizeof(T) == 4) {
    __m256 acc = _mm256_setzero_ps();
    int64_t d = 0;
    for (; d + 8 <= D; d += 8) {
      const __m256 v = _mm256_loadu_ps(x + d);
      acc = _mm256_add_ps(acc, _mm256_mul_ps(v, v));
    }
    s = hsum_ps(acc);
    for (; d < D; ++d) s += x[d] * x[d];
  } else {
    __m256d acc = _mm256_setzero_pd();
    int64_t d = 0;
    for (; d + 4 <= D; d += 4) {
      const __m256d v = _mm256_loadu_pd(x + d);
      acc = _mm256_add_pd(acc, _mm256_mul_pd(v, v));
    }
    s = hsum_pd(acc);
    for (; d < D; ++d) s += x[d] * x[d];
  }
  return s;
}
#endif

template <typename T>
inline RowResult assign_row(T* g, const T* b, int64_t K, const T* x, const T* C, int64_t D, T band, bool avx2) {
#if TLK_KMEANS_X86
  if (avx2) return assign_row_avx2<T>(g, b, K, x, C, D, band);
#endif
  return assign_row_scalar<T>(g, b, K, x, C, D, band);
}

template <typename T>
inline T sqnorm(const T* x, int64_t D, bool avx2) {
#if TLK_KMEANS_X86
  if (avx2) return sqnorm_avx2<T>(x, D);
#endif
  T s = 0;
  for (int64_t d = 0; d < D; ++d) s += x[d] * x[d];
  return s;
}

// The epilogue of one chunk of rows: labels and exact distances of its rows for the M problems
// of the chunk's data set, from the GEMM block g (rows, M·K). Returns the smallest linear index
// p·N + n whose distance is not finite, or INT64_MAX.
template <typename T>
struct ChunkEpilogue {
  T* g;                   // (rows, M·K) GEMM block, overwritten by the scores
  const T* x;             // (rows, D) the chunk's rows
  const T* C;             // (Pc, K, D) centroids
  const T* b;             // (Pc, K)
  const T* band_base;     // (Pc,)
  const T* band_slope;    // (Pc,)
  int64_t rows, M, K, D, N, n0, p0;
  bool c_shared;
  int64_t* labels;        // (P, N)
  T* dist2;               // (P, N)
  int64_t ldg = 0;        // leading dimension of a transposed g (M·K, rows) (the AVX-512 epilogue)
};

// Row n of problem p gets its label and distance; bad keeps the smallest linear index p·N + n of a
// non-finite distance.
template <typename T>
inline void store_result(const ChunkEpilogue<T>& e, int64_t p, int64_t n, int64_t label, T d2, int64_t& bad) {
  e.labels[p * e.N + n] = label;
  e.dist2[p * e.N + n] = d2;
  if (!std::isfinite(d2) && p * e.N + n < bad) bad = p * e.N + n;
}

}  // namespace tlk::kmeans_cpu

#include "cpu/kmeans_avx512.h"
#include "cpu/kmeans_amx.h"
#include "cpu/kmeans_direct_avx512.h"
#include "cpu/kmeans_direct_avx2.h"

namespace tlk::kmeans_cpu {

#define TLK_KMEANS_EPILOGUE_BODY(SQNORM, ASSIGN_ROW)                                                \
  int64_t bad = std::numeric_limits<int64_t>::max();                                                \
  const int64_t cols = e.M * e.K;                                                                   \
  for (int64_t i = 0; i < e.rows; ++i) {                                                            \
    const T* x = e.x + i * e.D;                                                                     \
    const T xnorm = std::sqrt(SQNORM(x, e.D));                                                      \
    const int64_t n = e.n0 + i;                                                                     \
    for (int64_t q = 0; q < e.M; ++q) {                                                             \
      const int64_t p = e.p0 + q;                                                                   \
      const int64_t cp = e.c_shared ? 0 : p;                                                        \
      const T band = e.band_base[cp] + e.band_slope[cp] * xnorm;                                    \
      const RowResult r = ASSIGN_ROW(e.g + i * cols + q * e.K, e.b + cp * e.K, e.K, x,              \
                                     e.C + cp * e.K * e.D, e.D, band);                              \
      store_result<T>(e, p, n, r.label, static_cast<T>(r.dist2), bad);                              \
    }                                                                                               \
  }                                                                                                 \
  return bad;

template <typename T>
T sqnorm_scalar(const T* x, int64_t D) {
  T s = 0;
  for (int64_t d = 0; d < D; ++d) s += x[d] * x[d];
  return s;
}

#define TLK_KMEANS_SINGLE_BODY(SQDIST)                                                              \
  int64_t bad = std::numeric_limits<int64_t>::max();                                                \
  for (int64_t i = 0; i < e.rows; ++i) {                                                            \
    const T* x = e.x + i * e.D;                                                                     \
    const int64_t n = e.n0 + i;                                                                     \
    for (int64_t q = 0; q < e.M; ++q) {                                                             \
      const int64_t p = e.p0 + q;                                                                   \
      store_result<T>(e, p, n, 0, SQDIST(x, e.C + (e.c_shared ? 0 : p) * e.D, e.D), bad);           \
    }                                                                                               \
  }                                                                                                 \
  return bad;

template <typename T>
int64_t single_centroid_scalar(const ChunkEpilogue<T>& e) {
  TLK_KMEANS_SINGLE_BODY(sqdist_scalar<T>)
}

#if TLK_KMEANS_X86
template <typename T>
__attribute__((target("avx2"))) int64_t single_centroid_avx2(const ChunkEpilogue<T>& e) {
  TLK_KMEANS_SINGLE_BODY(sqdist_avx2)
}
#endif
#undef TLK_KMEANS_SINGLE_BODY

template <typename T>
int64_t epilogue_scalar(const ChunkEpilogue<T>& e) {
  TLK_KMEANS_EPILOGUE_BODY(sqnorm_scalar<T>, assign_row_scalar<T>)
}

#if TLK_KMEANS_X86
template <typename T>
__attribute__((target("avx2,popcnt"))) int64_t epilogue_avx2(const ChunkEpilogue<T>& e) {
  TLK_KMEANS_EPILOGUE_BODY(sqnorm_avx2<T>, assign_row_avx2<T>)
}

#endif
#undef TLK_KMEANS_EPILOGUE_BODY

// Instruction-set levels of the row kernels; all give the same labels (exact distances decide
// between near ties), distances differ only in the summation order of Σ (x − c)².
// kAvx512Direct: the GEMM-free kernel of kmeans_direct_avx512.h for float32 with K ≤ 64, the
// transposed-GEMM AVX-512 epilogue otherwise.
// kAvx512Wide: the GEMM-free kernel up to K = 512 (the default on AMD CPUs, where MKL's GEMM
// takes its AVX2 code).
// kAvx512Amx: as kAvx512Direct, but float32 scores for K > 64 by AMX tiles (kmeans_amx.h), read by
// the transposed epilogue (for K ≤ 64 the direct kernel is faster, bench/NOTES-kmeans.md).
enum class Simd : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Direct = 3, kAvx512Wide = 4, kAvx512Amx = 5 };

// The AVX-512 levels read a transposed score block (M·K, rows): see gemm_transposed().
inline bool gemm_transposed(Simd level) { return static_cast<int>(level) >= static_cast<int>(Simd::kAvx512); }

// Whether a chunk of T rows against K centroids takes the AMX products at this level.
template <typename T>
inline bool use_amx(Simd level, int64_t K) {
  return std::is_same_v<T, float> && level == Simd::kAvx512Amx && K > kDirectMaxK;
}

// Whether a chunk of T rows against K centroids takes the direct kernel at this level.
template <typename T>
inline bool use_direct(Simd level, int64_t K) {
#if TLK_KMEANS_X86
  if (!std::is_same_v<T, float>) return false;
  if (level == Simd::kAvx2) return K <= kDirectAvx2MaxK && has_fma();
  if (static_cast<int>(level) < static_cast<int>(Simd::kAvx512Direct)) return false;
  return K <= kDirectMaxK || (level == Simd::kAvx512Wide && K <= kDirectWideMaxK);
#else
  (void)level;
  (void)K;
  return false;
#endif
}

#if TLK_KMEANS_X86
// The direct kernel of the level (use_direct() said yes): labels and distances of one chunk.
inline int64_t direct_chunk(const ChunkEpilogue<float>& e, const std::vector<DirectCentroids>& dcs, Simd level) {
  return level == Simd::kAvx2 ? direct_chunk_avx2(e, dcs) : direct_chunk(e, dcs);
}
#endif

template <typename T>
int64_t epilogue(const ChunkEpilogue<T>& e, Simd level) {
#if TLK_KMEANS_X86
  if (gemm_transposed(level)) return epilogue_avx512_t<T>(e);
  if (level == Simd::kAvx2) return epilogue_avx2<T>(e);
#endif
  return epilogue_scalar<T>(e);
}

// K = 1 (the k-means++ candidates): label 0 and the exact distance of every row, which is what
// the epilogues decide with a single score, without the GEMM block. Returns as epilogue().
template <typename T>
inline int64_t single_centroid(const ChunkEpilogue<T>& e, Simd level) {
#if TLK_KMEANS_X86
  if (gemm_transposed(level)) return single_centroid_avx512<T>(e);
  if (level == Simd::kAvx2) return single_centroid_avx2<T>(e);
#endif
  return single_centroid_scalar<T>(e);
}

}  // namespace tlk::kmeans_cpu
