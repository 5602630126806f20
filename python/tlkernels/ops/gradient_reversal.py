"""Gradient reversal (docs/design.md §4.1): ``grad_reverse`` and the DANN fork
``grad_reverse_branch`` (forward a view, backward one fused pass), and the two backward ops with
their fake kernels and their own autograd (so double backward works)."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from ._common import BACKEND_NAMESPACES, check_floating

__all__ = ["grad_reverse", "grad_reverse_backward", "grad_reverse_branch", "grad_reverse_branch_backward"]


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


def grad_reverse_branch_backward(
    grad_task: Tensor, grad_adv: Tensor, lam: float = 1.0, lam_tensor: Tensor | None = None
) -> Tensor:
    """grad_task - lam * grad_adv in one pass (one read of each input, one write).

    grad_task, grad_adv: (*) of one shape, dtype and device. Returns (*).
    """
    return torch.ops.tlkernels.grad_reverse_branch_backward(grad_task, grad_adv, lam, lam_tensor)


def _register(namespace: str) -> None:
    scale = f"{namespace}::grad_reverse_backward"
    combine = f"{namespace}::grad_reverse_branch_backward"
    scale_op = getattr(torch.ops, namespace).grad_reverse_backward

    @torch.library.register_fake(scale)
    def _(grad, lam, lam_tensor=None):
        return grad.new_empty(grad.shape)

    @torch.library.register_fake(combine)
    def _(grad_task, grad_adv, lam, lam_tensor=None):
        torch._check(
            grad_task.shape == grad_adv.shape,
            lambda: f"grad_task must have the shape of grad_adv ({grad_adv.shape}), got {grad_task.shape}",
        )
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
        return (
            torch.ops.tlkernels.grad_reverse_branch_backward(grad_task, grad_adv, ctx.lam, ctx.lam_tensor),
            None,
            None,
        )


def grad_reverse(x: Tensor, lam: float | Tensor = 1.0) -> Tensor:
    """Gradient reversal layer (Ganin & Lempitsky): identity forward (a view of x, no copy),
    backward -lam * grad in one pass.

    x: (*) floating tensor. lam: float, or a one-element tensor on x's device or the CPU (so a
    schedule can live on the device). Returns (*), a view of x.
    """
    check_floating(x, "x")
    lam_f, lam_t = _split_lam(lam, x)
    return _GradReverse.apply(x, lam_f, lam_t)


def grad_reverse_branch(x: Tensor, lam: float | Tensor = 1.0) -> tuple[Tensor, Tensor]:
    """The DANN fork: (x_task, x_adv), both views of x. Feed x_task to the label head and x_adv
    to the domain head; backward returns grad_task - lam * grad_adv in one pass (plain autograd
    would run neg, mul and an accumulation add).

    x: (*) floating tensor. lam: float or one-element tensor. Returns ((*), (*)).
    """
    check_floating(x, "x")
    lam_f, lam_t = _split_lam(lam, x)
    return _GradReverseBranch.apply(x, lam_f, lam_t)
