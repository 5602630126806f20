"""The dataserver experiment on the digit domains (tlkernels.experiments.dataserver_digits): one run
per seed, then a report over the seeds (accuracy and selection precision per method).

    OMP_NUM_THREADS=1 python bench/dataserver_digits.py run --seeds 0 1 2
    python bench/dataserver_digits.py report

`run` writes bench/results/dataserver_digits/n<N>_seed<S>.json (N labelled images per class;
n<N>_ep<E> with --pretrain-epochs E other than 3); `report` gathers them into
bench/results/dataserver_digits.json (n20; dataserver_digits_<stem>.json for the others: every
seed and the summary) and prints the markdown tables.
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

from tlkernels.experiments.dataserver_compare import METHODS
from tlkernels.experiments.dataserver_digits import DigitsStoreConfig, digits_recipe, run_dataserver_digits

sys.path.insert(0, os.path.dirname(__file__))
from common import cpu_model  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
RUNS = os.path.join(RESULTS, "dataserver_digits")
LABELS = {
    "none": "no pre-training",
    "full": "100 % of the store",
    "uniform_20": "uniform 20 %",
    "uniform_40": "uniform 40 %",
    "ngiam_20": "Ngiam et al. 20 %",
    "ours_20": "ours 20 % (rotation scores)",
    "ours_40": "ours 40 % (rotation scores)",
    "ours_probe_20": "ours 20 % (probe scores)",
    "oracle_20": "oracle 20 % (uniform over the digit sources)",
}


def run(args) -> None:
    os.makedirs(RUNS, exist_ok=True)
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores, {args.threads} torch thread(s)")
    config = DigitsStoreConfig(
        syndigits_digits=tuple(range(args.syndigits_digits)),
        k=args.partitions,
        partition_epochs=args.partition_epochs,
        expert_epochs=args.expert_epochs,
    )
    recipe = digits_recipe(pretrain_epochs=args.pretrain_epochs)
    for seed in args.seeds:
        r = run_dataserver_digits(seed, config, recipe, methods=args.methods, n_train_per_class=args.n_train_per_class)
        r["machine"] = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": args.threads,
                        "date": time.strftime("%Y-%m-%d")}  # fmt: skip
        with open(
            os.path.join(RUNS, f"{_stem(args.n_train_per_class, args.pretrain_epochs)}_seed{seed}.json"), "w"
        ) as f:
            json.dump(r, f, indent=1)
        acc = " ".join(f"{k} {v * 100:.1f}" for k, v in r["accuracy"].items())
        print(
            f"seed {seed}: {acc}; {r['seconds']['total']:.0f} s wall, {r['cpu_seconds']['total']:.0f} s CPU", flush=True
        )


def _stem(n_train_per_class: int, pretrain_epochs: int = 3) -> str:
    """n<labelled per class>, with _ep<E> when the pre-training epochs are not the default 3."""
    return f"n{n_train_per_class}" + (f"_ep{pretrain_epochs}" if pretrain_epochs != 3 else "")


def report(args) -> None:
    stem = _stem(args.n_train_per_class, args.pretrain_epochs)
    paths = sorted(glob.glob(os.path.join(RUNS, f"{stem}_seed*.json")))
    if not paths:
        raise SystemExit(f"no runs under {RUNS} for {args.n_train_per_class} labelled per class: run first")
    runs = []
    for p in paths:
        with open(p) as f:
            runs.append(json.load(f))
    runs.sort(key=lambda r: r["seed"])
    seeds = [r["seed"] for r in runs]
    methods = [m for m in runs[0]["accuracy"] if all(m in r["accuracy"] for r in runs)]
    acc = {m: np.array([r["accuracy"][m] for r in runs]) * 100 for m in methods}
    prec = {m: np.array([r["selection_precision"][m] for r in runs]) for m in methods if m != "none"}
    mnist = {m: np.array([r["selection_shares"][m]["mnist_0_4"] for r in runs]) for m in prec}
    diffs = {
        f"{a} - {b}": (acc[a] - acc[b]).tolist()
        for a, b in (
            ("ours_20", "uniform_20"),
            ("ours_40", "uniform_40"),
            ("full", "none"),
            ("oracle_20", "uniform_20"),
        )
        if a in acc and b in acc
    }
    summary = {
        "seeds": seeds,
        "accuracy_mean": {m: float(v.mean()) for m, v in acc.items()},
        "accuracy_std": {m: float(v.std()) for m, v in acc.items()},
        "precision_mean": {m: float(v.mean()) for m, v in prec.items()},
        "precision_std": {m: float(v.std()) for m, v in prec.items()},
        "mnist_share_mean": {m: float(v.mean()) for m, v in mnist.items()},
        "differences": diffs,
        "pad_score_correlation": [r["pad_score_correlation"] for r in runs],
        "seconds_per_seed": [r["seconds"]["total"] for r in runs],
        "cpu_seconds_per_seed": [r["cpu_seconds"]["total"] for r in runs],
        "machine": runs[0].get("machine"),
    }
    out = os.path.join(RESULTS, "dataserver_digits.json" if stem == "n20" else f"dataserver_digits_{stem}.json")
    with open(out, "w") as f:
        json.dump({"summary": summary, "runs": runs}, f, indent=1)
    print(f"wrote {out} (CPU of the runs: {summary['machine'] and summary['machine']['cpu']})\n")
    print(f"| pre-training data | target test accuracy % (mean ± std, {len(seeds)} seeds) | per seed "
          f"({', '.join(map(str, seeds))}) | selection precision | share of MNIST 0–4 |")  # fmt: skip
    print("|---|---|---|---|---|")
    for m in methods:
        p = f"{prec[m].mean():.2f} ± {prec[m].std():.2f}" if m in prec else "–"
        s = f"{mnist[m].mean():.2f}" if m in mnist else "–"
        per = " / ".join(f"{x:.1f}" for x in acc[m])
        print(f"| {LABELS.get(m, m)} | {acc[m].mean():.1f} ± {acc[m].std():.1f} | {per} | {p} | {s} |")
    print()
    for k, v in diffs.items():
        print(f"{k}: mean {np.mean(v):+.1f}, per seed {' / '.join(f'{x:+.1f}' for x in v)}")
    c = np.array(summary["pad_score_correlation"])
    print(f"proxy A-distance vs expert score, correlation over partitions: {c.mean():.2f} ± {c.std():.2f}")
    cpu = np.array(summary["cpu_seconds_per_seed"])
    print(f"cost: {cpu.mean():.0f} s CPU per seed ({cpu.sum():.0f} s for {len(seeds)} seeds), "
          f"{np.mean(summary['seconds_per_seed']):.0f} s wall per seed")  # fmt: skip


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run seeds, one JSON each")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--methods", nargs="+", default=[*METHODS, "oracle_20"])
    r.add_argument("--n-train-per-class", type=int, default=20)
    r.add_argument("--syndigits-digits", type=int, choices=(5, 10), default=10, help="SynDigits 0-4 or 0-9")
    r.add_argument("--partitions", type=int, default=DigitsStoreConfig.k)
    r.add_argument("--partition-epochs", type=int, default=DigitsStoreConfig.partition_epochs)
    r.add_argument("--expert-epochs", type=int, default=DigitsStoreConfig.expert_epochs)
    r.add_argument("--pretrain-epochs", type=int, default=3)
    r.add_argument("--threads", type=int, default=1)
    r.set_defaults(func=run)
    p = sub.add_parser("report", help="table over the seeds run")
    p.add_argument("--n-train-per-class", type=int, default=20)
    p.add_argument("--pretrain-epochs", type=int, default=3)
    p.set_defaults(func=report)
    args = ap.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
