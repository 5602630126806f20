"""Self-training with pseudo-labels (Lampert 2019, Part III, "Extension: Self-Training"):
1) train f on the labelled data, 2) apply f to the unlabeled data to make pseudo-labels,
3) retrain on the labelled data plus the confident pseudo-labels, 4) repeat."""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import Tensor

from .._base import like_input
from .._validation import as_tensor, check_fitted, to_numpy

__all__ = ["SelfTraining"]


_to_numpy = to_numpy


def _concat(a, b):
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        a = a if isinstance(a, Tensor) else torch.as_tensor(np.asarray(a))
        b = b if isinstance(b, Tensor) else torch.as_tensor(np.asarray(b))
        return torch.cat([a, b.to(a.dtype)])
    return np.concatenate([np.asarray(a), np.asarray(b)])


def _take(a, idx: np.ndarray):
    return a[torch.as_tensor(idx, dtype=torch.long)] if isinstance(a, Tensor) else np.asarray(a)[idx]


def _check_x(X, name: str):
    """Checks X (N, ...) (non-empty, finite numbers) without converting it: the wrapped
    estimator gets the caller's array or tensor."""
    if not hasattr(X, "shape") or len(X.shape) < 1 or X.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty array or tensor with examples along dim 0")
    as_tensor(X, name)


def _labels_1d(y, n: int):
    """y (n,) or a column vector (n, 1) (flattened with scikit-learn's DataConversionWarning)
    -> (y as given or flattened, y as numpy (n,))."""
    if y is None:
        raise ValueError("SelfTraining requires y to be passed, but the target y is None")
    y_np = _to_numpy(y)
    if y_np.ndim == 2 and y_np.shape[1] == 1:
        import warnings

        from sklearn.exceptions import DataConversionWarning

        warnings.warn(
            "A column-vector y was passed when a 1d array was expected: shape (n,) is used",
            DataConversionWarning,
            stacklevel=4,
        )
        y_np = y_np.ravel()
        y = y.reshape(-1) if isinstance(y, Tensor) else y_np
    if y_np.ndim != 1 or y_np.shape[0] != n:
        raise ValueError(f"y must have shape ({n},) to match X_labeled, got {tuple(y_np.shape)}")
    return y, y_np


def _split_unlabeled(X, y, y_np: np.ndarray, sample_weight):
    """scikit-learn's SelfTrainingClassifier convention: the rows of X (N, ...) whose label is -1
    are the unlabeled ones. Returns (X, y, y_np, sample_weight) of the labelled rows and X of the
    unlabeled rows (0 rows when no label is -1: then X, y and the weights are returned as given)."""
    unl = y_np == -1 if y_np.dtype.kind in "iuf" else np.zeros(len(y_np), dtype=bool)
    X_unlabeled = _take(X, np.flatnonzero(unl))
    keep = np.flatnonzero(~unl)
    if unl.any():
        if sample_weight is not None:
            sample_weight = _to_numpy(sample_weight)[keep]
        X, y = _take(X, keep), _take(y, keep)
        y_np = _to_numpy(y)
    return X, y, y_np, X_unlabeled, sample_weight


def _round_record(r: int, n_changed: int, labels: np.ndarray, conf: np.ndarray, y_true, idx: np.ndarray) -> dict:
    """history_'s entry of round r: the pseudo-labelled examples' labels (k,) and confidences
    (k,), at positions idx (k,) of X_unlabeled; pseudo_accuracy against y_true (m,) when given."""
    acc = None if y_true is None or len(idx) == 0 else float((labels == y_true[idx]).mean())
    return {
        "round": r,
        "n_pseudo": len(idx),
        "n_changed": n_changed,
        "mean_confidence": float(conf.mean()) if len(idx) else None,
        "pseudo_accuracy": acc,
    }


def _default_estimator():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000)


