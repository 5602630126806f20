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
    "per_sample_grads",
    "model_per_sample_grads",
    "ghost_dot",
    "ghost_gram",
    "ghost_norm",
    "clip_update_",
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


def model_per_sample_grads(model: torch.nn.Module, loss_fn, batch) -> dict[str, Tensor]:
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
# ---------------------------------------------------------------------------------------------
# per-sample gradient products (DESIGN.md §3.1): the materialising formulation
# ---------------------------------------------------------------------------------------------
def per_sample_grads(A: Tensor, D: Tensor) -> Tensor:
    """Q_i = Σ_t d_it a_itᵀ for every sample.  A: (B, T, I), D: (B, T, O) -> (B, O, I)."""
    return torch.einsum("bto,bti->boi", D, A)


def ghost_dot(A: Tensor, D: Tensor, G: Tensor) -> Tensor:
    """s_i = ⟨Q_i, G⟩.  A: (B, T, I), D: (B, T, O), G: (O, I) -> (B,) or G: (V, O, I) -> (B, V)."""
    Q = per_sample_grads(A, D)
    if G.dim() == 2:
        return torch.einsum("boi,oi->b", Q, G)
    return torch.einsum("boi,voi->bv", Q, G)


def ghost_gram(A1: Tensor, D1: Tensor, A2: Tensor, D2: Tensor) -> Tensor:
    """⟨Q1_i, Q2_j⟩.  A1: (B1, T, I), D1: (B1, T, O), A2: (B2, T', I), D2: (B2, T', O) -> (B1, B2)."""
    Q1 = per_sample_grads(A1, D1).flatten(1)
    Q2 = per_sample_grads(A2, D2).flatten(1)
    return Q1 @ Q2.T


def ghost_norm(A: Tensor, D: Tensor) -> Tensor:
    """‖Q_i‖² (squared Frobenius norm).  A: (B, T, I), D: (B, T, O) -> (B,)."""
    return per_sample_grads(A, D).flatten(1).square().sum(1)


def clip_update_(alpha: Tensor, index: Tensor, s: Tensor, lr: float) -> Tensor:
    """In place α[index] = clip(α[index] + lr·s, 0, 1); the s of duplicate indices are summed
    before the clip.  alpha: (N,), index: (B,) int64, s: (B,) -> alpha."""
    total = torch.zeros_like(alpha).index_add_(0, index, s.to(alpha.dtype))
    touched = torch.unique(index)
    alpha[touched] = (alpha[touched] + lr * total[touched]).clamp(0.0, 1.0)
    return alpha
