"""The invariant every per-sample result obeys, checked with one ordinary backward.

For any weights w, sum_i w_i dl_i/dθ = d(sum_i w_i l_i)/dθ, parameter by parameter. With w drawn
at random, a per-sample gradient that is missing (a parameter used outside its module's forward),
attributed to the wrong sample (a batch axis taken for another) or mixed between samples (a layer
or loss that couples them) breaks the equality with probability one; a plain sum (w = 1) would
miss the last two. The check costs one backward with parameter gradients (a training step's
backward, reusing the capture's forward) and one weighted sum per layer.

By default (``verify="auto"``) it runs on the first capture of each model structure: the same
model, trainable parameters, training mode, loss function code, kind of batch and options.
``TLK_PERSAMPLE_VERIFY=0`` in the environment turns the automatic check off.
"""

from __future__ import annotations

import os
import warnings
import weakref
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

__all__ = ["PerSampleCheckError", "PerSampleFallbackWarning", "verify"]

_RTOL = {torch.float64: 1e-6, torch.float32: 2e-3}
_RTOL_LOW = 5e-2  # float16 / bfloat16
_FLOOR = 1e-4  # errors below this fraction of the largest parameter gradient are rounding

_checked: weakref.WeakKeyDictionary[nn.Module, set] = weakref.WeakKeyDictionary()
_announced: weakref.WeakKeyDictionary[nn.Module, set] = weakref.WeakKeyDictionary()


class PerSampleCheckError(RuntimeError):
    """Per-sample gradients that fail sum_i w_i dl_i/dθ = d(sum_i w_i l_i)/dθ."""


class PerSampleFallbackWarning(UserWarning):
    """Some modules' per-sample gradients come from the torch.func fallback (slower)."""


def verify(model: nn.Module, loss_fn, batch: Any, **options) -> dict[str, float]:
    """Checks the per-sample gradients of every trainable parameter of `model` on `batch`.

    options: as for ``capture`` (fallback, batch_axes, batch_size).
    Returns {parameter name: relative error}; raises ``PerSampleCheckError`` naming each
    parameter whose per-sample gradients are missing or wrong.
    """
    from .capture import capture

    report: dict[str, float] = {}
    capture(model, loss_fn, batch, verify=_Report(report), **options)
    return report


class _Report(dict):
    """verify=_Report(d): check now and fill d with the relative errors."""

    def __init__(self, target: dict):
        super().__init__()
        self.target = target


def _key(model, loss_fn, batch, plan, fallback, batch_axes) -> tuple:
    params = tuple((n, tuple(p.shape), p.dtype) for n, p in model.named_parameters() if p.requires_grad)
    leaves = tuple((leaf.dim(), leaf.dtype) for leaf in tree_flatten(batch)[0] if isinstance(leaf, Tensor))
    modes = tuple(m.training for _, m, _, _ in plan.entries)
    code = getattr(loss_fn, "__code__", type(loss_fn))
    return (
        params,
        leaves,
        modes,
        code,
        fallback,
        tuple(sorted((batch_axes or {}).items())),
    )


def should_check(verify, model, loss_fn, batch, plan, fallback, batch_axes) -> bool:
    if isinstance(verify, _Report) or verify is True:
        return True
    if verify is False:
        return False
    if verify != "auto":
        raise ValueError(f"verify must be 'auto', True or False, got {verify!r}")
    if os.environ.get("TLK_PERSAMPLE_VERIFY", "1") == "0":
        return False
    return _key(model, loss_fn, batch, plan, fallback, batch_axes) not in _checked.get(model, set())


def mark_checked(model, loss_fn, batch, plan, fallback, batch_axes) -> None:
    _checked.setdefault(model, set()).add(_key(model, loss_fn, batch, plan, fallback, batch_axes))


def check_capture(cap, losses: Tensor, recorded: set[str], report: dict | None = None) -> None:
    """Compares cap.weighted_sum(w) with autograd's gradient of sum_i w_i l_i (the forward's graph
    must still be alive) for random w; raises PerSampleCheckError naming the failing parameters."""
    gen = torch.Generator().manual_seed(20240607)
    w = torch.randn(cap.batch_size, generator=gen, dtype=torch.float64).to(losses.device, losses.dtype)
    names = list(cap.params)
    exact = torch.autograd.grad(losses, [cap.params[n] for n in names], w, allow_unused=True)
    ours = cap.weighted_sum(w)
    exact = {n: torch.zeros_like(cap.params[n]) if g is None else g for n, g in zip(names, exact)}
    largest = max((float(g.detach().double().norm()) for g in exact.values()), default=0.0)
    failures = []
    for n in names:
        e, o = exact[n].detach().double(), ours[n].detach().double()
        err = float((e - o).norm())
        scale = max(float(e.norm()), float(o.norm()))
        rtol = _RTOL.get(cap.params[n].dtype, _RTOL_LOW)
        rel = err / scale if scale > 0 else 0.0
        if report is not None:
            report[n] = rel
        if err > rtol * scale and err > _FLOOR * largest:
            why = (
                "no use of it was recorded (is it used outside its module's forward?)"
                if n not in recorded
                else "its recorded uses do not add up"
            )
            failures.append(f"{n} (relative error {rel:.3g}; {why})")
    if failures:
        raise PerSampleCheckError(
            "per-sample gradients fail the check sum_i w_i dl_i/dθ = d(sum_i w_i l_i)/dθ for: "
            + "; ".join(failures)
            + ". Causes: a parameter used outside its module's forward, a layer or loss that couples samples "
            "(BatchNorm in training mode), a batch axis the capture did not know (pass batch_axes={module name: "
            "axis}), or a wrong registered rule. Results for these parameters would be wrong; verify=False skips "
            "the check."
        )


def announce_fallbacks(model: nn.Module, plan, reason: str | None = None) -> None:
    """Warns once per model and module which modules the torch.func fallback handles, why, and
    its cost (reason: why the bare-parameter rule gave a module up)."""
    seen = _announced.setdefault(model, set())
    new = [(n, m) for n, m in plan.fallbacks if id(m) not in seen]
    if not new:
        return
    seen.update(id(m) for _, m in new)
    names = ", ".join(f"{n or '<root>'} ({type(m).__name__})" for n, m in new)
    root = any(m is model for _, m in new)
    cost = (
        "the root module owns parameters itself, so the whole model is re-run per sample under vmap "
        "(about 2-3x a plain step or more)"
        if root
        else "each listed module is re-run per sample under vmap, with per-sample gradients materialised"
    )
    why = f" ({reason})" if reason else ""
    warnings.warn(
        f"per-sample products: no rule for {names}{why}; their parameters go through the torch.func fallback: "
        f"{cost}. Register a rule (tlkernels.persample.register_rule) to avoid it.",
        PerSampleFallbackWarning,
        stacklevel=3,
    )
