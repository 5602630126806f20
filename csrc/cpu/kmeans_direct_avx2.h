// Direct (GEMM-free) AVX2 assignment of one chunk (float32, K ≤ 512), for CPUs without AVX-512
// (most laptops), included by kmeans_simd.h after kmeans_direct_avx512.h.
//
// The AVX-512 direct kernel's scheme in 8 lanes and 16 registers: centroids along the lanes in
// blocks of 16 (2 vectors), 4 rows in registers (8 accumulators + 2 centroid vectors + one
// broadcast; blocks of 32 with 2 rows: the same or slower), each x_d broadcast into one
// FMA per vector, the scores of 8 rows in an L1 buffer. The same decisions as every level:
// minimum, band = base + slope·‖x‖, the single score in the band is the label, several (or none:
// NaN) go to the exact distances of resolve_band; row norms and the winners' distances are summed
// 8 rows at a time. So the labels equal the other levels' and the distances differ only in the
// order of Σ (x − c)².
// Why: 1.1-3x faster than at::mm + the AVX2 epilogue on the benchmark shapes (bench/NOTES-kmeans.md).
#pragma once

#if TLK_KMEANS_X86
#include <vector>

#define TLK_AVX2_TARGET __attribute__((target("avx2,fma,popcnt,bmi")))
#define TLK_AVX2_INLINE __attribute__((target("avx2,fma,popcnt,bmi"), always_inline))

namespace tlk::kmeans_cpu {

constexpr int64_t kDirectAvx2MaxK = 512;

inline bool has_fma() {
  static const bool ok = __builtin_cpu_supports("fma");
  return ok;
}

// The scores of R rows from x0 against the centroid columns [k0, k0 + 8·KV) into sbuf (R, Kp) at
// those columns, and each row's lane-wise minimum folded into mins[r] (set on the first block).
template <int KV, int R>
TLK_AVX2_INLINE inline void direct_scores_avx2(const float* x0, int64_t D, const DirectCentroids& dc, int64_t k0,
                                               float* sbuf, __m256* mins, bool first) {
  const int64_t Kp = dc.Kp;
  const float* ct = dc.ct.data() + k0;
  __m256 acc[R][KV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int j = 0; j < KV; ++j) acc[r][j] = _mm256_setzero_ps();
  }
  for (int64_t d = 0; d < D; ++d) {
    __m256 c[KV];
#pragma GCC unroll 4
    for (int j = 0; j < KV; ++j) {
      c[j] = _mm256_loadu_ps(ct + d * Kp + 8 * j);
      // in a register: GCC folds the load into each of the R FMAs otherwise (load-bound, see bench/NOTES-kmeans.md)
      __asm__("" : "+x"(c[j]));
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 xv = _mm256_broadcast_ss(x0 + r * D + d);
#pragma GCC unroll 4
      for (int j = 0; j < KV; ++j) acc[r][j] = _mm256_fmadd_ps(xv, c[j], acc[r][j]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    __m256 mn = first ? _mm256_set1_ps(std::numeric_limits<float>::infinity()) : mins[r];
#pragma GCC unroll 4
    for (int j = 0; j < KV; ++j) {
      const __m256 sc = _mm256_add_ps(_mm256_loadu_ps(dc.bp.data() + k0 + 8 * j), acc[r][j]);
      _mm256_store_ps(sbuf + r * Kp + k0 + 8 * j, sc);
      mn = _mm256_min_ps(sc, mn);
    }
    mins[r] = mn;
  }
}

// The scores of rows x0 .. x0 + nr − 1 (nr ≤ 8) against columns [k0, k0 + 8·KV).
template <int KV>
TLK_AVX2_INLINE inline void direct_scores8_avx2(const float* x0, int nr, int64_t D, const DirectCentroids& dc,
                                                int64_t k0, float* sbuf, __m256* mins, bool first) {
  constexpr int R = 4;
  const int64_t Kp = dc.Kp;
  if (nr == 8) {
#pragma GCC unroll 4
    for (int r = 0; r < 8; r += R) direct_scores_avx2<KV, R>(x0 + r * D, D, dc, k0, sbuf + r * Kp, mins + r, first);
  } else {
    for (int r = 0; r < nr; ++r) direct_scores_avx2<KV, 1>(x0 + r * D, D, dc, k0, sbuf + r * Kp, mins + r, first);
  }
}

// Σ_d (x_d − c_d)² (c = nullptr: Σ x_d²) of one row as 8 partial lanes (the tail by a masked load).
TLK_AVX2_INLINE inline __m256 sq_partials_avx2(const float* x, const float* c, int64_t D) {
  __m256 acc = _mm256_setzero_ps();
  int64_t d = 0;
  for (; d + 8 <= D; d += 8) {
    const __m256 t = c ? _mm256_sub_ps(_mm256_loadu_ps(x + d), _mm256_loadu_ps(c + d)) : _mm256_loadu_ps(x + d);
    acc = _mm256_add_ps(acc, _mm256_mul_ps(t, t));
  }
  if (d < D) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(D - d)), lane);
    const __m256 t = c ? _mm256_sub_ps(_mm256_maskload_ps(x + d, m), _mm256_maskload_ps(c + d, m))
                       : _mm256_maskload_ps(x + d, m);
    acc = _mm256_add_ps(acc, _mm256_mul_ps(t, t));
  }
  return acc;
}

