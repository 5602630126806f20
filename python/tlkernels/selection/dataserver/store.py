"""The dataserver's store on disk: source datasets as safetensors shards plus a manifest.

Layout of a store directory::

    manifest.json              datasets (name, size, example shape, labels or not, shard files)
    data/<name>-<k>.safetensors    X (n_k, *shape) float32, y (n_k,) int64 (-1 where unlabelled)
    partitions.npy             (N,) int64 partition id of every example (after partitioning)
    experts/                   expert weights and configs (see experts.py)
    selections/                persisted selections of the service

Examples are addressed by a global index: datasets concatenated in manifest order. Reads are
lazy: a shard's safetensors header is parsed and its X / y memory-mapped (numpy), so reading k
rows touches only the pages of those rows, not the whole shard.

A file that cannot be read as what it should be (the manifest, a shard, partitions.npy) raises
``CorruptFileError``, whose message names the file and what is wrong with it.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

__all__ = ["CorruptFileError", "DatasetInfo", "Store"]

MANIFEST = "manifest.json"
_DTYPES = {"F32": np.dtype("<f4"), "I64": np.dtype("<i8")}


class CorruptFileError(ValueError):
    """A file of the store that cannot be read as what it should be. ``path`` is the file (relative
    to the store where it is the store's), the message names it and says what is wrong."""

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path} is corrupt: {problem}")


