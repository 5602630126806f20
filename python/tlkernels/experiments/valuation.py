"""Quality of tlkernels.valuation against ground truth.

(a) ``run_loo``: multinomial logistic regression on 100 digits (20% of labels flipped), trained
    from a fixed start by full-batch gradient descent and by mini-batch SGD in a fixed order;
    every example's exact leave-one-out value (retraining without it, the same schedule) against
    the in-run value, TracIn's influence on the validation loss and the LESS cosine: Spearman's
    rank correlation.
(b) ``run_noisy``: SOSELETO's setting (b): digits, 40% symmetric noise on the source split, a
    small clean target. Mislabel detection AUROC (clean vs flipped) of TracIn self-influence,
    in-run values, LESS scores and SOSELETO's alpha; then training on the 20% / 40% of the source
    each method ranks best (and GREATS selecting the same fraction of every batch online) against
    a uniform subset, test accuracy.

    OMP_NUM_THREADS=1 python -m tlkernels.experiments.valuation --json bench/results/valuation.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score
from torch import nn

from .. import valuation
from ..data import Dataset, add_label_noise, load_digits, stratified_split
from .soseleto import _soseleto_grid, accuracy, mlp

__all__ = ["run_loo", "run_noisy"]


def loss_fn(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y, reduction="none")


# ------------------------------------------------------------------------------------------ (a) LOO
def _fit(model, X, y, schedule, lr, weight_decay, inrun=None, ids=None):
    """SGD over `schedule` (a list of index tensors into X); returns the model."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    for idx in schedule:
        if idx.numel() == 0:
            continue
        opt.zero_grad(set_to_none=True)
        if inrun is not None:
            inrun.step((X[idx], y[idx]), ids[idx])
        else:
            loss_fn(model, (X[idx], y[idx])).mean().backward()
        opt.step()
    return model


def run_loo(
    n: int = 100,
    seed: int = 0,
    noise: float = 0.2,
    steps: int = 100,
    lr: float = 0.5,
    weight_decay: float = 1e-3,
    batch: int = 10,
) -> dict:
    """Spearman correlation of each value with exact leave-one-out retraining, for full-batch GD
    (`steps` steps) and mini-batch SGD (`steps` steps of `batch` examples, fixed order), float64."""
    digits = load_digits()
    val, train = stratified_split(digits, [200, n], random_state=seed)[:2]
    noisy, flipped = add_label_noise(train.y, noise, kind="symmetric", n_classes=10, random_state=seed)
    X, y = train.X.double(), noisy
    Xv, yv = val.X.double(), val.y
    gen = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-steps * batch // n))])
    schedules = {
        "full_batch": [torch.arange(n)] * steps,
        "minibatch": [order[k * batch : (k + 1) * batch] for k in range(steps)],
    }
    out = {
        "n": n,
        "seed": seed,
        "noise": noise,
        "steps": steps,
        "lr": lr,
        "weight_decay": weight_decay,
        "batch": batch,
    }

    def fresh():
        torch.manual_seed(seed)
        return nn.Linear(64, 10).double()

    def val_loss(m):
        with torch.no_grad():
            return float(loss_fn(m, (Xv, yv)).mean())

    for name, schedule in schedules.items():
        base = val_loss(_fit(fresh(), X, y, schedule, lr, weight_decay))
        loo = np.empty(n)
        for i in range(n):
            keep = [idx[idx != i] for idx in schedule]
            loo[i] = val_loss(_fit(fresh(), X, y, keep, lr, weight_decay)) - base  # > 0: i helped
        model = fresh()
        inrun = valuation.InRun(model, loss_fn, (Xv, yv), lr=lr)
        tracin = valuation.TracIn(model, loss_fn)
        opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
        for t, idx in enumerate(schedule):
            if t % 10 == 0:
                tracin.add_checkpoint(lr)
            opt.zero_grad(set_to_none=True)
            inrun.step((X[idx], y[idx]), idx)
            opt.step()
        scores = {
            "inrun": -inrun.values.numpy(),  # values < 0 lower the validation loss
            "tracin": tracin.target_influence((X, y), (Xv, yv)).numpy(),
            "less": valuation.gradient_similarity(model, loss_fn, (X, y), (Xv, yv)).numpy(),
        }
        out[name] = {m: float(spearmanr(s, loo).statistic) for m, s in scores.items()}
        out[name]["loo_flipped_mean"] = float(loo[flipped.numpy()].mean())
        out[name]["loo_clean_mean"] = float(loo[~flipped.numpy()].mean())
    return out


# --------------------------------------------------------------------------------- (b) noisy digits
def _net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(mlp(64), nn.Linear(64, 10))


def _train_subset(source: Dataset, subset, seed: int, steps: int = 1200, lr: float = 0.05) -> nn.Module:
    """The backbone + head trained on source[subset] for `steps` SGD steps of 32 (momentum 0.9)."""
    net = _net(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    subset = torch.as_tensor(subset)
    for _ in range(steps):
        idx = subset[torch.randint(0, len(subset), (32,), generator=gen)]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(source.X[idx]), source.y[idx]).backward()
        opt.step()
    return net


