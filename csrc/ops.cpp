// Every op schema of tlkernels, in one place. The emulator namespace (tlkernels_emu) carries the
// same schemas for the ops whose CUDA device code it runs.
#include <torch/library.h>

#include <string>

#include "common.h"

// `import tlkernels._C` (the pybind11 module of csrc/bindings.cpp) loads this library, which runs
// the TORCH_LIBRARY registrations below.
namespace tlk {
namespace {

constexpr const char* kGradReverseBackward =
    "grad_reverse_backward(Tensor grad, float lam, Tensor? lam_tensor=None) -> Tensor";
constexpr const char* kGradReverseBranchBackward =
    "grad_reverse_branch_backward(Tensor grad_task, Tensor grad_adv, float lam, "
    "Tensor? lam_tensor=None) -> Tensor";
constexpr const char* kKMeansAssign = "kmeans_assign(Tensor X, Tensor C) -> (Tensor labels, Tensor dist2)";
constexpr const char* kKMeansUpdate =
    "kmeans_update(Tensor X, Tensor labels, int K, Tensor? weights=None) -> (Tensor sums, Tensor counts)";
constexpr const char* kKMeansStep =
    "kmeans_step(Tensor X, Tensor C, Tensor? weights=None) -> (Tensor labels, Tensor dist2, Tensor sums, "
    "Tensor counts)";
// Per-sample gradient products (docs/design.md §4.2, csrc/ghost.h).
constexpr const char* kGhostDot = "ghost_dot(Tensor A, Tensor D, Tensor G) -> Tensor";
constexpr const char* kGhostGram = "ghost_gram(Tensor A1, Tensor D1, Tensor A2, Tensor D2) -> Tensor";
constexpr const char* kGhostNorm = "ghost_norm(Tensor A, Tensor D) -> Tensor";
// Mutates alpha and returns nothing: torch.compile / functionalization refuse custom ops whose
// outputs alias an input (`-> Tensor(a!)`); the Python wrapper returns alpha.
constexpr const char* kClipUpdate =
    "clip_update_(Tensor(a!) alpha, Tensor index, Tensor s, float lr) -> ()";

}  // namespace

std::string build_info() {
  std::string s = "{\"torch\": \"" TLK_TORCH_VERSION "\", \"cuda\": ";
  s += TLK_WITH_CUDA ? "true" : "false";
  s += ", \"emu\": ";
  s += TLK_WITH_EMU ? "true" : "false";
  s += ", \"cuda_archs\": \"" TLK_CUDA_ARCHS "\", \"compiler\": \"";
#if defined(__clang__)
  s += "clang " __clang_version__;
#elif defined(__GNUC__)
  s += "gcc " __VERSION__;
#endif
  s += "\"}";
  return s;
}

// The ops with device code: defined in both namespaces (tlkernels_emu runs their CUDA device
// code on CPU tensors through the SIMT emulator).
constexpr const char* kKernelOps[] = {
    kGradReverseBackward, kGradReverseBranchBackward, kGhostDot, kGhostGram, kGhostNorm, kClipUpdate,
    kKMeansAssign, kKMeansUpdate, kKMeansStep,
};

TORCH_LIBRARY(tlkernels, m) {
  m.def("_build_info() -> str", &build_info);
  m.def("_set_poison_outputs(bool enabled) -> ()", &set_poison_outputs);
  for (const char* schema : kKernelOps) m.def(schema);
}

#if TLK_WITH_EMU
TORCH_LIBRARY(tlkernels_emu, m) {
  for (const char* schema : kKernelOps) m.def(schema);
}
#endif

}  // namespace tlk
