// AVX-512 kernels of the CPU k-means assignment (included by kmeans_simd.h after ChunkEpilogue):
// the epilogue of a transposed GEMM block and the one-centroid path, and the pieces the direct
// kernel shares (sq_partials, reduce_rows). Same decisions as the AVX2 and scalar rows: the
// minimum score, the scores within the rounding band of it, and exact distances where more than
// one is; rows run along the lanes (16 floats / 8 doubles) instead of centroids.
#pragma once

#if TLK_KMEANS_X86
#define TLK_AVX512_TARGET __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,popcnt,bmi")))
#define TLK_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,popcnt,bmi"), always_inline))

// GCC 12 flags the _mm512_undefined_* inside its own reduction intrinsics (a false positive, GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace tlk::kmeans_cpu {

template <typename T>
struct Avx512;

template <>
struct Avx512<float> {
  using V = __m512;
  using M = __mmask16;
  static constexpr int64_t W = 16;
  TLK_AVX512 static V load(const float* p) { return _mm512_loadu_ps(p); }
  TLK_AVX512 static V loadz(M m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
  TLK_AVX512 static V set1(float v) { return _mm512_set1_ps(v); }
  TLK_AVX512 static V zero() { return _mm512_setzero_ps(); }
  TLK_AVX512 static V add(V a, V b) { return _mm512_add_ps(a, b); }
  TLK_AVX512 static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  TLK_AVX512 static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  TLK_AVX512 static V min(V a, V b) { return _mm512_min_ps(a, b); }  // a NaN in a gives b
  TLK_AVX512 static V max(V a, V b) { return _mm512_max_ps(a, b); }  // a NaN in a gives b
  TLK_AVX512 static V sqrt(V a) { return _mm512_sqrt_ps(a); }
  TLK_AVX512 static M lt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  TLK_AVX512 static M gt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  TLK_AVX512 static V blend(M m, V a, V b) { return _mm512_mask_blend_ps(m, a, b); }
  TLK_AVX512 static M le(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ); }
  TLK_AVX512 static float reduce_add(V v) { return _mm512_reduce_add_ps(v); }
  TLK_AVX512 static float reduce_min(V v) { return _mm512_reduce_min_ps(v); }
  TLK_AVX512 static M tail(int64_t n) { return static_cast<M>((1u << n) - 1u); }
  TLK_AVX512 static V madd(V src, M m, V a, V b) { return _mm512_mask_add_ps(src, m, a, b); }
  TLK_AVX512 static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
};

template <>
struct Avx512<double> {
  using V = __m512d;
  using M = __mmask8;
  static constexpr int64_t W = 8;
  TLK_AVX512 static V load(const double* p) { return _mm512_loadu_pd(p); }
  TLK_AVX512 static V loadz(M m, const double* p) { return _mm512_maskz_loadu_pd(m, p); }
  TLK_AVX512 static V set1(double v) { return _mm512_set1_pd(v); }
  TLK_AVX512 static V zero() { return _mm512_setzero_pd(); }
  TLK_AVX512 static V add(V a, V b) { return _mm512_add_pd(a, b); }
  TLK_AVX512 static V sub(V a, V b) { return _mm512_sub_pd(a, b); }
  TLK_AVX512 static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
  TLK_AVX512 static V min(V a, V b) { return _mm512_min_pd(a, b); }
  TLK_AVX512 static V max(V a, V b) { return _mm512_max_pd(a, b); }
  TLK_AVX512 static V sqrt(V a) { return _mm512_sqrt_pd(a); }
  TLK_AVX512 static M lt(V a, V b) { return _mm512_cmp_pd_mask(a, b, _CMP_LT_OQ); }
  TLK_AVX512 static M gt(V a, V b) { return _mm512_cmp_pd_mask(a, b, _CMP_GT_OQ); }
  TLK_AVX512 static V blend(M m, V a, V b) { return _mm512_mask_blend_pd(m, a, b); }
  TLK_AVX512 static M le(V a, V b) { return _mm512_cmp_pd_mask(a, b, _CMP_LE_OQ); }
  TLK_AVX512 static double reduce_add(V v) { return _mm512_reduce_add_pd(v); }
  TLK_AVX512 static double reduce_min(V v) { return _mm512_reduce_min_pd(v); }
  TLK_AVX512 static M tail(int64_t n) { return static_cast<M>((1u << n) - 1u); }
  TLK_AVX512 static V madd(V src, M m, V a, V b) { return _mm512_mask_add_pd(src, m, a, b); }
  TLK_AVX512 static void store(double* p, V v) { _mm512_storeu_pd(p, v); }
};