def _greats_run(
    source: Dataset,
    target: Dataset,
    fraction: float,
    seed: int,
    epochs: int,
    lr: float = 0.05,
    candidates: int = 64,
) -> nn.Module:
    """Online selection: each step keeps round(fraction * candidates) of a random candidate batch."""
    net = _net(seed)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    greats = valuation.GREATS(net, loss_fn, (target.X, target.y), optimizer=opt)
    k = max(1, round(fraction * candidates))
    gen = torch.Generator().manual_seed(seed)
    n = len(source)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - candidates + 1, candidates):
            idx = perm[i : i + candidates]
            opt.zero_grad(set_to_none=True)
            greats.step((source.X[idx], source.y[idx]), k)
            opt.step()
    return net


def run_noisy(
    seed: int = 0,
    noise: float = 0.4,
    n_target: int = 100,
    epochs: int = 30,
    lr: float = 0.05,
    budgets=(0.2, 0.4),
) -> dict:
    """Mislabel AUROC and budgeted selection on SOSELETO's setting (b) for one seed."""
    t0 = time.perf_counter()
    digits = load_digits()
    test, target, source = stratified_split(digits, [450, n_target, None], random_state=seed)
    noisy, flipped = add_label_noise(source.y, noise, kind="symmetric", n_classes=10, random_state=seed)
    source = Dataset(source.X, noisy, flipped)
    n_val = max(10, n_target // 4)
    tgt_val, tgt_tr = stratified_split(target, [n_val, None], random_state=seed + 1)
    n = len(source)
    clean = (~flipped).numpy()

    # one plain-SGD run on the noisy source: in-run values against the clean target, TracIn checkpoints
    net = _net(seed)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    inrun = valuation.InRun(net, loss_fn, (tgt_tr.X, tgt_tr.y), optimizer=opt)
    tracin = valuation.TracIn(net, loss_fn)
    gen = torch.Generator().manual_seed(seed)
    t_run = time.perf_counter()
    for _ in range(epochs):
        tracin.add_checkpoint(lr)
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, 64):
            idx = perm[i : i + 64]
            inrun.wrap(opt).step((source.X[idx], source.y[idx]), idx)
    t_run = time.perf_counter() - t_run
    all_src = (source.X, source.y)
    scores = {
        "tracin_self": -tracin.self_influence(all_src).numpy(),  # low self-influence: clean
        "tracin_target": tracin.target_influence(all_src, (tgt_tr.X, tgt_tr.y)).numpy(),
        "inrun": -inrun.values.numpy(),  # values < 0 helped the target
        "less": valuation.gradient_similarity(
            net,
            loss_fn,
            all_src,
            (tgt_tr.X, tgt_tr.y),
            dim=256,
            checkpoints=tracin.checkpoints[::5],
            lrs=tracin.lrs[::5],
        ).numpy(),
    }
    t_sos = time.perf_counter()
    model, _, _ = _soseleto_grid(source, tgt_tr, tgt_val, seed, 10, shared=True, epochs=epochs)
    t_sos = time.perf_counter() - t_sos
    scores["soseleto_alpha"] = model.alpha_.cpu().numpy()
    auroc = {m: float(roc_auc_score(clean, s)) for m, s in scores.items()}

    selection = {}
    for frac in budgets:
        k = max(1, round(frac * n))
        rows = {}
        # (not default_rng(seed): add_label_noise flips the first indices of that very permutation)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(10_000 + seed))[:k]
        rows["uniform"] = accuracy(_train_subset(source, perm, seed), test)
        rows["uniform_clean_fraction"] = float(clean[perm.numpy()].mean())
        counts = torch.bincount(source.y[perm], minlength=10)
        rows["uniform_labels_present"] = int((counts >= max(1, k // 100)).sum())
        for m, s in scores.items():
            chosen = torch.as_tensor(s).topk(k).indices
            rows[m] = accuracy(_train_subset(source, chosen, seed), test)
            rows[m + "_clean_fraction"] = float(clean[chosen.numpy()].mean())
            # how many of the 10 (noisy) labels the subset trains on at least 1% of its examples
            counts = torch.bincount(source.y[chosen], minlength=10)
            rows[m + "_labels_present"] = int((counts >= max(1, k // 100)).sum())
        rows["greats_online"] = accuracy(_greats_run(source, tgt_tr, frac, seed, epochs), test)
        selection[str(frac)] = rows
    full = accuracy(_train_subset(source, torch.arange(n), seed), test)
    return {
        "seed": seed,
        "noise": noise,
        "n_source": n,
        "n_target_train": len(tgt_tr),
        "epochs": epochs,
        "auroc": auroc,
        "selection_test_accuracy": selection,
        "all_source_test_accuracy": full,
        "seconds": {
            "inrun_tracin_training_run": t_run,
            "soseleto_grid": t_sos,
            "total": time.perf_counter() - t0,
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--parts", default="loo,noisy")
    parser.add_argument("--json", default="bench/results/valuation.json")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    out = {
        "command": "OMP_NUM_THREADS=1 python -m tlkernels.experiments.valuation " + " ".join(argv or []),
        "torch_threads": torch.get_num_threads(),
    }
    if os.path.exists(args.json):
        with open(args.json) as f:
            out = {**json.load(f), **out}
    for part in args.parts.split(","):
        if part == "loo":
            out["loo"] = [run_loo(seed=s) for s in seeds]
            print(json.dumps(out["loo"], indent=1), flush=True)
        elif part == "noisy":
            out["noisy"] = []
            for s in seeds:
                out["noisy"].append(run_noisy(seed=s))
                print(json.dumps(out["noisy"][-1], indent=1), flush=True)
        else:
            raise ValueError(f"--parts: unknown part {part!r} (loo, noisy)")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
