"""Input checks of tlkernels' scikit-learn estimators, done by scikit-learn's own validation
(``sklearn.utils.validation``): array-likes, DataFrames and scipy sparse matrices are checked and
converted as scikit-learn's estimators do (``n_features_in_`` and ``feature_names_in_`` set or
compared), torch tensors are kept as they are. A failed check raises a ``ValueError`` that first
names the argument and what was expected, then gives scikit-learn's own sentence (which its
estimator checks match on).

The one conversion of "array or tensor -> checked tensor / numpy" of every estimator lives here
too: ``as_tensor`` (inputs of the networks), ``as_labels`` / ``as_xy`` (class indices),
``as_weights`` (sample weights), ``as_numpy_2d`` (inputs of numpy / scikit-learn models) and
``to_numpy``.

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
    "as_labels",
    "as_numpy_2d",
    "as_tensor",
    "as_weights",
    "as_xy",
    "check_X",
    "check_fitted",
    "check_n_features",
    "to_numpy",
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
        raise ValueError(f"X has {X.shape[1]} features, but {cls} was fitted with {n_in} features: {e}") from e


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


# -- arrays or tensors of the torch estimators -------------------------------------------------
# One conversion for every estimator: torch tensors are checked and kept (their device and
# floating dtype too), anything else goes through scikit-learn's check_array (its messages,
# which its estimator checks match on, after a first sentence naming the argument).


def to_numpy(a) -> np.ndarray:
    """A tensor (any device, detached) or an array-like -> numpy array, no other change."""
    import torch

    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def as_tensor(X, name: str = "X", *, min_ndim: int = 1, dtype=None, finite: bool = True):
    """X (N, ...) array-like or tensor -> a checked tensor with examples along dim 0.

    Tensors keep their device and floating dtype (integer / bool ones become float32);
    array-likes are checked by ``sklearn.utils.check_array`` (numbers only, no complex, any
    number of dimensions >= 2 when min_ndim is 2) and become float32 tensors (torch's default
    dtype: the dtype of the models they feed). dtype: a torch dtype forced on the result.
    Raises ValueError naming ``name`` on empty input, too few dimensions or NaN / inf (with
    finite=True).
    """
    import torch
    from sklearn.utils import check_array

    if isinstance(X, torch.Tensor):
        if X.is_complex():
            raise ValueError(f"{name} must hold real numbers, got a complex tensor")
        if dtype is not None:
            X = X.to(dtype)
        elif not X.is_floating_point():
            X = X.float()
    else:
        try:
            A = check_array(
                X,
                accept_sparse=False,
                dtype=[np.float32, np.float64],
                ensure_2d=min_ndim >= 2,
                allow_nd=True,
                ensure_all_finite=finite,
                input_name=name,
            )
        except ValueError as e:
            raise ValueError(
                f"{name} must be a non-empty array of finite real numbers with examples along dim 0: {e}"
            ) from e
        X = torch.as_tensor(A, dtype=dtype if dtype is not None else torch.float32)
    if X.dim() < min_ndim or X.shape[0] == 0:
        raise ValueError(f"{name} must be non-empty with examples along dim 0, got shape {tuple(X.shape)}")
    if finite and not bool(torch.isfinite(X).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return X


def as_labels(y, n: int, name: str = "y", x_name: str = "X"):
    """Class indices y (n,) >= 0, array-like or tensor -> int64 tensor (n,). Continuous or
    multi-output targets are refused with scikit-learn's message ("Unknown label type")."""
    import torch
    from sklearn.utils.multiclass import check_classification_targets

    if y is None:
        raise ValueError(f"{name}: this estimator requires y to be passed, but the target y is None")
    t = y if isinstance(y, torch.Tensor) else None
    a = to_numpy(y)
    if a.ndim == 2 and a.shape[1] == 1:
        import warnings

        from sklearn.exceptions import DataConversionWarning

        warnings.warn(
            f"A column-vector {name} was passed when a 1d array was expected: shape ({n},) is used",
            DataConversionWarning,
            stacklevel=3,
        )
        a = a.ravel()
        t = None if t is None else t.reshape(-1)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) to match {x_name}, got {tuple(a.shape)}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    try:
        check_classification_targets(a)
    except ValueError as e:
        raise ValueError(f"{name} must hold class indices 0, 1, ...: {e}") from e
    if a.dtype.kind in "OSU":
        raise ValueError(f"{name} must hold class indices 0, 1, ... (integers), got labels of dtype {a.dtype}")
    out = (t if t is not None else torch.as_tensor(a)).long()
    if bool((out < 0).any()):
        raise ValueError(f"{name} must hold class indices >= 0")
    return out


def as_xy(X, y, name: str = "X", *, min_ndim: int = 1):
    """(X, y) -> (checked tensor X (N, ...), int64 class indices (N,)); see as_tensor, as_labels."""
    X = as_tensor(X, name, min_ndim=min_ndim)
    return X, as_labels(y, X.shape[0], "y", name)


def as_weights(sample_weight, n: int, name: str = "sample_weight", dtype=None):
    """Per-example weights (n,) finite, >= 0 and not all zero -> a float32 (or ``dtype``) tensor,
    or None."""
    import torch

    if sample_weight is None:
        return None
    w = torch.as_tensor(to_numpy(sample_weight), dtype=dtype or torch.float32).flatten()
    if w.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(w.shape)}")
    if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"{name} must be finite, >= 0 and not all zero")
    return w


def as_numpy_2d(X, name: str = "X") -> np.ndarray:
    """X (N, ...) array-like or tensor -> float64 ndarray (N, D), images flattened; ValueError
    naming ``name`` on empty or non-finite input."""
    A = to_numpy(X)
    if A.ndim < 1 or A.shape[0] == 0:
        raise ValueError(f"{name} must be non-empty with examples along dim 0, got shape {A.shape}")
    if A.dtype.kind in "cOSUV":
        raise ValueError(f"{name} must hold real numbers, got an array of dtype {A.dtype}")
    A = A.reshape(A.shape[0], -1).astype(np.float64)
    if not np.isfinite(A).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return A
