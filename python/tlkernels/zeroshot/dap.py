"""Direct Attribute Prediction (Lampert, Nickisch & Harmeling, CVPR 2009): attribute-based
zero-shot classification (Lampert 2019, "attribute-based classification", steps 1-2)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from .._validation import as_weights, check_fitted
from ._common import (
    ZeroShotPredictMixin,
    check_class_attributes,
    check_labels,
    resolve_candidates,
    to_numpy_2d,
)

__all__ = ["DAP"]


class _Constant:
    """Stand-in for an attribute that never changes on the seen classes: p(a = value) = 1."""

    def __init__(self, value: float):
        self.value = float(value)

    def predict_proba(self, X):
        p1 = np.full(X.shape[0], self.value)
        return np.stack([1.0 - p1, p1], 1)


class DAP(ZeroShotPredictMixin, ClassifierMixin, BaseEstimator):
    """Direct Attribute Prediction.

    Step 1 (``fit``): from the labels of the seen classes build one binary training set per
    attribute (a_m of an example = the table entry of its class) and train one probabilistic
    classifier p(a_m = 1 | x) per attribute.
    Step 2 (``predict``): among the candidate classes z with attribute vectors a^z,

        f(x) = argmax_z  prod_m  p(a_m = a_m^z | x) / p(a_m = a_m^z),

    the MAP rule of Lampert et al. with a uniform class prior, computed in log space.

    Args:
        attribute_estimator: 'logistic' (scikit-learn LogisticRegression(C=C)), any estimator with
            fit(X, y[, sample_weight]) / predict_proba (cloned once per attribute), or a list of
            A such estimators (one per attribute, used as given).
        C: inverse regularisation of the 'logistic' estimators.
        prior: 'empirical' (p(a_m = 1) = mean of a_m over the seen classes' table rows, as in the
            paper) or 'uniform' (p(a_m) = 1/2: the rule becomes prod_m p(a_m^z | x)).
        clip: probabilities and priors are clipped into [clip, 1 - clip] (a single confident
            attribute classifier must not veto a class with log 0).
        random_state: passed to the 'logistic' estimators.

    fit(X (N, ...), y (N,) indices into the table rows, class_attributes (K, A) binary, the table
    of ALL classes (seen and unseen), sample_weight (N,) or None). Attributes: ``class_attributes_``
    (K, A) bool, ``seen_classes_`` (the classes in y), ``estimators_`` (A,), ``attribute_prior_``
    (A,) = p(a_m = 1).
    An attribute constant over the seen classes cannot be learnt; it gets a constant classifier
    and, with the empirical prior, contributes nothing to the decision.
    """

    def __init__(
        self,
        attribute_estimator="logistic",
        C: float = 1.0,
        prior: str = "empirical",
        clip: float = 1e-3,
        random_state=None,
    ):
        if prior not in ("empirical", "uniform"):
            raise ValueError(f"prior must be 'empirical' or 'uniform', got {prior!r}")
        if not C > 0:
            raise ValueError(f"C must be positive, got {C}")
        if not 0 < clip < 0.5:
            raise ValueError(f"clip must be in (0, 0.5), got {clip}")
        if isinstance(attribute_estimator, str) and attribute_estimator != "logistic":
            raise ValueError(
                f"attribute_estimator must be 'logistic', an estimator or a list of estimators, "
                f"got {attribute_estimator!r}"
            )
        self.attribute_estimator, self.C, self.prior = attribute_estimator, C, prior
        self.clip, self.random_state = clip, random_state

    def _make(self, A: int) -> list:
        est = self.attribute_estimator
        if isinstance(est, (list, tuple)):
            if len(est) != A:
                raise ValueError(
                    f"attribute_estimator is a list of {len(est)} estimators but class_attributes has {A} attributes"
                )
            return list(est)
        if est == "logistic":
            from sklearn.linear_model import LogisticRegression

            return [LogisticRegression(C=self.C, max_iter=2000, random_state=self.random_state) for _ in range(A)]
        from sklearn.base import clone

        return [clone(est) for _ in range(A)]

    def fit(self, X, y, class_attributes, sample_weight=None) -> DAP:
        """X (N, ...) seen-class examples, y (N,) their classes (rows of class_attributes (K, A))."""
        X = to_numpy_2d(X)
        S = check_class_attributes(class_attributes)
        if not np.isin(S, (0.0, 1.0)).all():
            raise ValueError("class_attributes must be binary (0/1 or bool) for DAP")
        y = check_labels(y, X.shape[0], S.shape[0])
        w = as_weights(sample_weight, X.shape[0], dtype=torch.float64)
        w = None if w is None else w.numpy()
        self.class_attributes_ = S.astype(bool)
        self.seen_classes_ = np.unique(y)
        if self.seen_classes_.size < 2:
            raise ValueError("y must contain at least 2 seen classes")
        A = S.shape[1]
        A_y = self.class_attributes_[y]  # (N, A) the attribute labels of every example
        self.estimators_ = []
        for m, est in enumerate(self._make(A)):
            t = A_y[:, m].astype(np.int64)
            if t.min() == t.max():
                self.estimators_.append(_Constant(t[0]))
                continue
            if w is None:
                est.fit(X, t)
            else:
                est.fit(X, t, sample_weight=w)
            self.estimators_.append(est)
        self.attribute_prior_ = (
            self.class_attributes_[self.seen_classes_].mean(0) if self.prior == "empirical" else np.full(A, 0.5)
        )
        self.n_features_in_ = X.shape[1]
        return self

    def _check_fitted(self):
        check_fitted(self)

    def predict_attributes(self, X) -> np.ndarray:
        """X (N, ...) -> p(a_m = 1 | x) (N, A), clipped into [clip, 1 - clip]."""
        self._check_fitted()
        X = to_numpy_2d(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} features, got {X.shape[1]}")
        P = np.empty((X.shape[0], len(self.estimators_)))
        for m, est in enumerate(self.estimators_):
            proba = np.asarray(est.predict_proba(X))
            classes = list(getattr(est, "classes_", [0, 1]))
            P[:, m] = proba[:, classes.index(1)]
        return np.clip(P, self.clip, 1 - self.clip)

    def _table(self, class_attributes):
        if class_attributes is None:
            return self.class_attributes_
        S = check_class_attributes(class_attributes)
        if S.shape[1] != self.class_attributes_.shape[1]:
            raise ValueError(
                f"class_attributes must have {self.class_attributes_.shape[1]} attributes, got shape {S.shape}"
            )
        return S.astype(bool)

    def _scores(self, X, candidate_classes=None, class_attributes=None) -> np.ndarray:
        """Log of the DAP score, (N, len(candidates)): sum_m log p(a_m^z | x) - log p(a_m^z).

        candidate_classes: indices into the table (default: every class not seen in fit);
        class_attributes: the table (default: the one given to fit)."""
        S = self._table(class_attributes)
        cand = resolve_candidates(candidate_classes, S.shape[0], self.seen_classes_)
        P = self.predict_attributes(X)  # (N, A)
        prior = np.clip(self.attribute_prior_, self.clip, 1 - self.clip)
        Z = S[cand].astype(np.float64)  # (C, A)
        log_lik = np.log(P) @ Z.T + np.log1p(-P) @ (1 - Z).T  # (N, C)
        log_prior = (np.log(prior) * Z + np.log1p(-prior) * (1 - Z)).sum(1)  # (C,)
        return log_lik - log_prior
