"""The base of tlkernels' torch estimators: scikit-learn's ``BaseEstimator`` (get_params,
set_params, clone, repr) and the few rules every estimator follows the same way:

- hyper-parameters are constructor arguments stored unchanged (so ``clone`` works); what
  ``fit`` learns ends in ``_``; a method that needs a fitted estimator raises scikit-learn's
  ``NotFittedError`` (also a RuntimeError) before ``fit``;
- return types: a numpy (or array-like) input gives numpy outputs, a torch tensor input gives
  tensor outputs on the input's device (``like_input``);
- a hyper-parameter that ``fit`` used to take (``fit(..., epochs=)``) still works for one
  release, with a FutureWarning naming the constructor argument (``fit_param_deprecated``).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import validate_data
from torch import Tensor

from ._validation import as_tensor, check_fitted, check_n_features, to_numpy

__all__ = [
    "TorchClassifierMixin",
    "TorchEstimator",
    "fit_param_deprecated",
    "like_input",
]


def like_input(out, X):
    """The return-type rule: ``out`` (a tensor, or a dict / tuple of them) as numpy when X is not
    a tensor, as tensors on X's device when it is."""
    if isinstance(out, dict):
        return {k: like_input(v, X) for k, v in out.items()}
    if isinstance(out, tuple):
        return tuple(like_input(v, X) for v in out)
    if isinstance(X, Tensor):
        return out.to(X.device) if isinstance(out, Tensor) else torch.as_tensor(out, device=X.device)
    return to_numpy(out)


def fit_param_deprecated(estimator, name: str, value, method: str = "fit"):
    """The value of hyper-parameter ``name`` for this fit: ``value`` when the caller still
    passed it to ``fit`` (with a FutureWarning: it moves to the constructor), else the
    constructor's."""
    if value is None:
        return getattr(estimator, name)
    cls = type(estimator).__name__
    warnings.warn(
        f"{cls}.{method}({name}=...) is deprecated and will be removed in the next release: pass "
        f"{name} to the constructor, {cls}(..., {name}={value!r}), or use set_params({name}=...)",
        FutureWarning,
        stacklevel=3,
    )
    return value


class TorchTransformerMixin(TransformerMixin):
    """scikit-learn's TransformerMixin for a network: its features are float32 whatever the
    input's float dtype (float32 is preserved, float64 is not)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


class TorchEstimator(BaseEstimator):
    """Shared plumbing of the torch estimators (no public methods of its own)."""

    def _device(self) -> torch.device:
        """The ``device`` hyper-parameter as a torch.device (CPU when None)."""
        d = getattr(self, "device", None)
        return torch.device(d) if d is not None else torch.device("cpu")

    def _check_is_fitted(self) -> None:
        check_fitted(self)

    def _validate_X(self, X, *, reset: bool, name: str = "X", min_ndim: int = 2) -> Tensor:
        """X -> checked tensor (``as_tensor``) with ``n_features_in_`` (and ``feature_names_in_``
        for a DataFrame) set at fit (reset=True) or compared after it, as scikit-learn does.
        Tensors, and arrays with more than two dimensions (images), count features as
        ``shape[1]`` likewise."""
        if isinstance(X, Tensor):
            T = as_tensor(X, name, min_ndim=min_ndim)
            if T.dim() == 2:
                check_n_features(self, T, reset=reset)
            return T
        T = as_tensor(X, name, min_ndim=min_ndim)
        if T.dim() == 2:
            try:
                validate_data(self, X, reset=reset, skip_check_array=True)
            except ValueError as e:
                raise ValueError(
                    f"{name} has {T.shape[1]} features, but {type(self).__name__} is expecting "
                    f"{getattr(self, 'n_features_in_', None)} features as input: {e}"
                ) from e
        return T


class TorchClassifierMixin:
    """predict_proba / predict / score of a classifier from its ``decision_function`` (scores
    (N, C) over ``classes_`` = the model's output indices 0..C-1), following the return-type
    rule. Use before scikit-learn's ClassifierMixin in the bases."""

    def _decision(self, X) -> Tensor:
        """X -> scores (N, C) as a CPU or device tensor; implemented by the estimator."""
        raise NotImplementedError

    def decision_function(self, X):
        """X (N, ...) -> class scores (N, C) (logits for the networks)."""
        self._check_is_fitted()
        return like_input(self._decision(X), X)

    def predict_proba(self, X):
        """X (N, ...) -> class probabilities (N, C): the softmax of the scores."""
        self._check_is_fitted()
        return like_input(torch.softmax(self._decision(X), 1), X)

    def predict(self, X):
        """X (N, ...) -> class indices (N,), int64."""
        self._check_is_fitted()
        return like_input(torch.as_tensor(self._decision(X)).argmax(1), X)

    def score(self, X, y, sample_weight=None) -> float:
        """(Weighted) accuracy on (X (N, ...), y (N,))."""
        pred = to_numpy(self.predict(X))
        hit = (pred == to_numpy(y)).astype(np.float64)
        w = np.ones_like(hit) if sample_weight is None else to_numpy(sample_weight).astype(np.float64)
        return float((w * hit).sum() / w.sum())
