// Batched k-means (DESIGN.md §3.3): host-side checks shared by the CPU, CUDA and emulator
// backends.
//
//   kmeans_assign(X, C)                    -> labels (P, N) int64, dist2 (P, N)
//   kmeans_update(X, labels, K, weights)   -> sums (P, K, D), counts (P, K)
//
// X is (P, N, D) or (N, D); a 2-D X (or a 3-D X expanded with stride 0 over P) is one data set
// shared by every problem, read once for all of them. C is (P, K, D) or (K, D) (shared likewise).
// When neither input has a P dimension the outputs have none either: (N,), (K, D), (K,).
#pragma once

#include <ATen/ATen.h>

#include "common.h"

namespace tlk {

struct KMeansAssignArgs {
  at::Tensor X;   // contiguous (N, D) when x_shared, else (P, N, D)
  at::Tensor C;   // contiguous (K, D) when c_shared, else (P, K, D)
  int64_t P, N, K, D;
  bool x_shared, c_shared;
  bool batched;   // the outputs keep the P dimension
  std::vector<int64_t> out_sizes() const {
    return batched ? std::vector<int64_t>{P, N} : std::vector<int64_t>{N};
  }
};

struct KMeansUpdateArgs {
  at::Tensor X;        // contiguous (N, D) when x_shared, else (P, N, D)
  at::Tensor labels;   // contiguous (P, N) int64 (expanded when a 1-D labels is shared)
  at::Tensor weights;  // contiguous (N,) when w_shared, (P, N), or undefined (all ones)
  int64_t P, N, K, D;
  bool x_shared, w_shared;
  bool batched;
  std::vector<int64_t> sums_sizes() const {
    return batched ? std::vector<int64_t>{P, K, D} : std::vector<int64_t>{K, D};
  }
  std::vector<int64_t> counts_sizes() const {
    return batched ? std::vector<int64_t>{P, K} : std::vector<int64_t>{K};
  }
};

namespace detail {

inline void check_kmeans_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.defined(), name, " must be a tensor, got None");
  const auto st = t.scalar_type();
  TORCH_CHECK_VALUE(st == at::kFloat || st == at::kDouble, name,
                    " must be a float32 or float64 tensor (convert float16 / bfloat16 / integer "
                    "data first), got ", st);
}

// A 3-D tensor whose first dimension has stride 0 (an expand) is the same matrix for every
// problem: drop that dimension so that it is read once and never copied.
inline at::Tensor drop_broadcast_problem_dim(const at::Tensor& t, bool& shared) {
  if (t.dim() == 3 && t.size(0) > 0 && t.stride(0) == 0) {
    shared = true;
    return t.select(0, 0);
  }
  shared = t.dim() == 2;
  return t;
}

}  // namespace detail

inline KMeansAssignArgs check_kmeans_assign(const at::Tensor& X, const at::Tensor& C) {
  detail::check_kmeans_float(X, "X");
  detail::check_kmeans_float(C, "C");
  TORCH_CHECK_VALUE(X.dim() == 2 || X.dim() == 3, "X must have shape (N, D) or (P, N, D), got ",
                    X.sizes());
  TORCH_CHECK_VALUE(C.dim() == 2 || C.dim() == 3, "C must have shape (K, D) or (P, K, D), got ",
                    C.sizes());
  check_dtype(C, "C", X.scalar_type(), "X");
  check_device(C, "C", X.device(), "X");
  KMeansAssignArgs a;
  a.batched = X.dim() == 3 || C.dim() == 3;
  if (X.dim() == 3 && C.dim() == 3) {
    TORCH_CHECK_VALUE(X.size(0) == C.size(0), "C must have as many problems as X (P = ", X.size(0),
                      "), got C of shape ", C.sizes());
  }
  a.P = X.dim() == 3 ? X.size(0) : (C.dim() == 3 ? C.size(0) : 1);
  a.N = X.size(-2);
  a.D = X.size(-1);
  a.K = C.size(-2);
  TORCH_CHECK_VALUE(C.size(-1) == a.D, "C must have the feature dimension of X (D = ", a.D,
                    "), got C of shape ", C.sizes());
  TORCH_CHECK_VALUE(a.K >= 1, "C must hold at least one centroid (K >= 1), got C of shape ",
                    C.sizes());
  a.X = detail::drop_broadcast_problem_dim(X, a.x_shared).contiguous();
  a.C = detail::drop_broadcast_problem_dim(C, a.c_shared).contiguous();
  if (a.C.numel() > 0) {
    // C is small (P * K * D): checking it costs nothing next to the assignment.
    TORCH_CHECK_VALUE(at::isfinite(a.C).all().item<bool>(),
                      "C must be finite, got NaN or inf in the centroids");
  }
  return a;
}

inline KMeansUpdateArgs check_kmeans_update(const at::Tensor& X, const at::Tensor& labels, int64_t K,
                                            const c10::optional<at::Tensor>& weights) {
  detail::check_kmeans_float(X, "X");
  TORCH_CHECK_VALUE(X.dim() == 2 || X.dim() == 3, "X must have shape (N, D) or (P, N, D), got ",
                    X.sizes());
  TORCH_CHECK_VALUE(labels.defined(), "labels must be a tensor, got None");
  TORCH_CHECK_VALUE(labels.scalar_type() == at::kLong || labels.scalar_type() == at::kInt,
                    "labels must be an int64 (or int32) tensor, got ", labels.scalar_type());
  TORCH_CHECK_VALUE(labels.dim() == 1 || labels.dim() == 2, "labels must have shape (N,) or (P, N), got ",
                    labels.sizes());
  check_device(labels, "labels", X.device(), "X");
  TORCH_CHECK_VALUE(K >= 1, "K must be at least 1, got ", K);
  KMeansUpdateArgs a;
  a.K = K;
  a.N = X.size(-2);
  a.D = X.size(-1);
  a.batched = X.dim() == 3 || labels.dim() == 2;
  if (X.dim() == 3 && labels.dim() == 2) {
    TORCH_CHECK_VALUE(labels.size(0) == X.size(0), "labels must have as many problems as X (P = ",
                      X.size(0), "), got labels of shape ", labels.sizes());
  }
  a.P = X.dim() == 3 ? X.size(0) : (labels.dim() == 2 ? labels.size(0) : 1);
  TORCH_CHECK_VALUE(labels.size(-1) == a.N, "labels must have one entry per row of X (N = ", a.N,
                    "), got labels of shape ", labels.sizes());
  a.X = detail::drop_broadcast_problem_dim(X, a.x_shared).contiguous();
  a.labels = (labels.dim() == 1 ? labels.unsqueeze(0) : labels).expand({a.P, a.N}).to(at::kLong).contiguous();
  a.w_shared = false;
  if (weights.has_value() && weights->defined()) {
    const at::Tensor& w = *weights;
    check_dtype(w, "weights", X.scalar_type(), "X");
    check_device(w, "weights", X.device(), "X");
    TORCH_CHECK_VALUE(w.dim() == 1 || w.dim() == 2, "weights must have shape (N,) or (P, N), got ",
                      w.sizes());
    TORCH_CHECK_VALUE(w.size(-1) == a.N && (w.dim() == 1 || w.size(0) == a.P),
                      "weights must have shape (N,) or (P, N) = (", a.P, ", ", a.N, "), got ", w.sizes());
    at::Tensor wt = w;
    if (wt.dim() == 2 && wt.size(0) > 0 && wt.stride(0) == 0) wt = wt.select(0, 0);  // expanded
    a.w_shared = wt.dim() == 1;
    a.weights = wt.contiguous();
  }
  return a;
}

}  // namespace tlk
