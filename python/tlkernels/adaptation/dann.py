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
from torch import Tensor, nn

from ..nn import dann_lambda
from ..ops import grad_reverse_branch

__all__ = ["DomainAdversarialLoss", "DANN", "domain_head"]


def domain_head(feature_dim: int, hidden: int = 100) -> nn.Module:
    """The usual 2-layer domain classifier: Linear(F, hidden) - ReLU - Linear(hidden, 1)."""
    return nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))


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

    def __init__(self, domain_head_: nn.Module | None = None, feature_dim: int | None = None, lam_max: float = 1.0,
                 gamma: float = 10.0, hidden: int = 100):
        super().__init__()
        if domain_head_ is None:
            if feature_dim is None:
                raise ValueError("feature_dim is required when no domain_head is given")
            domain_head_ = domain_head(feature_dim, hidden)
        self.head = domain_head_
        self.lam_max, self.gamma = float(lam_max), float(gamma)
        self.last_accuracy = float("nan")

    def forward(self, features: Tensor, domain: Tensor, progress: float | Tensor,
                weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
        domain = torch.as_tensor(domain, device=features.device)
        if features.dim() < 2 or domain.shape != features.shape[:1]:
            raise ValueError(f"features must be (N, F) and domain (N,), got {tuple(features.shape)} and "
                             f"{tuple(domain.shape)}")
        lam = dann_lambda(progress, self.lam_max, self.gamma)
        f_task, f_adv = grad_reverse_branch(features, lam)
        logits = self.head(f_adv).reshape(features.shape[0])
        d = domain.to(logits.dtype)
        per = F.binary_cross_entropy_with_logits(logits, d, reduction="none")
        w = torch.ones_like(per) if weight is None else torch.as_tensor(weight, dtype=per.dtype, device=per.device)
        is_t = d > 0.5
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


def _as_tensor(X, name: str, dtype=None) -> Tensor:
    X = torch.as_tensor(X)
    if dtype is not None:
        X = X.to(dtype)
    elif not X.is_floating_point():
        X = X.float()
    if X.dim() < 1 or X.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty array of shape (N, *), got {tuple(X.shape)}")
    return X


class _Model(nn.Module):
    def __init__(self, extractor: nn.Module, classifier: nn.Module, adversary: DomainAdversarialLoss):
        super().__init__()
        self.extractor, self.classifier, self.adversary = extractor, classifier, adversary

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.extractor(x))


