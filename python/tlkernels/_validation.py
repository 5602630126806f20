"""Input checks of tlkernels' scikit-learn estimators, done by scikit-learn's own validation
(``sklearn.utils.validation``): array-likes, DataFrames and scipy sparse matrices are checked and
converted as scikit-learn's estimators do (``n_features_in_`` and ``feature_names_in_`` set or
compared), torch tensors are kept as they are. A failed check raises a ``ValueError`` that first
names the argument and what was expected, then gives scikit-learn's own sentence (which its
estimator checks match on).

Needs scikit-learn >= 1.6 (``validate_data``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = [
    "DistinctClustersWarning",
    "NotFittedRuntimeError",
    "check_X",
    "check_fitted",
    "check_n_features",
]


class NotFittedRuntimeError(NotFittedError, RuntimeError):
    """Raised by a method that needs a fitted estimator before ``fit``: scikit-learn's
    ``NotFittedError`` (a ValueError and AttributeError), and a RuntimeError as tlkernels raised
    before it followed scikit-learn's contract."""


class DistinctClustersWarning(ConvergenceWarning, RuntimeWarning):
    """A clustering found fewer distinct clusters than asked for (duplicate points): scikit-learn's
    ``ConvergenceWarning``, and a RuntimeWarning as tlkernels warned before."""


def check_fitted(estimator) -> None:
    """``check_is_fitted``, raising ``NotFittedRuntimeError``."""
    try:
        check_is_fitted(estimator)
    except NotFittedError as e:
        raise NotFittedRuntimeError(str(e)) from None


def _expected(X, n_features_in: int | None) -> str:
    """What X should have been, judged from X itself (called on the error path only)."""
    if sp.issparse(X):
        ndim, kind, shape = 2, X.dtype.kind, X.shape
    else:
        try:
            a = np.asarray(X)
        except Exception:  # noqa: BLE001 - ragged nested lists and other non-arrays
            return "X must be an array-like of shape (n_samples, n_features) or a scipy sparse matrix"
        ndim, kind, shape = a.ndim, a.dtype.kind, a.shape
    if ndim != 2:
        return f"X must be 2-D (n_samples, n_features), got {ndim}-D"
    if n_features_in is not None and shape[1] != n_features_in:
        return f"X has {shape[1]} features, but the estimator was fitted with {n_features_in} features"
    if kind == "c":
        return "X must be real, got complex numbers"
    if kind in "OSUV":
        return f"X must hold numbers, got an array of dtype {a.dtype}"
    return "X must be a non-empty 2-D array of finite real numbers, shape (n_samples >= 1, n_features >= 1)"


def check_n_features(estimator, X, *, reset: bool, name: str | None = None) -> None:
    """Sets (reset=True) or compares (reset=False) ``n_features_in_`` / ``feature_names_in_`` for
    an already checked 2-D X (a torch tensor), through ``validate_data``."""
    try:
        validate_data(estimator, X, skip_check_array=True, reset=reset)
    except ValueError as e:
        n_in = getattr(estimator, "n_features_in_", None)
        cls = name or type(estimator).__name__
        raise ValueError(
            f"X has {X.shape[1]} features, but {cls} was fitted with {n_in} features: {e}"
        ) from e


def check_X(estimator, X, *, reset: bool, accept_sparse=("csr", "csc")):
    """X (array-like, DataFrame or scipy sparse, not a tensor) -> a C-contiguous float64 / float32
    ndarray or a CSR matrix, with ``n_features_in_`` set or compared as scikit-learn does.

    Integers and other dtypes become float64, float32 stays float32. Dense X is not checked for
    NaN / inf here (the k-means ops check it in the same pass that reads X); sparse X is.
    """
    n_in = None if reset else getattr(estimator, "n_features_in_", None)
    try:
        A = validate_data(
            estimator,
            X,
            reset=reset,
            accept_sparse=list(accept_sparse),
            dtype=[np.float64, np.float32],
            order="C",
            ensure_all_finite=bool(sp.issparse(X)),
        )
    except ValueError as e:
        what = _expected(X, n_in)
        if what.startswith("X has"):
            what = what.replace("the estimator", type(estimator).__name__)
        raise ValueError(f"{what}: {e}") from e
    if sp.issparse(A):
        A = A.tocsr()
        A.sort_indices()
    return A
