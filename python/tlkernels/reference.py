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
    "kmeans_assign",
    "kmeans_update",
    "kmeans_step",
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


def _expand_rows(T: Tensor | None, P: int) -> Tensor | None:
    """(P, ...) view of a per-data-set tensor with Pt rows (Pt divides P): row p is T[p // (P // Pt)]."""
    if T is None:
        return None
    return T.repeat_interleave(P // T.shape[0], dim=0) if T.shape[0] != P else T


def _as_problems(X: Tensor, C: Tensor) -> tuple[Tensor, Tensor, bool]:
    """(P, N, D) and (P, K, D) views of the k-means inputs; problem p reads X[p // (P // Px)], a
    2-D C is shared by every problem. The flag says whether the outputs keep a P dimension."""
    batched = X.dim() == 3 or C.dim() == 3
    X3 = X if X.dim() == 3 else X.unsqueeze(0)
    P = C.shape[0] if C.dim() == 3 else X3.shape[0]
    Cp = C if C.dim() == 3 else C.unsqueeze(0).expand(P, *C.shape)
    return _expand_rows(X3, P), Cp, batched


def kmeans_assign(X: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest centroid and its squared distance, from exact differences (x - c)^2.

    X: (Px, N, D) or (N, D); C: (P, K, D) or (K, D) (shared); problem p reads X[p // (P // Px)].
    Returns labels (P, N) int64 and dist2 (P, N) in X's dtype ((N,) each when both are 2-D).
    Ties go to the lowest index (torch.argmin returns the first minimum). Materialises the
    (P, N, K, D) difference tensor: for small reference problems only.
    """
    Xp, Cp, batched = _as_problems(X, C)
    if Cp.shape[1] == 0:
        raise ValueError("C must hold at least one centroid")
    d2 = (Xp.unsqueeze(2) - Cp.unsqueeze(1)).square().sum(-1)  # (P, N, K)
    labels = d2.argmin(-1)  # documented to return the first minimum
    dist2 = d2.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    if not batched:
        labels, dist2 = labels[0], dist2[0]
    return labels, dist2


def kmeans_update(X: Tensor, labels: Tensor, K: int, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-cluster weighted sums and total weights (counts when weights is None).

    X: (Px, N, D) or (N, D); labels: (P, N) or (N,) in [0, K), problem p reads
    X[p // (P // Px)]; weights: (P, N), (Px, N), (N,) or None. Returns sums (P, K, D) and counts (P, K) in X's
    dtype ((K, D) and (K,) when X and labels are both unbatched), summed in float64.
    """
    batched = X.dim() == 3 or labels.dim() == 2
    X3 = X if X.dim() == 3 else X.unsqueeze(0)
    P = labels.shape[0] if labels.dim() == 2 else X3.shape[0]
    N, D = X.shape[-2], X.shape[-1]
    Xp = _expand_rows(X3, P).to(torch.float64)
    Lp = labels.long() if labels.dim() == 2 else labels.long().unsqueeze(0).expand(P, N)
    if weights is None:
        Wp = torch.ones(P, N, dtype=torch.float64, device=X.device)
    else:
        Wp = _expand_rows(weights if weights.dim() == 2 else weights.unsqueeze(0), P).to(torch.float64)
    sums = torch.zeros(P, K, D, dtype=torch.float64, device=X.device)
    counts = torch.zeros(P, K, dtype=torch.float64, device=X.device)
    sums.scatter_add_(1, Lp.unsqueeze(-1).expand(P, N, D), Xp * Wp.unsqueeze(-1))
    counts.scatter_add_(1, Lp, Wp)
    sums, counts = sums.to(X.dtype), counts.to(X.dtype)
    if not batched:
        sums, counts = sums[0], counts[0]
    return sums, counts


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


def model_per_sample_grads_loop(model: torch.nn.Module, loss_fn, batch) -> dict[str, Tensor]:
    """Per-sample gradients by a loop of autograd backwards over one batched forward: for each i,
    the gradient of l_i. Works for any model (no vmap), including ones that mix samples, where it
    gives the true d l_i / dθ. loss_fn(model, batch) -> (B,) per-sample losses.

    Returns {name: (B, *param.shape)} for every trainable parameter.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    losses = loss_fn(model, batch)
    rows = []
    for i in range(losses.shape[0]):
        gs = torch.autograd.grad(losses[i], [p for _, p in named], retain_graph=True, allow_unused=True)
        rows.append([torch.zeros_like(p) if g is None else g for (_, p), g in zip(named, gs)])
    return {n: torch.stack([r[k] for r in rows]) for k, (n, _) in enumerate(named)}


# ---------------------------------------------------------------------------------------------
# per-sample gradient products (docs/design.md §4.2): the materialising formulation
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


def kmeans_step(X: Tensor, C: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """kmeans_assign(X, C), then kmeans_update of its labels: (labels, dist2, sums, counts)."""
    labels, dist2 = kmeans_assign(X, C)
    sums, counts = kmeans_update(X, labels, C.shape[-2], weights)
    return labels, dist2, sums, counts