// Lane r of the result = the sum of the 8 lanes of v[r]: eight horizontal sums in 7 hadds and
// one cross-lane add (a fixed order).
TLK_AVX2_INLINE inline __m256 reduce8_add(const __m256* v) {
  const __m256 t0 = _mm256_hadd_ps(v[0], v[1]), t1 = _mm256_hadd_ps(v[2], v[3]);
  const __m256 t2 = _mm256_hadd_ps(v[4], v[5]), t3 = _mm256_hadd_ps(v[6], v[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);  // [0..3 low halves, 0..3 high], [4..7 ...]
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// Rows i0 .. i0 + nr − 1 (nr ≤ 8) of the chunk against problem q: scores, then the decisions, with
// the row norms and the winners' exact distances summed 8 rows at a time.
TLK_AVX2_TARGET inline void direct_block8_avx2(const ChunkEpilogue<float>& e, const DirectCentroids& dc, int64_t q,
                                               int64_t i0, int nr, int64_t& bad) {
  const int64_t D = e.D, K = e.K, Kp = dc.Kp;  // Kp: a multiple of 16
  const int64_t p = e.p0 + q;
  const int64_t cp = e.c_shared ? 0 : p;
  const float* x0 = e.x + i0 * D;
  alignas(32) float sbuf[8 * kDirectAvx2MaxK];
  __m256 mins[8], part[8];
  prefetch_rows(x0, 32, 8, D);  // the block four blocks ahead
  for (int64_t k0 = 0; k0 < Kp; k0 += 16) {  // a block of −2c'ᵀ (D · 16 floats) stays in L1 for the 8 rows
    direct_scores8_avx2<2>(x0, nr, D, dc, k0, sbuf, mins, k0 == 0);
  }
  for (int r = 0; r < 8; ++r) part[r] = r < nr ? sq_partials_avx2(x0 + r * D, nullptr, D) : _mm256_setzero_ps();
  alignas(32) float norm[8], d2[8];
  _mm256_store_ps(norm, _mm256_sqrt_ps(reduce8_add(part)));
  const float* Cq = e.C + cp * K * D;
  int64_t label[8];
  float thr[8];
  unsigned several = 0;  // rows with more than one score in the band (or none: NaN)
  for (int r = 0; r < 8; ++r) {
    if (r >= nr) {
      part[r] = _mm256_setzero_ps();
      continue;
    }
    const float* s = sbuf + r * Kp;
    thr[r] = _mm256_cvtss_f32(hmin_ps(mins[r])) + (e.band_base[cp] + e.band_slope[cp] * norm[r]);
    const __m256 vt = _mm256_set1_ps(thr[r]);
    // the in-band centroids of 64 columns as one mask; tzcnt (defined at 0) keeps the choice of
    // the first one a select, not a mispredicted branch
    int count = 0;
    int64_t first_in = 0;
    for (int64_t k0 = 0; k0 < Kp; k0 += 64) {
      uint64_t in_band = 0;
      for (int64_t j = 0; j < 8 && k0 + 8 * j < Kp; ++j) {
        in_band |= static_cast<uint64_t>(static_cast<unsigned>(
                       _mm256_movemask_ps(_mm256_cmp_ps(_mm256_load_ps(s + k0 + 8 * j), vt, _CMP_LE_OQ))))
                   << (8 * j);
      }
      const int64_t here = k0 + static_cast<int64_t>(_tzcnt_u64(in_band));
      first_in = count == 0 && in_band != 0 ? here : first_in;
      count += static_cast<int>(_mm_popcnt_u64(in_band));
    }
    const bool one = count == 1;
    label[r] = one ? first_in : 0;
    several |= static_cast<unsigned>(!one) << r;
    part[r] = sq_partials_avx2(x0 + r * D, Cq + label[r] * D, D);
  }
  _mm256_store_ps(d2, reduce8_add(part));
  for (; several != 0; several &= several - 1) {  // exact distances decide (sbuf holds b + g: b = 0 here)
    const int r = __builtin_ctz(several);
    const RowResult rr = resolve_band<float>(sbuf + r * Kp, 1, dc.zeros.data(), K, x0 + r * D, Cq, D, thr[r],
                                             [](const float* u, const float* v, int64_t m) { return sqdist_avx2(u, v, m); });
    label[r] = rr.label;
    d2[r] = static_cast<float>(rr.dist2);
  }
  for (int r = 0; r < nr; ++r) store_result<float>(e, p, e.n0 + i0 + r, label[r], d2[r], bad);
}

// The labels and distances of one chunk (e.g unused: no GEMM block); dcs as for direct_chunk().
// Returns the first non-finite linear index p·N + n, or INT64_MAX.
TLK_AVX2_TARGET inline int64_t direct_chunk_avx2(const ChunkEpilogue<float>& e,
                                                 const std::vector<DirectCentroids>& dcs) {
  int64_t bad = std::numeric_limits<int64_t>::max();
  for (int64_t q = 0; q < e.M; ++q) {
    const DirectCentroids& dc = dcs[e.c_shared ? 0 : e.p0 + q];
    for (int64_t i = 0; i < e.rows; i += 8) {
      direct_block8_avx2(e, dc, q, i, static_cast<int>(std::min<int64_t>(8, e.rows - i)), bad);
    }
  }
  return bad;
}

}  // namespace tlk::kmeans_cpu

#undef TLK_AVX2_TARGET
#undef TLK_AVX2_INLINE
#endif  // TLK_KMEANS_X86
