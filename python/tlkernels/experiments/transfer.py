"""Representation transfer on digits: source = digits 0-4 (labelled, and the same images without
labels for the self-supervised / self-taught rows), target = digits 5-9 with n labelled examples
per class.

Per seed the target (relabelled 0-4) is split, stratified, into n per class for training, n per
class for validation (hyper-parameters only, never trained on) and the rest for the test accuracy.
Every method trains the same small MLP (64 -> 128 -> 64 -> 5, ReLU) for the same number of steps;
its grid is scored on the validation split and the best point's test accuracy is reported.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from ..data import class_split, load_digits, stratified_split
from ..transfer import (
    Autoencoder,
    FeatureProbe,
    FineTune,
    Flextune,
    LayerTransfer,
    ProgressiveNet,
    RotationPretrainer,
    SelfTaught,
    finetune_tradeoff,
    plot_tradeoff,
    sweep_layer_transfer,
)

__all__ = ["METHODS", "LABELS", "make_mlp", "run", "run_tradeoff"]

LABELS = {
    "scratch": "From scratch",
    "probe_logistic": "Feature probe (logistic)",
    "probe_knn": "Feature probe (k-NN)",
    "finetune": "Fine-tune (all layers)",
    "flextune": "Flextune (best layer)",
    "layer_transfer": "Layer transfer (best k)",
    "l2sp": "L2-SP fine-tune",
    "output_constraint": "Output-constrained (LwF KL)",
    "progressive": "Progressive net",
    "rotation_probe": "Rotation-pretrained probe",
    "autoencoder_probe": "Denoising-autoencoder probe",
    "self_taught": "Self-taught (sparse coding)",
}
METHODS = list(LABELS)
STEPS = 200  # optimiser steps of every trained network on the target
LRS = (3e-4, 1e-3, 3e-3)


def make_mlp(n_classes: int = 5, hidden=(128, 64)) -> nn.Sequential:
    """Flatten + Linear/ReLU layers + head; layers '1', '3', '5'; '4' is the penultimate ReLU."""
    layers, d = [nn.Flatten()], 64
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, n_classes))


def _epochs(n: int, batch_size: int = 32) -> int:
    return max(1, math.ceil(STEPS / math.ceil(n / batch_size)))


def _best(cands):
    """cands: [(params, fitted estimator, val accuracy)] -> the best (first on ties)."""
    return max(cands, key=lambda c: c[2])


class _Setting:
    def __init__(self, seed: int, n_per_class: int, source_epochs: int = 40):
        digits = load_digits(images=True)
        self.source = class_split(digits, range(5))
        target = class_split(digits, range(5, 10))
        tr, va, te = stratified_split(target, [5 * n_per_class, 5 * n_per_class, None], random_state=seed)
        self.tr, self.va, self.te, self.seed = tr, va, te, seed
        torch.manual_seed(seed)
        self.source_model = (
            FineTune(make_mlp(), 1e-3, source_epochs, batch_size=64, random_state=seed)
            .fit(self.source.X, self.source.y)
            .model_
        )
        self.epochs = _epochs(len(tr))

    def body(self):
        return self.source_model[:-1]


def _m_scratch(s):
    gen_model = make_mlp()
    cands = []
    for lr in LRS:
        est = LayerTransfer(gen_model, 0, lr=lr, epochs=s.epochs, random_state=s.seed).fit(s.tr.X, s.tr.y)
        cands.append(({"lr": lr}, est, est.score(s.va.X, s.va.y)))
    return _best(cands)


def _probe(s, extractor, head, layer=None):
    cands = []
    grid = {"logistic": [{"C": c} for c in (0.01, 0.1, 1.0, 10.0)], "knn": [{"n_neighbors": k} for k in (1, 3, 5)]}
    for p in grid[head]:
        est = FeatureProbe(extractor, head, layer, random_state=s.seed, **p).fit(s.tr.X, s.tr.y)
        cands.append((p, est, est.score(s.va.X, s.va.y)))
    return _best(cands)


def _m_finetune(s, lrs=LRS, **kw):
    cands = []
    for lr in lrs:
        est = FineTune(s.source_model, lr, s.epochs, n_classes=5, random_state=s.seed, **kw).fit(s.tr.X, s.tr.y)
        cands.append(({"lr": lr, **kw}, est, est.score(s.va.X, s.va.y)))
    return _best(cands)


def _m_flextune(s):
    cands = []
    for lr in (1e-3, 3e-3):
        est = Flextune(
            s.source_model, n_classes=5, lr=lr, epochs=s.epochs, head_epochs=s.epochs, head_lr=1e-2, random_state=s.seed
        ).fit(s.tr.X, s.tr.y, X_val=s.va.X, y_val=s.va.y)
        cands.append(({"lr": lr, "layer": est.layer_}, est, est.scores_[est.layer_]))
    return _best(cands)


def _m_layer_transfer(s):
    sw = sweep_layer_transfer(
        s.source_model, s.tr.X, s.tr.y, s.va.X, s.va.y, ks=(1, 2, 3), lr=1e-3, epochs=s.epochs, random_state=s.seed
    )
    b = sw["best"]
    return ({"k": b["k"], "where": b["where"], "freeze": b["freeze"]}, sw["model"], b["val_accuracy"])


def _m_l2sp(s):
    return _best([_m_finetune(s, lrs=(1e-3,), l2sp=a, l2sp_beta=1e-3) for a in (0.01, 0.1, 1.0)])


def _m_output(s):
    return _best([_m_finetune(s, lrs=(1e-3,), output_constraint=lam) for lam in (0.1, 1.0)])


def _m_progressive(s):
    cands = []
    for lr in (1e-3, 3e-3):
        torch.manual_seed(s.seed)
        net = ProgressiveNet(s.source_model)
        net.add_column(make_mlp())
        est = FineTune(net, lr, s.epochs, random_state=s.seed).fit(s.tr.X, s.tr.y)
        cands.append(({"lr": lr}, est, est.score(s.va.X, s.va.y)))
    return _best(cands)


_PRETRAINED: dict = {}


def _unlabeled(s):
    return s.source.X  # the source images without their labels (other classes than the target)


def _m_rotation(s):
    key = ("rot", s.seed)
    if key not in _PRETRAINED:
        backbone = make_mlp()[:-1]
        _PRETRAINED[key] = RotationPretrainer(backbone, 64, epochs=30, random_state=s.seed).fit(_unlabeled(s))
    return _probe(s, _PRETRAINED[key].backbone_, "logistic")


def _m_autoencoder(s):
    key = ("ae", s.seed)
    if key not in _PRETRAINED:
        enc = make_mlp()[:-1]
        _PRETRAINED[key] = Autoencoder(enc, noise="mask", noise_level=0.2, epochs=60, random_state=s.seed).fit(
            _unlabeled(s)
        )
    return _probe(s, _PRETRAINED[key].encoder_, "logistic")


def _m_self_taught(s):
    key = ("st", s.seed)
    if key not in _PRETRAINED:
        _PRETRAINED[key] = SelfTaught(128, "sparse_coding", alpha=0.5, random_state=s.seed).fit_representation(
            _unlabeled(s)
        )
    rep = _PRETRAINED[key]
    cands = []
    for C in (0.01, 0.1, 1.0, 10.0):
        rep.C = C
        rep.fit(s.tr.X, s.tr.y)
        acc, test = rep.score(s.va.X, s.va.y), rep.score(s.te.X, s.te.y)
        cands.append(({"C": C}, test, acc))
    p, test, acc = _best(cands)
    return p, _Fixed(test), acc


class _Fixed:
    def __init__(self, acc):
        self.acc = acc

    def score(self, X, y):
        return self.acc


_RUN = {
    "scratch": _m_scratch,
    "probe_logistic": lambda s: _probe(s, s.source_model, "logistic", layer="4"),
    "probe_knn": lambda s: _probe(s, s.source_model, "knn", layer="4"),
    "finetune": _m_finetune,
    "flextune": _m_flextune,
    "layer_transfer": _m_layer_transfer,
    "l2sp": _m_l2sp,
    "output_constraint": _m_output,
    "progressive": _m_progressive,
    "rotation_probe": _m_rotation,
    "autoencoder_probe": _m_autoencoder,
    "self_taught": _m_self_taught,
}


def run(methods=None, n_per_class=(5, 20), seeds=(0, 1, 2), verbose: bool = True) -> dict:
    """Runs the table. Returns {"rows": [{method, n_per_class, seed, test_accuracy,
    val_accuracy, params, seconds}], "methods", "n_per_class", "seeds"}."""
    from tqdm.auto import tqdm

    methods = METHODS if methods is None else list(methods)
    for m in methods:
        if m not in _RUN:
            raise ValueError(f"method must be one of {METHODS} or 'all', got {m!r}")
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    rows = []
    jobs = [(n, seed) for n in n_per_class for seed in seeds]
    bar = tqdm(total=len(jobs) * len(methods), desc="transfer", disable=not verbose)
    for n, seed in jobs:
        s = _Setting(seed, n)
        for m in methods:
            t0 = time.time()
            params, est, val = _RUN[m](s)
            rows.append(
                {
                    "method": m,
                    "n_per_class": n,
                    "seed": seed,
                    "test_accuracy": est.score(s.te.X, s.te.y),
                    "val_accuracy": val,
                    "params": params,
                    "seconds": time.time() - t0,
                }
            )
            bar.update(1)
    bar.close()
    return {"rows": rows, "methods": methods, "n_per_class": list(n_per_class), "seeds": list(seeds), "steps": STEPS}


def run_tradeoff(seed: int = 0, n_per_class: int = 20, epochs: int = 150, plot: str | None = None) -> dict:
    """Validation accuracy along fine-tuning for several learning rates (epoch 0: the probe)."""
    s = _Setting(seed, n_per_class)
    res = finetune_tradeoff(
        s.source_model,
        s.tr.X,
        s.tr.y,
        s.va.X,
        s.va.y,
        lrs=(1e-4, 1e-3, 1e-2),
        epochs=epochs,
        n_classes=5,
        head_epochs=s.epochs,
        random_state=seed,
    )
    if plot:
        plot_tradeoff(res, plot, title=f"Fine-tuning digits 0-4 -> 5-9, {n_per_class} labelled/class (seed {seed})")
    return res


def table(result: dict) -> str:
    """Markdown table: mean ± std of the test accuracy (%) per method and n."""
    rows = result["rows"]
    ns = result["n_per_class"]
    head = "| method | " + " | ".join(f"{n} labelled / class" for n in ns) + " |"
    out = [head, "|---|" + "---|" * len(ns)]
    for m in result["methods"]:
        cells = []
        for n in ns:
            v = np.array([r["test_accuracy"] for r in rows if r["method"] == m and r["n_per_class"] == n]) * 100
            cells.append(f"{v.mean():.1f} ± {v.std():.1f}" if len(v) else "-")
        out.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    return "\n".join(out)
