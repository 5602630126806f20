"""Small shared helpers of the adaptation package."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def single_thread():
    """Runs the block with one intra-op thread: the tiny optimisations here (a few hundred
    points, a linear model) are dominated by OpenMP hand-offs otherwise, badly so on a busy
    machine (50x measured on 2 shared cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
