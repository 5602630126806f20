// Host side of the per-sample gradient products for the backends that run kernels/ghost.cuh:
// CUDA (csrc/cuda/ghost_cuda.cpp) and the emulator (csrc/emu/ghost_emu.cpp). Both call these
// templates with a Runner that launches the same device code with the same plans, so the
// emulated path is the CUDA path:
//   Runner::check_device(t, name)                       refuses tensors the backend cannot run
//   Runner::dot<T>(A, D, G, part, out, B, T, I, O, V)   kernels::ghost_dot
//   Runner::gram<T>(A1, D1, A2, D2, out, B1, T1, B2, T2, I, O)
//   Runner::norm_tiles<T>(A, D, out, B, T, I, O)
//   Runner::clip<T>(alpha, stride, sorted, order, s, B, lr)
// GEMM-shaped work of more than kGhostSimtMaxFlops (and all float16 / bfloat16 work) goes to the
// vendor GEMM followed by our reductions (ghost_gemm.h; the Runner's gemm / bmm are the only
// calls that differ between CUDA and the emulator); smaller work runs the fused SIMT kernels,
// which take float32 copies of float16 / bfloat16 inputs. TLK_GHOST_GEMM=vendor|simt forces a
// path. Results are cast back to the input dtype.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>

#include "ghost.h"
#include "ghost_gemm.h"

