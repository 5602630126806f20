// Emulator backend of batched k-means: the CUDA device code of kernels/kmeans.cuh run by the
// SIMT emulator on CPU tensors, through the host path the CUDA backend uses (kmeans_device.h)
// and the same launch plans; the assignment's vendor-GEMM path with the CPU BLAS as the GEMM.
#include <torch/library.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "kernels/kmeans.cuh"
#include "kmeans_device.h"
#include "kmeans_gemm.h"

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
  // The vendor-GEMM path (kmeans_gemm.h): the CPU BLAS stands in for cuBLAS. TLK_EMU_GEMM=tf32|bf16
  // coarsens its float32 inputs as tensor cores read them (the low mantissa bits truncated:
  // 10 / 7 explicit bits kept), so that the band and the rescoring kernel are tested against a GEMM
  // as coarse as the GPU's; the emulator reports that precision (or the coarser one torch's
  // float32 matmul settings allow the CPU BLAS). TLK_EMU_GEMM_CLAIM overrides what it reports
  // (tests: a band too narrow for the GEMM must give wrong labels).
  static KMeansGemmPrecision env_precision(const char* name, KMeansGemmPrecision dflt) {
    const char* e = std::getenv(name);
    if (e == nullptr || *e == '\0') return dflt;
    if (std::strcmp(e, "ieee") == 0) return KMeansGemmPrecision::Ieee;
    if (std::strcmp(e, "tf32") == 0) return KMeansGemmPrecision::Tf32;
    if (std::strcmp(e, "bf16") == 0) return KMeansGemmPrecision::Bf16;
    TORCH_CHECK_VALUE(false, name, " must be 'ieee', 'tf32' or 'bf16', got '", e, "'");
    return dflt;
  }
  static KMeansGemmPrecision emulated() { return env_precision("TLK_EMU_GEMM", KMeansGemmPrecision::Ieee); }
  KMeansGemmPrecision gemm_precision(at::ScalarType dtype) const {
    if (dtype != at::kFloat) return KMeansGemmPrecision::Ieee;
    const KMeansGemmPrecision p = kmeans_coarser(emulated(), kmeans_torch_matmul_precision(at::Float32Backend::MKLDNN));
    return env_precision("TLK_EMU_GEMM_CLAIM", p);
  }
  // v with its float32 mantissa cut to `keep` explicit bits (toward zero).
  static at::Tensor truncate_mantissa(const at::Tensor& v, int keep) {
    const int32_t mask = static_cast<int32_t>(~((uint32_t{1} << (23 - keep)) - 1u));
    return v.contiguous().view(at::kInt).bitwise_and(mask).view(at::kFloat);
  }
  static at::Tensor coarsen(const at::Tensor& v) {
    if (v.scalar_type() != at::kFloat) return v;
    switch (emulated()) {
      case KMeansGemmPrecision::Tf32: return truncate_mantissa(v, 10);
      case KMeansGemmPrecision::Bf16: return truncate_mantissa(v, 7);
      default: return v;
    }
  }
  void gemm(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) const {
    if (a.scalar_type() == out.scalar_type()) {
      at::mm_out(out, coarsen(a), coarsen(b));
    } else {  // bf16 operands: exact products, float32 accumulation
      at::mm_out(out, a.to(out.scalar_type()), b.to(out.scalar_type()));
    }
  }
  template <typename T>
  void scores(const T* G, const T* X, const T* V, const T* b, const T* C, const T* base, const T* slope,
              int64_t* labels, T* dist2, int64_t p0, int64_t np, int64_t n0, int64_t rows, int64_t N, int64_t K,
              int64_t D, int64_t M, bool c_shared) const {
    kernels::kmeans_scores<T>(launch, G, rows, X, V, b, C, base, slope, labels, dist2, p0, np, n0, rows, N, K, D,
                              M, c_shared);
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
