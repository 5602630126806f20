"""MultiTaskClassifier: separate / hard-shared / soft-shared networks for several classification
tasks on the same input space, trained on the (weighted) average of the per-task losses."""

from __future__ import annotations

import copy
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._base import TorchEstimator, like_input
from .._seeding import draw_seed
from ..nn import mlp
from ..transfer._common import as_x, reset_parameters, torch_generator
from .sharing import HardSharingNet, PerTaskNets, SoftSharingPenalty, check_task_name

__all__ = ["MultiTaskClassifier", "as_task_labels"]

UNLABELLED = -1


def as_task_labels(Y, n: int, arg: str = "Y", tasks=None) -> dict[str, Tensor]:
    """Y: {task: (N,) int labels, -1 = not labelled for that task} or an (N, T) array (tasks named
    'task0' ... or `tasks`) -> {task: LongTensor (N,)}."""
    if isinstance(Y, dict):
        if not Y:
            raise ValueError(f"{arg} must name at least one task")
        items = list(Y.items())
    else:
        A = Y if isinstance(Y, Tensor) else torch.as_tensor(np.asarray(Y))
        if A.dim() != 2:
            raise ValueError(
                f"{arg} must be a dict {{task: (N,) labels}} or an (N, T) array, got shape {tuple(A.shape)}"
            )
        names = list(tasks) if tasks is not None else [f"task{j}" for j in range(A.shape[1])]
        if len(names) != A.shape[1]:
            raise ValueError(f"{arg} has {A.shape[1]} columns but the model has tasks {names}")
        items = [(names[j], A[:, j]) for j in range(A.shape[1])]
    out = {}
    for t, y in items:
        check_task_name(t, arg)
        y = y if isinstance(y, Tensor) else torch.as_tensor(np.asarray(y))
        if y.is_floating_point():
            if not torch.equal(y, y.round()):
                raise ValueError(f"{arg}[{t!r}] must hold integer class labels (-1 = unlabelled)")
        y = y.long().flatten() if y.dim() <= 1 else y
        if y.dim() != 1 or y.shape[0] != n:
            raise ValueError(f"{arg}[{t!r}] must have shape ({n},) to match X, got {tuple(y.shape)}")
        if (y < UNLABELLED).any():
            raise ValueError(f"{arg}[{t!r}] must hold class indices >= 0 (or -1 for unlabelled)")
        out[t] = y
    return out


def _task_weights(sample_weight, labels: dict[str, Tensor], n: int) -> dict[str, Tensor]:
    """None | (N,) array (shared by all tasks) | {task: (N,)} -> {task: FloatTensor (N,)}."""

    def conv(w, arg):
        w = torch.as_tensor(np.asarray(w) if not isinstance(w, Tensor) else w, dtype=torch.float32).flatten()
        if w.shape[0] != n:
            raise ValueError(f"{arg} must have shape ({n},), got {tuple(w.shape)}")
        if not torch.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"{arg} must be finite and >= 0")
        return w

    if sample_weight is None:
        return {t: torch.ones(n) for t in labels}
    if isinstance(sample_weight, dict):
        unknown = set(sample_weight) - set(labels)
        if unknown:
            raise ValueError(f"sample_weight names unknown tasks {sorted(unknown)}; tasks are {list(labels)}")
        return {
            t: conv(sample_weight[t], f"sample_weight[{t!r}]") if t in sample_weight else torch.ones(n) for t in labels
        }
    w = conv(sample_weight, "sample_weight")
    return {t: w for t in labels}


def _mlp_trunk(d_in: int, hidden) -> tuple[nn.Sequential, int]:
    """Flatten -> (Linear, ReLU) per width (``tlkernels.nn.mlp``) and its output width."""
    return mlp(d_in, hidden, flatten=True), int(hidden[-1])


