"""OutputData (the paper's Algorithm 1): from expert scores to a sampled budget of examples."""

from __future__ import annotations

import numpy as np

__all__ = ["output_data", "selection_probabilities"]


def selection_probabilities(scores, partitions, temperature: float = 0.1) -> np.ndarray:
    """p(x) for every example: z normalised to [0, 1], w = softmax(z / temperature),
    p(x) = sum_i w_i g_i(x) / |S_i| with hard gating g (one partition per example).

    scores: (K,) one score per expert/partition; partitions: (N,) ids in [0, K). Returns (N,)
    summing to 1 (partitions without members pass their mass to the others)."""
    z = np.asarray(scores, dtype=np.float64).reshape(-1)
    g = np.asarray(partitions, dtype=np.int64).reshape(-1)
    if z.size == 0 or not np.isfinite(z).all():
        raise ValueError(f"scores must be a non-empty list of finite numbers, got {z.tolist()}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if g.size == 0 or g.min() < 0 or g.max() >= z.size:
        raise ValueError(f"partitions must be ids in [0, {z.size}) (one per score)")
    sizes = np.bincount(g, minlength=z.size)
    lo, hi = z.min(), z.max()
    with np.errstate(over="ignore"):
        if not np.isfinite(hi - lo):  # finite scores whose spread overflows (e.g. 1e308 and -1e308)
            z, lo, hi = z * 0.5, lo * 0.5, hi * 0.5
        span = hi - lo
        zn = (z - lo) / span if span > 0 else np.ones_like(z)
        # softmax(zn / T) over the non-empty partitions, shifted by their max first: the exponents
        # are in [-1/T, 0] (-inf for a tiny T), so no overflow and no inf - inf whatever T
        top = zn[sizes > 0].max()
        logits = np.where(sizes > 0, (zn - top) / temperature, -np.inf)
    w = np.exp(logits)
    w /= w.sum()
    p = w[g] / sizes[g]
    return p / p.sum()


def output_data(scores, partitions, budget: int, seed: int = 0, temperature: float = 0.1) -> np.ndarray:
    """Samples `budget` distinct example indices with probabilities selection_probabilities(...);
    reproducible for a given seed. Returns (budget,) int64 sorted indices."""
    p = selection_probabilities(scores, partitions, temperature)
    if isinstance(budget, bool) or not (isinstance(budget, (int, np.integer)) and 0 < budget <= p.size):
        raise ValueError(f"budget must be an int in [1, {p.size}] (the store size), got {budget!r}")
    if isinstance(seed, bool) or not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    nonzero = int((p > 0).sum())
    if budget > nonzero:
        raise ValueError(f"budget {budget} exceeds the {nonzero} examples with non-zero probability")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(p.size, size=int(budget), replace=False, p=p))
