"""The dataserver experiment (Yan et al. 2020) on offline data.

The server's store holds four sources of 8x8 grey images: digits 0-4 (labelled), a pool of
digits 5-9 kept away from the client (unlabelled), patches cut from scikit-learn's two sample
photographs, and smoothed noise. The client holds digits 5-9, 20 labelled per class, and a test
split disjoint from the server's pool. Every method pre-trains the same small CNN by rotation
prediction on what it gets from the server, then fine-tunes it on the client's labels:

    none        no pre-training
    full        the whole store
    uniform_20 / uniform_40    a uniform random 20% / 40% of the store
    ngiam_20    Ngiam et al. 2018: importance weights p_t(y)/p_s(y) over the labelled source
                classes, p_t(y) from a source classifier's predictions on the target images
    ours_20 / ours_40          the dataserver: label-free FastAdapt scores (each expert's rotation
                               accuracy on the target) and OutputData sampling of 20% / 40%
    ours_probe_20              the same with the labelled FastAdapt scores (linear probes)

Selection precision = share of the selected examples that come from the digit sources.
The domain-confusion check: the proxy A-distance between each partition and the target images,
correlated with that expert's (label-free) score; a negative correlation means the experts the
client scores high hold data that looks like its own.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset, class_split, load_digits, stratified_split
from ..selection.dataserver import (
    Store,
    fast_adapt_scores,
    output_data,
    partition_store,
    train_experts,
)
from ..selection.dataserver.experts import load_expert
from ..selfsup import SmallCNN, train_rotation

__all__ = ["build_offline_store", "image_patches", "run_dataserver_experiment"]

RELEVANT = ("digits_0_4", "digits_5_9_pool")


def image_patches(n: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    """n grey size x size patches from scikit-learn's sample photographs, scaled to [0, 1]."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    imgs = [np.asarray(im, dtype=np.float32).mean(2) / 255.0 for im in load_sample_images().images]
    out = np.empty((n, 1, size, size), dtype=np.float32)
    for k in range(n):
        im = imgs[k % len(imgs)]
        step = int(rng.integers(1, 4))  # patches at several scales
        r = int(rng.integers(0, im.shape[0] - size * step))
        c = int(rng.integers(0, im.shape[1] - size * step))
        out[k, 0] = im[r : r + size * step : step, c : c + size * step : step]
    return torch.from_numpy(out)


def smooth_noise(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=gen)
    return F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)


def build_offline_store(
    root: str, seed: int = 0, k: int = 8, expert_epochs: int = 3, verbose: bool = False, overwrite: bool = False
):
    """Writes the experiment's store (partitioned, with experts) and returns (store, client data):
    client = (target train Dataset (20 per class, labels 0-4 for digits 5-9), test Dataset).
    A non-empty `root` is refused (FileExistsError) unless overwrite=True."""
    if os.path.isdir(root) and os.listdir(root) and not overwrite:  # before the minutes of training
        raise FileExistsError(f"root {root!r} exists and is not empty (pass overwrite=True to replace it)")
    digits = load_digits(images=True)
    low = class_split(digits, range(5))
    high = class_split(digits, range(5, 10))
    test, target, pool = stratified_split(high, [350, 100, None], random_state=seed)
    store = Store.create(
        root,
        {
            "digits_0_4": (low.X, low.y),
            "digits_5_9_pool": (pool.X, None),
            "photo_patches": (image_patches(1500, seed=seed), None),
            "smooth_noise": (smooth_noise(1000, seed=seed), None),
        },
        overwrite=overwrite,
    )
    partition_store(store, k, seed=seed, epochs=3, verbose=verbose)
    train_experts(store, epochs=expert_epochs, seed=seed, verbose=verbose)
    return store, target, test


def _pretrain(X: torch.Tensor | None, seed: int, epochs: int) -> SmallCNN:
    torch.manual_seed(seed)
    net = SmallCNN()
    if X is not None and len(X):
        train_rotation(net, X, epochs=epochs, seed=seed)
    return net


def _fine_tune(net: SmallCNN, tr: Dataset, val: Dataset, test: Dataset, seed: int) -> tuple[float, dict]:
    """Whole-network fine-tuning with a new 5-way head; steps and lr chosen on val."""
    best = None
    for lr in (0.01, 0.05):
        for steps in (150, 400):
            m = copy.deepcopy(net)
            torch.manual_seed(seed)
            m.head = nn.Linear(m.head.in_features, 5)
            opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9)
            gen = torch.Generator().manual_seed(seed)
            m.train()
            for _ in range(steps):
                idx = torch.randint(0, len(tr), (32,), generator=gen)
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(m(tr.X[idx]), tr.y[idx]).backward()
                opt.step()
            m.eval()
            with torch.no_grad():
                v = (m(val.X).argmax(1) == val.y).float().mean().item()
                t = (m(test.X).argmax(1) == test.y).float().mean().item()
            if best is None or v > best[0]:
                best = (v, t, {"lr": lr, "steps": steps})
    return best[1], best[2]


