"""SOSELETO (c) on real cross-domain digits: SynDigits 0-4 -> MNIST 5-9 with n_t labelled target
examples (the offline stand-in for Litany & Freedman's (2018) SVHN 0-4 -> MNIST 5-9), on the ``digits_cnn``
backbone.

Rows, all selected on the same validation split carved from the target:
- target only: the CNN trained from scratch on the labelled target (lr x augmentation x steps);
- fine-tuning: the CNN pre-trained on the whole source, a new head warmed up on frozen features,
  then the same grid as target only;
- SOSELETO: alpha-weighted source training of the backbone, the target head trained on the target
  loss (separate heads: the label sets are disjoint), lr_alpha chosen on validation;
- SOSELETO + fine-tuning: its backbone and target head fine-tuned with the same grid;
- the alpha-frozen control of both: the same run with lr_alpha = 0 (alpha stays 1);
- linear probes (logistic regression) of pre-trained, SOSELETO, alpha-frozen and random features;
- where alpha goes: its mean per source digit and per font.
"""

from __future__ import annotations

import copy
import inspect
import math
import time

import numpy as np
import torch
from torch import nn

from ..backbones import digits_cnn
from ..data import SYNDIGITS_FONTS
from ..selection import Soseleto
from ._clock import PhaseClock
from .cnn_training import evaluate, linear_probe, train_steps, tune_target
from .digit_tasks import svhn_mnist_task

__all__ = ["FROZEN_LR_ALPHA", "alpha_summary", "fit_soseleto", "run_svhn_mnist"]


# the alpha-frozen control: the same SOSELETO steps with alpha kept at its initial value
FROZEN_LR_ALPHA = 0.0
# every target-side row (target only, fine-tuning, SOSELETO + fine-tuning) is chosen from this grid
TARGET_GRID = {"lrs": (1e-3,), "augs": (False, True), "checkpoints": (150, 400)}


def fit_soseleto(
    backbone: nn.Module,
    source_head: nn.Module,
    target_head: nn.Module,
    source,
    target,
    *,
    epochs: int,
    **kwargs,
) -> Soseleto:
    """Soseleto(backbone, source_head, target_head, len(source), **kwargs) fitted for `epochs`
    passes over the source; `epochs` goes to the constructor or to fit, whichever takes it."""
    if "epochs" in inspect.signature(Soseleto.__init__).parameters:
        model = Soseleto(backbone, source_head, target_head, len(source), epochs=epochs, **kwargs)
        return model.fit(source, target)
    model = Soseleto(backbone, source_head, target_head, len(source), **kwargs)
    return model.fit(source, target, epochs=epochs)


def alpha_summary(alpha: np.ndarray, digit: np.ndarray, font: np.ndarray) -> dict:
    """Where alpha (n_source,) goes: overall statistics, mean per source digit, per font."""
    return {"mean": float(alpha.mean()), "std": float(alpha.std()), "min": float(alpha.min()),
            "max": float(alpha.max()), "frac_below_0.5": float((alpha < 0.5).mean()),
            "frac_zero": float((alpha == 0).mean()),
            "mean_per_digit": {int(d): float(alpha[digit == d].mean()) for d in np.unique(digit)},
            "mean_per_font": {SYNDIGITS_FONTS[f]: float(alpha[font == f].mean()) for f in np.unique(font)}}  # fmt: skip


def _span(digits) -> str:
    digits = list(digits)
    return f"{digits[0]}-{digits[-1]}" if digits == list(range(digits[0], digits[-1] + 1)) else str(digits)


