"""SOSELETO (c) on SynDigits 0-4 -> MNIST 5-9 (tlkernels.experiments.soseleto_digits): one run per
seed, then a report over the seeds (table, per-seed differences, where alpha goes).

    OMP_NUM_THREADS=1 python bench/soseleto_digits.py run --n-target 20 --seeds 0 1 2 3 4
    python bench/soseleto_digits.py report --n-target 20

`run` writes bench/results/svhn_mnist/n<N>_seed<S>.json (alpha values in a .npz beside it);
`report` writes bench/results/soseleto_svhn_mnist_<N>.json (every seed and the summary) and
bench/results/soseleto_svhn_mnist_<N>.png, and prints the markdown table.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import numpy as np
import torch

from tlkernels.experiments.soseleto_digits import ROW_LABELS, TARGET_GRID, run_svhn_mnist

sys.path.insert(0, os.path.dirname(__file__))
from common import cpu_model  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
RUNS = os.path.join(RESULTS, "svhn_mnist")


def run(args) -> None:
    os.makedirs(RUNS, exist_ok=True)
    torch.set_num_threads(args.threads)
    for seed in args.seeds:
        r = run_svhn_mnist(
            args.n_target,
            seed,
            source_epochs=args.source_epochs,
            source_style=args.source_style,
            keep_alpha=True,
            target_grid={**TARGET_GRID, "lrs": tuple(args.lrs)},
            **SHIFTS[args.shift],
        )
        alpha = r.pop("alpha_values")
        stem = os.path.join(
            RUNS, f"{_stem(args.source_style, args.n_target, args.shift, args.lrs, args.source_epochs)}_seed{seed}"
        )
        np.savez_compressed(stem + "_alpha.npz", **{k: np.asarray(v, dtype=np.float32) for k, v in alpha.items()})
        r["machine"] = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": args.threads,
                        "date": time.strftime("%Y-%m-%d")}  # fmt: skip
        with open(stem + ".json", "w") as f:
            json.dump(r, f, indent=1)
        acc = " ".join(f"{k} {v * 100:.1f}" for k, v in r["accuracy"].items())
        print(f"seed {seed}: {acc}; {r['seconds']['total']:.0f} s wall, {r['cpu_seconds']['total']:.0f} s CPU")


# --shift: the digits of source and target (new labels: 0-4 -> 5-9; same labels: 0-9 -> 0-9)
SHIFTS = {"new": {}, "same": {"source_digits": range(10), "target_digits": range(10)}}


def _stem(style: str, n_target: int, shift: str = "new", lrs=None, source_epochs: int = 3) -> str:
    """File stem of a setting: n<N> for SynDigits 0-4 -> MNIST 5-9, prefixed by the style and the
    shift when they differ (plain_n<N>, same_n<N>, ...), suffixed by _lr<K> when the target-side
    grid has K learning rates instead of TARGET_GRID's and by _ep<E> for E source epochs (not 3)."""
    parts = [p for p in (style if style != "syn" else "", shift if shift != "new" else "") if p] + [f"n{n_target}"]
    if lrs is not None and tuple(lrs) != tuple(TARGET_GRID["lrs"]):
        parts.append(f"lr{len(lrs)}")
    if source_epochs != 3:
        parts.append(f"ep{source_epochs}")
    return "_".join(parts)


def _load(n_target: int, style: str = "syn", shift: str = "new", lrs=None, source_epochs: int = 3) -> tuple[list, dict]:
    runs, alphas = [], {}
    for path in sorted(
        glob.glob(os.path.join(RUNS, f"{_stem(style, n_target, shift, lrs, source_epochs)}_seed*.json"))
    ):
        with open(path) as f:
            r = json.load(f)
        runs.append(r)
        with np.load(path[: -len(".json")] + "_alpha.npz") as z:
            alphas[r["seed"]] = {k: z[k] for k in z.files}
    if not runs:
        raise SystemExit(f"no runs for n_target={n_target} under {RUNS}: run first")
    return sorted(runs, key=lambda r: r["seed"]), alphas


