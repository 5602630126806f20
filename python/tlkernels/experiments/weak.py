"""Weak supervision on digits (Lampert 2019, Part III).

(a) Self-training: per seed the 1,797 digits are split, stratified, into n labelled examples per
class for training, n per class for validation (model selection only), 500 for the test, and
the rest (~1,200) as the unlabeled pool. Classifier: scikit-learn's LogisticRegression on the 64
pixels. Rows: labelled only (C chosen on validation), self-training (C and the confidence
threshold chosen on validation), oracle (the pool with its true labels; C chosen on validation).

(b) Weakly-supervised localisation: digits pasted at random positions in 24x24 noisy canvases
with distractor strokes; training canvases carry only "digit present / absent". The localiser
(tlkernels.weak.WeakLocalizer, max-window pooling) is compared with a fixed centered box and a
random box on the positive test canvases (digit instances disjoint from training); accuracy =
fraction with IoU >= 0.5 against the tight box of the digit's ink.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from ..commands.common import add_common_args, seeds_of, write_outputs
from ..data import load_digits, stratified_split
from ..weak import SelfTraining, WeakLocalizer, iou, localize, make_canvas_digits

__all__ = ["run", "table", "add_parser", "run_selftraining", "run_localization"]

CS = (0.1, 1.0, 10.0, 100.0)
THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95)
ST_LABELS = {
    "labelled_only": "Labelled only",
    "self_training": "Self-training (threshold on validation)",
    "oracle": "Oracle (pool with true labels)",
}
LOC_LABELS = {
    "weak_window": "Weak localiser, max-window pooling (ESS)",
    "weak_sum": "Weak localiser, sum pooling (ESS)",
    "centered": "Centered fixed box",
    "random": "Random box",
}


def _lr(C):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=3000)


def run_selftraining(seed: int, n_per_class: int, max_rounds: int = 5) -> dict:
    """One seed of (a). Returns test accuracies, the chosen hyper-parameters and, for the chosen
    self-training run, per-round pseudo-label counts and accuracies."""
    d = load_digits()
    tr, va, te, pool = stratified_split(d, [10 * n_per_class, 10 * n_per_class, 500, None], random_state=seed)
    Xtr, ytr, Xva, yva = tr.X.numpy(), tr.y.numpy(), va.X.numpy(), va.y.numpy()
    Xte, yte, Xu, yu = te.X.numpy(), te.y.numpy(), pool.X.numpy(), pool.y.numpy()
    out = {}
    best = max(((_lr(C).fit(Xtr, ytr), C) for C in CS), key=lambda m: m[0].score(Xva, yva))
    out["labelled_only"] = {"test_accuracy": best[0].score(Xte, yte), "C": best[1]}
    cands = []
    for C in CS:
        for th in THRESHOLDS:
            st = SelfTraining(_lr(C), threshold=th, max_rounds=max_rounds).fit(Xtr, ytr, Xu, y_unlabeled_true=yu)
            cands.append((st.score(Xva, yva), -len(cands), C, th, st))
    va_acc, _, C, th, st = max(cands, key=lambda c: c[:2])
    out["self_training"] = {
        "test_accuracy": st.score(Xte, yte),
        "C": C,
        "threshold": th,
        "val_accuracy": va_acc,
        "rounds": [
            {"round": h["round"], "n_pseudo": h["n_pseudo"], "pseudo_accuracy": h["pseudo_accuracy"]}
            for h in st.history_
        ],
    }
    Xo, yo = np.r_[Xtr, Xu], np.r_[ytr, yu]
    best = max(((_lr(C).fit(Xo, yo), C) for C in CS), key=lambda m: m[0].score(Xva, yva))
    out["oracle"] = {"test_accuracy": best[0].score(Xte, yte), "C": best[1]}
    return out


def run_localization(
    seed: int,
    n_train: int = 800,
    n_test: int = 400,
    epochs: int = 8,
    min_size: int = 4,
    max_size: int = 12,
    verbose: bool = False,
) -> dict:
    """One seed of (b). Returns per-method localisation accuracy / mean IoU, the image-level
    accuracy of the localisers, and ESS vs exhaustive box counts and agreement."""
    tr, te = stratified_split(load_digits(images=True), [1000, None], random_state=seed)
    X, y, b_train = make_canvas_digits(n_train, digits=tr, random_state=seed)
    Xt, yt, bt = make_canvas_digits(n_test, digits=te, random_state=10_000 + seed)
    pos = np.flatnonzero(yt.numpy() == 1)
    Xp, bp = Xt[torch.as_tensor(pos)], bt[torch.as_tensor(pos)].numpy()
    H = Xt.shape[-1]
    res, preds = {}, {}

    def record(name, boxes, extra=None):
        v = iou(boxes, bp)
        res[name] = {"loc_accuracy": float((v >= 0.5).mean()), "mean_iou": float(v.mean()), **(extra or {})}
        preds[name] = boxes

    for pooling in ("window", "sum"):
        t0 = time.time()
        wl = WeakLocalizer(
            pooling=pooling, epochs=epochs, min_size=min_size, max_size=max_size, random_state=seed, verbose=verbose
        ).fit(X, y)
        fit_s = time.time() - t0
        t0 = time.time()
        boxes = wl.localize(Xp).numpy()  # tensor in, tensor out
        ess_s, n_ess = time.time() - t0, wl.n_evaluated_.copy()
        extra = {"image_accuracy": wl.classification_score(Xt, yt), "fit_seconds": fit_s}
        if pooling == "window":
            maps = wl.score_maps(Xp).numpy()
            t0 = time.time()
            ex = [localize(s, "exhaustive", min_size, max_size, return_info=True) for s in maps]
            ex_s = time.time() - t0
            same = np.mean([(e[0] == b).all() for e, b in zip(ex, boxes)])
            ess = [localize(s, "branch_and_bound", min_size, max_size, return_info=True)[1]["score"] for s in maps]
            extra.update(
                {
                    "ess_boxes_mean": float(n_ess.mean()),
                    "ess_boxes_max": int(n_ess.max()),
                    "exhaustive_boxes": int(ex[0][1]["n_evaluated"]),
                    "same_box_fraction": float(same),
                    "same_score": bool(np.allclose([e[1]["score"] for e in ex], ess)),
                    "ess_seconds_per_image": ess_s / len(pos),
                    "exhaustive_seconds_per_image": ex_s / len(pos),
                }
            )
            plot_data = {
                "images": np.round(Xp[:8, 0].numpy(), 3).tolist(),
                "true": bp[:8].tolist(),
                "pred": boxes[:8].tolist(),
                "maps": np.round(maps[:8], 3).tolist(),
            }
        record(f"weak_{pooling}", boxes, extra)
    # baselines: a centered box of the mean TRAINING box size (box labels the weak localiser never
    # sees: a prior favourable to the baseline), and a uniformly random box
    sz = b_train[b_train[:, 0] >= 0].numpy()
    h, w = int(round((sz[:, 2] - sz[:, 0]).mean())), int(round((sz[:, 3] - sz[:, 1]).mean()))
    c = np.array([(H - h) // 2, (H - w) // 2, (H - h) // 2 + h, (H - w) // 2 + w])
    record("centered", np.tile(c, (len(pos), 1)), {"box": c.tolist()})
    rng = np.random.default_rng(seed)
    rh, rw = rng.integers(min_size, max_size + 1, len(pos)), rng.integers(min_size, max_size + 1, len(pos))
    ry, rx = rng.integers(0, H - rh + 1), rng.integers(0, H - rw + 1)
    record("random", np.c_[ry, rx, ry + rh, rx + rw])
    return {"methods": res, "n_positive_test": int(len(pos)), "plot": plot_data}


def run(
    seeds=(0, 1, 2),
    verbose: bool = False,
    n_per_class=(2, 5),
    n_train: int = 800,
    n_test: int = 400,
    epochs: int = 8,
    max_rounds: int = 5,
) -> dict:
    """Both experiments over seeds. Returns {"selftraining": [{seed, n_per_class, ...}],
    "localization": [{seed, ...}], "settings": {...}} (JSON-serialisable; the plot data of the
    first seed is kept under "plot")."""
    from sklearn.exceptions import ConvergenceWarning
    from tqdm.auto import tqdm

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    t0 = time.time()
    st_rows, loc_rows, plot = [], [], None
    bar = tqdm(total=len(seeds) * (len(n_per_class) + 1), desc="weak", disable=not verbose)
    for seed in seeds:
        for n in n_per_class:
            st_rows.append({"seed": seed, "n_per_class": n, **run_selftraining(seed, n, max_rounds)})
            bar.update(1)
        r = run_localization(seed, n_train, n_test, epochs)
        if plot is None:
            plot = r["plot"]
        loc_rows.append({"seed": seed, "methods": r["methods"], "n_positive_test": r["n_positive_test"]})
        bar.update(1)
    bar.close()
    return {
        "selftraining": st_rows,
        "localization": loc_rows,
        "plot": plot,
        "settings": {
            "seeds": list(seeds),
            "n_per_class": list(n_per_class),
            "n_train_canvases": n_train,
            "n_test_canvases": n_test,
            "epochs": epochs,
            "max_rounds": max_rounds,
            "Cs": list(CS),
            "thresholds": list(THRESHOLDS),
            "canvas": 24,
            "min_size": 4,
            "max_size": 12,
        },
        "seconds": time.time() - t0,
    }


def _ms(v) -> str:
    v = np.asarray(v, dtype=float) * 100
    return f"{v.mean():.1f} ± {v.std():.1f}"


def table(result: dict) -> str:
    """Markdown: (a) test accuracy per method and n, pseudo-label accuracy per round; (b)
    localisation accuracy and mean IoU per method, and ESS vs exhaustive box counts."""
    st, ns = result["selftraining"], result["settings"]["n_per_class"]
    out = [
        "**(a) Self-training, digits, test accuracy (%)**",
        "",
        "| method | " + " | ".join(f"{n} labelled / class" for n in ns) + " |",
        "|---|" + "---|" * len(ns),
    ]
    for m, lab in ST_LABELS.items():
        out.append(
            f"| {lab} | "
            + " | ".join(_ms([r[m]["test_accuracy"] for r in st if r["n_per_class"] == n]) for n in ns)
            + " |"
        )
    out += [
        "",
        "Pseudo-labels of the chosen self-training run, per round (mean over seeds): "
        "count / accuracy (%); threshold chosen: "
        + ", ".join(f"n={n}: {[r['self_training']['threshold'] for r in st if r['n_per_class'] == n]}" for n in ns),
        "",
    ]
    rounds = max(len(r["self_training"]["rounds"]) for r in st)
    out += [
        "| n / class | " + " | ".join(f"round {k}" for k in range(1, rounds)) + " |",
        "|---|" + "---|" * (rounds - 1),
    ]
    for n in ns:
        cells = []
        for k in range(1, rounds):
            hs = [
                r["self_training"]["rounds"][k]
                for r in st
                if r["n_per_class"] == n
                and len(r["self_training"]["rounds"]) > k
                and r["self_training"]["rounds"][k]["pseudo_accuracy"] is not None
            ]
            cells.append(
                f"{np.mean([h['n_pseudo'] for h in hs]):.0f} / {100 * np.mean([h['pseudo_accuracy'] for h in hs]):.1f}"
                f"{'' if len(hs) == len([r for r in st if r['n_per_class'] == n]) else f' ({len(hs)} seeds)'}"
                if hs
                else "stopped"
            )
        out.append(f"| {n} | " + " | ".join(cells) + " |")
    loc = result["localization"]
    out += [
        "",
        "**(b) Weakly-supervised localisation, 24x24 canvas digits, positive test canvases**",
        "",
        "| method | localisation accuracy, IoU ≥ 0.5 (%) | mean IoU (%) | image-level accuracy (%) |",
        "|---|---|---|---|",
    ]
    for m, lab in LOC_LABELS.items():
        rows = [r["methods"][m] for r in loc]
        img = _ms([r["image_accuracy"] for r in rows]) if "image_accuracy" in rows[0] else "-"
        out.append(
            f"| {lab} | {_ms([r['loc_accuracy'] for r in rows])} | {_ms([r['mean_iou'] for r in rows])} | {img} |"
        )
    w = [r["methods"]["weak_window"] for r in loc]
    out += [
        "",
        f"Boxes evaluated per image (sizes 4-12): ESS {np.mean([r['ess_boxes_mean'] for r in w]):.0f} on average "
        f"(max {max(r['ess_boxes_max'] for r in w)}) vs exhaustive {w[0]['exhaustive_boxes']}; same box as exhaustive "
        f"on {100 * np.mean([r['same_box_fraction'] for r in w]):.1f}% of images, same score on all: "
        f"{all(r['same_score'] for r in w)}; wall time per image ESS "
        f"{1e3 * np.mean([r['ess_seconds_per_image'] for r in w]):.2f} ms (pure Python) vs exhaustive "
        f"{1e3 * np.mean([r['exhaustive_seconds_per_image'] for r in w]):.2f} ms (vectorised numpy).",
    ]
    return "\n".join(out)


def plot(result: dict, path: str) -> None:
    """A few positive test canvases (first seed) with the true (green) and predicted (red) boxes,
    and the score maps below them."""
    from matplotlib.patches import Rectangle

    from .._plots import subplots

    p = result["plot"]
    k = len(p["images"])
    fig, axes = subplots(2, k, figsize=(1.8 * k, 3.8))
    for i in range(k):
        for row, img, cmap in ((0, p["images"][i], "gray"), (1, p["maps"][i], "RdBu_r")):
            ax = axes[row, i]
            a = np.asarray(img)
            lim = np.abs(a).max() or 1.0
            ax.imshow(a, cmap=cmap, **({} if row == 0 else {"vmin": -lim, "vmax": lim}))
            for box, col in ((p["true"][i], "lime"), (p["pred"][i], "red")):
                y0, x0, y1, x1 = box
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color=col, lw=1.5))
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("canvas")
    axes[1, 0].set_ylabel("score map s(p)")
    fig.suptitle("Weakly-supervised localisation: true box (green), ESS arg-max box (red)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _cmd(args) -> int:
    seeds = seeds_of(args)
    ns = [int(v) for v in args.n_per_class.split(",")]
    result = run(
        seeds, verbose=not args.quiet, n_per_class=ns, n_train=args.n_train, n_test=args.n_test, epochs=args.epochs
    )
    print(f"weak supervision on digits, mean ± std over seeds {seeds} ({result['seconds']:.0f} s)")
    print(table(result))
    return write_outputs(args, result, plot, payload={k: v for k, v in result.items() if k != "plot"})  # no pixels


def add_parser(subparsers) -> None:
    """Registers the ``weak`` subcommand."""
    p = subparsers.add_parser("weak", help="weak supervision: self-training on digits, weakly-supervised localisation")
    add_common_args(p, plot_help="canvases with true and predicted boxes (PNG)")
    p.add_argument("--n-per-class", default="2,5", help="labelled digits per class for self-training (comma-separated)")
    p.add_argument("--n-train", type=int, default=800, help="training canvases (image-level labels only)")
    p.add_argument("--n-test", type=int, default=400, help="test canvases (half hold a digit)")
    p.add_argument("--epochs", type=int, default=8, help="epochs of the localiser")
    p.set_defaults(func=_cmd)
