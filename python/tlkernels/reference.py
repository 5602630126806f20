"""Plain-PyTorch reference of every tlkernels op.

Tests compare the CPU, emulator and CUDA backends against these functions (computed in float64),
and benchmarks use them as the "what you would write without tlkernels" baseline. They favour
clarity over speed and never call into ``torch.ops.tlkernels``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "grad_reverse_backward",
    "grad_reverse_branch_backward",
    "grad_reverse",
    "grad_reverse_branch",
]


def grad_reverse_backward(grad: Tensor, lam: float | Tensor) -> Tensor:
    """-lam * grad.  grad: (*) -> (*)."""
    return torch.neg(grad).mul(lam)


def grad_reverse_branch_backward(grad_task: Tensor, grad_adv: Tensor, lam: float | Tensor) -> Tensor:
    """grad_task - lam * grad_adv.  grad_task, grad_adv: (*) -> (*)."""
    return grad_task - grad_adv * lam


class _PlainGradReverse(torch.autograd.Function):
    """The textbook gradient-reversal layer: identity forward, neg and mul backward."""

    @staticmethod
    def forward(ctx, x: Tensor, lam: float) -> Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad.neg().mul(ctx.lam), None


def grad_reverse(x: Tensor, lam: float) -> Tensor:
    """Identity forward, -lam * grad backward, as plain autograd.  x: (*) -> (*)."""
    return _PlainGradReverse.apply(x, lam)


def grad_reverse_branch(x: Tensor, lam: float) -> tuple[Tensor, Tensor]:
    """The DANN fork as plain autograd: (x, grad_reverse(x, lam)); autograd sums the two branch
    gradients itself.  x: (*) -> ((*), (*))."""
    return x, grad_reverse(x, lam)


class _FunctionalModel:
    """Calls `model` with substituted parameters (torch.func.functional_call)."""

    def __init__(self, model, params, buffers):
        self.model, self.params, self.buffers = model, params, buffers

    def __call__(self, *args, **kwargs):
        return torch.func.functional_call(self.model, (self.params, self.buffers), args, kwargs)


def per_sample_grads(model: torch.nn.Module, loss_fn, batch) -> dict[str, Tensor]:
    """Per-sample gradients by torch.func (vmap over grad of functional_call): the materialising
    reference of ``tlkernels.persample``. loss_fn(model, batch) -> (B,) per-sample losses, where
    `batch` is a tensor or a tuple of tensors with the batch first.

    Returns {name: (B, *param.shape)} for every trainable parameter.
    """
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())

    def one(p, sample):
        b1 = torch.utils._pytree.tree_map(lambda t: t.unsqueeze(0), sample)
        return loss_fn(_FunctionalModel(model, {**p, **frozen}, buffers), b1)[0]

    return torch.func.vmap(torch.func.grad(one), in_dims=(None, 0))(params, batch)