def _ngiam(store: Store, target: Dataset, budget: int, seed: int) -> np.ndarray:
    """Importance weighting over the labelled source classes (unlabelled sources get none)."""
    X, y = store.all()
    lab = np.flatnonzero(y.numpy() >= 0)
    torch.manual_seed(seed)
    clf = SmallCNN(n_outputs=int(y.max()) + 1)
    opt = torch.optim.SGD(clf.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    Xl, yl = X[lab], y[lab]
    for _ in range(300):
        idx = torch.randint(0, len(lab), (64,), generator=gen)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(clf(Xl[idx]), yl[idx]).backward()
        opt.step()
    with torch.no_grad():
        p_t = torch.softmax(clf(target.X), 1).mean(0).numpy()
    p_s = np.bincount(yl.numpy(), minlength=p_t.size) / len(lab)
    w = np.zeros(store.size)
    w[lab] = (p_t / np.maximum(p_s, 1e-12))[yl.numpy()]
    budget = min(budget, int((w > 0).sum()))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(store.size, size=budget, replace=False, p=w / w.sum()))


def run_dataserver_experiment(
    seed: int = 0, pretrain_epochs: int = 4, k: int = 8, store_dir: str | None = None, verbose: bool = False
) -> dict:
    """The table's row values for one seed: accuracy per method, selection precision, seconds."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = store_dir or os.path.join(tmp, "store")
        store, target, test = build_offline_store(root, seed=seed, k=k, verbose=verbose, overwrite=store_dir is None)
        val, tr = stratified_split(target, [25, None], random_state=seed + 1)
        dsid = store.dataset_ids()
        relevant = np.isin(dsid, [i for i, d in enumerate(store.datasets) if d.name in RELEVANT])
        n = store.size
        experts = [load_expert(root, i) for i in range(k)]
        # computed on the client's side: label-free rotation accuracy, and the labelled probe
        scores = fast_adapt_scores(experts, tr.X, seed=seed)
        probe_scores = fast_adapt_scores(experts, tr.X, tr.y, seed=seed)
        rng = np.random.default_rng(seed)
        selections = {
            "none": None,
            "full": np.arange(n),
            "uniform_20": np.sort(rng.choice(n, int(0.2 * n), replace=False)),
            "uniform_40": np.sort(rng.choice(n, int(0.4 * n), replace=False)),
            "ngiam_20": _ngiam(store, tr, int(0.2 * n), seed),
            "ours_20": output_data(scores, store.partitions, int(0.2 * n), seed=seed),
            "ours_40": output_data(scores, store.partitions, int(0.4 * n), seed=seed),
            "ours_probe_20": output_data(probe_scores, store.partitions, int(0.2 * n), seed=seed),
        }
        # the paper's domain-confusion check (Fig. 3): proxy A-distance between every partition
        # and the target images, against that expert's score
        from ..adaptation import proxy_a_distance

        parts = store.partitions
        pad = []
        for i in range(k):
            members = np.flatnonzero(parts == i)
            members = rng.choice(members, size=min(300, members.size), replace=False)
            pad.append(proxy_a_distance(store.get(np.sort(members))[0], tr.X, random_state=seed))
        corr = float(np.corrcoef(pad, scores)[0, 1]) if np.std(pad) > 0 and np.std(scores) > 0 else float("nan")
        acc, chosen, precision = {}, {}, {}
        for name, sel in selections.items():
            X = None if sel is None else store.get(sel)[0]
            net = _pretrain(X, seed, pretrain_epochs)
            acc[name], chosen[name] = _fine_tune(net, tr, val, test, seed)
            if sel is not None:
                precision[name] = float(relevant[sel].mean())
            if verbose:
                print(f"  {name:11s} accuracy {acc[name]:.3f}", flush=True)
        return {
            "experiment": "dataserver",
            "seed": seed,
            "k": k,
            "store_size": n,
            "accuracy": acc,
            "selection_precision": precision,
            "expert_scores": scores.tolist(),
            "expert_probe_scores": probe_scores.tolist(),
            "proxy_a_distance": pad,
            "pad_score_correlation": corr,
            "chosen": chosen,
            "seconds": time.perf_counter() - t0,
        }
