// The per-sample gradient products on a vendor GEMM, for the backends that run kernels/ghost.cuh
// (CUDA: cuBLAS / cuBLASLt on the current stream; the emulator: the CPU BLAS). The GEMM-shaped
// work (A·Gᵀ, D1·D2ᵀ, A1·A2ᵀ, Dᵀ·A, D·Dᵀ, A·Aᵀ) goes through Runner::gemm / Runner::bmm in the
// input dtype with a float32 (float64) result, chunked so that the GEMM result in flight stays
// bounded; our own kernels then reduce it (ghost_segdot, ghost_pair_reduce, ghost_dot_finish),
// the structure of the CPU backend (csrc/cpu/ghost_cpu.cpp). The Runner adds to ghost_device.h's:
//   Runner::gemm(out, a, b)   out = a·b, out float32/float64, a and b in the input dtype
//   Runner::bmm(out, a, b)    the batched form
//   Runner::segdot<T>(X, Y, out, P, L, V, out_stride)   kernels::ghost_segdot
//   Runner::pair_reduce<T>(DD, AA, out, nr, nc, r0, c0, T1, T2, B2)
//   Runner::dot_finish<T>(rd, out, B, T, V)            kernels ghost_dot_finish with one split
// Everything but Runner::gemm / bmm runs under the emulator exactly as on the GPU.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "ghost.h"

namespace tlk {

// GEMM result elements in flight (64 MiB in float32): large enough that cuBLAS runs at its
// large-matrix rate, small beside a GPU's memory.
constexpr int64_t kGhostGemmChunkElems = int64_t(1) << 24;
// Row / column tile of ghost_gram on the vendor GEMM (two tiles of kGhostGemmTile² in flight).
constexpr int64_t kGhostGemmTile = 2048;
// Below this many GEMM FLOPs the fused SIMT kernels run instead: at that size both are bound by
// launch latency and the fused kernel needs one launch where the GEMM path needs two or three.
constexpr double kGhostSimtMaxFlops = double(int64_t(1) << 22);

// TLK_GHOST_GEMM_CHUNK / TLK_GHOST_GEMM_TILE override the two sizes above (tests use small ones to
// cross chunk and tile boundaries inside a sample).
inline int64_t ghost_gemm_size(const char* name, int64_t dflt) {
  const char* e = std::getenv(name);
  if (e == nullptr || *e == '\0') return dflt;
  char* end = nullptr;
  const long long v = std::strtoll(e, &end, 10);
  TORCH_CHECK_VALUE(end != e && *end == '\0' && v > 0, name, " must be a positive integer, got '", e, "'");
  return static_cast<int64_t>(v);
}
inline int64_t ghost_gemm_chunk_elems() { return ghost_gemm_size("TLK_GHOST_GEMM_CHUNK", kGhostGemmChunkElems); }
inline int64_t ghost_gemm_tile() { return ghost_gemm_size("TLK_GHOST_GEMM_TILE", kGhostGemmTile); }

enum class GhostGemmMode { Auto, Vendor, Simt };

// TLK_GHOST_GEMM=vendor|simt|auto (default auto) picks the path of the CUDA and emulator backends.
inline GhostGemmMode ghost_gemm_mode() {
  const char* e = std::getenv("TLK_GHOST_GEMM");
  if (e == nullptr || *e == '\0' || std::strcmp(e, "auto") == 0) return GhostGemmMode::Auto;
  if (std::strcmp(e, "vendor") == 0) return GhostGemmMode::Vendor;
  if (std::strcmp(e, "simt") == 0) return GhostGemmMode::Simt;
  TORCH_CHECK_VALUE(false, "TLK_GHOST_GEMM must be 'auto', 'vendor' or 'simt', got '", e, "'");
  return GhostGemmMode::Auto;
}

// Whether work of `flops` GEMM FLOPs in `dtype` takes the vendor GEMM. float16 / bfloat16 always
// do (the SIMT kernels would need float32 copies of the inputs).
inline bool ghost_use_vendor_gemm(double flops, at::ScalarType dtype) {
  switch (ghost_gemm_mode()) {
    case GhostGemmMode::Vendor: return true;
    case GhostGemmMode::Simt: return false;
    case GhostGemmMode::Auto: break;
  }
  return dtype == at::kHalf || dtype == at::kBFloat16 || flops >= kGhostSimtMaxFlops;
}

// A tile of `tile` rows, rounded down to whole samples when a sample is shorter than the tile.
inline int64_t ghost_sample_aligned_tile(int64_t T, int64_t tile) {
  return T >= tile || T == 0 ? tile : (tile / T) * T;
}

// s (B, V) in the compute dtype. a: checked with keep_dtype; B·T, I, O, V > 0.
template <typename Runner>
at::Tensor ghost_dot_gemm(const Runner& run, const GhostDotArgs& a) {
  const at::ScalarType ct = ghost_compute_dtype(a.A.scalar_type());
  const int64_t rows = a.B * a.T;
  const bool side_a = a.O <= a.I;  // the narrower GEMM result: (rows, V·O) or (rows, V·I)
  const int64_t W = side_a ? a.O : a.I;
  const at::Tensor X = side_a ? a.A.view({rows, a.I}) : a.D.view({rows, a.O});
  const at::Tensor Y = ghost_prepare(side_a ? a.D.view({rows, a.O}) : a.A.view({rows, a.I}));
  const at::Tensor Wt = side_a ? a.G.view({a.V * a.O, a.I}).t() : a.G.permute({1, 0, 2}).reshape({a.O, a.V * a.I});
  const int64_t VW = a.V * W;
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(rows, ghost_gemm_chunk_elems() / VW));
  const auto opts = a.A.options().dtype(ct);
  at::Tensor H = at::empty({chunk, VW}, opts);
  at::Tensor rd = at::empty({a.V, rows}, opts);  // row-dots, (V, B·T)
  at::Tensor acc = new_output({a.B, a.V}, opts);
  AT_DISPATCH_FLOATING_TYPES(ct, "ghost_dot_gemm", [&] {
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t n = std::min(chunk, rows - r0);
      at::Tensor h = H.narrow(0, 0, n);
      run.gemm(h, X.narrow(0, r0, n), Wt);
      run.template segdot<scalar_t>(h.const_data_ptr<scalar_t>(), Y.const_data_ptr<scalar_t>() + r0 * W,
                                    rd.data_ptr<scalar_t>() + r0, n * a.V, W, a.V, rows);
    }
    run.template dot_finish<scalar_t>(rd.const_data_ptr<scalar_t>(), acc.data_ptr<scalar_t>(), a.B, a.T, a.V);
  });
  return acc;
}

