// Direct (GEMM-free) AVX-512 assignment of one chunk (float32, K ≤ 64; with blocks up to K = 512),
// included by kmeans_simd.h after kmeans_avx512.h.
//
// Why: with K ≤ 64 at::mm runs at about a third of its rate and the score block costs a second pass.
// Here the centroids run along the lanes (KV = ⌈K/16⌉ vectors, padded), R rows are held in
// registers (R·KV accumulators), and each x_d is broadcast into one FMA per vector: a row costs
// D·KV FMAs, one horizontal minimum and one band count, and its scores never leave the registers.
//
// Same decisions as the other kernels: the score of centroid k is b_k + g_k with
// g_k = Σ_d x_d·(−2c'_kd), summed in d order (another order than the GEMM's, within the same
// rounding band, which bounds the error of any order); a single score within the band of the
// minimum is the label, several (or none: NaN) go to the exact distances of resolve_band.
// So the labels and distances equal the other levels' (tests compare them).
//
// K > 64 (level kAvx512Wide, the default on AMD CPUs): the same loop over blocks of 64 centroids,
// each block's −2c'ᵀ kept in L1 for 16 rows, their scores written to a 16 × K buffer.
// Why: MKL (at::mm) takes its AVX2 code on AMD CPUs, this loop halves the step there; on Intel MKL is faster.
#pragma once

#if TLK_KMEANS_X86
#include <vector>

#define TLK_AVX512_TARGET __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,popcnt,bmi")))
// the score loops inlined into the block: as calls they were 10-15% slower
#define TLK_AVX512_INLINE __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,popcnt,bmi"), always_inline))

// GCC 12 flags the _mm512_undefined_* inside its own reduction intrinsics (a false positive, GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace tlk::kmeans_cpu {

constexpr int64_t kDirectMaxK = 64;  // 4 vectors of 16 centroids: a row's scores stay in registers
// Wider K (the kAvx512Wide level): blocks of 64 centroids, the scores of 16 rows in an L1 buffer
// of 16 · K floats (32 KiB at this bound).
constexpr int64_t kDirectWideMaxK = 512;

// Requests the rows `ahead` rows past x0 (`rows` rows of D floats) into L1. The direct kernels'
// score loops read R rows a float at a time, R lines apart, which the hardware prefetchers do not
// follow (Zen 5: about half the FMA rate of L1-resident rows without it). Past the end of X is
// harmless: prefetches never fault.
inline void prefetch_rows(const float* x0, int64_t ahead, int64_t rows, int64_t D) {
  const char* p = reinterpret_cast<const char*>(x0 + ahead * D);
  for (int64_t byte = 0; byte < rows * D * static_cast<int64_t>(sizeof(float)); byte += 64) {
    _mm_prefetch(p + byte, _MM_HINT_T0);
  }
}

// One problem's centroids in the layout of the direct kernel.
struct DirectCentroids {
  std::vector<float> ct;  // (D, Kp): −2c'ᵀ, zero in the padding columns
  std::vector<float> bp;  // (Kp,): b, +inf in the padding
  std::vector<float> zeros;  // (Kp,): the b that resolve_band adds to scores that already hold b
  int64_t Kp = 0;
};

// cm2 (K, D) = −2c' and b (K,) of one problem -> its DirectCentroids.
inline DirectCentroids make_direct_centroids(const float* cm2, const float* b, int64_t K, int64_t D) {
  DirectCentroids dc;
  dc.Kp = (K + 15) / 16 * 16;
  dc.ct.assign(static_cast<size_t>(D * dc.Kp), 0.0f);
  dc.bp.assign(static_cast<size_t>(dc.Kp), std::numeric_limits<float>::infinity());
  dc.zeros.assign(static_cast<size_t>(dc.Kp), 0.0f);
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t d = 0; d < D; ++d) dc.ct[d * dc.Kp + k] = cm2[k * D + d];
    dc.bp[k] = b[k];
  }
  return dc;
}

