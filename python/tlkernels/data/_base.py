"""Offline datasets and the tools experiments need: label noise, class splits, domain shifts.

Nothing here downloads anything. Real data that ships with scikit-learn (``load_digits``: 1,797
handwritten 8x8 digits) is the default; ``load_image_folder`` keeps a real loading path for image
folders on disk (torchvision's ``ImageFolder`` layout) when the user has one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Dataset",
    "add_label_noise",
    "class_split",
    "load_digits",
    "load_image_folder",
    "make_noisy_2d",
    "shift_images",
    "stratified_split",
]


@dataclass
class Dataset:
    """X (N, *feature_shape) float32, y (N,) int64; `flipped` (N,) bool marks labels changed by
    noise (None when no noise was added)."""

    X: Tensor
    y: Tensor
    flipped: Tensor | None = None

    def __len__(self) -> int:
        return self.X.shape[0]

    def to(self, device) -> Dataset:
        """The same examples with X, y and flipped on `device`."""
        dev = torch.device(device)
        return Dataset(
            self.X.to(dev),
            self.y.to(dev),
            None if self.flipped is None else self.flipped.to(dev),
        )

    def subset(self, idx) -> Dataset:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return Dataset(
            self.X[idx],
            self.y[idx],
            None if self.flipped is None else self.flipped[idx],
        )


def _rng(random_state) -> np.random.Generator:
    return random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)


def load_digits(images: bool = False) -> Dataset:
    """scikit-learn's 1,797 handwritten digits, pixel values scaled to [0, 1].

    images=False: X (1797, 64); images=True: X (1797, 1, 8, 8).
    """
    from sklearn.datasets import load_digits as _load

    d = _load()
    X = torch.tensor(d.data, dtype=torch.float32) / 16.0
    if images:
        X = X.view(-1, 1, 8, 8)
    return Dataset(X, torch.tensor(d.target, dtype=torch.long))


def load_image_folder(root: str, size: int = 32, grayscale: bool = False) -> Dataset:
    """Images in ``root/<class name>/*.{png,jpg,...}`` (torchvision's ImageFolder layout), resized
    to size x size, scaled to [0, 1]; classes numbered in sorted order. X (N, C, size, size)."""
    from PIL import Image

    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise ValueError(f"root must contain one folder per class, found none in {root!r}")
    xs, ys = [], []
    for k, c in enumerate(classes):
        for name in sorted(os.listdir(os.path.join(root, c))):
            if not name.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")):
                continue
            img = Image.open(os.path.join(root, c, name)).convert("L" if grayscale else "RGB").resize((size, size))
            arr = np.asarray(img, dtype=np.float32) / 255.0
            xs.append(arr[None] if grayscale else arr.transpose(2, 0, 1))
            ys.append(k)
    if not xs:
        raise ValueError(f"no images found under {root!r}")
    return Dataset(torch.tensor(np.stack(xs)), torch.tensor(ys, dtype=torch.long))


def make_noisy_2d(
    n_source: int = 500, n_target: int = 50, noise: float = 0.2, random_state=None
) -> tuple[Dataset, Dataset]:
    """SOSELETO's synthetic noisy-label set: points uniform in [-1, 1]^2, two classes separated
    by the curve x2 = 0.5 sin(pi x1); the source has a fraction `noise` of its labels flipped
    (recorded in `flipped`), the target is clean. Returns (source, target), X (N, 2)."""
    if not 0.0 <= noise < 1.0:
        raise ValueError(f"noise must be in [0, 1), got {noise}")
    rng = _rng(random_state)

    def sample(n):
        X = rng.uniform(-1.0, 1.0, size=(n, 2)).astype(np.float32)
        y = (X[:, 1] > 0.5 * np.sin(np.pi * X[:, 0])).astype(np.int64)
        return torch.tensor(X), torch.tensor(y)

    Xs, ys = sample(n_source)
    Xt, yt = sample(n_target)
    noisy, flipped = add_label_noise(ys, noise, n_classes=2, random_state=rng)
    return Dataset(Xs, noisy, flipped), Dataset(Xt, yt, torch.zeros(n_target, dtype=torch.bool))


def add_label_noise(
    y: Tensor,
    rate: float,
    kind: str = "symmetric",
    n_classes: int | None = None,
    random_state=None,
) -> tuple[Tensor, Tensor]:
    """Flips exactly round(rate * N) labels, chosen at random.

    kind='symmetric': a flipped label becomes one of the other classes uniformly;
    kind='pairwise': class c becomes (c + 1) mod C (structured confusion).
    y: (N,) int64. Returns (noisy labels (N,), flipped (N,) bool).
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    if kind not in ("symmetric", "pairwise"):
        raise ValueError(f"kind must be 'symmetric' or 'pairwise', got {kind!r}")
    rng = _rng(random_state)
    y = torch.as_tensor(y, dtype=torch.long)
    c = int(n_classes if n_classes is not None else int(y.max()) + 1)
    if c < 2:
        raise ValueError(f"label noise needs at least 2 classes, got {c}")
    n = y.shape[0]
    idx = torch.tensor(rng.permutation(n)[: round(rate * n)], dtype=torch.long)
    noisy = y.clone()
    if kind == "symmetric":
        shift = torch.tensor(rng.integers(1, c, size=len(idx)), dtype=torch.long)
    else:
        shift = torch.ones(len(idx), dtype=torch.long)
    noisy[idx] = (y[idx] + shift) % c
    flipped = torch.zeros(n, dtype=torch.bool)
    flipped[idx] = True
    return noisy, flipped


def class_split(data: Dataset, classes, relabel: bool = True) -> Dataset:
    """The examples whose label is in `classes`; relabel=True maps them to 0..len(classes)-1 in
    the given order (digits 5-9 -> 0-4)."""
    classes = list(classes)
    mask = torch.isin(data.y, torch.tensor(classes))
    out = data.subset(mask.nonzero().flatten())
    if relabel:
        lut = torch.full((int(data.y.max()) + 1,), -1, dtype=torch.long)
        lut[torch.tensor(classes)] = torch.arange(len(classes))
        out = Dataset(out.X, lut[out.y], out.flipped)
    return out


def stratified_split(data: Dataset, sizes, random_state=None, labels: Tensor | None = None) -> list[Dataset]:
    """Splits into parts of the given sizes (ints; the last may be None for "the rest"), each
    stratified by `labels` (default data.y: the clean labels where noise was added separately)."""
    rng = _rng(random_state)
    y = (data.y if labels is None else labels).numpy()
    n = len(y)
    sizes = list(sizes)
    fixed = sum(s for s in sizes if s is not None)
    if fixed > n:
        raise ValueError(f"sizes add up to {fixed}, more than the {n} examples")
    sizes = [n - fixed if s is None else int(s) for s in sizes]
    # deal examples class by class in a shuffled round-robin so every part is stratified
    order = []
    by_class = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    longest = max(len(b) for b in by_class)
    for i in range(longest):
        row = [b[i] for b in by_class if i < len(b)]
        order.extend(rng.permutation(row))
    parts, start = [], 0
    for s in sizes:
        parts.append(data.subset(np.sort(np.array(order[start : start + s], dtype=np.int64))))
        start += s
    return parts


def shift_images(X: Tensor, kind: str, amount: float, random_state=None) -> Tensor:
    """A domain shift of images X (N, C, H, W) in [0, 1]:

    'rotation' (amount in degrees), 'inversion' (amount in [0, 1]: blend towards 1 - x),
    'blur' (Gaussian sigma in pixels), 'noise' (Gaussian std), 'intensity' (multiplies by amount),
    'translation' (pixels, right and down).
    """
    if X.dim() != 4:
        raise ValueError(f"X must have shape (N, C, H, W), got {tuple(X.shape)}")
    if kind == "rotation":
        t = math.radians(amount)
        theta = torch.tensor(
            [[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0]],
            dtype=X.dtype,
        )
        grid = F.affine_grid(theta.expand(X.shape[0], 2, 3), list(X.shape), align_corners=False)
        return F.grid_sample(X, grid, align_corners=False, padding_mode="zeros")
    if kind == "translation":
        s = round(amount)
        out = torch.zeros_like(X)
        if s == 0:
            return X.clone()
        out[..., s:, s:] = X[..., :-s, :-s]
        return out
    if kind == "inversion":
        return (1 - amount) * X + amount * (1 - X)
    if kind == "blur":
        if amount <= 0:
            return X.clone()
        r = max(1, math.ceil(2 * amount))
        k = torch.exp(-(torch.arange(-r, r + 1, dtype=X.dtype) ** 2) / (2 * amount**2))
        k = k / k.sum()
        c = X.shape[1]
        Xp = F.pad(X, (r, r, r, r), mode="replicate")
        Xp = F.conv2d(Xp, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(Xp, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    if kind == "noise":
        gen = torch.Generator().manual_seed(int(_rng(random_state).integers(2**31)))
        return (X + amount * torch.randn(X.shape, generator=gen, dtype=X.dtype)).clamp(0, 1)
    if kind == "intensity":
        return (X * amount).clamp(0, 1)
    raise ValueError(f"kind must be one of rotation, translation, inversion, blur, noise, intensity; got {kind!r}")
