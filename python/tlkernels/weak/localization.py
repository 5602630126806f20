"""Arg-max subwindow search on a per-pixel score map: exhaustive search with an integral image
and Efficient Subwindow Search (ESS; Lampert, Blaschko, Hofmann, CVPR 2008) by branch-and-bound.

Boxes are (y0, x0, y1, x1) with EXCLUSIVE ends: rows y0..y1-1 and columns x0..x1-1, so a box's
height is y1 - y0 and the whole (H, W) map is (0, 0, H, W). The score of a box R is
sum_{p in R} s(p), four look-ups in the integral image.
"""

from __future__ import annotations

import heapq

import numpy as np

from .._validation import to_numpy

__all__ = ["box_score", "integral_image", "iou", "localize"]


_np = to_numpy


def iou(boxes_a, boxes_b) -> np.ndarray | float:
    """Intersection over union of corresponding boxes.

    boxes_a, boxes_b: (N, 4) or (4,) as (y0, x0, y1, x1), exclusive ends. Returns (N,) (a float for
    two single boxes); 0 where the union is empty.
    """
    a, b = _np(boxes_a).astype(np.float64), _np(boxes_b).astype(np.float64)
    single = a.ndim == 1 and b.ndim == 1
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    for name, v in (("boxes_a", a), ("boxes_b", b)):
        if v.ndim != 2 or v.shape[1] != 4:
            raise ValueError(f"{name} must have shape (N, 4) or (4,) as (y0, x0, y1, x1), got {v.shape}")
        if ((v[:, 2] < v[:, 0]) | (v[:, 3] < v[:, 1])).any():
            raise ValueError(f"{name} must satisfy y1 >= y0 and x1 >= x0 (exclusive ends)")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"boxes_a and boxes_b must hold the same number of boxes, got {a.shape[0]} and {b.shape[0]}")
    ih = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    iw = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = ih * iw
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    out = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return float(out[0]) if single else out


def integral_image(score_map) -> np.ndarray:
    """(H, W) -> (H+1, W+1) float64 with I[y, x] = sum of score_map[:y, :x]."""
    s = _np(score_map).astype(np.float64)
    out = np.zeros((s.shape[0] + 1, s.shape[1] + 1))
    out[1:, 1:] = s.cumsum(0).cumsum(1)
    return out


def box_score(ii: np.ndarray, box) -> float:
    """Sum of the map inside box (y0, x0, y1, x1) from its integral image ii (H+1, W+1)."""
    y0, x0, y1, x1 = (int(v) for v in box)
    return float(ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0])


def _sizes(v, name: str, limit_h: int, limit_w: int, default) -> tuple[int, int]:
    if v is None:
        return default
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        h = w = int(v)
    elif isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(t, (int, np.integer)) for t in v):
        h, w = int(v[0]), int(v[1])
    else:
        raise ValueError(f"{name} must be None, an int or a (height, width) pair of ints, got {v!r}")
    if h < 1 or w < 1 or h > limit_h or w > limit_w:
        raise ValueError(f"{name}={v!r} must be between 1 and the map size ({limit_h}, {limit_w})")
    return h, w


def _exhaustive(ii: np.ndarray, H: int, W: int, hmin, hmax, wmin, wmax):
    ts, bs = np.triu_indices(H + 1, 1)  # all (top, bottom) pairs with bottom > top
    keep = (bs - ts >= hmin) & (bs - ts <= hmax)
    ts, bs = ts[keep], bs[keep]
    ls, rs = np.triu_indices(W + 1, 1)
    keep = (rs - ls >= wmin) & (rs - ls <= wmax)
    ls, rs = ls[keep], rs[keep]
    strips = ii[bs] - ii[ts]  # (P, W+1): column prefix sums of each row band
    scores = strips[:, rs] - strips[:, ls]  # (P, Q): every box
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return (int(ts[i]), int(ls[j]), int(bs[i]), int(rs[j])), float(scores[i, j]), int(scores.size)


