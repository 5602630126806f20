// AVX-512 kernels of the CPU k-means assignment (included by kmeans_simd.h after ChunkEpilogue):
// the epilogue of a transposed GEMM block. Same decisions as the AVX2 and scalar rows: the
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

template <typename T>
TLK_AVX512 inline T sqnorm_avx512(const T* x, int64_t D) {
  using S = Avx512<T>;
  typename S::V acc = S::zero();
  int64_t d = 0;
  for (; d + S::W <= D; d += S::W) {
    const auto v = S::load(x + d);
    acc = S::add(acc, S::mul(v, v));
  }
  if (d < D) {
    const auto v = S::loadz(S::tail(D - d), x + d);
    acc = S::add(acc, S::mul(v, v));
  }
  return S::reduce_add(acc);
}

// The epilogue of one chunk from the TRANSPOSED GEMM block gt (M·K, rows), leading dimension
// e.ldg (padded so that the column walk does not hit one L1 set): W rows per vector,
// centroids along the loop. No horizontal reduction and no data-dependent branch per row: the
// minimum, the band count and the index of a single in-band score are lane-wise. Four
// accumulator sets over k (k mod 4) break the dependency chains. The decisions are those of the
// row kernels (same scores b_k + g_k, same band, exact distances where more than one score is
// in the band), so the labels are identical. ChunkEpilogue.g points at gt here.
template <typename T>
TLK_AVX512_TARGET int64_t epilogue_avx512_t(const ChunkEpilogue<T>& e) {
  using S = Avx512<T>;
  constexpr int64_t W = S::W;
  using V = typename S::V;
  const int64_t K = e.K, D = e.D, rows = e.rows, ld = e.ldg;
  const V inf = S::set1(std::numeric_limits<T>::infinity()), one = S::set1(T(1)), zero = S::zero();
  int64_t bad = std::numeric_limits<int64_t>::max();
  alignas(64) T band[W], thr[W], cnt[W], only[W];
  for (int64_t q = 0; q < e.M; ++q) {
    const int64_t p = e.p0 + q;
    const int64_t cp = e.c_shared ? 0 : p;
    const T* bq = e.b + cp * K;
    const T* Cq = e.C + cp * K * D;
    const T* gq = e.g + q * K * ld;
    for (int64_t i0 = 0; i0 < rows; i0 += W) {
      const int64_t nr = std::min<int64_t>(W, rows - i0);
      const auto lanes = nr == W ? static_cast<typename S::M>(~0u) : S::tail(nr);
      for (int64_t r = 0; r < W; ++r) {
        band[r] = r < nr ? e.band_base[cp] + e.band_slope[cp] * std::sqrt(sqnorm_avx512(e.x + (i0 + r) * D, D)) : T(0);
      }
      V m0 = inf, m1 = inf, m2 = inf, m3 = inf;
      int64_t k = 0;
      for (; k + 4 <= K; k += 4) {
        m0 = S::min(S::add(S::set1(bq[k]), S::loadz(lanes, gq + k * ld + i0)), m0);
        m1 = S::min(S::add(S::set1(bq[k + 1]), S::loadz(lanes, gq + (k + 1) * ld + i0)), m1);
        m2 = S::min(S::add(S::set1(bq[k + 2]), S::loadz(lanes, gq + (k + 2) * ld + i0)), m2);
        m3 = S::min(S::add(S::set1(bq[k + 3]), S::loadz(lanes, gq + (k + 3) * ld + i0)), m3);
      }
      for (; k < K; ++k) m0 = S::min(S::add(S::set1(bq[k]), S::loadz(lanes, gq + k * ld + i0)), m0);
      const V vthr = S::add(S::min(S::min(m0, m1), S::min(m2, m3)), S::load(band));
      V c0 = zero, c1 = zero, c2 = zero, c3 = zero, o0 = zero, o1 = zero, o2 = zero, o3 = zero;
#define TLK_BAND_STEP(C, O, KK)                                                                 \
  {                                                                                             \
    const auto hit = S::le(S::add(S::set1(bq[KK]), S::loadz(lanes, gq + (KK) * ld + i0)), vthr) & lanes; \
    C = S::madd(C, hit, C, one);                                                                \
    O = S::blend(hit, O, S::set1(static_cast<T>(KK)));                                          \
  }
      for (k = 0; k + 4 <= K; k += 4) {
        TLK_BAND_STEP(c0, o0, k)
        TLK_BAND_STEP(c1, o1, k + 1)
        TLK_BAND_STEP(c2, o2, k + 2)
        TLK_BAND_STEP(c3, o3, k + 3)
      }
      for (; k < K; ++k) TLK_BAND_STEP(c0, o0, k)
#undef TLK_BAND_STEP
      // with exactly one hit in all, the three sets without it hold index 0: the sum is the hit
      S::store(cnt, S::add(S::add(c0, c1), S::add(c2, c3)));
      S::store(only, S::add(S::add(o0, o1), S::add(o2, o3)));
      S::store(thr, vthr);
      for (int64_t r = 0; r < nr; ++r) {
        const int64_t n = e.n0 + i0 + r;
        const T* x = e.x + (i0 + r) * D;
        int64_t label;
        T d2;
        if (cnt[r] == T(1)) {
          label = static_cast<int64_t>(only[r]);
          d2 = sqdist_avx512(x, Cq + label * D, D);
        } else {  // several scores within the band (or none: NaN): exact distances decide
          const RowResult rr = resolve_band<T>(gq + i0 + r, ld, bq, K, x, Cq, D, thr[r],
                                               [](const T* u, const T* v, int64_t n) { return sqdist_avx512(u, v, n); });
          label = rr.label;
          d2 = static_cast<T>(rr.dist2);
        }
        e.labels[p * e.N + n] = label;
        e.dist2[p * e.N + n] = d2;
        if (!std::isfinite(d2) && p * e.N + n < bad) bad = p * e.N + n;
      }
    }
  }
  return bad;
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
