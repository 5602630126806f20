"""Per-sample gradient products (docs/design.md §4.2): ``ghost_dot``, ``ghost_gram``,
``ghost_norm`` and the fused SOSELETO step ``clip_update_``, with their fake kernels and the
autograd of the three differentiable ops."""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import BACKEND_NAMESPACES, check_floating

__all__ = ["clip_update_", "ghost_dot", "ghost_gram", "ghost_norm"]


def _ghost_dot_backward_terms(A: Tensor, D: Tensor, G: Tensor, gs: Tensor, needs: tuple[bool, bool, bool]):
    """Gradients of s = ghost_dot(A, D, G) given gs = ∂L/∂s, in plain (differentiable) torch ops.

    With G (O, I), gs (B,):  dA_i = gs_i D_i G,  dD_i = gs_i A_i Gᵀ,  dG = Σ_i gs_i D_iᵀ A_i.
    With G (V, O, I), gs (B, V): the same summed over v.
    """
    B, T, I = A.shape
    O = D.shape[2]
    dA = dD = dG = None
    if G.dim() == 2:
        w = gs.reshape(B, 1, 1)
        if needs[0]:
            dA = (D * w) @ G
        if needs[1]:
            dD = (A @ G.T) * w
        if needs[2]:
            dG = (D * w).reshape(B * T, O).T @ A.reshape(B * T, I)
    else:
        V = G.shape[0]
        w = gs.reshape(B, 1, V, 1)
        if needs[0]:
            dA = (D.unsqueeze(2) * w).reshape(B, T, V * O) @ G.reshape(V * O, I)
        if needs[1]:
            dD = ((A @ G.reshape(V * O, I).T).reshape(B, T, V, O) * w).sum(2)
        if needs[2]:
            dG = torch.einsum("bv,bto,bti->voi", gs, D, A)
    return dA, dD, dG


def _ghost_norm_backward_terms(A: Tensor, D: Tensor, gn: Tensor, needs: tuple[bool, bool]):
    """Gradients of n_i = ‖D_iᵀ A_i‖²: dA_i = 2 gn_i D_i Q_i, dD_i = 2 gn_i A_i Q_iᵀ, through the
    T×T Grams (D_i D_iᵀ A_i) or Q_i itself, whichever is smaller."""
    B, T, I = A.shape
    O = D.shape[2]
    w = 2 * gn.reshape(B, 1, 1)
    dA = dD = None
    if T * T <= O * I:
        if needs[0]:
            dA = (D @ D.mT) @ A * w
        if needs[1]:
            dD = (A @ A.mT) @ D * w
    else:
        Q = D.mT @ A
        if needs[0]:
            dA = D @ Q * w
        if needs[1]:
            dD = A @ Q.mT * w
    return dA, dD


