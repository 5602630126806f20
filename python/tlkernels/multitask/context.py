"""Domain generalisation with a task context mu (Lampert 2019): a two-input network f(x, mu), and a
network whose last layer is predicted from the context, f(x) = phi_eta(x)^T beta(mu)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import ClassifierMixin
from torch import Tensor, nn

from .._base import TorchEstimator, like_input
from .._deprecation import moved_names
from .._validation import as_labels, to_numpy
from ..nn import mlp as _mlp
from ..transfer._common import (
    as_weights,
    reset_parameters,
    torch_generator,
    train_loop,
)

__all__ = [
    "ContextConcatNet",
    "ContextualClassifier",
    "WeightPredictingNet",
    "as_context",
]

# mlp, defined here before, is tlkernels.nn.mlp (one MLP builder); this path stays one release.
__getattr__ = moved_names(__name__, {"mlp": "tlkernels.nn"})


def as_context(context, n: int, dim: int | None = None, arg: str = "context") -> Tensor:
    """(N,) or (N, c) numbers -> float32 (N, c); checks N (and c when `dim` is given)."""
    if context is None:
        raise ValueError(f"{arg} is required: an (N, c) array of task context vectors, one row per example")
    c = context if isinstance(context, Tensor) else torch.as_tensor(np.asarray(context))
    c = c.float()
    if c.dim() == 1:
        c = c[:, None]
    if c.dim() != 2 or c.shape[0] != n:
        raise ValueError(f"{arg} must have shape ({n}, c) (or ({n},)), one row per example of X, got {tuple(c.shape)}")
    if dim is not None and c.shape[1] != dim:
        raise ValueError(f"{arg} must have {dim} columns (as in fit), got shape {tuple(c.shape)}")
    if not torch.isfinite(c).all():
        raise ValueError(f"{arg} contains NaN or infinite values")
    return c


class ContextConcatNet(nn.Module):
    """f(x, mu): an MLP on x flattened, with the context concatenated to the input (at='input') or
    to the first hidden layer's output (at='hidden').

    Args: in_features D (x is flattened to (N, D)), context_dim c, n_classes C, hidden widths, at.
    forward(x (N, ...), context (N, c)) -> logits (N, C).
    """

    def __init__(self, in_features: int, context_dim: int, n_classes: int, hidden=(128, 64), at: str = "input"):
        super().__init__()
        if at not in ("input", "hidden"):
            raise ValueError(f"at must be 'input' or 'hidden', got {at!r}")
        hidden = tuple(int(h) for h in hidden)
        if at == "hidden" and not hidden:
            raise ValueError("at='hidden' needs at least one hidden layer")
        self.at, self.context_dim = at, int(context_dim)
        if at == "input":
            self.first = nn.Identity()
            self.rest = _mlp(in_features + context_dim, hidden, n_classes)
        else:
            self.first = nn.Sequential(nn.Linear(in_features, hidden[0]), nn.ReLU())
            self.rest = _mlp(hidden[0] + context_dim, hidden[1:], n_classes)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        h = self.first(x.flatten(1))
        return self.rest(torch.cat([h, context], 1))


class WeightPredictingNet(nn.Module):
    """f(x) = phi_eta(x)^T beta(mu): a feature network phi_eta and a small hypernetwork beta mapping
    the context to the last layer's weight matrix W(mu) (C, D) and bias b(mu) (C,).

    Args:
        features: nn.Module x (N, ...) -> (N, D) (phi_eta).
        feature_dim D, context_dim c, n_classes C.
        hyper_hidden: hidden widths of beta; () makes beta affine in mu (a constant beta when its
            weight is zero: then the network is phi followed by a plain nn.Linear head).

    weights(context (N, c)) -> (W (N, C, D), b (N, C)); forward(x, context) -> logits (N, C).
    """

    def __init__(self, features: nn.Module, feature_dim: int, context_dim: int, n_classes: int, hyper_hidden=(32,)):
        super().__init__()
        if not isinstance(features, nn.Module):
            raise ValueError(f"features must be an nn.Module, got {type(features).__name__}")
        self.features = features
        self.feature_dim, self.context_dim, self.n_classes = int(feature_dim), int(context_dim), int(n_classes)
        self.hyper = _mlp(context_dim, hyper_hidden, n_classes * (feature_dim + 1))

    def weights(self, context: Tensor) -> tuple[Tensor, Tensor]:
        out = self.hyper(context)
        C, D = self.n_classes, self.feature_dim
        return out[:, : C * D].view(-1, C, D), out[:, C * D :]

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        phi = self.features(x)
        if phi.dim() != 2 or phi.shape[1] != self.feature_dim:
            raise ValueError(f"features must output (N, {self.feature_dim}), got {tuple(phi.shape)}")
        W, b = self.weights(context)
        return torch.einsum("nd,ncd->nc", phi, W) + b


class _Pooled(nn.Module):
    """An MLP that ignores the context: f(x, mu) = f(x)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x.flatten(1))