// The scores s_k = b_k + g_k of R rows from x0 against the centroid columns [k0, k0 + 16·KV) of
// one problem into sbuf (R, Kp) at those columns; each row's lane-wise minimum over the KV
// vectors into mins[r] (first block) or folded into it (later blocks: a minimum, any order).
template <int KV, int R>
TLK_AVX512_INLINE inline void direct_scores(const float* x0, int64_t D, const DirectCentroids& dc, int64_t k0,
                                            float* sbuf, __m512* mins, bool first) {
  const int64_t Kp = dc.Kp;
  const float* ct = dc.ct.data() + k0;
  __m512 acc[R][KV];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int j = 0; j < KV; ++j) acc[r][j] = _mm512_setzero_ps();
  }
  for (int64_t d = 0; d < D; ++d) {
    __m512 c[KV];
#pragma GCC unroll 4
    for (int j = 0; j < KV; ++j) {
      c[j] = _mm512_loadu_ps(ct + d * Kp + 16 * j);
      if constexpr (KV == 3 && R > 1) __asm__("" : "+v"(c[j]));  // in a register: GCC spilled these to the stack
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_set1_ps(x0[r * D + d]);
#pragma GCC unroll 4
      for (int j = 0; j < KV; ++j) acc[r][j] = _mm512_fmadd_ps(xv, c[j], acc[r][j]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    __m512 mn = first ? _mm512_set1_ps(std::numeric_limits<float>::infinity()) : mins[r];
#pragma GCC unroll 4
    for (int j = 0; j < KV; ++j) {
      const __m512 sc = _mm512_add_ps(_mm512_loadu_ps(dc.bp.data() + k0 + 16 * j), acc[r][j]);
      _mm512_store_ps(sbuf + r * Kp + k0 + 16 * j, sc);
      mn = _mm512_min_ps(sc, mn);
    }
    mins[r] = mn;
  }
}

// The scores of rows x0 .. x0 + nr − 1 (nr ≤ 16) against columns [k0, k0 + 16·KV) (see above).
template <int KV>
TLK_AVX512_INLINE inline void direct_scores16(const float* x0, int nr, int64_t D, const DirectCentroids& dc,
                                              int64_t k0, float* sbuf, __m512* mins, bool first) {
  // R·KV accumulators + KV centroid vectors + one broadcast fit the 32 zmm registers; R | 16
  constexpr int R = KV == 1 ? 16 : KV == 4 ? 4 : 8;
  const int64_t Kp = dc.Kp;
  if (nr == 16) {
#pragma GCC unroll 4
    for (int r = 0; r < 16; r += R) direct_scores<KV, R>(x0 + r * D, D, dc, k0, sbuf + r * Kp, mins + r, first);
  } else {
    for (int r = 0; r < nr; ++r) direct_scores<KV, 1>(x0 + r * D, D, dc, k0, sbuf + r * Kp, mins + r, first);
  }
}

// Rows i0 .. i0 + nr − 1 (nr ≤ 16) of the chunk against problem q: scores, then the decisions of
// all 16 rows with the horizontal steps (norm, minimum, exact distance) done 16 rows at a time.
// KV: vectors of 16 centroids per block of columns (KV = 4 with K > 64: several blocks, the last
// one narrower).
template <int KV>
TLK_AVX512_TARGET inline void direct_block16(const ChunkEpilogue<float>& e, const DirectCentroids& dc, int64_t q,
                                             int64_t i0, int nr, int64_t& bad) {
  const int64_t D = e.D, K = e.K, Kp = dc.Kp;
  const int64_t p = e.p0 + q;
  const int64_t cp = e.c_shared ? 0 : p;
  const float* x0 = e.x + i0 * D;
  alignas(64) float sbuf[16 * (KV == 4 ? kDirectWideMaxK : 16 * KV)];
  __m512 mins[16], part[16];
  prefetch_rows(x0, 32, 16, D);  // the block two blocks ahead
  // column blocks outermost: a block of −2c'ᵀ (D · 64 floats) stays in L1 for the 16 rows.
  // KV < 4: K ≤ 48 and Kp = 16·KV, one block known at compile time.
  const int64_t k_end = KV < 4 ? 16 * KV : Kp;
  for (int64_t k0 = 0; k0 < k_end; k0 += 16 * KV) {
    const bool first = k0 == 0;
    const int64_t kv = std::min<int64_t>(KV, (Kp - k0) / 16);
    if (kv == KV) {
      direct_scores16<KV>(x0, nr, D, dc, k0, sbuf, mins, first);
    } else if (kv == 1) {  // the last, narrower block of K > 64
      direct_scores16<1>(x0, nr, D, dc, k0, sbuf, mins, first);
    } else if (kv == 2) {
      direct_scores16<2>(x0, nr, D, dc, k0, sbuf, mins, first);
    } else {
      direct_scores16<3>(x0, nr, D, dc, k0, sbuf, mins, first);
    }
  }
  for (int r = nr; r < 16; ++r) mins[r] = _mm512_setzero_ps();
  for (int r = 0; r < 16; ++r) part[r] = r < nr ? sq_partials<float>(x0 + r * D, nullptr, D) : _mm512_setzero_ps();
  const __m512 norm = _mm512_sqrt_ps(reduce_rows(part, AddOp{}));
  const __m512 lo = reduce_rows(mins, MinOp{});
  alignas(64) float thr[16], d2[16];
  _mm512_store_ps(thr, _mm512_add_ps(lo, _mm512_add_ps(_mm512_set1_ps(e.band_base[cp]),
                                                       _mm512_mul_ps(_mm512_set1_ps(e.band_slope[cp]), norm))));
  const float* Cq = e.C + cp * K * D;
  int64_t label[16];
  unsigned several = 0;  // rows with more than one score in the band (or none: NaN)
  for (int r = 0; r < 16; ++r) {
    if (r >= nr) {
      part[r] = _mm512_setzero_ps();
      continue;
    }
    // the in-band centroids of each block as one 64-bit mask: count and first index without a
    // branch on which vector holds the minimum (a random, mispredicted one per row otherwise)
    const __m512 vt = _mm512_set1_ps(thr[r]);
    int count = 0;
    int64_t first_in = 0;
    for (int64_t k0 = 0; k0 < k_end; k0 += 16 * KV) {
      uint64_t in_band = 0;
#pragma GCC unroll 4
      for (int j = 0; j < KV; ++j) {
        if (KV == 4 && k0 + 16 * j >= Kp) break;
        in_band |= static_cast<uint64_t>(_mm512_cmp_ps_mask(_mm512_load_ps(sbuf + r * Kp + k0 + 16 * j), vt,
                                                            _CMP_LE_OQ))
                   << (16 * j);
      }
      // tzcnt (defined at 0) keeps the choice of the first block with a hit a select, not a branch
      const int64_t here = k0 + static_cast<int64_t>(_tzcnt_u64(in_band));
      first_in = count == 0 && in_band != 0 ? here : first_in;
      count += static_cast<int>(_mm_popcnt_u64(in_band));
    }
    const bool one = count == 1;
    label[r] = one ? first_in : 0;
    several |= static_cast<unsigned>(!one) << r;
    part[r] = sq_partials<float>(x0 + r * D, Cq + label[r] * D, D);
  }
  _mm512_store_ps(d2, reduce_rows(part, AddOp{}));
  for (; several != 0; several &= several - 1) {  // exact distances decide (sbuf holds b + g: b = 0 here)
    const int r = __builtin_ctz(several);
    const RowResult rr = resolve_band<float>(sbuf + r * Kp, 1, dc.zeros.data(), K, x0 + r * D, Cq, D, thr[r],
                                             [](const float* u, const float* v, int64_t m) { return sqdist_avx512(u, v, m); });
    label[r] = rr.label;
    d2[r] = static_cast<float>(rr.dist2);
  }
  if (nr == 16) {  // vector stores and one finiteness test instead of 16 store_result calls
    const int64_t at = p * e.N + e.n0 + i0;
    const __m512 dv = _mm512_load_ps(d2);
    _mm512_storeu_ps(e.dist2 + at, dv);
    _mm512_storeu_si512(e.labels + at, _mm512_loadu_si512(label));
    _mm512_storeu_si512(e.labels + at + 8, _mm512_loadu_si512(label + 8));
    const unsigned finite = _mm512_cmp_ps_mask(_mm512_abs_ps(dv), _mm512_set1_ps(std::numeric_limits<float>::infinity()),
                                               _CMP_LT_OQ);
    if (finite != 0xFFFFu) bad = std::min<int64_t>(bad, at + __builtin_ctz(~finite & 0xFFFFu));
  } else {
    for (int r = 0; r < nr; ++r) store_result<float>(e, p, e.n0 + i0 + r, label[r], d2[r], bad);
  }
}

template <int KV>
TLK_AVX512_TARGET int64_t direct_chunk_kv(const ChunkEpilogue<float>& e, const std::vector<DirectCentroids>& dcs) {
  int64_t bad = std::numeric_limits<int64_t>::max();
  for (int64_t q = 0; q < e.M; ++q) {
    const DirectCentroids& dc = dcs[e.c_shared ? 0 : e.p0 + q];
    for (int64_t i = 0; i < e.rows; i += 16) {
      direct_block16<KV>(e, dc, q, i, static_cast<int>(std::min<int64_t>(16, e.rows - i)), bad);
    }
  }
  return bad;
}

// The labels and distances of one chunk (e.g is unused: there is no GEMM block); dcs: one
// DirectCentroids per problem (one when the centroids are shared). Returns the first non-finite
// linear index p·N + n, or INT64_MAX.
inline int64_t direct_chunk(const ChunkEpilogue<float>& e, const std::vector<DirectCentroids>& dcs) {
  switch ((e.K + 15) / 16) {
    case 1: return direct_chunk_kv<1>(e, dcs);
    case 2: return direct_chunk_kv<2>(e, dcs);
    case 3: return direct_chunk_kv<3>(e, dcs);
    default: return direct_chunk_kv<4>(e, dcs);
  }
}

}  // namespace tlk::kmeans_cpu

#pragma GCC diagnostic pop
#undef TLK_AVX512_TARGET
#undef TLK_AVX512_INLINE
#endif  // TLK_KMEANS_X86
