"""A small on-disk cache of generated arrays: one ``.npz`` per key, written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import numpy as np

__all__ = ["cache_dir", "cache_key", "load_cached", "save_cached"]


def cache_dir(path: str | os.PathLike | None = None) -> str:
    """The cache directory: `path`, else $TLKERNELS_CACHE, else ~/.cache/tlkernels (created)."""
    if path is None:
        path = os.environ.get("TLKERNELS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tlkernels")
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    return path


def cache_key(prefix: str, params: dict) -> str:
    """`prefix`-<16 hex digits of a hash of the JSON of params> (a file name stem)."""
    blob = json.dumps(params, sort_keys=True, separators=(",", ":")).encode()
    return f"{prefix}-{hashlib.sha256(blob).hexdigest()[:16]}"


def load_cached(directory: str, key: str) -> dict[str, np.ndarray] | None:
    """The arrays stored under `key`, or None when absent or unreadable (a damaged file is
    regenerated rather than trusted)."""
    path = os.path.join(directory, key + ".npz")
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError):
        return None


def save_cached(directory: str, key: str, arrays: dict[str, np.ndarray]) -> str:
    """Writes the arrays to <directory>/<key>.npz through a temporary file and os.replace, so a
    reader never sees a partial file and concurrent writers leave one complete file."""
    final = os.path.join(directory, key + ".npz")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=key + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, final)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return final
