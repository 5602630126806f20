"""How the dataserver experiments train one network: rotation pre-training on what a method
selects, fine-tuning on the client's labels with hyper-parameters chosen on its validation split,
and the classifier of the Ngiam et al. (2018) baseline. One copy for every store (8x8 grey digits,
32x32x3 digit domains); the network comes from the recipe's ``make_net``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import Dataset
from ..selection.dataserver import Store
from ..selfsup import train_rotation

__all__ = ["BodyHead", "Recipe", "accuracy", "fine_tune", "linear_probe", "ngiam_selection", "pretrain"]


class BodyHead(nn.Module):
    """body (inputs -> (B, feature_dim)) followed by a linear head (feature_dim -> n_outputs).
    ``features(x)`` gives the body's (B, feature_dim), ``forward(x)`` the head's (B, n_outputs)."""

    def __init__(self, body: nn.Module, feature_dim: int, n_outputs: int):
        super().__init__()
        self.body = body
        self.head = nn.Linear(feature_dim, n_outputs)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


@dataclass(frozen=True)
class Recipe:
    """The training settings shared by every method of one experiment.

    make_net(n_outputs) returns a fresh network with a ``head`` attribute (an nn.Linear) that
    fine-tuning replaces. Pre-training: rotation prediction, SGD (momentum 0.9) at pretrain_lr,
    pretrain_epochs passes over the selection, 64 images (x 4 rotations) a step. Fine-tuning:
    SGD (momentum 0.9), a new head, batches of batch_size labelled images; every lr of
    fine_tune_lrs is trained for max(fine_tune_steps) steps and evaluated at each count of
    fine_tune_steps; the (lr, steps) with the best validation accuracy (the first on ties) gives
    the test accuracy. Ngiam's source classifier: ngiam_steps SGD steps of 64 at ngiam_lr."""

    make_net: Callable[[int], nn.Module]
    pretrain_epochs: int = 4
    pretrain_lr: float = 0.05
    fine_tune_lrs: tuple[float, ...] = (0.01, 0.05)
    fine_tune_steps: tuple[int, ...] = (150, 400)
    batch_size: int = 32
    ngiam_steps: int = 300
    ngiam_lr: float = 0.05

    def __post_init__(self):
        if not callable(self.make_net):
            raise ValueError("make_net must be a callable n_outputs -> nn.Module")
        if not (isinstance(self.pretrain_epochs, int) and self.pretrain_epochs >= 0):
            raise ValueError(f"pretrain_epochs must be a non-negative int, got {self.pretrain_epochs!r}")
        if not self.fine_tune_lrs or min(self.fine_tune_lrs) <= 0:
            raise ValueError(f"fine_tune_lrs must be positive learning rates, got {self.fine_tune_lrs!r}")
        steps = self.fine_tune_steps
        if not steps or min(steps) < 1 or list(steps) != sorted(set(steps)):
            raise ValueError(f"fine_tune_steps must be increasing positive step counts, got {steps!r}")
        if self.batch_size < 1 or self.ngiam_steps < 1:
            raise ValueError(f"batch_size and ngiam_steps must be >= 1, got {self.batch_size}, {self.ngiam_steps}")


@torch.no_grad()
def accuracy(net: nn.Module, data: Dataset, batch_size: int = 512) -> float:
    """Share of data.X (N, ...) whose argmax of net's outputs equals data.y (N,)."""
    net.eval()
    correct = sum(
        (net(data.X[i : i + batch_size]).argmax(1) == data.y[i : i + batch_size]).sum().item()
        for i in range(0, len(data), batch_size)
    )
    return correct / max(len(data), 1)


def pretrain(recipe: Recipe, X: Tensor | None, seed: int) -> nn.Module:
    """recipe.make_net(4) seeded by `seed`, trained on rotation prediction over X (N, C, H, W)
    for recipe.pretrain_epochs epochs; untrained when X is None or empty (no pre-training)."""
    torch.manual_seed(seed)
    net = recipe.make_net(4)
    if X is not None and len(X) and recipe.pretrain_epochs:
        train_rotation(net, X, epochs=recipe.pretrain_epochs, lr=recipe.pretrain_lr, seed=seed)
    return net


