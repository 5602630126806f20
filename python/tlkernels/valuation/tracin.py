"""TracIn (Pruthi et al., 2020): influence traced through saved checkpoints.

TracInCP(i, z) = Σ_t η_t <∇l_i(θ_t), ∇l_z(θ_t)> over checkpoints θ_t saved during training with
the learning rate η_t in force there. Self-influence TracInCP(i, i) = Σ_t η_t ||∇l_i(θ_t)||² is
large for examples the model keeps struggling with (mislabelled ones, in the paper). Positive
influence on a test example z marks a proponent (training on i lowered z's loss), negative an
opponent.

Every product comes from ``tlkernels.persample``: norms and Grams per layer in the cheaper of the
ghost form and materialised per-layer gradients, and the influence on a target set's mean loss
from ``grad_dot`` (no per-sample gradients).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .. import persample
from ._grads import LossFn, check_lrs, loaded, mean_loss_grad, scaled

__all__ = ["TracIn", "proponents_opponents"]


class TracIn:
    """TracInCP over checkpoints.

    Args:
        model: the model (its architecture; each checkpoint is loaded into it in turn, and its own
            state is restored afterwards).
        loss_fn: loss_fn(model, batch) -> per-sample losses (B,).
        checkpoints: state_dicts saved during training (``add_checkpoint`` adds more).
        lrs: the learning rate in force at each checkpoint.
        persample_options: passed to ``tlkernels.persample`` (fallback, verify, batch_axes).

    The model is used in the mode it is in (call ``model.eval()`` first for deterministic
    gradients; training-mode BatchNorm is refused by ``tlkernels.persample``).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        checkpoints: Sequence[Mapping[str, Tensor]] = (),
        lrs: Sequence[float] = (),
        **persample_options,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError("loss_fn must be callable as loss_fn(model, batch) -> per-sample losses (B,)")
        self.model, self.loss_fn = model, loss_fn
        self.checkpoints = list(checkpoints)
        self.lrs = check_lrs(lrs, len(self.checkpoints))
        self.options = persample_options

    def add_checkpoint(self, lr: float, state: Mapping[str, Tensor] | None = None) -> None:
        """Saves a checkpoint (default: a copy of the model's current state_dict) with its lr."""
        self.checkpoints.append(copy.deepcopy(dict(state if state is not None else self.model.state_dict())))
        self.lrs.append(float(lr))

    def _each(self):
        if not self.checkpoints:
            raise ValueError("TracIn has no checkpoints: pass checkpoints=... and lrs=..., or call add_checkpoint")
        for state, lr in zip(self.checkpoints, self.lrs):
            with loaded(self.model, state):
                yield lr

    def self_influence(self, batch: Any) -> Tensor:
        """(B,) float64: Σ_t η_t ||∇l_i(θ_t)||² for the examples of `batch`."""
        total = None
        for lr in self._each():
            part = lr * persample.grad_norms(self.model, self.loss_fn, batch, **self.options).to(torch.float64)
            total = part if total is None else total + part
        return total

    def influence(self, train_batch: Any, test_batch: Any) -> Tensor:
        """(B_train, B_test) float64: Σ_t η_t <∇l_i(θ_t), ∇l_z(θ_t)> for every pair."""
        total = None
        for lr in self._each():
            g = persample.grad_gram(self.model, self.loss_fn, train_batch, test_batch, **self.options)
            total = lr * g.to(torch.float64) if total is None else total + lr * g.to(torch.float64)
        return total

    def target_influence(self, train_batch: Any, target_batch: Any) -> Tensor:
        """(B_train,) float64: Σ_t η_t <∇l_i(θ_t), ∇L_target(θ_t)>, L_target the mean loss of
        `target_batch` (the row means of ``influence``, at the cost of one ``grad_dot``)."""
        total = None
        for lr in self._each():
            g = mean_loss_grad(self.model, self.loss_fn, target_batch)
            s = persample.grad_dot(
                self.model,
                self.loss_fn,
                train_batch,
                scaled(g, dict.fromkeys(g, lr)),
                **self.options,
            ).to(torch.float64)
            total = s if total is None else total + s
        return total


def proponents_opponents(influence: Tensor, k: int, index: Tensor | None = None) -> dict[str, Tensor]:
    """The k strongest proponents and opponents of each test example.

    influence: (N_train, N_test) (``TracIn.influence``, possibly over several training batches
    concatenated) or (N_train,) for one target; index: (N_train,) ids of the training rows
    (default 0..N_train-1). Returns {"proponents", "opponents"}: (N_test, k) ids, most positive /
    most negative influence first, and {"proponent_scores", "opponent_scores"}: (N_test, k).
    """
    if not isinstance(influence, Tensor) or influence.dim() not in (1, 2):
        raise ValueError("influence must be a (N_train,) or (N_train, N_test) tensor")
    m = influence.unsqueeze(1) if influence.dim() == 1 else influence
    n = m.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of training rows ({n}), got {k}")
    ids = torch.arange(n) if index is None else torch.as_tensor(index)
    if ids.shape != (n,):
        raise ValueError(f"index must have shape (N_train,) = ({n},), got {tuple(ids.shape)}")
    top = m.T.topk(k, dim=1)
    bottom = m.T.topk(k, dim=1, largest=False)
    return {
        "proponents": ids[top.indices.cpu()],
        "proponent_scores": top.values,
        "opponents": ids[bottom.indices.cpu()],
        "opponent_scores": bottom.values,
    }