class ContextualClassifier(ClassifierMixin, TorchEstimator):
    """Train one model on the union of all source tasks, each example carrying its task's context
    vector mu; predict a new task from its context alone (domain generalisation).

    Args:
        model: 'concat' (``ContextConcatNet``), 'weights' (``WeightPredictingNet`` on an MLP phi with
            widths `hidden`) or 'pooled' (the same MLP, the context ignored: the baseline).
        hidden: MLP widths; hyper_hidden: the hypernetwork's widths (model='weights');
        at: where 'concat' joins the context ('input' | 'hidden').
        lr, epochs, batch_size, optimizer ('adam' | 'sgd'), weight_decay, device, random_state, verbose.

    fit(X (N, ...), y (N,), context (N, c) or (N,), sample_weight=None); context may be None for
    'pooled'. predict / predict_proba / decision_function / score take (X, context).
    Attributes: ``model_``, ``n_classes_``, ``context_dim_``, ``history_``.
    """

    MODELS = ("concat", "weights", "pooled")

    def __init__(
        self,
        model: str = "concat",
        hidden=(128, 64),
        *,
        hyper_hidden=(32,),
        at: str = "input",
        lr: float = 1e-3,
        epochs: int = 50,
        batch_size: int = 64,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        device=None,
        random_state=None,
        verbose: bool = False,
    ):
        if model not in self.MODELS:
            raise ValueError(f"model must be one of {self.MODELS}, got {model!r}")
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty sequence of positive widths, got {hidden!r}")
        if at not in ("input", "hidden"):
            raise ValueError(f"at must be 'input' or 'hidden', got {at!r}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not (isinstance(epochs, (int, np.integer)) and epochs >= 0):
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        self.model, self.hidden, self.hyper_hidden, self.at = model, hidden, hyper_hidden, at
        self.lr, self.epochs, self.batch_size, self.optimizer = lr, epochs, batch_size, optimizer
        self.weight_decay = weight_decay
        self.device = device
        self.random_state, self.verbose = random_state, verbose

    def _build(self, d_in: int, c: int, C: int) -> nn.Module:
        hidden = tuple(self.hidden)
        if self.model == "concat":
            return ContextConcatNet(d_in, c, C, hidden, self.at)
        if self.model == "weights":
            phi = nn.Sequential(nn.Flatten(), _mlp(d_in, hidden))
            return WeightPredictingNet(phi, hidden[-1], c, C, tuple(self.hyper_hidden))
        return _Pooled(_mlp(d_in, hidden, C))

    def _context(self, context, n: int, fitting: bool) -> Tensor:
        if self.model == "pooled" and context is None:
            return torch.zeros(n, 0 if fitting else self.context_dim_)
        return as_context(context, n, None if fitting else self.context_dim_)

    def fit(self, X, y, context=None, sample_weight=None) -> ContextualClassifier:
        """X (N, ...), y (N,) class indices, context (N, c) / (N,) (None for 'pooled'),
        sample_weight (N,); returns self."""
        X = self._validate_X(X, reset=True)
        y = as_labels(y, X.shape[0])
        X = X.flatten(1)
        n = X.shape[0]
        ctx = self._context(context, n, fitting=True)
        w = as_weights(sample_weight, n)
        gen = torch_generator(self.random_state)
        self.n_classes_, self.context_dim_ = max(int(y.max()) + 1, 2), ctx.shape[1]
        device = self._device()
        net = reset_parameters(self._build(X.shape[1], ctx.shape[1], self.n_classes_), gen).to(device)
        Xd, Cd = X.to(device), ctx.to(device)

        # train_loop batches over example indices; the loss looks the inputs and contexts up
        def loss_fn(m, ib, yb):
            ib = ib.long()
            return F.cross_entropy(m(Xd[ib], Cd[ib]), yb, reduction="none")

        groups = [{"params": list(net.parameters()), "lr": self.lr, "weight_decay": self.weight_decay}]
        self.history_ = train_loop(
            net,
            groups,
            torch.arange(n),
            y,
            epochs=self.epochs,
            batch_size=self.batch_size,
            optimizer=self.optimizer,
            gen=gen,
            device=device,
            sample_weight=w,
            loss_fn=loss_fn,
            verbose=self.verbose,
            desc=f"context ({self.model})",
        )
        net.eval()
        self.model_ = net
        self.classes_ = np.arange(self.n_classes_)
        return self

    def _logits(self, X, context) -> Tensor:
        self._check_is_fitted()
        X = self._validate_X(X, reset=False).flatten(1)
        ctx = self._context(context, X.shape[0], fitting=False)
        dev = self._device()
        out = []
        with torch.no_grad():
            for i in range(0, X.shape[0], 512):
                out.append(self.model_(X[i : i + 512].to(dev), ctx[i : i + 512].to(dev)).cpu())
        return torch.cat(out)

    def decision_function(self, X, context=None):
        """X (N, ...), context (N, c) -> logits (N, C)."""
        return like_input(self._logits(X, context), X)

    def predict_proba(self, X, context=None):
        """-> class probabilities (N, C)."""
        return like_input(torch.softmax(self._logits(X, context), 1), X)

    def predict(self, X, context=None):
        """-> class indices (N,)."""
        return like_input(self._logits(X, context).argmax(1), X)

    def score(self, X, y, context=None, sample_weight=None) -> float:
        """(Weighted) accuracy on (X, y) under the given contexts."""
        y = to_numpy(y)
        hit = (to_numpy(self.predict(X, context)) == y).astype(np.float64)
        w = np.ones_like(hit) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        return float((w * hit).sum() / w.sum())
