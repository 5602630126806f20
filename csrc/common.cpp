#include "common.h"

#include <atomic>
#include <cmath>
#include <limits>

namespace tlk {

namespace {
std::atomic<bool> g_poison{false};
}

bool poison_outputs() { return g_poison.load(std::memory_order_relaxed); }
void set_poison_outputs(bool enabled) { g_poison.store(enabled, std::memory_order_relaxed); }

at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor out = at::empty(sizes, options);
  if (poison_outputs()) {
    if (at::isFloatingType(out.scalar_type())) {
      out.fill_(std::numeric_limits<double>::quiet_NaN());
    } else {
      out.fill_(-1);
    }
  }
  return out;
}

void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.defined(), name, " must be a tensor, got None");
  const auto st = t.scalar_type();
  TORCH_CHECK_VALUE(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
                    name, " must be a floating tensor (float16, bfloat16, float32 or float64), got ",
                    st);
}

void check_sizes(const at::Tensor& t, const char* name, at::IntArrayRef sizes, const char* expected) {
  TORCH_CHECK_VALUE(t.sizes() == sizes, name, " must have shape ", expected, " = ", sizes, ", got ",
                    t.sizes());
}

void check_device(const at::Tensor& t, const char* name, const at::Device& device, const char* other) {
  TORCH_CHECK_VALUE(t.device() == device, name, " must be on the device of ", other, " (", device,
                    "), got ", t.device());
}

void check_dtype(const at::Tensor& t, const char* name, at::ScalarType dtype, const char* other) {
  TORCH_CHECK_VALUE(t.scalar_type() == dtype, name, " must have the dtype of ", other, " (", dtype,
                    "), got ", t.scalar_type());
}

void check_finite_scalar(double value, const char* name) {
  TORCH_CHECK_VALUE(std::isfinite(value), name, " must be finite, got ", value);
}

ScalarArg resolve_scalar(double value, const c10::optional<at::Tensor>& tensor, const char* name,
                         const at::Tensor& like, const char* like_name,
                         bool kernel_reads_cpu_tensor) {
  if (!tensor.has_value() || !tensor->defined()) {
    check_finite_scalar(value, name);
    return {value, at::Tensor()};
  }
  const at::Tensor& t = *tensor;
  TORCH_CHECK_VALUE(t.numel() == 1, name, " must be a float or a tensor with one element, got shape ",
                    t.sizes());
  TORCH_CHECK_VALUE(at::isFloatingType(t.scalar_type()), name,
                    " must be a floating tensor, got ", t.scalar_type());
  if (t.device().is_cpu()) {
    const double v = t.item<double>();
    check_finite_scalar(v, name);
    if (kernel_reads_cpu_tensor && like.device().is_cpu()) {
      return {v, t.reshape({1}).to(like.scalar_type()).contiguous()};
    }
    return {v, at::Tensor()};
  }
  check_device(t, name, like.device(), like_name);
  return {value, t.reshape({1}).to(like.scalar_type()).contiguous()};
}

}  // namespace tlk
