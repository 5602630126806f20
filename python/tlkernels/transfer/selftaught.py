"""Self-taught learning (Raina et al. 2007): a representation learned from unlabeled data that need
not share the target's classes or distribution (here: other digits), then a supervised classifier
on the target examples' representations."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import ClassifierMixin as _SkClassifier

from .._base import TorchEstimator, like_input
from .._seeding import draw_seed
from ..nn import mlp
from ._common import ClassifierMixin, as_weights, as_x, as_xy, torch_generator
from .features import _key
from .selfsup import Autoencoder

__all__ = ["SelfTaught"]


class SelfTaught(ClassifierMixin, _SkClassifier, TorchEstimator):
    """Unlabeled data -> basis / encoder -> features of the labelled target -> logistic regression.

    Args:
        n_components: number of basis vectors (sparse coding) or code width (autoencoder).
        method: 'sparse_coding' (the paper: a dictionary b_j learned by L1-regularised
            reconstruction, features = the sparse activations a solving
            min_a ||x - sum_j a_j b_j||^2 + alpha ||a||_1) or 'autoencoder' (a one-hidden-layer
            denoising autoencoder, features = its ReLU code).
        alpha: the L1 weight of sparse coding; C: inverse L2 strength of the classifier.
        epochs: autoencoder training (its lr 1e-3, mask noise 0.2); device, random_state, verbose.

    fit(X, y, X_unlabeled, sample_weight=None): X (N, ...) labelled target, X_unlabeled (M, ...)
    the other data. Attributes: ``components_`` (sparse coding, (n_components, D)) or
    ``encoder_``; ``classifier_``; ``classes_`` (the labels seen by fit).
    """

    def __init__(
        self,
        n_components: int = 128,
        method: str = "sparse_coding",
        *,
        alpha: float = 0.5,
        C: float = 1.0,
        epochs: int = 50,
        device=None,
        random_state=None,
        verbose: bool = False,
    ):
        if method not in ("sparse_coding", "autoencoder"):
            raise ValueError(f"method must be 'sparse_coding' or 'autoencoder', got {method!r}")
        if not (isinstance(n_components, int) and n_components > 0):
            raise ValueError(f"n_components must be a positive int, got {n_components!r}")
        self.n_components, self.method, self.alpha, self.C = n_components, method, alpha, C
        self.epochs, self.device, self.random_state, self.verbose = epochs, device, random_state, verbose

    def fit_representation(self, X_unlabeled) -> SelfTaught:
        """Learns the basis / encoder from unlabeled data X_unlabeled (M, ...)."""
        U = as_x(X_unlabeled, "X_unlabeled").flatten(1)
        seed = draw_seed(torch_generator(self.random_state))
        if self.method == "sparse_coding":
            from sklearn.decomposition import MiniBatchDictionaryLearning

            dl = MiniBatchDictionaryLearning(
                n_components=self.n_components,
                alpha=self.alpha,
                batch_size=64,
                max_iter=10,
                transform_algorithm="lasso_cd",
                transform_alpha=self.alpha / U.shape[1],
                random_state=seed,
            )
            dl.fit(U.numpy())
            self.coder_ = dl
            self._cache = {}
            self.components_ = dl.components_
        else:
            enc = mlp(U.shape[1], (self.n_components,))
            self.autoencoder_ = Autoencoder(
                enc,
                noise="mask",
                noise_level=0.2,
                epochs=self.epochs,
                device=self.device,
                random_state=seed,
                verbose=self.verbose,
            ).fit(U)
            self.encoder_ = self.autoencoder_.encoder_
            self._cache = {}
        return self

    def transform(self, X):
        """X (N, ...) -> self-taught features (N, n_components) (numpy for numpy X, a tensor
        for a tensor)."""
        if not hasattr(self, "coder_") and not hasattr(self, "encoder_"):
            self._check_is_fitted()
        return like_input(torch.as_tensor(self._transform(X)), X)

    def _transform(self, X) -> np.ndarray:
        X = as_x(X).flatten(1)
        key = _key(X)
        cache = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            cache[key] = (
                self.coder_.transform(X.numpy())
                if self.method == "sparse_coding"
                else self.autoencoder_.transform(X).numpy()
            )
        return cache[key]

    def fit(self, X, y, X_unlabeled=None, sample_weight=None) -> SelfTaught:
        X, y = as_xy(X, y)
        w = as_weights(sample_weight, X.shape[0])
        if X_unlabeled is not None:
            self.fit_representation(X_unlabeled)
        elif not hasattr(self, "coder_") and not hasattr(self, "encoder_"):
            raise ValueError("X_unlabeled is required (or call fit_representation first)")
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.classifier_ = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=2000))
        self.classifier_.fit(
            self._transform(X), y.numpy(), logisticregression__sample_weight=None if w is None else w.numpy()
        )
        self.classes_ = self.classifier_.classes_
        return self

    def _decision(self, X):
        """X (N, ...) -> log-probabilities (N, C) over ``classes_``."""
        return torch.as_tensor(np.log(self.classifier_.predict_proba(self._transform(X)) + 1e-12))

    def predict(self, X):
        """X (N, ...) -> classes (N,) (``classes_[argmax]``)."""
        self._check_is_fitted()
        return like_input(torch.as_tensor(self.classes_)[self._decision(X).argmax(1)], X)