namespace tlk {

// The compute-dtype result, returned as is or cast to the output dtype.
inline at::Tensor ghost_finish(const at::Tensor& acc, at::ScalarType out_dtype) {
  return acc.scalar_type() == out_dtype ? acc : acc.to(out_dtype);
}

template <typename Runner>
at::Tensor ghost_dot_device(const Runner& run, const at::Tensor& A, const at::Tensor& D, const at::Tensor& G) {
  run.check_device(A, "A");
  GhostDotArgs a = check_ghost_dot(A, D, G, /*keep_dtype=*/true);
  const at::ScalarType ct = ghost_compute_dtype(a.A.scalar_type());
  at::Tensor acc;
  if (a.B * a.T == 0 || a.I == 0 || a.O == 0 || a.V == 0) {
    acc = at::zeros({a.B, a.V}, a.A.options().dtype(ct));
  } else if (ghost_use_vendor_gemm(2.0 * a.B * a.T * a.I * a.O * a.V, a.A.scalar_type())) {
    acc = ghost_dot_gemm(run, a);
  } else {
    a.A = ghost_prepare(a.A);
    a.D = ghost_prepare(a.D);
    a.G = ghost_prepare(a.G);
    acc = new_output({a.B, a.V}, a.A.options());
    const int64_t splits = run.dot_splits(a.B * a.T, a.O, a.V);
    at::Tensor part = at::empty({a.V * splits * a.B * a.T}, a.A.options());
    AT_DISPATCH_FLOATING_TYPES(acc.scalar_type(), "ghost_dot_device", [&] {
      run.template dot<scalar_t>(a.A.const_data_ptr<scalar_t>(), a.D.const_data_ptr<scalar_t>(),
                                 a.G.const_data_ptr<scalar_t>(), part.data_ptr<scalar_t>(),
                                 acc.data_ptr<scalar_t>(), a.B, a.T, a.I, a.O, a.V);
    });
  }
  return ghost_finish(a.multi ? acc : acc.view({a.B}), a.out_dtype);
}

template <typename Runner>
at::Tensor ghost_gram_device(const Runner& run, const at::Tensor& A1, const at::Tensor& D1, const at::Tensor& A2,
                             const at::Tensor& D2) {
  run.check_device(A1, "A1");
  GhostGramArgs a = check_ghost_gram(A1, D1, A2, D2, /*keep_dtype=*/true);
  const at::ScalarType ct = ghost_compute_dtype(a.A1.scalar_type());
  at::Tensor acc;
  if (a.B1 == 0 || a.B2 == 0 || a.T1 == 0 || a.T2 == 0) {
    acc = at::zeros({a.B1, a.B2}, a.A1.options().dtype(ct));
  } else if (ghost_use_vendor_gemm(2.0 * a.B1 * a.T1 * a.B2 * a.T2 * (a.I + a.O), a.A1.scalar_type())) {
    acc = ghost_gram_gemm(run, a);
  } else {
    a.A1 = ghost_prepare(a.A1);
    a.D1 = ghost_prepare(a.D1);
    a.A2 = ghost_prepare(a.A2);
    a.D2 = ghost_prepare(a.D2);
    acc = new_output({a.B1, a.B2}, a.A1.options());
    AT_DISPATCH_FLOATING_TYPES(acc.scalar_type(), "ghost_gram_device", [&] {
      run.template gram<scalar_t>(a.A1.const_data_ptr<scalar_t>(), a.D1.const_data_ptr<scalar_t>(),
                                  a.A2.const_data_ptr<scalar_t>(), a.D2.const_data_ptr<scalar_t>(),
                                  acc.data_ptr<scalar_t>(), a.B1, a.T1, a.B2, a.T2, a.I, a.O);
    });
  }
  return ghost_finish(acc, a.out_dtype);
}

template <typename Runner>
at::Tensor ghost_norm_device(const Runner& run, const at::Tensor& A, const at::Tensor& D) {
  run.check_device(A, "A");
  GhostNormArgs a = check_ghost_norm(A, D, /*keep_dtype=*/true);
  const at::ScalarType ct = ghost_compute_dtype(a.A.scalar_type());
  const double norm_flops = ghost_norm_materialise(a.T, a.I, a.O) ? 2.0 * a.B * a.T * a.I * a.O
                                                                  : 2.0 * a.B * a.T * a.T * (a.I + a.O);
  if (a.B == 0 || a.T == 0 || a.I == 0 || a.O == 0) {
    return ghost_finish(at::zeros({a.B}, a.A.options().dtype(ct)), a.out_dtype);
  }
  if (a.T > 1 && ghost_use_vendor_gemm(norm_flops, a.A.scalar_type())) {
    return ghost_finish(ghost_norm_gemm(run, a), a.out_dtype);
  }
  a.A = ghost_prepare(a.A);
  a.D = ghost_prepare(a.D);
  at::Tensor acc;
  if (ghost_norm_materialise(a.T, a.I, a.O)) {
    acc = new_output({a.B}, a.A.options());
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(a.B, (int64_t(1) << 22) / (a.I * a.O)));
    for (int64_t b0 = 0; b0 < a.B; b0 += chunk) {
      const int64_t n = std::min(chunk, a.B - b0);
      at::Tensor q = at::bmm(a.D.narrow(0, b0, n).transpose(1, 2), a.A.narrow(0, b0, n));  // (n, O, I)
      acc.narrow(0, b0, n).copy_(q.square().sum({1, 2}));
    }
  } else {
    acc = new_output({a.B}, a.A.options());
    AT_DISPATCH_FLOATING_TYPES(acc.scalar_type(), "ghost_norm_device", [&] {
      run.template norm_tiles<scalar_t>(a.A.const_data_ptr<scalar_t>(), a.D.const_data_ptr<scalar_t>(),
                                        acc.data_ptr<scalar_t>(), a.B, a.T, a.I, a.O);
    });
  }
  return ghost_finish(acc, a.out_dtype);
}

template <typename Runner>
void clip_update_device(const Runner& run, at::Tensor& alpha, const at::Tensor& index, const at::Tensor& s,
                        double lr) {
  run.check_device(alpha, "alpha");
  ClipUpdateArgs c = check_clip_update(alpha, index, s, lr);
  const int64_t B = index.size(0);
  if (B == 0) return;
  AT_DISPATCH_FLOATING_TYPES(alpha.scalar_type(), "clip_update_device", [&] {
    run.template clip<scalar_t>(alpha.data_ptr<scalar_t>(), alpha.stride(0), c.sorted_index.const_data_ptr<int64_t>(),
                                c.order.const_data_ptr<int64_t>(), c.s.const_data_ptr<scalar_t>(), B,
                                static_cast<scalar_t>(lr));
  });
}

}  // namespace tlk
