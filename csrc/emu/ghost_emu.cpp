// Emulator backend of the per-sample gradient products: the CUDA device code of
// kernels/ghost.cuh run by the SIMT emulator on CPU tensors, through the host path the CUDA
// backend uses (ghost_device.h) and the same launch plans.
#include <torch/library.h>

#include "ghost_device.h"
#include "kernels/ghost.cuh"

namespace tlk {
namespace {

struct EmuRunner {
  static constexpr auto launch = [](const tlk::LaunchPlan& plan, auto kernel, auto... args) {
    tlk_emu::launch(plan, kernel, args...);
  };

  void check_device(const at::Tensor& t, const char* name) const {
    TORCH_CHECK_VALUE(t.defined() && t.device().is_cpu(), "the emulator backend takes CPU tensors, got ", name,
                      " on ", t.defined() ? t.device() : at::Device(at::kCPU));
  }
  int64_t dot_splits(int64_t rows, int64_t O, int64_t V) const { return kernels::ghost_dot_splits(rows, O, V); }

  template <typename T>
  void dot(const T* A, const T* D, const T* G, T* part, T* out, int64_t B, int64_t Tn, int64_t I, int64_t O,
           int64_t V) const {
    kernels::ghost_dot<T>(launch, A, D, G, part, out, B, Tn, I, O, V);
  }
  template <typename T>
  void gram(const T* A1, const T* D1, const T* A2, const T* D2, T* out, int64_t B1, int64_t T1, int64_t B2,
            int64_t T2, int64_t I, int64_t O) const {
    kernels::ghost_gram<T>(launch, A1, D1, A2, D2, out, B1, T1, B2, T2, I, O);
  }
  template <typename T>
  void norm_tiles(const T* A, const T* D, T* out, int64_t B, int64_t Tn, int64_t I, int64_t O) const {
    kernels::ghost_norm_tiles<T>(launch, A, D, out, B, Tn, I, O);
  }
  template <typename T>
  void clip(T* alpha, int64_t stride, const int64_t* sorted, const int64_t* order, const T* s, int64_t B,
            T lr) const {
    kernels::clip_update<T>(launch, alpha, stride, sorted, order, s, B, lr);
  }
  // The vendor-GEMM path (ghost_gemm.h): the CPU BLAS on compute-dtype copies stands in for
  // cuBLAS; the reductions are the CUDA device code.
  void gemm(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) const {
    at::mm_out(out, a.to(out.scalar_type()), b.to(out.scalar_type()));
  }
  void bmm(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) const {
    at::bmm_out(out, a.to(out.scalar_type()), b.to(out.scalar_type()));
  }
  template <typename T>
  void segdot(const T* X, const T* Y, T* out, int64_t P, int64_t L, int64_t V, int64_t out_stride) const {
    kernels::ghost_segdot<T>(launch, X, Y, out, P, L, V, out_stride);
  }
  template <typename T>
  void pair_reduce(const T* DD, const T* AA, T* out, int64_t nr, int64_t nc, int64_t r0, int64_t c0, int64_t T1,
                   int64_t T2, int64_t B2) const {
    kernels::ghost_pair_reduce<T>(launch, DD, AA, out, nr, nc, r0, c0, T1, T2, B2);
  }
  template <typename T>
  void dot_finish(const T* rd, T* out, int64_t B, int64_t Tn, int64_t V) const {
    kernels::ghost_dot_finish<T>(launch, rd, out, B, Tn, V);
  }
};

at::Tensor ghost_dot_emu(const at::Tensor& A, const at::Tensor& D, const at::Tensor& G) {
  return ghost_dot_device(EmuRunner{}, A, D, G);
}
at::Tensor ghost_gram_emu(const at::Tensor& A1, const at::Tensor& D1, const at::Tensor& A2, const at::Tensor& D2) {
  return ghost_gram_device(EmuRunner{}, A1, D1, A2, D2);
}
at::Tensor ghost_norm_emu(const at::Tensor& A, const at::Tensor& D) { return ghost_norm_device(EmuRunner{}, A, D); }
void clip_update_emu(at::Tensor& alpha, const at::Tensor& index, const at::Tensor& s, double lr) {
  clip_update_device(EmuRunner{}, alpha, index, s, lr);
}

}  // namespace

TORCH_LIBRARY_IMPL(tlkernels_emu, CPU, m) {
  m.impl("ghost_dot", &ghost_dot_emu);
  m.impl("ghost_gram", &ghost_gram_emu);
  m.impl("ghost_norm", &ghost_norm_emu);
  m.impl("clip_update_", &clip_update_emu);
}

}  // namespace tlk
