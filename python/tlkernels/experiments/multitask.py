"""Multi-task learning and domain generalisation with task context on the 8x8 digits (Lampert 2019).

``multitask``: four related tasks on digits -- identity (10-way), parity, >= 5, "has a loop"
(0, 6, 8, 9) -- each labelled on its OWN n images (disjoint across tasks: a shared trunk then sees
T times more labelled images than any single-task network, the setting where sharing can help).
Each task's n labels are split 3:1 into training and validation; the images no task labels are the
test set, on which every task is scored. Rows: separate networks, hard sharing, soft sharing
(lam, mu chosen on the validation split: the mean validation accuracy of the four tasks; mu couples
only the heads of equal shape, i.e. the three binary tasks), and hard sharing with a fifth,
unrelated task added (random binary labels, a fixed random function of the image index, on its own
n_unrelated images) -- the negative-transfer row. Every network trains for the same number of
optimiser steps, so the extra rows of the unrelated task do not buy extra training.

``domaingen``: tasks = digits rotated by an angle theta, context mu = theta / 90 (or
(cos theta, sin theta)). The training images (60 %) each appear once, under one random training
angle; the test images (40 %) are scored under every angle of the evaluation groups: angles seen
in training, unseen angles between them (interpolation) and beyond them (extrapolation). Rows:
pooled (context ignored), concat f(x, mu), weight-predicting phi(x)^T beta(mu), the same
weight-predicting network fed a constant mu = 0 (its architecture without the context), and an
oracle (concat) trained on the same training images under the test angles.

Every network is the same MLP (64 -> 128 -> 64 -> head, ReLU), trained with Adam (lr 1e-3) for a
fixed number of optimiser steps (multitask) or epochs (domaingen); no hyper-parameter but soft sharing's (lam, mu) is tuned, and nothing looks at test labels.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..commands.common import add_common_args, seeds_of
from ..data import load_digits, shift_images
from ..multitask import ContextualClassifier, MultiTaskClassifier

__all__ = [
    "TASKS",
    "MT_METHODS",
    "DG_METHODS",
    "digit_tasks",
    "run",
    "run_multitask",
    "run_domaingen",
    "table",
    "table_multitask",
    "table_domaingen",
    "plot_domaingen",
    "add_parser",
]

LOOP_DIGITS = (0, 6, 8, 9)
TASKS = ("identity", "parity", "ge5", "loop")
MT_METHODS = {
    "separate": "Separate networks",
    "hard": "Hard sharing",
    "soft": "Soft sharing (lam, mu on val)",
    "hard_unrelated": "Hard sharing + unrelated task",
}
DG_METHODS = {
    "pooled": "Pooled (context ignored)",
    "concat": "Concat f(x, mu)",
    "weights": "Weight-predicting phi(x)^T beta(mu)",
    "weights_const": "Weight-predicting, mu = 0 always (architecture only)",
    "oracle": "Oracle (trained on test angles)",
}
TRAIN_ANGLES = (-60, -40, -20, 0, 20, 40, 60)
ANGLE_GROUPS = {"seen": TRAIN_ANGLES, "interpolation": (-50, -30, -10, 10, 30, 50), "extrapolation": (-75, 75)}
SOFT_GRID = [(lam, mu) for lam in (1e-3, 1e-2, 1e-1, 1.0) for mu in (0.0, 1e-2)]
HIDDEN = (128, 64)
BATCH = 32


def digit_tasks(y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Digit labels (N,) -> {identity, parity, ge5, loop} labels (N,)."""
    return {
        "identity": y.clone(),
        "parity": y % 2,
        "ge5": (y >= 5).long(),
        "loop": torch.isin(y, torch.tensor(LOOP_DIGITS)).long(),
    }


