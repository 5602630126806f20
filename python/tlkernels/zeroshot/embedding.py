"""Embedding-based zero-shot learning (Lampert 2019): a bilinear compatibility F(v, w) = v^T M w
between image features v and class embeddings w, trained on seen classes with the ranking
hinge loss of Lee 2016 (DeViSE-style), and the classifier f(x) = argmax_y F(x, w_y) over any
candidate classes."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import Tensor, nn

from .._validation import check_fitted
from ..transfer._common import as_weights, torch_generator, train_loop
from ._common import (
    ZeroShotPredictMixin,
    check_class_attributes,
    check_labels,
    resolve_candidates,
    to_numpy_2d,
)

__all__ = ["BilinearCompatibility", "EmbeddingZeroShot", "ZeroShotHingeLoss", "encode_classes"]


def encode_classes(class_attributes: np.ndarray, signed: bool = True, normalize: bool = True) -> np.ndarray:
    """(K, A) table -> float (K, A) class embeddings: binary tables mapped to {-1, +1} when
    `signed` (absence then counts as much as presence), rows scaled to unit L2 norm when
    `normalize` (all-zero rows stay zero)."""
    S = np.asarray(class_attributes, dtype=np.float64)
    if signed and np.isin(S, (0.0, 1.0)).all():
        S = 2.0 * S - 1.0
    if normalize:
        S = S / np.maximum(np.linalg.norm(S, axis=1, keepdims=True), 1e-12)
    return S


def encoded_table(est, class_attributes):
    """The class embeddings an embedding estimator scores against: its fitted ones
    (``est.class_embeddings_``) or, for a new table (K, A), that table encoded the same way."""
    if class_attributes is None:
        return est.class_embeddings_
    S = check_class_attributes(class_attributes)
    if S.shape[1] != est.class_embeddings_.shape[1]:
        raise ValueError(f"class_attributes must have {est.class_embeddings_.shape[1]} attributes, got {S.shape}")
    return encode_classes(S, est.signed, est.normalize)


class BilinearCompatibility(nn.Module):
    """F(v, w) = v^T M w (+ b^T w when bias=True, i.e. v augmented with a constant 1).

    forward(v (N, n_features), w (K, n_attr)) -> scores (N, K), F of every example with every
    class embedding. M (n_features, n_attr) starts at small random values."""

    def __init__(self, n_features: int, n_attr: int, bias: bool = True, generator: torch.Generator | None = None):
        super().__init__()
        if not (int(n_features) >= 1 and int(n_attr) >= 1):
            raise ValueError(f"n_features and n_attr must be >= 1, got {n_features}, {n_attr}")
        self.M = nn.Parameter(0.01 * torch.randn(int(n_features), int(n_attr), generator=generator))
        self.bias = nn.Parameter(torch.zeros(int(n_attr))) if bias else None

    def embed(self, v: Tensor) -> Tensor:
        """v (N, n_features) -> v^T M (+ b) (N, n_attr): the image projected into the class space."""
        out = v @ self.M
        return out + self.bias if self.bias is not None else out

    def forward(self, v: Tensor, w: Tensor) -> Tensor:
        if v.dim() != 2 or v.shape[1] != self.M.shape[0]:
            raise ValueError(f"v must have shape (N, {self.M.shape[0]}), got {tuple(v.shape)}")
        if w.dim() != 2 or w.shape[1] != self.M.shape[1]:
            raise ValueError(f"w must have shape (K, {self.M.shape[1]}), got {tuple(w.shape)}")
        return self.embed(v) @ w.T


class ZeroShotHingeLoss(nn.Module):
    """The ranking hinge of Lee 2016 with margin k:

        l(x, y) = sum_{y' != y} max(0, k - F(x, y) + F(x, y'))     (aggregate='sum', DeViSE)
        l(x, y) = max(0, k - F(x, y) + max_{y' != y} F(x, y'))      (aggregate='max', the slide)

    It is zero exactly when the true class beats every other class by at least k.

    forward(scores (N, K) = F(x_n, y) for every class y (e.g. f(x) @ g(Y).T), target (N,) class
    columns, weight (N,) optional per-example weights) -> the loss: a scalar ('mean': weighted
    mean, 'sum') or per-example (N,) ('none')."""

    def __init__(self, margin: float = 0.1, aggregate: str = "sum", reduction: str = "mean"):
        super().__init__()
        if not margin > 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        if aggregate not in ("sum", "max"):
            raise ValueError(f"aggregate must be 'sum' or 'max', got {aggregate!r}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.margin, self.aggregate, self.reduction = float(margin), aggregate, reduction

    def forward(self, scores: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        if scores.dim() != 2 or scores.shape[1] < 2:
            raise ValueError(f"scores must have shape (N, K >= 2), got {tuple(scores.shape)}")
        target = target.long()
        if target.shape != (scores.shape[0],) or (target < 0).any() or (target >= scores.shape[1]).any():
            raise ValueError(f"target must have shape ({scores.shape[0]},) with values in [0, {scores.shape[1]})")
        true = scores.gather(1, target[:, None])  # (N, 1)
        wrong = torch.ones_like(scores, dtype=torch.bool).scatter_(1, target[:, None], False)
        if self.aggregate == "sum":
            per = ((self.margin - true + scores).clamp_min(0) * wrong).sum(1)
        else:
            rival = scores.masked_fill(~wrong, float("-inf")).max(1).values
            per = (self.margin - true[:, 0] + rival).clamp_min(0)
        if self.reduction == "none":
            return per
        if weight is not None:
            weight = weight.to(per)
            return (weight * per).sum() / (weight.sum() if self.reduction == "mean" else 1.0)
        return per.mean() if self.reduction == "mean" else per.sum()


class _Scorer(nn.Module):
    """x (B, D) -> F(x, w_y) for the fixed class embeddings W (K, A), a buffer."""

    def __init__(self, comp: BilinearCompatibility, W: Tensor):
        super().__init__()
        self.comp = comp
        self.register_buffer("W", W)

    def forward(self, x):
        return self.comp(x, self.W)


class EmbeddingZeroShot(ZeroShotPredictMixin, ClassifierMixin, BaseEstimator):
    """Bilinear embedding zero-shot classifier: f(x) = argmax_{y in candidates} v(x)^T M w_y.

    Args:
        margin: k of the hinge loss; aggregate: 'sum' (DeViSE) or 'max' over wrong classes.
        lr, epochs, batch_size, weight_decay: Adam on M (weight decay = the L2 regulariser of M).
        signed, normalize: class embeddings w_y = the table rows mapped to +-1 and L2-normalised
            (``encode_classes``).
        standardize: features standardised with the training mean / std before the bilinear map.
        device, random_state, verbose (tqdm bar).

    fit(X (N, ...), y (N,) rows of class_attributes, class_attributes (K, A) of ALL classes,
    sample_weight (N,) or None) trains on the seen classes only (the hinge ranks each example's
    class among the seen classes). Attributes: ``compatibility_`` (the trained
    BilinearCompatibility), ``seen_classes_``, ``class_embeddings_`` (K, A), ``history_``.
    """

    def __init__(
        self,
        margin: float = 0.1,
        lr: float = 1e-2,
        epochs: int = 100,
        weight_decay: float = 1e-4,
        *,
        aggregate: str = "sum",
        batch_size: int = 64,
        signed: bool = True,
        normalize: bool = True,
        standardize: bool = True,
        device=None,
        random_state=None,
        verbose: bool = False,
    ):
        ZeroShotHingeLoss(margin, aggregate)  # validates margin / aggregate
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not (isinstance(epochs, (int, np.integer)) and epochs >= 0):
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.margin, self.lr, self.epochs, self.weight_decay = margin, lr, epochs, weight_decay
        self.aggregate, self.batch_size, self.signed, self.normalize = aggregate, batch_size, signed, normalize
        self.standardize = standardize
        self.device = device
        self.random_state, self.verbose = random_state, verbose

    def _features(self, X) -> Tensor:
        X = to_numpy_2d(X)
        if hasattr(self, "mean_") and X.shape[1] != self.mean_.shape[0]:
            raise ValueError(f"X must have {self.mean_.shape[0]} features, got {X.shape[1]}")
        return torch.as_tensor((X - self.mean_) / self.scale_, dtype=torch.float32)

    def fit(self, X, y, class_attributes, sample_weight=None) -> EmbeddingZeroShot:
        """X (N, ...) seen-class examples, y (N,) their classes, class_attributes (K, A)."""
        Xn = to_numpy_2d(X)
        S = check_class_attributes(class_attributes)
        y = check_labels(y, Xn.shape[0], S.shape[0])
        w = as_weights(sample_weight, Xn.shape[0])
        self.seen_classes_ = np.unique(y)
        if self.seen_classes_.size < 2:
            raise ValueError("y must contain at least 2 seen classes")
        self.class_attributes_ = S
        self.class_embeddings_ = encode_classes(S, self.signed, self.normalize)
        self.mean_ = Xn.mean(0) if self.standardize else np.zeros(Xn.shape[1])
        self.scale_ = np.maximum(Xn.std(0), 1e-3) if self.standardize else np.ones(Xn.shape[1])
        Xt = self._features(Xn)
        local = torch.as_tensor(np.searchsorted(self.seen_classes_, y))  # column among the seen classes
        gen = torch_generator(self.random_state)
        comp = BilinearCompatibility(Xt.shape[1], S.shape[1], generator=gen)
        W = torch.as_tensor(self.class_embeddings_[self.seen_classes_], dtype=torch.float32)
        device = torch.device(self.device) if self.device is not None else torch.device("cpu")
        model = _Scorer(comp, W).to(device)
        hinge = ZeroShotHingeLoss(self.margin, self.aggregate, reduction="none")
        groups = [{"params": list(comp.parameters()), "lr": self.lr, "weight_decay": self.weight_decay}]
        self.history_ = train_loop(
            model,
            groups,
            Xt,
            local,
            epochs=self.epochs,
            batch_size=self.batch_size,
            optimizer="adam",
            gen=gen,
            device=device,
            sample_weight=w,
            loss_fn=lambda m, xb, yb: hinge(m(xb), yb),
            verbose=self.verbose,
            desc="bilinear zero-shot",
        )
        self.compatibility_ = comp.cpu().eval()
        return self

    def _table(self, class_attributes):
        return encoded_table(self, class_attributes)

    @torch.no_grad()
    def _scores(self, X, candidate_classes=None, class_attributes=None) -> np.ndarray:
        """Compatibilities F(x, w_z) (N, len(candidates)); candidates default to the unseen classes."""
        check_fitted(self)
        W = self._table(class_attributes)
        cand = resolve_candidates(candidate_classes, W.shape[0], self.seen_classes_)
        return self.compatibility_(self._features(X), torch.as_tensor(W[cand], dtype=torch.float32)).numpy()
