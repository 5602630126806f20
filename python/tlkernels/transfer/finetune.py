"""Fine-tuning (with frozen layers, layer-wise learning rates, L2-SP / output constraints),
flextuning (one intermediate layer), and the fine-tuning trade-off curve."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import ClassifierMixin as _SkClassifier
from torch import Tensor, nn

from .._base import TorchEstimator
from .._seeding import draw_seed, seed_global_torch
from .._validation import as_labels
from ..nn import mlp
from ._common import (
    ClassifierMixin,
    _reinit_like,
    as_weights,
    as_xy,
    get_layer,
    param_layers,
    predict_logits,
    split_head,
    torch_generator,
    train_loop,
)
from .conservative import L2SPLoss, OutputConstraintLoss

__all__ = ["FineTune", "Flextune", "finetune_tradeoff", "plot_tradeoff"]


def _val_split(X: Tensor, y: Tensor, w, X_val, y_val, fraction: float, gen: torch.Generator):
    """The validation set: given, or a stratified part of (X, y) (then the rest trains)."""
    if X_val is not None:
        Xv, yv = as_xy(X_val, y_val, "X_val")
        return X, y, w, Xv, yv
    from ..data import Dataset, stratified_split

    n_val = max(int(round(fraction * X.shape[0])), len(torch.unique(y)))
    idx = torch.arange(X.shape[0])
    val, tr = stratified_split(
        Dataset(idx.float(), y), [n_val, None], random_state=int(torch.randint(2**31, (1,), generator=gen))
    )
    vi, ti = val.X.long(), tr.X.long()
    return X[ti], y[ti], None if w is None else w[ti], X[vi], y[vi]


def _layer_names(model: nn.Module) -> list[str]:
    return [n for n, _ in param_layers(model)]


def _resolve_freeze(model: nn.Module, freeze, head_name: str | None = None) -> set[str]:
    """freeze: None | int k (the first k layers) | 'body' (all but the head; needs head_name, i.e.
    an nn.Sequential ending in its head) | list of layer names."""
    names = _layer_names(model)
    if freeze is None:
        return set()
    if isinstance(freeze, str) and freeze == "body" and head_name is not None:
        return {n for n in names if n != head_name and not n.startswith(head_name + ".")}
    if isinstance(freeze, (int, np.integer)) and not isinstance(freeze, bool):
        if not 0 <= freeze <= len(names):
            raise ValueError(f"freeze={freeze} must be between 0 and the model's {len(names)} layers")
        return set(names[:freeze])
    if isinstance(freeze, (list, tuple, set)):
        out = set()
        for n in freeze:
            get_layer(model, n, "freeze")
            out |= {m for m in names if m == n or m.startswith(n + ".")}
        return out
    if head_name is None:
        raise ValueError(
            f"freeze must be None, an int or a list of layer names for a non-Sequential model, got {freeze!r}"
        )
    raise ValueError(f"freeze must be None, an int, 'body' or a list of layer names, got {freeze!r}")


def default_classifier(n_features: int, n_classes: int) -> nn.Sequential:
    """The network of a classifier built without one: Linear(n_features, 64) - ReLU -
    Linear(64, n_classes) (an nn.Sequential ending in its head), input (N, n_features)."""
    return mlp(n_features, (64,), n_classes)


def _n_outputs(net: nn.Module, X: Tensor, device) -> int:
    return int(predict_logits(net, X[:1], device).shape[1])


class FineTune(ClassifierMixin, _SkClassifier, TorchEstimator):
    """Fine-tune a pretrained network on the target: all (unfrozen) parameters, a little.

    Args:
        model: the source network, an nn.Sequential ending in its classifier head when
            n_classes is given (it is deep-copied; the original never changes); None: a fresh
            ``default_classifier(n_features, n_classes)`` built at fit from X and y (training
            from scratch: a baseline, and what scikit-learn's estimator checks construct).
        lr: base learning rate; epochs: passes over the target set.
        n_classes: replace the head by a fresh nn.Linear with this many outputs (network surgery);
            None keeps the head (same label space).
        freeze: None, an int k (first k layers), 'body' (all but the head: a linear probe trained
            end-to-end) or a list of layer names (see ``param_layers``); frozen parameters get
            requires_grad=False and stay bit-identical.
        layerwise_lr: None, a float d (the layer i places below the head gets lr * d**i) or a dict
            {layer name: lr} (unlisted layers keep lr).
        l2sp, l2sp_beta: L2-SP coefficients alpha (pull to the source values) and beta (decay of
            the new head); 0 disables.
        output_constraint: weight of the LwF-style KL between the source model's outputs and the
            new model's source-task outputs on the target inputs (the old head is kept on the new
            body and trained with it); temperature T.
        optimizer: 'adam' (default) or 'sgd' (momentum 0.9); weight_decay; batch_size.
        value_examples: with a validation set, value every training example during training:
            ``example_values_`` (N,) float64, the sum over the steps that used example i of
            -lr <dl_i/dθ, dL_val/dθ> / B (first-order in-run data Shapley, Wang et al. 2024; negative:
            the example lowered the validation loss), computed by ``tlkernels.valuation.InRun`` at
            about the cost of the training step (no per-example gradients, no second backward).
        device, random_state, verbose.

    fit(X, y, sample_weight=None, X_val=None, y_val=None): with a validation set, ``history_``
    records its accuracy after every epoch (the fine-tuning trade-off). Attributes: ``model_``
    (the fine-tuned nn.Sequential), ``history_``, ``frozen_`` (names of frozen layers),
    ``classes_`` (the output indices 0..C-1: y holds class indices), ``n_features_in_``.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        lr: float = 1e-3,
        epochs: int = 50,
        *,
        n_classes: int | None = None,
        freeze=None,
        layerwise_lr=None,
        l2sp: float = 0.0,
        l2sp_beta: float = 0.0,
        output_constraint: float = 0.0,
        temperature: float = 2.0,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        batch_size: int = 32,
        value_examples: bool = False,
        device=None,
        random_state=None,
        verbose: bool = False,
    ):
        if model is not None and not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module or None, got {type(model).__name__}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not (isinstance(epochs, (int, np.integer)) and epochs >= 0):
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        if n_classes is not None and not (isinstance(n_classes, (int, np.integer)) and n_classes >= 1):
            raise ValueError(f"n_classes must be None or a positive int, got {n_classes!r}")
        if l2sp < 0 or l2sp_beta < 0 or output_constraint < 0:
            raise ValueError("l2sp, l2sp_beta and output_constraint must be >= 0")
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        if model is not None and (n_classes is not None or freeze == "body" or output_constraint > 0):
            split_head(model)
        self.model, self.lr, self.epochs, self.n_classes = model, lr, epochs, n_classes
        self.freeze, self.layerwise_lr = freeze, layerwise_lr
        self.l2sp, self.l2sp_beta = l2sp, l2sp_beta
        self.output_constraint, self.temperature = output_constraint, temperature
        self.optimizer, self.weight_decay, self.batch_size = optimizer, weight_decay, batch_size
        self.value_examples = value_examples
        self.device = device
        self.random_state, self.verbose = random_state, verbose
        # checks that need the model (bad layer names fail here, before any training)
        if model is not None:
            if isinstance(model, nn.Sequential):
                _resolve_freeze(model, freeze, str(len(model) - 1))
            self._check_layerwise(model)

    def _check_layerwise(self, model):
        lw = self.layerwise_lr
        if lw is None:
            return
        if isinstance(lw, dict):
            for n, v in lw.items():
                get_layer(model, n, "layerwise_lr")
                if not v >= 0:
                    raise ValueError(f"layerwise_lr[{n!r}] must be >= 0, got {v}")
        elif isinstance(lw, (float, int)) and not isinstance(lw, bool):
            if not 0 <= lw:
                raise ValueError(f"layerwise_lr must be >= 0, got {lw}")
        else:
            raise ValueError(f"layerwise_lr must be None, a float decay or a dict {{layer: lr}}, got {lw!r}")

    def _source(self, X: Tensor, y: Tensor, gen) -> nn.Module:
        """The constructor's model, or the default network built for (X, y)."""
        if self.model is not None:
            return self.model
        n_classes = int(self.n_classes) if self.n_classes is not None else max(int(y.max()) + 1, 2)
        seed_global_torch(gen)
        return (
            default_classifier(X[0].numel(), n_classes)
            if X.dim() == 2
            else nn.Sequential(nn.Flatten(), *default_classifier(X[0].numel(), n_classes))
        )

    def _build(self, gen, source: nn.Module):
        src = copy.deepcopy(source).to(self._device())
        aux_head = None
        if isinstance(src, nn.Sequential):
            head_name = str(len(src) - 1)
        else:
            head_name = None
        ref_state = {k: v for k, v in source.state_dict().items()}
        if self.model is None:
            return src, None, head_name, ref_state
        if self.n_classes is not None:
            body, old_head = split_head(src)
            new_head = _reinit_like(old_head, int(self.n_classes), gen)
            net = nn.Sequential(*list(body), new_head)
            ref_state = {k: v for k, v in ref_state.items() if not k.startswith(head_name + ".")}
            if self.output_constraint > 0:
                aux_head = old_head
        else:
            net = src
        return net, aux_head, head_name, ref_state

    def fit(self, X, y, sample_weight=None, X_val=None, y_val=None) -> FineTune:
        """X (N, ...), y (N,) class indices, sample_weight (N,) or None, an optional validation
        set (X_val, y_val) scored after every epoch; returns self."""
        X = self._validate_X(X, reset=True)
        y = as_labels(y, X.shape[0])
        w = as_weights(sample_weight, X.shape[0])
        if self.value_examples and (X_val is None or y_val is None):
            raise ValueError(
                "value_examples=True values the training examples on a validation set: pass X_val and y_val"
            )
        if self.value_examples and w is not None:
            raise ValueError("value_examples=True needs sample_weight=None (values are shares of the mean loss)")
        gen = torch_generator(self.random_state)
        source = self._source(X, y, gen)
        if self.model is None:
            self._check_layerwise(source)
        net, aux_head, head_name, ref_state = self._build(gen, source)
        frozen = _resolve_freeze(net, self.freeze, head_name if isinstance(net, nn.Sequential) else None)
        layers = param_layers(net)
        for n, m in layers:
            for p in m.parameters(recurse=False):
                p.requires_grad_(n not in frozen and p.requires_grad)
        self.frozen_ = sorted(frozen)
        groups = []
        depth = len(layers)
        for i, (n, m) in enumerate(layers):
            ps = [p for p in m.parameters(recurse=False) if p.requires_grad]
            if not ps:
                continue
            lr = self.lr
            if isinstance(self.layerwise_lr, dict):
                lr = next((v for k, v in self.layerwise_lr.items() if n == k or n.startswith(k + ".")), lr)
            elif self.layerwise_lr is not None:
                lr = self.lr * float(self.layerwise_lr) ** (depth - 1 - i)
            groups.append({"params": ps, "lr": lr, "weight_decay": self.weight_decay})
        if aux_head is not None:
            groups.append({"params": list(aux_head.parameters()), "lr": self.lr, "weight_decay": self.weight_decay})
        l2sp = L2SPLoss(ref_state, self.l2sp, self.l2sp_beta) if (self.l2sp > 0 or self.l2sp_beta > 0) else None
        device = self._device()
        oc = OutputConstraintLoss(source, self.temperature).to(device) if self.output_constraint > 0 else None
        if oc is not None and aux_head is None:
            aux_head = None  # same label space: the constraint applies to the model's own outputs

        def loss_fn(m, xb, yb):
            if oc is None:
                return F.cross_entropy(m(xb), yb, reduction="none")
            if aux_head is not None:
                feats = m[:-1](xb)
                logits, old_logits = m[-1](feats), aux_head(feats)
            else:
                logits = old_logits = m(xb)
            per = F.cross_entropy(logits, yb, reduction="none")
            kl = (
                F.kl_div(
                    F.log_softmax(old_logits / oc.temperature, 1),
                    F.log_softmax(oc.source(xb) / oc.temperature, 1).detach(),
                    log_target=True,
                    reduction="none",
                ).sum(1)
                * oc.temperature**2
            )
            return per + self.output_constraint * kl

        extra = (lambda m, xb: l2sp(m)) if l2sp is not None else None
        on_epoch = None
        values = torch.zeros(X.shape[0], dtype=torch.float64) if self.value_examples else None
        if X_val is not None:
            Xv, yv = as_xy(X_val, y_val, "X_val")

            def on_epoch(_):
                return {"val_accuracy": float((predict_logits(net, Xv, device).argmax(1) == yv).float().mean())}

        seed_global_torch(gen)
        hist0 = [{"epoch": 0, **(on_epoch(0) if on_epoch else {})}]
        if groups and self.epochs > 0:
            hist0 += train_loop(
                net,
                groups,
                X,
                y,
                epochs=self.epochs,
                batch_size=self.batch_size,
                optimizer=self.optimizer,
                gen=gen,
                device=device,
                sample_weight=w,
                loss_fn=loss_fn,
                extra_loss=extra,
                on_epoch=on_epoch,
                value_on=(Xv, yv) if self.value_examples else None,
                values=values,
                verbose=self.verbose,
                desc="fine-tune",
            )
        # frozen here, trainable for the next user: restore the flags the model came with
        orig = {n: p.requires_grad for n, p in source.named_parameters()}
        for n, p in net.named_parameters():
            p.requires_grad_(orig.get(n, True))
        net.eval()
        self.model_, self.history_ = net, hist0
        if values is not None:
            self.example_values_ = values.numpy()
        self.classes_ = np.arange(_n_outputs(net, X, device))
        return self

    def _decision(self, X) -> Tensor:
        """X (N, ...) -> logits (N, C)."""
        return predict_logits(self.model_, self._validate_X(X, reset=False), self._device())


