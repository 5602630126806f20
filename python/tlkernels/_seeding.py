"""Seeding of tlkernels' estimators: one place that turns a ``random_state`` into a torch
generator and derives the seeds of the random streams a fit needs."""

from __future__ import annotations

import numbers

import numpy as np
import torch

__all__ = [
    "as_seed",
    "draw_seed",
    "numpy_seeds",
    "seed_global_torch",
    "torch_generator",
]


def as_seed(random_state, default: int | None = None) -> int:
    """The int seed of ``random_state``: the int itself, one drawn from a numpy Generator, or for
    None ``default`` (a fixed seed) when given, else a fresh one from the operating system."""
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63 - 1))
    if random_state is None:
        return int(default) if default is not None else int(np.random.default_rng().integers(2**63 - 1))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    raise ValueError(f"random_state must be None, an int or a numpy.random.Generator, got {random_state!r}")


def torch_generator(random_state, default: int | None = None) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``random_state``.

    random_state: an int (the seed), a ``numpy.random.Generator`` (a seed is drawn from it) or
    None: then ``default`` when given (a fixed seed, for estimators that are reproducible by
    default), else a fresh seed from the operating system.
    """
    if isinstance(random_state, np.random.Generator):
        seed = int(random_state.integers(2**63 - 1))
    elif random_state is None:
        seed = int(default) if default is not None else int(np.random.default_rng().integers(2**63 - 1))
    elif isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        seed = int(random_state)
    else:
        raise ValueError(f"random_state must be None, an int or a numpy.random.Generator, got {random_state!r}")
    return torch.Generator().manual_seed(seed)


def draw_seed(gen: torch.Generator, high: int = 2**31) -> int:
    """The next seed in [0, high) from ``gen`` (for a sub-stream: a head's init, a noise source)."""
    return int(torch.randint(high, (1,), generator=gen))


def seed_global_torch(gen: torch.Generator) -> None:
    """Seeds torch's global generator from ``gen``: modules built next (default initialisers,
    dropout) then depend on ``random_state`` only."""
    torch.manual_seed(draw_seed(gen))


def numpy_seeds(random_state, n: int) -> np.ndarray:
    """n int seeds in [0, 2**31 - 1) drawn by ``numpy.random.default_rng(random_state)`` (an int,
    a numpy Generator or None), for estimators whose sub-steps take numpy-style seeds."""
    return np.random.default_rng(random_state).integers(2**31 - 1, size=n)
