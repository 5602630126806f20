"""Knowledge distillation on digits (Lampert 2019): a small student learns from a larger teacher or an
ensemble, on the few labelled examples only or also on an unlabeled pool labelled by the teacher.

Per seed, load_digits (flattened, 64 features) is split, stratified, into a small labelled train
set, a validation set (chooses the temperature only), a test set and the rest as an unlabeled pool
(its labels are never used). The teacher (64-256-256-10 MLP) and the ensemble (5 MLPs 64-128-10,
different inits) are trained on the labelled set; every student is the same 64-16-10 MLP, from the
same initialisation, trained with the same optimiser settings. The test accuracy after every epoch
gives the convergence curves (recorded, never used for a choice).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from ..commands.common import add_common_args, seeds_of, write_outputs
from ..data import load_digits, stratified_split
from ..transfer import FineTune
from ..transfer.distill import Distill, distillation_targets

__all__ = ["ROWS", "LABELS", "make_mlp", "run", "table", "plot", "add_parser"]

LABELS = {
    "teacher": "Teacher (64-256-256-10 MLP), reference",
    "ensemble": "Ensemble of 5 MLPs (64-128-10), reference",
    "labels": "Student from labels",
    "kd_teacher": "Student ← teacher, labelled set",
    "kd_teacher_pool": "Student ← teacher, labelled + unlabeled pool",
    "kd_ensemble": "Student ← ensemble, labelled set",
    "kd_ensemble_pool": "Student ← ensemble, labelled + unlabeled pool",
    "hard_pool": "Student on teacher's hard labels, labelled + pool (control)",
}
ROWS = list(LABELS)
STUDENTS = [r for r in ROWS if r not in ("teacher", "ensemble")]


def make_mlp(hidden=(16,), n_in: int = 64, n_classes: int = 10) -> nn.Sequential:
    """Linear/ReLU layers + a linear head: X (B, 64) -> logits (B, 10)."""
    layers, d = [], n_in
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, n_classes))


def _curve(history, key):
    return [float(h[key]) for h in history]


def _seed_run(seed: int, o: dict) -> dict:
    digits = load_digits()
    tr, va, te, pool = stratified_split(
        digits, [o["n_labelled"], o["n_val"], o["n_test"], o["n_pool"]], random_state=seed
    )
    bs, lr, ep = o["batch_size"], o["lr"], o["epochs"]
    out: dict = {"seed": seed, "rows": {}}

    def fit_labels(model, X, y, epochs, lr_, rs):
        return FineTune(model, lr_, epochs, batch_size=bs, random_state=rs).fit(X, y, X_val=te.X, y_val=te.y)

    t0 = time.time()
    torch.manual_seed(seed)
    teacher = fit_labels(make_mlp(o["teacher_hidden"]), tr.X, tr.y, o["teacher_epochs"], 1e-3, seed)
    members = []
    for k in range(o["n_ensemble"]):
        torch.manual_seed(1000 * seed + k + 1)
        members.append(fit_labels(make_mlp(o["member_hidden"]), tr.X, tr.y, o["teacher_epochs"], 1e-3, seed + k + 1))
    ens_pred = distillation_targets(members, te.X).argmax(1)
    out["rows"]["teacher"] = {
        "test_accuracy": teacher.score(te.X, te.y),
        "val_accuracy": teacher.score(va.X, va.y),
        "seconds": time.time() - t0,
    }
    out["rows"]["ensemble"] = {
        "test_accuracy": float((ens_pred == te.y).float().mean()),
        "val_accuracy": float((distillation_targets(members, va.X).argmax(1) == va.y).float().mean()),
        "seconds": 0.0,
    }
    torch.manual_seed(seed + 12345)
    student = make_mlp(o["student_hidden"])  # one initialisation shared by every student row

    def steps_per_epoch(n):
        return math.ceil(n / bs)

    t0 = time.time()
    est = fit_labels(student, tr.X, tr.y, ep, lr, seed)
    out["rows"]["labels"] = {
        "test_accuracy": est.score(te.X, te.y),
        "val_accuracy": est.score(va.X, va.y),
        "curve": _curve(est.history_, "val_accuracy"),
        "steps_per_epoch": steps_per_epoch(len(tr)),
        "seconds": time.time() - t0,
    }
    # control: the teacher's arg-max labels on the pool (the T -> 0 limit of distillation)
    t0 = time.time()
    Xp = torch.cat([tr.X, pool.X])
    yp = torch.cat([tr.y, torch.as_tensor(teacher.predict(pool.X))])
    est = fit_labels(student, Xp, yp, ep, lr, seed)
    out["rows"]["hard_pool"] = {
        "test_accuracy": est.score(te.X, te.y),
        "val_accuracy": est.score(va.X, va.y),
        "curve": _curve(est.history_, "val_accuracy"),
        "steps_per_epoch": steps_per_epoch(len(Xp)),
        "seconds": time.time() - t0,
    }
    for row, teach, use_pool in (
        ("kd_teacher", teacher, False),
        ("kd_teacher_pool", teacher, True),
        ("kd_ensemble", members, False),
        ("kd_ensemble_pool", members, True),
    ):
        t0 = time.time()
        cands = []
        for T in o["temperatures"]:
            d = Distill(
                student,
                teach,
                temperature=T,
                hard_weight=o["hard_weight"],
                lr=lr,
                epochs=ep,
                batch_size=bs,
                random_state=seed,
            )
            d.fit(tr.X, tr.y, X_unlabeled=pool.X if use_pool else None, eval_set=(te.X, te.y))
            cands.append((d.score(va.X, va.y), T, d))
        val, T, d = max(cands, key=lambda c: c[0])  # first T on ties
        out["rows"][row] = {
            "test_accuracy": d.score(te.X, te.y),
            "val_accuracy": val,
            "temperature": T,
            "val_by_temperature": {str(t): c for c, t, _ in cands},
            "curve_by_temperature": {str(t): _curve(e.history_, "eval_accuracy") for _, t, e in cands},
            "curve": _curve(d.history_, "eval_accuracy"),
            "steps_per_epoch": steps_per_epoch(d.n_train_),
            "seconds": time.time() - t0,
        }
    out["sizes"] = {"labelled": len(tr), "val": len(va), "test": len(te), "pool": len(pool)}
    return out


DEFAULTS = dict(
    n_labelled=150,
    n_val=200,
    n_test=400,
    n_pool=None,
    epochs=60,
    lr=3e-3,
    batch_size=32,
    temperatures=(1, 2, 4, 8),
    hard_weight=0.0,
    teacher_hidden=(256, 256),
    member_hidden=(128,),
    student_hidden=(16,),
    teacher_epochs=100,
    n_ensemble=5,
    checkpoints=(5, 10),
)


def run(seeds=(0, 1, 2), verbose: bool = False, **options) -> dict:
    """Runs every row for every seed. options override DEFAULTS (n_labelled, n_val, n_test,
    n_pool (None: all remaining examples), epochs, lr, batch_size, temperatures, hard_weight, *_hidden, teacher_epochs, n_ensemble,
    checkpoints). Returns {"settings", "seeds", "per_seed": [{seed, rows: {row: {test_accuracy,
    val_accuracy, temperature, curve (test accuracy per epoch, epoch 0 first), ...}}}], "seconds"}."""
    from tqdm.auto import tqdm

    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
    o = {**DEFAULTS, **options}
    torch.set_num_threads(1)
    t0 = time.time()
    per_seed = [_seed_run(int(s), o) for s in tqdm(list(seeds), desc="distill", disable=not verbose)]
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in o.items()}
    return {"settings": settings, "seeds": [int(s) for s in seeds], "per_seed": per_seed, "seconds": time.time() - t0}


def _ms(v) -> str:
    v = np.asarray(v, dtype=np.float64) * 100
    return f"{v.mean():.1f} ± {v.std():.1f}"


def table(result: dict) -> str:
    """Markdown: test accuracy (%) mean ± std over seeds per row, the test accuracy after the
    checkpoint epochs (convergence; only for rows trained on the labelled set, whose epochs have
    the same number of optimiser steps), and the temperatures chosen on validation."""
    cps = result["settings"]["checkpoints"]
    ps = result["per_seed"]
    head = "| method | test accuracy | " + " | ".join(f"after epoch {c}" for c in cps) + " | T (val-chosen, per seed) |"
    out = [head, "|---|---|" + "---|" * len(cps) + "---|"]
    for r in ROWS:
        if r not in ps[0]["rows"]:
            continue
        rows = [p["rows"][r] for p in ps]
        same_steps = "curve" in rows[0] and not r.endswith("pool")  # pool epochs are ~8x longer
        cells = [_ms([x["curve"][c] for x in rows]) if same_steps and c < len(rows[0]["curve"]) else "-" for c in cps]
        temps = ", ".join(f"{x['temperature']:g}" for x in rows) if "temperature" in rows[0] else "-"
        out.append(
            f"| {LABELS[r]} | {_ms([x['test_accuracy'] for x in rows])} | " + " | ".join(cells) + f" | {temps} |"
        )
    return "\n".join(out)


def plot(result: dict, path: str) -> None:
    """Test accuracy against optimiser steps (log scale) for every student row, mean ± std band."""
    from .._plots import subplots

    ps = result["per_seed"]
    fig, ax = subplots(figsize=(7, 4.5))
    for r in STUDENTS:
        rows = [p["rows"][r] for p in ps]
        c = np.array([x["curve"] for x in rows]) * 100
        steps = np.arange(c.shape[1]) * rows[0]["steps_per_epoch"]
        m, s = c.mean(0), c.std(0)
        style = "--" if r.endswith("pool") else "-"
        ax.plot(steps[1:], m[1:], style, label=LABELS[r])
        if len(ps) > 1:
            ax.fill_between(steps[1:], (m - s)[1:], (m + s)[1:], alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("optimiser steps (batch 32)")
    ax.set_ylabel("test accuracy (%)")
    sz = ps[0]["sizes"]
    ax.set_title(f"Distillation into a 64-16-10 MLP, digits, {sz['labelled']} labelled + {sz['pool']} unlabeled")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _cmd(args) -> int:
    seeds = seeds_of(args)
    opts = {"n_labelled": args.n_labelled, "epochs": args.epochs}
    result = run(seeds, verbose=not args.quiet, **opts)
    print(
        f"digits, {args.n_labelled} labelled; test accuracy (%) mean ± std over seeds {seeds} "
        f"({result['seconds']:.0f} s)"
    )
    print(table(result))
    return write_outputs(args, result, plot)


def add_parser(subparsers) -> None:
    """Registers the `distill` subcommand."""
    p = subparsers.add_parser("distill", help="knowledge distillation on digits: teacher / ensemble -> small student")
    add_common_args(p, plot_help="test accuracy vs optimiser steps (PNG)")
    p.add_argument("--n-labelled", type=int, default=DEFAULTS["n_labelled"], help="labelled training examples")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="student epochs")
    p.set_defaults(func=_cmd)