class Flextune(ClassifierMixin, _SkClassifier, TorchEstimator):
    """Flextuning (Royer & Lampert): fine-tune ONE layer, all others frozen; pick the layer by
    validation accuracy.

    Args:
        model: the source network (nn.Sequential; deep-copied); None: a fresh
            ``default_classifier(n_features, n_classes)`` built at fit (seeded by random_state).
        layers: 'auto' (every layer, see ``param_layers``) or a list of layer names to try.
        n_classes: with a new label space, a fresh head is first trained alone on frozen features
            (``head_epochs``); flextuning then changes one layer on top of that probe (the head
            itself is one of the candidates: "probe only").
        lr, epochs, optimizer, batch_size: of each single-layer fine-tuning.
        validation_fraction: carved (stratified) from the training set when fit gets no X_val.
        device, random_state, verbose.

    Attributes after fit: ``layer_`` (the chosen name), ``scores_`` {layer: validation accuracy},
    ``model_``, ``classes_``, ``n_features_in_``.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        layers="auto",
        *,
        n_classes: int | None = None,
        lr: float = 1e-3,
        epochs: int = 50,
        head_epochs: int = 100,
        head_lr: float = 1e-2,
        optimizer: str = "adam",
        batch_size: int = 32,
        validation_fraction: float = 0.25,
        device=None,
        random_state=None,
        verbose: bool = False,
    ):
        names = _layer_names(model) if model is not None else None
        if layers != "auto":
            if isinstance(layers, str) or not isinstance(layers, (list, tuple)) or not layers:
                raise ValueError(f"layers must be 'auto' or a non-empty list of layer names, got {layers!r}")
            for n in layers:
                if names is not None and n not in names:
                    raise ValueError(f"layers: {n!r} is not a layer of the model; valid names: {names}")
        if not 0 < validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
        self.model, self.layers, self.n_classes = model, layers, n_classes
        self.lr, self.epochs, self.head_epochs, self.head_lr = lr, epochs, head_epochs, head_lr
        self.optimizer, self.batch_size, self.validation_fraction = optimizer, batch_size, validation_fraction
        self.device, self.random_state, self.verbose = device, random_state, verbose

    def fit(self, X, y, sample_weight=None, X_val=None, y_val=None) -> Flextune:
        """X (N, ...), y (N,) class indices, sample_weight, optional validation set; returns self."""
        X = self._validate_X(X, reset=True)
        y = as_labels(y, X.shape[0])
        if X_val is None and X.shape[0] < 2:
            raise ValueError(
                f"Flextune needs at least 2 examples to carve a validation set, got n_samples = "
                f"{X.shape[0]} (or pass X_val, y_val)"
            )
        w = as_weights(sample_weight, X.shape[0])
        gen = torch_generator(self.random_state)
        X, y, w, Xv, yv = _val_split(X, y, w, X_val, y_val, self.validation_fraction, gen)

        def seed() -> int:
            return draw_seed(gen)

        model = self.model
        if model is None:
            n_classes = int(self.n_classes) if self.n_classes is not None else max(int(y.max()) + 1, 2)
            seed_global_torch(gen)
            model = default_classifier(X[0].numel(), n_classes)
        start = model
        if self.n_classes is not None and self.model is not None:
            start = (
                FineTune(
                    model,
                    self.head_lr,
                    self.head_epochs,
                    n_classes=self.n_classes,
                    freeze="body",
                    batch_size=self.batch_size,
                    device=self.device,
                    random_state=seed(),
                )
                .fit(X, y, w)
                .model_
            )
        names = _layer_names(start) if self.layers == "auto" else list(self.layers)
        all_names = _layer_names(start)
        self.scores_, best = {}, None
        from tqdm.auto import tqdm

        for n in tqdm(names, desc="flextune", disable=not self.verbose, leave=False):
            ft = FineTune(
                start,
                self.lr,
                self.epochs,
                freeze=[m for m in all_names if m != n],
                optimizer=self.optimizer,
                batch_size=self.batch_size,
                device=self.device,
                random_state=seed(),
            ).fit(X, y, w)
            acc = ft.score(Xv, yv)
            self.scores_[n] = acc
            if best is None or acc > best[0]:
                best = (acc, n, ft.model_)
        self.layer_, self.model_ = best[1], best[2]
        self.classes_ = np.arange(_n_outputs(self.model_, X, self._device()))
        return self

    def _decision(self, X) -> Tensor:
        """X (N, ...) -> logits (N, C)."""
        return predict_logits(self.model_, self._validate_X(X, reset=False), self._device())


def finetune_tradeoff(
    model: nn.Module,
    X,
    y,
    X_val,
    y_val,
    *,
    lrs=(1e-4, 1e-3, 1e-2),
    epochs: int = 100,
    n_classes: int | None = None,
    head_epochs: int = 100,
    random_state=None,
    **kw,
) -> dict:
    """Validation accuracy after every fine-tuning epoch, for each learning rate: Lampert 2019's
    trade-off (none: source features; a little: better; too much: the initialisation is forgotten).

    With n_classes, a fresh head is first fitted on frozen features so epoch 0 is the linear
    probe. Returns {"lrs": [...], "epochs": [0..epochs], "curves": {lr: [val acc per epoch]}}.
    """
    start = model
    if n_classes is not None:
        start = (
            FineTune(model, 1e-2, head_epochs, n_classes=n_classes, freeze="body", random_state=random_state)
            .fit(X, y)
            .model_
        )
    curves = {}
    for lr in lrs:
        ft = FineTune(start, lr, epochs, random_state=random_state, **kw).fit(X, y, X_val=X_val, y_val=y_val)
        curves[float(lr)] = [h["val_accuracy"] for h in ft.history_]
    return {"lrs": [float(v) for v in lrs], "epochs": list(range(epochs + 1)), "curves": curves}


def plot_tradeoff(result: dict | list[dict], path: str, title: str = "Fine-tuning trade-off") -> None:
    """Plots validation accuracy against fine-tuning epochs, one line per learning rate (mean and
    a band over several results when given a list) into `path` (PNG)."""
    from .._plots import subplots

    results = result if isinstance(result, list) else [result]
    fig, ax = subplots(figsize=(6, 4))
    for lr in results[0]["lrs"]:
        c = (
            np.array(
                [
                    [
                        r["curves"][lr][i] if isinstance(next(iter(r["curves"])), float) else r["curves"][str(lr)][i]
                        for i in range(len(r["epochs"]))
                    ]
                    for r in results
                ]
            )
            * 100
        )
        m, s = c.mean(0), c.std(0)
        ax.plot(results[0]["epochs"], m, label=f"lr = {lr:g}")
        if len(results) > 1:
            ax.fill_between(results[0]["epochs"], m - s, m + s, alpha=0.2)
    ax.set_xlabel("fine-tuning epochs (epoch 0 = frozen features + trained head)")
    ax.set_ylabel("target validation accuracy (%)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
