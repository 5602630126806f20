"""One SOSELETO step against a plain training step and the per-sample-loop formulation.

  - plain    : one SGD step on the mean source loss plus one on the target loss (what fine-tuning
               style training costs per step on the same batches)
  - tlkernels: Soseleto.step (capture, target gradient, Q^T g by ghost products, fused alpha
               step, bookkeeping theta step)
  - loop     : the formulation of the public reference code: one backward per source example to
               get Q's columns, then Q^T g and the weighted step
Same model, same batches; alpha after one step is checked to agree between tlkernels and loop.

    python bench/bench_soseleto.py --json bench/results/soseleto.json
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from bench_persample import peak_memory  # noqa: E402
from common import interleaved_median_times, machine, median_time, write_results  # noqa: E402
from tlkernels.selection import Soseleto  # noqa: E402

SHAPES = {"digits-mlp": (64, (128, 64), 10, 64), "mlp-784": (784, (1024, 1024), 10, 128)}


def build(name: str):
    d_in, hidden, n_cls, b = SHAPES[name]
    torch.manual_seed(0)
    layers, d = [], d_in
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    backbone, head = nn.Sequential(*layers), nn.Linear(d, n_cls)
    xs, ys = torch.randn(b, d_in), torch.randint(0, n_cls, (b,))
    xt, yt = torch.randn(32, d_in), torch.randint(0, n_cls, (32,))
    return backbone, head, (xs, ys), (xt, yt)


def loop_step(model: Soseleto, source, target, index):
    """SOSELETO with per-sample gradients from one backward per example."""
    xs, ys = source
    params = list(model.source_net.parameters())
    cols = []
    for j in range(xs.shape[0]):
        gs = torch.autograd.grad(F.cross_entropy(model.source_net(xs[j : j + 1]), ys[j : j + 1]), params)
        cols.append(torch.cat([g.flatten() for g in gs]))
    Q = torch.stack(cols, 1) / xs.shape[0]  # (P, B)
    lt = F.cross_entropy(model.target_net(target[0]), target[1])
    g = torch.autograd.grad(lt, params)  # shared head: theta = all parameters
    s = Q.T @ torch.cat([x.flatten() for x in g])
    s = s / s.pow(2).mean().sqrt()
    model.alpha_[index] = (model.alpha_[index] + model.lr_alpha * s).clamp(0, 1)
    step = Q @ model.alpha_[index]
    model._opt_source.zero_grad(set_to_none=True)
    off = 0
    for p in params:
        p.grad = step[off : off + p.numel()].view_as(p)
        off += p.numel()
    model._opt_source.step()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--json", default="bench/results/soseleto.json")
    args = parser.parse_args(argv)
    rows = []
    for name in SHAPES:
        backbone, head, source, target = build(name)
        b = source[0].shape[0]
        index = torch.arange(b)

        def mk():
            return Soseleto(
                copy.deepcopy(backbone),
                (h := copy.deepcopy(head)),
                h,
                b,
                lr=0.01,  # noqa: E731
                lr_alpha=0.05,
                alpha_init=0.5,
            )

        m_fast, m_loop = mk(), mk()
        m_fast.step(source, target, index)
        loop_step(m_loop, source, target, index)
        torch.testing.assert_close(m_fast.alpha_, m_loop.alpha_, rtol=1e-4, atol=1e-5)

        net = nn.Sequential(copy.deepcopy(backbone), copy.deepcopy(head))
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

        def plain():
            for x, y in (source, target):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(net(x), y).backward()
                opt.step()

        fns = {
            "plain": plain,
            "tlkernels": lambda: m_fast.step(source, target, index),
            "loop": lambda: loop_step(m_loop, source, target, index),
        }
        # plain and tlkernels alternate step by step (their ratio is the target); loop is 100x slower
        t = interleaved_median_times({k: fns[k] for k in ("plain", "tlkernels")}, repeats=args.repeats)
        t["loop"] = median_time(fns["loop"], repeats=3)
        mem = {k: peak_memory(f) for k, f in fns.items() if k != "loop"}
        row = {
            "model": name,
            "source_batch": b,
            "target_batch": 32,
            "seconds": t,
            "peak_bytes": mem,
            "step_vs_plain": t["tlkernels"] / t["plain"],
            "speedup_vs_loop": t["loop"] / t["tlkernels"],
            "memory_vs_plain": mem["tlkernels"] / mem["plain"],
        }
        rows.append(row)
        print(
            f"{name:11s} plain {t['plain'] * 1e3:7.2f} ms  tlkernels {t['tlkernels'] * 1e3:7.2f} ms  "
            f"loop {t['loop'] * 1e3:8.1f} ms | step/plain {row['step_vs_plain']:.2f}x, "
            f"vs loop {row['speedup_vs_loop']:.1f}x faster, peak memory/plain {row['memory_vs_plain']:.2f}x",
            flush=True,
        )
    write_results(
        args.json,
        {"benchmark": "SOSELETO step", "device": "cpu", "dtype": "float32", "machine": machine(), "rows": rows},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
