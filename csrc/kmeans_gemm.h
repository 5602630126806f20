// The k-means assignment on a vendor GEMM, for the backends that run kernels/kmeans.cuh (CUDA:
// cuBLAS / cuBLASLt on the current stream, tensor cores when torch allows TF32; the emulator: the
// CPU BLAS, optionally coarsened to TF32 / bf16 inputs). Per chunk of rows one GEMM gives the
// transposed score block G = (−2C')·(X − v)ᵀ (cols × rows), and kernels::kmeans_scores (device
// code) forms the scores b' + G, takes their minimum and rescores exactly inside the rounding
// band, the decisions of kmeans_assign_kernel: labels are the truly nearest centroids, as on the
// CPU.
//
// The band must cover the GEMM's precision. A GEMM whose inputs are rounded to a unit u (TF32:
// truncation to 10 explicit bits, u = 2⁻¹⁰; bf16: u = 2⁻⁷ taken for truncation) with exact
// products and float32 accumulation that may truncate (tensor cores; Fasi, Higham, Mikaitis and
// Pranesh 2021) computes x·c' within
//   ε·‖x‖·‖c'‖,   ε = 2u + u² + γ(n)·(1 + u)²,   γ(n) = n·2⁻²³ / (1 − n·2⁻²³)
// over n = D terms; the bf16x3 split (x ≈ x_hi + x_lo, three bf16 products, the CPU AMX path's)
// has ε = 3.1·u² + 1.05·γ(3D + 2) with u = 2⁻⁸. A score b + G carries twice that (G = −2 x·c'),
// and a comparison of two scores the sum of two errors: the band's slope grows by 4·ε·max‖c'‖
// per unit of ‖x‖ (docs/gpu.md, "k-means assignment on the vendor GEMM"). IEEE float32 / float64
// GEMMs keep the band of shift_centroids (ε = 0 here). The GEMM multiplies x − v (v the mean of
// the data set's centroids) rather than x, so ‖x − v‖ stands for ‖x‖ (kmeans_centred_scores):
// the band no longer grows with the data's distance from the origin.
//
// The Runner adds to kmeans_device.h's:
//   Runner::gemm(out, a, b)                 out = a·b, out float32/float64; a, b float32/64 or bf16
//   Runner::gemm_precision(dtype)           the KMeansGemmPrecision its GEMM runs dtype at
//   Runner::scores<T>(...)                  kernels::kmeans_scores
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "kmeans.h"

