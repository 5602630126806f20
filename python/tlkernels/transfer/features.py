"""Pretrained features: a frozen feature extractor, features computed once, a simple model on top."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from sklearn.base import ClassifierMixin as _SkClassifier
from torch import Tensor, nn

from .._base import TorchEstimator, TorchTransformerMixin
from .._seeding import seed_global_torch
from .._validation import as_labels
from ..nn import mlp
from ._common import (
    ClassifierMixin,
    as_weights,
    as_x,
    get_layer,
    torch_generator,
    train_loop,
)

__all__ = ["FeatureProbe", "extract_features"]


@torch.no_grad()
def extract_features(
    model: nn.Module, X, layer: str | None = None, batch_size: int = 256, device=None, arg: str = "feature_extractor"
) -> Tensor:
    """phi(X): the model's output, or the output of the named submodule `layer` (a forward hook),
    in eval mode, batched, without gradients. X (N, ...) -> (N, F) float32 on the CPU.

    A ValueError names `layer` if it does not exist and `arg` if the features are not 2-D.
    """
    X = as_x(X)
    device = torch.device(device) if device is not None else torch.device("cpu")
    target = get_layer(model, layer) if layer is not None else None
    grabbed: list[Tensor] = []
    hook = target.register_forward_hook(lambda m, i, o: grabbed.append(o)) if target is not None else None
    was = model.training
    model.eval()
    outs = []
    try:
        for i in range(0, X.shape[0], batch_size):
            out = model(X[i : i + batch_size].to(device))
            if target is not None:
                out = grabbed.pop()
                grabbed.clear()
            if not isinstance(out, Tensor) or out.dim() != 2:
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                where = f"layer {layer!r}" if layer is not None else arg
                raise ValueError(
                    f"{arg}: features must be 2-D (N, F), but {where} gives {shape}; "
                    f"pick another layer or append nn.Flatten()"
                )
            outs.append(out.detach().float().cpu())
    finally:
        if hook is not None:
            hook.remove()
        model.train(was)
    return torch.cat(outs)


def _key(X: Tensor) -> str:
    a = X.detach().cpu().contiguous().numpy()
    return hashlib.sha1(a.tobytes()).hexdigest() + str(a.shape)


class FeatureProbe(ClassifierMixin, _SkClassifier, TorchTransformerMixin, TorchEstimator):
    """A linear model (or k-NN, or a small MLP) on frozen pretrained features.

    The feature extractor is never trained: features are extracted once per distinct input
    (batched, cached by content) and the head is fitted on them.

    Args:
        feature_extractor: nn.Module mapping X (N, ...) to features (None: nn.Flatten(), the
            raw inputs as features); the whole model's output is
            used unless `layer` names a submodule (e.g. '4' for the penultimate ReLU of a
            Sequential) whose output is taken instead. Features must be 2-D (N, F).
        head: 'logistic' (scikit-learn's LogisticRegression on standardised features, C chosen by
            the caller), 'knn' (k nearest neighbours by cosine similarity, weighted vote: works
            with a handful of examples) or 'mlp' (one hidden layer, trained with Adam).
        C: inverse L2 strength of the logistic head; n_neighbors: k of the k-NN head;
        hidden, lr, epochs, batch_size: the MLP head.
        device, random_state, verbose (tqdm bar of the MLP head).

    Attributes after fit: ``n_features_`` (F), ``classes_``, ``head_`` (the fitted head),
    ``n_extracted_`` (how many examples went through the extractor: the cache's effect; the
    cache lives as long as the estimator, ``transform`` works before fit too).
    """

    def __init__(
        self,
        feature_extractor: nn.Module | None = None,
        head: str = "logistic",
        layer: str | None = None,
        *,
        C: float = 1.0,
        n_neighbors: int = 1,
        hidden: int = 64,
        lr: float = 1e-2,
        epochs: int = 100,
        batch_size: int = 64,
        cache: bool = True,
        device=None,
        random_state=None,
        verbose: bool = False,
    ):
        if head not in ("logistic", "knn", "mlp"):
            raise ValueError(f"head must be 'logistic', 'knn' or 'mlp', got {head!r}")
        if feature_extractor is not None and not isinstance(feature_extractor, nn.Module):
            raise ValueError(f"feature_extractor must be an nn.Module or None, got {type(feature_extractor).__name__}")
        if layer is not None and feature_extractor is not None:
            get_layer(feature_extractor, layer)
        if not C > 0:
            raise ValueError(f"C must be positive, got {C}")
        if not (isinstance(n_neighbors, int) and n_neighbors >= 1):
            raise ValueError(f"n_neighbors must be an int >= 1, got {n_neighbors!r}")
        self.feature_extractor, self.head, self.layer = feature_extractor, head, layer
        self.C, self.n_neighbors, self.hidden, self.lr, self.epochs = C, n_neighbors, hidden, lr, epochs
        self.batch_size, self.cache, self.device = batch_size, cache, device
        self.random_state, self.verbose = random_state, verbose

    def _extractor(self) -> nn.Module:
        return self.feature_extractor if self.feature_extractor is not None else nn.Flatten()

    def _features(self, X: Tensor) -> Tensor:
        """Checked X (N, ...) -> frozen features (N, F), a CPU tensor, through the cache."""
        cache = self.__dict__.setdefault("_cache", {})
        key = _key(X) if self.cache else None
        if key is not None and key in cache:
            return cache[key]
        Z = extract_features(self._extractor(), X, self.layer, device=self.device)
        self.n_extracted_ = getattr(self, "n_extracted_", 0) + X.shape[0]
        if key is not None:
            cache[key] = Z
        return Z

    def transform(self, X):
        """X (N, ...) -> frozen features (N, F) (numpy for numpy X, a tensor for a tensor)."""
        from .._base import like_input

        self._check_is_fitted()
        return like_input(self._features(self._validate_X(X, reset=False)), X)

    def fit(self, X, y, sample_weight=None) -> FeatureProbe:
        """X (N, ...), y (N,) class indices, sample_weight (N,) or None; returns self."""
        X = self._validate_X(X, reset=True)
        y = as_labels(y, X.shape[0])
        w = as_weights(sample_weight, X.shape[0])
        Z = self._features(X)
        self.n_features_ = Z.shape[1]
        n_classes = int(y.max()) + 1
        self.classes_ = np.arange(max(n_classes, 2)) if self.head != "logistic" else np.unique(y.numpy())
        if self.head == "logistic":
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            self.head_ = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=2000))
            self.head_.fit(Z.numpy(), y.numpy(), logisticregression__sample_weight=None if w is None else w.numpy())
        elif self.head == "knn":
            Zn = torch.nn.functional.normalize(Z, dim=1)
            self.head_ = {"Z": Zn, "y": y.clone(), "w": torch.ones(len(y)) if w is None else w, "n_classes": n_classes}
        else:
            gen = torch_generator(self.random_state)
            seed_global_torch(gen)
            mu, sd = Z.mean(0), Z.std(0).clamp_min(1e-6)
            net = mlp(Z.shape[1], (self.hidden,), n_classes)
            train_loop(
                net,
                [{"params": net.parameters(), "lr": self.lr, "weight_decay": 1e-4}],
                (Z - mu) / sd,
                y,
                epochs=self.epochs,
                batch_size=self.batch_size,
                optimizer="adam",
                gen=gen,
                device="cpu",
                sample_weight=w,
                verbose=self.verbose,
                desc="mlp head",
            )
            self.head_ = {"net": net, "mu": mu, "sd": sd}
        return self

    def _decision(self, X) -> Tensor:
        """X (N, ...) -> scores (N, C): log-probabilities (logistic: over ``classes_``), logits
        (mlp) or weighted neighbour votes (knn)."""
        Z = self._features(self._validate_X(X, reset=False))
        if self.head == "logistic":
            return torch.as_tensor(np.log(self.head_.predict_proba(Z.numpy()) + 1e-12))
        if self.head == "knn":
            h = self.head_
            sim = torch.nn.functional.normalize(Z, dim=1) @ h["Z"].T
            k = min(self.n_neighbors, sim.shape[1])
            top = sim.topk(k, dim=1)
            votes = torch.zeros(Z.shape[0], h["n_classes"])
            # nearest neighbour first; ties broken towards closer neighbours by a tiny similarity term
            votes.scatter_add_(1, h["y"][top.indices], h["w"][top.indices] * (1 + 1e-3 * top.values))
            return votes
        h = self.head_
        with torch.no_grad():
            return h["net"]((Z - h["mu"]) / h["sd"])

    def predict(self, X):
        """X (N, ...) -> classes (N,) (``classes_[argmax]`` of the scores)."""
        self._check_is_fitted()
        from .._base import like_input

        idx = self._decision(X).argmax(1)
        return like_input(torch.as_tensor(self.classes_)[idx], X)
