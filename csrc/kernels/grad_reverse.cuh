// Device code of the gradient-reversal backward (docs/design.md §4.1). Torch-free: compiled by nvcc
// for the CUDA backend and by the host compiler for the SIMT emulator, with the same launch plan.
//
//   out[i] = task[i] - lam * adv[i]      (the DANN fork: grad_reverse_branch backward)
//   out[i] =         - lam * adv[i]      (task == nullptr: grad_reverse backward)
//
// One read of each input gradient and one write: 12 bytes per float32 element for the fork.
#pragma once

#include <cstdint>

#include "simt.cuh"

namespace tlk::kernels {

constexpr int kGradReverseThreads = 256;
// Grid-stride loop beyond this many blocks: enough to fill any current GPU several times over.
constexpr int64_t kGradReverseMaxBlocks = 4096;

// Multiplication rounded on its own, never contracted with the following subtraction into an
// FMA, so that CUDA, the emulator and the CPU path agree bit for bit.
template <typename T>
TLK_DEVICE_INLINE T mul_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == 4) {
    return __fmul_rn(a, b);
  } else {
    return __dmul_rn(a, b);
  }
#else
  return a * b;
#endif
}

// x: (VEC,) lanes of one vector load; l: the coefficient.
template <typename T, int VEC, bool HAS_TASK>
__global__ void __launch_bounds__(kGradReverseThreads)
grad_reverse_combine_kernel(T* __restrict__ out,            // (n,)
                            const T* __restrict__ task,     // (n,) or nullptr
                            const T* __restrict__ adv,      // (n,)
                            int64_t n,
                            T lam,                          // used when lam_ptr == nullptr
                            const T* __restrict__ lam_ptr)  // (1,) device scalar, or nullptr
{
  const T l = lam_ptr != nullptr ? ld_global(lam_ptr) : lam;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  using V = tlk::AlignedVector<T, VEC>;
  const int64_t n_vec = n / VEC;
  for (int64_t i = first; i < n_vec; i += stride) {
    const V a = ld_global(reinterpret_cast<const V*>(adv) + i);
    V r;
    if constexpr (HAS_TASK) {
      const V t = ld_global(reinterpret_cast<const V*>(task) + i);
      TLK_UNROLL
      for (int k = 0; k < VEC; ++k) r.v[k] = t.v[k] - mul_rn(l, a.v[k]);
    } else {
      TLK_UNROLL
      for (int k = 0; k < VEC; ++k) r.v[k] = -mul_rn(l, a.v[k]);
    }
    st_global(reinterpret_cast<V*>(out) + i, r);
  }
  for (int64_t i = n_vec * VEC + first; i < n; i += stride) {
    if constexpr (HAS_TASK) {
      st_global(&out[i], ld_global(&task[i]) - mul_rn(l, ld_global(&adv[i])));
    } else {
      st_global(&out[i], -mul_rn(l, ld_global(&adv[i])));
    }
  }
}

// The launch plan depends only on n and the vector width, so the GPU and the emulator run the
// same grid.
inline tlk::LaunchPlan grad_reverse_plan(int64_t n, int vec) {
  const int64_t chunks = (n + vec - 1) / vec;
  int64_t blocks = (chunks + kGradReverseThreads - 1) / kGradReverseThreads;
  if (blocks < 1) blocks = 1;
  if (blocks > kGradReverseMaxBlocks) blocks = kGradReverseMaxBlocks;
  return tlk::LaunchPlan{dim3(static_cast<unsigned>(blocks)), dim3(kGradReverseThreads), 0};
}

inline bool is_aligned_16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Picks the vector width (16-byte loads when every pointer allows them) and the kernel, then
// calls launch(plan, kernel, args...). The CUDA launcher passes a functor that uses <<<>>>, the
// emulator one that runs tlk_emu::launch: everything else is shared.
template <typename T, typename Launch>
void grad_reverse_combine(Launch&& launch, T* out, const T* task, const T* adv, int64_t n, T lam,
                          const T* lam_ptr) {
  if (n == 0) return;
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  const bool vec_ok = is_aligned_16(out) && is_aligned_16(adv) && (task == nullptr || is_aligned_16(task));
  if (vec_ok) {
    const auto plan = grad_reverse_plan(n, kVec);
    if (task != nullptr) {
      launch(plan, grad_reverse_combine_kernel<T, kVec, true>, out, task, adv, n, lam, lam_ptr);
    } else {
      launch(plan, grad_reverse_combine_kernel<T, kVec, false>, out, task, adv, n, lam, lam_ptr);
    }
  } else {
    const auto plan = grad_reverse_plan(n, 1);
    if (task != nullptr) {
      launch(plan, grad_reverse_combine_kernel<T, 1, true>, out, task, adv, n, lam, lam_ptr);
    } else {
      launch(plan, grad_reverse_combine_kernel<T, 1, false>, out, task, adv, n, lam, lam_ptr);
    }
  }
}

}  // namespace tlk::kernels
