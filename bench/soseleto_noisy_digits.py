"""SOSELETO (b) on SynDigits 0-9 with symmetric label noise, a few clean SynDigits as the target
(tlkernels.experiments.soseleto_noisy_digits); one JSON for all seeds and the table.

    OMP_NUM_THREADS=1 python bench/soseleto_noisy_digits.py --seeds 0 1 2 --json bench/results/soseleto_noisy_digits.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from tlkernels.experiments.soseleto_noisy_digits import run_noisy_digits

LABELS = {"target_only": "Target only (tuned)", "source_only": "Source only (noisy labels)",
          "fine_tuning": "Fine-tuning", "soseleto": "SOSELETO (shared head)", "soseleto_ft": "SOSELETO + fine-tuning",
          "soseleto_frozen": "alpha frozen", "soseleto_frozen_ft": "alpha frozen + fine-tuning"}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--noise", type=float, default=0.4)
    ap.add_argument("--n-target", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="bench/results/soseleto_noisy_digits.json")
    ap.add_argument("--target", choices=["syndigits", "mnist"], default="syndigits", help="the clean target's domain")
    ap.add_argument("--source-epochs", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs = []
    for s in args.seeds:
        r = run_noisy_digits(s, noise=args.noise, n_target=args.n_target, target_domain=args.target,
                             source_epochs=args.source_epochs)  # fmt: skip
        runs.append(r)
        print(f"seed {s}: " + " ".join(f"{k} {v * 100:.1f}" for k, v in r["accuracy"].items())
              + f"; AUROC {r['auroc']['soseleto']:.3f}; {r['seconds']['total']:.0f} s wall, "
              f"{r['cpu_seconds']['total']:.0f} s CPU")  # fmt: skip
        with open(args.json, "w") as f:  # after every seed: a partial result survives an interruption
            json.dump({"runs": runs, "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count()}, f, indent=1)
    print(
        f"\n| method | {runs[0]['target']} test accuracy % (mean ± std, {len(runs)} seeds) | per seed |\n|---|---|---|"
    )
    for k, label in LABELS.items():
        v = np.array([r["accuracy"][k] for r in runs]) * 100
        print(f"| {label} | {v.mean():.1f} ± {v.std():.1f} | {' / '.join(f'{x:.1f}' for x in v)} |")
    a = np.array([r["auroc"]["soseleto"] for r in runs])
    print(
        f"\nalpha AUROC clean vs flipped: {a.mean():.3f} ± {a.std():.3f} (per seed {' / '.join(f'{x:.3f}' for x in a)})"
    )


if __name__ == "__main__":
    main()
