"""Domain-adversarial training (Ganin & Lempitsky, ICML 2015) on the fused gradient-reversal fork.

    features = F(x); (f_task, f_adv) = grad_reverse_branch(features, lam(p))
    loss = CE(C(f_task_s), y_s) + [BCE(D(f_adv_s), 0) + BCE(D(f_adv_t), 1)] / 2

The domain head D minimises its loss; the extractor F receives grad_task - lam * grad_adv, so it
maximises it (Lampert 2019's min over (eta, beta), max over beta~). lam follows the DANN schedule of
*explicit* progress p = step / max_steps (``tlkernels.dann_lambda``).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import ClassifierMixin
from torch import Tensor, nn

from .._base import (
    TorchClassifierMixin,
    TorchEstimator,
    fit_param_deprecated,
    like_input,
)
from .._seeding import as_seed, torch_generator
from .._validation import as_labels, as_tensor
from ..nn import dann_lambda, mlp
from ..ops import grad_reverse_branch

__all__ = ["DANN", "DomainAdversarialLoss", "domain_head"]


def domain_head(feature_dim: int, hidden: int = 100) -> nn.Module:
    """The usual 2-layer domain classifier: Linear(F, hidden) - ReLU - Linear(hidden, 1)."""
    return mlp(feature_dim, (hidden,), 1)


class DomainAdversarialLoss(nn.Module):
    """The DANN domain loss as a module for a user's own training loop.

    ``forward(features (N, F), domain (N,) {0 source, 1 target}, progress, weight (N,) | None)``
    returns ``(features_task (N, F), loss (0-dim))``: feed ``features_task`` to the label head and
    add ``loss`` to the task loss; one backward then gives the extractor
    grad_task - lam(progress) * grad_adv through the fused fork, and the domain head its own
    (un-reversed) gradient. The loss is balanced between domains: (mean over source + mean over
    target) / 2 of the binary cross-entropy, each a weighted mean when `weight` is given (so the
    weighted source distribution is aligned with the target). ``last_accuracy`` holds the domain
    head's accuracy on the last batch (a float, balanced the same way).

    Args:
        domain_head: any module (N, F) -> (N, 1) or (N,); default ``domain_head(feature_dim)``.
        feature_dim: needed only for the default head.
        lam_max, gamma: the schedule lam(p) = lam_max (2 / (1 + exp(-gamma p)) - 1).
    """

    def __init__(
        self,
        domain_head_: nn.Module | None = None,
        feature_dim: int | None = None,
        lam_max: float = 1.0,
        gamma: float = 10.0,
        hidden: int = 100,
    ):
        super().__init__()
        if domain_head_ is None:
            if feature_dim is None:
                raise ValueError("feature_dim is required when no domain_head is given")
            domain_head_ = domain_head(feature_dim, hidden)
        self.head = domain_head_
        self.lam_max, self.gamma = float(lam_max), float(gamma)
        self.last_accuracy = float("nan")

    def _domain_terms(self, features: Tensor, domain: Tensor, progress, weight: Tensor | None):
        """The fork and the domain head on features (N, F): (features_task (N, F), logits (N,),
        per-example BCE (N,), weights (N,), is-target mask (N,))."""
        domain = torch.as_tensor(domain, device=features.device)
        if features.dim() < 2 or domain.shape != features.shape[:1]:
            raise ValueError(
                f"features must be (N, F) and domain (N,), got {tuple(features.shape)} and {tuple(domain.shape)}"
            )
        lam = dann_lambda(progress, self.lam_max, self.gamma)
        f_task, f_adv = grad_reverse_branch(features, lam)
        logits = self.head(f_adv).reshape(features.shape[0])
        d = domain.to(logits.dtype)
        per = F.binary_cross_entropy_with_logits(logits, d, reduction="none")
        w = torch.ones_like(per) if weight is None else torch.as_tensor(weight, dtype=per.dtype, device=per.device)
        return f_task, logits, per, w, d > 0.5

    def forward(
        self, features: Tensor, domain: Tensor, progress: float | Tensor, weight: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        f_task, logits, per, w, is_t = self._domain_terms(features, domain, progress, weight)
        loss = per.new_zeros(())
        correct = ((logits > 0) == is_t).to(per.dtype)
        acc, parts = 0.0, 0
        for mask in (~is_t, is_t):
            if mask.any():
                wm = w[mask]
                loss = loss + (wm * per[mask]).sum() / wm.sum().clamp_min(1e-12)
                acc += float(correct[mask].mean())
                parts += 1
        self.last_accuracy = acc / max(parts, 1)
        return f_task, loss / max(parts, 1)

    def per_example(
        self, features: Tensor, domain: Tensor, progress: float | Tensor, weight: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``forward`` with the loss split by example: ``(features_task (N, F), shares (N,))``, the
        shares summing to forward's loss (example r's share is w_r BCE_r / (parts * Σ_{its
        domain} w)), so per-sample products (``tlkernels.persample``) can tell the examples apart."""
        f_task, logits, per, w, is_t = self._domain_terms(features, domain, progress, weight)
        correct = ((logits > 0) == is_t).to(per.dtype).detach()
        masks = [m for m in (~is_t, is_t) if bool(m.any())]
        coef = torch.zeros_like(per)
        for mask in masks:
            coef = torch.where(mask, w / (w[mask].sum().clamp_min(1e-12) * len(masks)), coef)
        self.last_accuracy = sum(float(correct[m].mean()) for m in masks) / max(len(masks), 1)
        return f_task, coef.detach() * per