// sum_d (x[d] - c[d])^2: W running lanes, a masked tail, a fixed-order reduction.
template <typename T>
TLK_AVX512_TARGET inline T sqdist_avx512(const T* x, const T* c, int64_t D) {
  using S = Avx512<T>;
  typename S::V acc = S::zero();
  int64_t d = 0;
  for (; d + S::W <= D; d += S::W) {
    const auto t = S::sub(S::load(x + d), S::load(c + d));
    acc = S::add(acc, S::mul(t, t));
  }
  if (d < D) {
    const auto m = S::tail(D - d);
    const auto t = S::sub(S::loadz(m, x + d), S::loadz(m, c + d));
    acc = S::add(acc, S::mul(t, t));
  }
  return S::reduce_add(acc);
}

// Σ over the D elements of (x − c)² (c = nullptr: of x²), as W lane-wise partial sums.
template <typename T>
TLK_AVX512 inline typename Avx512<T>::V sq_partials(const T* x, const T* c, int64_t D) {
  using S = Avx512<T>;
  typename S::V acc = S::zero();
  int64_t d = 0;
  for (; d + S::W <= D; d += S::W) {
    const auto t = c ? S::sub(S::load(x + d), S::load(c + d)) : S::load(x + d);
    acc = S::add(acc, S::mul(t, t));
  }
  if (d < D) {
    const auto m = S::tail(D - d);
    const auto t = c ? S::sub(S::loadz(m, x + d), S::loadz(m, c + d)) : S::loadz(m, x + d);
    acc = S::add(acc, S::mul(t, t));
  }
  return acc;
}

struct AddOp {
  TLK_AVX512 __m512 operator()(__m512 a, __m512 b) const { return _mm512_add_ps(a, b); }
  TLK_AVX512 __m512d operator()(__m512d a, __m512d b) const { return _mm512_add_pd(a, b); }
};
struct MinOp {
  TLK_AVX512 __m512 operator()(__m512 a, __m512 b) const { return _mm512_min_ps(a, b); }
};

// Lane i of the result = OP-reduction of the W lanes of v[i]: the horizontal reductions of W rows
// at once (float: 15 OPs and 30 shuffles for 16 rows; one row alone costs 4 OPs and 4 shuffles in
// a dependency chain). The tree leaves lane 4L + k (float) / 2L + k (double) holding input
// 4k + L / 4k + L, so the inputs are read in that transposed order.
template <typename Op>
TLK_AVX512_TARGET inline __m512 reduce_rows(const __m512* v, Op op) {
  __m512 t[8], u[4], w[2];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    const __m512 a = v[((2 * i) % 4) * 4 + (2 * i) / 4], b = v[((2 * i + 1) % 4) * 4 + (2 * i + 1) / 4];
    t[i] = op(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    u[i] = op(_mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0x88), _mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0xDD));
  }
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i) {
    w[i] = op(_mm512_shuffle_ps(u[2 * i], u[2 * i + 1], 0x44), _mm512_shuffle_ps(u[2 * i], u[2 * i + 1], 0xEE));
  }
  return op(_mm512_shuffle_ps(w[0], w[1], 0x88), _mm512_shuffle_ps(w[0], w[1], 0xDD));
}

