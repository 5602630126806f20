"""SOSELETO's experiments on offline data, with the baselines at the same budget.

(a) ``run_synthetic``: the 2-D set of Litany & Freedman 2018, 500 source points with 20% flipped
    labels, 50 clean target points; alpha's AUROC for clean vs noisy and a plot of alpha over the points.
(b) ``run_noisy``: digits, symmetric noise on a source split, a small clean target, a held-out
    test split; Target only / Fine-tuning / SOSELETO / SOSELETO + fine-tuning.
(c) ``run_disjoint``: digits 0-4 (source) -> 5-9 (target) with n_t labelled target examples;
    optionally with the target shifted too (disjoint labels and domains, as SVHN 0-4 -> MNIST 5-9),
    and linear probes of pre-trained vs random features (does the representation transfer?).
(d) ``run_domain``: same 10 labels across a domain shift (an offline stand-in for
    Litany & Freedman 2018's SVHN -> MNIST): clean source digits -> shifted target digits
    (default a 30 degree rotation), n_t labelled target examples; also where alpha puts its weight.

Every method's hyper-parameters are chosen on a validation split carved from the target set;
the test split is only used for the reported accuracy.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from ..data import Dataset, add_label_noise, class_split, load_digits, make_noisy_2d, shift_images, stratified_split
from ..selection import Soseleto

__all__ = ["run_synthetic", "run_noisy", "run_disjoint", "run_domain", "DOMAIN_SHIFTS", "mlp", "train"]


def mlp(in_dim: int, hidden=(128, 64)) -> nn.Sequential:
    """The backbone used by every method: Linear + ReLU layers; output (N, hidden[-1])."""
    layers, d = [], in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    return nn.Sequential(*layers)


def train(
    net: nn.Module, data: Dataset, epochs: int, lr: float, batch_size: int = 32, seed: int = 0, params=None
) -> nn.Module:
    """Plain SGD (momentum 0.9) on the mean cross-entropy; `params` restricts what trains."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(params if params is not None else net.parameters(), lr=lr, momentum=0.9)
    n = len(data)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(data.X[idx]), data.y[idx]).backward()
            opt.step()
    return net


@torch.no_grad()
def accuracy(net: nn.Module, data: Dataset) -> float:
    net.eval()
    return (net(data.X).argmax(1) == data.y).float().mean().item()


def _best(candidates, val: Dataset):
    """candidates: list of (params dict, fitted net) -> the best by validation accuracy."""
    scored = [(accuracy(net, val), k, p, net) for k, (p, net) in enumerate(candidates)]
    scored.sort(key=lambda r: (-r[0], r[1]))
    return scored[0][2], scored[0][3], scored[0][0]


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


