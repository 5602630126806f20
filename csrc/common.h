// Shared host-side helpers of every op: argument checks whose messages name the argument,
// and output allocation (optionally poisoned with NaN so that unwritten elements show in tests).
#pragma once

#include <ATen/ATen.h>
#include <string>
#include <vector>

namespace tlk {

// When on (tests), every output allocated through new_output() is filled with NaN (or -1 for
// integer outputs) before the kernel runs, so an element a kernel forgets to write is visible.
bool poison_outputs();
void set_poison_outputs(bool enabled);

// The build as a JSON object (torch version, cuda, emu, cuda_archs, compiler): csrc/ops.cpp.
std::string build_info();

// The k-means CPU kernel level this CPU runs (TLK_KMEANS_SIMD caps it) and every level's name,
// narrowest first: csrc/cpu/kmeans_cpu.cpp.
std::string kmeans_cpu_kernels();
std::vector<std::string> kmeans_cpu_level_names();

at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& options);

// `name` must be a floating tensor of dtype float16, bfloat16, float32 or float64.
void check_floating(const at::Tensor& t, const char* name);

// `t` must have exactly the given sizes; `expected` is printed in the message, e.g. "(B, T, I)".
void check_sizes(const at::Tensor& t, const char* name, at::IntArrayRef sizes, const char* expected);

// `t` must live on `device`; `other` names the tensor that fixed the device.
void check_device(const at::Tensor& t, const char* name, const at::Device& device, const char* other);

// `t` must have dtype `dtype` (that of `other`).
void check_dtype(const at::Tensor& t, const char* name, at::ScalarType dtype, const char* other);

// A gradient-reversal coefficient given as a float: finite.
void check_finite_scalar(double value, const char* name);

// An optional one-element floating tensor overriding a float argument. When it is on the CPU its
// value is read and checked here (no device sync); a device tensor is left to the kernel, which
// reads it in place (checking it would need a device sync). `kernel_reads_cpu_tensor` (the
// emulator) hands a CPU tensor to the kernel as well, so the in-place read path is exercised.
struct ScalarArg {
  double value;                  // the value when no device tensor is used
  at::Tensor device_tensor;      // defined: the kernel reads element 0 of this tensor (dtype of x)
};
ScalarArg resolve_scalar(double value, const c10::optional<at::Tensor>& tensor, const char* name,
                         const at::Tensor& like, const char* like_name,
                         bool kernel_reads_cpu_tensor = false);

}  // namespace tlk
