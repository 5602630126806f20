"""Typed wrappers of ``torch.ops.tlkernels.*``, with fake (meta) kernels and autograd.

Every op exists in two namespaces with the same schema:
``torch.ops.tlkernels`` (CPU tensors run the C++ path, CUDA tensors the CUDA kernels) and
``torch.ops.tlkernels_emu`` (CPU tensors run the CUDA device code under the SIMT emulator; tests
only). ``BACKEND_NAMESPACES`` lists the namespaces present in this build.
"""

from __future__ import annotations

import json
import math
import numbers

import torch
from torch import Tensor

from . import _C  # noqa: F401  (loads the library: registers the ops)

__all__ = [
    "grad_reverse",
    "grad_reverse_branch",
    "grad_reverse_backward",
    "grad_reverse_branch_backward",
    "kmeans_assign",
    "kmeans_update",
    "BACKEND_NAMESPACES",
]

BUILD_INFO: dict = json.loads(torch.ops.tlkernels._build_info())
BACKEND_NAMESPACES: tuple[str, ...] = ("tlkernels",) + (("tlkernels_emu",) if BUILD_INFO["emu"] else ())


# ---------------------------------------------------------------------------------------------
# argument checks (messages name the argument and what was expected)
# ---------------------------------------------------------------------------------------------
def _check_floating(x, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor (float16, bfloat16, float32 or float64), got {x.dtype}")


def _split_lam(lam, x: Tensor) -> tuple[float, Tensor | None]:
    """Returns (lam_float, lam_tensor): a float lam is checked to be finite; a tensor lam must hold
    one floating element on the device of x (or the CPU). Its value is checked by the op when it
    is on the CPU (a device tensor is read in place by the kernel, never synchronised)."""
    if isinstance(lam, Tensor):
        if lam.numel() != 1:
            raise ValueError(f"lam must be a float or a tensor with one element, got shape {tuple(lam.shape)}")
        if not lam.is_floating_point():
            raise ValueError(f"lam must be a floating tensor, got {lam.dtype}")
        if lam.device != x.device and lam.device.type != "cpu":
            raise ValueError(f"lam must be on the device of x ({x.device}) or the CPU, got {lam.device}")
        return 1.0, lam.detach()
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real):
        raise TypeError(f"lam must be a float or a 0-dim tensor, got {type(lam).__name__}")
    lam = float(lam)
    if not math.isfinite(lam):
        raise ValueError(f"lam must be finite, got {lam}")
    return lam, None


# ---------------------------------------------------------------------------------------------
# the backward ops: fake kernels and their own autograd (so double backward works)
# ---------------------------------------------------------------------------------------------
def grad_reverse_backward(grad: Tensor, lam: float = 1.0, lam_tensor: Tensor | None = None) -> Tensor:
    """-lam * grad in one pass.

    grad: (*) floating. lam: float; lam_tensor: optional one-element tensor overriding lam.
    Returns (*), contiguous, dtype of grad.
    """
    return torch.ops.tlkernels.grad_reverse_backward(grad, lam, lam_tensor)


def grad_reverse_branch_backward(grad_task: Tensor, grad_adv: Tensor, lam: float = 1.0,
                                 lam_tensor: Tensor | None = None) -> Tensor:
    """grad_task - lam * grad_adv in one pass (one read of each input, one write).

    grad_task, grad_adv: (*) of one shape, dtype and device. Returns (*).
    """
    return torch.ops.tlkernels.grad_reverse_branch_backward(grad_task, grad_adv, lam, lam_tensor)


def _register(namespace: str) -> None:
    scale = f"{namespace}::grad_reverse_backward"
    combine = f"{namespace}::grad_reverse_branch_backward"
    scale_op = getattr(torch.ops, namespace).grad_reverse_backward
    combine_op = getattr(torch.ops, namespace).grad_reverse_branch_backward

    @torch.library.register_fake(scale)
    def _(grad, lam, lam_tensor=None):
        return grad.new_empty(grad.shape)

    @torch.library.register_fake(combine)
    def _(grad_task, grad_adv, lam, lam_tensor=None):
        torch._check(grad_task.shape == grad_adv.shape,
                     lambda: f"grad_task must have the shape of grad_adv ({grad_adv.shape}), got {grad_task.shape}")
        return grad_adv.new_empty(grad_adv.shape)

    def setup_scale(ctx, inputs, output):
        ctx.lam, ctx.lam_tensor = inputs[1], inputs[2]

    def backward_scale(ctx, grad_out):
        return scale_op(grad_out, ctx.lam, ctx.lam_tensor), None, None

    def backward_combine(ctx, grad_out):
        return grad_out, scale_op(grad_out, ctx.lam, ctx.lam_tensor), None, None

    def setup_combine(ctx, inputs, output):
        ctx.lam, ctx.lam_tensor = inputs[2], inputs[3]

    torch.library.register_autograd(scale, backward_scale, setup_context=setup_scale)
    torch.library.register_autograd(combine, backward_combine, setup_context=setup_combine)


