"""Functional shortcuts: streamed ``grad_dot``, ``grad_gram``, ``grad_norms``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import invariant as _verify
from .capture import (
    LossFn,
    capture,
    check_vectors,
    run_forward,
    trainable_parameters,
    vector_for,
)
from .engine import Plan


def grad_dot(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    vectors: Mapping[str, Tensor] | Sequence[Mapping[str, Tensor]],
    *,
    fallback: bool = True,
    verify: bool | str = "auto",
    batch_axes: Mapping[str, int] | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """s_i = sum_p <dl_i/dp, v_p>: (B,) for a map of vectors, (B, V) for a list of V maps.

    loss_fn(model, batch) returns per-sample losses (B,); vectors map parameter names (as in
    ``model.named_parameters()``) to tensors of their shapes. Options as for ``capture``.

    Equal to ``capture(model, loss_fn, batch).dot(vectors)``, but streamed: each layer's share of
    s is computed during the backward as soon as its output gradient is known, and the layer's
    inputs and output gradient are dropped at once, so peak memory stays near a plain training
    step. When the invariant check is due (verify), the call is answered from the checked capture
    instead (one forward, the check's memory: the first call of each model structure).
    """
    trainable = trainable_parameters(model)
    many, maps, names = check_vectors(vectors, trainable)
    # (V, *shape) per parameter; for one map a view (no copy of a possibly large vector)
    stacked = {
        n: (
            vector_for(maps[0], n, trainable[n]).unsqueeze(0)
            if len(maps) == 1
            else torch.stack([vector_for(m, n, trainable[n]) for m in maps])
        )
        for n in names
    }
    plan = Plan(model, fallback, batch_axes)
    _verify.announce_fallbacks(model, plan)
    if _verify.should_check(verify, model, loss_fn, batch, plan, fallback, batch_axes):
        # the check needs a whole capture (and a backward with parameter gradients) anyway: answer from it
        cap = capture(
            model, loss_fn, batch, fallback=fallback, verify=True, batch_axes=batch_axes, batch_size=batch_size
        )
        return cap.dot(maps if many else maps[0])
    full_name = {id(p): n for n, p in trainable.items()}
    acc: dict[str, Tensor] = {}

    def on_rep(p: Tensor, rep) -> None:
        name = full_name[id(p)]
        if name in stacked:
            part = rep.dot(stacked[name].to(rep.dtype))
            acc["s"] = part if "s" not in acc else acc["s"] + part

    try:
        losses, rec = run_forward(plan, model, loss_fn, batch, batch_size, clone_outputs=False, stream=on_rep)
        rec.stream_backward(losses)
    except RuntimeError as e:
        if "inplace" not in str(e) or "custom Function" not in str(e):
            raise
        # A layer output is modified in place later in the forward (ReLU(inplace=True)): the taps'
        # views cannot be, so run again with the outputs cloned.
        acc.clear()
        losses, rec = run_forward(plan, model, loss_fn, batch, batch_size, clone_outputs=True, stream=on_rep)
        rec.stream_backward(losses)
    s = acc.get("s", losses.new_zeros(losses.shape[0], len(maps))).to(losses.dtype)
    return s if many else s[:, 0]


def grad_gram(model: nn.Module, loss_fn: LossFn, batch1: Any, batch2: Any, **options) -> Tensor:
    """(B1, B2) Gram of per-sample gradients over all trainable parameters (options as for capture)."""
    return capture(model, loss_fn, batch1, **options).gram(capture(model, loss_fn, batch2, **options))


def grad_norms(model: nn.Module, loss_fn: LossFn, batch: Any, **options) -> Tensor:
    """(B,) squared per-sample gradient norms over all trainable parameters (options as for capture)."""
    return capture(model, loss_fn, batch, **options).norms()
