// CUDA launcher of gradient reversal. Torch-free: nvcc compiles only device code and this thin
// entry point; the TORCH_LIBRARY_IMPL(CUDA) side lives in grad_reverse_cuda.cpp.
#include "cuda/launchers.h"
#include "kernels/grad_reverse.cuh"

namespace tlk::cuda {

template <typename T>
cudaError_t grad_reverse_combine(T* out, const T* task, const T* adv, int64_t n, T lam,
                                 const T* lam_ptr, cudaStream_t stream) {
  auto launch = [stream](const tlk::LaunchPlan& plan, auto kernel, auto... args) {
    kernel<<<plan.grid, plan.block, plan.shared_bytes, stream>>>(args...);
  };
  kernels::grad_reverse_combine<T>(launch, out, task, adv, n, lam, lam_ptr);
  return cudaGetLastError();
}

template cudaError_t grad_reverse_combine<float>(float*, const float*, const float*, int64_t, float,
                                                 const float*, cudaStream_t);
template cudaError_t grad_reverse_combine<double>(double*, const double*, const double*, int64_t,
                                                  double, const double*, cudaStream_t);

}  // namespace tlk::cuda
