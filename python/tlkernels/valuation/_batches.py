"""Batches as pytrees: their size, and two batches joined into one forward."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten


def batch_size(batch: Any, name: str = "batch") -> int:
    """The leading size of the first tensor of `batch` (a tensor, or a tuple / list / dict of them)."""
    for leaf in tree_flatten(batch)[0]:
        if isinstance(leaf, Tensor) and leaf.dim() > 0:
            return leaf.shape[0]
    raise ValueError(
        f"{name} must hold at least one tensor with a batch axis (a leading dimension)"
    )


def join(first: Any, second: Any) -> Any | None:
    """`first` and `second` as one batch: the tensors leading with each batch's size concatenated
    along axis 0, every other leaf kept once (it must be equal in both). None when the two batches
    do not have the same structure or a kept leaf differs (then they cannot share a forward).

    first, second: batches of B1 and B2 examples -> one batch of B1 + B2 examples.
    """
    b1, b2 = batch_size(first), batch_size(second)
    leaves1, spec1 = tree_flatten(first)
    leaves2, spec2 = tree_flatten(second)
    if spec1 != spec2:
        return None
    out = []
    for a, b in zip(leaves1, leaves2):
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            if (
                a.dim() > 0
                and b.dim() > 0
                and a.shape[0] == b1
                and b.shape[0] == b2
                and a.shape[1:] == b.shape[1:]
            ):
                out.append(torch.cat([a, b.to(a.device)]))
            elif a.shape == b.shape and torch.equal(a, b.to(a.device)):
                out.append(a)
            else:
                return None
        elif isinstance(a, Tensor) or isinstance(b, Tensor) or a != b:
            return None
        else:
            out.append(a)
    return tree_unflatten(out, spec1)


def check_index(index: Any, n: int) -> Tensor:
    """`index` as a (n,) int64 tensor of non-negative example ids (what values are keyed by)."""
    if index is None:
        raise ValueError(
            "index must identify the batch's examples: a (B,) tensor of example ids, got None"
        )
    idx = torch.as_tensor(index)
    if (
        idx.dtype.is_floating_point
        or idx.dtype == torch.bool
        or idx.dim() != 1
        or idx.shape[0] != n
    ):
        raise ValueError(
            f"index must be a (B,) = ({n},) integer tensor of example ids, got "
            f"{tuple(idx.shape)} {idx.dtype}"
        )
    if n and int(idx.min()) < 0:
        raise ValueError(
            f"index must hold non-negative example ids, got {int(idx.min())}"
        )
    return idx.to(torch.int64).cpu()
