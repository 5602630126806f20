// Gradient reversal (docs/design.md §4.1): host-side checks shared by the CPU, CUDA and emulator
// backends. The forward of grad_reverse is a view made in Python (no op, no copy); the ops here
// are the backward passes:
//   grad_reverse_backward(grad (*), lam)                      -> -lam * grad            (*)
//   grad_reverse_branch_backward(grad_task (*), grad_adv (*), lam) -> grad_task - lam * grad_adv (*)
#pragma once

#include <ATen/ATen.h>

#include "common.h"

namespace tlk {

struct GradReverseArgs {
  at::Tensor task;  // contiguous (*) or undefined (plain reversal)
  at::Tensor adv;   // contiguous (*)
  ScalarArg lam;
};

// grad_task may be undefined (grad_reverse_backward). Checks dtypes, shapes, devices and lam,
// and returns contiguous inputs.
inline GradReverseArgs check_grad_reverse(const at::Tensor& grad_task, const at::Tensor& grad_adv,
                                          double lam, const c10::optional<at::Tensor>& lam_tensor,
                                          bool kernel_reads_cpu_tensor) {
  const char* adv_name = grad_task.defined() ? "grad_adv" : "grad";
  check_floating(grad_adv, adv_name);
  if (grad_task.defined()) {
    check_floating(grad_task, "grad_task");
    check_dtype(grad_task, "grad_task", grad_adv.scalar_type(), "grad_adv");
    check_device(grad_task, "grad_task", grad_adv.device(), "grad_adv");
    TORCH_CHECK_VALUE(grad_task.sizes() == grad_adv.sizes(), "grad_task must have the shape of grad_adv (",
                      grad_adv.sizes(), "), got ", grad_task.sizes());
  }
  GradReverseArgs args;
  args.lam = resolve_scalar(lam, lam_tensor, "lam", grad_adv, adv_name, kernel_reads_cpu_tensor);
  args.adv = grad_adv.contiguous();
  if (grad_task.defined()) args.task = grad_task.contiguous();
  return args;
}

}  // namespace tlk
