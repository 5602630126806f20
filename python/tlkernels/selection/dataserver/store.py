"""The dataserver's store on disk: source datasets as safetensors shards plus a manifest.

Layout of a store directory::

    manifest.json              datasets (name, size, example shape, labels or not, shard files)
    data/<name>-<k>.safetensors    X (n_k, *shape) float32, y (n_k,) int64 (-1 where unlabelled)
    partitions.npy             (N,) int64 partition id of every example (after partitioning)
    experts/                   expert weights and configs (see experts.py)
    selections/                persisted selections of the service

Examples are addressed by a global index: datasets concatenated in manifest order. Reads are
lazy: ``safetensors.safe_open`` memory-maps a shard and copies out only the requested rows.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

__all__ = ["Store", "DatasetInfo"]

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    size: int
    shape: tuple[int, ...]
    labelled: bool
    offset: int  # global index of its first example
    shards: tuple[tuple[str, int], ...]  # (file relative to the store, examples in it)


class Store:
    """A read-only view of a store directory (see the module docstring)."""

    def __init__(self, root: str):
        path = os.path.join(root, MANIFEST)
        if not os.path.exists(path):
            raise FileNotFoundError(f"root must be a dataserver store (no {MANIFEST} in {root!r}); "
                                    "create one with Store.create or `tlkernels dataserver build`")
        with open(path) as f:
            manifest = json.load(f)
        self.root = root
        self.datasets = [DatasetInfo(d["name"], d["size"], tuple(d["shape"]), d["labelled"], d["offset"],
                                     tuple((s, n) for s, n in d["shards"])) for d in manifest["datasets"]]
        self.size = sum(d.size for d in self.datasets)
        # global shard table: (start, end, file)
        self._shards = []
        for d in self.datasets:
            start = d.offset
            for file, n in d.shards:
                self._shards.append((start, start + n, file))
                start += n
        self._starts = np.array([s for s, _, _ in self._shards], dtype=np.int64)

    # -- creation --------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str, datasets: dict, shard_size: int = 4096, overwrite: bool = False) -> "Store":
        """Writes a store. datasets: {name: (X (N, *shape), y (N,) or None)}; X float, labels int
        (>= 0). All datasets must share one example shape. Written to a temporary directory and
        moved into place, so a failure leaves nothing half-written."""
        if not datasets:
            raise ValueError("datasets must name at least one dataset")
        if os.path.exists(root) and os.listdir(root) and not overwrite:
            raise FileExistsError(f"root {root!r} exists and is not empty (pass overwrite=True)")
        parent = os.path.dirname(os.path.abspath(root))
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".store-", dir=parent)
        try:
            cls._write(tmp, datasets, shard_size)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if os.path.exists(root):
            shutil.rmtree(root)
        os.replace(tmp, root)
        return cls(root)

    @staticmethod
    def _write(tmp: str, datasets: dict, shard_size: int) -> None:
        os.makedirs(os.path.join(tmp, "data"))
        entries, offset, shapes = [], 0, set()
        for name, (X, y) in datasets.items():
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"dataset name {name!r} must be a plain file-name-like string")
            X = torch.as_tensor(np.asarray(X) if not isinstance(X, Tensor) else X).float().contiguous()
            if X.dim() < 2 or X.shape[0] == 0:
                raise ValueError(f"datasets[{name!r}]: X must have shape (N, ...) with N > 0, got {tuple(X.shape)}")
            if not torch.isfinite(X).all():
                raise ValueError(f"datasets[{name!r}]: X contains NaN or infinite values")
            shapes.add(tuple(X.shape[1:]))
            if len(shapes) != 1:
                raise ValueError(f"all datasets must share one example shape, got {sorted(shapes)}")
            if y is None:
                yt = torch.full((X.shape[0],), -1, dtype=torch.long)
            else:
                yt = torch.as_tensor(np.asarray(y) if not isinstance(y, Tensor) else y).long()
                if yt.shape != (X.shape[0],) or (yt < 0).any():
                    raise ValueError(f"datasets[{name!r}]: y must be (N,) non-negative ints, got shape {tuple(yt.shape)}")
            shards = []
            for k, start in enumerate(range(0, X.shape[0], shard_size)):
                file = f"data/{name}-{k:05d}.safetensors"
                part = slice(start, start + shard_size)
                save_file({"X": X[part].contiguous(), "y": yt[part].contiguous()}, os.path.join(tmp, file))
                shards.append((file, int(X[part].shape[0])))
            entries.append({"name": name, "size": int(X.shape[0]), "shape": list(X.shape[1:]),
                            "labelled": y is not None, "offset": offset, "shards": shards})
            offset += int(X.shape[0])
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump({"version": 1, "datasets": entries}, f, indent=2)

    # -- reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.size

    @property
    def example_shape(self) -> tuple[int, ...]:
        return self.datasets[0].shape

    def dataset_ids(self) -> np.ndarray:
        """(N,) int64: the position in ``datasets`` of every example's dataset."""
        return np.concatenate([np.full(d.size, i, dtype=np.int64) for i, d in enumerate(self.datasets)])

    def get(self, indices) -> tuple[Tensor, Tensor]:
        """X (k, *shape) float32 and y (k,) int64 (-1 = unlabelled) of the given global indices,
        in the given order."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.size):
            raise IndexError(f"indices must be in [0, {self.size}), got min {idx.min()} max {idx.max()}")
        X = torch.empty((idx.size,) + self.example_shape, dtype=torch.float32)
        y = torch.empty(idx.size, dtype=torch.long)
        shard_of = np.searchsorted(self._starts, idx, side="right") - 1
        for s in np.unique(shard_of):
            where = np.flatnonzero(shard_of == s)
            start, _, file = self._shards[s]
            local = torch.from_numpy(idx[where] - start)
            with safe_open(os.path.join(self.root, file), framework="pt") as f:
                X[where] = f.get_tensor("X")[local]
                y[where] = f.get_tensor("y")[local]
        return X, y

    def all(self) -> tuple[Tensor, Tensor]:
        """Every example: X (N, *shape), y (N,)."""
        return self.get(np.arange(self.size))

    # -- partitions ------------------------------------------------------------------------------
    @property
    def partitions(self) -> np.ndarray | None:
        """(N,) int64 partition ids, or None before partitioning."""
        path = os.path.join(self.root, "partitions.npy")
        return np.load(path) if os.path.exists(path) else None

    def save_partitions(self, ids) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.shape != (self.size,) or ids.min() < 0:
            raise ValueError(f"partition ids must be (N,) = ({self.size},) non-negative ints, got {ids.shape}")
        tmp = os.path.join(self.root, ".partitions.npy.tmp")
        with open(tmp, "wb") as f:
            np.save(f, ids)
        os.replace(tmp, os.path.join(self.root, "partitions.npy"))
