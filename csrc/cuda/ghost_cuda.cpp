// CUDA backend of the per-sample gradient products (host side): the shared host path of
// ghost_device.h with a runner that calls the torch-free launchers of ghost_cuda.cu on the
// current stream; the GEMM-shaped work on cuBLAS (ghost_gemm.h) above kGhostSimtMaxFlops.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/launchers.h"
#include "ghost_device.h"

namespace tlk {
namespace {

struct CudaRunner {
  cudaStream_t stream;

  void check_device(const at::Tensor& t, const char* name) const {
    TORCH_CHECK_VALUE(t.defined() && t.device().is_cuda(), name, " must be a CUDA tensor here");
  }
  int64_t dot_splits(int64_t rows, int64_t O, int64_t V) const { return cuda::ghost_dot_splits(rows, O, V); }

  template <typename T>
  void dot(const T* A, const T* D, const T* G, T* part, T* out, int64_t B, int64_t Tn, int64_t I, int64_t O,
           int64_t V) const {
    C10_CUDA_CHECK(cuda::ghost_dot<T>(A, D, G, part, out, B, Tn, I, O, V, stream));
  }
  template <typename T>
  void gram(const T* A1, const T* D1, const T* A2, const T* D2, T* out, int64_t B1, int64_t T1, int64_t B2,
            int64_t T2, int64_t I, int64_t O) const {
    C10_CUDA_CHECK(cuda::ghost_gram<T>(A1, D1, A2, D2, out, B1, T1, B2, T2, I, O, stream));
  }
  template <typename T>
  void norm_tiles(const T* A, const T* D, T* out, int64_t B, int64_t Tn, int64_t I, int64_t O) const {
    C10_CUDA_CHECK(cuda::ghost_norm_tiles<T>(A, D, out, B, Tn, I, O, stream));
  }
  template <typename T>
  void clip(T* alpha, int64_t stride, const int64_t* sorted, const int64_t* order, const T* s, int64_t B,
            T lr) const {
    C10_CUDA_CHECK(cuda::clip_update<T>(alpha, stride, sorted, order, s, B, lr, stream));
  }
  // The vendor-GEMM path (ghost_gemm.h). cuBLAS / cuBLASLt on torch's current stream (the stream
  // of this runner), honouring torch.backends.cuda.matmul.allow_tf32 and the reduced-precision
  // reduction settings; float16 / bfloat16 inputs give a float32 result (mm.dtype: tensor cores
  // with float32 accumulation and output, no rounding of the product to 16 bits).
  void gemm(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) const {
    if (a.scalar_type() == out.scalar_type()) {
      at::mm_out(out, a, b);
    } else {
      at::mm_out(out, a, b, out.scalar_type());
    }
  }
  void bmm(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) const {
    if (a.scalar_type() == out.scalar_type()) {
      at::bmm_out(out, a, b);
    } else {
      at::bmm_out(out, a, b, out.scalar_type());
    }
  }
  template <typename T>
  void segdot(const T* X, const T* Y, T* out, int64_t P, int64_t L, int64_t V, int64_t out_stride) const {
    C10_CUDA_CHECK(cuda::ghost_segdot<T>(X, Y, out, P, L, V, out_stride, stream));
  }
  template <typename T>
  void pair_reduce(const T* DD, const T* AA, T* out, int64_t nr, int64_t nc, int64_t r0, int64_t c0, int64_t T1,
                   int64_t T2, int64_t B2) const {
    C10_CUDA_CHECK(cuda::ghost_pair_reduce<T>(DD, AA, out, nr, nc, r0, c0, T1, T2, B2, stream));
  }
  template <typename T>
  void dot_finish(const T* rd, T* out, int64_t B, int64_t Tn, int64_t V) const {
    C10_CUDA_CHECK(cuda::ghost_dot_finish<T>(rd, out, B, Tn, V, stream));
  }
};

CudaRunner runner_for(const at::Tensor& t) {
  return CudaRunner{c10::cuda::getCurrentCUDAStream(t.device().index()).stream()};
}

at::Tensor ghost_dot_cuda(const at::Tensor& A, const at::Tensor& D, const at::Tensor& G) {
  const c10::cuda::CUDAGuard guard(A.device());
  return ghost_dot_device(runner_for(A), A, D, G);
}
at::Tensor ghost_gram_cuda(const at::Tensor& A1, const at::Tensor& D1, const at::Tensor& A2, const at::Tensor& D2) {
  const c10::cuda::CUDAGuard guard(A1.device());
  return ghost_gram_device(runner_for(A1), A1, D1, A2, D2);
}
at::Tensor ghost_norm_cuda(const at::Tensor& A, const at::Tensor& D) {
  const c10::cuda::CUDAGuard guard(A.device());
  return ghost_norm_device(runner_for(A), A, D);
}
void clip_update_cuda(at::Tensor& alpha, const at::Tensor& index, const at::Tensor& s, double lr) {
  const c10::cuda::CUDAGuard guard(alpha.device());
  clip_update_device(runner_for(alpha), alpha, index, s, lr);
}

}  // namespace

TORCH_LIBRARY_IMPL(tlkernels, CUDA, m) {
  m.impl("ghost_dot", &ghost_dot_cuda);
  m.impl("ghost_gram", &ghost_gram_cuda);
  m.impl("ghost_norm", &ghost_norm_cuda);
  m.impl("clip_update_", &clip_update_cuda);
}

}  // namespace tlk