def _register_ghost(namespace: str) -> None:
    def check_pair(A, D, a, d):
        torch._check(A.dim() == 3, lambda: f"{a} must have shape (B, T, I), got {tuple(A.shape)}")
        torch._check(D.dim() == 3, lambda: f"{d} must have shape (B, T, O), got {tuple(D.shape)}")
        torch._check(
            D.shape[:2] == A.shape[:2],
            lambda: f"{d} must have the B and T of {a} {tuple(A.shape[:2])}, got {tuple(D.shape)}",
        )
        torch._check(D.dtype == A.dtype, lambda: f"{d} must have the dtype of {a} ({A.dtype}), got {D.dtype}")

    @torch.library.register_fake(f"{namespace}::ghost_dot")
    def _(A, D, G):
        check_pair(A, D, "A", "D")
        torch._check(G.dim() in (2, 3), lambda: f"G must have shape (O, I) or (V, O, I), got {tuple(G.shape)}")
        torch._check(
            G.shape[-2:] == (D.shape[2], A.shape[2]),
            lambda: f"G must have shape (O, I) = {(D.shape[2], A.shape[2])}, got {tuple(G.shape)}",
        )
        return A.new_empty((A.shape[0],) if G.dim() == 2 else (A.shape[0], G.shape[0]))

    @torch.library.register_fake(f"{namespace}::ghost_gram")
    def _(A1, D1, A2, D2):
        check_pair(A1, D1, "A1", "D1")
        check_pair(A2, D2, "A2", "D2")
        torch._check(
            A2.shape[2] == A1.shape[2] and D2.shape[2] == D1.shape[2],
            lambda: "A2 and D2 must have the I and O of A1 and D1",
        )
        return A1.new_empty((A1.shape[0], A2.shape[0]))

    @torch.library.register_fake(f"{namespace}::ghost_norm")
    def _(A, D):
        check_pair(A, D, "A", "D")
        return A.new_empty((A.shape[0],))

    @torch.library.register_fake(f"{namespace}::clip_update_")
    def _(alpha, index, s, lr):
        return None

    def setup_saved(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def backward_dot(ctx, gs):
        A, D, G = ctx.saved_tensors
        return _ghost_dot_backward_terms(A, D, G, gs, ctx.needs_input_grad[:3])

    def backward_norm(ctx, gn):
        A, D = ctx.saved_tensors
        return _ghost_norm_backward_terms(A, D, gn, ctx.needs_input_grad[:2])

    def backward_gram(ctx, gg):
        # materialises the per-sample gradients of the other side: O(B·O·I) memory in backward
        A1, D1, A2, D2 = ctx.saved_tensors
        grads = [None] * 4
        B1, B2 = A1.shape[0], A2.shape[0]
        if any(ctx.needs_input_grad[:2]):
            Q2 = D2.mT @ A2  # (B2, O, I)
            dQ1 = (gg @ Q2.reshape(B2, -1)).reshape(B1, *Q2.shape[1:])  # (B1, O, I)
            if ctx.needs_input_grad[0]:
                grads[0] = D1 @ dQ1
            if ctx.needs_input_grad[1]:
                grads[1] = A1 @ dQ1.mT
        if any(ctx.needs_input_grad[2:]):
            Q1 = D1.mT @ A1  # (B1, O, I)
            dQ2 = (gg.T @ Q1.reshape(B1, -1)).reshape(B2, *Q1.shape[1:])  # (B2, O, I)
            if ctx.needs_input_grad[2]:
                grads[2] = D2 @ dQ2
            if ctx.needs_input_grad[3]:
                grads[3] = A2 @ dQ2.mT
        return tuple(grads)

    torch.library.register_autograd(f"{namespace}::ghost_dot", backward_dot, setup_context=setup_saved)
    torch.library.register_autograd(f"{namespace}::ghost_norm", backward_norm, setup_context=setup_saved)
    torch.library.register_autograd(f"{namespace}::ghost_gram", backward_gram, setup_context=setup_saved)


for _ns in BACKEND_NAMESPACES:
    _register_ghost(_ns)


def _as_3d(A: Tensor, D: Tensor, a: str = "A", d: str = "D") -> tuple[Tensor, Tensor]:
    """(B, I), (B, O) inputs of a plain 2-D linear layer are T = 1 sequences."""
    check_floating(A, a)
    check_floating(D, d)
    if A.dim() == 2 and D.dim() == 2:
        return A.unsqueeze(1), D.unsqueeze(1)
    return A, D


def ghost_dot(A: Tensor, D: Tensor, G: Tensor) -> Tensor:
    """s_i = ⟨Q_i, G⟩ with Q_i = Σ_t d_it a_itᵀ the per-sample weight gradient of a linear layer,
    at the cost of one layer forward (A Gᵀ) and a fused row-dot; Q_i is never formed.

    A: (B, T, I) layer inputs (or (B, I) for T = 1); D: (B, T, O) output gradients (or (B, O));
    G: (O, I) -> (B,), or (V, O, I) -> (B, V) for V target vectors at once. A, D, G share dtype
    and device; float16 / bfloat16 accumulate in float32, the result has A's dtype.
    Differentiable w.r.t. A, D and G.
    """
    A, D = _as_3d(A, D)
    return torch.ops.tlkernels.ghost_dot(A, D, G)


def ghost_gram(A1: Tensor, D1: Tensor, A2: Tensor, D2: Tensor) -> Tensor:
    """⟨Q1_i, Q2_j⟩ = Σ_{t,t'} (d_it·d'_jt')(a_it·a'_jt') for all pairs, from tiles of D1 D2ᵀ and
    A1 A2ᵀ: neither Q nor the T×T' blocks of all pairs are held in memory. Cost B1·B2·T·T'·(I+O);
    when 2·T·T' > I·O materialising Q (tlkernels.reference.ghost_gram) is cheaper.

    A1: (B1, T, I), D1: (B1, T, O), A2: (B2, T', I), D2: (B2, T', O) (2-D inputs mean T = 1)
    -> (B1, B2). Differentiable (the backward materialises Q of the other side).
    """
    A1, D1 = _as_3d(A1, D1, "A1", "D1")
    A2, D2 = _as_3d(A2, D2, "A2", "D2")
    return torch.ops.tlkernels.ghost_gram(A1, D1, A2, D2)


def ghost_norm(A: Tensor, D: Tensor) -> Tensor:
    """Squared per-sample gradient norms ‖Q_i‖², the diagonal of ghost_gram(A, D, A, D), from each
    sample's own T×T tiles or by materialising one Q_i at a time, whichever is cheaper
    (T·(I+O) vs I·O).

    A: (B, T, I), D: (B, T, O) (2-D inputs mean T = 1) -> (B,). Differentiable.
    """
    A, D = _as_3d(A, D)
    return torch.ops.tlkernels.ghost_norm(A, D)


def clip_update_(alpha: Tensor, index: Tensor, s: Tensor, lr: float) -> Tensor:
    """The SOSELETO α step fused with its clip, in place: α[index] = clip(α[index] + lr·s, 0, 1).

    alpha: (N,) float32 / float64 (any stride); index: (B,) int64 in [0, N) (negative values are
    an error, not Python-style wrap-around); s: (B,) floating (cast to alpha's dtype); lr: finite
    float. Duplicate indices: their s are summed in the order they appear in ``index``, then the
    clip is applied once (deterministic on every backend). NaN in s propagates into α (like
    torch.clamp). Returns alpha. On CUDA the range check of index synchronises once.
    """
    torch.ops.tlkernels.clip_update_(alpha, index, s, float(lr))
    return alpha
