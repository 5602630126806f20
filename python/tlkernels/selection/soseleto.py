"""SOSELETO (Litany & Freedman): SOurce SELEction for Target Optimization.

Every source example j gets a weight alpha_j in [0, 1]. A shared representation theta (with a
source head phi_s) is trained on the alpha-weighted source loss; the weights are moved so that
the theta step lowers the target loss (a one-step bilevel approximation):

    theta_{m+1} = theta_m - lr_p * Q alpha_m                          (Litany & Freedman 2018, eq. 1)
    alpha_{m+1} = clip_[0,1](alpha_m + lr_alpha * lr_p * Q^T dL_t/dtheta)   (Litany & Freedman 2018, eq. 2)

where column j of Q is d l_j / d theta / B for the source batch of size B. Q^T g is computed by
``tlkernels.persample`` without per-sample gradients, the alpha step by the fused
``clip_update_`` op, and the weighted theta gradient by bookkeeping (no second backward).

Choices made here (documented, with their reasons):
- The theta step uses alpha AFTER its update: an example whose weight just dropped to 0 does not
  pull theta in that step.
- ``alpha_step='normalized'`` (default): s is divided by its root mean square over the batch
  before the step, so lr_alpha is the typical change of a weight per visit whatever the scale of
  the gradients (the raw scale of Q^T g varies by orders of magnitude between models and during
  training: a fixed raw step either freezes alpha or slams it to the clip). ``'raw'`` is
  eq. 2 of Litany & Freedman 2018 with lr_alpha * lr_p.
- Shared-head mode (``source_head is target_head``): the classifier belongs to theta, the target
  only moves alpha. This is the mode for noisy labels (same label space). With separate heads
  (disjoint label sets), phi_t trains on the target loss and theta = the backbone.
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

from .. import ops, persample
from .._base import TorchEstimator, fit_param_deprecated, like_input
from .._seeding import torch_generator
from .._validation import as_tensor, to_numpy

__all__ = ["Soseleto"]


def _as_xy(data, name: str) -> tuple[Tensor, Tensor]:
    if hasattr(data, "X") and hasattr(data, "y"):
        X, y = data.X, data.y
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        X, y = data
    else:
        raise TypeError(f"{name} must be (X, y) or a tlkernels.data.Dataset, got {type(data).__name__}")
    X = torch.as_tensor(np.asarray(X) if not isinstance(X, Tensor) else X)
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, Tensor) else y)
    if y.dim() != 1:
        raise ValueError(f"{name}: y must be (N,) class labels, got shape {tuple(y.shape)}")
    if y.is_complex() or (y.is_floating_point() and not bool((y == y.round()).all())):
        bad = y[y != y.round()][:1].tolist() if y.is_floating_point() else []
        raise ValueError(
            f"{name}: labels must be integers, got dtype {y.dtype}"
            + (f" with the non-integer value {bad[0]}" if bad else "")
        )
    y = y.long()
    if y.numel() and int(y.min()) < 0:
        raise ValueError(
            f"{name}: labels must be class indices >= 0, got {int(y.min())} (an ignore index such "
            "as -100 is not supported: drop those examples)"
        )
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: X has {X.shape[0]} examples but y has {y.shape[0]}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if X.is_floating_point() and not torch.isfinite(X).all():
        raise ValueError(f"{name}: X contains NaN or infinite values")
    return X, y


class _Net(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x):
        return self.head(self.backbone(x))


class Soseleto(ClassifierMixin, TorchEstimator):
    """Bilevel source-example weighting (scikit-learn surface: get_params / set_params / clone,
    NotFittedError before fit, numpy in -> numpy out and tensor in -> tensor out).

    The modules given are trained in place (``backbone``, the heads: their trained values are
    the result, as with a torch optimiser); ``sklearn.base.clone`` gives an unfitted Soseleto
    on deep copies. ``fit`` called again continues where it stopped (a warm start); the state is
    built at the first ``fit`` / ``step`` / ``load_state_dict`` or access of ``source_net`` /
    ``target_net``.

    Args:
        backbone: the shared representation theta (any nn.Module mapping inputs to features).
        source_head, target_head: classifiers on the features; pass the same module for the
            shared-head mode (noisy labels).
        n_source: number of source examples (the length of alpha).
        groups: optional (n_source,) int group ids: one weight per group (e.g. k-means clusters or
            source-dataset ids); the steps of a group's members are summed.
        alpha_init: initial weights (1.0).
        lr: learning rate of theta / phi_s (and phi_t); lr_alpha: step of alpha (see alpha_step); 0 keeps alpha at alpha_init (the alpha-frozen control).
        alpha_step: 'normalized' (default) or 'raw' (Litany & Freedman 2018, eq. 2).
        optimizer: 'sgd' (momentum 0.9, the default) or 'adam'; weight_decay.
        schedule: None or 'cosine': learning rates follow 0.5 (1 + cos(pi step / max_steps)),
            with max_steps given explicitly (so a resumed run follows the same schedule).
        batch_size, target_batch_size: per step.
        epochs: passes over the source per ``fit`` (``fit(..., epochs=)`` still works for one
            release, with a FutureWarning).
        device, random_state, verbose (a tqdm progress bar).
        distributed: under an initialised torch.distributed, each rank holds a shard of the source
            (n_source and alpha are that shard's) and the same model; the target gradient, the
            normaliser of the alpha step and the weighted source gradient are all-reduced, so all
            ranks keep identical models (the step of one process on the union of the shards).

    Attributes after fit: ``alpha_`` (n_source,) float32, ``history_`` (per epoch: source and
    target loss, mean alpha), ``step_``, ``classes_`` (the target head's output indices, when
    it has an ``out_features``), ``source_values_`` (n_source,) float64: each source example's
    summed share of the steps' first-order change of the target loss through theta,
    -lr alpha_j <dl_j/dtheta, dL_t/dtheta> / B per step (first-order in-run data Shapley,
    Wang et al. 2024; free: it is the s of the alpha step; exact for plain SGD, the current
    gradient's share with momentum or Adam; in distributed mode, the examples of this rank).
    """

    def __init__(
        self,
        backbone: nn.Module,
        source_head: nn.Module,
        target_head: nn.Module,
        n_source: int,
        *,
        groups=None,
        alpha_init: float = 1.0,
        lr: float = 0.05,
        lr_alpha: float = 0.05,
        alpha_step: str = "normalized",
        optimizer: str = "sgd",
        weight_decay: float = 0.0,
        schedule: str | None = None,
        max_steps: int | None = None,
        batch_size: int = 64,
        target_batch_size: int = 32,
        epochs: int = 10,
        device=None,
        random_state=None,
        verbose: bool = False,
        distributed: bool = False,
    ):
        if alpha_step not in ("normalized", "raw"):
            raise ValueError(f"alpha_step must be 'normalized' or 'raw', got {alpha_step!r}")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        if schedule not in (None, "cosine"):
            raise ValueError(f"schedule must be None or 'cosine', got {schedule!r}")
        if schedule == "cosine" and not (isinstance(max_steps, int) and max_steps > 0):
            raise ValueError(f"schedule='cosine' needs max_steps (a positive int), got {max_steps!r}")
        if not (isinstance(n_source, int) and n_source > 0):
            raise ValueError(f"n_source must be a positive int, got {n_source!r}")
        if not 0.0 <= alpha_init <= 1.0:
            raise ValueError(f"alpha_init must be in [0, 1], got {alpha_init}")
        if not (lr_alpha >= 0 and math.isfinite(lr_alpha)):
            raise ValueError(f"lr_alpha must be >= 0 (0: alpha frozen, the control run), got {lr_alpha}")
        for name, v in (
            ("lr", lr),
            ("batch_size", batch_size),
            ("target_batch_size", target_batch_size),
        ):
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be positive, got {v}")
        if isinstance(epochs, bool) or not (isinstance(epochs, int) and epochs > 0):
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        if distributed:
            import torch.distributed as dist

            if not (dist.is_available() and dist.is_initialized()):
                raise RuntimeError("distributed=True needs torch.distributed initialised (init_process_group)")
        if groups is not None:
            g = torch.as_tensor(groups, dtype=torch.long)
            if g.shape != (n_source,) or g.min() < 0:
                raise ValueError(f"groups must be (n_source,) = ({n_source},) non-negative ints, got {tuple(g.shape)}")
        self.backbone, self.source_head, self.target_head = backbone, source_head, target_head
        self.n_source, self.groups, self.alpha_init = n_source, groups, alpha_init
        self.lr, self.lr_alpha, self.alpha_step = lr, lr_alpha, alpha_step
        self.optimizer, self.weight_decay, self.schedule, self.max_steps = optimizer, weight_decay, schedule, max_steps
        self.batch_size, self.target_batch_size, self.epochs = batch_size, target_batch_size, epochs
        self.device, self.random_state, self.verbose, self.distributed = device, random_state, verbose, distributed

    # -- state ---------------------------------------------------------------------------------------
    def _setup(self) -> None:
        """Builds the training state once (networks on the device, alpha, optimisers, batch order)."""
        if "_state_ready" in self.__dict__:
            return
        device = self._device()
        self._dist, self._world = False, 1
        if self.distributed:
            import torch.distributed as dist

            self._dist, self._world = True, dist.get_world_size()
        self._shared = self.source_head is self.target_head
        self._source_net = _Net(self.backbone, self.source_head).to(device)
        self._target_net = _Net(self.backbone, self.target_head).to(device)
        if self.groups is not None:
            self._groups = torch.as_tensor(self.groups, dtype=torch.long).to(device)
            n_alpha = int(self._groups.max()) + 1
        else:
            self._groups, n_alpha = None, self.n_source
        self.alpha_ = torch.full((n_alpha,), float(self.alpha_init), dtype=torch.float32, device=device)
        self.source_values_ = torch.zeros(self.n_source, dtype=torch.float64, device=device)
        # theta = backbone (+ the head in shared mode); phi_s steps with theta on the source
        # theta: the trainable shared parameters (frozen ones get no target gradient and no step)
        self._theta = {n: p for n, p in self.backbone.named_parameters(prefix="backbone") if p.requires_grad}
        if self._shared:
            self._theta.update((n, p) for n, p in self.source_head.named_parameters(prefix="head") if p.requires_grad)
        self._target_head_params = [] if self._shared else [p for p in self.target_head.parameters() if p.requires_grad]
        self._source_params = list(self._source_net.parameters())
        self._opt_source = self._make_opt(self._source_params)
        self._opt_target = None if self._shared else self._make_opt(list(self.target_head.parameters()))
        self.step_ = 0
        self.history_: list[dict] = []
        self._gen = torch_generator(self.random_state, default=0)
        self._perm: Tensor | None = None
        self._pos = 0
        self._tperm: Tensor | None = None
        self._tpos = 0
        n_out = _n_outputs(self.target_head)
        if n_out is not None:
            self.classes_ = np.arange(n_out)
        self._state_ready = True

    @property
    def source_net(self) -> nn.Module:
        """backbone + source head (built on first use)."""
        self._setup()
        return self._source_net

    @property
    def target_net(self) -> nn.Module:
        """backbone + target head (built on first use)."""
        self._setup()
        return self._target_net

    @property
    def shared_head(self) -> bool:
        """True when the source and target heads are one module (the noisy-labels mode)."""
        return self.source_head is self.target_head

    # -- public ------------------------------------------------------------------------------------
    @property
    def example_alpha_(self) -> Tensor:
        """(n_source,) the weight of every source example (its group's weight in group mode)."""
        self._setup()
        return self.alpha_ if self._groups is None else self.alpha_[self._groups]

    def fit(self, source, target, epochs: int | None = None, source_index=None) -> Soseleto:
        """Trains for ``epochs`` (the constructor's) passes over the source. source, target:
        (X, y) or Datasets; X (N, ...) float, y (N,) int. Calling fit again continues where it
        stopped. epochs: deprecated here (pass it to the constructor)."""
        epochs = fit_param_deprecated(self, "epochs", epochs)
        self._setup()
        Xs, ys = _as_xy(source, "source")
        Xt, yt = _as_xy(target, "target")
        if Xs.shape[0] != self.n_source:
            raise ValueError(f"source has {Xs.shape[0]} examples but n_source={self.n_source}")
        _check_label_range(ys, self.source_head, "source")
        _check_label_range(yt, self.target_head, "target")
        if not (isinstance(epochs, int) and epochs > 0):
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        Xs, ys, Xt, yt = (t.to(self._device()) for t in (Xs, ys, Xt, yt))
        steps_per_epoch = math.ceil(self.n_source / self.batch_size)
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            bar = tqdm(total=epochs * steps_per_epoch, desc="SOSELETO", unit="step")
        for _ in range(epochs):
            ls, lt, n = 0.0, 0.0, 0
            while True:
                idx = self._next_source_batch()
                tidx = self._next_target_batch(Xt.shape[0])
                src_loss, tgt_loss = self.step((Xs[idx], ys[idx]), (Xt[tidx], yt[tidx]), idx.to(self._device()))
                ls, lt, n = ls + src_loss, lt + tgt_loss, n + 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        source=f"{src_loss:.3f}", target=f"{tgt_loss:.3f}", alpha=f"{self.alpha_.mean().item():.2f}"
                    )
                if self._perm is None:  # epoch finished
                    break
            self.history_.append(
                {
                    "step": self.step_,
                    "source_loss": ls / n,
                    "target_loss": lt / n,
                    "alpha_mean": self.alpha_.mean().item(),
                }
            )
        if bar is not None:
            bar.close()
        return self

    def step(self, source_batch, target_batch, index: Tensor) -> tuple[float, float]:
        """One SOSELETO step. source_batch: (X (B, ...), y (B,)); target_batch: (X, y);
        index: (B,) positions of the source examples in the source set. Returns the mean
        unweighted source loss and the target loss."""
        self._setup()
        self._train_mode()
        lr_scale = self._lr_scale()
        for p in self._source_params:  # = _opt_source.zero_grad(set_to_none=True): free them first
            p.grad = None
        for opt in (self._opt_source, self._opt_target):
            if opt is not None:
                for g in opt.param_groups:
                    g["lr"] = self.lr * lr_scale
        # 1. target loss; g = dL_t/dtheta; phi_t steps on L_t (first: its graph is freed before
        #    the capture, which lowers the peak memory; both are taken at the same theta)
        xt, yt = target_batch
        lt = F.cross_entropy(self._target_net(xt), yt)
        tparams = list(self._theta.values()) + self._target_head_params
        grads = torch.autograd.grad(lt, tparams, allow_unused=True)
        grads = [gr if gr is not None else torch.zeros_like(p) for gr, p in zip(grads, tparams)]
        if self._dist:  # every rank sees the mean target gradient
            grads = [self._all_sum(gr) / self._world for gr in grads]
        g_theta = {
            n: (gr if gr is not None else torch.zeros_like(p))
            for (n, p), gr in zip(self._theta.items(), grads[: len(self._theta)])
        }
        if not self._shared:
            self._opt_target.zero_grad(set_to_none=True)
            for p, gr in zip(self._target_head_params, grads[len(self._theta) :]):
                p.grad = gr
            self._opt_target.step()
        # 2. unweighted per-sample source losses, captured
        cap = persample.capture(self._source_net, _ce_per_sample, source_batch)
        # the global batch
        b = self._all_sum(torch.tensor(float(cap.batch_size))).item() if self._dist else float(cap.batch_size)
        # 3. s = Q^T g with column j of Q = dl_j/dtheta / B; alpha step fused with the clip
        s = cap.dot(g_theta) / b
        raw_s = s.detach()
        del g_theta, grads  # the target gradient is not needed any more: free it before step 4
        if self.alpha_step == "normalized":
            rms = (self._all_sum(s.pow(2).sum()) / b).sqrt()
            s = s / rms if rms.item() > 0 else s
            lr_a = self.lr_alpha
        else:
            lr_a = self.lr_alpha * self.lr * lr_scale
        aidx = index if self._groups is None else self._groups[index]
        ops.clip_update_(self.alpha_, aidx, s.float(), float(lr_a))
        # 4. theta and phi_s step on sum_j alpha_j dl_j/dtheta / B (bookkeeping, no second backward)
        weights = self.alpha_.index_select(0, aidx).to(cap.losses.dtype)
        cap.accumulate_grad(weights / b)
        # each source example's share of the step's first-order change of L_t (in-run data Shapley)
        self.source_values_.index_add_(
            0, index.to(self.source_values_.device), -(self.lr * lr_scale) * (weights * raw_s).double()
        )
        if self._dist:  # the weighted source gradient summed over the shards
            for p in self._source_net.parameters():
                if p.grad is not None:
                    p.grad = self._all_sum(p.grad)
        self._opt_source.step()
        self.step_ += 1
        return (self._all_sum(cap.losses.sum()) / b).item(), lt.item()

    def _all_sum(self, t: Tensor) -> Tensor:
        if self._dist:
            import torch.distributed as dist

            t = t.clone()
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    @torch.no_grad()
    def _proba(self, X) -> Tensor:
        self._check_is_fitted()
        X = as_tensor(X, "X", finite=False).to(self._device())
        self._target_net.eval()
        return torch.softmax(self._target_net(X), 1)

    def predict_proba(self, X):
        """X (N, ...) -> (N, C) class probabilities of the target head."""
        return like_input(self._proba(X), X)

    def predict(self, X):
        """X (N, ...) -> (N,) target-head predictions."""
        return like_input(self._proba(X).argmax(1), X)

    def score(self, X, y, sample_weight=None) -> float:
        """Target-head (weighted) accuracy on (X (N, ...), y (N,))."""
        hit = (to_numpy(self.predict(X)) == to_numpy(y)).astype(np.float64)
        w = np.ones_like(hit) if sample_weight is None else to_numpy(sample_weight).astype(np.float64)
        return float((w * hit).sum() / w.sum())

    # -- state ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly: modules, optimisers, alpha, step, and
        the batch order (generator state, current permutations and positions)."""
        self._setup()
        return {
            "source_net": self.source_net.state_dict(),
            "target_net": self.target_net.state_dict(),
            "opt_source": self._opt_source.state_dict(),
            "opt_target": None if self._opt_target is None else self._opt_target.state_dict(),
            "alpha": self.alpha_.clone(),
            "source_values": self.source_values_.clone(),
            "step": self.step_,
            "history": copy.deepcopy(self.history_),
            "gen": self._gen.get_state(),
            "perm": self._perm,
            "pos": self._pos,
            "tperm": self._tperm,
            "tpos": self._tpos,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores the state of ``state_dict()`` (training then continues exactly)."""
        self._setup()
        self.source_net.load_state_dict(state["source_net"])
        self.target_net.load_state_dict(state["target_net"])
        self._opt_source.load_state_dict(state["opt_source"])
        if self._opt_target is not None:
            self._opt_target.load_state_dict(state["opt_target"])
        self.alpha_.copy_(state["alpha"])
        if "source_values" in state:
            self.source_values_.copy_(state["source_values"])
        self.step_, self.history_ = state["step"], copy.deepcopy(state["history"])
        self._gen.set_state(state["gen"])
        self._perm, self._pos, self._tperm, self._tpos = state["perm"], state["pos"], state["tperm"], state["tpos"]

    # -- internals -----------------------------------------------------------------------------------
    def _make_opt(self, params):
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)

    def _train_mode(self) -> None:
        """source_net.train(); target_net.train(), which set the flag of every submodule through
        nn.Module.__setattr__ (slower than a small model's layer): called only for a net where
        some module is not in training mode. target_net's backbone is source_net's, and so is its
        head in shared mode."""
        for net in (self._source_net,) if self._shared else (self._source_net, self.target_head):
            if not all(m.training for m in net.modules()):
                net.train()
        self._target_net.training = True

    def _lr_scale(self) -> float:
        if self.schedule != "cosine":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(self.step_, self.max_steps) / self.max_steps))

    def _next_source_batch(self) -> Tensor:
        if self._perm is None:
            self._perm, self._pos = torch.randperm(self.n_source, generator=self._gen), 0
        idx = self._perm[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        if self._pos >= self.n_source:
            self._perm = None
        return idx

    def _next_target_batch(self, n: int) -> Tensor:
        if self._tperm is None or self._tpos >= n:
            self._tperm, self._tpos = torch.randperm(n, generator=self._gen), 0
        idx = self._tperm[self._tpos : self._tpos + self.target_batch_size]
        self._tpos += self.target_batch_size
        return idx


def _n_outputs(head: nn.Module) -> int | None:
    """Classes of a classifier head: out_features of its last module that has one (None if none)."""
    n = None
    for m in head.modules():
        if isinstance(getattr(m, "out_features", None), int):
            n = m.out_features
    return n


def _check_label_range(y: Tensor, head: nn.Module, name: str) -> None:
    n = _n_outputs(head)
    if n is not None and y.numel() and int(y.max()) >= n:
        raise ValueError(
            f"{name}: label {int(y.max())} is out of range: the {name} head has {n} outputs, "
            f"so labels must be in [0, {n - 1}]"
        )


def _ce_per_sample(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y, reduction="none")
