"""Canvas digits: an 8x8 digit pasted at a random position in a larger noisy canvas, with the true
box kept for evaluation and only an image-level label for training (weak supervision)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["make_canvas_digits"]


def _segments(img: np.ndarray, k: int, rng: np.random.Generator) -> None:
    """Draws k short strokes (length 2-4, horizontal / vertical / diagonal) in place."""
    c = img.shape[0]
    dirs = ((0, 1), (1, 0), (1, 1), (1, -1))
    for _ in range(k):
        dy, dx = dirs[rng.integers(4)]
        length = int(rng.integers(2, 5))
        y, x = int(rng.integers(c)), int(rng.integers(c))
        v = rng.uniform(0.5, 1.0)
        for _ in range(length):
            if 0 <= y < c and 0 <= x < c:
                img[y, x] = max(img[y, x], v)
            y, x = y + dy, x + dx


def make_canvas_digits(
    n: int,
    canvas: int = 24,
    *,
    positive_class: int | None = None,
    positive_fraction: float = 0.5,
    noise: float = 0.1,
    n_distractors: int = 3,
    digits=None,
    ink: float = 0.2,
    random_state=None,
) -> tuple[Tensor, Tensor, Tensor]:
    """n canvases for the image-level task "does this image contain the object?".

    Args:
        n: number of canvases; canvas: side length (>= 8).
        positive_class: None: positives hold a digit of any class and negatives hold none;
            an int c: positives hold a digit c, negatives a digit of another class.
        positive_fraction: fraction of positives (rounded; the order is shuffled).
        noise: background pixels are uniform in [0, noise].
        n_distractors: short random strokes drawn on EVERY canvas (positives and negatives), so
            "some ink" does not give the label away.
        digits: the source digits, a tlkernels.data.Dataset (X (M, 1, 8, 8) in [0, 1], y (M,)) or
            an (X, y) pair; default: all of load_digits (pass disjoint parts for train / test).
        ink: digit pixels above this value define the true box (the object, not its blank margin).
        random_state: int / numpy Generator / None.

    Returns:
        images (n, 1, canvas, canvas) float32 in [0, 1], labels (n,) int64 (1 = positive), boxes
        (n, 4) int64 (y0, x0, y1, x1), exclusive ends: the tight box of the pasted digit's ink
        (its pixels > ``ink``, inside the 8x8 patch); rows of -1 where the canvas holds no digit.
    """
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not (isinstance(canvas, (int, np.integer)) and canvas >= 8):
        raise ValueError(f"canvas must be an int >= 8 (the digit is 8x8), got {canvas!r}")
    if not 0 <= positive_fraction <= 1:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
    if not 0 <= noise <= 1:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    if not (isinstance(n_distractors, (int, np.integer)) and n_distractors >= 0):
        raise ValueError(f"n_distractors must be an int >= 0, got {n_distractors!r}")
    if digits is None:
        from ..data import load_digits

        digits = load_digits(images=True)
    X, y = (digits.X, digits.y) if hasattr(digits, "X") else digits
    X = (X.detach().cpu().numpy() if isinstance(X, Tensor) else np.asarray(X)).reshape(-1, 8, 8)
    y = y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
    if X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise ValueError(f"digits must hold X (M, 1, 8, 8) and y (M,) with M >= 1, got {X.shape} and {y.shape}")
    if positive_class is not None:
        pos_pool, neg_pool = np.flatnonzero(y == positive_class), np.flatnonzero(y != positive_class)
        if len(pos_pool) == 0 or len(neg_pool) == 0:
            raise ValueError(f"positive_class={positive_class!r} needs digits of that class and of others")
    else:
        pos_pool, neg_pool = np.arange(len(y)), None
    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
    n_pos = int(round(positive_fraction * n))
    labels = rng.permutation(np.r_[np.ones(n_pos, np.int64), np.zeros(n - n_pos, np.int64)])
    images = np.zeros((n, 1, canvas, canvas), np.float32)
    boxes = np.full((n, 4), -1, np.int64)
    for i in range(n):
        img = rng.uniform(0, noise, (canvas, canvas))
        _segments(img, n_distractors, rng)
        pool = pos_pool if labels[i] == 1 else neg_pool
        if pool is not None:
            d = X[rng.choice(pool)]
            y0, x0 = int(rng.integers(canvas - 7)), int(rng.integers(canvas - 7))
            img[y0 : y0 + 8, x0 : x0 + 8] = np.maximum(img[y0 : y0 + 8, x0 : x0 + 8], d)
            on = d > ink if (d > ink).any() else np.ones_like(d, dtype=bool)
            rows, cols = np.flatnonzero(on.any(1)), np.flatnonzero(on.any(0))
            boxes[i] = (y0 + rows[0], x0 + cols[0], y0 + rows[-1] + 1, x0 + cols[-1] + 1)
        images[i, 0] = img
    return torch.from_numpy(images), torch.from_numpy(labels), torch.from_numpy(boxes)
