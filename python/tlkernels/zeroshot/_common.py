"""Input checks shared by the zero-shot estimators: the class-attribute table, class lists."""

from __future__ import annotations

import numpy as np
import torch

from .._base import like_input
from .._validation import as_numpy_2d, check_fitted, to_numpy

__all__ = [
    "ZeroShotPredictMixin",
    "accuracy",
    "check_class_attributes",
    "check_labels",
    "resolve_candidates",
    "to_numpy_2d",
]


_np = to_numpy


def to_numpy_2d(X, name: str = "X") -> np.ndarray:
    """numpy / tensor (N, ...) -> float64 (N, D) (images are flattened); rejects empty / non-finite
    (``tlkernels._validation.as_numpy_2d``)."""
    return as_numpy_2d(X, name)


def check_class_attributes(class_attributes, name: str = "class_attributes") -> np.ndarray:
    """(K, A) table (bool / 0-1 / real-valued embedding) -> float64 (K, A); ValueError naming
    `name` on a missing table, a bad shape or non-finite values."""
    if class_attributes is None:
        raise ValueError(f"{name} is required: an (n_classes, n_attributes) array")
    S = _np(class_attributes).astype(np.float64)
    if S.ndim != 2 or S.shape[0] < 2 or S.shape[1] < 1:
        raise ValueError(f"{name} must have shape (n_classes >= 2, n_attributes >= 1), got {S.shape}")
    if not np.isfinite(S).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return S


def check_labels(y, n: int, n_classes: int, name: str = "y") -> np.ndarray:
    """y (n,) int class indices into the rows of the class-attribute table (0..n_classes-1)."""
    y = _np(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError(f"{name} must hold integer class indices")
    y = y.astype(np.int64)
    bad = np.setdiff1d(np.unique(y), np.arange(n_classes))
    if bad.size:
        raise ValueError(
            f"{name} holds classes {bad.tolist()} that have no row in class_attributes (which has {n_classes} rows)"
        )
    return y


def resolve_candidates(
    candidate_classes, n_classes: int, seen: np.ndarray, name: str = "candidate_classes"
) -> np.ndarray:
    """The classes to choose among (indices into the table): given, or by default every class
    not seen in fit (the zero-shot setting). ValueError on unknown / repeated / empty classes."""
    if candidate_classes is None:
        cand = np.setdiff1d(np.arange(n_classes), seen)
        if cand.size == 0:
            raise ValueError(f"every class was seen in fit; pass {name} explicitly")
        return cand
    cand = _np(candidate_classes).astype(np.int64).ravel()
    if cand.size == 0:
        raise ValueError(f"{name} must not be empty")
    bad = np.setdiff1d(cand, np.arange(n_classes))
    if bad.size:
        raise ValueError(f"{name} holds unknown classes {bad.tolist()}: class_attributes has rows 0..{n_classes - 1}")
    if np.unique(cand).size != cand.size:
        raise ValueError(f"{name} must not repeat classes, got {cand.tolist()}")
    return cand


def accuracy(pred, y, sample_weight=None) -> float:
    """(Weighted) fraction of pred (N,) equal to y (N,)."""
    y = _np(y).ravel()
    if y.shape[0] != pred.shape[0]:
        raise ValueError(f"y must have shape ({pred.shape[0]},), got {y.shape}")
    hit = (pred == y).astype(np.float64)
    w = np.ones_like(hit) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).ravel()
    return float((w * hit).sum() / w.sum())


class ZeroShotPredictMixin:
    """decision_function / predict_proba / predict / score of a zero-shot estimator from its
    ``_scores(X, candidate_classes, class_attributes)`` (N, C) numpy scores over the candidates
    and its ``_table``; numpy in -> numpy out, a tensor in -> a tensor out."""

    def decision_function(self, X, candidate_classes=None, class_attributes=None):
        """Scores (N, len(candidates)); candidates default to the classes not seen in fit."""
        check_fitted(self)
        return like_input(torch.as_tensor(self._scores(X, candidate_classes, class_attributes)), X)

    def predict_proba(self, X, candidate_classes=None, class_attributes=None):
        """Softmax of the scores over the candidates (N, C): for DAP the posterior of its rule,
        for the embedding methods a ranking, not calibrated."""
        check_fitted(self)
        s = self._scores(X, candidate_classes, class_attributes)
        e = np.exp(s - s.max(1, keepdims=True))
        return like_input(torch.as_tensor(e / e.sum(1, keepdims=True)), X)

    def predict(self, X, candidate_classes=None, class_attributes=None):
        """X (N, ...) -> predicted classes (N,), table indices taken from the candidates."""
        check_fitted(self)
        table = self._table(class_attributes)
        cand = resolve_candidates(candidate_classes, table.shape[0], self.seen_classes_)
        return like_input(torch.as_tensor(cand[self._scores(X, cand, class_attributes).argmax(1)]), X)

    def score(self, X, y, candidate_classes=None, class_attributes=None, sample_weight=None) -> float:
        """(Weighted) accuracy of ``predict`` on (X, y)."""
        return accuracy(_np(self.predict(X, candidate_classes, class_attributes)), y, sample_weight)
