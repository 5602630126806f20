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

}  // namespace tlk::cuda
