"""Irrelevant sources for the dataserver's stores: patches of natural photos and smoothed noise,
at any size, grey or RGB. Nothing is downloaded: the photos are scikit-learn's two sample images.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["image_patches", "smooth_noise"]


def _check(n, size, channels) -> None:
    if not (isinstance(n, (int, np.integer)) and n > 0):
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not (isinstance(size, (int, np.integer)) and 2 <= size <= 128):
        raise ValueError(f"size must be an int in [2, 128], got {size!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")


def image_patches(n: int, size: int = 8, seed: int = 0, channels: int = 1) -> torch.Tensor:
    """n patches of scikit-learn's sample photographs, each size x size pixels taken every 1, 2
    or 3 pixels (several scales), values in [0, 1]. channels=1: the photo's grey level (mean of
    R, G, B); 3: its colours. Returns (n, channels, size, size) float32; deterministic per seed."""
    from sklearn.datasets import load_sample_images

    _check(n, size, channels)
    rng = np.random.default_rng(seed)
    photos = [np.asarray(im, dtype=np.float32) for im in load_sample_images().images]
    photos = [(im.mean(2, keepdims=True) if channels == 1 else im) / 255.0 for im in photos]
    out = np.empty((n, channels, size, size), dtype=np.float32)
    for k in range(n):
        im = photos[k % len(photos)]
        step = int(rng.integers(1, 4))  # patches at several scales
        r = int(rng.integers(0, im.shape[0] - size * step))
        c = int(rng.integers(0, im.shape[1] - size * step))
        out[k] = im[r : r + size * step : step, c : c + size * step : step].transpose(2, 0, 1)
    return torch.from_numpy(out)


def smooth_noise(n: int, size: int = 8, seed: int = 0, channels: int = 1) -> torch.Tensor:
    """n images of uniform noise drawn at (size / 2) x (size / 2) and upsampled bilinearly to
    size x size. Returns (n, channels, size, size) float32 in [0, 1]; deterministic per seed."""
    _check(n, size, channels)
    gen = torch.Generator().manual_seed(seed)
    coarse = max(1, size // 2)
    x = torch.rand(n, channels, coarse, coarse, generator=gen)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
