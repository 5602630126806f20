"""tlkernels: fused C++/CUDA kernels and algorithms for transfer learning.

The compiled extension ``tlkernels._C`` registers the ops under ``torch.ops.tlkernels`` (CPU and,
when built with nvcc, CUDA) and ``torch.ops.tlkernels_emu`` (the CUDA device code run on CPU
tensors by the SIMT emulator). ``tlkernels.ops`` wraps them with typed Python functions and
autograd; ``tlkernels.reference`` holds the plain-PyTorch reference of every op.
"""

from . import ops, reference
from ._version import __version__
from .build import build_info, self_check
from .nn import GradientReversal, dann_lambda
from .ops import grad_reverse, grad_reverse_branch

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
    "KMeans",
    "batched_kmeans",
]


def __getattr__(name):
    # k-means (tlkernels.cluster) is imported on first use: it imports scikit-learn's base classes.
    if name in ("KMeans", "batched_kmeans", "cluster"):
        import importlib

        cluster = importlib.import_module(".cluster", __name__)
        return cluster if name == "cluster" else getattr(cluster, name)
    raise AttributeError(f"module 'tlkernels' has no attribute {name!r}")
