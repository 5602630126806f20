"""Convolutional backbones for the 32x32 RGB digit domains (SynDigits, MNIST), built only from
layers whose per-sample products ``tlkernels.persample`` computes natively (Conv2d, GroupNorm,
Linear, ReLU, pooling), so every method of the library (SOSELETO's weighted steps included) runs
on them.
"""

from __future__ import annotations

from torch import nn

__all__ = ["digits_cnn"]


def digits_cnn(in_channels: int = 3, widths=(16, 32, 64), features: int = 128, groups: int = 8) -> nn.Sequential:
    """A small CNN: Conv 5x5 (widths[0]) - GroupNorm - ReLU - MaxPool 2, Conv 5x5 (widths[1]) -
    GroupNorm - ReLU - MaxPool 2, Conv 3x3 (widths[2]) - GroupNorm - ReLU - adaptive max pool to
    4x4, Flatten, Linear(widths[2] * 16, features) - ReLU.

    Input (N, in_channels, H, W) (H, W >= 4; 32x32 for the digit domains), output (N, features)
    (add a head: ``nn.Linear(features, classes)``). GroupNorm (Wu & He 2018) instead of
    BatchNorm: per-sample gradients are defined (no batch statistics) and a 20-example target
    trains the same way as a large source. The 4x4 map keeps where the strokes are: with a
    global average pool instead, the same network reached 64% on MNIST after 160 Adam steps
    where this one reaches 97% (bench: docs/results-digits.md). `groups` must divide every width.
    """
    widths = tuple(int(w) for w in widths)
    if len(widths) != 3 or min(widths) < 1:
        raise ValueError(f"widths must be three positive ints, got {widths!r}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    if features < 1:
        raise ValueError(f"features must be a positive int, got {features!r}")
    if groups < 1 or any(w % groups for w in widths):
        raise ValueError(f"groups must divide every width {widths}, got {groups}")
    a, b, c = widths
    return nn.Sequential(
        nn.Conv2d(in_channels, a, 5, padding=2), nn.GroupNorm(groups, a), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(a, b, 5, padding=2), nn.GroupNorm(groups, b), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(b, c, 3, padding=1), nn.GroupNorm(groups, c), nn.ReLU(), nn.AdaptiveMaxPool2d(4),
        nn.Flatten(), nn.Linear(c * 16, features), nn.ReLU(),
    )  # fmt: skip
