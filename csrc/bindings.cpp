// The Python module tlkernels._C (pybind11): what is not an op. Build information, the k-means CPU
// kernel level, and the switches of the backends (NaN-poisoned outputs, the emulator's fiber
// stacks). The ops themselves are registered with PyTorch's dispatcher (TORCH_LIBRARY in
// csrc/ops.cpp and TORCH_LIBRARY_IMPL in the backend files) when this library loads, so
// torch.ops, torch.compile and opcheck see them; `import tlkernels._C` is what loads it.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "common.h"
#if TLK_WITH_EMU
#include "emu/emu.h"
#endif

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "tlkernels' compiled extension: build information and backend switches (the ops are in torch.ops)";
  m.attr("with_cuda") = static_cast<bool>(TLK_WITH_CUDA);
  m.attr("with_emu") = static_cast<bool>(TLK_WITH_EMU);
  m.def("build_info", &tlk::build_info,
        "The build as a JSON object: torch version built against, cuda, emu, cuda_archs, compiler.");
  m.def("kmeans_cpu_level", &tlk::kmeans_cpu_kernels,
        "The k-means CPU kernel level this CPU runs now (TLK_KMEANS_SIMD caps it, read at every call).");
  m.def("kmeans_cpu_levels", &tlk::kmeans_cpu_level_names,
        "Every k-means CPU kernel level, narrowest first (the values TLK_KMEANS_SIMD accepts).");
  m.def("set_poison_outputs", &tlk::set_poison_outputs, py::arg("enabled"),
        "Fill every op output with NaN (-1 for integers) before the kernel runs, so unwritten elements show.");
  m.def("poison_outputs", &tlk::poison_outputs, "Whether op outputs are NaN-poisoned.");
#if TLK_WITH_EMU
  m.def(
      "emu_set_fiber_stack_size",
      [](std::size_t bytes) {
        try {
          tlk_emu::set_fiber_stack_size(bytes);
        } catch (const tlk_emu::Error& e) {
          throw py::value_error(std::string("bytes: ") + e.what());
        }
      },
      py::arg("bytes"),
      "Stack size of every emulated CUDA thread (fiber) of later launches; at least 16 KiB, rounded up to "
      "whole pages. Process-wide; the default is 64 KiB or the TLK_EMU_FIBER_STACK environment variable.");
  m.def("emu_fiber_stack_size", &tlk_emu::fiber_stack_size, "The emulator's fiber stack size in bytes.");
#endif
}
