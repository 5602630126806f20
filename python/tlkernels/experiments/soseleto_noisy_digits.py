"""SOSELETO (b) on rendered digits: SynDigits 0-9 with symmetric label noise as the source, a few
clean SynDigits (same domain, same labels) or MNIST images (printed -> handwritten) as the target,
on the ``digits_cnn`` backbone.

Rows, target-side ones chosen from the same grid on a validation split carved from the clean
target: target only, fine-tuning (pre-trained on the noisy source), SOSELETO (shared head: the
target moves alpha only), SOSELETO + fine-tuning, and the alpha-frozen control of both. alpha's
AUROC for clean vs flipped source labels says whether it finds the noise.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from ..backbones import digits_cnn
from ..data import Dataset, add_label_noise, load_mnist, make_syndigits, standardize_images, stratified_split
from ._clock import PhaseClock
from .cnn_training import evaluate, train_steps, tune_target
from .soseleto_digits import FROZEN_LR_ALPHA, TARGET_GRID, fit_soseleto

__all__ = ["run_noisy_digits"]


def _std(d: Dataset) -> Dataset:
    return Dataset(standardize_images(d.X), d.y, d.flipped)


def run_noisy_digits(seed: int = 0, *, noise: float = 0.4, n_target: int = 100, n_source: int = 5000,
                     n_test: int = 1500, source_epochs: int = 3, widths=(16, 32, 64), features: int = 128,
                     lr: float = 1e-3,
                     lr_alphas=(0.1, 0.3), target_grid: dict | None = None, target_domain: str = "syndigits",
                     device="cpu", cache_dir=None) -> dict:  # fmt: skip
    """One seed. Source: make_syndigits(n_source, seed 0) with round(noise * n_source) labels
    flipped (symmetric, by `seed`); target: n_target clean images of a second rendering (seed
    1; n_target // 4 of them the validation split), test: n_test of a third (seed 2).
    target_domain="mnist": the target and the test set are disjoint stratified draws (by `seed`)
    from MNIST's 5,000 images instead. target_grid: tune_target's grid (default
    soseleto_digits.TARGET_GRID).
    Returns {"accuracy": {...}, "auroc": {soseleto}, "alpha_mean_clean", "alpha_mean_noisy",
    "chosen", "seconds", "cpu_seconds", ...}."""
    t0, c0 = time.perf_counter(), time.process_time()
    clock = PhaseClock()
    with clock("data"):
        src = make_syndigits(n_source, range(10), "syn", 0, cache_dir=cache_dir)
        noisy, flipped = add_label_noise(src.y, noise, n_classes=10, random_state=seed)
        source = _std(Dataset(src.X, noisy, flipped)).to(device)
        if target_domain == "syndigits":
            pool = make_syndigits(max(n_target * 4, 500), range(10), "syn", 1, cache_dir=cache_dir)
            (target,) = stratified_split(pool, [n_target], random_state=seed)
            test = _std(make_syndigits(n_test, range(10), "syn", 2, cache_dir=cache_dir)).to(device)
        elif target_domain == "mnist":
            target, test = stratified_split(load_mnist(), [n_target, n_test], random_state=seed)
            test = _std(test).to(device)
        else:
            raise ValueError(f"target_domain must be 'syndigits' or 'mnist', got {target_domain!r}")
        val, tr = (d.to(device) for d in stratified_split(_std(target), [n_target // 4, None], random_state=seed + 1))
    d = int(features)
    grid = dict(TARGET_GRID if target_grid is None else target_grid)
    acc, chosen = {}, {}

    def record(name: str, setting: dict, net: nn.Module) -> None:
        acc[name], chosen[name] = evaluate(net, test)[0], setting

    with clock("target_only"):
        s, net, _ = tune_target(lambda: nn.Sequential(digits_cnn(widths=widths, features=d), nn.Linear(d, 10)).to(device), tr,
                                val, seed, **grid)  # fmt: skip
    record("target_only", s, net)
    torch.manual_seed(seed)
    pre = nn.Sequential(digits_cnn(widths=widths, features=d), nn.Linear(d, 10)).to(device)
    with clock("pretrain"):
        train_steps(pre, source, source_epochs * math.ceil(n_source / 64), lr, seed=seed)
    record("source_only", {}, pre)
    with clock("fine_tuning"):
        s, net, _ = tune_target(lambda: copy.deepcopy(pre), tr, val, seed, **grid)
    record("fine_tuning", s, net)

    def soseleto(lr_alpha: float):
        torch.manual_seed(seed)  # the pre-trained network's initialisation
        backbone, head = digits_cnn(widths=widths, features=d), nn.Linear(d, 10)
        return fit_soseleto(backbone, head, head, source, tr, epochs=source_epochs, lr=lr, lr_alpha=lr_alpha,
                            optimizer="adam", batch_size=64, target_batch_size=min(64, len(tr)), random_state=seed,
                            device=device)  # fmt: skip

    with clock("soseleto"):
        runs = [(a, soseleto(a)) for a in lr_alphas]
    scores = [evaluate(m.target_net, val) for _, m in runs]
    best = min(range(len(runs)), key=lambda k: (-scores[k][0], scores[k][1], k))
    with clock("soseleto_frozen"):
        frozen = soseleto(FROZEN_LR_ALPHA)
    auroc, alpha_clean, alpha_noisy = {}, {}, {}
    fl = source.flipped.cpu().numpy()
    for name, (lr_alpha, m) in (("soseleto", runs[best]), ("soseleto_frozen", (0.0, frozen))):
        net = nn.Sequential(m.backbone, m.target_head)
        record(name, {"lr_alpha": lr_alpha}, net)
        with clock(name + "_ft"):
            s, net_ft, _ = tune_target(lambda net=net: copy.deepcopy(net), tr, val, seed, **grid)
        record(name + "_ft", s, net_ft)
        a = m.alpha_.detach().cpu().numpy()
        alpha_clean[name], alpha_noisy[name] = float(a[~fl].mean()), float(a[fl].mean())
        auroc[name] = None if a.std() == 0 else float(roc_auc_score(~fl, a))
    return {"experiment": "noisy-digits", "source": f"SynDigits 0-9, {noise:.0%} symmetric noise",
            "target": "clean SynDigits 0-9" if target_domain == "syndigits" else "MNIST 0-9", "seed": seed, "noise": noise, "n_source": n_source,
            "n_target": n_target, "n_train": len(tr), "n_val": len(val), "n_test": n_test,
            "source_epochs": source_epochs, "accuracy": acc, "chosen": chosen, "auroc": auroc,
            "alpha_mean_clean": alpha_clean, "alpha_mean_noisy": alpha_noisy,
            "all_lr_alpha_auroc": {f"{a:g}": float(roc_auc_score(~fl, m.alpha_.cpu().numpy())) for a, m in runs},
            "seconds": {**clock.seconds, "total": time.perf_counter() - t0},
            "cpu_seconds": {**clock.cpu_seconds, "total": time.process_time() - c0},
            "threads": torch.get_num_threads()}  # fmt: skip
