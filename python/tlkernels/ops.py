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
    "kmeans_step",
    "ghost_dot",
    "ghost_gram",
    "ghost_norm",
    "clip_update_",
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
# k-means (docs/design.md §4.3): no autograd (labels are integers, the update is a partition sum)
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


def kmeans_step(X: Tensor, C: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One Lloyd pass: ``kmeans_assign(X, C)`` and ``kmeans_update`` of the new labels, fused on
    the CPU (each row is read once: its label and its contribution to the sums in one go).

    X, C as in ``kmeans_assign``; weights as in ``kmeans_update``. Returns labels (P, N),
    dist2 (P, N), sums (P, K, D), counts (P, K) (no P dimension when X and C are both 2-D).
    """
    return torch.ops.tlkernels.kmeans_step(X, C, weights)


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

    @torch.library.register_fake(f"{namespace}::kmeans_step")
    def _(X, C, weights=None):
        batched = X.dim() == 3 or C.dim() == 3
        P = C.shape[0] if C.dim() == 3 else (X.shape[0] if X.dim() == 3 else 1)
        lead = (P,) if batched else ()
        K, D = C.shape[-2], X.shape[-1]
        return (X.new_empty(lead + (X.shape[-2],), dtype=torch.long), X.new_empty(lead + (X.shape[-2],)),
                X.new_empty(lead + (K, D)), X.new_empty(lead + (K,)))


for _ns in BACKEND_NAMESPACES:
    _register_kmeans(_ns)
# per-sample gradient products (docs/design.md §4.2): fake kernels and autograd
# ---------------------------------------------------------------------------------------------
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
    ops = getattr(torch.ops, namespace)

    def check_pair(A, D, a, d):
        torch._check(A.dim() == 3, lambda: f"{a} must have shape (B, T, I), got {tuple(A.shape)}")
        torch._check(D.dim() == 3, lambda: f"{d} must have shape (B, T, O), got {tuple(D.shape)}")
        torch._check(D.shape[:2] == A.shape[:2],
                     lambda: f"{d} must have the B and T of {a} {tuple(A.shape[:2])}, got {tuple(D.shape)}")
        torch._check(D.dtype == A.dtype, lambda: f"{d} must have the dtype of {a} ({A.dtype}), got {D.dtype}")

    @torch.library.register_fake(f"{namespace}::ghost_dot")
    def _(A, D, G):
        check_pair(A, D, "A", "D")
        torch._check(G.dim() in (2, 3), lambda: f"G must have shape (O, I) or (V, O, I), got {tuple(G.shape)}")
        torch._check(G.shape[-2:] == (D.shape[2], A.shape[2]),
                     lambda: f"G must have shape (O, I) = {(D.shape[2], A.shape[2])}, got {tuple(G.shape)}")
        return A.new_empty((A.shape[0],) if G.dim() == 2 else (A.shape[0], G.shape[0]))

    @torch.library.register_fake(f"{namespace}::ghost_gram")
    def _(A1, D1, A2, D2):
        check_pair(A1, D1, "A1", "D1")
        check_pair(A2, D2, "A2", "D2")
        torch._check(A2.shape[2] == A1.shape[2] and D2.shape[2] == D1.shape[2],
                     lambda: "A2 and D2 must have the I and O of A1 and D1")
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
    _check_floating(A, a)
    _check_floating(D, d)
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