def _ess(s: np.ndarray, hmin, hmax, wmin, wmax):
    """Branch-and-bound over sets of boxes [T, B, L, R] (intervals of top, bottom, left, right).

    Upper bound of a set: (sum of the positive scores in the largest box) + (sum of the negative
    scores in the smallest box); for a single box it is that box's score, so the first single box
    popped from the max-priority queue is the arg-max."""
    H, W = s.shape
    pos, neg = integral_image(np.maximum(s, 0)), integral_image(np.minimum(s, 0))

    def feasible(st):
        t0, t1, b0, b1, l0, l1, r0, r1 = st
        return b1 - t0 >= hmin and b0 - t1 <= hmax and r1 - l0 >= wmin and r0 - l1 <= wmax

    def bound(st):
        t0, t1, b0, b1, l0, l1, r0, r1 = st
        ub = pos[b1, r1] - pos[t0, r1] - pos[b1, l0] + pos[t0, l0]
        if b0 > t1 and r0 > l1:  # the smallest box is non-empty
            ub += neg[b0, r0] - neg[t1, r0] - neg[b0, l1] + neg[t1, l1]
        return ub

    # top in [0, H-1], bottom (exclusive) in [1, H], likewise left / right
    start = (0, H - 1, 1, H, 0, W - 1, 1, W)
    n_eval, tie = 1, 0
    heap = [(-bound(start), tie, start)]
    while heap:
        nb, _, st = heapq.heappop(heap)
        widths = [st[1] - st[0], st[3] - st[2], st[5] - st[4], st[7] - st[6]]
        k = int(np.argmax(widths))
        if widths[k] == 0:
            t0, _, b0, _, l0, _, r0, _ = st
            return (t0, l0, b0, r0), -nb, n_eval
        lo, hi = st[2 * k], st[2 * k + 1]
        mid = (lo + hi) // 2
        for part in ((lo, mid), (mid + 1, hi)):
            child = st[: 2 * k] + part + st[2 * k + 2 :]
            if feasible(child):
                n_eval += 1
                tie += 1
                heapq.heappush(heap, (-bound(child), tie, child))
    raise ValueError("no box satisfies min_size / max_size")  # unreachable after the size checks


def localize(score_map, method: str = "branch_and_bound", min_size=1, max_size=None, return_info: bool = False):
    """The box maximising sum_{p in box} score_map[p].

    Args:
        score_map: (H, W) numpy array or tensor of per-pixel scores s(p).
        method: 'exhaustive' (every box, through the integral image, vectorised) or
            'branch_and_bound' (ESS). Both return an arg-max; they differ only on exact ties.
        min_size, max_size: int or (height, width): limits on the box's height and width
            (max_size None: the map size).
        return_info: also return {"score": the box's score, "n_evaluated": boxes scored
            (exhaustive) or box sets bounded (ESS; each bound costs two integral look-ups, the same
            as one box score)}.

    Returns: box (4,) int64 (y0, x0, y1, x1), exclusive ends; or (box, info) with return_info.
    """
    s = _np(score_map)
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(f"score_map must be a non-empty 2-D (H, W) array, got shape {s.shape}")
    s = s.astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError("score_map contains NaN or infinite values")
    H, W = s.shape
    hmin, wmin = _sizes(min_size, "min_size", H, W, (1, 1))
    hmax, wmax = _sizes(max_size, "max_size", H, W, (H, W))
    if hmin > hmax or wmin > wmax:
        raise ValueError(f"min_size={min_size!r} must not exceed max_size={max_size!r}")
    if method == "exhaustive":
        box, score, n = _exhaustive(integral_image(s), H, W, hmin, hmax, wmin, wmax)
    elif method == "branch_and_bound":
        box, score, n = _ess(s, hmin, hmax, wmin, wmax)
    else:
        raise ValueError(f"method must be 'exhaustive' or 'branch_and_bound', got {method!r}")
    box = np.array(box, dtype=np.int64)
    return (box, {"score": float(score), "n_evaluated": int(n)}) if return_info else box
