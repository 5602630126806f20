"""Training, selection and evaluation of CNNs on small image targets, shared by the digit-domain
experiments: every target-side method (target only, fine-tuning, SOSELETO + fine-tuning) goes
through the same loop, candidates and validation rule, so differences come from the starting
network, not from the recipe.

Validation rule: a candidate's score is (accuracy, -mean loss) on the validation split; the
loss breaks the ties that a 5-image validation split makes common.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import Dataset

__all__ = [
    "augment",
    "evaluate",
    "features",
    "linear_probe",
    "select",
    "train_steps",
    "tune_target",
    "warm_head",
]


def augment(X: Tensor, gen: torch.Generator, shift: float = 2.0, degrees: float = 10.0) -> Tensor:
    """Random translations (up to `shift` pixels each way) and rotations (up to `degrees`) of
    images X (N, C, H, W), border pixels repeated; one transform per image."""
    n, _, h, w = X.shape
    u = torch.rand(n, 3, generator=gen) * 2 - 1
    t = u[:, 0] * math.radians(degrees)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = (
        t.cos(),
        -t.sin(),
        t.sin(),
        t.cos(),
    )
    theta[:, 0, 2], theta[:, 1, 2] = u[:, 1] * 2 * shift / w, u[:, 2] * 2 * shift / h
    grid = F.affine_grid(theta.to(X.device, X.dtype), list(X.shape), align_corners=False)
    return F.grid_sample(X, grid, align_corners=False, padding_mode="border")


def train_steps(
    net: nn.Module,
    data: Dataset,
    steps: int,
    lr: float,
    *,
    batch_size: int = 64,
    aug: bool = False,
    seed: int = 0,
    params=None,
    checkpoints=(),
    loss_fn=None,
) -> dict[int, dict]:
    """Adam on the mean cross-entropy for `steps` minibatch steps (reshuffled each pass; a
    target smaller than batch_size is one full batch). params: what trains (default all, a
    parameter with requires_grad=False stays fixed). loss_fn(net, x (B, ...), y (B,)) -> scalar:
    another training loss (a penalty added to the cross-entropy, L2-SP or LwF); default the mean
    cross-entropy of net(x). Returns {step: state_dict copy} for each step in `checkpoints` (the
    final step always)."""
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(params if params is not None else net.parameters(), lr=lr)
    if loss_fn is None:

        def loss_fn(m, xb, yb):
            return F.cross_entropy(m(xb), yb)

    n = len(data)
    keep = sorted({int(c) for c in checkpoints if 0 < c <= steps} | {steps})
    saved, perm, pos = {}, torch.randperm(n, generator=gen), 0
    net.train()
    for step in range(1, steps + 1):
        if pos >= n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + batch_size].to(data.X.device)
        pos += batch_size
        x = data.X[idx]
        if aug:
            x = augment(x, gen)
        opt.zero_grad(set_to_none=True)
        loss_fn(net, x, data.y[idx]).backward()
        opt.step()
        if step in keep:
            saved[step] = copy.deepcopy(net.state_dict())
    return saved


@torch.no_grad()
def evaluate(net: nn.Module, data: Dataset, batch_size: int = 500) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of `net` on `data` (eval mode, in batches)."""
    net.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(data), batch_size):
        out = net(data.X[i : i + batch_size])
        y = data.y[i : i + batch_size]
        correct += int((out.argmax(1) == y).sum())
        loss += float(F.cross_entropy(out, y, reduction="sum"))
    return correct / len(data), loss / len(data)


def select(candidates: list[tuple[dict, nn.Module]], val: Dataset) -> tuple[dict, nn.Module, tuple[float, float]]:
    """The candidate (setting, net) with the best (validation accuracy, -validation loss); ties
    after both go to the earlier candidate. Returns (setting, net, (val accuracy, val loss))."""
    best = None
    for k, (setting, net) in enumerate(candidates):
        acc, loss = evaluate(net, val)
        key = (-acc, loss, k)
        if best is None or key < best[0]:
            best = (key, setting, net, (acc, loss))
    return best[1], best[2], best[3]


def tune_target(
    make_net,
    train: Dataset,
    val: Dataset,
    seed: int,
    *,
    lrs=(1e-3, 3e-3),
    augs=(False, True),
    checkpoints=(150, 400),
    head_warmup: int = 0,
    loss_fn=None,
) -> tuple[dict, nn.Module, tuple[float, float]]:
    """Trains make_net() on the labelled target for each lr x augmentation, keeps the networks
    at the step checkpoints, and returns the best on `val` (see ``select``). head_warmup > 0:
    first that many steps of the last module alone (lr 1e-2, the linear probe before
    fine-tuning of Kumar et al. 2022; see ``warm_head``), then the whole network (its parameters
    with requires_grad=False stay fixed). loss_fn: the training loss (see ``train_steps``)."""
    candidates = []
    for aug in augs:
        for lr in lrs:
            torch.manual_seed(seed)
            net = make_net()
            if head_warmup:
                warm_head(net, train, head_warmup, seed)
            saved = train_steps(
                net,
                train,
                max(checkpoints),
                lr,
                aug=aug,
                seed=seed,
                checkpoints=checkpoints,
                loss_fn=loss_fn,
            )
            for step, state in saved.items():
                m = copy.deepcopy(net)
                m.load_state_dict(state)
                candidates.append(
                    (
                        {
                            "lr": lr,
                            "augment": aug,
                            "steps": step,
                            "head_warmup": head_warmup,
                        },
                        m,
                    )
                )
    return select(candidates, val)


def warm_head(net: nn.Sequential, train: Dataset, steps: int, seed: int, lr: float = 1e-2) -> None:
    """Trains net[-1] alone (Adam, full batch, `steps` steps) on the features net[:-1] gives the
    un-augmented training images, computed once."""
    feats = features(net[:-1], train.X)
    head = net[-1]
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    head.train()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(head(feats), train.y).backward()
        opt.step()


@torch.no_grad()
def features(backbone: nn.Module, X: Tensor, batch_size: int = 500) -> Tensor:
    """(N, D) outputs of `backbone` in eval mode, in batches."""
    backbone.eval()
    return torch.cat([backbone(X[i : i + batch_size]) for i in range(0, len(X), batch_size)])


def linear_probe(backbone: nn.Module, train: Dataset, test: Dataset, C: float = 1.0) -> float:
    """Test accuracy of a multinomial logistic regression (scikit-learn, L2, C) on the frozen,
    standardised features of `backbone`: how much of the target task the representation keeps
    linearly separable from the few labelled examples."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    ftr, fte = (
        features(backbone, train.X).cpu().numpy(),
        features(backbone, test.X).cpu().numpy(),
    )
    scaler = StandardScaler().fit(ftr)
    clf = LogisticRegression(C=C, max_iter=2000).fit(scaler.transform(ftr), train.y.cpu().numpy())
    return float(np.mean(clf.predict(scaler.transform(fte)) == test.y.cpu().numpy()))
