"""Partitioning the store (the gating g) and training one self-supervised expert per partition."""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ...selfsup import SmallCNN, train_rotation
from .store import Store

__all__ = ["partition_store", "train_experts", "load_expert_manifest", "build_expert", "feature_network"]


def build_expert(config: dict) -> torch.nn.Module:
    """The network an expert config describes (weights not loaded)."""
    if config.get("arch") != "small_cnn":
        raise ValueError(f"unknown expert architecture {config.get('arch')!r}")
    return SmallCNN(config["in_channels"], config["width"], config["feature_dim"], config["n_outputs"])


def feature_network(store: Store, epochs: int = 5, max_examples: int = 20000, seed: int = 0,
                    verbose: bool = False) -> SmallCNN:
    """A rotation-pretrained network on a sample of the whole store: the features the
    unsupervised partitioning clusters."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(store.size, size=min(max_examples, store.size), replace=False))
    X, _ = store.get(idx)
    torch.manual_seed(seed)
    net = SmallCNN(in_channels=store.example_shape[0])
    return train_rotation(net, X, epochs=epochs, seed=seed, verbose=verbose)


@torch.no_grad()
def _features(net: SmallCNN, X: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    net.eval()
    return torch.cat([net.features(X[i:i + batch_size]) for i in range(0, X.shape[0], batch_size)])


def partition_store(store: Store, k: int, method: str = "unsupervised", seed: int = 0, epochs: int = 5,
                    verbose: bool = False) -> np.ndarray:
    """Assigns every example to one of k partitions and saves them in the store.

    'unsupervised': KMeans on the features of a rotation-pretrained network;
    'superclass': KMeans over the class-mean features of the labelled datasets (each class one
    point), every labelled example takes its class's cluster, unlabelled ones the nearest center.
    Returns the (N,) ids."""
    from ...cluster import KMeans

    if method not in ("unsupervised", "superclass"):
        raise ValueError(f"method must be 'unsupervised' or 'superclass', got {method!r}")
    if not (isinstance(k, int) and 1 <= k <= store.size):
        raise ValueError(f"k must be an int in [1, {store.size}], got {k!r}")
    net = feature_network(store, epochs=epochs, seed=seed, verbose=verbose)
    X, y = store.all()
    F = _features(net, X)
    if method == "unsupervised":
        km = KMeans(n_clusters=k, random_state=seed).fit(F)
        ids = np.asarray(km.labels_, dtype=np.int64)
    else:
        dsid = torch.from_numpy(store.dataset_ids())
        labelled = y >= 0
        if not labelled.any():
            raise ValueError("method='superclass' needs at least one labelled dataset")
        keys = torch.unique(dsid[labelled] * 1_000_000 + y[labelled])
        if keys.numel() < k:
            raise ValueError(f"superclass partitioning needs at least k={k} classes, the store has {keys.numel()}")
        key_of = dsid * 1_000_000 + y
        means = torch.stack([F[key_of == kk].mean(0) for kk in keys])
        km = KMeans(n_clusters=k, random_state=seed).fit(means)
        centers = torch.as_tensor(np.asarray(km.cluster_centers_), dtype=F.dtype)
        ids_t = torch.cdist(F, centers).argmin(1)
        lut = dict(zip(keys.tolist(), np.asarray(km.labels_).tolist()))
        for i in torch.nonzero(labelled).flatten().tolist():
            ids_t[i] = lut[int(key_of[i])]
        ids = ids_t.numpy().astype(np.int64)
    store.save_partitions(ids)
    return ids


def _train_classifier(net: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, epochs: int, seed: int,
                      lr: float = 0.05, batch_size: int = 64) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(X.shape[0], generator=gen)
        for i in range(0, X.shape[0], batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
            opt.step()


def train_experts(store: Store, epochs: int = 10, seed: int = 0, rank: int = 0, world_size: int = 1,
                  task: str = "rotation", verbose: bool = False) -> dict:
    """Trains one expert per partition and caches it in ``experts/`` as safetensors with its
    config: task='rotation' (self-supervised, seed eq. 4; the default) or 'classification' (on the
    partition's labelled examples, classes = (dataset, label) pairs; every partition needs labels).
    Under torch.distributed, pass rank / world_size: rank r trains partitions r, r + world, ...;
    rank 0 writes the manifest after a barrier. Returns the manifest (None on other ranks)."""
    if task not in ("rotation", "classification"):
        raise ValueError(f"task must be 'rotation' or 'classification', got {task!r}")
    parts = store.partitions
    if parts is None:
        raise ValueError("the store has no partitions: run partition_store first")
    k = int(parts.max()) + 1
    out = os.path.join(store.root, "experts")
    os.makedirs(out, exist_ok=True)
    mine = range(rank, k, world_size)
    if verbose:
        from tqdm.auto import tqdm
        mine = tqdm(mine, desc="experts", unit="expert")
    for i in mine:
        members = np.flatnonzero(parts == i)
        X, y = store.get(members)
        torch.manual_seed(seed + i)
        extra = {}
        if task == "rotation":
            net = SmallCNN(in_channels=store.example_shape[0])
            train_rotation(net, X, epochs=epochs, seed=seed + i)
        else:
            lab = (y >= 0).numpy()
            if not lab.any():
                raise ValueError(f"partition {i} has no labelled examples: task='classification' needs labels "
                                 "in every partition (use task='rotation')")
            keys = store.dataset_ids()[members][lab] * 1_000_000 + y.numpy()[lab]
            classes, yi = np.unique(keys, return_inverse=True)
            net = SmallCNN(in_channels=store.example_shape[0], n_outputs=len(classes))
            _train_classifier(net, X[torch.from_numpy(lab)], torch.from_numpy(yi).long(), epochs, seed + i)
            extra["classes"] = [[int(c // 1_000_000), int(c % 1_000_000)] for c in classes]
        save_file(net.state_dict(), os.path.join(out, f"expert-{i:03d}.safetensors"))
        with open(os.path.join(out, f"expert-{i:03d}.json"), "w") as f:
            json.dump({"index": i, "partition": i, "n_examples": int(members.size), "task": task,
                       "epochs": epochs, "config": net.config, "file": f"expert-{i:03d}.safetensors", **extra}, f)
    if world_size > 1:
        import torch.distributed as dist
        dist.barrier()
    manifest = None
    if rank == 0:
        experts = []
        for i in range(k):
            with open(os.path.join(out, f"expert-{i:03d}.json")) as f:
                experts.append(json.load(f))
        manifest = {"k": k, "experts": experts}
        tmp = os.path.join(out, ".manifest.json.tmp")
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=2)
        os.replace(tmp, os.path.join(out, "manifest.json"))
    return manifest


def load_expert_manifest(store_dir: str) -> dict | None:
    path = os.path.join(store_dir, "experts", "manifest.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def load_expert(store_dir: str, i: int) -> torch.nn.Module:
    """Expert i with its weights, from a store directory."""
    manifest = load_expert_manifest(store_dir)
    net = build_expert(manifest["experts"][i]["config"])
    net.load_state_dict(load_file(os.path.join(store_dir, "experts", manifest["experts"][i]["file"])))
    return net
