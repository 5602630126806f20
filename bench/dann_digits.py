"""DANN on SynDigits 0-9 -> MNIST 0-9 (tlkernels.experiments.dann_digits): source only, DANN with
lam_max chosen by reverse validation, DANN at lam_max 1, target oracle; one JSON for all seeds.

    OMP_NUM_THREADS=1 python bench/dann_digits.py --seeds 0 1 2 --json bench/results/dann_digits.json

--diagnose: instead, dann_alignment_diagnostic per seed and source style (test accuracy per epoch,
the domain head's accuracy and an oracle target probe of the features, for each lam_max):

    OMP_NUM_THREADS=1 python bench/dann_digits.py --diagnose --epochs 8 --seeds 0 1 --styles syn plain \
        --json bench/results/dann_digits_diagnostic.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from tlkernels.experiments.dann_digits import dann_alignment_diagnostic, run_dann_digits

LABELS = {"source_only": "Source only (lam_max 0)", "dann": "DANN (lam_max by reverse validation)",
          "dann_lam1": "DANN (lam_max 1)", "target_oracle": "Target oracle (labelled MNIST)"}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--n-source", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="bench/results/dann_digits.json")
    ap.add_argument("--diagnose", action="store_true", help="run dann_alignment_diagnostic instead")
    ap.add_argument("--styles", nargs="+", default=["syn"], help="source styles for --diagnose (syn, plain)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.diagnose:
        diagnose(args)
        return
    runs = []
    for s in args.seeds:
        r = run_dann_digits(s, n_source=args.n_source, epochs=args.epochs)
        runs.append(r)
        print(f"seed {s}: " + " ".join(f"{k} {v * 100:.1f}" for k, v in r["accuracy"].items())
              + f"; rv {r['rv_scores']}; {r['seconds']:.0f} s wall, {r['cpu_seconds']:.0f} s CPU")  # fmt: skip
        with open(args.json, "w") as f:  # after every seed: a partial result survives an interruption
            json.dump({"runs": runs, "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count()}, f, indent=1)
    print(f"\n| method | MNIST 0-9 test accuracy % (mean ± std, {len(runs)} seeds) | per seed |\n|---|---|---|")
    for k, label in LABELS.items():
        v = np.array([r["accuracy"][k] for r in runs]) * 100
        print(f"| {label} | {v.mean():.1f} ± {v.std():.1f} | {' / '.join(f'{x:.1f}' for x in v)} |")
    d = np.array([r["accuracy"]["dann"] - r["accuracy"]["source_only"] for r in runs]) * 100
    print(f"\nDANN - source only: {d.mean():+.1f} points (per seed {' / '.join(f'{x:+.1f}' for x in d)})")


def diagnose(args) -> None:
    from common import cpu_model

    runs = []
    for style in args.styles:
        for s in args.seeds:
            r = dann_alignment_diagnostic(s, epochs=args.epochs, n_source=args.n_source, source_style=style)
            runs.append(r)
            for lam, v in r["by_lam"].items():
                print(f"{style} seed {s} lam_max {lam}: test {v['test'] * 100:.1f} (by epoch "
                      f"{' '.join(f'{x * 100:.1f}' for x in v['test_by_epoch'])}), domain head {v['domain_accuracy']:.2f}, "
                      f"target probe {v['target_probe'] * 100:.1f}", flush=True)  # fmt: skip
            with open(args.json, "w") as f:
                json.dump({"runs": runs, "date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(),
                           "cores": os.cpu_count()}, f, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
