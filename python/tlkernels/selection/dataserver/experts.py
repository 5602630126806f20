"""Partitioning the store (the gating g) and training one self-supervised expert per partition."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file

from ...selfsup import SmallCNN, train_rotation
from .store import CorruptFileError, Store

__all__ = [
    "build_expert",
    "expert_network",
    "feature_network",
    "load_expert",
    "load_expert_bytes",
    "load_expert_manifest",
    "partition_store",
    "sha256_hex",
    "train_experts",
    "verify_expert_bytes",
]

MANIFEST = "experts/manifest.json"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_expert_bytes(data: bytes, meta: dict, where: str = "") -> None:
    """Raises CorruptFileError (naming the expert's file) when ``data`` does not hash to the
    manifest's sha256 for it. Manifests written before the hashes were recorded have none: then
    nothing is checked."""
    want = meta.get("sha256")
    if want is None:
        return
    got = sha256_hex(data)
    if got != want:
        raise CorruptFileError(
            f"experts/{meta.get('file')}",
            f"its sha256 {got[:16]}... does not match the manifest's {str(want)[:16]}...{where}",
        )


def build_expert(config: dict) -> torch.nn.Module:
    """The network an expert config describes (weights not loaded)."""
    if config.get("arch") != "small_cnn":
        raise ValueError(f"unknown expert architecture {config.get('arch')!r}")
    return SmallCNN(
        config["in_channels"],
        config["width"],
        config["feature_dim"],
        config["n_outputs"],
        pool=config.get("pool", 1),  # manifests written before these keys existed: the 8x8 network
        grid=config.get("grid", 1),
    )


EXPERT_OPTIONS = ("width", "feature_dim", "pool", "grid")


def expert_network(in_channels: int, n_outputs: int = 4, expert_config: dict | None = None) -> SmallCNN:
    """The SmallCNN of the experts and of the partitioning's feature network. expert_config:
    None (the defaults, made for 8x8 images) or SmallCNN options among EXPERT_OPTIONS, e.g.
    {"pool": 2, "grid": 2} for 32x32 images."""
    options = dict(expert_config or {})
    unknown = sorted(set(options) - set(EXPERT_OPTIONS))
    if unknown:
        raise ValueError(f"expert_config takes keys among {EXPERT_OPTIONS}, got unknown {unknown}")
    return SmallCNN(in_channels, n_outputs=n_outputs, **options)


def feature_network(
    store: Store,
    epochs: int = 5,
    max_examples: int = 20000,
    seed: int = 0,
    verbose: bool = False,
    expert_config: dict | None = None,
) -> SmallCNN:
    """A rotation-pretrained network (``expert_network(C, 4, expert_config)``) on a sample of
    the whole store: the features the unsupervised partitioning clusters."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(store.size, size=min(max_examples, store.size), replace=False))
    X, _ = store.get(idx)
    torch.manual_seed(seed)
    net = expert_network(store.example_shape[0], 4, expert_config)
    return train_rotation(net, X, epochs=epochs, seed=seed, verbose=verbose)


@torch.no_grad()
def _features(net: SmallCNN, X: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    net.eval()
    return torch.cat([net.features(X[i : i + batch_size]) for i in range(0, X.shape[0], batch_size)])


def partition_store(
    store: Store,
    k: int,
    method: str = "unsupervised",
    seed: int = 0,
    epochs: int = 5,
    verbose: bool = False,
    expert_config: dict | None = None,
) -> np.ndarray:
    """Assigns every example to one of k partitions and saves them in the store.

    'unsupervised': KMeans on the features of a rotation-pretrained network;
    'superclass': KMeans over the class-mean features of the labelled datasets (each class one
    point), every labelled example takes its class's cluster, unlabelled ones the nearest center.
    The feature network is ``feature_network(store, epochs, seed=seed, expert_config=...)``
    (see ``expert_network``). Returns the (N,) ids."""
    from ...cluster import KMeans

    if method not in ("unsupervised", "superclass"):
        raise ValueError(f"method must be 'unsupervised' or 'superclass', got {method!r}")
    if not (isinstance(k, int) and 1 <= k <= store.size):
        raise ValueError(f"k must be an int in [1, {store.size}], got {k!r}")
    net = feature_network(store, epochs=epochs, seed=seed, verbose=verbose, expert_config=expert_config)
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


def _train_classifier(
    net: torch.nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    seed: int,
    lr: float = 0.05,
    batch_size: int = 64,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(X.shape[0], generator=gen)
        for i in range(0, X.shape[0], batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
            opt.step()


def train_experts(
    store: Store,
    epochs: int = 10,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    task: str = "rotation",
    verbose: bool = False,
    expert_config: dict | None = None,
) -> dict:
    """Trains one expert per partition and caches it in ``experts/`` as safetensors with its
    config: task='rotation' (self-supervised, Yan et al. 2020, eq. 4; the default) or 'classification' (on the
    partition's labelled examples, classes = (dataset, label) pairs; every partition needs labels).
    Under torch.distributed, pass rank / world_size: rank r trains partitions r, r + world, ...;
    rank 0 writes the manifest after a barrier. expert_config: the experts' SmallCNN options
    (``expert_network``; None for the 8x8 defaults), recorded in each expert's config.
    Returns the manifest (None on other ranks)."""
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
        net, extra = _train_expert(store, members, i, task, epochs, seed + i, expert_config)
        _save_expert(out, i, net, int(members.size), task, epochs, extra)
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()
    return _write_manifest(out, k) if rank == 0 else None


def _train_expert(
    store: Store, members: np.ndarray, i: int, task: str, epochs: int, seed: int, expert_config: dict | None = None
):
    """The expert of partition i (store indices `members` (n,)), trained from `seed`: a SmallCNN
    predicting rotations, or classifying the partition's labelled examples into (dataset, label)
    pairs. Returns (net, extra manifest fields: the classes of a classifier)."""
    X, y = store.get(members)
    torch.manual_seed(seed)
    if task == "rotation":
        net = expert_network(store.example_shape[0], 4, expert_config)
        train_rotation(net, X, epochs=epochs, seed=seed)
        return net, {}
    lab = (y >= 0).numpy()
    if not lab.any():
        raise ValueError(
            f"partition {i} has no labelled examples: task='classification' needs labels "
            "in every partition (use task='rotation')"
        )
    keys = store.dataset_ids()[members][lab] * 1_000_000 + y.numpy()[lab]
    classes, yi = np.unique(keys, return_inverse=True)
    net = expert_network(store.example_shape[0], len(classes), expert_config)
    _train_classifier(
        net,
        X[torch.from_numpy(lab)],
        torch.from_numpy(yi).long(),
        epochs,
        seed,
    )
    return net, {"classes": [[int(c // 1_000_000), int(c % 1_000_000)] for c in classes]}


def _save_expert(out: str, i: int, net, n_examples: int, task: str, epochs: int, extra: dict) -> None:
    """expert-<i>.safetensors (the weights) and expert-<i>.json (index, partition, n_examples,
    task, epochs, the net's config, the weights' file name and sha256, then `extra`) in `out`."""
    weights = os.path.join(out, f"expert-{i:03d}.safetensors")
    save_file(net.state_dict(), weights)
    with open(weights, "rb") as f:
        digest = sha256_hex(f.read())
    with open(os.path.join(out, f"expert-{i:03d}.json"), "w") as f:
        json.dump(
            {
                "index": i,
                "partition": i,
                "n_examples": n_examples,
                "task": task,
                "epochs": epochs,
                "config": net.config,
                "file": f"expert-{i:03d}.safetensors",
                "sha256": digest,
                **extra,
            },
            f,
        )


def _write_manifest(out: str, k: int) -> dict:
    """Gathers the k experts' JSON files of `out` into manifest.json (written atomically) and
    returns it: {"k": k, "experts": [...]}."""
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
    """The experts' manifest of a store, None if it has no experts; CorruptFileError (naming
    experts/manifest.json) if it cannot be read as one."""
    path = os.path.join(store_dir, "experts", "manifest.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFileError(MANIFEST, f"not valid JSON ({e})") from None
    try:
        k, experts = manifest["k"], manifest["experts"]
        if not isinstance(experts, list):
            raise TypeError("'experts' is not a list")
        if not (isinstance(k, int) and k >= 1 and len(experts) == k):
            raise ValueError(f"k = {k!r} does not match its {len(experts)} experts")
        for e in experts:
            file = e["file"]
            if not isinstance(file, str) or "/" in file or file.startswith("."):
                raise ValueError(f"expert file {file!r} is not a plain file name")
            if not isinstance(e["config"], dict):
                raise TypeError("an expert's config is not an object")
    except (KeyError, TypeError, ValueError) as e:
        what = f"missing key {e}" if isinstance(e, KeyError) else str(e)
        raise CorruptFileError(MANIFEST, f"not an experts manifest ({what})") from None
    return manifest


def load_expert_bytes(store_dir: str, manifest: dict, i: int) -> bytes:
    """Expert i's weights file, checked against the manifest's sha256 (CorruptFileError naming the
    file on a mismatch or when it is missing)."""
    meta = manifest["experts"][i]
    path = os.path.join(store_dir, "experts", meta["file"])
    if not os.path.exists(path):
        raise CorruptFileError(f"experts/{meta['file']}", "the file is missing")
    with open(path, "rb") as f:
        data = f.read()
    verify_expert_bytes(data, meta)
    return data


def load_expert(store_dir: str, i: int) -> torch.nn.Module:
    """Expert i with its weights, from a store directory (its sha256 checked)."""
    manifest = load_expert_manifest(store_dir)
    if manifest is None:
        raise FileNotFoundError(f"{store_dir!r} has no experts (tlkernels dataserver build --partitions K)")
    net = build_expert(manifest["experts"][i]["config"])
    net.load_state_dict(load_tensors(load_expert_bytes(store_dir, manifest, i)))
    return net