class DANN:
    """Domain-adversarial neural network (scikit-learn surface).

    ``DANN(feature_extractor, n_classes, feature_dim=None, lam_max=1.0, gamma=10.0, ...)``;
    ``fit(Xs (N, *), ys (N,), Xt (M, *), epochs, source_weights=(N,) | None)`` trains a fresh copy
    of the given extractor (the constructor's modules are never modified, so ``fit`` can be
    called again and reverse validation can refit), then ``predict``/``predict_proba``/``score``.

    Args:
        feature_extractor: module (B, *) -> (B, F).
        n_classes: C.
        feature_dim: F (inferred from one forward pass when None).
        lam_max, gamma: the gradient-reversal schedule. lam_max = 0 is plain source-only training
            with the same budget (the domain head still trains and reports its accuracy).
        classifier: label head (B, F) -> (B, C) (default Linear(F, C)).
        domain_head: (B, F) -> (B, 1) (default Linear(F, 100) - ReLU - Linear(100, 1)).
        lr, optimizer ('adam' | 'sgd' with momentum 0.9), weight_decay, batch_size (source and
            target batches of this size each step).
        lr_anneal: Ganin's lr(p) = lr / (1 + 10 p)^0.75 (True by default).
        grad_clip: max global gradient norm (None: no clipping).
        snapshot_epochs: epochs after which the parameters are kept in ``snapshots_`` (for a
            label-free choice of the stopping epoch; ``use_snapshot(e)`` restores one).
        device, random_state, verbose (a tqdm progress bar).

    Learned: ``model_`` (extractor_, classifier_, adversary_), ``history_`` (one dict per epoch:
    class_loss, domain_loss, domain_acc, lam, lr), ``snapshots_``.
    """

    def __init__(self, feature_extractor: nn.Module, n_classes: int, feature_dim: int | None = None,
                 lam_max: float = 1.0, gamma: float = 10.0, *, classifier: nn.Module | None = None,
                 domain_head: nn.Module | None = None, domain_hidden: int = 100, lr: float = 1e-3,
                 optimizer: str = "adam", weight_decay: float = 0.0, batch_size: int = 64, lr_anneal: bool = True,
                 grad_clip: float | None = None, snapshot_epochs=None, device=None, random_state=None,
                 verbose: bool = False):
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        if not math.isfinite(lam_max) or lam_max < 0:
            raise ValueError(f"lam_max must be a finite number >= 0, got {lam_max}")
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.feature_extractor, self.n_classes, self.feature_dim = feature_extractor, int(n_classes), feature_dim
        self.lam_max, self.gamma = float(lam_max), float(gamma)
        self.classifier, self.domain_head, self.domain_hidden = classifier, domain_head, domain_hidden
        self.lr, self.optimizer, self.weight_decay, self.batch_size = lr, optimizer, weight_decay, batch_size
        self.lr_anneal, self.grad_clip = lr_anneal, grad_clip
        self.snapshot_epochs = sorted(set(snapshot_epochs or []))
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.random_state, self.verbose = random_state, verbose

    # -- construction -------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (shared modules are deep-copied by ``fit``, never trained)."""
        keys = ["feature_extractor", "n_classes", "feature_dim", "lam_max", "gamma", "classifier", "domain_head",
                "domain_hidden", "lr", "optimizer", "weight_decay", "batch_size", "lr_anneal", "grad_clip",
                "snapshot_epochs", "device", "random_state", "verbose"]
        return {k: getattr(self, k) for k in keys}

    def clone(self, **overrides) -> "DANN":
        """An unfitted DANN with the same arguments, some replaced."""
        p = self.get_params()
        p.update(overrides)
        return DANN(**p)

    def _build(self, feature_dim: int) -> None:
        seed = 0 if self.random_state is None else int(self.random_state)
        torch.manual_seed(seed)  # the default heads' initialisation
        extractor = copy.deepcopy(self.feature_extractor)
        classifier = copy.deepcopy(self.classifier) if self.classifier is not None else nn.Linear(
            feature_dim, self.n_classes)
        head = copy.deepcopy(self.domain_head) if self.domain_head is not None else domain_head(
            feature_dim, self.domain_hidden)
        adversary = DomainAdversarialLoss(head, lam_max=self.lam_max, gamma=self.gamma)
        self.model_ = _Model(extractor, classifier, adversary).to(self.device)
        self.feature_dim_ = feature_dim

    @property
    def extractor_(self) -> nn.Module:
        return self.model_.extractor

    # -- training -----------------------------------------------------------------------------
    def fit(self, Xs, ys, Xt, epochs: int = 30, source_weights=None) -> "DANN":
        """Xs (N, *), ys (N,) int64, Xt (M, *) unlabeled, source_weights (N,) >= 0 or None."""
        Xs, Xt = _as_tensor(Xs, "Xs"), _as_tensor(Xt, "Xt")
        ys = _as_tensor(ys, "ys", torch.long)
        if ys.shape != Xs.shape[:1]:
            raise ValueError(f"ys must have shape ({Xs.shape[0]},), got {tuple(ys.shape)}")
        if Xt.shape[1:] != Xs.shape[1:]:
            raise ValueError(f"Xt must have the feature shape of Xs {tuple(Xs.shape[1:])}, got {tuple(Xt.shape[1:])}")
        if int(ys.min()) < 0 or int(ys.max()) >= self.n_classes:
            raise ValueError(f"ys must lie in [0, {self.n_classes}), got [{int(ys.min())}, {int(ys.max())}]")
        w = None
        if source_weights is not None:
            w = torch.as_tensor(source_weights, dtype=torch.float32)
            if w.shape != Xs.shape[:1] or bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
                raise ValueError(f"source_weights must have shape ({Xs.shape[0]},), finite and >= 0")
            w = w.to(self.device)
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        Xs, ys, Xt = Xs.to(self.device), ys.to(self.device), Xt.to(self.device)
        feature_dim = self.feature_dim
        if feature_dim is None:
            with torch.no_grad():
                feature_dim = int(copy.deepcopy(self.feature_extractor).to(self.device)(Xs[:2]).shape[1])
        self._build(feature_dim)
        m = self.model_
        params = list(m.parameters())
        if self.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(0 if self.random_state is None else int(self.random_state))
        n, nt, b = Xs.shape[0], Xt.shape[0], self.batch_size
        steps_per_epoch = max(1, math.ceil(n / b))
        total = epochs * steps_per_epoch
        self.history_, self.snapshots_ = [], {}
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm
            bar = tqdm(total=total, desc="DANN", unit="step")
        tperm, tpos, step = torch.randperm(nt, generator=gen), 0, 0
        domain = torch.cat([torch.zeros(min(b, n)), torch.ones(min(b, nt))]).to(self.device)
        for epoch in range(1, epochs + 1):
            m.train()
            perm = torch.randperm(n, generator=gen)
            sums = np.zeros(3)
            for i in range(0, n, b):
                idx = perm[i:i + b]
                if tpos + len(idx) > nt:
                    tperm, tpos = torch.randperm(nt, generator=gen), 0
                tidx = tperm[tpos:tpos + min(len(idx), nt)]
                tpos += len(tidx)
                p = step / total
                lr = self.lr / (1 + 10 * p) ** 0.75 if self.lr_anneal else self.lr
                for g in opt.param_groups:
                    g["lr"] = lr
                f = m.extractor(torch.cat([Xs[idx], Xt[tidx]]))
                dom = domain if len(idx) == b and len(tidx) == min(b, nt) else torch.cat(
                    [torch.zeros(len(idx)), torch.ones(len(tidx))]).to(self.device)
                bw = None if w is None else torch.cat([w[idx], torch.ones(len(tidx), device=self.device)])
                f_task, d_loss = m.adversary(f, dom, p, bw)
                ce = F.cross_entropy(m.classifier(f_task[:len(idx)]), ys[idx], reduction="none")
                c_loss = ce.mean() if w is None else (w[idx] * ce).sum() / len(idx)
                opt.zero_grad(set_to_none=True)
                (c_loss + d_loss).backward()
                if self.grad_clip is not None:
                    nn.utils.clip_grad_norm_(params, self.grad_clip)
                opt.step()
                step += 1
                sums += (float(c_loss.detach()), float(d_loss.detach()), m.adversary.last_accuracy)
                if bar is not None:
                    bar.update(1)
            k = math.ceil(n / b)
            rec = dict(epoch=epoch, class_loss=sums[0] / k, domain_loss=sums[1] / k, domain_acc=sums[2] / k,
                       lam=float(dann_lambda(step / total, self.lam_max, self.gamma)), lr=lr)
            self.history_.append(rec)
            if bar is not None:
                bar.set_postfix(cls=f"{rec['class_loss']:.3f}", dom_acc=f"{rec['domain_acc']:.2f}",
                                lam=f"{rec['lam']:.2f}")
            if epoch in self.snapshot_epochs:
                self.snapshots_[epoch] = copy.deepcopy(m.state_dict())
        if bar is not None:
            bar.close()
        self.n_epochs_ = epochs
        return self

    def use_snapshot(self, epoch: int) -> "DANN":
        """Restores the parameters kept after `epoch` (see ``snapshot_epochs``)."""
        if epoch not in getattr(self, "snapshots_", {}):
            raise ValueError(f"no snapshot for epoch {epoch}; kept: {sorted(getattr(self, 'snapshots_', {}))}")
        self.model_.load_state_dict(self.snapshots_[epoch])
        return self

    # -- inference ----------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("this DANN is not fitted yet: call fit(Xs, ys, Xt) first")

    @torch.no_grad()
    def predict_proba(self, X) -> Tensor:
        """(N, C) class probabilities."""
        self._check_fitted()
        X = _as_tensor(X, "X").to(self.device)
        self.model_.eval()
        out = torch.cat([self.model_(X[i:i + 1024]).softmax(1) for i in range(0, X.shape[0], 1024)])
        return out

    def predict(self, X) -> Tensor:
        """(N,) int64 labels."""
        return self.predict_proba(X).argmax(1)

    def score(self, X, y) -> float:
        """Accuracy on (X, y)."""
        y = torch.as_tensor(y).to(self.device)
        return float((self.predict(X) == y).float().mean())

    @torch.no_grad()
    def transform(self, X) -> Tensor:
        """(N, F) learned features."""
        self._check_fitted()
        self.model_.eval()
        return self.model_.extractor(_as_tensor(X, "X").to(self.device))

    @torch.no_grad()
    def domain_accuracy(self, Xs, Xt) -> float:
        """Balanced accuracy of the trained domain head on (Xs, Xt) (0.5 = features aligned)."""
        self._check_fitted()
        self.model_.eval()
        h = self.model_.adversary.head
        ps = h(self.transform(Xs)).reshape(-1) <= 0
        pt = h(self.transform(Xt)).reshape(-1) > 0
        return 0.5 * (float(ps.float().mean()) + float(pt.float().mean()))

    # -- persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {"model": self.model_.state_dict(), "feature_dim": self.feature_dim_, "history": self.history_,
                "n_epochs": self.n_epochs_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._build(int(state["feature_dim"]))
        self.model_.load_state_dict(state["model"])
        self.history_, self.n_epochs_, self.snapshots_ = list(state["history"]), state["n_epochs"], {}