namespace tlk {

// What a GEMM's float32 products are computed at (float64: always Ieee).
enum class KMeansGemmPrecision { Ieee, Tf32, Bf16, Bf16x3 };

inline const char* kmeans_gemm_precision_name(KMeansGemmPrecision p) {
  switch (p) {
    case KMeansGemmPrecision::Ieee: return "ieee";
    case KMeansGemmPrecision::Tf32: return "tf32";
    case KMeansGemmPrecision::Bf16: return "bf16";
    case KMeansGemmPrecision::Bf16x3: return "bf16x3";
  }
  return "?";
}

// The coarser of two precisions (Bf16 coarsest, Ieee finest; Bf16x3 between Tf32 and Ieee).
inline KMeansGemmPrecision kmeans_coarser(KMeansGemmPrecision a, KMeansGemmPrecision b) {
  auto rank = [](KMeansGemmPrecision p) {
    switch (p) {
      case KMeansGemmPrecision::Ieee: return 0;
      case KMeansGemmPrecision::Bf16x3: return 1;
      case KMeansGemmPrecision::Tf32: return 2;
      case KMeansGemmPrecision::Bf16: return 3;
    }
    return 3;
  };
  return rank(a) >= rank(b) ? a : b;
}

// ε of the header comment: |computed x·c' − x·c'| ≤ ε·‖x‖·‖c'‖ for a float32 GEMM over D terms.
inline double kmeans_gemm_epsilon(KMeansGemmPrecision p, int64_t D) {
  auto gamma = [](double n) {
    const double nu = n * std::ldexp(1.0, -23);  // 2·eps32: accumulation that may truncate
    return nu / (1.0 - std::min(nu, 0.5));
  };
  const double d = static_cast<double>(D);
  switch (p) {
    case KMeansGemmPrecision::Ieee: return 0.0;
    case KMeansGemmPrecision::Tf32: {
      const double u = std::ldexp(1.0, -10);
      return 2.0 * u + u * u + gamma(d) * (1.0 + u) * (1.0 + u);
    }
    case KMeansGemmPrecision::Bf16: {
      const double u = std::ldexp(1.0, -7);
      return 2.0 * u + u * u + gamma(d) * (1.0 + u) * (1.0 + u);
    }
    case KMeansGemmPrecision::Bf16x3: {
      const double u = std::ldexp(1.0, -8);
      return 3.1 * u * u + 1.05 * gamma(3.0 * d + 2.0);
    }
  }
  return 0.0;
}

// The GEMM path multiplies x − v by c' instead of x, v the mean of the centroids of the problems
// reading a data set (near the data's centre once the centroids are): its error then scales
// with ‖x − v‖, the data's spread, not with ‖x‖, which grows with the data's distance from the
// origin. The score keeps its value: b_k − 2 x·c'_k = b'_k − 2 (x − v)·c'_k with b'_k = b_k − 2 v·c'_k.
struct CentredScores {
  at::Tensor V;      // (Px, D) contiguous, dtype of X: v of each data set
  at::Tensor b;      // (Pc, K) contiguous: b'
  at::Tensor base;   // (Pc,) contiguous
  at::Tensor slope;  // (Pc,) contiguous, per unit of ‖x − v‖
};

// b', and the band of shift_centroids formed from b' (|b'| rounding) and widened by
// 4·ε·max‖c'‖ per unit of ‖x − v‖ (a 1 % margin for the float32 norm) and by absolute terms for
// flushed denormals (inputs read as zero, each of the ≤ 3D + 2 additions flushing ≤ 2⁻¹²⁶), as
// the CPU AMX path's band. sc = shift_centroids(a.C).
inline CentredScores kmeans_centred_scores(const KMeansAssignArgs& a, const ShiftedCentroids& sc,
                                           KMeansGemmPrecision p) {
  const auto st = a.C.scalar_type();
  const int64_t D = a.D;
  const at::Tensor Cd = a.C.to(at::kDouble);
  const at::Tensor m = Cd.mean(-2, /*keepdim=*/true);
  const at::Tensor Csd = sc.Cs.to(at::kDouble);
  // v per data set, rounded to the dtype the GEMM reads; b' from that rounded v
  const at::Tensor v = a.c_shared ? Cd.mean(0, true).expand({a.Px, D})
                                  : Cd.reshape({a.Px, a.per_x() * a.K, D}).mean(1);
  const at::Tensor V = v.to(st).contiguous();
  const at::Tensor Vd = V.to(at::kDouble);
  const at::Tensor vp = a.c_shared ? Vd.narrow(0, 0, 1) : Vd.repeat_interleave(a.per_x(), 0).unsqueeze(1);
  const at::Tensor bd = Csd.square().sum(-1) + 2.0 * (Csd * (m - vp)).sum(-1);  // (K,) or (P, K)
  const double e = st == at::kFloat ? 1.1920928955078125e-07 : 2.220446049250313e-16;
  const double f = 8.0 * static_cast<double>(D + 2) * e;
  const double eps = kmeans_gemm_epsilon(p, D);
  const double tiny = eps > 0.0 ? std::ldexp(1.0, -126) : 0.0, rd = std::sqrt(static_cast<double>(D));
  const at::Tensor maxc = Csd.square().sum(-1).sqrt().amax(-1).reshape({-1});
  const at::Tensor base = bd.abs().amax(-1).reshape({-1}) * f + (4.0 * (3.0 * D + 2.0) + 8.0 * rd * maxc) * tiny;
  const at::Tensor slope = maxc * (2.0 * f + 4.04 * eps) + 4.0 * rd * tiny;
  return {V, bd.to(st).contiguous(), base.to(st).contiguous(), slope.to(st).contiguous()};
}

// The coarsest precision torch lets a float32 matmul of `backend` use: TF32 where
// allow_tf32 / float32_matmul_precision('high') / fp32_precision = 'tf32', bf16 where 'medium' or
// 'bf16' (taken as bf16 inputs, the coarser of the two readings).
inline KMeansGemmPrecision kmeans_torch_matmul_precision(at::Float32Backend backend) {
  auto& ctx = at::globalContext();
  KMeansGemmPrecision p = KMeansGemmPrecision::Ieee;
  switch (ctx.float32MatmulPrecision()) {
    case at::Float32MatmulPrecision::HIGHEST: break;
    case at::Float32MatmulPrecision::HIGH: p = KMeansGemmPrecision::Tf32; break;
    case at::Float32MatmulPrecision::MEDIUM: p = KMeansGemmPrecision::Bf16; break;
  }
  switch (ctx.float32Precision(backend, at::Float32Op::MATMUL)) {
    case at::Float32Precision::TF32: p = kmeans_coarser(p, KMeansGemmPrecision::Tf32); break;
    case at::Float32Precision::BF16: p = kmeans_coarser(p, KMeansGemmPrecision::Bf16); break;
    default: break;
  }
  if (backend == at::Float32Backend::CUDA && ctx.allowTF32CuBLAS()) p = kmeans_coarser(p, KMeansGemmPrecision::Tf32);
  return p;
}

enum class KMeansGemmMode { Auto, Simt, Gemm, Bf16x3 };

// TLK_KMEANS_GEMM=auto|simt|gemm|bf16x3 (default auto), read at every call: 'gemm' is the vendor
// GEMM in the input dtype at the precision torch allows, 'bf16x3' the three-product bf16 split for
// float32 (float64 takes 'gemm'), 'simt' the fused SIMT kernel, 'auto' the SIMT kernel below
// kKMeansSimtMaxFlops and 'gemm' above.
inline KMeansGemmMode kmeans_gemm_mode() {
  const char* e = std::getenv("TLK_KMEANS_GEMM");
  if (e == nullptr || *e == '\0' || std::strcmp(e, "auto") == 0) return KMeansGemmMode::Auto;
  if (std::strcmp(e, "simt") == 0) return KMeansGemmMode::Simt;
  if (std::strcmp(e, "gemm") == 0) return KMeansGemmMode::Gemm;
  if (std::strcmp(e, "bf16x3") == 0) return KMeansGemmMode::Bf16x3;
  TORCH_CHECK_VALUE(false, "TLK_KMEANS_GEMM must be 'auto', 'simt', 'gemm' or 'bf16x3', got '", e, "'");
  return KMeansGemmMode::Auto;
}

// Below this many score FLOPs (2·P·N·K·D) the fused SIMT kernel runs: one launch where the GEMM
// path needs two per chunk, and both are bound by launch latency at that size (docs/gpu.md).
constexpr double kKMeansSimtMaxFlops = double(int64_t(1) << 22);
// Elements of a chunk (its score block and its rows of X) in flight: 16 MiB in float32, under the
// L2 of an A100 (40 MB) or H100 (50 MB), so the epilogue reads the block the GEMM just wrote, and
// the rows it rescores, from L2, and the next chunk's GEMM overwrites the block there (docs/gpu.md).
constexpr int64_t kKMeansGemmChunkElems = int64_t(1) << 22;

inline bool kmeans_use_gemm(KMeansGemmMode mode, const KMeansAssignArgs& a) {
  if (mode == KMeansGemmMode::Auto) {
    return 2.0 * double(a.P) * double(a.N) * double(a.K) * double(a.D) >= kKMeansSimtMaxFlops;
  }
  return mode != KMeansGemmMode::Simt;
}

// TLK_KMEANS_GEMM_CHUNK overrides the elements in flight (tests cross chunk boundaries).
inline int64_t kmeans_gemm_chunk_elems() {
  const char* e = std::getenv("TLK_KMEANS_GEMM_CHUNK");
  if (e == nullptr || *e == '\0') return kKMeansGemmChunkElems;
  char* end = nullptr;
  const long long v = std::strtoll(e, &end, 10);
  TORCH_CHECK_VALUE(end != e && *end == '\0' && v > 0, "TLK_KMEANS_GEMM_CHUNK must be a positive integer, got '", e,
                    "'");
  return static_cast<int64_t>(v);
}

// [v_hi, v_hi, v_lo] (first) or [v_hi, v_lo, v_hi] (second) along the last dimension, bf16: the
// operands of one GEMM over 3D terms whose float32 result is hi·hi + hi·lo + lo·hi.
inline at::Tensor kmeans_bf16x3_operand(const at::Tensor& v, bool first) {
  const at::Tensor hi = v.to(at::kBFloat16);
  const at::Tensor lo = (v - hi.to(v.scalar_type())).to(at::kBFloat16);
  return first ? at::cat({hi, hi, lo}, -1) : at::cat({hi, lo, hi}, -1);
}

// labels / dist2 (P, N) of a checked assignment on the GEMM path; sc = shift_centroids(a.C).
// a: N, P > 0.
template <typename Runner>
void kmeans_assign_gemm(const Runner& run, const KMeansAssignArgs& a, const ShiftedCentroids& sc,
                        KMeansGemmMode mode, at::Tensor& labels, at::Tensor& dist2) {
  const int64_t M = a.per_x(), K = a.K, D = a.D, N = a.N;
  const at::ScalarType st = a.X.scalar_type();
  const bool split = mode == KMeansGemmMode::Bf16x3 && st == at::kFloat;
  const KMeansGemmPrecision prec =
      st == at::kDouble ? KMeansGemmPrecision::Ieee
                        : (split ? KMeansGemmPrecision::Bf16x3 : run.gemm_precision(st));
  const CentredScores cs = kmeans_centred_scores(a, sc, prec);
  const at::Tensor Cm2 = sc.Cs * -2;  // exact scaling by a power of two: G = −2 x·c'
  const at::Tensor Cop = split ? kmeans_bf16x3_operand(Cm2, false) : Cm2;
  const int64_t cols = a.c_shared ? K : M * K;
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(N, kmeans_gemm_chunk_elems() / (cols + D)));
  at::Tensor gbuf = at::empty({cols * chunk}, a.X.options());
  AT_DISPATCH_FLOATING_TYPES(st, "kmeans_assign_gemm", [&] {
    for (int64_t g = 0; g < a.Px; ++g) {
      const at::Tensor Cg = a.c_shared ? Cop : Cop.narrow(0, g * M, M).reshape({cols, Cop.size(-1)});
      for (int64_t n0 = 0; n0 < N; n0 += chunk) {
        const int64_t rows = std::min(chunk, N - n0);
        const at::Tensor xs = a.X.select(0, g).narrow(0, n0, rows) - cs.V.select(0, g);
        at::Tensor G = gbuf.narrow(0, 0, cols * rows).view({cols, rows});
        run.gemm(G, Cg, (split ? kmeans_bf16x3_operand(xs, true) : xs).t());
        run.template scores<scalar_t>(G.const_data_ptr<scalar_t>(), a.X.const_data_ptr<scalar_t>(),
                                      cs.V.const_data_ptr<scalar_t>(), cs.b.const_data_ptr<scalar_t>(),
                                      a.C.const_data_ptr<scalar_t>(), cs.base.const_data_ptr<scalar_t>(),
                                      cs.slope.const_data_ptr<scalar_t>(), labels.data_ptr<int64_t>(),
                                      dist2.data_ptr<scalar_t>(), g * M, M, n0, rows, N, K, D, M, a.c_shared);
      }
    }
  });
}

}  // namespace tlk