class _Model(nn.Module):
    def __init__(self, extractor: nn.Module, classifier: nn.Module, adversary: DomainAdversarialLoss):
        super().__init__()
        self.extractor, self.classifier, self.adversary = extractor, classifier, adversary

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.extractor(x))


class _TargetCycle:
    """Target indices for the training batches: a random permutation of range(n) consumed in
    order, redrawn from `generator` when the next batch would run past its end; a batch holds at
    most n indices."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator
        self.perm, self.pos = torch.randperm(n, generator=generator), 0

    def take(self, size: int) -> Tensor:
        """The next min(size, n) indices (a LongTensor)."""
        if self.pos + size > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.generator), 0
        idx = self.perm[self.pos : self.pos + min(size, self.n)]
        self.pos += len(idx)
        return idx


class _StepShares:
    """loss_fn of value_examples' per-sample capture: per-example shares (B + B',) of DANN's step
    loss CE + domain loss, summing to the loss ``_train_step`` differentiates. batch = (x (B + B',
    *) source rows then target rows, ys (B,), ws (B,) | None, progress). ``last`` holds the
    step's class and domain losses."""

    def __init__(self):
        self.last = {"class_loss": float("nan"), "domain_loss": float("nan")}

    def __call__(self, model: _Model, batch) -> Tensor:
        x, ys, ws, progress = batch
        b, bt = ys.shape[0], x.shape[0] - ys.shape[0]
        f = model.extractor(x)
        dom = torch.cat([torch.zeros(b), torch.ones(bt)]).to(x.device)
        bw = None if ws is None else torch.cat([ws, torch.ones(bt, device=ws.device)])
        f_task, d_shares = model.adversary.per_example(f, dom, progress, bw)
        # the label head sees every row (per-sample products need the whole batch at each layer);
        # the target rows' logits get no loss, so they add nothing to any gradient
        ce = F.cross_entropy(model.classifier(f_task)[:b], ys, reduction="none")
        c_shares = (ce if ws is None else ws * ce) / b
        self.last = {"class_loss": float(c_shares.detach().sum()), "domain_loss": float(d_shares.detach().sum())}
        return d_shares + torch.cat([c_shares, c_shares.new_zeros(bt)])


def _val_losses(model: _Model, batch) -> Tensor:
    """(V,) cross-entropy of the validation batch (X_val (V, *), y_val (V,))."""
    x, y = batch
    return F.cross_entropy(model(x), y, reduction="none")


def default_extractor(n_features: int, hidden: int = 64) -> nn.Sequential:
    """The feature extractor of a DANN built without one: Flatten - Linear(n_features, hidden) -
    ReLU, input (N, ...) with n_features numbers per example, output (N, hidden)."""
    return mlp(n_features, (hidden,), flatten=True)


