"""Layer transfer (Lee 2016): copy the first k or the last k layers of a source model into a
freshly initialised target model, freeze them or not, train the rest; and a sweep over k."""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.base import ClassifierMixin as _SkClassifier
from torch import Tensor, nn

from .._base import TorchEstimator
from .._seeding import draw_seed, seed_global_torch
from .._validation import as_labels
from ._common import (
    ClassifierMixin,
    as_xy,
    param_layers,
    reset_parameters,
    torch_generator,
)
from .finetune import FineTune, _val_split, default_classifier

__all__ = ["LayerTransfer", "sweep_layer_transfer", "transfer_layers"]


def _pick(names: list[str], k: int, where: str) -> list[str]:
    if where not in ("first", "last"):
        raise ValueError(f"where must be 'first' or 'last', got {where!r}")
    if not (isinstance(k, (int, np.integer)) and not isinstance(k, bool) and 0 <= k <= len(names)):
        raise ValueError(f"k={k!r} must be an int between 0 and the model's depth {len(names)} (layers: {names})")
    return names[:k] if where == "first" else names[len(names) - k :]


def transfer_layers(source: nn.Module, target: nn.Module, k: int, where: str = "first") -> list[str]:
    """Copies the parameters of the first (or last) k layers of `source` into the same-named layers
    of `target` (in place; shapes must match). Returns the copied layer names."""
    names = [n for n, _ in param_layers(source)]
    chosen = _pick(names, k, where)
    tgt = dict(target.named_modules())
    src = dict(source.named_modules())
    for n in chosen:
        if n not in tgt:
            raise ValueError(f"target has no layer {n!r} to receive the source layer")
        for pn, p in src[n].named_parameters(recurse=False):
            q = getattr(tgt[n], pn)
            if q.shape != p.shape:
                raise ValueError(f"target layer {n!r}.{pn} has shape {tuple(q.shape)}, source {tuple(p.shape)}")
            with torch.no_grad():
                q.copy_(p)
    return chosen


class LayerTransfer(ClassifierMixin, _SkClassifier, TorchEstimator):
    """Target model = the source architecture, freshly initialised, with the first / last k
    source layers copied in; those are frozen (freeze=True) or trained with the rest.

    Args:
        source: the source network (nn.Module; not modified); None: a
            ``default_classifier(n_features, n_classes)`` initialised from random_state (then
            only k = 0, training from scratch, copies nothing of value).
        k: how many layers to copy (0 = training from scratch); where: 'first' or 'last'.
        freeze: keep the copied layers fixed.
        lr, epochs, optimizer, batch_size, weight_decay: training of the target model.
        device, random_state, verbose.

    Attributes: ``copied_`` (layer names), ``model_``, ``history_``, ``classes_``,
    ``n_features_in_``.
    """

    def __init__(
        self,
        source: nn.Module | None = None,
        k: int = 0,
        where: str = "first",
        *,
        freeze: bool = True,
        lr: float = 1e-3,
        epochs: int = 50,
        optimizer: str = "adam",
        batch_size: int = 32,
        weight_decay: float = 0.0,
        device=None,
        random_state=None,
        verbose: bool = False,
    ):
        if source is not None:
            _pick([n for n, _ in param_layers(source)], k, where)
        self.source, self.k, self.where, self.freeze = source, k, where, freeze
        self.lr, self.epochs, self.optimizer, self.batch_size = lr, epochs, optimizer, batch_size
        self.weight_decay, self.device, self.random_state, self.verbose = weight_decay, device, random_state, verbose

    def fit(self, X, y, sample_weight=None, X_val=None, y_val=None) -> LayerTransfer:
        """X (N, ...), y (N,) class indices, sample_weight, optional validation set; returns self."""
        X = self._validate_X(X, reset=True)
        y = as_labels(y, X.shape[0])
        gen = torch_generator(self.random_state)
        source = self.source
        if source is None:
            seed_global_torch(gen)
            source = default_classifier(X[0].numel(), max(int(y.max()) + 1, 2))
            _pick([n for n, _ in param_layers(source)], self.k, self.where)
        target = reset_parameters(copy.deepcopy(source), gen)
        self.copied_ = transfer_layers(source, target, self.k, self.where)
        ft = FineTune(
            target,
            self.lr,
            self.epochs,
            freeze=list(self.copied_) if self.freeze else None,
            optimizer=self.optimizer,
            batch_size=self.batch_size,
            weight_decay=self.weight_decay,
            device=self.device,
            random_state=draw_seed(gen),
            verbose=self.verbose,
        ).fit(X, y, sample_weight, X_val, y_val)
        self.model_, self.history_, self.fine_tune_ = ft.model_, ft.history_, ft
        self.classes_ = ft.classes_
        return self

    def _decision(self, X) -> Tensor:
        """X (N, ...) -> logits (N, C)."""
        self._validate_X(X, reset=False)
        return self.fine_tune_._decision(X)


def sweep_layer_transfer(
    source: nn.Module,
    X,
    y,
    X_val=None,
    y_val=None,
    *,
    ks=None,
    wheres=("first", "last"),
    freezes=(True, False),
    validation_fraction: float = 0.25,
    random_state=None,
    verbose: bool = False,
    **kw,
) -> dict:
    """Tries every k (default 0..depth), where and freeze; scores each on the validation set.

    Returns {"rows": [{"k", "where", "freeze", "val_accuracy", "layers"}], "best": row,
    "model": the best fitted LayerTransfer}. k = 0 is training from scratch (one row).
    """
    X, y = as_xy(X, y)
    gen = torch_generator(random_state)
    X, y, _, Xv, yv = _val_split(X, y, None, X_val, y_val, validation_fraction, gen)
    depth = len(param_layers(source))
    ks = list(range(depth + 1)) if ks is None else list(ks)
    for k in ks:
        _pick([n for n, _ in param_layers(source)], k, "first")
    rows, best = [], None
    seed = int(torch.randint(2**31, (1,), generator=gen))
    from tqdm.auto import tqdm

    combos = [
        (k, wh, fr) for k in ks for wh in wheres for fr in freezes if k > 0 or (wh == wheres[0] and fr == freezes[0])
    ]
    for k, wh, fr in tqdm(combos, desc="layer transfer", disable=not verbose, leave=False):
        lt = LayerTransfer(source, k, wh, freeze=fr, random_state=seed, **kw).fit(X, y)
        acc = lt.score(Xv, yv)
        row = {"k": k, "where": wh, "freeze": fr, "val_accuracy": acc, "layers": lt.copied_}
        rows.append(row)
        if best is None or acc > best[0]["val_accuracy"]:
            best = (row, lt)
    return {"rows": rows, "best": best[0], "model": best[1]}
