// CUDA backend of batched k-means (host side): the shared host path of kmeans_device.h with a
// runner that calls the torch-free launchers of kmeans_cuda.cu on the current stream; the
// assignment's scores on cuBLAS (kmeans_gemm.h) above kKMeansSimtMaxFlops.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/launchers.h"
#include "kmeans_device.h"
#include "kmeans_gemm.h"

namespace tlk {
namespace {

struct CudaRunner {
  cudaStream_t stream;

  void check_device(const at::Tensor& t, const char* name) const {
    TORCH_CHECK_VALUE(t.defined() && t.device().is_cuda(), name, " must be a CUDA tensor here");
  }
  int64_t update_ranges(int64_t N, int64_t P, int64_t K, int64_t D) const {
    return cuda::kmeans_update_ranges(N, P, K, D);
  }
  template <typename T>
  void assign(const T* X, const T* Cs, const T* b, const T* C, const T* base, const T* slope, int64_t* labels,
              T* dist2, int64_t P, int64_t N, int64_t K, int64_t D, int64_t M, bool c_shared) const {
    C10_CUDA_CHECK(cuda::kmeans_assign<T>(X, Cs, b, C, base, slope, labels, dist2, P, N, K, D, M, c_shared, stream));
  }
  // The vendor-GEMM path (kmeans_gemm.h): at::mm_out on torch's current stream (this runner's),
  // cuBLAS / cuBLASLt; bf16 operands (the bf16x3 split) through the mm.dtype overload, float32
  // accumulation and result. The precision reported is the coarsest torch's float32 matmul
  // settings allow cuBLAS (allow_tf32, float32_matmul_precision, fp32_precision): the band is
  // widened for it.
  KMeansGemmPrecision gemm_precision(at::ScalarType dtype) const {
    if (dtype != at::kFloat) return KMeansGemmPrecision::Ieee;
    return kmeans_torch_matmul_precision(at::Float32Backend::CUDA);
  }
  void gemm(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) const {
    if (a.scalar_type() == out.scalar_type()) {
      at::mm_out(out, a, b);
    } else {
      at::mm_out(out, a, b, out.scalar_type());
    }
  }
  template <typename T>
  void scores(const T* G, const T* X, const T* V, const T* b, const T* C, const T* base, const T* slope,
              int64_t* labels, T* dist2, int64_t p0, int64_t np, int64_t n0, int64_t rows, int64_t N, int64_t K,
              int64_t D, int64_t M, bool c_shared) const {
    C10_CUDA_CHECK(cuda::kmeans_scores<T>(G, rows, X, V, b, C, base, slope, labels, dist2, p0, np, n0, rows, N, K,
                                          D, M, c_shared, stream));
  }
  template <typename T>
  void update(const T* X, const int64_t* L, const T* W, double* part, T* sums, T* counts, int64_t P, int64_t N,
              int64_t K, int64_t D, int64_t R, int64_t M, int64_t MW) const {
    C10_CUDA_CHECK(cuda::kmeans_update<T>(X, L, W, part, sums, counts, P, N, K, D, R, M, MW, stream));
  }
};

CudaRunner runner_for(const at::Tensor& X) {
  return CudaRunner{c10::cuda::getCurrentCUDAStream(X.device().index()).stream()};
}

std::tuple<at::Tensor, at::Tensor> kmeans_assign_cuda(const at::Tensor& X, const at::Tensor& C) {
  const c10::cuda::CUDAGuard guard(X.device());
  return kmeans_assign_device(runner_for(X), X, C);
}

std::tuple<at::Tensor, at::Tensor> kmeans_update_cuda(const at::Tensor& X, const at::Tensor& labels, int64_t K,
                                                      const c10::optional<at::Tensor>& weights) {
  const c10::cuda::CUDAGuard guard(X.device());
  return kmeans_update_device(runner_for(X), X, labels, K, weights);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kmeans_step_cuda(const at::Tensor& X, const at::Tensor& C,
                                                                          const c10::optional<at::Tensor>& weights) {
  const c10::cuda::CUDAGuard guard(X.device());
  return kmeans_step_device(runner_for(X), X, C, weights);
}

}  // namespace

TORCH_LIBRARY_IMPL(tlkernels, CUDA, m) {
  m.impl("kmeans_assign", &kmeans_assign_cuda);
  m.impl("kmeans_update", &kmeans_update_cuda);
  m.impl("kmeans_step", &kmeans_step_cuda);
}

}  // namespace tlk
