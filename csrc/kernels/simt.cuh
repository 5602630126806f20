// Portability layer of the device code: every csrc/kernels/<op>.cuh includes this header and is
// then compiled twice, by nvcc for the GPU and by the host C++ compiler (C++20) for the SIMT
// emulator (csrc/emu/emu.h), which runs it on the CPU with the same launch configuration.
// Torch-free.
//
// Both builds provide:
//   TLK_SHARED(type, name, count)          a block-shared array `name` of `count` elements
//   TLK_SHARED_2D(type, name, rows, cols)  a block-shared `name[rows][cols]`
//   TLK_DYNAMIC_SHARED(type, name)         `type* name` at the launch's dynamic shared memory
//                                          (aligned to 16 bytes)
//   TLK_HOST_DEVICE                        __host__ __device__ / nothing
//   TLK_DEVICE_INLINE                      __device__ __forceinline__ / inline
//   TLK_UNROLL                             `#pragma unroll` for the next loop under nvcc,
//                                          nothing under g++ (which warns about the bare
//                                          pragma with -Wall)
//   tlk::LaunchPlan {grid, block, shared_bytes}  computed once by the op header, used by the
//                                          CUDA launcher (<<<grid, block, shared_bytes>>>) and
//                                          by tlk_emu::launch(plan, kernel, args...)
//   tlk::AlignedVector<T, N>               N values of T aligned for one vector load
//   tlk::min / tlk::max                    std::min / std::max semantics (returns the first
//                                          argument when neither is less; not fminf), one type
//   tlk::ld_global(p) / st_global(p, v)    a load / store of global memory, and
//   tlk::ld_shared(p) / st_shared(p, v)    of shared memory: plain `*p` under nvcc; under the
//                                          emulator also counted (coalescing, bank conflicts)
//                                          while a tlk_emu::Profile is active
//   TLK_BRANCH(cond)                       `cond`; the emulator counts divergent branches
//   tlk::count_flops(n)                    nothing under nvcc; the emulator adds n to the
//                                          launch's FLOPs (per thread, as the thread does them)
// plus, under the emulator, the CUDA built-ins device code uses (threadIdx, __syncthreads,
// __shfl_*_sync, atomics, ...; see emu.h for what the emulator guarantees and catches).
//
// Rules for device code so that both builds mean the same:
//   * Declare shared memory only with the macros above, inside device functions (not at
//     namespace scope), with compile-time sizes.
//   * Never take sizeof of a shared array: under the emulator `name` is a pointer (a pointer to
//     rows for TLK_SHARED_2D). Compute sizes from the element count instead.
//   * Use tlk::min / tlk::max, not CUDA's global min / max (the emulator does not define them).
//   * Guard GPU-only intrinsics (__expf, __fmul_rn contraction control, inline PTX) with
//     #if defined(__CUDA_ARCH__).
//   * More than 48 KiB of shared memory needs the opt-in in each launcher: CUDA
//     cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes), emulator
//     tlk_emu::set_max_dynamic_shared_memory(kernel, bytes).
#pragma once

#include <cstddef>
#include <type_traits>

#if defined(__CUDACC__)

#include <cuda_runtime.h>

#define TLK_HOST_DEVICE __host__ __device__
#define TLK_DEVICE_INLINE __device__ __forceinline__
#define TLK_UNROLL _Pragma("unroll")

#define TLK_SHARED(type, name, count) __shared__ type name[count]
#define TLK_SHARED_2D(type, name, rows, cols) __shared__ type name[rows][cols]
#define TLK_DYNAMIC_SHARED(type, name)                                    \
  extern __shared__ __align__(16) unsigned char tlk_dynamic_shared_mem_[]; \
  type* name = reinterpret_cast<type*>(tlk_dynamic_shared_mem_)

namespace tlk {
struct LaunchPlan {
  dim3 grid;
  dim3 block;
  std::size_t shared_bytes = 0;  // dynamic shared memory
};
}  // namespace tlk

#else  // the SIMT emulator

#include "../emu/emu.h"  // also defines tlk::LaunchPlan

#define TLK_HOST_DEVICE
#define TLK_DEVICE_INLINE inline
#define TLK_UNROLL

#define TLK_SHARED(type, name, count) TLK_EMU_SHARED(type, name, count)
#define TLK_SHARED_2D(type, name, rows, cols) TLK_EMU_SHARED_2D(type, name, rows, cols)
#define TLK_DYNAMIC_SHARED(type, name) TLK_EMU_DYNAMIC_SHARED(type, name)

#endif

namespace tlk {

// N values of T loaded or stored with one (up to 16-byte) vector access.
template <typename T, int N>
struct alignas(sizeof(T) * N) AlignedVector {
  T v[N];
};

template <typename T>
TLK_HOST_DEVICE constexpr T min(T a, T b) {
  return b < a ? b : a;
}

template <typename T>
TLK_HOST_DEVICE constexpr T max(T a, T b) {
  return a < b ? b : a;
}

#if defined(__CUDACC__)
template <typename T>
TLK_DEVICE_INLINE T ld_global(const T* p) {
  return *p;
}
template <typename T>
TLK_DEVICE_INLINE void st_global(T* p, std::type_identity_t<T> v) {
  *p = v;
}
template <typename T>
TLK_DEVICE_INLINE T ld_shared(const T* p) {
  return *p;
}
template <typename T>
TLK_DEVICE_INLINE void st_shared(T* p, std::type_identity_t<T> v) {
  *p = v;
}
TLK_DEVICE_INLINE void count_flops(long long) {}
#define TLK_BRANCH(cond) (cond)
#else
template <typename T>
inline T ld_global(const T* p, std::source_location loc = std::source_location::current()) {
  ::tlk_emu::detail::record_access(::tlk_emu::AccessKind::GlobalLoad, p, sizeof(T), loc);
  return *p;
}
template <typename T>
inline void st_global(T* p, std::type_identity_t<T> v, std::source_location loc = std::source_location::current()) {
  ::tlk_emu::detail::record_access(::tlk_emu::AccessKind::GlobalStore, p, sizeof(T), loc);
  *p = v;
}
template <typename T>
inline T ld_shared(const T* p, std::source_location loc = std::source_location::current()) {
  ::tlk_emu::detail::record_access(::tlk_emu::AccessKind::SharedLoad, p, sizeof(T), loc);
  return *p;
}
template <typename T>
inline void st_shared(T* p, std::type_identity_t<T> v, std::source_location loc = std::source_location::current()) {
  ::tlk_emu::detail::record_access(::tlk_emu::AccessKind::SharedStore, p, sizeof(T), loc);
  *p = v;
}
inline void count_flops(long long n) { ::tlk_emu::detail::record_flops(static_cast<std::uint64_t>(n)); }
#define TLK_BRANCH(cond) (::tlk_emu::detail::record_branch(static_cast<bool>(cond), std::source_location::current()))
#endif

}  // namespace tlk
