"""Learning from several sources weighted by their discrepancy to a task.

- ``UntrustedSources``: robust learning from untrusted sources (Konstantinov & Lampert, ICML
  2019): a small trusted labelled target, several labelled sources of unknown quality; weights
  per source from their label-aware discrepancy to the target, then weighted training.
- ``MultiTaskUnlabeled``: multi-task learning with unlabeled tasks (Pentina & Lampert, ICML
  2017): pairwise (unlabeled) discrepancies between all tasks, a few tasks chosen to be labelled,
  task-to-task weights, and each task's model trained by weighted multi-source adaptation.

Both use the weights that minimise the bound of these papers,

    alpha = argmin_{alpha in simplex} sum_i alpha_i d_i + lam * sqrt(sum_i alpha_i^2 / m_i),

d_i the discrepancy of source i to the task, m_i its size: share from as many sources as
possible (the square root shrinks with more data) but only from sufficiently similar ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from .._base import like_input
from .._validation import as_numpy_2d, check_fitted, to_numpy
from .discrepancy import labeled_discrepancy, linear_discrepancy, proxy_a_distance

__all__ = [
    "MultiTaskUnlabeled",
    "UntrustedSources",
    "bound_weights",
    "choose_tasks_to_label",
    "pairwise_discrepancies",
]


def _project_simplex(v: np.ndarray) -> np.ndarray:
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1
    k = np.arange(1, len(v) + 1)
    rho = np.nonzero(u - css / k > 0)[0][-1]
    return np.maximum(v - css[rho] / (rho + 1), 0)


def bound_weights(discrepancies, sizes, lam: float = 1.0, iters: int = 2000) -> np.ndarray:
    """alpha (K,) on the simplex minimising sum_i alpha_i d_i + lam sqrt(sum_i alpha_i^2 / m_i)
    (convex; projected gradient descent with a decaying step). discrepancies (K,) >= 0,
    sizes (K,) > 0. lam -> 0 puts all weight on the closest source; lam -> inf weights sources
    by their size (alpha_i proportional to m_i)."""
    d = np.asarray(discrepancies, dtype=np.float64)
    m = np.asarray(sizes, dtype=np.float64)
    if d.ndim != 1 or m.shape != d.shape or len(d) == 0:
        raise ValueError(f"discrepancies and sizes must be 1-D of one length, got {d.shape} and {m.shape}")
    if (m <= 0).any() or (d < 0).any() or not np.isfinite(d).all():
        raise ValueError("sizes must be > 0 and discrepancies finite and >= 0")
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")

    def f(a):
        return a @ d + lam * np.sqrt(np.sum(a * a / m))

    a = m / m.sum()
    best, best_f = a, f(a)
    for t in range(iters):
        r = np.sqrt(np.sum(a * a / m))
        g = d + lam * (a / m) / max(r, 1e-12)
        a = _project_simplex(a - g * (0.5 / np.sqrt(t + 1)) * (1.0 / (np.abs(g).max() + 1e-12)))
        fa = f(a)
        if fa < best_f:
            best, best_f = a, fa
    # one-hot candidates too (the optimum can be a vertex)
    for i in range(len(d)):
        e = np.zeros(len(d))
        e[i] = 1
        if f(e) < best_f:
            best, best_f = e, f(e)
    return best


def _default_estimator():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000)


def _np(X, name: str = "X") -> np.ndarray:
    """Inputs (N, ...) -> float64 (N, D) (``as_numpy_2d``); labels (N,) -> numpy as they are."""
    A = to_numpy(X)
    return as_numpy_2d(A, name) if A.ndim > 1 else A


class UntrustedSources(ClassifierMixin, BaseEstimator):
    """Robust learning from untrusted sources (Konstantinov & Lampert 2019).

    ``fit(sources=[(X_i (m_i, *), y_i (m_i,)), ...], target=(X_T (m_T, *), y_T (m_T,)))``:
    d_i = ``labeled_discrepancy`` between source i and the trusted target (the target itself is a
    source with d = 0 when include_target), alpha = ``bound_weights(d, m, lam)``, then the
    estimator (any scikit-learn classifier with ``sample_weight``; default LogisticRegression)
    is trained on the union with per-example weight alpha_i / m_i (scaled to mean 1).

    lam is the bound's confidence constant: the empirical discrepancy to a small target is biased
    upwards (a sup over hypotheses on few points), so lam must be large enough for close sources
    to beat the target alone (lam = 1 with 40 target points keeps only the target; 3, the
    default, shares with sources closer than about 0.3).

    Learned: ``discrepancies_`` (K,), ``weights_`` (K,) (the last entry is the target's when
    include_target), ``estimator_``, ``classes_``. ``predict``, ``predict_proba``, ``score``
    (numpy in -> numpy out, a tensor in -> a tensor out).
    """

    def __init__(self, estimator=None, lam: float = 3.0, include_target: bool = True, random_state=0):
        self.estimator, self.lam, self.include_target, self.random_state = estimator, lam, include_target, random_state

    def fit(self, sources: Sequence, target) -> UntrustedSources:
        from sklearn.base import clone

        if len(sources) == 0:
            raise ValueError("sources must be a non-empty list of (X, y) pairs")
        Xt, yt = target
        parts = [(X, y) for X, y in sources] + ([(Xt, yt)] if self.include_target else [])
        n_classes = int(max(int(torch.as_tensor(y).max()) for _, y in parts)) + 1
        d = [labeled_discrepancy(X, y, Xt, yt, n_classes=n_classes, random_state=self.random_state) for X, y in sources]
        if self.include_target:
            d.append(0.0)
        m = [len(y) for _, y in parts]
        self.discrepancies_ = np.array(d)
        self.weights_ = bound_weights(self.discrepancies_, m, self.lam)
        X = np.concatenate([_np(X) for X, _ in parts])
        y = np.concatenate([_np(y) for _, y in parts])
        w = np.concatenate([np.full(mi, a / mi) for a, mi in zip(self.weights_, m)])
        keep = w > 0
        self.estimator_ = clone(self.estimator) if self.estimator is not None else _default_estimator()
        self.estimator_.fit(X[keep], y[keep], sample_weight=w[keep] * keep.sum() / w[keep].sum())
        self.classes_ = getattr(self.estimator_, "classes_", None)
        return self

    def predict(self, X):
        """X (N, ...) -> (N,) labels."""
        check_fitted(self)
        return like_input(self.estimator_.predict(_np(X)), X)

    def predict_proba(self, X):
        """X (N, ...) -> (N, C) probabilities."""
        check_fitted(self)
        return like_input(self.estimator_.predict_proba(_np(X)), X)

    def score(self, X, y, sample_weight=None) -> float:
        """(Weighted) accuracy on (X (N, ...), y (N,))."""
        hit = (to_numpy(self.predict(X)) == _np(y)).astype(np.float64)
        w = np.ones_like(hit) if sample_weight is None else to_numpy(sample_weight).astype(np.float64)
        return float((w * hit).sum() / w.sum())


def pairwise_discrepancies(tasks: Sequence, kind: str = "linear", random_state=0) -> np.ndarray:
    """(T, T) symmetric matrix of unlabeled discrepancies between the tasks' inputs (zero diagonal).
    kind 'linear' (``linear_discrepancy``, in [0, 1]) or 'proxy_a' (``proxy_a_distance`` / 2)."""
    T = len(tasks)
    D = np.zeros((T, T))
    for i in range(T):
        for j in range(i + 1, T):
            if kind == "linear":
                v = linear_discrepancy(tasks[i], tasks[j], restarts=1, steps=100, random_state=random_state)
            elif kind == "proxy_a":
                v = proxy_a_distance(tasks[i], tasks[j], random_state=random_state) / 2
            else:
                raise ValueError(f"kind must be 'linear' or 'proxy_a', got {kind!r}")
            D[i, j] = D[j, i] = v
    return D


def choose_tasks_to_label(D, k: int) -> list[int]:
    """Which k tasks to label: greedy k-medoids on the discrepancy matrix D (T, T), minimising
    sum_t min_{i labelled} D[t, i] (every task close to some labelled one)."""
    D = np.asarray(D, dtype=np.float64)
    if D.ndim != 2 or D.shape[0] != D.shape[1]:
        raise ValueError(f"D must be a square matrix, got {D.shape}")
    if not 1 <= k <= len(D):
        raise ValueError(f"k must be in [1, {len(D)}], got {k}")
    chosen: list[int] = []
    cur = np.full(len(D), np.inf)
    for _ in range(k):
        cost = [np.minimum(cur, D[:, j]).sum() if j not in chosen else np.inf for j in range(len(D))]
        j = int(np.argmin(cost))
        chosen.append(j)
        cur = np.minimum(cur, D[:, j])
    return sorted(chosen)


class MultiTaskUnlabeled(BaseEstimator):
    """Multi-task learning with unlabeled tasks (Pentina & Lampert 2017).

    ``fit(tasks=[X_1, ..., X_T], labels={i: y_i for the labelled tasks})``: step 1, pairwise
    discrepancies between all tasks (unlabeled, ``pairwise_discrepancies``); step 2, for every
    task t, weights over the labelled tasks alpha^t = ``bound_weights(D[t, L], m_L, lam)``;
    step 3, task t's classifier is trained on the labelled tasks' union with per-example weights
    alpha^t_i / m_i (weighted multi-source adaptation). Use ``choose_tasks_to_label(D, k)`` on
    ``pairwise_discrepancies(tasks)`` to decide which tasks to label first.

    Learned: ``discrepancies_`` (T, T), ``labeled_`` (sorted task indices), ``weights_`` (T, L),
    ``estimators_`` (one per task). ``predict(t, X)``, ``score(t, X, y)`` (a per-task surface:
    scikit-learn's ClassifierMixin does not apply).
    """

    def __init__(self, estimator=None, lam: float = 1.0, discrepancy: str = "linear", random_state=0):
        self.estimator, self.lam, self.discrepancy, self.random_state = estimator, lam, discrepancy, random_state

    def fit(self, tasks: Sequence, labels: dict, discrepancies=None) -> MultiTaskUnlabeled:
        from sklearn.base import clone

        if not labels:
            raise ValueError("labels must give the labels of at least one task: {task index: y}")
        T = len(tasks)
        if any(not 0 <= i < T for i in labels):
            raise ValueError(f"labels keys must be task indices in [0, {T})")
        self.discrepancies_ = (
            np.asarray(discrepancies, dtype=np.float64)
            if discrepancies is not None
            else pairwise_discrepancies(tasks, self.discrepancy, self.random_state)
        )
        L = sorted(labels)
        self.labeled_ = L
        m = [len(labels[i]) for i in L]
        X = np.concatenate([_np(tasks[i]) for i in L])
        y = np.concatenate([_np(labels[i]) for i in L])
        self.weights_ = np.stack([bound_weights(self.discrepancies_[t, L], m, self.lam) for t in range(T)])
        self.estimators_ = []
        for t in range(T):
            w = np.concatenate([np.full(mi, a / mi) for a, mi in zip(self.weights_[t], m)])
            keep = w > 0
            est = clone(self.estimator) if self.estimator is not None else _default_estimator()
            est.fit(X[keep], y[keep], sample_weight=w[keep] * keep.sum() / w[keep].sum())
            self.estimators_.append(est)
        return self

    def predict(self, task: int, X):
        """X (N, ...) -> (N,) labels of task `task`'s model (numpy, or a tensor for a tensor X)."""
        check_fitted(self)
        if not (isinstance(task, (int, np.integer)) and 0 <= task < len(self.estimators_)):
            raise ValueError(f"task must be a task index in [0, {len(self.estimators_)}), got {task!r}")
        return like_input(self.estimators_[task].predict(_np(X)), X)

    def score(self, task: int, X, y) -> float:
        """Accuracy of task `task`'s model on (X (N, ...), y (N,))."""
        return float(np.mean(to_numpy(self.predict(task, X)) == _np(y)))