# -- multitask ---------------------------------------------------------------------------------
def _mt_split(seed: int, n_labels: int, n_unrelated: int, images: str):
    d = load_digits(images=True)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(d.y))
    labels = digit_tasks(d.y)
    random_fn = torch.as_tensor(rng.integers(0, 2, len(d.y)))  # the unrelated task: a random function of the index
    sizes = {t: int(n_labels[t] if isinstance(n_labels, dict) else n_labels) for t in TASKS}
    owned, start = {}, 0
    for t in TASKS:
        owned[t] = perm[start : start + sizes[t]]
        start += sizes[t] if images == "disjoint" else 0
    if images == "same":  # the unrelated task labels the same images first, then more
        start = 0
    owned["unrelated"] = perm[start : start + n_unrelated]
    start = max(start + n_unrelated, max(sizes.values()) if images == "same" else start)
    test = perm[start:]

    def rows_of(part):
        parts = [o[: (3 * len(o)) // 4] if part == "train" else o[(3 * len(o)) // 4 :] for o in owned.values()]
        return np.array(list(dict.fromkeys(np.concatenate(parts).tolist())), dtype=np.int64)

    train_rows = rows_of("train")

    def task_labels(tasks, rows, part):
        out = {}
        for t in tasks:
            own = owned[t]
            k = (3 * len(own)) // 4
            sel = own[:k] if part == "train" else own[k:]
            full = labels[t] if t != "unrelated" else random_fn
            y = torch.full((len(rows),), -1, dtype=torch.long)
            pos = {r: i for i, r in enumerate(rows)}
            for r in sel:
                if r in pos:
                    y[pos[r]] = full[r]
            out[t] = y
        return out

    val_rows = rows_of("val")
    test_labels = {**{t: labels[t][test] for t in TASKS}, "unrelated": random_fn[test]}
    return d.X, train_rows, val_rows, test, task_labels, test_labels


def _mt_fit(mode, X, Y, seed, steps, **kw):
    """Every row trains for the same number of optimiser steps (the unrelated task adds rows)."""
    epochs = max(1, math.ceil(steps / math.ceil(X.shape[0] / BATCH)))
    return MultiTaskClassifier(mode, HIDDEN, lr=1e-3, epochs=epochs, batch_size=BATCH, random_state=seed, **kw).fit(
        X, Y
    )


def run_multitask(
    seeds=(0, 1, 2),
    verbose: bool = False,
    n_labels: int = 40,
    n_unrelated: int = 300,
    steps: int = 400,
    images: str = "disjoint",
    soft_grid=None,
) -> dict:
    """The multitask table. Returns {"experiment": "multitask", "rows": [{method, seed, test {task: acc},
    val (mean of the four tasks), params, seconds}], settings...}."""
    from tqdm.auto import tqdm

    if images not in ("disjoint", "same"):
        raise ValueError(f"images must be 'disjoint' or 'same', got {images!r}")
    soft_grid = SOFT_GRID if soft_grid is None else [tuple(g) for g in soft_grid]
    rows = []
    bar = tqdm(total=len(seeds) * len(MT_METHODS), desc="multitask", disable=not verbose)
    for seed in seeds:
        X, tr, va, te, task_labels, test_labels = _mt_split(seed, n_labels, n_unrelated, images)
        Ytr, Yva = task_labels(TASKS, tr, "train"), task_labels(TASKS, va, "val")
        keep = torch.stack([Ytr[t] for t in TASKS], 1).ge(0).any(1)  # rows labelled by a related task
        Xtr4, Ytr4 = X[tr[keep.numpy()]], {t: Ytr[t][keep] for t in TASKS}

        def val_mean(est):
            return float(np.mean([est.score(X[va], {t: Yva[t]})[t] for t in TASKS]))

        def record(method, est, val, params, t0):
            test = est.score(X[te], {t: test_labels[t] for t in est.tasks_})
            rows.append(
                {
                    "method": method,
                    "seed": seed,
                    "test": test,
                    "val": val,
                    "params": params,
                    "seconds": time.time() - t0,
                }
            )
            bar.update(1)

        for mode in ("separate", "hard"):
            t0 = time.time()
            est = _mt_fit(mode, Xtr4, Ytr4, seed, steps)
            record(mode, est, val_mean(est), {}, t0)
        t0 = time.time()
        cands = []
        for lam, mu in soft_grid:
            est = _mt_fit("soft", Xtr4, Ytr4, seed, steps, lam=lam, mu=mu)
            cands.append((val_mean(est), (lam, mu), est))
        best = max(cands, key=lambda c: c[0])
        record(
            "soft",
            best[2],
            best[0],
            {"lam": best[1][0], "mu": best[1][1], "grid_val": {f"{lam:g},{mu:g}": v for v, (lam, mu), _ in cands}},
            t0,
        )
        t0 = time.time()
        Yall = task_labels((*TASKS, "unrelated"), tr, "train")
        est = _mt_fit("hard", X[tr], Yall, seed, steps)
        record("hard_unrelated", est, val_mean(est), {}, t0)
    bar.close()
    return {
        "experiment": "multitask",
        "rows": rows,
        "methods": list(MT_METHODS),
        "tasks": list(TASKS),
        "seeds": list(seeds),
        "n_labels_per_task": n_labels if isinstance(n_labels, dict) else int(n_labels),
        "n_unrelated": n_unrelated,
        "steps": steps,
        "batch_size": BATCH,
        "hidden": list(HIDDEN),
        "soft_grid": [list(g) for g in soft_grid],
        "images": images,
    }


def table_multitask(result: dict) -> str:
    """Markdown: per-task test accuracy (%), mean ± std over seeds, and the mean over the four tasks."""
    tasks = result["tasks"]
    out = [
        "| method | " + " | ".join(tasks) + " | mean (4 tasks) | unrelated task |",
        "|---|" + "---|" * (len(tasks) + 2),
    ]
    for m in result["methods"]:
        rs = [r for r in result["rows"] if r["method"] == m]
        if not rs:
            continue
        cells = []
        for t in tasks:
            v = np.array([r["test"][t] for r in rs]) * 100
            cells.append(f"{v.mean():.1f} ± {v.std():.1f}")
        v = np.array([np.mean([r["test"][t] for t in tasks]) for r in rs]) * 100
        cells.append(f"{v.mean():.1f} ± {v.std():.1f}")
        u = [r["test"]["unrelated"] for r in rs if "unrelated" in r["test"]]
        cells.append(f"{np.mean(u) * 100:.1f} ± {np.std(u) * 100:.1f}" if u else "-")
        out.append(f"| {MT_METHODS[m]} | " + " | ".join(cells) + " |")
    return "\n".join(out)


# -- domaingen ---------------------------------------------------------------------------------
def _encode(theta, context: str) -> np.ndarray:
    theta = np.asarray(theta, dtype=np.float64)
    if context == "linear":
        return (theta / 90.0)[:, None]
    r = np.radians(theta)
    return np.stack([np.cos(r), np.sin(r)], 1)


def _rotate_each(X: torch.Tensor, angles: np.ndarray) -> torch.Tensor:
    out = torch.empty_like(X)
    for a in np.unique(angles):
        m = torch.as_tensor(angles == a)
        out[m] = shift_images(X[m], "rotation", float(a))
    return out


def run_domaingen(
    seeds=(0, 1, 2),
    verbose: bool = False,
    epochs: int = 60,
    context: str = "linear",
    plot_angles=tuple(range(-90, 91, 5)),
) -> dict:
    """The domaingen table. Returns {"experiment": "domaingen", "rows": [{method, seed, accuracy
    {angle: acc}, groups {group: mean acc}, seconds}], settings...}."""
    from tqdm.auto import tqdm

    if context not in ("linear", "trig"):
        raise ValueError(f"context must be 'linear' (theta/90) or 'trig' (cos, sin), got {context!r}")
    d = load_digits(images=True)
    test_angles = sorted({a for g in ("interpolation", "extrapolation") for a in ANGLE_GROUPS[g]})
    eval_angles = sorted(set(plot_angles) | {a for g in ANGLE_GROUPS.values() for a in g})
    rows = []
    bar = tqdm(total=len(seeds) * len(DG_METHODS), desc="domaingen", disable=not verbose)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(d.y))
        n_tr = int(0.6 * len(perm))
        tr, te = perm[:n_tr], perm[n_tr:]
        ang_tr = rng.choice(TRAIN_ANGLES, n_tr)
        ang_or = rng.choice(test_angles, n_tr)
        Xtr, ytr = _rotate_each(d.X[tr], ang_tr), d.y[tr]
        Xor = _rotate_each(d.X[tr], ang_or)
        Xte = {a: shift_images(d.X[te], "rotation", float(a)) for a in eval_angles}
        for method in DG_METHODS:
            t0 = time.time()
            model = {"oracle": "concat", "weights_const": "weights"}.get(method, method)
            X_, ang = (Xor, ang_or) if method == "oracle" else (Xtr, ang_tr)
            # weights_const: the same network with a constant context (separates architecture from context)
            enc = (lambda a: 0 * _encode(a, context)) if method == "weights_const" else (lambda a: _encode(a, context))
            est = ContextualClassifier(model, HIDDEN, lr=1e-3, epochs=epochs, batch_size=64, random_state=seed).fit(
                X_, ytr, enc(ang)
            )
            acc = {int(a): est.score(Xte[a], d.y[te], enc(np.full(len(te), a))) for a in eval_angles}
            groups = {g: float(np.mean([acc[a] for a in angs])) for g, angs in ANGLE_GROUPS.items()}
            rows.append(
                {"method": method, "seed": seed, "accuracy": acc, "groups": groups, "seconds": time.time() - t0}
            )
            bar.update(1)
    bar.close()
    return {
        "experiment": "domaingen",
        "rows": rows,
        "methods": list(DG_METHODS),
        "seeds": list(seeds),
        "train_angles": list(TRAIN_ANGLES),
        "angle_groups": {g: list(v) for g, v in ANGLE_GROUPS.items()},
        "eval_angles": eval_angles,
        "context": context,
        "epochs": epochs,
        "hidden": list(HIDDEN),
        "train_fraction": 0.6,
    }


def table_domaingen(result: dict) -> str:
    """Markdown: test accuracy (%) per angle group, mean ± std over seeds."""
    groups = list(result["angle_groups"])
    head = [f"{g} ({', '.join(f'{a:+d}' for a in result['angle_groups'][g])})" for g in groups]
    out = ["| method | " + " | ".join(head) + " |", "|---|" + "---|" * len(groups)]
    for m in result["methods"]:
        rs = [r for r in result["rows"] if r["method"] == m]
        cells = []
        for g in groups:
            v = np.array([r["groups"][g] for r in rs]) * 100
            cells.append(f"{v.mean():.1f} ± {v.std():.1f}")
        out.append(f"| {DG_METHODS[m]} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot_domaingen(result: dict, path: str) -> None:
    """Test accuracy against the rotation angle, one line per method (mean and a ±std band)."""
    from .._plots import subplots

    angles = result["eval_angles"]
    fig, ax = subplots(figsize=(7, 4))
    for m in result["methods"]:
        rs = [r for r in result["rows"] if r["method"] == m]
        v = (
            np.array([[r["accuracy"][a] if a in r["accuracy"] else r["accuracy"][str(a)] for a in angles] for r in rs])
            * 100
        )
        ax.plot(angles, v.mean(0), marker=".", label=DG_METHODS[m])
        ax.fill_between(angles, v.mean(0) - v.std(0), v.mean(0) + v.std(0), alpha=0.15)
    lo, hi = min(result["train_angles"]), max(result["train_angles"])
    ax.axvspan(lo, hi, color="grey", alpha=0.08, label="training angle range")
    for a in result["train_angles"]:
        ax.axvline(a, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("rotation angle theta (degrees); dotted: training angles")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(
        f"Digits rotated by theta, context mu = {'theta/90' if result['context'] == 'linear' else '(cos, sin)'}"
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# -- common API / CLI --------------------------------------------------------------------------
def run(seeds=(0, 1, 2), verbose: bool = False, experiment: str = "multitask", **options) -> dict:
    """experiment='multitask' (``run_multitask``) or 'domaingen' (``run_domaingen``)."""
    if experiment == "multitask":
        return run_multitask(seeds, verbose, **options)
    if experiment == "domaingen":
        return run_domaingen(seeds, verbose, **options)
    raise ValueError(f"experiment must be 'multitask' or 'domaingen', got {experiment!r}")


def table(result: dict) -> str:
    return table_multitask(result) if result["experiment"] == "multitask" else table_domaingen(result)


def _cmd(args) -> int:
    from ..cli import _write_json

    torch.set_num_threads(1)
    seeds = tuple(seeds_of(args))
    t0 = time.time()
    if args.command == "multitask":
        result = run_multitask(
            seeds,
            not args.quiet,
            n_labels=args.n_labels,
            n_unrelated=args.n_unrelated,
            steps=args.steps,
            images=args.images,
        )
        n_tr = (3 * args.n_labels) // 4
        print(
            f"digits multi-task, {n_tr} training + {args.n_labels - n_tr} validation labels per task "
            f"({args.images} images), unrelated task on {args.n_unrelated} images, {args.steps} steps; "
            f"test accuracy (%) mean ± std over seeds {list(seeds)}"
        )
    else:
        result = run_domaingen(seeds, not args.quiet, epochs=args.epochs, context=args.context)
        print(f"digits rotated by theta, context {args.context}; test accuracy (%) mean ± std over seeds {list(seeds)}")
    result["seconds"] = time.time() - t0
    print(table(result))
    if args.command == "multitask":
        chosen = [
            f"seed {r['seed']}: lam={r['params']['lam']:g}, mu={r['params']['mu']:g}"
            for r in result["rows"]
            if r["method"] == "soft"
        ]
        print("soft sharing chose " + "; ".join(chosen))
    print(f"({result['seconds']:.0f} s)")
    if args.plot and args.command == "domaingen":
        plot_domaingen(result, args.plot)
        print(f"wrote {args.plot}")
    _write_json(args.json, result)
    return 0


def add_parser(subparsers) -> None:
    """Registers the `multitask` and `domaingen` subcommands."""
    for name, helptext in (
        ("multitask", "multi-task digits: separate / hard / soft sharing / + unrelated task"),
        ("domaingen", "domain generalisation: rotated digits with the angle as task context"),
    ):
        p = subparsers.add_parser(name, help=helptext)
        add_common_args(p, plot_help="accuracy against angle (PNG)" if name == "domaingen" else None)
        if name == "multitask":
            p.add_argument("--steps", type=int, default=400, help="optimiser steps of every network")
            p.add_argument("--n-labels", type=int, default=40, help="labelled images per task (3/4 train, 1/4 val)")
            p.add_argument("--n-unrelated", type=int, default=300, help="labelled images of the unrelated task")
            p.add_argument(
                "--images",
                choices=["disjoint", "same"],
                default="disjoint",
                help="each task labelled on its own images, or all on the same images",
            )
        else:
            p.add_argument("--epochs", type=int, default=60)
            p.add_argument(
                "--context",
                choices=["linear", "trig"],
                default="linear",
                help="mu = theta/90 (linear) or (cos theta, sin theta) (trig)",
            )
        if name == "multitask":
            p.set_defaults(plot=None)
        p.set_defaults(func=_cmd)
