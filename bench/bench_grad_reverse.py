"""Gradient reversal: the fused DANN-fork backward against the plain autograd composition.

The plain layer (tlkernels.reference.grad_reverse_branch) is what a user writes without
tlkernels: identity forward, neg and mul in backward, and autograd's accumulation of the task
and adversarial gradients (an add). tlkernels' fork does grad_task - lam * grad_adv in one pass.
Both are timed through a real autograd backward, side by side, after checking they agree, on
CPU float32 tensors of 2^16 to 2^24 elements. A second pair times the bare kernels (the fused op
against the best one-line eager expression grad_task - lam * grad_adv).

    python bench/bench_grad_reverse.py --json bench/results/grad_reverse.json --plot bench/results/grad_reverse.png
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import tlkernels  # noqa: E402
from common import machine, median_time, save_figure, write_results  # noqa: E402
from tlkernels import reference  # noqa: E402

LAM = 0.7
# Bytes moved per float32 element, counting each pass over memory:
#   fused: read grad_task, read grad_adv, write out                          = 3 x 4 B
#   plain: neg (read, write), mul (read, write), accumulate (2 reads, write) = 7 x 4 B
BYTES_PER_ELEMENT = {"fused": 12, "plain": 28, "fused_op": 12, "eager_expr": 16}


def backward_fn(fork, x, g_task, g_adv):
    def run():
        x.grad = None
        a, b = fork(x, LAM)
        torch.autograd.backward([a, b], [g_task, g_adv])
        return x.grad

    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-log2", type=int, default=16)
    parser.add_argument("--max-log2", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", default="bench/results/grad_reverse.json")
    parser.add_argument("--plot", default="bench/results/grad_reverse.png")
    args = parser.parse_args(argv)

    rows = []
    gen = torch.Generator().manual_seed(0)
    for log2 in range(args.min_log2, args.max_log2 + 1, 2):
        n = 1 << log2
        x = torch.randn(n, generator=gen).requires_grad_()
        g_task, g_adv = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
        fused = backward_fn(tlkernels.grad_reverse_branch, x, g_task, g_adv)
        plain = backward_fn(reference.grad_reverse_branch, x, g_task, g_adv)
        fused_op = lambda: torch.ops.tlkernels.grad_reverse_branch_backward(g_task, g_adv, LAM, None)  # noqa: E731
        eager_expr = lambda: g_task - LAM * g_adv  # noqa: E731
        # agreement first: bit-identical rounding (mul then sub) is the contract
        want = reference.grad_reverse_branch_backward(g_task, g_adv, LAM)
        assert torch.equal(fused(), plain()) and torch.equal(fused_op(), want) and torch.equal(eager_expr(), want)
        t = {
            name: median_time(fn, repeats=args.repeats)
            for name, fn in [("fused", fused), ("plain", plain), ("fused_op", fused_op), ("eager_expr", eager_expr)]
        }
        row = {
            "n": n,
            "log2_n": log2,
            **{f"{k}_s": v for k, v in t.items()},
            "speedup_backward": t["plain"] / t["fused"],
            "speedup_op": t["eager_expr"] / t["fused_op"],
        }
        for k, v in t.items():
            row[f"{k}_GBps"] = BYTES_PER_ELEMENT[k] * n / v / 1e9
        rows.append(row)
        print(
            f"n=2^{log2:<3} backward: plain {t['plain'] * 1e3:8.3f} ms  fused {t['fused'] * 1e3:8.3f} ms  "
            f"x{row['speedup_backward']:.2f}   op: expr {t['eager_expr'] * 1e3:8.3f} ms  "
            f"fused {t['fused_op'] * 1e3:8.3f} ms  x{row['speedup_op']:.2f}",
            flush=True,
        )

    payload = {
        "benchmark": "grad_reverse_branch backward",
        "device": "cpu",
        "dtype": "float32",
        "lam": LAM,
        "bytes_per_element": BYTES_PER_ELEMENT,
        "machine": machine(),
        "rows": rows,
    }
    write_results(args.json, payload)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
        ns = [r["n"] for r in rows]
        ax[0].plot(ns, [r["speedup_backward"] for r in rows], "o-", label="autograd backward: plain / fused")
        ax[0].plot(ns, [r["speedup_op"] for r in rows], "s--", label="bare op: eager expr / fused op")
        ax[0].axhline(1.0, color="gray", lw=0.8)
        ax[0].set(xscale="log", xlabel="elements (float32)", ylabel="speed-up (x)", title="gradient reversal fork, CPU")
        ax[0].legend(fontsize=8)
        for k in ("plain", "fused", "eager_expr", "fused_op"):
            ax[1].plot(ns, [r[f"{k}_GBps"] for r in rows], "o-", label=k)
        ax[1].set(xscale="log", xlabel="elements (float32)", ylabel="effective GB/s", title="memory traffic / time")
        ax[1].legend(fontsize=8)
        save_figure(fig, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
