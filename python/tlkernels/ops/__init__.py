"""Typed wrappers of ``torch.ops.tlkernels.*``, with fake (meta) kernels and autograd, one module
per op family, each op's ``register_fake`` / ``register_autograd`` beside its wrapper:

- ``gradient_reversal``: ``grad_reverse``, ``grad_reverse_branch`` and their backward ops;
- ``ghost``: the per-sample gradient products ``ghost_dot``, ``ghost_gram``, ``ghost_norm`` and
  ``clip_update_``;
- ``kmeans``: ``kmeans_assign``, ``kmeans_update``, ``kmeans_step``.

Every op exists in two namespaces with the same schema: ``torch.ops.tlkernels`` (CPU tensors run
the C++ path, CUDA tensors the CUDA kernels) and ``torch.ops.tlkernels_emu`` (CPU tensors run the
CUDA device code under the SIMT emulator; tests only). ``BACKEND_NAMESPACES`` lists the
namespaces present in this build. Every public name is importable from ``tlkernels.ops``.
"""

from __future__ import annotations

from ._common import BACKEND_NAMESPACES, BUILD_INFO
from .ghost import clip_update_, ghost_dot, ghost_gram, ghost_norm
from .gradient_reversal import grad_reverse, grad_reverse_backward, grad_reverse_branch, grad_reverse_branch_backward
from .kmeans import kmeans_assign, kmeans_step, kmeans_update

__all__ = [
    "BACKEND_NAMESPACES",
    "BUILD_INFO",
    "clip_update_",
    "ghost_dot",
    "ghost_gram",
    "ghost_norm",
    "grad_reverse",
    "grad_reverse_backward",
    "grad_reverse_branch",
    "grad_reverse_branch_backward",
    "kmeans_assign",
    "kmeans_step",
    "kmeans_update",
]
