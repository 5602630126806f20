"""Shared preprocessing of the digit domains: 32x32 RGB and per-image standardisation."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["standardize_images", "to_rgb32"]


def to_rgb32(X: Tensor) -> Tensor:
    """Images (N, C, H, W) with C in {1, 3} and H, W <= 32 -> (N, 3, 32, 32): zero-padded
    symmetrically (MNIST's 28x28 gets 2 pixels each side) and a single channel replicated."""
    if X.dim() != 4 or X.shape[1] not in (1, 3):
        raise ValueError(f"X must have shape (N, 1 or 3, H, W), got {tuple(X.shape)}")
    h, w = X.shape[-2:]
    if h > 32 or w > 32:
        raise ValueError(f"X's images must be at most 32x32, got {h}x{w}")
    top, left = (32 - h) // 2, (32 - w) // 2
    X = F.pad(X, (left, 32 - w - left, top, 32 - h - top))
    return X.expand(-1, 3, -1, -1).contiguous() if X.shape[1] == 1 else X


def standardize_images(X: Tensor) -> Tensor:
    """Per-image standardisation: each image (all channels and pixels together) shifted to mean 0
    and divided by max(std, 1 / sqrt(pixels)) (as TensorFlow's per_image_standardization: a
    constant image stays ~0 instead of being blown up). X (N, ...) float -> the same shape."""
    if X.dim() < 2 or not X.is_floating_point():
        raise ValueError(f"X must be a float tensor (N, ...), got {X.dtype} of shape {tuple(X.shape)}")
    flat = X.reshape(X.shape[0], -1)
    mean = flat.mean(1, keepdim=True)
    std = flat.std(1, unbiased=False, keepdim=True).clamp_min(flat.shape[1] ** -0.5)
    return ((flat - mean) / std).reshape(X.shape)
