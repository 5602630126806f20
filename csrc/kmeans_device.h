// Host side of batched k-means for the backends that run kernels/kmeans.cuh: CUDA
// (csrc/cuda/kmeans_cuda.cpp) and the emulator (csrc/emu/kmeans_emu.cpp). Both call these
// templates with a Runner that launches the same device code with the same plans, so the
// emulated path is the CUDA path:
//   Runner::check_device(t, name)   refuses tensors the backend cannot run
//   Runner::assign<T>(...)          kernels::kmeans_assign
//   Runner::update<T>(...)          kernels::kmeans_update
//   Runner::update_ranges(N, P, K, D)  kernels::kmeans_update_ranges (the partials' row ranges)
// and kmeans_gemm.h's Runner::gemm / gemm_precision / scores for the assignment on a vendor GEMM
// (TLK_KMEANS_GEMM; the SIMT kernel below kKMeansSimtMaxFlops).
// The checks a kernel cannot raise (labels out of range, negative weights, non-finite results)
// are tensor reductions here (one device sync each); their messages are the CPU backend's.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <tuple>

#include "kmeans.h"
#include "kmeans_gemm.h"

namespace tlk {

namespace detail {
// Flat index of the first true element of a bool tensor, or -1.
inline int64_t first_true(const at::Tensor& mask) {
  if (!mask.any().item<bool>()) return -1;
  return mask.flatten().nonzero().select(1, 0).min().item<int64_t>();
}
}  // namespace detail

template <typename Runner>
std::tuple<at::Tensor, at::Tensor> kmeans_assign_device(const Runner& run, const at::Tensor& X, const at::Tensor& C) {
  run.check_device(X, "X");
  KMeansAssignArgs a = check_kmeans_assign(X, C);
  at::Tensor labels = new_output(a.out_sizes(), a.X.options().dtype(at::kLong));
  at::Tensor dist2 = new_output(a.out_sizes(), a.X.options());
  if (a.N == 0 || a.P == 0) return {labels, dist2};
  const ShiftedCentroids sc = shift_centroids(a.C);
  const KMeansGemmMode mode = kmeans_gemm_mode();
  if (kmeans_use_gemm(mode, a)) {
    kmeans_assign_gemm(run, a, sc, mode, labels, dist2);
  } else {
    AT_DISPATCH_FLOATING_TYPES(a.X.scalar_type(), "kmeans_assign_device", [&] {
      run.template assign<scalar_t>(a.X.const_data_ptr<scalar_t>(), sc.Cs.const_data_ptr<scalar_t>(),
                                    sc.b.const_data_ptr<scalar_t>(), a.C.const_data_ptr<scalar_t>(),
                                    sc.band_base.const_data_ptr<scalar_t>(), sc.band_slope.const_data_ptr<scalar_t>(),
                                    labels.data_ptr<int64_t>(), dist2.data_ptr<scalar_t>(), a.P, a.N, a.K, a.D,
                                    a.per_x(), a.c_shared);
    });
  }
  const int64_t bad = detail::first_true(at::isfinite(dist2).logical_not());
  TORCH_CHECK_VALUE(bad < 0, "X must be finite: the distance of row ", bad % a.N, " (problem ", bad / a.N,
                    ") to its centroid is not finite (NaN or inf in X, or values too large)");
  return {labels, dist2};
}

template <typename Runner>
std::tuple<at::Tensor, at::Tensor> kmeans_update_device(const Runner& run, const at::Tensor& X,
                                                        const at::Tensor& labels, int64_t K,
                                                        const c10::optional<at::Tensor>& weights) {
  run.check_device(X, "X");
  KMeansUpdateArgs a = check_kmeans_update(X, labels, K, weights);
  at::Tensor sums = new_output(a.sums_sizes(), a.X.options());
  at::Tensor counts = new_output(a.counts_sizes(), a.X.options());
  if (a.P == 0) return {sums, counts};
  if (a.N > 0) {
    const int64_t bl = detail::first_true((a.labels < 0).logical_or(a.labels >= K));
    TORCH_CHECK_VALUE(bl < 0, "labels must lie in [0, K) = [0, ", K, "), got ", a.labels.flatten()[bl].item<int64_t>(),
                      " at row ", bl % a.N, " (problem ", bl / a.N, ")");
    if (a.weights.defined()) {
      const int64_t bw = detail::first_true(at::isfinite(a.weights).logical_not().logical_or(a.weights < 0));
      TORCH_CHECK_VALUE(bw < 0, "weights must be finite and non-negative, got ",
                        a.weights.flatten()[bw].item<double>(), " at row ", bw % a.N);
    }
  }
  const int64_t R = run.update_ranges(a.N, a.P, K, a.D);
  at::Tensor part = at::empty({a.P * R * K * (a.D + 1)}, a.X.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(a.X.scalar_type(), "kmeans_update_device", [&] {
    run.template update<scalar_t>(a.X.const_data_ptr<scalar_t>(), a.labels.const_data_ptr<int64_t>(),
                                  a.weights.defined() ? a.weights.const_data_ptr<scalar_t>() : nullptr,
                                  part.data_ptr<double>(), sums.data_ptr<scalar_t>(), counts.data_ptr<scalar_t>(),
                                  a.P, a.N, K, a.D, R, a.per_x(), a.weights.defined() ? a.per_w() : 1);
  });
  TORCH_CHECK_VALUE(at::isfinite(sums).all().item<bool>(),
                    "X must be finite: the cluster sums hold NaN or inf (NaN or inf in X, or values too large)");
  return {sums, counts};
}

// kmeans_step on the device backends: the assignment kernel, then the update kernels on its labels.
template <typename Runner>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kmeans_step_device(const Runner& run, const at::Tensor& X,
                                                                              const at::Tensor& C,
                                                                              const c10::optional<at::Tensor>& weights) {
  run.check_device(X, "X");
  const KMeansStepArgs s = check_kmeans_step(X, C, weights);  // weights' shape checked before any work
  auto [labels, dist2] = kmeans_assign_device(run, X, C);
  auto [sums, counts] = kmeans_update_device(run, X, labels, s.assign.K, weights);
  return {labels, dist2, sums, counts};
}

}  // namespace tlk