template <typename Op>
TLK_AVX512_TARGET inline __m512d reduce_rows(const __m512d* v, Op op) {
  __m512d t[4], u[2];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    const __m512d a = v[((2 * i) % 4) * 2 + (2 * i) / 4], b = v[((2 * i + 1) % 4) * 2 + (2 * i + 1) / 4];
    t[i] = op(_mm512_shuffle_f64x2(a, b, 0x44), _mm512_shuffle_f64x2(a, b, 0xEE));
  }
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i) {
    u[i] = op(_mm512_shuffle_f64x2(t[2 * i], t[2 * i + 1], 0x88), _mm512_shuffle_f64x2(t[2 * i], t[2 * i + 1], 0xDD));
  }
  return op(_mm512_shuffle_pd(u[0], u[1], 0x00), _mm512_shuffle_pd(u[0], u[1], 0xFF));
}

// The running (smallest score, its index, second smallest) of W rows, lane-wise. A NaN score
// changes nothing (min/max return their second operand then); equal scores make the second
// smallest equal to the smallest, so ties go to the exact distances.
template <typename T>
struct Best2 {
  typename Avx512<T>::V first, index, second;

  TLK_AVX512 void add(typename Avx512<T>::V s, typename Avx512<T>::V k) {
    using S = Avx512<T>;
    index = S::blend(S::lt(s, first), index, k);
    second = S::min(S::max(first, s), second);
    first = S::min(s, first);
  }
  // the pair of two disjoint index sets (an exact tie of the smallest scores leaves second ==
  // first, so the tie goes to the exact distances and the index kept does not matter)
  TLK_AVX512 void merge(const Best2& o) {
    using S = Avx512<T>;
    index = S::blend(S::lt(o.first, first), index, o.index);
    second = S::min(S::max(first, o.first), S::min(second, o.second));
    first = S::min(first, o.first);
  }
};

// The epilogue of one chunk from the TRANSPOSED GEMM block gt (M·K, rows), leading dimension
// e.ldg (padded so that the column walk does not hit one L1 set): W rows per vector, centroids
// along the loop, one pass over the block. No data-dependent branch per row: each lane keeps
// its smallest score, that score's index and the second smallest (four sets over k mod 4 break
// the dependency chains). A row whose second smallest score lies above the band of the smallest
// has exactly one score in the band: the label. Other rows (ties, near-ties, NaN) go to the exact
// distances of resolve_band, as in the row kernels: the labels are identical. The row norms of
// the band and the winners' exact distances are reduced W rows at a time. ChunkEpilogue.g
// points at gt here.
template <typename T>
TLK_AVX512_TARGET int64_t epilogue_avx512_t(const ChunkEpilogue<T>& e) {
  using S = Avx512<T>;
  constexpr int64_t W = S::W;
  using V = typename S::V;
  const int64_t K = e.K, D = e.D, rows = e.rows, ld = e.ldg;
  const V inf = S::set1(std::numeric_limits<T>::infinity()), zero = S::zero();
  int64_t bad = std::numeric_limits<int64_t>::max();
  alignas(64) T thr[W], label_t[W], d2[W];
  V part[W];
  for (int64_t q = 0; q < e.M; ++q) {
    const int64_t p = e.p0 + q;
    const int64_t cp = e.c_shared ? 0 : p;
    const T* bq = e.b + cp * K;
    const T* Cq = e.C + cp * K * D;
    const T* gq = e.g + q * K * ld;
    for (int64_t i0 = 0; i0 < rows; i0 += W) {
      const int nr = static_cast<int>(std::min<int64_t>(W, rows - i0));
      const auto lanes = nr == W ? static_cast<typename S::M>(~0u) : S::tail(nr);
      const T* x0 = e.x + i0 * D;
      for (int r = 0; r < W; ++r) part[r] = r < nr ? sq_partials<T>(x0 + r * D, nullptr, D) : zero;
      const V band = S::add(S::set1(e.band_base[cp]), S::mul(S::set1(e.band_slope[cp]), S::sqrt(reduce_rows(part, AddOp{}))));
      Best2<T> b0{inf, zero, inf}, b1 = b0, b2 = b0, b3 = b0;
      V k0 = zero, k1 = S::set1(T(1)), k2 = S::set1(T(2)), k3 = S::set1(T(3));
      const V four = S::set1(T(4)), one = S::set1(T(1));
      int64_t k = 0;
      for (; k + 4 <= K; k += 4) {
        b0.add(S::add(S::set1(bq[k]), S::loadz(lanes, gq + k * ld + i0)), k0);
        b1.add(S::add(S::set1(bq[k + 1]), S::loadz(lanes, gq + (k + 1) * ld + i0)), k1);
        b2.add(S::add(S::set1(bq[k + 2]), S::loadz(lanes, gq + (k + 2) * ld + i0)), k2);
        b3.add(S::add(S::set1(bq[k + 3]), S::loadz(lanes, gq + (k + 3) * ld + i0)), k3);
        k0 = S::add(k0, four);
        k1 = S::add(k1, four);
        k2 = S::add(k2, four);
        k3 = S::add(k3, four);
      }
      for (; k < K; ++k) {
        b0.add(S::add(S::set1(bq[k]), S::loadz(lanes, gq + k * ld + i0)), k0);
        k0 = S::add(k0, one);
      }
      b0.merge(b1);
      b2.merge(b3);
      b0.merge(b2);
      const V vthr = S::add(b0.first, band);
      const auto several = static_cast<unsigned>(~S::gt(b0.second, vthr) & lanes);  // or none: NaN
      S::store(thr, vthr);
      S::store(label_t, b0.index);
      int64_t label[W];
      for (int r = 0; r < W; ++r) {
        label[r] = static_cast<int64_t>(label_t[r]);
        part[r] = r < nr ? sq_partials<T>(x0 + r * D, Cq + label[r] * D, D) : zero;
      }
      S::store(d2, reduce_rows(part, AddOp{}));
      for (unsigned m = several; m != 0; m &= m - 1) {  // exact distances decide
        const int r = __builtin_ctz(m);
        const RowResult rr = resolve_band<T>(gq + i0 + r, ld, bq, K, x0 + r * D, Cq, D, thr[r],
                                             [](const T* u, const T* v, int64_t n) { return sqdist_avx512(u, v, n); });
        label[r] = rr.label;
        d2[r] = static_cast<T>(rr.dist2);
      }
      for (int r = 0; r < nr; ++r) store_result<T>(e, p, e.n0 + i0 + r, label[r], d2[r], bad);
    }
  }
  return bad;
}

