// CUDA backend of gradient reversal (host side): checks, output allocation and the call of the
// torch-free launcher. float16 / bfloat16 run through ATen in float32 (no custom kernel yet).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/launchers.h"
#include "grad_reverse.h"

namespace tlk {
namespace {

at::Tensor run(const at::Tensor& grad_task, const at::Tensor& grad_adv, double lam,
               const c10::optional<at::Tensor>& lam_tensor) {
  GradReverseArgs a = check_grad_reverse(grad_task, grad_adv, lam, lam_tensor, false);
  const c10::cuda::CUDAGuard guard(a.adv.device());
  const auto st = a.adv.scalar_type();
  if (st == at::kHalf || st == at::kBFloat16) {
    at::Tensor l = a.lam.device_tensor.defined() ? a.lam.device_tensor.to(at::kFloat)
                                                 : at::scalar_tensor(a.lam.value, a.adv.options().dtype(at::kFloat));
    at::Tensor r = -(l * a.adv.to(at::kFloat));
    if (a.task.defined()) r = r + a.task.to(at::kFloat);
    return r.to(st);
  }
  at::Tensor out = new_output(a.adv.sizes(), a.adv.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(a.adv.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES(st, "grad_reverse_cuda", [&] {
    C10_CUDA_CHECK(cuda::grad_reverse_combine<scalar_t>(
        out.data_ptr<scalar_t>(), a.task.defined() ? a.task.const_data_ptr<scalar_t>() : nullptr,
        a.adv.const_data_ptr<scalar_t>(), a.adv.numel(), static_cast<scalar_t>(a.lam.value),
        a.lam.device_tensor.defined() ? a.lam.device_tensor.const_data_ptr<scalar_t>() : nullptr,
        stream));
  });
  return out;
}

at::Tensor grad_reverse_backward_cuda(const at::Tensor& grad, double lam,
                                      const c10::optional<at::Tensor>& lam_tensor) {
  return run(at::Tensor(), grad, lam, lam_tensor);
}

at::Tensor grad_reverse_branch_backward_cuda(const at::Tensor& grad_task, const at::Tensor& grad_adv,
                                             double lam, const c10::optional<at::Tensor>& lam_tensor) {
  return run(grad_task, grad_adv, lam, lam_tensor);
}

}  // namespace

TORCH_LIBRARY_IMPL(tlkernels, CUDA, m) {
  m.impl("grad_reverse_backward", &grad_reverse_backward_cuda);
  m.impl("grad_reverse_branch_backward", &grad_reverse_branch_backward_cuda);
}

}  // namespace tlk