class SelfTraining(ClassifierMixin, BaseEstimator):
    """Self-training wrapper around any probabilistic classifier.

    Args:
        estimator: an estimator with ``fit(X, y[, sample_weight])`` and ``predict_proba(X)``
            (scikit-learn's LogisticRegression, tlkernels.transfer.FineTune, ...), cloned
            (sklearn.base.clone, else deep-copied) before every round; or a zero-argument factory
            returning a fresh one (a class counts as a factory); None: LogisticRegression(max_iter=1000).
        threshold: an unlabeled example is pseudo-labelled in a round when the current model's
            max class probability is >= threshold (in [0, 1]; above 1 nothing is ever added).
        max_rounds: retraining rounds after the labelled-only fit (0 = labelled only).
        max_new_per_round: the pseudo-labelled set may grow by at most this many examples per
            round (the most confident first); None: no limit.
        weight_by_confidence: pseudo-labelled examples get sample_weight = their confidence
            (labelled ones keep theirs, default 1); False: weight 1.
        random_state: passed to the estimator's ``random_state`` (when it has one) so every
            round retrains from the same seed; verbose: a tqdm bar over rounds.

    Every round re-labels ALL unlabeled examples with the current model (Lampert 2019's step 2:
    Y'_i = f(X_i) for every i), so a pseudo-label can change or be dropped. Training stops after
    ``max_rounds`` or when the pseudo-labelled set and its labels are unchanged (a fixed point:
    retraining would see the same data).

    fit(X_labeled (n, ...), y (n,), X_unlabeled (m, ...), sample_weight=None (n,),
    y_unlabeled_true=None (m,)) -> self. Without X_unlabeled, the examples of X_labeled whose
    label is -1 are the unlabeled ones (scikit-learn's SelfTrainingClassifier convention); with
    none, only the labelled model is fitted. ``y_unlabeled_true`` is for reporting only: it fills
    ``history_[r]["pseudo_accuracy"]`` and is never used for training or stopping.

    Attributes: ``estimator_`` (the final model), ``estimators_`` (one per round, round 0 = the
    labelled-only model), ``classes_``, ``pseudo_labels_`` (m,) (-1 = not pseudo-labelled in the
    last training set), ``pseudo_mask_`` (m,) bool, ``confidence_`` (m,) (max probability under
    the model that made the last pseudo-labels), ``n_rounds_``, ``history_`` (one dict per fitted
    model: round, n_pseudo, n_changed, mean_confidence, pseudo_accuracy).
    """

    def __init__(
        self,
        estimator=None,
        threshold: float = 0.9,
        max_rounds: int = 5,
        max_new_per_round: int | None = None,
        weight_by_confidence: bool = False,
        random_state=None,
        verbose: bool = False,
    ):
        if estimator is not None and not (hasattr(estimator, "fit") or callable(estimator)):
            raise ValueError(f"estimator must have fit/predict_proba or be a factory returning one, got {estimator!r}")
        if hasattr(estimator, "fit") and not isinstance(estimator, type) and not hasattr(estimator, "predict_proba"):
            raise ValueError(f"estimator must have a predict_proba method, {type(estimator).__name__} has none")
        if not (isinstance(threshold, (int, float, np.floating)) and threshold >= 0 and np.isfinite(threshold)):
            raise ValueError(
                f"threshold must be a finite number >= 0 (a probability; > 1 adds nothing), got {threshold!r}"
            )
        if not (isinstance(max_rounds, (int, np.integer)) and not isinstance(max_rounds, bool) and max_rounds >= 0):
            raise ValueError(f"max_rounds must be an int >= 0, got {max_rounds!r}")
        if max_new_per_round is not None and not (
            isinstance(max_new_per_round, (int, np.integer)) and max_new_per_round >= 1
        ):
            raise ValueError(f"max_new_per_round must be None or an int >= 1, got {max_new_per_round!r}")
        self.estimator, self.threshold, self.max_rounds = estimator, threshold, max_rounds
        self.max_new_per_round, self.weight_by_confidence = max_new_per_round, weight_by_confidence
        self.random_state, self.verbose = random_state, verbose

    def _new(self):
        if self.estimator is None:
            est = _default_estimator()
        elif hasattr(self.estimator, "fit") and not isinstance(self.estimator, type):
            try:
                from sklearn.base import clone

                est = clone(self.estimator)
            except Exception:  # not a scikit-learn estimator (e.g. FineTune holds an nn.Module)
                est = copy.deepcopy(self.estimator)
        else:
            est = self.estimator()
            if not (hasattr(est, "fit") and hasattr(est, "predict_proba")):
                raise ValueError("estimator factory must return an object with fit and predict_proba")
        if self.random_state is not None and hasattr(est, "random_state"):
            est.random_state = self.random_state
        return est

    @staticmethod
    def _fit_one(est, X, y, w):
        if w is None:
            return est.fit(X, y) or est
        return est.fit(X, y, sample_weight=w) or est

    def _classes(self, est, n_cols: int) -> np.ndarray:
        cl = getattr(est, "classes_", None)
        return np.asarray(cl) if cl is not None else np.arange(n_cols)

    def fit(self, X_labeled, y, X_unlabeled=None, sample_weight=None, y_unlabeled_true=None) -> SelfTraining:
        """X_labeled (n, ...), y (n,), X_unlabeled (m, ...) or None (then y == -1 marks them),
        sample_weight (n,), y_unlabeled_true (m,) for reporting only; returns self.

        Round 0 fits the labelled data; each later round pseudo-labels every unlabeled example
        with the last model (``_pseudo_label``) and, unless nothing changed, retrains on the
        labelled data plus the pseudo-labelled examples (``_retrain``)."""
        from tqdm.auto import tqdm

        X_labeled, y, y_np, X_unlabeled, w_l, y_true = self._fit_inputs(
            X_labeled, y, X_unlabeled, sample_weight, y_unlabeled_true
        )
        est = self._fit_one(self._new(), X_labeled, y, w_l)
        self.estimators_ = [est]
        self.history_ = [{"round": 0, "n_pseudo": 0, "n_changed": 0, "mean_confidence": None, "pseudo_accuracy": None}]
        m = X_unlabeled.shape[0]
        labels = np.full(m, -1, dtype=np.int64)
        mask = np.zeros(m, dtype=bool)
        conf = np.zeros(m)
        bar = tqdm(
            range(1, int(self.max_rounds) + 1 if m > 0 else 1),
            desc="self-training",
            disable=not self.verbose,
            leave=False,
        )
        for r in bar:
            new_labels, new_mask, conf = self._pseudo_label(est, X_unlabeled, mask)
            n_changed = int((new_labels != labels).sum())
            if n_changed == 0:
                break  # fixed point: the next training set would be the same
            labels, mask = new_labels, new_mask
            idx = np.flatnonzero(mask)
            if len(idx) == 0:
                est = self.estimators_[0]
            else:
                est = self._retrain(X_labeled, y, y_np, w_l, _take(X_unlabeled, idx), labels[idx], conf[idx])
            self.estimators_.append(est)
            self.history_.append(_round_record(r, n_changed, labels[idx], conf[idx], y_true, idx))
        bar.close()
        self.estimator_ = est
        self.classes_ = getattr(est, "classes_", None)
        if len(X_labeled.shape) == 2:
            self.n_features_in_ = int(X_labeled.shape[1])
        self.pseudo_labels_, self.pseudo_mask_, self.confidence_ = labels, mask, conf
        self.n_rounds_ = len(self.estimators_) - 1
        return self

    def _fit_inputs(self, X_labeled, y, X_unlabeled, sample_weight, y_unlabeled_true):
        """Checks fit's arguments; returns X_labeled (n, ...) and y (n,) as given (or the rows of
        y != -1 when X_unlabeled is None), y as numpy (n,), X_unlabeled (m, ...), the labelled
        weights (n,) float64 or None, and y_unlabeled_true (m,) or None."""
        if not hasattr(X_labeled, "shape"):
            X_labeled = np.asarray(X_labeled)
        if X_unlabeled is not None and not hasattr(X_unlabeled, "shape"):
            X_unlabeled = np.asarray(X_unlabeled)
        _check_x(X_labeled, "X_labeled")
        y, y_np = _labels_1d(y, X_labeled.shape[0])
        if X_unlabeled is None:
            X_labeled, y, y_np, X_unlabeled, sample_weight = _split_unlabeled(X_labeled, y, y_np, sample_weight)
        if y_np.shape[0] == 0:
            raise ValueError("y must label at least one example (every label is -1)")
        if X_unlabeled.shape[0] > 0:
            _check_x(X_unlabeled, "X_unlabeled")
        n, m = X_labeled.shape[0], X_unlabeled.shape[0]
        if tuple(X_labeled.shape[1:]) != tuple(X_unlabeled.shape[1:]):
            raise ValueError(
                f"X_unlabeled must have feature shape {tuple(X_labeled.shape[1:])} like X_labeled, "
                f"got {tuple(X_unlabeled.shape[1:])}"
            )
        w_l = None
        if sample_weight is not None:
            w_l = _to_numpy(sample_weight).astype(np.float64).ravel()
            if w_l.shape[0] != n or not np.isfinite(w_l).all() or (w_l < 0).any():
                raise ValueError(f"sample_weight must be finite, >= 0 with shape ({n},)")
        y_true = None
        if y_unlabeled_true is not None:
            y_true = _to_numpy(y_unlabeled_true).ravel()
            if y_true.shape[0] != m:
                raise ValueError(f"y_unlabeled_true must have shape ({m},) to match X_unlabeled, got {y_true.shape}")
        return X_labeled, y, y_np, X_unlabeled, w_l, y_true

    def _pseudo_label(self, est, X_unlabeled, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One round's pseudo-labels of X_unlabeled (m, ...) under `est`, given the last round's
        mask (m,): labels (m,) int64 (-1 = not pseudo-labelled), mask (m,) bool (confidence >=
        threshold, at most max_new_per_round more than before, the most confident first) and the
        confidence (m,) (the max class probability)."""
        proba = np.asarray(est.predict_proba(X_unlabeled))
        conf = proba.max(1)
        pred = self._classes(est, proba.shape[1])[proba.argmax(1)].astype(np.int64)
        new_mask = conf >= float(self.threshold)
        if self.max_new_per_round is not None:
            cap = int(mask.sum()) + int(self.max_new_per_round)
            if new_mask.sum() > cap:
                cand = np.flatnonzero(new_mask)
                keep = cand[np.argsort(-conf[cand], kind="stable")[:cap]]
                new_mask = np.zeros(len(conf), dtype=bool)
                new_mask[keep] = True
        return np.where(new_mask, pred, -1), new_mask, conf

    def _retrain(self, X_labeled, y, y_np, w_l, X_pseudo, y_pseudo: np.ndarray, conf: np.ndarray):
        """A fresh estimator fitted on X_labeled (n, ...), y (n,) (y_np its numpy form) plus the
        pseudo-labelled X_pseudo (k, ...), y_pseudo (k,); with weights when the labelled data has
        them (w_l (n,)) or weight_by_confidence (then the pseudo-labelled get their conf (k,))."""
        X_all = _concat(X_labeled, X_pseudo)
        y_all = _concat(y, torch.as_tensor(y_pseudo)) if isinstance(y, Tensor) else np.concatenate([y_np, y_pseudo])
        w = None
        if w_l is not None or self.weight_by_confidence:
            w_p = conf if self.weight_by_confidence else np.ones(len(y_pseudo))
            w = np.concatenate([np.ones(len(y_np)) if w_l is None else w_l, w_p])
        return self._fit_one(self._new(), X_all, y_all, w)

    def _check_fitted(self):
        check_fitted(self)

    def predict_proba(self, X):
        """X (N, ...) -> class probabilities (N, C) of the final model."""
        self._check_fitted()
        return like_input(_to_numpy(self.estimator_.predict_proba(X)), X)

    def predict(self, X):
        """X (N, ...) -> class labels (N,)."""
        self._check_fitted()
        return like_input(_to_numpy(self.estimator_.predict(X)), X)

    def score(self, X, y, sample_weight=None) -> float:
        """(Weighted) accuracy of the final model on (X (N, ...), y (N,))."""
        hit = (_to_numpy(self.predict(X)) == _to_numpy(y)).astype(np.float64)
        w = np.ones_like(hit) if sample_weight is None else _to_numpy(sample_weight).astype(np.float64)
        return float((w * hit).sum() / w.sum())
