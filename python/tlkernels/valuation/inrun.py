"""First-order in-run data Shapley (Wang et al., 2024), as a step of any training loop.

At step t with parameters θ_t, learning rate η_t and loss weights w_i (1/B for a mean loss), an
SGD step moves the validation loss, to first order, by

    L_val(θ_{t+1}) - L_val(θ_t) ≈ <∇L_val(θ_t), θ_{t+1} - θ_t> = Σ_i -η_t w_i <∇l_i(θ_t), ∇L_val(θ_t)>,

and the i-th term is the step's value of example i (its first-order in-run Shapley value: the
utility is additive in the examples to first order, so the Shapley value is the term itself).
Values add up over steps. A negative value lowers the validation loss: the example helped.

``InRun.step(batch, index)`` does the step's backward: one forward and one backward of the batch
and one of the validation batch, each through ``tlkernels.persample.capture``; from what they
record, the products <∇l_i, η ∇L_val> (per layer by a dot with ∇L_val or the ghost Gram of the
two batches, whichever is cheaper) and the training gradient Σ_i w_i ∇l_i (written into
``.grad``) are formed without per-sample gradients and without a second backward of the batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .. import persample
from ._batches import batch_size, check_index
from ._grads import LossFn, learning_rates
from ._products import val_products

__all__ = ["InRun", "ValuedOptimizer"]


class InRun:
    """Accumulates first-order in-run data Shapley values during training.

    Args:
        model: the model being trained.
        loss_fn: loss_fn(model, batch) -> per-sample losses (B,) (as for ``tlkernels.persample``).
        val_batch: the validation (target) batch whose mean loss the values refer to.
        val_loss_fn: val_loss_fn(model, val_batch) -> per-sample losses (B_val,) when the validation
            batch needs another loss than the training batch (default: loss_fn). Parameters it does
            not reach have a zero validation gradient (their share of every value is 0).
        optimizer: where the learning rates are read from at every step (each parameter's group lr;
            a scheduler's changes are seen). Values are exact first-order changes for plain SGD; with
            momentum or Adam they are the current gradient's share, -η <∇l_i, ∇L_val>, as in the paper.
        lr: one learning rate for every parameter instead (overrides the optimizer's).
        reduction: "mean" (w_i = 1/B, the default training loss) or "sum" (w_i = 1).
        persample_options: passed to ``tlkernels.persample.capture`` (fallback, verify, batch_axes).

    Attributes:
        values: (N,) float64, the accumulated value of every example id seen (N = largest id + 1).
        counts: (N,) int64, how many steps each example took part in.
        last_values: (B,) float64, the values the last step added (in the batch's order).
        last_val_loss: the validation loss at the last step's parameters (before its update).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        val_batch: Any,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        lr: float | None = None,
        reduction: str = "mean",
        val_loss_fn: LossFn | None = None,
        **persample_options,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError("loss_fn must be callable as loss_fn(model, batch) -> per-sample losses (B,)")
        if val_loss_fn is not None and not callable(val_loss_fn):
            raise TypeError("val_loss_fn must be None or callable as val_loss_fn(model, val_batch) -> losses (B_val,)")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        if optimizer is None and lr is None:
            raise ValueError("InRun needs the step's learning rate: pass optimizer=... or lr=...")
        self.model, self.loss_fn = model, loss_fn
        self.val_loss_fn = loss_fn if val_loss_fn is None else val_loss_fn
        self.val_batch = val_batch
        self.val_size = batch_size(val_batch, "val_batch")
        self.optimizer, self.lr = optimizer, lr
        self.reduction = reduction
        self.options = persample_options
        self.values = torch.zeros(0, dtype=torch.float64)
        self.counts = torch.zeros(0, dtype=torch.int64)
        self.last_values: Tensor | None = None
        self.last_val_loss: float | None = None

    def step(self, batch: Any, index: Any, *, lr: float | None = None) -> Tensor:
        """Backward of one training step with valuation; call ``optimizer.step()`` afterwards.

        batch: the training batch (B examples); index: (B,) integer ids of its examples (the keys
        of ``values``); lr: this step's learning rate (default: the constructor's lr, else the
        optimizer's). Adds Σ_i w_i ∇l_i to every trainable parameter's ``.grad`` (as
        ``loss.backward()`` of the reduced loss would) and -η w_i <∇l_i, ∇L_val> to ``values``.
        Returns the reduced training loss (a detached scalar).
        """
        b = batch_size(batch)
        idx = check_index(index, b)
        rates = learning_rates(self.model, self.optimizer, lr if lr is not None else self.lr)
        w = 1.0 / b if self.reduction == "mean" else 1.0
        cap = persample.capture(self.model, self.loss_fn, batch, **self.options)
        if cap.batch_size != b:
            raise ValueError(f"loss_fn returned {cap.batch_size} losses for a batch of {b} examples")
        cap_val = persample.capture(self.model, self.val_loss_fn, self.val_batch, **self.options)
        s = val_products(cap, cap_val, rates)
        cap.accumulate_grad(torch.full_like(cap.losses, w))
        losses, val_loss = cap.losses, cap_val.losses.mean()
        step_values = (-w * s.detach()).to(torch.float64).cpu()
        self._add(idx, step_values)
        self.last_values = step_values
        self.last_val_loss = float(val_loss)
        return (losses.mean() if self.reduction == "mean" else losses.sum()).detach()

    def _add(self, idx: Tensor, v: Tensor) -> None:
        if idx.numel() == 0:
            return
        n = int(idx.max()) + 1
        if n > self.values.shape[0]:
            grow = n - self.values.shape[0]
            self.values = torch.cat([self.values, self.values.new_zeros(grow)])
            self.counts = torch.cat([self.counts, self.counts.new_zeros(grow)])
        self.values.index_add_(0, idx, v)
        self.counts.index_add_(0, idx, torch.ones_like(idx))

    def reset(self) -> None:
        """Forgets the accumulated values."""
        self.values = torch.zeros(0, dtype=torch.float64)
        self.counts = torch.zeros(0, dtype=torch.int64)
        self.last_values, self.last_val_loss = None, None

    def wrap(self, optimizer: torch.optim.Optimizer | None = None) -> ValuedOptimizer:
        """An optimizer whose ``step(batch, index)`` zeroes the gradients, runs ``InRun.step`` and
        the optimizer's step (default: the optimizer given to the constructor)."""
        opt = optimizer if optimizer is not None else self.optimizer
        if opt is None:
            raise ValueError("wrap needs an optimizer: pass one here or to InRun(optimizer=...)")
        return ValuedOptimizer(opt, self)


class ValuedOptimizer:
    """``optimizer`` with valuation: ``step(batch, index)`` = zero_grad, ``InRun.step``, optimizer
    step; every other attribute is the wrapped optimizer's (param_groups, state_dict, ...)."""

    def __init__(self, optimizer: torch.optim.Optimizer, inrun: InRun):
        self.optimizer, self.inrun = optimizer, inrun

    def step(self, batch: Any, index: Any) -> Tensor:
        """One valued training step on `batch` (ids `index`, (B,)); returns the reduced loss."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.inrun.step(batch, index)
        self.optimizer.step()
        return loss

    def __getattr__(self, name: str):
        return getattr(self.optimizer, name)