def run_svhn_mnist(
    n_target: int = 20,
    seed: int = 0,
    *,
    n_source: int = 5000,
    source_epochs: int = 3,
    widths=(16, 32, 64),
    features: int = 128,
    lr: float = 1e-3,
    lr_alphas=(0.1, 0.3),
    source_style: str = "syn",
    source_digits=range(5),
    target_digits=range(5, 10),
    target_grid: dict | None = None,
    device="cpu",
    verbose: bool = False,
    keep_alpha: bool = False,
    cache_dir=None,
) -> dict:
    """One seed of SynDigits 0-4 -> MNIST 5-9 (or other `source_digits` -> `target_digits`: range(10)
    for both is the same-labels shift). Returns {"accuracy": {target_only, fine_tuning,
    soseleto, soseleto_ft, soseleto_frozen, soseleto_frozen_ft}, "linear_probe": {...},
    "chosen": settings per row, "alpha": summaries, "seconds": per phase and total, ...}; with
    keep_alpha=True also "alpha_values" (n_source,) lists of the chosen and the frozen run.
    target_grid: tune_target's lrs / augs / checkpoints (default TARGET_GRID), the same for
    every target-side row."""
    t_start, c_start = time.perf_counter(), time.process_time()
    clock = PhaseClock()
    with clock("data"):
        task = svhn_mnist_task(
            n_target,
            seed,
            n_source=n_source,
            source_digits=source_digits,
            target_digits=target_digits,
            source_style=source_style,
            cache_dir=cache_dir,
        )
        task = task.to(device)
    d, cs, ct = int(features), task.n_source_classes, task.n_target_classes
    tr, val, test = task.tgt_train, task.tgt_val, task.test
    grid = dict(TARGET_GRID if target_grid is None else target_grid)
    acc, chosen, val_score, probe = {}, {}, {}, {}

    def record(name: str, setting: dict, net: nn.Module) -> None:
        acc[name], chosen[name], val_score[name] = (
            evaluate(net, test)[0],
            setting,
            evaluate(net, val)[0],
        )

    def new_net(backbone: nn.Module) -> nn.Sequential:
        return nn.Sequential(backbone, nn.Linear(d, ct)).to(device)

    with clock("target_only"):
        setting, net, _ = tune_target(lambda: new_net(digits_cnn(widths=widths, features=d)), tr, val, seed, **grid)
    record("target_only", setting, net)

    # pre-training on the whole source: the same passes over it as SOSELETO makes
    torch.manual_seed(seed)
    pre = nn.Sequential(digits_cnn(widths=widths, features=d), nn.Linear(d, cs)).to(device)
    with clock("pretrain"):
        train_steps(
            pre,
            task.source,
            source_epochs * math.ceil(len(task.source) / 64),
            lr,
            seed=seed,
        )
    source_train_acc = evaluate(pre, task.source)[0]
    with clock("fine_tuning"):
        setting, net, _ = tune_target(lambda: new_net(copy.deepcopy(pre[0])), tr, val, seed, head_warmup=100,
                                      **grid)  # fmt: skip
    record("fine_tuning", setting, net)
    torch.manual_seed(seed + 7)
    probe["random"] = linear_probe(digits_cnn(widths=widths, features=d).to(device), tr, test)
    probe["pretrained"] = linear_probe(pre[0], tr, test)

    def soseleto(lr_alpha: float) -> Soseleto:
        torch.manual_seed(seed)  # the same initial backbone and source head as the pre-trained network's
        backbone, sh, th = digits_cnn(widths=widths, features=d), nn.Linear(d, cs), nn.Linear(d, ct)
        return fit_soseleto(backbone, sh, th, task.source, tr, epochs=source_epochs, lr=lr, lr_alpha=lr_alpha,
                            optimizer="adam", batch_size=64, target_batch_size=len(tr), random_state=seed,
                            device=device, verbose=verbose)  # fmt: skip

    with clock("soseleto"):
        runs = [(a, soseleto(a)) for a in lr_alphas]
    scores = [evaluate(m.target_net, val) for _, m in runs]
    best = min(range(len(runs)), key=lambda k: (-scores[k][0], scores[k][1], k))
    with clock("soseleto_frozen"):
        frozen = soseleto(FROZEN_LR_ALPHA)
    alphas = {}
    for name, (lr_alpha, m) in (
        ("soseleto", runs[best]),
        ("soseleto_frozen", (0.0, frozen)),
    ):
        net = nn.Sequential(m.backbone, m.target_head)
        record(name, {"lr_alpha": lr_alpha}, net)
        with clock(name + "_ft"):
            setting, net_ft, _ = tune_target(lambda net=net: copy.deepcopy(net), tr, val, seed, **grid)
        record(name + "_ft", setting, net_ft)
        probe[name] = linear_probe(m.backbone, tr, test)
        alphas[name] = m.alpha_.detach().cpu().numpy()
    digit, font = task.source_digit.numpy(), task.source_font.numpy()
    out = {"experiment": "svhn-mnist", "source": f"SynDigits '{source_style}' {_span(source_digits)}",
           "target": f"MNIST {_span(target_digits)}",
           "n_target": n_target, "n_train": len(tr), "n_val": len(val), "n_test": len(test),
           "n_source": len(task.source), "source_epochs": source_epochs, "widths": list(widths), "seed": seed,
           "accuracy": acc, "val_accuracy": val_score, "linear_probe": probe, "chosen": chosen,
           "source_train_accuracy": source_train_acc,
           "alpha": {k: alpha_summary(a, digit, font) for k, a in alphas.items()},
           "lr_alphas": list(lr_alphas), "frozen_lr_alpha_used": FROZEN_LR_ALPHA}  # fmt: skip
    if keep_alpha:
        out["alpha_values"] = {k: a.round(4).tolist() for k, a in alphas.items()}
    out["seconds"] = {**clock.seconds, "total": time.perf_counter() - t_start}
    out["cpu_seconds"] = {**clock.cpu_seconds, "total": time.process_time() - c_start}
    out["threads"] = torch.get_num_threads()
    return out


ROW_LABELS = {
    "target_only": "Target only (tuned)",
    "fine_tuning": "Fine-tuning",
    "soseleto": "SOSELETO",
    "soseleto_ft": "SOSELETO + fine-tuning",
    "soseleto_frozen": "alpha frozen (lr_alpha 0)",
    "soseleto_frozen_ft": "alpha frozen + fine-tuning",
}


def print_table(results: list[dict]) -> None:
    """The rows of run_svhn_mnist results (one per seed): mean ± std, per-seed values, the
    probes, alpha per source digit, and the time."""
    r0 = results[0]
    print(
        f"{r0['source']} -> {r0['target']}, {r0['n_target']} labelled target examples ({r0['n_train']} train + "
        f"{r0['n_val']} validation), test {r0['n_test']} images; accuracy % over {len(results)} seed(s)"
    )
    for key, label in ROW_LABELS.items():
        v = np.array([r["accuracy"][key] for r in results]) * 100
        print(f"{label:<28} {v.mean():5.1f} ± {v.std():4.1f}   [{' '.join(f'{x:.1f}' for x in v)}]")
    for key in r0["linear_probe"]:
        v = np.array([r["linear_probe"][key] for r in results]) * 100
        print(f"{'linear probe, ' + key:<28} {v.mean():5.1f} ± {v.std():4.1f}   [{' '.join(f'{x:.1f}' for x in v)}]")
    per_digit = np.array([[r["alpha"]["soseleto"]["mean_per_digit"][d] for d in sorted(r0["alpha"]["soseleto"]
                          ["mean_per_digit"])] for r in results]).mean(0)  # fmt: skip
    print(f"alpha mean per source digit: {' '.join(f'{a:.2f}' for a in per_digit)}")
    wall, cpu = (sum(r[k]["total"] for r in results) for k in ("seconds", "cpu_seconds"))
    print(f"{wall:.0f} s wall, {cpu:.0f} s CPU ({r0['threads']} thread(s))")
