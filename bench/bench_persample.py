"""Per-sample gradient products for whole models: tlkernels' capture + dot against the peers.

s_i = <dl_i/dθ, g> for every sample of a batch and one vector g over all parameters (SOSELETO's
Q^T g), computed by:
  - tlkernels   : persample.grad_dot (one forward + one backward to the layer outputs, then the
                  fused ghost_dot per linear layer / the layer's own convolution per conv layer)
  - torch.func  : vmap(grad(functional_call)) per-sample gradients, then a dot
  - opacus      : GradSampleModule per-sample gradients, then a dot (if opacus is installed)
  - loop        : one backward per sample, then a dot
and, as the yardstick, a plain forward + backward of the mean loss (ordinary training).
All methods are checked against each other before timing. Peak memory is the increase of the
torch tensors allocated while one call runs (profiler allocation events), above what was live
before.

    python bench/bench_persample.py --json bench/results/persample.json --plot bench/results/persample.png
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, median_time, save_figure, write_results  # noqa: E402
from tlkernels import persample  # noqa: E402

METHODS = ["plain", "tlkernels", "torch.func", "opacus", "loop"]


class TokenModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5000, 256)
        self.up = nn.Linear(256, 1024)
        self.down = nn.Linear(1024, 256)
        self.head = nn.Linear(256, 10)

    def forward(self, idx):
        h = self.down(torch.relu(self.up(self.emb(idx))))
        return self.head(h.mean(1))


def build(name: str, seed: int = 0):
    """(model, batch) of the three benchmark models."""
    torch.manual_seed(seed)
    if name == "mlp":
        model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
        batch = (torch.randn(256, 784), torch.randint(0, 10, (256,)))
    elif name == "cnn":
        model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 8 * 8, 10),
        )
        batch = (torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,)))
    elif name == "tokens":
        model = TokenModel()
        batch = (torch.randint(0, 5000, (32, 64)), torch.randint(0, 10, (32,)))
    else:
        raise ValueError(name)
    return model, batch


def loss_fn(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y, reduction="none")


def target_vector(model):
    gen = torch.Generator().manual_seed(1)
    return {n: torch.randn(p.shape, generator=gen) for n, p in model.named_parameters()}


def method_fn(method: str, model, batch, vec):
    """A zero-argument callable computing s (B,) with `method` (plain: ordinary training step)."""
    names = [n for n, _ in model.named_parameters()]
    vflat = torch.cat([vec[n].flatten() for n in names])
    if method == "plain":

        def run():
            model.zero_grad(set_to_none=True)
            loss_fn(model, batch).mean().backward()

        return run
    if method == "tlkernels":
        return lambda: persample.grad_dot(model, loss_fn, batch, vec)
    if method == "torch.func":
        from tlkernels.reference import model_per_sample_grads as per_sample_grads

        def run():
            g = per_sample_grads(model, loss_fn, batch)
            return torch.cat([g[n].flatten(1) for n in names], 1) @ vflat

        return run
    if method == "opacus":
        import copy

        from opacus import GradSampleModule

        model = copy.deepcopy(model)  # opacus leaves hooks on the modules it wraps
        gsm = GradSampleModule(model, loss_reduction="sum")
        params = dict(model.named_parameters())

        def run():
            gsm.zero_grad(set_to_none=True)
            for p in model.parameters():
                p.grad_sample = None
            loss_fn(gsm, batch).sum().backward()
            return torch.cat([params[n].grad_sample.flatten(1) for n in names], 1) @ vflat

        return run
    if method == "loop":
        params = [p for _, p in model.named_parameters()]

        def run():
            x, y = batch
            out = torch.empty(x.shape[0])
            for i in range(x.shape[0]):
                gs = torch.autograd.grad(loss_fn(model, (x[i : i + 1], y[i : i + 1]))[0], params)
                out[i] = torch.cat([g.flatten() for g in gs]) @ vflat
            return out

        return run
    raise ValueError(method)


def available(method: str) -> bool:
    if method == "opacus":
        try:
            import opacus  # noqa: F401
        except ImportError:
            return False
    return True


def peak_memory(fn) -> int:
    """Peak bytes of torch tensors allocated while fn() runs (on top of what was live before),
    from the profiler's allocation events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp,cnn,tokens")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop-repeats", type=int, default=1)
    parser.add_argument("--json", default="bench/results/persample.json")
    parser.add_argument("--plot", default="bench/results/persample.png")
    args = parser.parse_args(argv)

    rows = []
    for name in args.models.split(","):
        model, batch = build(name)
        vec = target_vector(model)
        methods = [m for m in METHODS if available(m)]
        fns = {m: method_fn(m, model, batch, vec) for m in methods}
        want = fns["tlkernels"]()
        for m in methods:
            if m in ("plain", "tlkernels"):
                continue
            got = fns[m]()
            torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3 * want.abs().max().item())
        times = {
            m: median_time(
                fns[m], repeats=args.loop_repeats if m == "loop" else args.repeats, warmup=0 if m == "loop" else 2
            )
            for m in methods
        }
        mem = {m: peak_memory(fns[m]) for m in methods if m != "loop"}
        mem["loop"] = float("nan")  # profiling B backward passes adds nothing
        row = {
            "model": name,
            "batch": batch[0].shape[0],
            "seconds": times,
            "peak_bytes": mem,
            "overhead_vs_plain": times["tlkernels"] / times["plain"],
            "memory_vs_plain": mem["tlkernels"] / max(mem["plain"], 1),
            "speedup": {m: times[m] / times["tlkernels"] for m in methods if m != "tlkernels"},
        }
        rows.append(row)
        print(f"{name:7s} B={row['batch']:<4d} " + "  ".join(f"{m} {times[m] * 1e3:8.1f} ms" for m in methods))
        print(
            f"        tlkernels / plain fwd+bwd = {row['overhead_vs_plain']:.2f}x time, "
            f"{row['memory_vs_plain']:.2f}x peak memory; speed-up: "
            + ", ".join(f"vs {m} {v:.1f}x" for m, v in row["speedup"].items() if m != "plain"),
            flush=True,
        )

    write_results(
        args.json,
        {
            "benchmark": "per-sample gradient dot (Q^T g), whole models",
            "device": "cpu",
            "dtype": "float32",
            "machine": machine(),
            "rows": rows,
        },
    )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
        methods = [m for m in METHODS if all(m in r["seconds"] for r in rows)]
        xs = np.arange(len(rows))
        w = 0.8 / len(methods)
        for k, m in enumerate(methods):
            ax[0].bar(xs + k * w, [r["seconds"][m] / r["seconds"]["plain"] for r in rows], w, label=m)
            ax[1].bar(xs + k * w, [r["peak_bytes"].get(m, float("nan")) / 2**20 for r in rows], w, label=m)
        for a, t in zip(ax, ["time / plain forward+backward", "peak memory increase (MiB)"]):
            a.set_xticks(xs + 0.4 - w / 2, [f"{r['model']} B={r['batch']}" for r in rows])
            a.set_title(t)
            a.set_yscale("log")
        ax[0].legend(fontsize=8)
        save_figure(fig, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