// (B1, B2) in the compute dtype. a: checked with keep_dtype; B1·T1, B2·T2 > 0.
template <typename Runner>
at::Tensor ghost_gram_gemm(const Runner& run, const GhostGramArgs& a) {
  const at::ScalarType ct = ghost_compute_dtype(a.A1.scalar_type());
  const int64_t rows1 = a.B1 * a.T1, rows2 = a.B2 * a.T2;
  const at::Tensor A1 = a.A1.view({rows1, a.I}), D1 = a.D1.view({rows1, a.O});
  const at::Tensor A2 = a.A2.view({rows2, a.I}), D2 = a.D2.view({rows2, a.O});
  const int64_t tr = ghost_sample_aligned_tile(a.T1, ghost_gemm_tile());
  const int64_t tc = ghost_sample_aligned_tile(a.T2, ghost_gemm_tile());
  const auto opts = a.A1.options().dtype(ct);
  at::Tensor dd_buf = at::empty({std::min(tr, rows1) * std::min(tc, rows2)}, opts);
  at::Tensor aa_buf = at::empty_like(dd_buf);
  at::Tensor acc = at::zeros({a.B1, a.B2}, opts);
  AT_DISPATCH_FLOATING_TYPES(ct, "ghost_gram_gemm", [&] {
    for (int64_t r0 = 0; r0 < rows1; r0 += tr) {
      const int64_t nr = std::min(tr, rows1 - r0);
      for (int64_t c0 = 0; c0 < rows2; c0 += tc) {
        const int64_t nc = std::min(tc, rows2 - c0);
        at::Tensor dd = dd_buf.narrow(0, 0, nr * nc).view({nr, nc});
        at::Tensor aa = aa_buf.narrow(0, 0, nr * nc).view({nr, nc});
        run.gemm(dd, D1.narrow(0, r0, nr), D2.narrow(0, c0, nc).t());
        run.gemm(aa, A1.narrow(0, r0, nr), A2.narrow(0, c0, nc).t());
        run.template pair_reduce<scalar_t>(dd.const_data_ptr<scalar_t>(), aa.const_data_ptr<scalar_t>(),
                                           acc.data_ptr<scalar_t>(), nr, nc, r0, c0, a.T1, a.T2, a.B2);
      }
    }
  });
  return acc;
}

// (B,) in the compute dtype for T > 1: Σ Q_b² with Q_b = D_bᵀ A_b materialised (T·(I+O) > I·O),
// else Σ (D_b D_bᵀ) ⊙ (A_b A_bᵀ), for chunks of samples. a: checked with keep_dtype; B, I, O > 0.
template <typename Runner>
at::Tensor ghost_norm_gemm(const Runner& run, const GhostNormArgs& a) {
  const at::ScalarType ct = ghost_compute_dtype(a.A.scalar_type());
  const bool materialise = ghost_norm_materialise(a.T, a.I, a.O);
  const int64_t per = materialise ? a.I * a.O : a.T * a.T;
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(a.B, ghost_gemm_chunk_elems() / per));
  const auto opts = a.A.options().dtype(ct);
  at::Tensor acc = new_output({a.B}, opts);
  at::Tensor x_buf = materialise ? at::empty({chunk, a.O, a.I}, opts) : at::empty({chunk, a.T, a.T}, opts);
  at::Tensor y_buf = materialise ? x_buf : at::empty_like(x_buf);
  AT_DISPATCH_FLOATING_TYPES(ct, "ghost_norm_gemm", [&] {
    for (int64_t b0 = 0; b0 < a.B; b0 += chunk) {
      const int64_t n = std::min(chunk, a.B - b0);
      at::Tensor x = x_buf.narrow(0, 0, n), y = y_buf.narrow(0, 0, n);
      const at::Tensor An = a.A.narrow(0, b0, n), Dn = a.D.narrow(0, b0, n);
      if (materialise) {
        run.bmm(x, Dn.transpose(1, 2), An);
      } else {
        run.bmm(x, Dn, Dn.transpose(1, 2));
        run.bmm(y, An, An.transpose(1, 2));
      }
      run.template segdot<scalar_t>(x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
                                    acc.data_ptr<scalar_t>() + b0, n, per, 1, n);
    }
  });
  return acc;
}

}  // namespace tlk