class DANN(TorchClassifierMixin, ClassifierMixin, TorchEstimator):
    """Domain-adversarial neural network (scikit-learn surface).

    ``DANN(feature_extractor, n_classes, feature_dim=None, lam_max=1.0, gamma=10.0, ..., epochs=30)``;
    ``fit(Xs (N, *), ys (N,), Xt (M, *), source_weights=(N,) | None)`` trains a fresh copy
    of the given extractor (the constructor's modules are never modified, so ``fit`` can be
    called again and reverse validation can refit), then ``predict``/``predict_proba``/``score``
    (numpy in -> numpy out, a tensor in -> a tensor out). ``fit(..., epochs=)`` still works for
    one release (a FutureWarning: pass epochs to the constructor).

    Args:
        feature_extractor: module (B, *) -> (B, F); None: ``default_extractor(n_features)``
            (Flatten - Linear(n_features, 64) - ReLU), initialised from random_state.
        n_classes: C; None: max(ys) + 1 (at least 2).
        feature_dim: F (inferred from one forward pass when None).
        lam_max, gamma: the gradient-reversal schedule. lam_max = 0 is plain source-only training
            with the same budget (the domain head still trains and reports its accuracy).
        classifier: label head (B, F) -> (B, C) (default Linear(F, C)).
        domain_head: (B, F) -> (B, 1) (default Linear(F, 100) - ReLU - Linear(100, 1)).
        lr, optimizer ('adam' | 'sgd' with momentum 0.9), weight_decay, batch_size (source and
            target batches of this size each step).
        lr_anneal: Ganin's lr(p) = lr / (1 + 10 p)^0.75 (True by default).
        epochs: passes over the source set.
        grad_clip: max global gradient norm (None: no clipping).
        snapshot_epochs: epochs after which the parameters are kept in ``snapshots_`` (for a
            label-free choice of the stopping epoch; ``use_snapshot(e)`` restores one).
        value_examples: value every source and target example during training on a labelled
            validation set (``fit(..., X_val=, y_val=)``): ``source_values_`` (N,) and
            ``target_values_`` (M,) float64, each example's first-order in-run data Shapley value
            (Wang et al. 2024) on the validation cross-entropy, summed over the steps that used it:
            -η <g_i, ∇L_val>, g_i the example's share of the step's gradient (its class loss and,
            through the reversal, its domain loss). Negative = it lowered the validation loss. The
            step's backward then runs through ``tlkernels.valuation.InRun`` (no second backward).
        device, random_state, verbose (a tqdm progress bar).

    Learned: ``model_`` (extractor_, classifier_, adversary_), ``history_`` (one dict per epoch:
    class_loss, domain_loss, domain_acc, lam, lr), ``snapshots_``, ``classes_`` (0..C-1),
    ``n_classes_``, ``n_epochs_``; with value_examples, ``source_values_`` and ``target_values_``.
    """

    def __init__(
        self,
        feature_extractor: nn.Module | None = None,
        n_classes: int | None = None,
        feature_dim: int | None = None,
        lam_max: float = 1.0,
        gamma: float = 10.0,
        *,
        classifier: nn.Module | None = None,
        domain_head: nn.Module | None = None,
        domain_hidden: int = 100,
        lr: float = 1e-3,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        batch_size: int = 64,
        lr_anneal: bool = True,
        grad_clip: float | None = None,
        snapshot_epochs=None,
        value_examples: bool = False,
        epochs: int = 30,
        device=None,
        random_state=None,
        verbose: bool = False,
    ):
        if n_classes is not None and n_classes < 2:
            raise ValueError(f"n_classes must be None or >= 2, got {n_classes}")
        if not math.isfinite(lam_max) or lam_max < 0:
            raise ValueError(f"lam_max must be a finite number >= 0, got {lam_max}")
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(epochs, bool) or not (isinstance(epochs, (int, np.integer)) and epochs >= 1):
            raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
        self.feature_extractor, self.n_classes, self.feature_dim = feature_extractor, n_classes, feature_dim
        self.lam_max, self.gamma = lam_max, gamma
        self.classifier, self.domain_head, self.domain_hidden = classifier, domain_head, domain_hidden
        self.lr, self.optimizer, self.weight_decay, self.batch_size = lr, optimizer, weight_decay, batch_size
        self.lr_anneal, self.grad_clip = lr_anneal, grad_clip
        self.snapshot_epochs, self.epochs = snapshot_epochs, epochs
        self.value_examples = value_examples
        self.device = device
        self.random_state, self.verbose = random_state, verbose

    # -- construction -------------------------------------------------------------------------
    def clone(self, **overrides) -> DANN:
        """An unfitted DANN with the same arguments, some replaced (``sklearn.base.clone`` +
        ``set_params``)."""
        from sklearn.base import clone

        return clone(self).set_params(**overrides)

    def _extractor(self, n_features: int) -> nn.Module:
        """The constructor's extractor, or the default one (seeded like the default heads)."""
        if self.feature_extractor is not None:
            return self.feature_extractor
        torch.manual_seed(as_seed(self.random_state, default=0))
        return default_extractor(n_features)

    def _build(self, feature_dim: int, extractor: nn.Module, n_classes: int) -> None:
        torch.manual_seed(as_seed(self.random_state, default=0))  # the default heads' initialisation
        extractor = copy.deepcopy(extractor)
        classifier = (
            copy.deepcopy(self.classifier) if self.classifier is not None else nn.Linear(feature_dim, n_classes)
        )
        head = (
            copy.deepcopy(self.domain_head)
            if self.domain_head is not None
            else domain_head(feature_dim, self.domain_hidden)
        )
        adversary = DomainAdversarialLoss(head, lam_max=float(self.lam_max), gamma=float(self.gamma))
        self.model_ = _Model(extractor, classifier, adversary).to(self._device())
        self.feature_dim_, self.n_classes_ = feature_dim, n_classes
        self.classes_ = np.arange(n_classes)

    @property
    def extractor_(self) -> nn.Module:
        return self.model_.extractor

    # -- training -----------------------------------------------------------------------------
    def fit(self, Xs, ys, Xt, epochs: int | None = None, source_weights=None, *, X_val=None, y_val=None) -> DANN:
        """Xs (N, *), ys (N,) class indices, Xt (M, *) unlabeled, source_weights (N,) >= 0 or
        None; returns self. epochs: deprecated here (the constructor's ``epochs``). X_val (V, *),
        y_val (V,): the labelled validation set of ``value_examples`` (required with it).

        Each epoch is one pass over a shuffled source set in batches of ``batch_size``, each
        batch paired with as many target examples (drawn without replacement, reshuffled when
        exhausted); the step's progress p = step / (epochs * steps per epoch) sets lam(p) and,
        with ``lr_anneal``, the learning rate."""
        epochs = fit_param_deprecated(self, "epochs", epochs)
        Xs, ys, Xt, w, n_classes = self._fit_inputs(Xs, ys, Xt, source_weights, epochs)
        self._build_for(Xs, n_classes)
        params = list(self.model_.parameters())
        opt = self._make_optimizer(params)
        valuer = self._valuer(X_val, y_val, Xs, opt, source_weights)
        gen = torch_generator(self.random_state, default=0)
        total = epochs * max(1, math.ceil(Xs.shape[0] / self.batch_size))
        self.history_, self.snapshots_ = [], {}
        snapshot_epochs = set(self.snapshot_epochs or [])
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="DANN", unit="step")
        target, step = _TargetCycle(Xt.shape[0], gen), 0
        for epoch in range(1, epochs + 1):
            sums, lr, step = self._train_epoch(Xs, ys, Xt, w, opt, params, gen, target, step, total, bar, valuer)
            rec = self._epoch_record(epoch, sums / math.ceil(Xs.shape[0] / self.batch_size), step / total, lr)
            self.history_.append(rec)
            if bar is not None:
                bar.set_postfix(
                    cls=f"{rec['class_loss']:.3f}", dom_acc=f"{rec['domain_acc']:.2f}", lam=f"{rec['lam']:.2f}"
                )
            if epoch in snapshot_epochs:
                self.snapshots_[epoch] = copy.deepcopy(self.model_.state_dict())
        if bar is not None:
            bar.close()
        self.n_epochs_ = epochs
        if valuer is not None:
            n, m = Xs.shape[0], Xt.shape[0]
            values = torch.cat([valuer.values, valuer.values.new_zeros(max(0, n + m - len(valuer.values)))])
            self.source_values_, self.target_values_ = values[:n].numpy(), values[n : n + m].numpy()
        return self

    def _valuer(self, X_val, y_val, Xs: Tensor, opt, source_weights):
        """The ``InRun`` of value_examples on (X_val (V, *), y_val (V,)), or None without it."""
        if not self.value_examples:
            if X_val is not None or y_val is not None:
                raise ValueError("X_val / y_val are only used with value_examples=True")
            return None
        if X_val is None or y_val is None:
            raise ValueError(
                "value_examples=True values the examples on a labelled validation set: pass X_val and y_val"
            )
        if self.grad_clip is not None:
            raise ValueError("value_examples=True needs grad_clip=None (a clipped step is not the sum of the shares)")
        from ..valuation import InRun

        Xv = as_tensor(X_val, "X_val", min_ndim=2)
        if Xv.shape[1:] != Xs.shape[1:]:
            raise ValueError(
                f"X_val must have the feature shape of Xs {tuple(Xs.shape[1:])}, got {tuple(Xv.shape[1:])}"
            )
        yv = as_labels(y_val, Xv.shape[0], "y_val", "X_val")
        if int(yv.min()) < 0 or int(yv.max()) >= self.n_classes_:
            raise ValueError(f"y_val must lie in [0, {self.n_classes_}), got [{int(yv.min())}, {int(yv.max())}]")
        device = self._device()
        return InRun(self.model_, _StepShares(), (Xv.to(device, Xs.dtype), yv.to(device)), optimizer=opt,
                     reduction="sum", val_loss_fn=_val_losses)  # fmt: skip

    def _fit_inputs(self, Xs, ys, Xt, source_weights, epochs) -> tuple[Tensor, Tensor, Tensor, Tensor | None, int]:
        """Checks fit's arguments; returns Xs (N, *), ys (N,), Xt (M, *), the weights (N,) or None
        (all on the model's device) and the number of classes C."""
        Xs = self._validate_X(Xs, reset=True, name="Xs")
        Xt = as_tensor(Xt, "Xt", min_ndim=2)
        ys = as_labels(ys, Xs.shape[0], "ys", "Xs")
        if Xt.shape[1:] != Xs.shape[1:]:
            raise ValueError(f"Xt must have the feature shape of Xs {tuple(Xs.shape[1:])}, got {tuple(Xt.shape[1:])}")
        n_classes = int(self.n_classes) if self.n_classes is not None else max(int(ys.max()) + 1, 2)
        if int(ys.min()) < 0 or int(ys.max()) >= n_classes:
            raise ValueError(f"ys must lie in [0, {n_classes}), got [{int(ys.min())}, {int(ys.max())}]")
        device = self._device()
        w = None
        if source_weights is not None:
            w = torch.as_tensor(source_weights, dtype=torch.float32)
            if w.shape != Xs.shape[:1] or bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
                raise ValueError(f"source_weights must have shape ({Xs.shape[0]},), finite and >= 0")
            w = w.to(device)
        if isinstance(epochs, bool) or not (isinstance(epochs, (int, np.integer)) and epochs >= 1):
            raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
        return Xs.to(device), ys.to(device), Xt.to(device), w, n_classes

    def _build_for(self, Xs: Tensor, n_classes: int) -> None:
        """Builds ``model_`` for source inputs Xs (N, *): the extractor, its output width F (one
        forward pass on two examples when ``feature_dim`` is None) and the heads."""
        extractor = self._extractor(Xs[0].numel())
        feature_dim = self.feature_dim
        if feature_dim is None:
            with torch.no_grad():
                feature_dim = int(copy.deepcopy(extractor).to(Xs.device)(Xs[:2]).shape[1])
        self._build(feature_dim, extractor, n_classes)

    def _make_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)

    def _lr(self, progress: float) -> float:
        """Ganin's annealed rate lr / (1 + 10 p)^0.75 at progress p in [0, 1], or lr."""
        return self.lr / (1 + 10 * progress) ** 0.75 if self.lr_anneal else self.lr

    def _train_epoch(
        self, Xs, ys, Xt, w, opt, params, gen, target, step, total, bar, valuer=None
    ) -> tuple[np.ndarray, float, int]:
        """One pass over the shuffled source set Xs (N, *), ys (N,), w (N,) | None, each batch
        paired with target examples from `target`; returns the summed (class_loss, domain_loss,
        domain_acc) over the batches (3,), the last step's learning rate and the next step.
        valuer: the ``InRun`` of value_examples (source example i has id i, target j has N + j)."""
        self.model_.train()
        n, b = Xs.shape[0], self.batch_size
        perm = torch.randperm(n, generator=gen)
        sums, lr = np.zeros(3), self.lr
        for i in range(0, n, b):
            idx = perm[i : i + b]
            tidx = target.take(len(idx))
            p = step / total
            lr = self._lr(p)
            for g in opt.param_groups:
                g["lr"] = lr
            ws = None if w is None else w[idx]
            if valuer is None:
                sums += self._train_step(Xs[idx], ys[idx], Xt[tidx], ws, p, opt, params)
            else:
                sums += self._valued_step(Xs[idx], ys[idx], Xt[tidx], ws, p, opt, valuer, torch.cat([idx, n + tidx]))
            step += 1
            if bar is not None:
                bar.update(1)
        return sums, lr, step

    def _train_step(self, xs, ys, xt, ws, progress: float, opt, params) -> tuple[float, float, float]:
        """One optimiser step on a source batch xs (B, *), ys (B,), weights ws (B,) | None and a
        target batch xt (B', *) at progress p; returns (class_loss, domain_loss, domain_acc)."""
        m = self.model_
        f = m.extractor(torch.cat([xs, xt]))
        dom = torch.cat([torch.zeros(len(xs)), torch.ones(len(xt))]).to(xs.device)
        bw = None if ws is None else torch.cat([ws, torch.ones(len(xt), device=ws.device)])
        f_task, d_loss = m.adversary(f, dom, progress, bw)
        ce = F.cross_entropy(m.classifier(f_task[: len(xs)]), ys, reduction="none")
        c_loss = ce.mean() if ws is None else (ws * ce).sum() / len(xs)
        opt.zero_grad(set_to_none=True)
        (c_loss + d_loss).backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(params, self.grad_clip)
        opt.step()
        return float(c_loss.detach()), float(d_loss.detach()), m.adversary.last_accuracy

    def _valued_step(self, xs, ys, xt, ws, progress: float, opt, valuer, ids: Tensor) -> tuple[float, float, float]:
        """``_train_step`` with the backward through ``valuer`` (an InRun): the same gradient,
        and each example's value added at its id (ids (B + B',), source then target)."""
        opt.zero_grad(set_to_none=True)
        valuer.step((torch.cat([xs, xt]), ys, ws, progress), ids)
        opt.step()
        shares = valuer.loss_fn.last
        return shares["class_loss"], shares["domain_loss"], self.model_.adversary.last_accuracy

    def _epoch_record(self, epoch: int, means: np.ndarray, progress: float, lr: float) -> dict[str, float]:
        """history_'s entry: the epoch's mean class / domain loss and domain accuracy (means (3,)),
        lam at the epoch's end and the last step's learning rate."""
        return dict(
            epoch=epoch,
            class_loss=means[0],
            domain_loss=means[1],
            domain_acc=means[2],
            lam=float(dann_lambda(progress, self.lam_max, self.gamma)),
            lr=lr,
        )

    def use_snapshot(self, epoch: int) -> DANN:
        """Restores the parameters kept after `epoch` (see ``snapshot_epochs``)."""
        if epoch not in getattr(self, "snapshots_", {}):
            raise ValueError(f"no snapshot for epoch {epoch}; kept: {sorted(getattr(self, 'snapshots_', {}))}")
        self.model_.load_state_dict(self.snapshots_[epoch])
        return self

    # -- inference ----------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        self._check_is_fitted()

    @torch.no_grad()
    def _decision(self, X) -> Tensor:
        """X (N, *) -> logits (N, C) on the model's device."""
        X = self._validate_X(X, reset=False).to(self._device())
        self.model_.eval()
        return torch.cat([self.model_(X[i : i + 1024]) for i in range(0, X.shape[0], 1024)])

    def _features(self, X) -> Tensor:
        self._check_fitted()
        self.model_.eval()
        with torch.no_grad():
            return self.model_.extractor(self._validate_X(X, reset=False).to(self._device()))

    def transform(self, X):
        """X (N, *) -> the learned features (N, F)."""
        return like_input(self._features(X), X)

    @torch.no_grad()
    def domain_accuracy(self, Xs, Xt) -> float:
        """Balanced accuracy of the trained domain head on (Xs, Xt) (0.5 = features aligned)."""
        self._check_fitted()
        self.model_.eval()
        h = self.model_.adversary.head
        ps = h(self._features(Xs)).reshape(-1) <= 0
        pt = h(self._features(Xt)).reshape(-1) > 0
        return 0.5 * (float(ps.float().mean()) + float(pt.float().mean()))

    # -- persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "model": self.model_.state_dict(),
            "feature_dim": self.feature_dim_,
            "history": self.history_,
            "n_epochs": self.n_epochs_,
            "n_classes": self.n_classes_,
            "n_features": getattr(self, "n_features_in_", None),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a fitted DANN from ``state_dict()`` (the constructor's modules give the
        architecture; a default extractor needs the state's ``n_features``)."""
        n_classes = state.get("n_classes", self.n_classes)
        if n_classes is None:
            raise ValueError("state has no 'n_classes' and the DANN was built with n_classes=None")
        n_features = state.get("n_features")
        if self.feature_extractor is None and n_features is None:
            raise ValueError("state has no 'n_features' to build the default feature extractor")
        extractor = self._extractor(int(n_features) if n_features is not None else 0)
        self._build(int(state["feature_dim"]), extractor, int(n_classes))
        if n_features is not None:
            self.n_features_in_ = int(n_features)
        self.model_.load_state_dict(state["model"])
        self.history_, self.n_epochs_, self.snapshots_ = list(state["history"]), state["n_epochs"], {}
