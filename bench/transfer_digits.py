"""The representation-transfer table on SynDigits 0-4 -> MNIST 5-9 (tlkernels.experiments.transfer_digits):
one run per seed, then a report over the seeds.

    OMP_NUM_THREADS=1 python bench/transfer_digits.py run --n-target 20 --seeds 0 1 2
    python bench/transfer_digits.py report --n-target 20

`run` adds each seed's result to bench/results/transfer_digits_<N>.json (a seed run again replaces
its earlier result); `report` prints the markdown table (mean ± std and per-seed values), the
per-seed differences against target only and the random-feature probe, and the cost, and stores
the summary in the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from tlkernels.experiments.transfer_digits import LABELS, METHODS, run_transfer_digits

sys.path.insert(0, os.path.dirname(__file__))
from common import cpu_model  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def _path(n_target: int) -> str:
    return os.path.join(RESULTS, f"transfer_digits_{n_target}.json")


def _load(n_target: int) -> dict:
    path = _path(n_target)
    if not os.path.exists(path):
        return {"runs": []}
    with open(path) as f:
        return json.load(f)


def _save(n_target: int, data: dict) -> None:
    os.makedirs(RESULTS, exist_ok=True)
    data["runs"] = sorted(data["runs"], key=lambda r: r["seed"])
    with open(_path(n_target), "w") as f:
        json.dump(data, f, indent=1)


def run(args) -> None:
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores, {args.threads} torch thread(s)")
    for seed in args.seeds:
        r = run_transfer_digits(args.n_target, seed, args.methods, n_source=args.n_source,
                                source_epochs=args.source_epochs)  # fmt: skip
        r["machine"] = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": args.threads,
                        "date": time.strftime("%Y-%m-%d")}  # fmt: skip
        data = _load(args.n_target)
        data["runs"] = [x for x in data["runs"] if x["seed"] != seed] + [r]
        _save(args.n_target, data)
        acc = " ".join(f"{k} {v * 100:.1f}" for k, v in r["accuracy"].items())
        print(f"seed {seed}: {acc}; {r['cpu_seconds']['total']:.0f} s CPU, {r['seconds']['total']:.0f} s wall")


def report(args) -> None:
    data = _load(args.n_target)
    runs = data["runs"]
    if not runs:
        raise SystemExit(f"no runs in {_path(args.n_target)}: run first")
    seeds = [r["seed"] for r in runs]
    methods = [m for m in METHODS if all(m in r["accuracy"] for r in runs)]
    acc = {m: np.array([r["accuracy"][m] for r in runs]) * 100 for m in methods}
    r0 = runs[0]
    print(f"SynDigits 0-4 ({r0['n_source']} images) -> MNIST 5-9, n_t = {r0['n_target']} ({r0['n_train']} train + "
          f"{r0['n_val']} validation), test {r0['n_test']}; {len(seeds)} seeds; {r0['machine']['cpu']}\n")  # fmt: skip
    print(f"| method | test accuracy % (mean ± std, {len(seeds)} seeds) | per seed ({', '.join(map(str, seeds))}) |")
    print("|---|---|---|")
    for m in methods:
        v = acc[m]
        print(f"| {LABELS[m]} | {v.mean():.1f} ± {v.std():.1f} | {' / '.join(f'{x:.1f}' for x in v)} |")
    diffs = {}
    for base in ("target_only", "probe_random"):
        if base not in acc:
            continue
        print(f"\n| minus {LABELS[base]} (points) | mean | per seed | seeds above |\n|---|---|---|---|")
        for m in methods:
            if m == base:
                continue
            d = acc[m] - acc[base]
            diffs[f"{m} - {base}"] = d.tolist()
            print(
                f"| {LABELS[m]} | {d.mean():+.1f} | {' / '.join(f'{x:+.1f}' for x in d)} | {(d > 0).sum()}/{len(d)} |"
            )
    cpu = np.array([r["cpu_seconds"]["total"] for r in runs])
    wall = np.array([r["seconds"]["total"] for r in runs])
    phases = {k: float(np.mean([r["cpu_seconds"].get(k, 0.0) for r in runs])) for k in r0["cpu_seconds"]}
    print(f"\nCPU s per seed: {[round(x) for x in cpu]} (total {cpu.sum():.0f} s); wall s per seed: "
          f"{[round(x) for x in wall]}")  # fmt: skip
    print("mean CPU s per phase: " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items() if k != "total"))
    pre = {k: [r["pretraining"].get(k) for r in runs] for k in r0["pretraining"]}
    print("pre-training: " + "; ".join(f"{k} {' / '.join(f'{x:.3f}' for x in v)}" for k, v in pre.items()))
    chosen = {m: [r["chosen"][m] for r in runs] for m in ("flextune", "layer_transfer", "l2sp", "lwf") if m in acc}
    for m, c in chosen.items():
        print(f"chosen {m}: {c}")
    data["summary"] = {
        "seeds": seeds,
        "accuracy_mean": {m: float(v.mean()) for m, v in acc.items()},
        "accuracy_std": {m: float(v.std()) for m, v in acc.items()},
        "differences": diffs,
        "cpu_seconds_per_seed": cpu.tolist(),
        "wall_seconds_per_seed": wall.tolist(),
        "cpu_seconds_per_phase_mean": phases,
    }
    _save(args.n_target, data)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run seeds, add them to bench/results/transfer_digits_<N>.json")
    r.add_argument("--n-target", type=int, default=20)
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--methods", nargs="+", default=None, choices=METHODS)
    r.add_argument("--n-source", type=int, default=5000)
    r.add_argument("--source-epochs", type=int, default=3)
    r.add_argument("--threads", type=int, default=1)
    r.set_defaults(func=run)
    s = sub.add_parser("report", help="the table over the seeds run")
    s.add_argument("--n-target", type=int, default=20)
    s.set_defaults(func=report)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