def fine_tune(
    recipe: Recipe, net: nn.Module, tr: Dataset, val: Dataset, test: Dataset, n_classes: int, seed: int
) -> tuple[float, dict]:
    """Whole-network fine-tuning of a copy of `net` with a new n_classes-way head on tr; the
    (lr, steps) of the recipe's grid with the best accuracy on val. Labels in [0, n_classes).
    Returns (test accuracy at that choice, {"lr", "steps", "val_accuracy"})."""
    if not isinstance(getattr(net, "head", None), nn.Linear):
        raise ValueError("net must have a `head` attribute that is an nn.Linear (see Recipe.make_net)")
    best = None
    checkpoints = set(recipe.fine_tune_steps)
    for lr in recipe.fine_tune_lrs:
        m = copy.deepcopy(net)
        torch.manual_seed(seed)
        m.head = nn.Linear(m.head.in_features, n_classes)
        opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9)
        gen = torch.Generator().manual_seed(seed)
        m.train()
        for step in range(1, max(checkpoints) + 1):
            idx = torch.randint(0, len(tr), (recipe.batch_size,), generator=gen)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(tr.X[idx]), tr.y[idx]).backward()
            opt.step()
            if step in checkpoints:
                v = accuracy(m, val)
                if best is None or v > best[0]:
                    best = (v, accuracy(m, test), {"lr": lr, "steps": step, "val_accuracy": v})
                m.train()
    return best[1], best[2]


@torch.no_grad()
def linear_probe(net: nn.Module, tr: Dataset, test: Dataset) -> float:
    """Test accuracy of a logistic regression (scikit-learn, features standardised on tr) on
    net.features(x) (B, F) of tr, evaluated on test: how good the features are before fine-tuning."""
    from sklearn.linear_model import LogisticRegression

    net.eval()
    a = torch.cat([net.features(tr.X[i : i + 512]) for i in range(0, len(tr), 512)]).double().numpy()
    b = torch.cat([net.features(test.X[i : i + 512]) for i in range(0, len(test), 512)]).double().numpy()
    mean, std = a.mean(0), a.std(0) + 1e-8
    clf = LogisticRegression(max_iter=3000).fit((a - mean) / std, tr.y.numpy())
    return float(clf.score((b - mean) / std, test.y.numpy()))


def ngiam_selection(recipe: Recipe, store: Store, target_X: Tensor, budget: int, seed: int) -> np.ndarray:
    """Ngiam et al. (2018): importance weights p_t(y) / p_s(y) over the store's labelled
    examples (labels shared across its labelled datasets), p_t(y) the mean prediction on the
    target images target_X (M, C, H, W) of a classifier trained on them; unlabelled examples get
    none. Samples min(budget, labelled examples) distinct indices; returns them sorted (int64)."""
    X, y = store.all()
    lab = np.flatnonzero(y.numpy() >= 0)
    if lab.size == 0:
        raise ValueError("the Ngiam baseline needs a store with at least one labelled dataset")
    torch.manual_seed(seed)
    clf = recipe.make_net(int(y.max()) + 1)
    opt = torch.optim.SGD(clf.parameters(), lr=recipe.ngiam_lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    Xl, yl = X[lab], y[lab]
    for _ in range(recipe.ngiam_steps):
        idx = torch.randint(0, len(lab), (64,), generator=gen)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(clf(Xl[idx]), yl[idx]).backward()
        opt.step()
    clf.eval()
    with torch.no_grad():
        p_t = torch.cat([torch.softmax(clf(target_X[i : i + 512]), 1) for i in range(0, len(target_X), 512)])
        p_t = p_t.mean(0).numpy()
    p_s = np.bincount(yl.numpy(), minlength=p_t.size) / len(lab)
    w = np.zeros(store.size)
    w[lab] = (p_t / np.maximum(p_s, 1e-12))[yl.numpy()]
    budget = min(budget, int((w > 0).sum()))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(store.size, size=budget, replace=False, p=w / w.sum()))
