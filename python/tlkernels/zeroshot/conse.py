"""ConSE (Norouzi et al. 2014, Lee 2016 "Convex Combination of Semantic Embedding"): an
off-the-shelf classifier over the seen classes + the class embeddings, no further training."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from .._validation import check_fitted
from ._common import (
    ZeroShotPredictMixin,
    check_class_attributes,
    check_labels,
    resolve_candidates,
    to_numpy_2d,
)
from .embedding import encode_classes, encoded_table

__all__ = ["ConSE"]


class ConSE(ZeroShotPredictMixin, ClassifierMixin, BaseEstimator):
    """ConSE: embed x as the convex combination of the embeddings of its top-T seen classes,

        s(x) = sum_{t<=T} p(y_t | x) w_{y_t} / sum_{t<=T} p(y_t | x),

    (y_t the t-th most probable seen class), then predict the candidate class z whose embedding
    w_z has the largest cosine similarity with s(x).

    Args:
        classifier: 'logistic' (LogisticRegression(C=C)) or any estimator with fit / predict_proba /
            classes_ (classes_ = table rows); cloned in fit unless prefit=True (then used as is and
            fit only records the table).
        T: number of top seen-class predictions combined (1 = the embedding of the arg-max class).
        C: inverse regularisation of the 'logistic' classifier.
        signed, normalize: how the table rows become embeddings (``encode_classes``); the default
            keeps the 0/1 rows and only L2-normalises them.
        random_state: passed to the 'logistic' classifier.

    fit(X (N, ...), y (N,) rows of class_attributes, class_attributes (K, A) of all classes,
    sample_weight (N,) or None). Attributes: ``classifier_``, ``seen_classes_``, ``class_embeddings_``.
    """

    def __init__(
        self,
        classifier="logistic",
        T: int = 5,
        C: float = 1.0,
        *,
        prefit: bool = False,
        signed: bool = False,
        normalize: bool = True,
        random_state=None,
    ):
        if not (isinstance(T, (int, np.integer)) and T >= 1):
            raise ValueError(f"T must be an int >= 1, got {T!r}")
        if not C > 0:
            raise ValueError(f"C must be positive, got {C}")
        if isinstance(classifier, str) and classifier != "logistic":
            raise ValueError(f"classifier must be 'logistic' or an estimator with predict_proba, got {classifier!r}")
        if not isinstance(classifier, str) and not hasattr(classifier, "predict_proba"):
            raise ValueError(f"classifier must have predict_proba, got {type(classifier).__name__}")
        self.classifier, self.T, self.C, self.prefit = classifier, T, C, prefit
        self.signed, self.normalize, self.random_state = signed, normalize, random_state

    def fit(self, X, y, class_attributes, sample_weight=None) -> ConSE:
        """Trains the seen-class classifier (unless prefit) and stores the class embeddings."""
        S = check_class_attributes(class_attributes)
        if self.prefit:
            clf = self.classifier
            if not hasattr(clf, "classes_"):
                raise ValueError("classifier must be fitted (have classes_) when prefit=True")
            seen = np.asarray(clf.classes_).astype(np.int64)
            check_labels(seen, seen.shape[0], S.shape[0], "classifier.classes_")
        else:
            Xn = to_numpy_2d(X)
            yy = check_labels(y, Xn.shape[0], S.shape[0])
            if self.classifier == "logistic":
                from sklearn.linear_model import LogisticRegression

                clf = LogisticRegression(C=self.C, max_iter=2000, random_state=self.random_state)
            else:
                from sklearn.base import clone

                clf = clone(self.classifier)
            if sample_weight is None:
                clf.fit(Xn, yy)
            else:
                clf.fit(Xn, yy, sample_weight=np.asarray(sample_weight, dtype=np.float64))
            seen = np.asarray(clf.classes_).astype(np.int64)
        self.classifier_, self.seen_classes_ = clf, seen
        self.class_attributes_ = S
        self.class_embeddings_ = encode_classes(S, self.signed, self.normalize)
        return self

    def embed(self, X) -> np.ndarray:
        """X (N, ...) -> s(x) (N, A): the probability-weighted mean embedding of the top-T seen classes."""
        check_fitted(self)
        P = np.asarray(self.classifier_.predict_proba(to_numpy_2d(X)), dtype=np.float64)  # (N, S)
        T = min(int(self.T), P.shape[1])
        top = np.argsort(-P, axis=1, kind="stable")[:, :T]  # (N, T)
        p = np.take_along_axis(P, top, 1)
        E = self.class_embeddings_[self.seen_classes_][top]  # (N, T, A)
        return (p[..., None] * E).sum(1) / np.maximum(p.sum(1, keepdims=True), 1e-12)

    def _table(self, class_attributes):
        return encoded_table(self, class_attributes)

    def _scores(self, X, candidate_classes=None, class_attributes=None) -> np.ndarray:
        """Cosine similarities (N, len(candidates)) between s(x) and the candidates' embeddings."""
        W = self._table(class_attributes)
        cand = resolve_candidates(candidate_classes, W.shape[0], self.seen_classes_)
        s = self.embed(X)
        Wc = W[cand]
        s = s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)
        Wc = Wc / np.maximum(np.linalg.norm(Wc, axis=1, keepdims=True), 1e-12)
        return s @ Wc.T
