"""Gradients shared by the valuation methods: a batch's mean-loss gradient, parameter learning
rates read from an optimizer, and checkpoints loaded into a model one after another."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

LossFn = Callable[[nn.Module, Any], Tensor]


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    """{name: parameter} of the trainable parameters, named as ``model.named_parameters()`` does."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def per_sample_losses(model: nn.Module, loss_fn: LossFn, batch: Any, name: str = "loss_fn") -> Tensor:
    """loss_fn(model, batch), checked to be per-sample losses (B,)."""
    losses = loss_fn(model, batch)
    if not isinstance(losses, Tensor) or losses.dim() != 1:
        raise ValueError(
            f"{name}(model, batch) must return per-sample losses of shape (B,), got "
            f"{tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__}"
        )
    return losses


def mean_loss_grad(model: nn.Module, loss_fn: LossFn, batch: Any) -> dict[str, Tensor]:
    """{name: d mean_i l_i / dp} over the trainable parameters (zeros for unused ones): one plain
    forward and backward, ``.grad`` untouched."""
    params = trainable(model)
    with torch.enable_grad():
        loss = per_sample_losses(model, loss_fn, batch).mean()
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: (torch.zeros_like(p) if g is None else g.detach()) for (n, p), g in zip(params.items(), grads)}


def learning_rates(model: nn.Module, optimizer: torch.optim.Optimizer | None, lr: float | None) -> dict[str, float]:
    """{parameter name: learning rate}: `lr` for every parameter when given, else each parameter's
    group lr in `optimizer` (0 for trainable parameters the optimizer does not hold)."""
    params = trainable(model)
    if lr is not None:
        lr = float(lr)
        return dict.fromkeys(params, lr)
    if optimizer is None:
        raise ValueError("a learning rate is needed: pass lr=... or optimizer=... (its param_groups' lr is used)")
    by_id = {}
    for group in optimizer.param_groups:
        if "lr" not in group:
            raise ValueError("optimizer.param_groups have no 'lr': pass lr=... explicitly")
        for p in group["params"]:
            by_id[id(p)] = float(group["lr"])
    return {n: by_id.get(id(p), 0.0) for n, p in params.items()}


def scaled(vectors: Mapping[str, Tensor], scale: Mapping[str, float | Tensor]) -> dict[str, Tensor]:
    """{name: scale[name] * vectors[name]}, names whose scale is the number 0 left out."""
    out = {}
    for n, v in vectors.items():
        c = scale.get(n, 0.0)
        if isinstance(c, Tensor) or c != 0.0:
            out[n] = v * c
    return out


def check_lrs(lrs: Sequence[float], n: int) -> list[float]:
    """`lrs` as n floats (one per checkpoint)."""
    lrs = [float(x) for x in lrs]
    if len(lrs) != n:
        raise ValueError(f"lrs must give one learning rate per checkpoint ({n}), got {len(lrs)}")
    return lrs


@contextlib.contextmanager
def loaded(model: nn.Module, state: Mapping[str, Tensor] | None) -> Iterator[nn.Module]:
    """Within the block the model holds `state` (a state_dict; None: as it is); afterwards its own
    state again."""
    if state is None:
        yield model
        return
    saved = copy.deepcopy(model.state_dict())
    try:
        model.load_state_dict(state)
        yield model
    finally:
        model.load_state_dict(saved)
