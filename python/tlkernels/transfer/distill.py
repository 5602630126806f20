"""Knowledge distillation (Hinton et al. 2015; Lampert 2019 "Knowledge Distillation"): a student f is
trained on the soft outputs of a trained teacher g (one network or the averaged outputs of an
ensemble) with the tempered cross-entropy

    Loss(g(X), f(X)) = - sum_c [g(X)^(1/T)]_c log [f(X)^(1/T)]_c,

where p^(1/T) is renormalised to a distribution, i.e. softmax(logits / T) for outputs given as
logits. The teacher can label data that has no labels (distillation on unlabeled data).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import ClassifierMixin as _SkClassifier
from torch import Tensor, nn

from .._base import TorchEstimator
from .._validation import as_labels
from ._common import (
    ClassifierMixin,
    as_weights,
    as_x,
    as_xy,
    predict_logits,
    torch_generator,
    train_loop,
)

__all__ = ["Distill", "DistillationLoss", "distillation_targets", "tempered_probs"]

_KINDS = ("logits", "probs", "targets")


def _check_temperature(temperature, name: str = "temperature") -> float:
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float, np.integer, np.floating))
        or not math.isfinite(float(temperature))
        or not temperature > 0
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def tempered_probs(outputs: Tensor, temperature: float, kind: str = "logits") -> Tensor:
    """Lampert 2019's renormalised tempered outputs [g^(1/T)] (N, C) from outputs (N, C):

    kind='logits': softmax(outputs / T); kind='probs': p^(1/T) / sum_c p_c^(1/T) (the same
    distribution when p = softmax(logits)); kind='targets': outputs already tempered, returned as is.
    """
    T = _check_temperature(temperature)
    if kind == "logits":
        return torch.softmax(outputs / T, dim=1)
    if kind == "probs":
        return torch.softmax(torch.log(outputs.clamp_min(1e-30)) / T, dim=1)
    if kind == "targets":
        return outputs
    raise ValueError(f"teacher_kind must be one of {_KINDS}, got {kind!r}")


class DistillationLoss(nn.Module):
    """Lampert 2019's tempered cross-entropy between a teacher's and a student's outputs, times T².

    loss_i = T² · ( - sum_c q_ic log softmax(s_i / T)_c ) + hard_weight · CE(s_i, target_i),
    with q_i = tempered_probs(teacher_i, T, teacher_kind) (detached: no gradient reaches the teacher).

    Why T²: d loss / d s = T² · (softmax(s/T) - q) / T = T · (softmax(s/T) - q), and for large T
    softmax(s/T) - q ≈ (s - t) / (C·T) (logits centred), so the soft term's gradient is of order
    (s - t) / C whatever T is; without T² it would shrink like 1/T² and changing T would silently
    change the effective learning rate and the balance with the hard term (Hinton et al. 2015).
    It is a cross-entropy, not a KL: at student == teacher its value is T²·H(q) (not 0) but its
    gradient is 0; the two differ by a constant of the teacher only.

    Args:
        temperature: T > 0 (Lampert 2019's alpha).
        hard_weight: >= 0, weight of the ordinary cross-entropy (at T = 1) with labels `target`;
            needs target in forward when > 0. target entries of -1 mean "no label" (their hard
            term is 0: unlabeled examples mixed into a labelled batch).
        reduction: 'mean' (weighted mean sum_i w_i l_i / sum_i w_i), 'sum' (sum_i w_i l_i) or 'none' (B,).
        teacher_kind: what forward gets from the teacher: 'logits' (default), 'probs' (probabilities,
            tempered as p^(1/T) renormalised) or 'targets' (already tempered soft targets, e.g.
            from ``distillation_targets``).

    forward(student_logits (B, C), teacher (B, C), target=None (B,) int, weight=None (B,) >= 0)
    -> scalar, or (B,) with reduction='none'.
    """

    def __init__(
        self, temperature: float = 1.0, hard_weight: float = 0.0, reduction: str = "mean", teacher_kind: str = "logits"
    ):
        super().__init__()
        self.temperature = _check_temperature(temperature)
        if (
            isinstance(hard_weight, bool)
            or not isinstance(hard_weight, (int, float, np.integer, np.floating))
            or not hard_weight >= 0
            or not math.isfinite(float(hard_weight))
        ):
            raise ValueError(f"hard_weight must be a finite number >= 0, got {hard_weight!r}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        if teacher_kind not in _KINDS:
            raise ValueError(f"teacher_kind must be one of {_KINDS}, got {teacher_kind!r}")
        self.hard_weight, self.reduction, self.teacher_kind = float(hard_weight), reduction, teacher_kind

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, hard_weight={self.hard_weight}, "
            f"reduction={self.reduction!r}, teacher_kind={self.teacher_kind!r}"
        )

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits_or_probs: Tensor,
        target: Tensor | None = None,
        weight: Tensor | None = None,
    ) -> Tensor:
        s, t = student_logits, teacher_logits_or_probs
        if not isinstance(s, Tensor) or s.dim() != 2:
            raise ValueError(
                f"student_logits must be a tensor of shape (B, C), got "
                f"{tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__}"
            )
        if not isinstance(t, Tensor) or tuple(t.shape) != tuple(s.shape):
            raise ValueError(
                f"teacher_logits_or_probs must have the student's shape {tuple(s.shape)}, got "
                f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}"
            )
        B = s.shape[0]
        T = self.temperature
        q = tempered_probs(t.detach().to(s.dtype), T, self.teacher_kind)
        per = -(q * F.log_softmax(s / T, dim=1)).sum(1) * (T * T)
        if self.hard_weight > 0:
            if target is None:
                raise ValueError("target (B,) class indices is required when hard_weight > 0")
            target = torch.as_tensor(target, device=s.device).long()
            if target.shape != (B,):
                raise ValueError(f"target must have shape ({B},), got {tuple(target.shape)}")
            per = per + self.hard_weight * F.cross_entropy(s, target, reduction="none", ignore_index=-1)
        if weight is not None:
            weight = torch.as_tensor(weight, dtype=s.dtype, device=s.device)
            if weight.shape != (B,):
                raise ValueError(f"weight must have shape ({B},), got {tuple(weight.shape)}")
            if (weight < 0).any() or not torch.isfinite(weight).all():
                raise ValueError("weight must be finite and >= 0")
        if self.reduction == "none":
            return per if weight is None else per * weight
        if weight is None:
            return per.mean() if self.reduction == "mean" else per.sum()
        total = (weight * per).sum()
        return total / weight.sum().clamp_min(1e-12) if self.reduction == "mean" else total


def _as_teachers(teachers, arg: str = "teacher") -> list[nn.Module]:
    """nn.Module | fitted estimator with ``model_`` | list of those -> list of modules."""
    items = list(teachers) if isinstance(teachers, (list, tuple)) else [teachers]
    if not items:
        raise ValueError(f"{arg} must be an nn.Module or a non-empty list of them, got an empty list")
    out = []
    for k, m in enumerate(items):
        m = getattr(m, "model_", m)
        if not isinstance(m, nn.Module):
            raise ValueError(f"{arg}[{k}] must be an nn.Module (or an estimator with model_), got {type(m).__name__}")
        out.append(m)
    return out


@torch.no_grad()
def distillation_targets(teachers, X, temperature: float = 1.0, device=None, batch_size: int = 512) -> Tensor:
    """Soft targets (N, C): the mean over teachers of softmax(teacher(X) / T).

    teachers: one nn.Module or a list (an ensemble: its members' tempered probabilities are
    averaged); X (N, ...) numpy or tensor. Teachers are evaluated in eval mode (their mode is
    restored) without gradients. Returns a float32 CPU tensor whose rows sum to 1.
    """
    T = _check_temperature(temperature)
    mods = _as_teachers(teachers, "teachers")
    X = as_x(X)
    device = torch.device(device) if device is not None else torch.device("cpu")
    total = None
    for k, m in enumerate(mods):
        logits = predict_logits(m, X, device, batch_size).float()
        if logits.dim() != 2 or logits.shape[0] != X.shape[0]:
            raise ValueError(f"teachers[{k}] must map X (N, ...) to logits (N, C), got {tuple(logits.shape)}")
        if total is not None and logits.shape != total.shape:
            raise ValueError(f"teachers[{k}] outputs {logits.shape[1]} classes, the first teacher {total.shape[1]}")
        p = torch.softmax(logits / T, dim=1)
        total = p if total is None else total + p
    return total / len(mods)


class Distill(ClassifierMixin, _SkClassifier, TorchEstimator):
    """Train a student network on a teacher's (or an ensemble's) tempered soft outputs.

    Args:
        student: the student nn.Module, X (B, ...) -> logits (B, C); deep-copied and trained from
            its current parameters (the original never changes).
        teacher: an nn.Module, a fitted estimator with ``model_`` (e.g. FineTune), or a list of
            them (an ensemble: their tempered probabilities are averaged). Never trained.
        temperature: T > 0 of the tempered cross-entropy (see DistillationLoss; soft term × T²).
        hard_weight: >= 0, weight of the cross-entropy with the true labels y (labelled examples only).
        lr, epochs, batch_size, optimizer ('adam' or 'sgd' with momentum 0.9).
        device, random_state (shuffling; the student's init is the one given), verbose (tqdm).

    fit(X, y=None, sample_weight=None, X_unlabeled=None, eval_set=None):
        X (N, ...) training inputs; y (N,) labels or None (then X is unlabeled and only the
        teacher's soft targets are used); sample_weight (N,) >= 0 for X (examples of X_unlabeled
        (M, ...) have weight 1); X_unlabeled: more inputs labelled by the teacher only;
        eval_set=(X_eval, y_eval): ``history_`` records its accuracy after every epoch.

    Attributes: ``model_`` (trained student), ``history_`` (list of dicts per epoch: epoch, loss,
    eval_accuracy; epoch 0 = before training), ``n_classes_``, ``classes_`` (0..C-1),
    ``n_train_`` (N + M).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher,
        temperature: float = 4.0,
        hard_weight: float = 0.0,
        lr: float = 1e-3,
        epochs: int = 50,
        batch_size: int = 64,
        optimizer: str = "adam",
        device=None,
        random_state=None,
        verbose: bool = False,
    ):
        if not isinstance(student, nn.Module):
            raise ValueError(f"student must be an nn.Module, got {type(student).__name__}")
        _as_teachers(teacher)
        DistillationLoss(temperature, hard_weight, reduction="none", teacher_kind="targets")  # validates
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if isinstance(epochs, bool) or not (isinstance(epochs, (int, np.integer)) and epochs >= 0):
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        if isinstance(batch_size, bool) or not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        self.student, self.teacher = student, teacher
        self.temperature, self.hard_weight = temperature, hard_weight
        self.lr, self.epochs, self.batch_size, self.optimizer = lr, epochs, batch_size, optimizer
        self.device = device
        self.random_state, self.verbose = random_state, verbose

    def fit(self, X, y=None, sample_weight=None, X_unlabeled=None, eval_set=None) -> Distill:
        """X (N, ...), y (N,) or None, sample_weight (N,), X_unlabeled (M, ...), eval_set; returns self."""
        loss = DistillationLoss(self.temperature, self.hard_weight, reduction="none", teacher_kind="targets")
        X = self._validate_X(X, reset=True)
        if y is None:
            if self.hard_weight > 0:
                raise ValueError("y is None but hard_weight > 0: the hard term needs labels (set hard_weight=0)")
            labels = torch.full((X.shape[0],), -1, dtype=torch.long)
        else:
            labels = as_labels(y, X.shape[0])
        w = as_weights(sample_weight, X.shape[0])
        if X_unlabeled is not None:
            Xu = as_x(X_unlabeled, "X_unlabeled")
            if Xu.shape[1:] != X.shape[1:]:
                raise ValueError(
                    f"X_unlabeled must have examples of shape {tuple(X.shape[1:])} like X, got {tuple(Xu.shape[1:])}"
                )
            X = torch.cat([X, Xu])
            labels = torch.cat([labels, torch.full((Xu.shape[0],), -1, dtype=torch.long)])
            if w is not None:
                w = torch.cat([w, torch.ones(Xu.shape[0])])
        device = self._device()
        targets = distillation_targets(self.teacher, X, self.temperature, device)
        C = targets.shape[1]
        if (labels >= C).any():
            raise ValueError(f"y must hold class indices < {C} (the teacher's number of outputs)")
        gen = torch_generator(self.random_state)
        net = copy.deepcopy(self.student).to(device)
        with torch.no_grad():
            was = net.training
            net.eval()
            out = net(X[:2].to(device))
            net.train(was)
        if out.dim() != 2 or out.shape[1] != C:
            raise ValueError(f"student must output logits (B, {C}) like the teacher, got {tuple(out.shape)}")
        on_epoch = None
        if eval_set is not None:
            if not isinstance(eval_set, (tuple, list)) or len(eval_set) != 2:
                raise ValueError("eval_set must be a pair (X_eval, y_eval)")
            Xe, ye = as_xy(eval_set[0], eval_set[1], "eval_set[0]")

            def on_epoch(_):
                return {"eval_accuracy": float((predict_logits(net, Xe, device).argmax(1) == ye).float().mean())}

        targets_d, labels_d = targets.to(device), labels.to(device)

        def loss_fn(m, xb, ib):  # train_loop hands us the example indices as "labels"
            return loss(m(xb), targets_d[ib], labels_d[ib] if loss.hard_weight > 0 else None)

        history = [{"epoch": 0, **(on_epoch(0) if on_epoch else {})}]
        if self.epochs > 0:
            history += train_loop(
                net,
                [{"params": [p for p in net.parameters() if p.requires_grad], "lr": self.lr}],
                X,
                torch.arange(X.shape[0]),
                epochs=self.epochs,
                batch_size=self.batch_size,
                optimizer=self.optimizer,
                gen=gen,
                device=device,
                sample_weight=w,
                loss_fn=loss_fn,
                on_epoch=on_epoch,
                verbose=self.verbose,
                desc="distill",
            )
        net.eval()
        self.model_, self.history_, self.n_classes_, self.n_train_ = net, history, C, X.shape[0]
        self.classes_ = np.arange(C)
        return self

    def _decision(self, X) -> Tensor:
        """X (N, ...) -> student logits (N, C)."""
        return predict_logits(self.model_, self._validate_X(X, reset=False), self._device())
