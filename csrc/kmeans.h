// Batched k-means (docs/design.md §4.3): host-side checks shared by the CPU, CUDA and emulator
// backends.
//
//   kmeans_assign(X, C)                    -> labels (P, N) int64, dist2 (P, N)
//   kmeans_update(X, labels, K, weights)   -> sums (P, K, D), counts (P, K)
//
// X holds Px data sets, (Px, N, D) or (N, D) (Px = 1); P problems (C is (P, K, D), labels
// (P, N)) with P a multiple of Px: problem p reads data set p / (P / Px). So n_init runs, or the
// candidates of a k-means++ step, are extra problems over one data set that is read once for
// all of them (never copied). A 3-D input expanded with stride 0 over its first dimension counts
// as one shared matrix. C may be (K, D): the same centroids for every problem. When no input has
// a P dimension the outputs have none either: (N,), (K, D), (K,).
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "common.h"

namespace tlk {

struct KMeansAssignArgs {
  at::Tensor X;   // contiguous (Px, N, D)
  at::Tensor C;   // contiguous (K, D) when c_shared, else (P, K, D)
  int64_t P, Px, N, K, D;
  bool c_shared;
  bool batched;   // the outputs keep the P dimension
  int64_t per_x() const { return P / Px; }  // problems per data set
  std::vector<int64_t> out_sizes() const {
    return batched ? std::vector<int64_t>{P, N} : std::vector<int64_t>{N};
  }
};

// kmeans_step = kmeans_assign + kmeans_update of the new labels, in one pass over X.
struct KMeansStepArgs {
  KMeansAssignArgs assign;
  at::Tensor weights;  // contiguous (Pw, N) with Pw in {1, Px, P}, or undefined (all ones)
  int64_t Pw;
  int64_t per_w() const { return assign.P / Pw; }
  std::vector<int64_t> sums_sizes() const {
    const auto& a = assign;
    return a.batched ? std::vector<int64_t>{a.P, a.K, a.D} : std::vector<int64_t>{a.K, a.D};
  }
  std::vector<int64_t> counts_sizes() const {
    const auto& a = assign;
    return a.batched ? std::vector<int64_t>{a.P, a.K} : std::vector<int64_t>{a.K};
  }
};

struct KMeansUpdateArgs {
  at::Tensor X;        // contiguous (Px, N, D)
  at::Tensor labels;   // contiguous (P, N) int64
  at::Tensor weights;  // contiguous (Pw, N) with Pw in {1, Px, P}, or undefined (all ones)
  int64_t P, Px, Pw, N, K, D;
  bool batched;
  int64_t per_x() const { return P / Px; }
  int64_t per_w() const { return P / Pw; }
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

// A tensor whose first dimension (of `dims`) has stride 0 (an expand) is the same matrix for
// every problem: keep one copy of it, never materialise the expansion.
inline at::Tensor drop_broadcast_problem_dim(const at::Tensor& t, int64_t dims) {
  if (t.dim() == dims && t.size(0) > 1 && t.stride(0) == 0) return t.narrow(0, 0, 1);
  return t;
}

// weights: (N,), (Px, N) or (P, N) of X's dtype and device; out: contiguous (Pw, N) or undefined.
inline void check_weights(const c10::optional<at::Tensor>& weights, const at::Tensor& X, int64_t P,
                          int64_t px_given, int64_t N, at::Tensor& out, int64_t& Pw) {
  Pw = 0;
  if (!weights.has_value() || !weights->defined()) return;
  const at::Tensor& w = *weights;
  check_dtype(w, "weights", X.scalar_type(), "X");
  check_device(w, "weights", X.device(), "X");
  const int64_t rows = w.dim() == 2 ? w.size(0) : 1;
  TORCH_CHECK_VALUE((w.dim() == 1 || w.dim() == 2) && w.size(-1) == N && (rows == 1 || rows == px_given || rows == P),
                    "weights must have shape (N,), (Px, N) or (P, N) with N = ", N, ", Px = ", px_given, ", P = ", P,
                    ", got ", w.sizes());
  out = drop_broadcast_problem_dim(w.dim() == 2 ? w : w.unsqueeze(0), 2).contiguous();
  Pw = P == 0 ? 0 : out.size(0);
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
  a.N = X.size(-2);
  a.D = X.size(-1);
  a.K = C.size(-2);
  TORCH_CHECK_VALUE(C.size(-1) == a.D, "C must have the feature dimension of X (D = ", a.D,
                    "), got C of shape ", C.sizes());
  TORCH_CHECK_VALUE(a.K >= 1, "C must hold at least one centroid (K >= 1), got C of shape ",
                    C.sizes());
  at::Tensor x3 = detail::drop_broadcast_problem_dim(X.dim() == 3 ? X : X.unsqueeze(0), 3);
  at::Tensor c = detail::drop_broadcast_problem_dim(C, 3);
  const int64_t px_given = X.dim() == 3 ? X.size(0) : 1;
  a.P = C.dim() == 3 ? C.size(0) : px_given;
  TORCH_CHECK_VALUE(a.P % px_given == 0,
                    "C must hold a multiple of X's number of data sets (problem p reads X[p / (P / Px)]): "
                    "X has Px = ", px_given, ", C has P = ", a.P);
  a.Px = x3.size(0);
  if (c.dim() == 3 && c.size(0) == 1 && a.P > 1) c = c.select(0, 0);  // expanded C: shared
  a.c_shared = c.dim() == 2;
  if (a.P == 0) a.Px = 0;
  a.X = x3.contiguous();
  a.C = c.contiguous();
  if (a.C.numel() > 0) {
    // C is small (P * K * D): checking it costs nothing next to the assignment.
    TORCH_CHECK_VALUE(at::isfinite(a.C).all().item<bool>(),
                      "C must be finite, got NaN or inf in the centroids");
  }
  return a;
}

// Scores for the argmin, robust to float32 cancellation: with m the mean of a problem's
// centroids and c' = c − m, ‖x − c‖² = ‖x − m‖² + ‖c'‖² − 2 (x − m)·c', so the argmin over k of
//   score_k = b_k − 2 x·c'_k,   b_k = ‖c'_k‖² + 2 m·c'_k
// is the nearest centroid. The GEMM then multiplies x by the small c' instead of c: the rounding
// error is eps·‖x‖·‖c'‖ rather than eps·‖x‖·‖c‖ (data far from the origin keeps its digits).
// b is computed in float64 from the rounded c'. Identical centroids get identical scores.
//
// Rounding band: a computed score is within band = band_base + band_slope·‖x‖ of the exact one
// (|b| rounding plus the dot-product bound D·eps·‖x‖·‖c'‖, with a safety factor of 8). The
// backends compare exact distances Σ (x − c)² between the centroids whose scores fall within
// the band of the best, so the label is the truly nearest centroid, exact ties to the lowest index.
struct ShiftedCentroids {
  at::Tensor Cs;          // (K, D) or (P, K, D) contiguous, dtype of C: c − m
  at::Tensor b;           // (K,) or (P, K) contiguous, dtype of C
  at::Tensor band_base;   // (1,) or (P,) contiguous, dtype of C
  at::Tensor band_slope;  // (1,) or (P,) contiguous, dtype of C
};

inline ShiftedCentroids shift_centroids(const at::Tensor& C) {
  const at::Tensor Cd = C.to(at::kDouble);
  const at::Tensor m = Cd.mean(-2, /*keepdim=*/true);
  const at::Tensor Cs = (Cd - m).to(C.scalar_type()).contiguous();
  const at::Tensor Csd = Cs.to(at::kDouble);
  const at::Tensor bd = Csd.square().sum(-1) + 2.0 * (Csd * m).sum(-1);
  const double eps = C.scalar_type() == at::kFloat ? 1.1920928955078125e-07 : 2.220446049250313e-16;
  const double f = 8.0 * static_cast<double>(C.size(-1) + 2) * eps;
  const auto st = C.scalar_type();
  at::Tensor base = (bd.abs().amax(-1) * f).reshape({-1}).to(st).contiguous();
  at::Tensor slope = (Csd.square().sum(-1).sqrt().amax(-1) * (2.0 * f)).reshape({-1}).to(st).contiguous();
  return {Cs, bd.to(st).contiguous(), base, slope};
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
  const int64_t px_given = X.dim() == 3 ? X.size(0) : 1;
  a.P = labels.dim() == 2 ? labels.size(0) : px_given;
  TORCH_CHECK_VALUE(a.P % px_given == 0,
                    "labels must hold a multiple of X's number of data sets (problem p reads X[p / (P / Px)]): "
                    "X has Px = ", px_given, ", labels has P = ", a.P);
  TORCH_CHECK_VALUE(labels.size(-1) == a.N, "labels must have one entry per row of X (N = ", a.N,
                    "), got labels of shape ", labels.sizes());
  a.X = detail::drop_broadcast_problem_dim(X.dim() == 3 ? X : X.unsqueeze(0), 3).contiguous();
  a.Px = a.P == 0 ? 0 : a.X.size(0);
  a.labels = (labels.dim() == 1 ? labels.unsqueeze(0) : labels).expand({a.P, a.N}).to(at::kLong).contiguous();
  detail::check_weights(weights, X, a.P, px_given, a.N, a.weights, a.Pw);
  return a;
}

inline KMeansStepArgs check_kmeans_step(const at::Tensor& X, const at::Tensor& C,
                                        const c10::optional<at::Tensor>& weights) {
  KMeansStepArgs s;
  s.assign = check_kmeans_assign(X, C);
  const int64_t px_given = X.dim() == 3 ? X.size(0) : 1;
  detail::check_weights(weights, X, s.assign.P, px_given, s.assign.N, s.weights, s.Pw);
  return s;
}

}  // namespace tlk
