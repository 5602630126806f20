// Torch-free entry points of the CUDA kernels (defined in csrc/cuda/*.cu, called from the
// TORCH_LIBRARY_IMPL(CUDA) files csrc/cuda/*_cuda.cpp). Pointers are device pointers.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace tlk::cuda {

// out (n,) = task (n,) - lam * adv (n,); task may be nullptr (out = -lam * adv); lam_ptr (1,) a
// device scalar overriding lam, or nullptr.
template <typename T>
cudaError_t grad_reverse_combine(T* out, const T* task, const T* adv, int64_t n, T lam,
                                 const T* lam_ptr, cudaStream_t stream);

// Per-sample gradient products (kernels/ghost.cuh; shapes as there). part: (V, splits, B·Tn)
// scratch with splits = ghost_dot_splits(B·Tn, O, V).
int ghost_dot_splits(int64_t rows, int64_t O, int64_t V);
template <typename T>
cudaError_t ghost_dot(const T* A, const T* D, const T* G, T* part, T* out, int64_t B, int64_t Tn, int64_t I,
                      int64_t O, int64_t V, cudaStream_t stream);
template <typename T>
cudaError_t ghost_gram(const T* A1, const T* D1, const T* A2, const T* D2, T* out, int64_t B1, int64_t T1,
                       int64_t B2, int64_t T2, int64_t I, int64_t O, cudaStream_t stream);
template <typename T>
cudaError_t ghost_norm_tiles(const T* A, const T* D, T* out, int64_t B, int64_t Tn, int64_t I, int64_t O,
                             cudaStream_t stream);
template <typename T>
cudaError_t clip_update(T* alpha, int64_t stride, const int64_t* sorted, const int64_t* order, const T* s,
                        int64_t B, T lr, cudaStream_t stream);

// Reductions after a vendor GEMM (kernels/ghost.cuh, csrc/ghost_gemm.h; shapes as there).
template <typename T>
cudaError_t ghost_segdot(const T* X, const T* Y, T* out, int64_t P, int64_t L, int64_t V, int64_t out_stride,
                         cudaStream_t stream);
template <typename T>
cudaError_t ghost_pair_reduce(const T* DD, const T* AA, T* out, int64_t nr, int64_t nc, int64_t r0, int64_t c0,
                              int64_t T1, int64_t T2, int64_t B2, cudaStream_t stream);
template <typename T>
cudaError_t ghost_dot_finish(const T* rd, T* out, int64_t B, int64_t Tn, int64_t V, cudaStream_t stream);

// Batched k-means (kernels/kmeans.cuh; shapes as there). part: (P, R, K, D + 1) float64
// scratch with R = kmeans_update_ranges(N, P, K, D).
int64_t kmeans_update_ranges(int64_t N, int64_t P, int64_t K, int64_t D);
template <typename T>
cudaError_t kmeans_assign(const T* X, const T* Cs, const T* b, const T* C, const T* band_base, const T* band_slope,
                          int64_t* labels, T* dist2, int64_t P, int64_t N, int64_t K, int64_t D, int64_t M,
                          bool c_shared, cudaStream_t stream);
// The epilogue of the vendor-GEMM assignment (kmeans_gemm.h): G (cols, ldg) one chunk's scores.
template <typename T>
cudaError_t kmeans_scores(const T* G, int64_t ldg, const T* X, const T* V, const T* b, const T* C,
                          const T* band_base, const T* band_slope, int64_t* labels, T* dist2, int64_t p0, int64_t np,
                          int64_t n0, int64_t rows, int64_t N, int64_t K, int64_t D, int64_t M, bool c_shared,
                          cudaStream_t stream);
template <typename T>
cudaError_t kmeans_update(const T* X, const int64_t* L, const T* W, double* part, T* sums, T* counts, int64_t P,
                          int64_t N, int64_t K, int64_t D, int64_t R, int64_t M, int64_t MW, cudaStream_t stream);

}  // namespace tlk::cuda
