// Emulator backend of gradient reversal: the CUDA device code of kernels/grad_reverse.cuh run by
// the SIMT emulator on CPU tensors, with the launch plan the GPU gets.
#include <torch/library.h>

#include "grad_reverse.h"
#include "kernels/grad_reverse.cuh"

namespace tlk {
namespace {

at::Tensor run(const at::Tensor& grad_task, const at::Tensor& grad_adv, double lam,
               const c10::optional<at::Tensor>& lam_tensor) {
  GradReverseArgs a = check_grad_reverse(grad_task, grad_adv, lam, lam_tensor, true);
  TORCH_CHECK_VALUE(a.adv.device().is_cpu(), "the emulator backend takes CPU tensors, got grad on ",
                    a.adv.device());
  TORCH_CHECK_VALUE(a.adv.scalar_type() == at::kFloat || a.adv.scalar_type() == at::kDouble,
                    "the emulator backend of grad_reverse runs float32 and float64, got ",
                    a.adv.scalar_type());
  at::Tensor out = new_output(a.adv.sizes(), a.adv.options());
  AT_DISPATCH_FLOATING_TYPES(a.adv.scalar_type(), "grad_reverse_emu", [&] {
    auto launch = [](const tlk::LaunchPlan& plan, auto kernel, auto... args) {
      tlk_emu::launch(plan, kernel, args...);
    };
    kernels::grad_reverse_combine<scalar_t>(
        launch, out.data_ptr<scalar_t>(),
        a.task.defined() ? a.task.const_data_ptr<scalar_t>() : nullptr,
        a.adv.const_data_ptr<scalar_t>(), a.adv.numel(), static_cast<scalar_t>(a.lam.value),
        a.lam.device_tensor.defined() ? a.lam.device_tensor.const_data_ptr<scalar_t>() : nullptr);
  });
  return out;
}

at::Tensor grad_reverse_backward_emu(const at::Tensor& grad, double lam,
                                     const c10::optional<at::Tensor>& lam_tensor) {
  return run(at::Tensor(), grad, lam, lam_tensor);
}

at::Tensor grad_reverse_branch_backward_emu(const at::Tensor& grad_task, const at::Tensor& grad_adv,
                                            double lam, const c10::optional<at::Tensor>& lam_tensor) {
  return run(grad_task, grad_adv, lam, lam_tensor);
}

}  // namespace

TORCH_LIBRARY_IMPL(tlkernels_emu, CPU, m) {
  m.impl("grad_reverse_backward", &grad_reverse_backward_emu);
  m.impl("grad_reverse_branch_backward", &grad_reverse_branch_backward_emu);
}

}  // namespace tlk
