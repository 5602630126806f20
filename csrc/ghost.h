// Per-sample gradient products (docs/design.md §4.2): host-side checks shared by the CPU, CUDA and
// emulator backends. For a linear layer y = W a + b applied at T positions per sample, the
// per-sample weight gradient is Q_i = Σ_t d_it a_itᵀ (O, I); none of the ops forms it for all
// samples at once.
//   ghost_dot(A (B,T,I), D (B,T,O), G (O,I) | (V,O,I))   -> s (B,) | (B,V),  s_i = ⟨Q_i, G⟩
//   ghost_gram(A1 (B1,T,I), D1 (B1,T,O), A2 (B2,T',I), D2 (B2,T',O)) -> (B1,B2) = ⟨Q1_i, Q2_j⟩
//   ghost_norm(A (B,T,I), D (B,T,O))                      -> (B,) = ‖Q_i‖²
//   clip_update_(alpha (N,), index (B,) int64, s (B,), lr) -> alpha, α[index] = clip(α[index] + lr·s, 0, 1)
// float16 / bfloat16 inputs are computed in float32 (copies made here) and the result is cast
// back to the input dtype, like torch.sum.
#pragma once

#include <ATen/ATen.h>

#include "common.h"

namespace tlk {

// The dtype the kernels compute in: float32 for float16 / bfloat16 / float32, float64 for float64.
inline at::ScalarType ghost_compute_dtype(at::ScalarType st) {
  return st == at::kDouble ? at::kDouble : at::kFloat;
}

// Contiguous compute-dtype copy (no copy when it already is one); with keep_dtype, contiguous in
// the input dtype (for a vendor GEMM that reads float16 / bfloat16 itself).
inline at::Tensor ghost_prepare(const at::Tensor& t, bool keep_dtype = false) {
  return keep_dtype ? t.contiguous() : t.to(ghost_compute_dtype(t.scalar_type())).contiguous();
}

inline void check_rank(const at::Tensor& t, const char* name, int64_t dim, const char* expected) {
  TORCH_CHECK_VALUE(t.dim() == dim, name, " must have shape ", expected, ", got ", t.sizes());
}

// A (B,T,I) and D (B,T,O): floating, same dtype and device, same B and T. `suffix` names the
// side ("" or "1" / "2") so messages name the argument exactly.
inline void check_activation_pair(const at::Tensor& A, const at::Tensor& D, const char* a_name,
                                  const char* d_name, const char* a_shape, const char* d_shape) {
  check_floating(A, a_name);
  check_floating(D, d_name);
  check_rank(A, a_name, 3, a_shape);
  check_rank(D, d_name, 3, d_shape);
  check_dtype(D, d_name, A.scalar_type(), a_name);
  check_device(D, d_name, A.device(), a_name);
  TORCH_CHECK_VALUE(D.size(0) == A.size(0) && D.size(1) == A.size(1), d_name, " must have shape ",
                    d_shape, " with B and T of ", a_name, " (", A.size(0), ", ", A.size(1), "), got ",
                    D.sizes());
}

struct GhostDotArgs {
  at::Tensor A;  // (B,T,I) contiguous, compute dtype
  at::Tensor D;  // (B,T,O) contiguous, compute dtype
  at::Tensor G;  // (V,O,I) contiguous, compute dtype
  int64_t B, T, I, O, V;
  bool multi;    // G was (V,O,I): the result is (B,V)
  at::ScalarType out_dtype;
};

inline GhostDotArgs check_ghost_dot(const at::Tensor& A, const at::Tensor& D, const at::Tensor& G,
                                    bool keep_dtype = false) {
  check_activation_pair(A, D, "A", "D", "(B, T, I)", "(B, T, O)");
  check_floating(G, "G");
  TORCH_CHECK_VALUE(G.dim() == 2 || G.dim() == 3, "G must have shape (O, I) or (V, O, I), got ",
                    G.sizes());
  check_dtype(G, "G", A.scalar_type(), "A");
  check_device(G, "G", A.device(), "A");
  const int64_t O = D.size(2), I = A.size(2);
  TORCH_CHECK_VALUE(G.size(-2) == O && G.size(-1) == I, "G must have shape (O, I) = (", O, ", ", I,
                    ") or (V, O, I) with O of D and I of A, got ", G.sizes());
  GhostDotArgs r;
  r.A = ghost_prepare(A, keep_dtype);
  r.D = ghost_prepare(D, keep_dtype);
  r.multi = G.dim() == 3;
  r.G = ghost_prepare(r.multi ? G : G.unsqueeze(0), keep_dtype);
  r.B = A.size(0);
  r.T = A.size(1);
  r.I = I;
  r.O = O;
  r.V = r.G.size(0);
  r.out_dtype = A.scalar_type();
  return r;
}

struct GhostGramArgs {
  at::Tensor A1, D1, A2, D2;  // contiguous, compute dtype
  int64_t B1, T1, B2, T2, I, O;
  at::ScalarType out_dtype;
};

inline GhostGramArgs check_ghost_gram(const at::Tensor& A1, const at::Tensor& D1, const at::Tensor& A2,
                                      const at::Tensor& D2, bool keep_dtype = false) {
  check_activation_pair(A1, D1, "A1", "D1", "(B1, T, I)", "(B1, T, O)");
  check_activation_pair(A2, D2, "A2", "D2", "(B2, T', I)", "(B2, T', O)");
  check_dtype(A2, "A2", A1.scalar_type(), "A1");
  check_device(A2, "A2", A1.device(), "A1");
  TORCH_CHECK_VALUE(A2.size(2) == A1.size(2), "A2 must have shape (B2, T', I) with I = ", A1.size(2),
                    " of A1, got ", A2.sizes());
  TORCH_CHECK_VALUE(D2.size(2) == D1.size(2), "D2 must have shape (B2, T', O) with O = ", D1.size(2),
                    " of D1, got ", D2.sizes());
  GhostGramArgs r;
  r.A1 = ghost_prepare(A1, keep_dtype);
  r.D1 = ghost_prepare(D1, keep_dtype);
  r.A2 = ghost_prepare(A2, keep_dtype);
  r.D2 = ghost_prepare(D2, keep_dtype);
  r.B1 = A1.size(0);
  r.T1 = A1.size(1);
  r.B2 = A2.size(0);
  r.T2 = A2.size(1);
  r.I = A1.size(2);
  r.O = D1.size(2);
  r.out_dtype = A1.scalar_type();
  return r;
}

struct GhostNormArgs {
  at::Tensor A, D;  // contiguous, compute dtype
  int64_t B, T, I, O;
  at::ScalarType out_dtype;
};

inline GhostNormArgs check_ghost_norm(const at::Tensor& A, const at::Tensor& D, bool keep_dtype = false) {
  check_activation_pair(A, D, "A", "D", "(B, T, I)", "(B, T, O)");
  GhostNormArgs r;
  r.A = ghost_prepare(A, keep_dtype);
  r.D = ghost_prepare(D, keep_dtype);
  r.B = A.size(0);
  r.T = A.size(1);
  r.I = A.size(2);
  r.O = D.size(2);
  r.out_dtype = A.scalar_type();
  return r;
}

// ‖Q_i‖² either from the sample's own T×T Gram tiles (cost T²(I+O)) or by materialising Q_i
// (cost T·I·O, memory O·I per sample in flight). Both are memory-bounded; pick the cheaper.
inline bool ghost_norm_materialise(int64_t T, int64_t I, int64_t O) {
  return T > 1 && T * (I + O) > I * O;
}

struct ClipUpdateArgs {
  at::Tensor sorted_index;  // (B,) int64, index sorted stably
  at::Tensor order;         // (B,) int64, positions in index / s of sorted_index
  at::Tensor s;             // (B,) contiguous, dtype of alpha
};

// alpha (N,) float32/float64, index (B,) int64 within [0, N), s (B,) floating. Duplicate indices
// are resolved by a stable sort: each group's s are summed in their order in `index`, then the
// clip is applied once, so the result does not depend on threads or the backend's schedule.
// Reading index's range needs a device sync on CUDA (one per call, an α step per batch).
inline ClipUpdateArgs check_clip_update(const at::Tensor& alpha, const at::Tensor& index,
                                        const at::Tensor& s, double lr) {
  TORCH_CHECK_VALUE(alpha.defined() && index.defined() && s.defined(),
                    "clip_update_: alpha, index and s must be tensors");
  TORCH_CHECK_VALUE(alpha.scalar_type() == at::kFloat || alpha.scalar_type() == at::kDouble,
                    "alpha must be a float32 or float64 tensor, got ", alpha.scalar_type());
  check_rank(alpha, "alpha", 1, "(N,)");
  TORCH_CHECK_VALUE(index.scalar_type() == at::kLong, "index must be an int64 tensor, got ",
                    index.scalar_type());
  check_rank(index, "index", 1, "(B,)");
  check_device(index, "index", alpha.device(), "alpha");
  check_floating(s, "s");
  TORCH_CHECK_VALUE(s.dim() == 1 && s.size(0) == index.size(0), "s must have shape (B,) = (",
                    index.size(0), ",) of index, got ", s.sizes());
  check_device(s, "s", alpha.device(), "alpha");
  check_finite_scalar(lr, "lr");
  const int64_t N = alpha.size(0);
  if (index.numel() > 0) {
    auto [lo, hi] = at::aminmax(index);
    const int64_t lo_v = lo.item<int64_t>(), hi_v = hi.item<int64_t>();
    TORCH_CHECK_INDEX(lo_v >= 0 && hi_v < N, "index must hold values in [0, N) = [0, ", N,
                      ") of alpha, got values in [", lo_v, ", ", hi_v, "]");
  }
  ClipUpdateArgs r;
  auto sorted = at::sort(index, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  r.sorted_index = std::get<0>(sorted).contiguous();
  r.order = std::get<1>(sorted).contiguous();
  r.s = s.to(alpha.scalar_type()).contiguous();
  return r;
}

}  // namespace tlk