class MultiTaskClassifier(TorchEstimator):
    """Several classification tasks on one input space (Lampert 2019, "Situation 1"):

    mode='separate': one network (trunk eta_t + head beta_t) per task, each trained on its own loss.
    mode='hard':     one shared trunk eta, one head beta_t per task (``HardSharingNet``), trained on
                     L^MT = sum_t w_t L_t / sum_t w_t (Lampert 2019's average for uniform weights).
    mode='soft':     one network per task, trained on L^MT + lam sum_{s,t}||eta_s - eta_t||^2
                     + mu sum_{s,t}||beta_s - beta_t||^2 (``SoftSharingPenalty``). Parameters are
                     paired by name, so every task uses the same trunk architecture; the mu term
                     compares only heads of equal shape (tasks with the same number of classes).
                     lam=float('inf') / mu=float('inf') is the limit itself: the copies are tied
                     (start equal and each receives the SUM of the copies' gradients), which makes
                     soft sharing with lam=inf, mu=0 the same optimisation as hard sharing.

    Args:
        hidden: widths of the default trunk Flatten -> (Linear, ReLU) * len(hidden); ignored when
            `trunk` (an nn.Module x (N, ...) -> (N, D), deep-copied, not re-initialised) is given.
        lam, mu: soft-sharing weights (mode='soft' only), >= 0 or inf.
        task_weights: None (uniform) or {task: weight >= 0} for the averaged losses.
        lr, epochs, batch_size, optimizer ('adam' | 'sgd' with momentum 0.9), weight_decay.
        device, random_state, verbose (tqdm bar over epochs).

    Initialisation is a function of random_state and the task NAME (the default trunk from
    random_state, head t from random_state + crc32(t)), and all trunk copies start equal, so a
    single-task fit reproduces that task's network of a mode='separate' fit.

    fit(X (N, ...), Y, sample_weight=None): Y is {task: (N,) labels} with -1 where an example is not
    labelled for a task (tasks may be labelled on different images), or an (N, T) array.
    sample_weight: None, (N,) for all tasks, or {task: (N,)}. Each task's loss in a batch is the
    sample-weighted mean over its labelled examples in that batch.
    Attributes: ``model_`` (HardSharingNet or PerTaskNets), ``tasks_``, ``n_classes_`` {task: C_t},
    ``history_`` [{epoch, loss, loss_<task>, penalty}]. Outputs are dicts {task: ...} (numpy for
    numpy X, tensors for a tensor X): scikit-learn's ClassifierMixin (one label per example)
    does not apply.
    """

    MODES = ("separate", "hard", "soft")

    def __init__(
        self,
        mode: str = "hard",
        hidden=(128, 64),
        *,
        trunk: nn.Module | None = None,
        lam: float = 0.0,
        mu: float = 0.0,
        task_weights: dict | None = None,
        lr: float = 1e-3,
        epochs: int = 100,
        batch_size: int = 64,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        device=None,
        random_state=None,
        verbose: bool = False,
    ):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        if trunk is not None and not isinstance(trunk, nn.Module):
            raise ValueError(f"trunk must be None or an nn.Module, got {type(trunk).__name__}")
        if trunk is None and (not hidden or any(int(h) < 1 for h in hidden)):
            raise ValueError(f"hidden must be a non-empty sequence of positive widths, got {hidden!r}")
        for name, v in (("lam", lam), ("mu", mu)):
            if not (isinstance(v, (int, float)) and v >= 0):
                raise ValueError(f"{name} must be >= 0 (or float('inf')), got {v!r}")
        if task_weights is not None:
            if not isinstance(task_weights, dict) or any(not (float(w) >= 0) for w in task_weights.values()):
                raise ValueError(f"task_weights must be None or a dict {{task: weight >= 0}}, got {task_weights!r}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not (isinstance(epochs, (int, np.integer)) and epochs >= 0):
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        self.mode, self.hidden, self.trunk, self.lam, self.mu = mode, hidden, trunk, lam, mu
        self.task_weights, self.lr, self.epochs, self.batch_size = task_weights, lr, epochs, batch_size
        self.optimizer, self.weight_decay = optimizer, weight_decay
        self.device = device
        self.random_state, self.verbose = random_state, verbose

    # -- construction -------------------------------------------------------------------------
    def _build(self, X: Tensor, seed: int):
        if self.trunk is None:
            trunk, d = _mlp_trunk(X[0].numel(), self.hidden)
            reset_parameters(trunk, torch.Generator().manual_seed(seed))
        else:
            trunk = copy.deepcopy(self.trunk)
            with torch.no_grad():
                out = trunk.eval()(X[:1])
            if out.dim() != 2:
                raise ValueError(f"trunk must map X to (N, D) features, got output shape {tuple(out.shape)}")
            d = out.shape[1]
        heads = {}
        for t in self.tasks_:
            h = nn.Linear(d, self.n_classes_[t])
            reset_parameters(h, torch.Generator().manual_seed(seed + zlib.crc32(t.encode())))
            heads[t] = h
        if self.mode == "hard":
            return HardSharingNet(trunk, heads)
        return PerTaskNets({t: copy.deepcopy(trunk) for t in self.tasks_}, heads)

    def _loss_coef(self) -> dict[str, float]:
        if self.mode == "separate":
            return {t: 1.0 for t in self.tasks_}
        w = {t: float((self.task_weights or {}).get(t, 1.0)) for t in self.tasks_}
        s = sum(w.values())
        if s <= 0:
            raise ValueError("task_weights must not all be zero")
        return {t: v / s for t, v in w.items()}

    @staticmethod
    def _tie(modules: list[nn.Module]):
        """Tied copies: every copy gets the sum of all copies' gradients (the gradient of the
        objective with respect to the one shared parameter), so copies that start equal stay equal."""
        groups: dict[tuple, list] = {}
        for m in modules:
            for n, p in m.named_parameters():
                groups.setdefault((n, tuple(p.shape)), []).append(p)
        for ps in groups.values():
            if len(ps) < 2:
                continue
            gs = [p.grad for p in ps if p.grad is not None]
            if not gs:
                continue
            total = torch.stack(gs).sum(0)
            for p in ps:
                p.grad = total.clone()

    # -- training -----------------------------------------------------------------------------
    def fit(self, X, Y, sample_weight=None) -> MultiTaskClassifier:
        from tqdm.auto import tqdm

        X = as_x(X)
        n = X.shape[0]
        labels = as_task_labels(Y, n)
        if self.task_weights is not None:
            unknown = set(self.task_weights) - set(labels)
            if unknown:
                raise ValueError(f"task_weights names unknown tasks {sorted(unknown)}; Y has tasks {list(labels)}")
        weights = _task_weights(sample_weight, labels, n)
        for t, y in labels.items():
            if not ((y >= 0) & (weights[t] > 0)).any():
                raise ValueError(f"Y[{t!r}] has no labelled example with positive weight")
        self.tasks_ = list(labels)
        self.n_classes_ = {t: max(int(y.max()) + 1, 2) for t, y in labels.items()}
        seed = draw_seed(torch_generator(self.random_state), 2**31 - 1)
        device = self._device()
        model = self._build(X, seed).to(device)
        coef = self._loss_coef()
        soft = self.mode == "soft"
        inf = float("inf")
        penalty = None
        if soft:
            penalty = SoftSharingPenalty(
                0.0 if self.lam == inf else self.lam, 0.0 if self.mu == inf else self.mu, mismatched="skip"
            )
        params = list(model.parameters())
        if self.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(seed + 1)
        Ymat = torch.stack([labels[t] for t in self.tasks_], 1)
        Wmat = torch.stack([weights[t] for t in self.tasks_], 1)
        history = []
        for epoch in tqdm(range(self.epochs), desc=f"multitask ({self.mode})", disable=not self.verbose, leave=False):
            model.train()
            perm = torch.randperm(n, generator=gen)
            sums = {t: 0.0 for t in self.tasks_}
            tot, pen_tot, steps = 0.0, 0.0, 0
            for i in range(0, n, int(self.batch_size)):
                idx = perm[i : i + int(self.batch_size)]
                xb = X[idx].to(device)
                yb, wb = Ymat[idx].to(device), Wmat[idx].to(device)
                feats = model.trunk(xb) if self.mode == "hard" else None
                loss = None
                for j, t in enumerate(self.tasks_):
                    m = (yb[:, j] >= 0) & (wb[:, j] > 0)
                    if not m.any():
                        continue
                    logits = model.heads[t](feats[m]) if feats is not None else model.heads[t](model.trunks[t](xb[m]))
                    per = F.cross_entropy(logits, yb[m, j], reduction="none")
                    w = wb[m, j]
                    lt = (w * per).sum() / w.sum()
                    sums[t] += float(lt.detach())
                    loss = coef[t] * lt if loss is None else loss + coef[t] * lt
                if soft:
                    pen = penalty(model.trunks, model.heads)
                    if pen.requires_grad:
                        pen_tot += float(pen.detach())
                        loss = pen if loss is None else loss + pen
                if loss is None:
                    continue
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if soft and self.lam == inf:
                    self._tie(list(model.trunks.values()))
                if soft and self.mu == inf:
                    self._tie(list(model.heads.values()))
                opt.step()
                tot += float(loss.detach())
                steps += 1
            row = {"epoch": epoch + 1, "loss": tot / max(steps, 1)}
            row.update({f"loss_{t}": v / max(steps, 1) for t, v in sums.items()})
            if soft:
                row["penalty"] = pen_tot / max(steps, 1)
            history.append(row)
        model.eval()
        self.model_, self.history_ = model, history
        return self

    # -- prediction ---------------------------------------------------------------------------
    def _check_fitted(self):
        self._check_is_fitted()

    def _logits(self, X) -> dict[str, Tensor]:
        self._check_fitted()
        X = as_x(X)
        out = {t: [] for t in self.tasks_}
        with torch.no_grad():
            for i in range(0, X.shape[0], 512):
                for t, v in self.model_(X[i : i + 512].to(self._device())).items():
                    out[t].append(v.cpu())
        return {t: torch.cat(v) for t, v in out.items()}

    def decision_function(self, X) -> dict:
        """X (N, ...) -> {task: logits (N, C_t)}."""
        return like_input(self._logits(X), X)

    def predict_proba(self, X) -> dict:
        """X (N, ...) -> {task: class probabilities (N, C_t)}."""
        return like_input({t: torch.softmax(v, 1) for t, v in self._logits(X).items()}, X)

    def predict(self, X) -> dict:
        """X (N, ...) -> {task: class indices (N,)}."""
        return like_input({t: v.argmax(1) for t, v in self._logits(X).items()}, X)

    def score(self, X, Y, sample_weight=None) -> dict[str, float]:
        """Per-task (weighted) accuracy over the examples labelled for that task: {task: accuracy}.
        Y may name a subset of the fitted tasks (an (N, T) array must have all T columns)."""
        self._check_fitted()
        X = as_x(X)
        labels = as_task_labels(Y, X.shape[0], tasks=self.tasks_)
        unknown = [t for t in labels if t not in self.tasks_]
        if unknown:
            raise ValueError(f"Y names unknown tasks {unknown}; the model was fitted on {self.tasks_}")
        weights = _task_weights(sample_weight, labels, X.shape[0])
        pred = {t: v.numpy() for t, v in self.predict(X.cpu()).items()}
        out = {}
        for t, y in labels.items():
            m = (y >= 0).numpy()
            w = weights[t].numpy()[m].astype(np.float64)
            hit = (pred[t][m] == y.numpy()[m]).astype(np.float64)
            out[t] = float((w * hit).sum() / w.sum()) if w.sum() > 0 else float("nan")
        return out
