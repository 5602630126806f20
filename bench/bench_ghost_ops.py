"""Per-sample gradient product ops against what a user writes without tlkernels.

At the layer shapes of the per-sample benchmark models (MLP 784-1024-1024-10 at B=256, T=1; token
model Linear 256->1024 over T=64 at B=32; a conv-like layer T=1024, I=288, O=64 at B=128):

- ghost_dot vs (a) materialising Q_i = D_iᵀ A_i with einsum then dotting with G, and
  (b) plain PyTorch ``(A @ G.T * D).sum((1, 2))`` (one GEMM, a B×T×O intermediate);
- ghost_norm vs materialising Q then ``Q.square().sum()``;
- ghost_gram (source batch × a target batch of 16) vs materialising both sides' Q then a GEMM.
  Where the cost rule prefers materialising (2·T·T' > I·O) the ghost Gram is not timed.

Agreement with the float64 reference is asserted first; times are medians after warm-up, in one
run side by side. "extra_MB" is the memory of the largest intermediate each method allocates
(analytic: Q is B·O·I, the plain expression's product B·T·O, ghost_dot one row chunk).

    python bench/bench_ghost_ops.py --json bench/results/ghost_ops.json --plot bench/results/ghost_ops.png
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, median_time, save_figure, write_results  # noqa: E402
from tlkernels import ops, reference  # noqa: E402

SHAPES = {  # name: (B, T, I, O)
    "mlp_fc1_784x1024": (256, 1, 784, 1024),
    "mlp_fc2_1024x1024": (256, 1, 1024, 1024),
    "mlp_fc3_1024x10": (256, 1, 1024, 10),
    "token_256x1024_T64": (32, 64, 256, 1024),
    "conv_like_T1024_288x64": (128, 1024, 288, 64),
}
TARGET_B = 16
CHUNK_ELEMS = 1 << 21  # ghost_dot's row chunk (csrc/cpu/ghost_cpu.cpp)


def materialise_dot(A, D, G):
    return torch.einsum("boi,oi->b", torch.einsum("bto,bti->boi", D, A), G)


def plain_dot(A, D, G):
    return (A @ G.T * D).sum((1, 2))


def materialise_norm(A, D):
    return torch.einsum("bto,bti->boi", D, A).flatten(1).square().sum(1)


def materialise_gram(A1, D1, A2, D2):
    return torch.einsum("bto,bti->boi", D1, A1).flatten(1) @ torch.einsum("bto,bti->boi", D2, A2).flatten(1).T


def check(name, got, A, D, *rest, fn):
    want = fn(A.double(), D.double(), *(r.double() for r in rest))
    err = ((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()
    assert err < 1e-4, f"{name}: relative error {err:.2e}"
    return err


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES))
    parser.add_argument("--json", default="bench/results/ghost_ops.json")
    parser.add_argument("--plot", default="bench/results/ghost_ops.png")
    args = parser.parse_args(argv)

    gen = torch.Generator().manual_seed(0)
    rows = []
    mb = 4 / 2**20  # float32
    for name in args.shapes:
        B, T, I, O = SHAPES[name]
        A = torch.randn(B, T, I, generator=gen)
        D = torch.randn(B, T, O, generator=gen) / (T * O) ** 0.5
        G = torch.randn(O, I, generator=gen)
        A2 = torch.randn(TARGET_B, T, I, generator=gen)
        D2 = torch.randn(TARGET_B, T, O, generator=gen) / (T * O) ** 0.5
        row = {"name": name, "B": B, "T": T, "I": I, "O": O, "target_B": TARGET_B}

        # agreement first
        row["dot_rel_err"] = check("ghost_dot", ops.ghost_dot(A, D, G), A, D, G, fn=reference.ghost_dot)
        row["norm_rel_err"] = check("ghost_norm", ops.ghost_norm(A, D), A, D, fn=reference.ghost_norm)
        ghost_gram_ok = 2 * T * T <= I * O
        if ghost_gram_ok:
            row["gram_rel_err"] = check(
                "ghost_gram", ops.ghost_gram(A, D, A2, D2), A, D, A2, D2, fn=reference.ghost_gram
            )

        t = {}
        t["dot_ghost"] = median_time(lambda: ops.ghost_dot(A, D, G), repeats=args.repeats)
        t["dot_plain"] = median_time(lambda: plain_dot(A, D, G), repeats=args.repeats)
        t["dot_materialise"] = median_time(lambda: materialise_dot(A, D, G), repeats=args.repeats)
        t["norm_ghost"] = median_time(lambda: ops.ghost_norm(A, D), repeats=args.repeats)
        t["norm_materialise"] = median_time(lambda: materialise_norm(A, D), repeats=args.repeats)
        t["gram_materialise"] = median_time(lambda: materialise_gram(A, D, A2, D2), repeats=args.repeats)
        if ghost_gram_ok:
            t["gram_ghost"] = median_time(lambda: ops.ghost_gram(A, D, A2, D2), repeats=args.repeats)
        row.update({f"{k}_ms": v * 1e3 for k, v in t.items()})
        row["dot_speedup_vs_plain"] = t["dot_plain"] / t["dot_ghost"]
        row["dot_speedup_vs_materialise"] = t["dot_materialise"] / t["dot_ghost"]
        row["norm_speedup_vs_materialise"] = t["norm_materialise"] / t["norm_ghost"]
        if ghost_gram_ok:
            row["gram_speedup_vs_materialise"] = t["gram_materialise"] / t["gram_ghost"]
        row["extra_MB"] = {
            "dot_ghost": min(B * T, max(1, CHUNK_ELEMS // min(I, O))) * min(I, O) * mb,
            "dot_plain": B * T * O * mb,
            "materialise_Q": B * O * I * mb,
        }
        rows.append(row)
        gram = (
            f"gram x{row['gram_speedup_vs_materialise']:.2f}"
            if ghost_gram_ok
            else "gram: materialise preferred (2TT' > IO)"
        )
        print(
            f"{name:<24} dot {t['dot_ghost'] * 1e3:8.2f} ms  vs plain x{row['dot_speedup_vs_plain']:.2f}  "
            f"vs materialise x{row['dot_speedup_vs_materialise']:.2f}   norm x{row['norm_speedup_vs_materialise']:.2f}"
            f"   {gram}",
            flush=True,
        )

    payload = {
        "benchmark": "ghost ops (per-sample gradient products)",
        "device": "cpu",
        "dtype": "float32",
        "machine": machine(),
        "rows": rows,
    }
    write_results(args.json, payload)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = [
            ("dot_speedup_vs_plain", "dot vs (A@G.T*D).sum"),
            ("dot_speedup_vs_materialise", "dot vs einsum Q"),
            ("norm_speedup_vs_materialise", "norm vs einsum Q"),
            ("gram_speedup_vs_materialise", "gram vs einsum Q"),
        ]
        fig, ax = plt.subplots(figsize=(10, 4))
        width = 0.2
        for k, (key, label) in enumerate(keys):
            ax.bar([i + k * width for i in range(len(rows))], [r.get(key, 0.0) for r in rows], width, label=label)
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_xticks([i + 1.5 * width for i in range(len(rows))], [r["name"] for r in rows], rotation=15, fontsize=8)
        ax.set(
            yscale="log", ylabel="speed-up of tlkernels (x)", title="ghost ops, CPU float32 (missing bar: not timed)"
        )
        ax.legend(fontsize=8)
        save_figure(fig, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
