"""Batched k-means (docs/design.md §4.3): ``kmeans_assign``, ``kmeans_update``, ``kmeans_step``
and their fake kernels. No autograd: labels are integers, the update is a partition sum."""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import BACKEND_NAMESPACES

__all__ = ["kmeans_assign", "kmeans_step", "kmeans_update"]


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
        return (
            X.new_empty(lead + (X.shape[-2],), dtype=torch.long),
            X.new_empty(lead + (X.shape[-2],)),
            X.new_empty(lead + (K, D)),
            X.new_empty(lead + (K,)),
        )


for _ns in BACKEND_NAMESPACES:
    _register_kmeans(_ns)
