"""Modules built on the tlkernels ops."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .ops import grad_reverse, grad_reverse_branch

__all__ = ["dann_lambda", "GradientReversal", "mlp"]


def mlp(
    d_in: int,
    hidden=(),
    d_out: int | None = None,
    *,
    activation=nn.ReLU,
    flatten: bool = False,
    final_activation: bool = False,
) -> nn.Sequential:
    """The multi-layer perceptron of the library: [Flatten] - (Linear, activation) per width of
    ``hidden`` - [Linear(hidden[-1], d_out)] [- activation when final_activation].

    Input (N, d_in) (or (N, ...) with flatten=True), output (N, d_out) or (N, hidden[-1]) without
    d_out. activation: a zero-argument module factory (nn.ReLU, or e.g.
    ``lambda: nn.LeakyReLU(0.2)``). Layers are created input to output, so their default
    initialisation draws from torch's generator in that order.
    """
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    d = int(d_in)
    if d < 1:
        raise ValueError(f"d_in must be a positive int, got {d_in!r}")
    for h in hidden:
        if int(h) < 1:
            raise ValueError(f"hidden must hold positive widths, got {tuple(hidden)!r}")
        layers += [nn.Linear(d, int(h)), activation()]
        d = int(h)
    if d_out is not None:
        layers.append(nn.Linear(d, int(d_out)))
        if final_activation:
            layers.append(activation())
    return nn.Sequential(*layers)


def dann_lambda(progress: float | Tensor, lam_max: float = 1.0, gamma: float = 10.0) -> float | Tensor:
    """Ganin & Lempitsky's schedule lam(p) = lam_max * (2 / (1 + exp(-gamma * p)) - 1).

    progress: p = step / max_steps in [0, 1], a float or a tensor (then the result is a tensor on
    its device, so the schedule can live on the GPU). At p = 1 it reaches
    lam_max * (2 / (1 + e^-gamma) - 1), about 0.9999 * lam_max for gamma = 10.
    """
    if isinstance(progress, Tensor):
        return lam_max * (2.0 / (1.0 + torch.exp(-gamma * progress)) - 1.0)
    p = float(progress)
    if not math.isfinite(p) or p < 0.0:
        raise ValueError(f"progress must be a finite number >= 0 (step / max_steps), got {progress}")
    return lam_max * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


class GradientReversal(nn.Module):
    """Gradient reversal layer with the DANN schedule, driven by explicit progress.

    The coefficient is ``dann_lambda(progress, lam_max, gamma)``; progress is set with
    ``set_progress(step / max_steps)`` or passed to ``forward``; it is never counted from calls.
    ``forward(x)`` returns x reversed (a view); ``fork(x)`` returns the DANN pair (x_task, x_adv)
    whose backward is fused.

    Args:
        lam_max: the coefficient's limit.
        gamma: the schedule's steepness (10 in the paper).
        progress: the initial progress (default 1.0: the full lam_max * (2/(1+e^-gamma) - 1);
            set 0.0 to start a DANN run from lam = 0).
    """

    def __init__(self, lam_max: float = 1.0, gamma: float = 10.0, progress: float = 1.0):
        super().__init__()
        if not math.isfinite(lam_max):
            raise ValueError(f"lam_max must be finite, got {lam_max}")
        if not math.isfinite(gamma) or gamma < 0:
            raise ValueError(f"gamma must be a finite number >= 0, got {gamma}")
        self.lam_max = float(lam_max)
        self.gamma = float(gamma)
        self.progress = 0.0
        self.set_progress(progress)

    def set_progress(self, progress: float | Tensor) -> None:
        """progress = step / max_steps (a float, or a tensor for a device-side schedule)."""
        if not isinstance(progress, Tensor):
            dann_lambda(progress, self.lam_max, self.gamma)  # validates
        self.progress = progress

    @property
    def lam(self) -> float | Tensor:
        """The current coefficient."""
        return dann_lambda(self.progress, self.lam_max, self.gamma)

    def _lam(self, progress) -> float | Tensor:
        return self.lam if progress is None else dann_lambda(progress, self.lam_max, self.gamma)

    def forward(self, x: Tensor, progress: float | Tensor | None = None) -> Tensor:
        """x: (*) -> (*), identity forward, -lam * grad backward."""
        return grad_reverse(x, self._lam(progress))

    def fork(self, x: Tensor, progress: float | Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x: (*) -> (x_task (*), x_adv (*)); backward grad_task - lam * grad_adv in one pass."""
        return grad_reverse_branch(x, self._lam(progress))

    def extra_repr(self) -> str:
        return f"lam_max={self.lam_max}, gamma={self.gamma}"
