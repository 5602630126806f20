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
// Pass 1 of the AVX2 row: scores written back into g, their minimum and its lowest index.
// Indices ride along as float (double) lanes: exact below 2^24 (2^53); the caller checks K.
__attribute__((target("avx2"))) inline float min_arg_avx2(float* g, const float* b, int64_t K, int64_t& arg) {
  __m256 vmin = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  __m256 vi = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
  __m256 vbi = _mm256_setzero_ps();
  const __m256 step = _mm256_set1_ps(8.0f);
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    const __m256 s = _mm256_add_ps(_mm256_loadu_ps(b + k), _mm256_loadu_ps(g + k));
    _mm256_storeu_ps(g + k, s);
    const __m256 lt = _mm256_cmp_ps(s, vmin, _CMP_LT_OQ);
    vmin = _mm256_blendv_ps(vmin, s, lt);
    vbi = _mm256_blendv_ps(vbi, vi, lt);
    vi = _mm256_add_ps(vi, step);
  }
  // the minimum, then the lowest index among the lanes holding it (vbi = +inf elsewhere)
  const __m256 vm = hmin_ps(vmin);
  const __m256 cand = _mm256_blendv_ps(_mm256_set1_ps(std::numeric_limits<float>::infinity()), vbi,
                                       _mm256_cmp_ps(vmin, vm, _CMP_EQ_OQ));
  float m = _mm256_cvtss_f32(vm);
  arg = K >= 8 ? static_cast<int64_t>(_mm256_cvtss_f32(hmin_ps(cand))) : 0;
  for (; k < K; ++k) {
    g[k] = b[k] + g[k];
    if (g[k] < m) {
      m = g[k];
      arg = k;
    }
  }
  return m;
}

__attribute__((target("avx2"))) inline double min_arg_avx2(double* g, const double* b, int64_t K, int64_t& arg) {
  __m256d vmin = _mm256_set1_pd(std::numeric_limits<double>::infinity());
  __m256d vi = _mm256_setr_pd(0, 1, 2, 3);
  __m256d vbi = _mm256_setzero_pd();
  const __m256d step = _mm256_set1_pd(4.0);
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    const __m256d s = _mm256_add_pd(_mm256_loadu_pd(b + k), _mm256_loadu_pd(g + k));
    _mm256_storeu_pd(g + k, s);
    const __m256d lt = _mm256_cmp_pd(s, vmin, _CMP_LT_OQ);
    vmin = _mm256_blendv_pd(vmin, s, lt);
    vbi = _mm256_blendv_pd(vbi, vi, lt);
    vi = _mm256_add_pd(vi, step);
  }
  const __m256d vm = hmin_pd(vmin);
  const __m256d cand = _mm256_blendv_pd(_mm256_set1_pd(std::numeric_limits<double>::infinity()), vbi,
                                        _mm256_cmp_pd(vmin, vm, _CMP_EQ_OQ));
  double m = _mm256_cvtsd_f64(vm);
  arg = K >= 4 ? static_cast<int64_t>(_mm256_cvtsd_f64(hmin_pd(cand))) : 0;
  for (; k < K; ++k) {
    g[k] = b[k] + g[k];
    if (g[k] < m) {
      m = g[k];
      arg = k;
    }
  }
  return m;
}

// Pass 2: how many scores lie within the band (branch-free).
template <typename T>
__attribute__((target("avx2,popcnt"))) inline int64_t count_band_avx2(const T* g, int64_t K, T thr) {
  constexpr int64_t W = 32 / sizeof(T);
  int64_t cnt = 0, k = 0;
  for (; k + W <= K; k += W) cnt += __builtin_popcount(band_mask_avx2(g + k, thr));
  for (; k < K; ++k) cnt += g[k] <= thr;
  return cnt;
}

template <typename T>
__attribute__((target("avx2,popcnt"), always_inline)) inline RowResult assign_row_avx2(T* g, const T* b, int64_t K, const T* x,
                                                                 const T* C, int64_t D, T band) {
  int64_t arg = 0;
  const T m = min_arg_avx2(g, b, K, arg);
  const T thr = m + band;
  if (count_band_avx2<T>(g, K, thr) == 1) {  // the usual case: no other centroid within the band
    return {arg, static_cast<double>(sqdist_avx2(x, C + arg * D, D))};
  }
  int64_t best = -1;
  T best_d = std::numeric_limits<T>::infinity();
  for (int64_t k = 0; k < K; ++k) {
    if (g[k] <= thr) {
      const T d = sqdist_avx2(x, C + k * D, D);
      if (best < 0 || d < best_d) {
        best = k;
        best_d = d;
      }
    }
  }
  if (best < 0) {  // NaN scores (NaN / inf in x): label 0 and its (non-finite) distance
    best = 0;
    best_d = sqdist_avx2(x, C, D);
  }
  return {best, static_cast<double>(best_d)};
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
  // float lanes carry the indices of pass 1 exactly below 2^24
  if (avx2 && (sizeof(T) == 8 || K < (int64_t{1} << 24))) return assign_row_avx2<T>(g, b, K, x, C, D, band);
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
};

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
      const T d2 = static_cast<T>(r.dist2);                                                         \
      e.labels[p * e.N + n] = r.label;                                                              \
      e.dist2[p * e.N + n] = d2;                                                                    \
      if (!std::isfinite(d2) && p * e.N + n < bad) bad = p * e.N + n;                               \
    }                                                                                               \
  }                                                                                                 \
  return bad;

template <typename T>
T sqnorm_scalar(const T* x, int64_t D) {
  T s = 0;
  for (int64_t d = 0; d < D; ++d) s += x[d] * x[d];
  return s;
}

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

template <typename T>
int64_t epilogue(const ChunkEpilogue<T>& e, bool avx2) {
#if TLK_KMEANS_X86
  // float lanes carry the indices of pass 1 exactly below 2^24
  if (avx2 && (sizeof(T) == 8 || e.K < (int64_t{1} << 24))) return epilogue_avx2<T>(e);
#endif
  return epilogue_scalar<T>(e);
}

}  // namespace tlk::kmeans_cpu