for _ns in BACKEND_NAMESPACES:
    _register(_ns)


# ---------------------------------------------------------------------------------------------
# k-means (DESIGN.md §3.3): no autograd (labels are integers, the update is a partition sum)
# ---------------------------------------------------------------------------------------------
def kmeans_assign(X: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest centroid of every point and its exact squared distance, without an N×K matrix.

    X: (Px, N, D) or (N, D) data sets; C: (P, K, D) or (K, D) (shared by all problems), same
    dtype (float32 or float64) and device, P a multiple of Px: problem p reads X[p // (P // Px)],
    so n_init runs over one data set are extra problems that read it once (a 2-D X, or one
    expanded with stride 0, is never copied). Returns labels (P, N) int64 and dist2 (P, N) in X's dtype ((N,) each
    when X and C are both 2-D). Ties go to the lowest index; dist2 is Σ (x − c)² for the winner.
    Raises ValueError for NaN / inf in X or C.
    """
    return torch.ops.tlkernels.kmeans_assign(X, C)


def kmeans_update(X: Tensor, labels: Tensor, K: int, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-cluster sums and total weights, summed in float64 in a fixed order (deterministic).

    X: (Px, N, D) or (N, D) data sets; labels: (P, N) or (N,) int64 in [0, K), P a multiple of
    Px (problem p reads X[p // (P // Px)]); weights: (P, N), (Px, N), (N,) or None (all ones),
    finite and non-negative. Returns sums (P, K, D) and counts (P, K) in
    X's dtype ((K, D) and (K,) when X and labels are both unbatched).
    """
    return torch.ops.tlkernels.kmeans_update(X, labels, K, weights)


def _register_kmeans(namespace: str) -> None:
    @torch.library.register_fake(f"{namespace}::kmeans_assign")
    def _(X, C):
        batched = X.dim() == 3 or C.dim() == 3
        P = C.shape[0] if C.dim() == 3 else (X.shape[0] if X.dim() == 3 else 1)
        shape = (P, X.shape[-2]) if batched else (X.shape[-2],)
        return X.new_empty(shape, dtype=torch.long), X.new_empty(shape)

    @torch.library.register_fake(f"{namespace}::kmeans_update")
    def _(X, labels, K, weights=None):
        batched = X.dim() == 3 or labels.dim() == 2
        P = labels.shape[0] if labels.dim() == 2 else (X.shape[0] if X.dim() == 3 else 1)
        lead = (P,) if batched else ()
        return X.new_empty(lead + (K, X.shape[-1])), X.new_empty(lead + (K,))


for _ns in BACKEND_NAMESPACES:
    _register_kmeans(_ns)


# ---------------------------------------------------------------------------------------------
# the user-facing functions: forward is a view (no copy), backward one fused pass
# ---------------------------------------------------------------------------------------------
class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(x: Tensor, lam: float, lam_tensor: Tensor | None) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.lam, ctx.lam_tensor = inputs[1], inputs[2]

    @staticmethod
    def backward(ctx, grad):
        return torch.ops.tlkernels.grad_reverse_backward(grad, ctx.lam, ctx.lam_tensor), None, None


class _GradReverseBranch(torch.autograd.Function):
    @staticmethod
    def forward(x: Tensor, lam: float, lam_tensor: Tensor | None) -> tuple[Tensor, Tensor]:
        return x.view_as(x), x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.lam, ctx.lam_tensor = inputs[1], inputs[2]
        # An unused branch gives None instead of a tensor of zeros: no pass over zeros.
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad_task, grad_adv):
        if grad_adv is None:
            return grad_task, None, None
        if grad_task is None:
            return torch.ops.tlkernels.grad_reverse_backward(grad_adv, ctx.lam, ctx.lam_tensor), None, None
        return (torch.ops.tlkernels.grad_reverse_branch_backward(grad_task, grad_adv, ctx.lam, ctx.lam_tensor),
                None, None)


def grad_reverse(x: Tensor, lam: float | Tensor = 1.0) -> Tensor:
    """Gradient reversal layer (Ganin & Lempitsky): identity forward (a view of x, no copy),
    backward -lam * grad in one pass.

    x: (*) floating tensor. lam: float, or a one-element tensor on x's device or the CPU (so a
    schedule can live on the device). Returns (*), a view of x.
    """
    _check_floating(x, "x")
    lam_f, lam_t = _split_lam(lam, x)
    return _GradReverse.apply(x, lam_f, lam_t)


def grad_reverse_branch(x: Tensor, lam: float | Tensor = 1.0) -> tuple[Tensor, Tensor]:
    """The DANN fork: (x_task, x_adv), both views of x. Feed x_task to the label head and x_adv
    to the domain head; backward returns grad_task - lam * grad_adv in one pass (plain autograd
    would run neg, mul and an accumulation add).

    x: (*) floating tensor. lam: float or one-element tensor. Returns ((*), (*)).
    """
    _check_floating(x, "x")
    lam_f, lam_t = _split_lam(lam, x)
    return _GradReverseBranch.apply(x, lam_f, lam_t)