// One centroid per problem: label 0 and the exact distance of every row, W rows reduced at once
// (the same sums as the epilogues' winner distances), no GEMM block. Rows outer, problems inner:
// one X shared by M problems (the k-means++ candidates) is read once.
template <typename T>
TLK_AVX512_TARGET int64_t single_centroid_avx512(const ChunkEpilogue<T>& e) {
  using S = Avx512<T>;
  constexpr int64_t W = S::W;
  const int64_t D = e.D;
  int64_t bad = std::numeric_limits<int64_t>::max();
  alignas(64) T d2[W];
  typename S::V part[W];
  for (int64_t i0 = 0; i0 < e.rows; i0 += W) {
    const int nr = static_cast<int>(std::min<int64_t>(W, e.rows - i0));
    const T* x0 = e.x + i0 * D;
    for (int64_t q = 0; q < e.M; ++q) {
      const int64_t p = e.p0 + q;
      const T* c = e.C + (e.c_shared ? 0 : p) * D;
      for (int r = 0; r < W; ++r) part[r] = r < nr ? sq_partials<T>(x0 + r * D, c, D) : S::zero();
      S::store(d2, reduce_rows(part, AddOp{}));
      for (int r = 0; r < nr; ++r) store_result<T>(e, p, e.n0 + i0 + r, 0, d2[r], bad);
    }
  }
  return bad;
}

// An AMD CPU (cpuid vendor "AuthenticAMD"): MKL's GEMM runs its AVX2 code there.
inline bool is_amd() {
  static const bool ok = __builtin_cpu_is("amd");
  return ok;
}

inline bool has_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return ok;
}

}  // namespace tlk::kmeans_cpu

#pragma GCC diagnostic pop
#undef TLK_AVX512
#undef TLK_AVX512_TARGET
#endif  // TLK_KMEANS_X86
