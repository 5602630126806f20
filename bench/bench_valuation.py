"""Cost of in-run data valuation: one SGD step that also values every example of its batch.

Each method does one training step on a batch of B examples (gradient of the mean loss, SGD
update) and computes every example's first-order in-run value -η/B <∇l_i, ∇L_val> against a
validation batch of B_val examples:
  - plain       : the training step alone (no values), the yardstick
  - tlkernels   : tlkernels.valuation.InRun.step (one persample capture of the batch and one of
                  the validation batch; products and the training gradient from what they record)
  - torch.func  : vmap(grad(functional_call)) per-sample gradients of the batch, the validation
                  gradient by autograd, values = per-sample gradients @ it, gradient = their mean
  - loop        : one backward per example and one for the validation batch
The values of every method are checked against tlkernels' before timing.

    OMP_NUM_THREADS=1 python bench/bench_valuation.py --json bench/results/valuation_cost.json
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from common import best_time, cpu_model, interleaved_median_times, machine, write_results
from tlkernels import valuation
from tlkernels.reference import model_per_sample_grads

METHODS = ["plain", "tlkernels", "torch.func", "loop"]
LR = 0.05


class SmallTransformer(nn.Module):
    """Token classifier: embedding + learned positions, 2 pre-norm encoder layers (d=128, 4 heads,
    feed-forward 256, no dropout), mean-pooled head."""

    def __init__(self, vocab=1000, d=128, t=32, classes=10):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(1, t, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, 4, 256, dropout=0.0, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, idx):
        return self.head(self.enc(self.emb(idx) + self.pos).mean(1))


def build(name: str, val_fraction: float, seed: int = 0):
    """(model, batch, val_batch) of the three benchmark models."""
    torch.manual_seed(seed)
    if name == "mlp":
        model = nn.Sequential(
            nn.Linear(784, 1024),
            nn.ReLU(),
            nn.Linear(1024, 1024),
            nn.ReLU(),
            nn.Linear(1024, 10),
        )
        b, make_x = 256, lambda n: torch.randn(n, 784)
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
        b, make_x = 128, lambda n: torch.randn(n, 3, 32, 32)
    elif name == "transformer":
        model = SmallTransformer()
        b, make_x = 64, lambda n: torch.randint(0, 1000, (n, 32))
    else:
        raise ValueError(f"unknown model {name!r} (mlp, cnn, transformer)")
    bv = max(1, round(b * val_fraction))
    return (
        model,
        (make_x(b), torch.randint(0, 10, (b,))),
        (make_x(bv), torch.randint(0, 10, (bv,))),
    )


def loss_fn(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y, reduction="none")


def method_fn(method: str, model, batch, val):
    """A zero-argument callable doing one valued training step with `method`; returns the values."""
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    params = [p for _, p in model.named_parameters()]
    names = [n for n, _ in model.named_parameters()]
    b = batch[1].shape[0]
    index = torch.arange(b)

    def set_grads(flat):
        off = 0
        for p in params:
            p.grad = flat[off : off + p.numel()].view_as(p).clone()
            off += p.numel()

    def val_grad():
        g = torch.autograd.grad(loss_fn(model, val).mean(), params)
        return torch.cat([t.flatten() for t in g])

    if method == "plain":

        def run():
            opt.zero_grad(set_to_none=True)
            loss_fn(model, batch).mean().backward()
            opt.step()

        return run
    if method == "tlkernels":
        inrun = valuation.InRun(model, loss_fn, val, optimizer=opt)

        def run():
            opt.zero_grad(set_to_none=True)
            inrun.step(batch, index)
            opt.step()
            return inrun.last_values

        return run
    if method == "torch.func":

        def run():
            gv = val_grad()
            g = model_per_sample_grads(model, loss_fn, batch)
            flat = torch.cat([g[n].flatten(1) for n in names], 1)
            values = -LR / b * (flat @ gv)
            set_grads(flat.mean(0))
            opt.step()
            return values

        return run
    if method == "loop":

        def run():
            gv = val_grad()
            x, y = batch
            total = torch.zeros_like(gv)
            values = torch.empty(b)
            for i in range(b):
                gs = torch.autograd.grad(loss_fn(model, (x[i : i + 1], y[i : i + 1]))[0], params)
                gi = torch.cat([t.flatten() for t in gs])
                values[i] = -LR / b * (gi @ gv)
                total += gi
            set_grads(total / b)
            opt.step()
            return values

        return run
    raise ValueError(method)


def check(name: str, val_fraction: float) -> None:
    """Every method's values at the same parameters agree with tlkernels' (fresh copies of the model)."""
    want = None
    for m in METHODS[1:]:
        model, batch, val = build(name, val_fraction)
        got = method_fn(m, model, batch, val)().double()
        if want is None:
            want = got
        else:
            torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3 * want.abs().max().item())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp,cnn,transformer")
    parser.add_argument("--val-fraction", type=float, default=0.125, help="B_val / B (default 1/8)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--loop-repeats", type=int, default=2)
    parser.add_argument("--json", default="bench/results/valuation_cost.json")
    args = parser.parse_args(argv)
    cpu = cpu_model()
    print(f"CPU: {cpu}, torch threads {torch.get_num_threads()}")

    rows = []
    for name in args.models.split(","):
        check(name, args.val_fraction)
        fns = {}
        for m in METHODS:
            model, batch, val = build(name, args.val_fraction)
            fns[m] = method_fn(m, model, batch, val)
        fast = {m: fns[m] for m in ("plain", "tlkernels", "torch.func")}
        times = interleaved_median_times(fast, repeats=args.repeats, warmup=3)
        times["loop"] = best_time(fns["loop"], repeats=args.loop_repeats, warmup=0)
        row = {
            "model": name,
            "batch": batch[1].shape[0],
            "val_batch": val[1].shape[0],
            "seconds": times,
            "tlkernels_vs_plain": times["tlkernels"] / times["plain"],
            "speedup": {m: times[m] / times["tlkernels"] for m in ("torch.func", "loop")},
        }
        rows.append(row)
        print(
            f"{name:11s} B={row['batch']:<4d} B_val={row['val_batch']:<3d} "
            + "  ".join(f"{m} {times[m] * 1e3:8.1f} ms" for m in METHODS)
        )
        print(
            f"            tlkernels / plain step = {row['tlkernels_vs_plain']:.2f}x; tlkernels faster than "
            + ", ".join(f"{m} {v:.1f}x" for m, v in row["speedup"].items()),
            flush=True,
        )
    write_results(
        args.json,
        {
            "benchmark": "in-run data valuation step vs plain SGD step",
            "device": "cpu",
            "dtype": "float32",
            "cpu_model": cpu,
            "val_fraction": args.val_fraction,
            "machine": machine(),
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
