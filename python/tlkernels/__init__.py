"""tlkernels: fused C++/CUDA kernels and algorithms for transfer learning.

The compiled extension ``tlkernels._C`` registers the ops under ``torch.ops.tlkernels`` (CPU and,
when built with nvcc, CUDA) and ``torch.ops.tlkernels_emu`` (the CUDA device code run on CPU
tensors by the SIMT emulator). ``tlkernels.ops`` wraps them with typed Python functions and
autograd; ``tlkernels.reference`` holds the plain-PyTorch reference of every op.
"""

from ._version import __version__
from . import ops, reference
from .build import build_info, self_check
from .ops import grad_reverse, grad_reverse_branch
from .nn import GradientReversal, dann_lambda

__all__ = [
    "__version__",
    "build_info",
    "self_check",
    "grad_reverse",
    "grad_reverse_branch",
    "GradientReversal",
    "dann_lambda",
    "ops",
    "reference",
]