# -- the methods ----------------------------------------------------------------------------------
def target_only(tr: Dataset, val: Dataset, in_dim: int, n_classes: int, seed: int, steps: int):
    cands = []
    for lr in (0.02, 0.1):
        _seed_all(seed)
        net = nn.Sequential(mlp(in_dim), nn.Linear(64, n_classes)).to(tr.X.device)
        epochs = max(1, steps // max(1, -(-len(tr) // 32)))
        cands.append(({"lr": lr, "epochs": epochs}, train(net, tr, epochs, lr, seed=seed)))
    return _best(cands, val)


def fine_tune_grid(net: nn.Module, tr: Dataset, val: Dataset, seed: int, new_head: int | None = None):
    """Fine-tunes copies of `net` on the target for 100 or 400 SGD steps (lr 0.02, whole-network);
    the best on val. Counted in steps, not epochs, so a 20-example target gets the same number of
    updates as a 100-example one."""
    cands = []
    per_epoch = -(-len(tr) // 32)
    for steps in (100, 400):
        m = copy.deepcopy(net)
        if new_head is not None:
            torch.manual_seed(seed)
            m[-1] = nn.Linear(m[-1].in_features, new_head).to(tr.X.device)
        epochs = max(1, steps // per_epoch)
        cands.append(({"ft_steps": steps}, train(m, tr, epochs, lr=0.02, seed=seed)))
    return _best(cands, val)


def _soseleto_grid(
    source: Dataset,
    tgt_tr: Dataset,
    tgt_val: Dataset,
    seed: int,
    n_classes: int,
    shared: bool,
    epochs: int = 30,
    verbose: bool = False,
):
    """SOSELETO with lr_alpha chosen on the target validation split: (model, params, target net)."""
    cands = []
    for lr_alpha in (0.02, 0.1):
        _seed_all(seed)
        backbone, head = mlp(64), nn.Linear(64, n_classes)
        target_head = head if shared else nn.Linear(64, n_classes)
        model = Soseleto(
            backbone,
            head,
            target_head,
            len(source),
            lr=0.05,
            lr_alpha=lr_alpha,
            batch_size=64,
            target_batch_size=min(32, len(tgt_tr)),
            random_state=seed,
            device=source.X.device,
            verbose=verbose,
        )
        model.set_params(epochs=epochs).fit(source, tgt_tr)
        cands.append(({"lr_alpha": lr_alpha, "model": model}, model.target_net))
    p, net, _ = _best(cands, tgt_val)
    return p.pop("model"), p, net


def run_noisy(
    noise: float = 0.4,
    n_target: int = 100,
    seed: int = 0,
    epochs: int = 30,
    kind: str = "symmetric",
    plot: str | None = None,
    device="cpu",
    verbose: bool = False,
) -> dict:
    """Experiment (b). Returns accuracies, alpha's AUROC, the chosen hyper-parameters, seconds;
    `plot`: a PNG of alpha's distribution for clean and flipped source labels."""
    t0 = time.perf_counter()
    digits = load_digits()
    test, target, source = stratified_split(digits, [450, n_target, None], random_state=seed)
    noisy, flipped = add_label_noise(source.y, noise, kind=kind, n_classes=10, random_state=seed)
    source = Dataset(source.X, noisy, flipped)
    n_val = max(10, n_target // 4)
    tgt_val, tgt_tr = stratified_split(target, [n_val, None], random_state=seed + 1)
    source, tgt_tr, tgt_val, test = (d.to(device) for d in (source, tgt_tr, tgt_val, test))
    acc, chosen, pre, _ = _baselines(source, tgt_tr, tgt_val, test, 10, seed, epochs)

    model, p, net = _soseleto_grid(source, tgt_tr, tgt_val, seed, 10, shared=True, epochs=epochs, verbose=verbose)
    acc["soseleto"], chosen["soseleto"] = accuracy(net, test), p
    flipped = source.flipped.cpu()
    auroc = roc_auc_score((~flipped).numpy(), model.alpha_.cpu().numpy())
    net_seq = nn.Sequential(*model.backbone, model.target_head)
    p2, net2, _ = fine_tune_grid(net_seq, tgt_tr, tgt_val, seed)
    acc["soseleto_ft"], chosen["soseleto_ft"] = accuracy(net2, test), p2
    if plot:
        _plot_alpha_hist(
            model.alpha_.cpu().numpy(),
            flipped.numpy(),
            auroc,
            f"digits, {int(noise * 100)}% {kind} noise, {n_target} clean target examples",
            plot,
        )
    return {
        "experiment": "noisy",
        "noise": noise,
        "kind": kind,
        "n_target": n_target,
        "seed": seed,
        "epochs": epochs,
        "accuracy": acc,
        "auroc": auroc,
        "chosen": chosen,
        "alpha_mean_clean": model.alpha_.cpu()[~flipped].mean().item(),
        "alpha_mean_noisy": model.alpha_.cpu()[flipped].mean().item(),
        "seconds": time.perf_counter() - t0,
    }


def run_disjoint(
    n_target: int = 25, seed: int = 0, epochs: int = 30, shift: str | None = None, device="cpu", verbose: bool = False
) -> dict:
    """Experiment (c): digits 0-4 (source) -> 5-9 (target) with n_target labelled target examples
    in all. With `shift` (a DOMAIN_SHIFTS name) the labels are disjoint AND the domains differ, as
    in Litany & Freedman 2018's SVHN 0-4 -> MNIST 5-9: the digits are split in halves first, the source is the
    clean 0-4 of one half, the target the shifted 5-9 of the other."""
    if shift is not None and shift not in DOMAIN_SHIFTS:
        raise ValueError(f"shift must be None or one of {sorted(DOMAIN_SHIFTS)}, got {shift!r}")
    t0 = time.perf_counter()
    if shift is None:
        digits = load_digits()
        source = class_split(digits, range(5))
        target_all = class_split(digits, range(5, 10))
    else:
        digits = load_digits(images=True)
        src, tgt = stratified_split(digits, [len(digits) // 2, None], random_state=seed)
        tgt = class_split(tgt, range(5, 10))
        tgt = Dataset(DOMAIN_SHIFTS[shift](tgt.X, seed + 1000).reshape(len(tgt), -1).contiguous(), tgt.y)
        src = class_split(src, range(5))
        source, target_all = Dataset(src.X.reshape(len(src), -1).contiguous(), src.y), tgt
    test, target = stratified_split(target_all, [400, n_target], random_state=seed)
    n_val = max(5, n_target // 5)
    tgt_val, tgt_tr = stratified_split(target, [n_val, None], random_state=seed + 1)
    source, tgt_tr, tgt_val, test = (d.to(device) for d in (source, tgt_tr, tgt_val, test))
    acc, chosen, pre, _ = _baselines(source, tgt_tr, tgt_val, test, 5, seed, epochs, new_head=5)
    _seed_all(seed + 7)
    probe = {
        "pretrained": _linear_probe(pre, tgt_tr, test, seed),
        "random": _linear_probe(nn.Sequential(mlp(64), nn.Linear(64, 5)).to(device), tgt_tr, test, seed),
    }

    model, p, net = _soseleto_grid(source, tgt_tr, tgt_val, seed, 5, shared=False, epochs=epochs, verbose=verbose)
    acc["soseleto"], chosen["soseleto"] = accuracy(net, test), p
    net_seq = nn.Sequential(*model.backbone, model.target_head)
    p2, net2, _ = fine_tune_grid(net_seq, tgt_tr, tgt_val, seed)
    acc["soseleto_ft"], chosen["soseleto_ft"] = accuracy(net2, test), p2
    return {
        "experiment": "disjoint",
        "shift": shift,
        "n_target": n_target,
        "seed": seed,
        "epochs": epochs,
        "accuracy": acc,
        "linear_probe": probe,
        "chosen": chosen,
        "alpha_mean": model.alpha_.mean().item(),
        "seconds": time.perf_counter() - t0,
    }


# name -> (X (N, 1, 8, 8), seed) -> shifted X; the same shifts as the DANN experiment's
DOMAIN_SHIFTS = {
    "rotation": lambda X, rs: shift_images(X, "rotation", 30.0),
    "blur_noise": lambda X, rs: shift_images(shift_images(X, "blur", 1.0), "noise", 0.2, random_state=rs),
}


def _slant(X: torch.Tensor) -> torch.Tensor:
    """(N,) angle (radians, in [-pi/2, pi/2)) between each image's principal axis (from its
    second moments) and the vertical; X (N, 1, H, W) with non-negative intensities."""
    n, _, h, w = X.shape
    m = X.reshape(n, h, w).double().clamp_min(0)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=m.dtype), torch.arange(w, dtype=m.dtype), indexing="ij")
    tot = m.sum((1, 2)).clamp_min(1e-9)
    cx, cy = (m * xx).sum((1, 2)) / tot, (m * yy).sum((1, 2)) / tot
    dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
    mxx, myy, mxy = ((m * dx * dx).sum((1, 2)) / tot, (m * dy * dy).sum((1, 2)) / tot, (m * dx * dy).sum((1, 2)) / tot)
    axis = 0.5 * torch.atan2(2 * mxy, mxx - myy)  # from the horizontal, in (-pi/2, pi/2]
    return (torch.remainder(axis, math.pi) - math.pi / 2).float()


def run_domain(
    n_target: int = 20, seed: int = 0, epochs: int = 30, shift: str = "rotation", device="cpu", verbose: bool = False
) -> dict:
    """Experiment (d): same label space across a domain shift. The digits are split first
    (stratified halves) so no target image is a source image; the source half stays clean and
    labelled (10 classes), the target half is shifted (DOMAIN_SHIFTS[shift]) and split into a
    400-image test set and n_target labelled examples, of which max(5, n_target // 5) are the
    validation split. SOSELETO's main rows ("soseleto", "soseleto_ft") use separate source / target
    heads (Litany & Freedman 2018's phi_s, phi_t): the labels are the same, but the classifier of source
    features is not the classifier of shifted features, and a shared head leaves the target
    nothing to train but alpha. The shared-head variant ("soseleto_shared", "soseleto_shared_ft")
    is reported too."""
    if shift not in DOMAIN_SHIFTS:
        raise ValueError(f"shift must be one of {sorted(DOMAIN_SHIFTS)}, got {shift!r}")
    t0 = time.perf_counter()
    digits = load_digits(images=True)
    src, tgt = stratified_split(digits, [len(digits) // 2, None], random_state=seed)
    tgt = Dataset(DOMAIN_SHIFTS[shift](tgt.X, seed + 1000), tgt.y)
    test, target = stratified_split(tgt, [400, n_target], random_state=seed + 1)
    n_val = max(5, n_target // 5)
    tgt_val, tgt_tr = stratified_split(target, [n_val, None], random_state=seed + 2)
    src_img = src.X  # kept as images for the slant measure below
    flat = lambda d: Dataset(d.X.reshape(len(d), -1).contiguous(), d.y)  # noqa: E731
    source, test, tgt_val, tgt_tr = (flat(d).to(device) for d in (src, test, tgt_val, tgt_tr))
    acc, chosen, pre, net_to = _baselines(source, tgt_tr, tgt_val, test, 10, seed, epochs)
    source_only = accuracy(pre, test)

    alphas = {}
    for key, shared in (("soseleto", False), ("soseleto_shared", True)):
        model, p, net = _soseleto_grid(source, tgt_tr, tgt_val, seed, 10, shared=shared, epochs=epochs, verbose=verbose)
        acc[key], chosen[key] = accuracy(net, test), p
        net_seq = nn.Sequential(*model.backbone, model.target_head)
        p2, net2, _ = fine_tune_grid(net_seq, tgt_tr, tgt_val, seed)
        acc[key + "_ft"], chosen[key + "_ft"] = accuracy(net2, test), p2
        alphas[key] = model.alpha_.cpu().numpy()

    # where alpha puts its weight: per source class, and its Spearman correlation with two cheap
    # per-example measures of how target-like a source example is, both independent of alpha:
    # (i) the target-only net's probability of the example's label (does a model of the labelled
    # target examples recognise it?); (ii) for the rotation, the slant in the direction of the
    # shift, minus its class mean
    from scipy.stats import spearmanr

    ys = source.y.cpu().numpy()
    with torch.no_grad():
        net_to.eval()
        p_true = (
            torch.softmax(net_to(source.X), 1)[torch.arange(len(source), device=source.y.device), source.y]
            .cpu()
            .numpy()
        )
    slant = None
    if shift == "rotation":
        s0, s1 = _slant(src_img), _slant(DOMAIN_SHIFTS[shift](src_img, 0))
        direction = float(torch.sign(torch.remainder(s1 - s0 + np.pi / 2, np.pi) - np.pi / 2).mean())
        slant = np.sign(direction) * s0.numpy()
        for c in range(10):  # within-class: classes differ in mean slant
            slant[ys == c] -= slant[ys == c].mean()
    out = {
        "experiment": "domain",
        "shift": shift,
        "n_target": n_target,
        "seed": seed,
        "epochs": epochs,
        "accuracy": acc,
        "chosen": chosen,
        "source_only": source_only,
        "alpha": {},
    }
    for key, a in alphas.items():
        const = bool(a.std() == 0)
        out["alpha"][key] = {
            "mean": float(a.mean()),
            "frac_below_0.5": float((a < 0.5).mean()),
            "mean_per_class": [float(a[ys == c].mean()) for c in range(10)],
            "spearman_target_p_true": None if const else float(spearmanr(a, p_true).statistic),
            "spearman_slant": None if (const or slant is None) else float(spearmanr(a, slant).statistic),
        }
    out["seconds"] = time.perf_counter() - t0
    return out


def _linear_probe(net: nn.Sequential, tr: Dataset, test: Dataset, seed: int, steps: int = 400) -> float:
    """Test accuracy of a new last layer trained (lr 0.1, `steps` SGD steps) on the frozen
    features of net[:-1]: how much of the target task the representation keeps linearly."""
    m = copy.deepcopy(net)
    torch.manual_seed(seed)
    m[-1] = nn.Linear(m[-1].in_features, int(test.y.max()) + 1).to(tr.X.device)
    per_epoch = -(-len(tr) // 32)
    train(m, tr, max(1, steps // per_epoch), lr=0.1, seed=seed, params=m[-1].parameters())
    return accuracy(m, test)


def _plot_alpha_hist(alpha, flipped, auroc: float, title: str, path: str) -> None:
    from .._plots import subplots

    fig, ax = subplots(figsize=(6, 3.6))
    bins = np.linspace(0, 1, 26)
    ax.hist(alpha[~flipped], bins=bins, alpha=0.7, label=f"clean labels ({(~flipped).sum()})")
    ax.hist(alpha[flipped], bins=bins, alpha=0.7, label=f"flipped labels ({flipped.sum()})")
    ax.set(xlabel="SOSELETO weight alpha", ylabel="source examples", title=f"{title}\nAUROC {auroc:.3f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _baselines(
    source: Dataset,
    tgt_tr: Dataset,
    tgt_val: Dataset,
    test: Dataset,
    n_classes: int,
    seed: int,
    epochs: int,
    new_head: int | None = None,
):
    """The rows every experiment shares: Target only, and Fine-tuning of a network pre-trained on
    the whole (unweighted) source. Returns ({method: test accuracy}, {method: chosen setting},
    the pre-trained network, the target-only network)."""
    steps = epochs * -(-len(source) // 64)
    acc, chosen = {}, {}
    p, net_to, _ = target_only(tgt_tr, tgt_val, 64, n_classes, seed, steps)
    acc["target_only"], chosen["target_only"] = accuracy(net_to, test), p
    _seed_all(seed)
    pre = train(
        nn.Sequential(mlp(64), nn.Linear(64, n_classes)).to(source.X.device),
        source,
        epochs,
        lr=0.05,
        batch_size=64,
        seed=seed,
    )
    p, net, _ = fine_tune_grid(pre, tgt_tr, tgt_val, seed, new_head=new_head)
    acc["fine_tuning"], chosen["fine_tuning"] = accuracy(net, test), p
    return acc, chosen, pre, net_to


def run_synthetic(
    seed: int = 0, epochs: int = 60, plot: str | None = None, device="cpu", verbose: bool = False
) -> dict:
    """Experiment (a): alpha's clean-vs-noisy AUROC on the 2-D set, optionally a PNG of alpha."""
    t0 = time.perf_counter()
    source, target = make_noisy_2d(random_state=seed)
    _seed_all(seed)
    backbone = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh())
    head = nn.Linear(64, 2)
    model = Soseleto(
        backbone,
        head,
        head,
        len(source),
        lr=0.1,
        lr_alpha=0.05,
        batch_size=32,
        target_batch_size=25,
        random_state=seed,
        device=device,
        verbose=verbose,
    )
    model.set_params(epochs=epochs).fit(source, target)
    alpha = model.alpha_.cpu().numpy()
    auroc = roc_auc_score((~source.flipped).numpy(), alpha)
    if plot:
        from .._plots import subplots

        fig, ax = subplots(1, 2, figsize=(10, 4.4))
        X, fl = source.X.numpy(), source.flipped.numpy()
        xs = np.linspace(-1, 1, 200)
        for a in ax:
            a.plot(xs, 0.5 * np.sin(np.pi * xs), "k--", lw=1)
            a.set(xlim=(-1, 1), ylim=(-1, 1), aspect="equal")
        ax[0].scatter(X[~fl, 0], X[~fl, 1], c=source.y.numpy()[~fl], cmap="coolwarm", s=12, label="clean")
        ax[0].scatter(X[fl, 0], X[fl, 1], c=source.y.numpy()[fl], cmap="coolwarm", s=30, marker="x", label="flipped")
        ax[0].set_title("source labels (x = flipped)")
        sc = ax[1].scatter(X[:, 0], X[:, 1], c=alpha, cmap="viridis", s=14, vmin=0, vmax=1)
        ax[1].scatter(X[fl, 0], X[fl, 1], facecolors="none", edgecolors="r", s=40, lw=0.8)
        ax[1].set_title(f"SOSELETO alpha (red ring = flipped), AUROC {auroc:.3f}")
        fig.colorbar(sc, ax=ax[1], fraction=0.046)
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
    return {
        "experiment": "synthetic",
        "seed": seed,
        "epochs": epochs,
        "auroc": auroc,
        "target_accuracy": model.score(target.X, target.y),
        "seconds": time.perf_counter() - t0,
    }