def report(args) -> None:
    from scipy.stats import spearmanr

    runs, alphas = _load(args.n_target, args.source_style, args.shift, args.lrs, args.source_epochs)
    seeds = [r["seed"] for r in runs]
    acc = {k: np.array([r["accuracy"][k] for r in runs]) * 100 for k in ROW_LABELS}
    probe = {k: np.array([r["linear_probe"][k] for r in runs]) * 100 for k in runs[0]["linear_probe"]}
    diffs = {
        "fine_tuning - target_only": acc["fine_tuning"] - acc["target_only"],
        "soseleto_ft - fine_tuning": acc["soseleto_ft"] - acc["fine_tuning"],
        "soseleto_ft - soseleto_frozen_ft": acc["soseleto_ft"] - acc["soseleto_frozen_ft"],
        "soseleto - soseleto_frozen": acc["soseleto"] - acc["soseleto_frozen"],
        "probe pretrained - random": probe["pretrained"] - probe["random"],
    }
    a = [alphas[s]["soseleto"] for s in seeds]
    pairs = [(i, j) for i in range(len(a)) for j in range(i + 1, len(a))]
    rho = [float(spearmanr(a[i], a[j]).statistic) for i, j in pairs]
    summary = {
        "seeds": seeds,
        "accuracy_mean": {k: float(v.mean()) for k, v in acc.items()},
        "accuracy_std": {k: float(v.std()) for k, v in acc.items()},
        "probe_mean": {k: float(v.mean()) for k, v in probe.items()},
        "probe_std": {k: float(v.std()) for k, v in probe.items()},
        "differences": {k: v.tolist() for k, v in diffs.items()},
        "alpha_spearman_between_seeds": rho,
        "seconds_per_seed": [r["seconds"]["total"] for r in runs],
        "cpu_seconds_per_seed": [r["cpu_seconds"]["total"] for r in runs],
    }
    suffix = "".join(f"_{p}" for p in (args.source_style, args.shift) if p not in ("syn", "new"))
    if tuple(args.lrs) != tuple(TARGET_GRID["lrs"]):
        suffix += f"_lr{len(args.lrs)}"
    if args.source_epochs != 3:
        suffix += f"_ep{args.source_epochs}"
    out = os.path.join(RESULTS, f"soseleto_svhn_mnist_{args.n_target}{suffix}")
    with open(out + ".json", "w") as f:
        json.dump({"summary": summary, "runs": runs}, f, indent=1)
    _plot(runs, alphas, acc, out + ".png")
    print(f"wrote {out}.json and {out}.png\n")
    print(f"| method | test accuracy % (mean ± std, {len(seeds)} seeds) | per seed ({', '.join(map(str, seeds))}) |")
    print("|---|---|---|")
    for k, label in ROW_LABELS.items():
        print(f"| {label} | {acc[k].mean():.1f} ± {acc[k].std():.1f} | {' / '.join(f'{x:.1f}' for x in acc[k])} |")
    for k, v in probe.items():
        print(f"| linear probe, {k} features | {v.mean():.1f} ± {v.std():.1f} | {' / '.join(f'{x:.1f}' for x in v)} |")
    print("\n| difference (points) | mean | per seed |\n|---|---|---|")
    for k, v in diffs.items():
        print(f"| {k} | {v.mean():+.1f} | {' / '.join(f'{x:+.1f}' for x in v)} |")
    print(f"\nalpha Spearman between seeds: {np.mean(rho):.3f} (range {min(rho):.3f} .. {max(rho):.3f})" if rho else "")
    print(f"wall s per seed: {[round(x) for x in summary['seconds_per_seed']]}; CPU s per seed: "
          f"{[round(x) for x in summary['cpu_seconds_per_seed']]}")  # fmt: skip


def _plot(runs, alphas, acc, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(16, 4.6), gridspec_kw={"width_ratios": [1.1, 0.8, 1.6]})
    keys = list(ROW_LABELS)
    for j, s in enumerate(r["seed"] for r in runs):
        ax[0].plot(range(len(keys)), [acc[k][j] for k in keys], "o-", alpha=0.6, label=f"seed {s}")
    ax[0].set_xticks(range(len(keys)), [ROW_LABELS[k] for k in keys], rotation=35, ha="right", fontsize=8)
    ax[0].set(ylabel="MNIST 5-9 test accuracy %", title=f"n_t = {runs[0]['n_target']}, per seed")
    ax[0].legend(fontsize=7)
    per_digit = np.array([[r["alpha"]["soseleto"]["mean_per_digit"][str(d)] for d in range(5)] for r in runs])
    ax[1].bar(range(5), per_digit.mean(0), yerr=per_digit.std(0), capsize=3)
    ax[1].set(xlabel="source digit", ylabel="mean alpha", title="alpha per source digit",
              ylim=(max(0.0, per_digit.min() - 0.1), 1.0))  # fmt: skip
    fonts = list(runs[0]["alpha"]["soseleto"]["mean_per_font"])
    per_font = np.array([[r["alpha"]["soseleto"]["mean_per_font"][f] for f in fonts] for r in runs])
    order = np.argsort(per_font.mean(0))
    ax[2].bar(range(len(fonts)), per_font.mean(0)[order], yerr=per_font.std(0)[order], capsize=2)
    ax[2].set_xticks(range(len(fonts)), [fonts[i].removesuffix(".ttf") for i in order], rotation=70, ha="right",
                     fontsize=7)  # fmt: skip
    ax[2].set(ylabel="mean alpha", title="alpha per font (SynDigits style)",
              ylim=(max(0.0, per_font.min() - 0.1), 1.0))  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--n-target", type=int, default=20)
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    r.add_argument("--source-epochs", type=int, default=3)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--source-style", default="syn", help="make_syndigits style of the source: syn or plain")
    r.add_argument("--shift", choices=sorted(SHIFTS), default="new", help="new labels (0-4 -> 5-9) or same (0-9)")
    r.add_argument("--lrs", type=float, nargs="+", default=list(TARGET_GRID["lrs"]),
                   help="learning rates of every target-side row's grid (default: TARGET_GRID's)")  # fmt: skip
    r.set_defaults(func=run)
    p = sub.add_parser("report")
    p.add_argument("--n-target", type=int, default=20)
    p.add_argument("--source-style", default="syn")
    p.add_argument("--shift", choices=sorted(SHIFTS), default="new")
    p.add_argument("--lrs", type=float, nargs="+", default=list(TARGET_GRID["lrs"]))
    p.add_argument("--source-epochs", type=int, default=3)
    p.set_defaults(func=report)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
