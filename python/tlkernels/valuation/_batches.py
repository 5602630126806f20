"""Batches as pytrees: their size; example ids."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten


def batch_size(batch: Any, name: str = "batch") -> int:
    """The leading size of the first tensor of `batch` (a tensor, or a tuple / list / dict of them)."""
    for leaf in tree_flatten(batch)[0]:
        if isinstance(leaf, Tensor) and leaf.dim() > 0:
            return leaf.shape[0]
    raise ValueError(f"{name} must hold at least one tensor with a batch axis (a leading dimension)")


def check_index(index: Any, n: int) -> Tensor:
    """`index` as a (n,) int64 tensor of non-negative example ids (what values are keyed by)."""
    if index is None:
        raise ValueError("index must identify the batch's examples: a (B,) tensor of example ids, got None")
    idx = torch.as_tensor(index)
    if idx.dtype.is_floating_point or idx.dtype == torch.bool or idx.dim() != 1 or idx.shape[0] != n:
        raise ValueError(
            f"index must be a (B,) = ({n},) integer tensor of example ids, got {tuple(idx.shape)} {idx.dtype}"
        )
    if n and int(idx.min()) < 0:
        raise ValueError(f"index must hold non-negative example ids, got {int(idx.min())}")
    return idx.to(torch.int64).cpu()