def _read_safetensors_header(path: str, shown: str) -> tuple[dict, int, int]:
    """(header dict, offset of the data section, file size) of a safetensors file."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CorruptFileError(shown, f"{size} bytes, shorter than a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100_000_000):
                raise CorruptFileError(shown, f"header length {n} exceeds the file ({size} bytes)")
            header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFileError(shown, f"unreadable safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CorruptFileError(shown, "the safetensors header is not a JSON object")
    return header, 8 + n, size


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
            raise FileNotFoundError(
                f"root must be a dataserver store (no {MANIFEST} in {root!r}); "
                "create one with Store.create or `tlkernels dataserver build`"
            )
        self.root = root
        self.datasets = self._read_manifest(path)
        self.size = sum(d.size for d in self.datasets)
        # global shard table: (start, end, file)
        self._shards = []
        for d in self.datasets:
            start = d.offset
            for file, n in d.shards:
                self._shards.append((start, start + n, file))
                start += n
        self._starts = np.array([s for s, _, _ in self._shards], dtype=np.int64)
        self._partitions = None  # (file signature, ids)

    @staticmethod
    def _read_manifest(path: str) -> list[DatasetInfo]:
        try:
            with open(path, encoding="utf-8") as f:
                manifest = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptFileError(path, f"not valid JSON ({e})") from None
        try:
            datasets, offset = [], 0
            for d in manifest["datasets"]:
                shards = tuple((str(f), int(n)) for f, n in d["shards"])
                info = DatasetInfo(
                    str(d["name"]),
                    int(d["size"]),
                    tuple(int(v) for v in d["shape"]),
                    bool(d["labelled"]),
                    int(d["offset"]),
                    shards,
                )
                if info.offset != offset or info.size <= 0 or sum(n for _, n in shards) != info.size:
                    raise ValueError(f"dataset {info.name!r}: offset, size and shard sizes disagree")
                if any(n <= 0 or os.path.isabs(f) or ".." in f.split("/") for f, n in shards):
                    raise ValueError(f"dataset {info.name!r}: a shard entry is not (relative file, size > 0)")
                if datasets and info.shape != datasets[0].shape:
                    raise ValueError(f"dataset {info.name!r}: example shape {info.shape} differs from the first's")
                datasets.append(info)
                offset += info.size
        except (KeyError, TypeError, ValueError) as e:
            what = f"missing key {e}" if isinstance(e, KeyError) else str(e)
            raise CorruptFileError(path, f"not a dataserver store manifest ({what})") from None
        if not datasets:
            raise CorruptFileError(path, "it lists no datasets")
        return datasets

    # -- creation --------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str, datasets: dict, shard_size: int = 4096, overwrite: bool = False) -> Store:
        """Writes a store. datasets: {name: (X (N, *shape), y (N,) or None)}; X float, labels int
        (>= 0). All datasets must share one example shape. Written to a temporary directory and
        moved into place, so a failure leaves nothing half-written."""
        if not datasets:
            raise ValueError("datasets must name at least one dataset")
        if os.path.exists(root) and os.listdir(root) and not overwrite:
            raise FileExistsError(f"root {root!r} exists and is not empty (pass overwrite=True to replace it)")
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
                    raise ValueError(
                        f"datasets[{name!r}]: y must be (N,) non-negative ints, got shape {tuple(yt.shape)}"
                    )
            shards = []
            for k, start in enumerate(range(0, X.shape[0], shard_size)):
                file = f"data/{name}-{k:05d}.safetensors"
                part = slice(start, start + shard_size)
                save_file(
                    {"X": X[part].contiguous(), "y": yt[part].contiguous()},
                    os.path.join(tmp, file),
                )
                shards.append((file, int(X[part].shape[0])))
            entries.append(
                {
                    "name": name,
                    "size": int(X.shape[0]),
                    "shape": list(X.shape[1:]),
                    "labelled": y is not None,
                    "offset": offset,
                    "shards": shards,
                }
            )
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
            start, end, file = self._shards[s]
            Xs, ys = self._open_shard(file, end - start)
            local = idx[where] - start
            X[where] = torch.from_numpy(np.ascontiguousarray(Xs[local]))
            y[where] = torch.from_numpy(np.ascontiguousarray(ys[local]))
        return X, y

    def _open_shard(self, file: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """X and y of a shard as read-only memory maps (nothing is read until indexed)."""
        path = os.path.join(self.root, file)
        if not os.path.exists(path):
            raise CorruptFileError(file, "the file is missing")
        header, data_start, size = _read_safetensors_header(path, file)
        want = {"X": ("F32", (n, *self.example_shape)), "y": ("I64", (n,))}
        out = []
        for key, (dtype, shape) in want.items():
            t = header.get(key)
            try:
                ok = (
                    t["dtype"] == dtype
                    and tuple(t["shape"]) == shape
                    and t["data_offsets"][1] - t["data_offsets"][0] == int(np.prod(shape)) * _DTYPES[dtype].itemsize
                    and 0 <= t["data_offsets"][0]
                    and data_start + t["data_offsets"][1] <= size
                )
            except (KeyError, TypeError, IndexError):
                ok = False
            if not ok:
                raise CorruptFileError(
                    file,
                    f"tensor {key!r} is not {dtype} of shape {shape} within the file (header says {t!r})",
                )
            out.append(
                np.memmap(
                    path,
                    dtype=_DTYPES[dtype],
                    mode="r",
                    offset=data_start + t["data_offsets"][0],
                    shape=shape,
                )
            )
        return out[0], out[1]

    def all(self) -> tuple[Tensor, Tensor]:
        """Every example: X (N, *shape), y (N,)."""
        return self.get(np.arange(self.size))

    # -- partitions ------------------------------------------------------------------------------
    @property
    def partitions(self) -> np.ndarray | None:
        """(N,) int64 partition ids (read-only), or None before partitioning. Cached while the
        file stays the same (its inode, size and mtime)."""
        path = os.path.join(self.root, "partitions.npy")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._partitions
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            ids = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise CorruptFileError("partitions.npy", f"not a readable .npy array ({e})") from None
        if ids.shape != (self.size,) or ids.dtype.kind not in "iu" or (ids.size and ids.min() < 0):
            raise CorruptFileError(
                "partitions.npy",
                f"expected ({self.size},) non-negative ints, got {ids.dtype} of shape {ids.shape}",
            )
        ids = ids.astype(np.int64, copy=False)
        ids.setflags(write=False)
        self._partitions = (key, ids)
        return ids

    def save_partitions(self, ids) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.shape != (self.size,) or ids.min() < 0:
            raise ValueError(f"partition ids must be (N,) = ({self.size},) non-negative ints, got {ids.shape}")
        tmp = os.path.join(self.root, ".partitions.npy.tmp")
        with open(tmp, "wb") as f:
            np.save(f, ids)
        os.replace(tmp, os.path.join(self.root, "partitions.npy"))
