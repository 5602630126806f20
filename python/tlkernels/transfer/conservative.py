"""Conservative training: stay close to the source model while adapting to the target.

Two constraints, each an nn.Module loss usable in any training loop and an option of FineTune:

- ``L2SPLoss`` (Li, Grandvalet & Davoine 2018): alpha/2 ||w_S - w_S^0||^2 over the parameters
  shared with the source (w_S^0 = their source values) plus beta/2 ||w_new||^2 over the new ones
  (a new head), instead of weight decay towards 0.
- ``OutputConstraintLoss`` (Learning without Forgetting, Li & Hoiem 2016): the KL divergence
  between the source model's output distribution and the new model's source-task outputs on the
  *target* inputs, at temperature T (scaled by T^2 so its gradient does not vanish with T).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["L2SPLoss", "OutputConstraintLoss"]


class L2SPLoss(nn.Module):
    """alpha/2 sum_shared ||w - w0||^2 + beta/2 sum_new ||w||^2.

    Args:
        reference: the source model, or a state_dict of it: its parameter values are copied (a
            snapshot), so later changes of the source model do not move the anchor.
        alpha: strength of the pull towards the source values; beta: weight decay of parameters
            whose name is not in the reference, or whose shape differs from it (a new head).

    forward(model) -> scalar penalty; parameters with requires_grad=False are skipped (frozen
    parameters stay where they are anyway). Note: with plain SGD the step on this term is
    lr * alpha * (w - w0), stable for lr * alpha < 2; Adam (FineTune's default) is stable for any
    alpha.
    """

    def __init__(self, reference: nn.Module | dict, alpha: float = 0.01, beta: float = 0.0):
        super().__init__()
        if not (alpha >= 0 and beta >= 0):
            raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        state = reference.state_dict() if isinstance(reference, nn.Module) else reference
        if not isinstance(state, dict):
            raise ValueError(f"reference must be an nn.Module or a state_dict, got {type(reference).__name__}")
        self.alpha, self.beta = float(alpha), float(beta)
        self._ref = {k: v.detach().clone() for k, v in state.items() if isinstance(v, Tensor) and v.is_floating_point()}

    def forward(self, model: nn.Module) -> Tensor:
        """model: the network being trained (parameter names as in the reference) -> () penalty."""
        shared = new = None
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            ref = self._ref.get(name)
            if ref is not None and ref.shape == p.shape:
                t = (p - ref.to(p.device, p.dtype)).pow(2).sum()
                shared = t if shared is None else shared + t
            else:
                t = p.pow(2).sum()
                new = t if new is None else new + t
        zero = next(model.parameters()).new_zeros(())
        return 0.5 * self.alpha * (shared if shared is not None else zero) + 0.5 * self.beta * (
            new if new is not None else zero
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, n_reference={len(self._ref)}"


class OutputConstraintLoss(nn.Module):
    """T^2 KL(softmax(source(x)/T) || softmax(new_logits/T)), averaged (or weighted) over x.

    Args:
        source_model: the frozen source network (a private deep copy is kept, in eval mode, with
            requires_grad=False), whose logits on the target inputs are the soft targets.
        temperature: T (2 as in LwF).

    forward(x, new_logits, sample_weight=None): x (B, ...) target inputs, new_logits (B, C_source)
    the new model's outputs on the source task for the same x -> () loss; with per-example
    weights (B,) the weighted mean.
    """

    def __init__(self, source_model: nn.Module, temperature: float = 2.0):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.source = copy.deepcopy(source_model).eval()
        for p in self.source.parameters():
            p.requires_grad_(False)
        self.temperature = float(temperature)

    def train(self, mode: bool = True):
        super().train(mode)
        self.source.eval()
        return self

    def forward(self, x: Tensor, new_logits: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        T = self.temperature
        with torch.no_grad():
            target = F.log_softmax(self.source(x) / T, dim=1)
        if target.shape != new_logits.shape:
            raise ValueError(
                f"new_logits must have the source model's output shape {tuple(target.shape)}, "
                f"got {tuple(new_logits.shape)}"
            )
        per = F.kl_div(F.log_softmax(new_logits / T, dim=1), target, log_target=True, reduction="none").sum(1)
        if sample_weight is None:
            return T * T * per.mean()
        return T * T * (sample_weight * per).sum() / sample_weight.sum().clamp_min(1e-12)
