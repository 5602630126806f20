"""Markdown tables of the SOSELETO experiments from the JSON files the CLI wrote.

python bench/soseleto_tables.py bench/results   # after the tlkernels soseleto runs below
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

LABELS = {
    "target_only": "Target only",
    "fine_tuning": "Fine-tuning",
    "soseleto": "SOSELETO",
    "soseleto_ft": "SOSELETO + fine-tuning",
}


def ms(values) -> str:
    v = np.asarray(values, dtype=float) * 100
    return f"{v.mean():.1f} ± {v.std():.1f}"


def main(folder: str) -> None:
    load = lambda name: json.load(open(os.path.join(folder, name)))  # noqa: E731
    syn = load("soseleto_synthetic.json")
    syn = syn if isinstance(syn, list) else [syn]
    print(
        f"(a) synthetic 2-D set: alpha's AUROC clean vs flipped {np.mean([r['auroc'] for r in syn]):.3f} "
        f"± {np.std([r['auroc'] for r in syn]):.3f} over {len(syn)} seeds\n"
    )
    noisy = {n: load(f"soseleto_noisy_{n}.json") for n in ("0.3", "0.4", "0.5")}
    print("(b) digits, symmetric label noise on the source, 100 clean target examples, test accuracy (%)\n")
    print("| method | " + " | ".join(f"{int(float(n) * 100)}% noise" for n in noisy) + " |")
    print("| --- |" + " --- |" * len(noisy))
    for m in LABELS:
        print(f"| {LABELS[m]} | " + " | ".join(ms([r["accuracy"][m] for r in rs]) for rs in noisy.values()) + " |")
    print(
        "| alpha AUROC clean/noisy | "
        + " | ".join(
            f"{np.mean([r['auroc'] for r in rs]):.3f} ± {np.std([r['auroc'] for r in rs]):.3f}" for rs in noisy.values()
        )
        + " |"
    )
    dis = {
        f"{shift}, n_t = {n}": load(f"soseleto_disjoint_{shift + '_' if shift != 'clean' else ''}{n}.json")
        for shift in ("clean", "rotation", "blur_noise")
        for n in ("20", "25")
    }
    print(
        "\n(c) digits 0-4 (source) -> 5-9 (target), n_t labelled target examples in all; the target clean, or "
        "shifted (disjoint images), test accuracy (%)\n"
    )
    print("| method | " + " | ".join(dis) + " |")
    print("| --- |" + " --- |" * len(dis))
    for m in LABELS:
        print(f"| {LABELS[m]} | " + " | ".join(ms([r["accuracy"][m] for r in rs]) for rs in dis.values()) + " |")
    for k in ("pretrained", "random"):
        print(
            f"| linear probe, {k} features | "
            + " | ".join(ms([r["linear_probe"][k] for r in rs]) for rs in dis.values())
            + " |"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/results")
