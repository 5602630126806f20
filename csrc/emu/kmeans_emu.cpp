// Emulator backend of batched k-means: the CUDA device code of kernels/kmeans.cuh run by the
// SIMT emulator on CPU tensors, through the host path the CUDA backend uses (kmeans_device.h)
// and the same launch plans.
#include <torch/library.h>

#include "kernels/kmeans.cuh"
#include "kmeans_device.h"

namespace tlk {
namespace {

struct EmuRunner {
  static constexpr auto launch = [](const tlk::LaunchPlan& plan, auto kernel, auto... args) {
    tlk_emu::launch(plan, kernel, args...);
  };

  void check_device(const at::Tensor& t, const char* name) const {
    TORCH_CHECK_VALUE(!t.defined() || t.device().is_cpu(), "the emulator backend takes CPU tensors, got ", name,
                      " on ", t.device());
  }
  int64_t update_ranges(int64_t N, int64_t P, int64_t K, int64_t D) const {
    return kernels::kmeans_update_ranges(N, P, K, D);
  }
  template <typename T>
  void assign(const T* X, const T* Cs, const T* b, const T* C, const T* base, const T* slope, int64_t* labels,
              T* dist2, int64_t P, int64_t N, int64_t K, int64_t D, int64_t M, bool c_shared) const {
    kernels::kmeans_assign<T>(launch, X, Cs, b, C, base, slope, labels, dist2, P, N, K, D, M, c_shared);
  }
  template <typename T>
  void update(const T* X, const int64_t* L, const T* W, double* part, T* sums, T* counts, int64_t P, int64_t N,
              int64_t K, int64_t D, int64_t R, int64_t M, int64_t MW) const {
    kernels::kmeans_update<T>(launch, X, L, W, part, sums, counts, P, N, K, D, R, M, MW);
  }
};

std::tuple<at::Tensor, at::Tensor> kmeans_assign_emu(const at::Tensor& X, const at::Tensor& C) {
  return kmeans_assign_device(EmuRunner{}, X, C);
}

std::tuple<at::Tensor, at::Tensor> kmeans_update_emu(const at::Tensor& X, const at::Tensor& labels, int64_t K,
                                                     const c10::optional<at::Tensor>& weights) {
  return kmeans_update_device(EmuRunner{}, X, labels, K, weights);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kmeans_step_emu(const at::Tensor& X, const at::Tensor& C,
                                                                          const c10::optional<at::Tensor>& weights) {
  return kmeans_step_device(EmuRunner{}, X, C, weights);
}

}  // namespace

TORCH_LIBRARY_IMPL(tlkernels_emu, CPU, m) {
  m.impl("kmeans_assign", &kmeans_assign_emu);
  m.impl("kmeans_update", &kmeans_update_emu);
  m.impl("kmeans_step", &kmeans_step_emu);
}

}  // namespace tlk
