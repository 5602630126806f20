// CPU backend of gradient reversal: one parallel pass, one read of each input, one write.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "grad_reverse.h"

namespace tlk {
namespace {

constexpr int64_t kGrain = 1 << 15;

// out = task - lam * adv (task == nullptr: out = -lam * adv). Half types compute in float.
template <typename scalar_t>
void combine(scalar_t* out, const scalar_t* task, const scalar_t* adv, int64_t n, double lam) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t l = static_cast<acc_t>(lam);
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    if (task != nullptr) {
      for (int64_t i = begin; i < end; ++i) {
        out[i] = static_cast<scalar_t>(static_cast<acc_t>(task[i]) - l * static_cast<acc_t>(adv[i]));
      }
    } else {
      for (int64_t i = begin; i < end; ++i) {
        out[i] = static_cast<scalar_t>(-(l * static_cast<acc_t>(adv[i])));
      }
    }
  });
}

at::Tensor run(const at::Tensor& grad_task, const at::Tensor& grad_adv, double lam,
               const c10::optional<at::Tensor>& lam_tensor) {
  GradReverseArgs a = check_grad_reverse(grad_task, grad_adv, lam, lam_tensor, false);
  at::Tensor out = new_output(a.adv.sizes(), a.adv.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.adv.scalar_type(), "grad_reverse_cpu", [&] {
    combine<scalar_t>(out.data_ptr<scalar_t>(),
                      a.task.defined() ? a.task.const_data_ptr<scalar_t>() : nullptr,
                      a.adv.const_data_ptr<scalar_t>(), a.adv.numel(), a.lam.value);
  });
  return out;
}

at::Tensor grad_reverse_backward_cpu(const at::Tensor& grad, double lam,
                                     const c10::optional<at::Tensor>& lam_tensor) {
  return run(at::Tensor(), grad, lam, lam_tensor);
}

at::Tensor grad_reverse_branch_backward_cpu(const at::Tensor& grad_task, const at::Tensor& grad_adv,
                                            double lam, const c10::optional<at::Tensor>& lam_tensor) {
  return run(grad_task, grad_adv, lam, lam_tensor);
}

}  // namespace

TORCH_LIBRARY_IMPL(tlkernels, CPU, m) {
  m.impl("grad_reverse_backward", &grad_reverse_backward_cpu);
  m.impl("grad_reverse_branch_backward", &grad_reverse_branch_backward_cpu);
}

}  // namespace tlk
