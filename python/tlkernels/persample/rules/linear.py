"""Linear maps: nn.Linear, transformers' Conv1D (a Linear with its weight stored (I, O)), the
projections a composite rule records (possibly rows of a packed weight), and parameters used
through a view widened to the batch."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..batch_axis import to_batch_first
from ..engine import own_trainable
from ..registry import LayerCall, Rule, register_rule
from ..reps import DenseRep, LinearRep, SliceRep


class TransposedLinearRep(LinearRep):
    """A weight stored (I, O) (y = x W + b): the LinearRep of W^T, transposed on the way out."""

    def dense(self) -> Tensor:
        return super().dense().transpose(1, 2)

    def dot(self, v: Tensor) -> Tensor:
        return super().dot(v.transpose(-1, -2))

    def weighted(self, w: Tensor) -> Tensor:
        return super().weighted(w).T


def _rows(x: Tensor, dy: Tensor, axis: int, batch_size: int, module: nn.Module) -> tuple[Tensor, Tensor]:
    """(B, T, I) inputs and (B, T, O) output gradients of a linear map applied at any positions."""
    x = to_batch_first(x, axis, batch_size, module)
    dy = to_batch_first(dy, axis, batch_size, module, "an output gradient")
    return x.reshape(batch_size, -1, x.shape[-1]), dy.reshape(batch_size, -1, dy.shape[-1])


def _bias_rep(d: Tensor) -> DenseRep:
    return DenseRep(d[:, 0] if d.shape[1] == 1 else d.sum(1))


class LinearRule(Rule):
    broadcasts = True

    def representations(self, calls: list[LayerCall], batch_size: int):
        (call,) = calls
        m = call.module
        a, d = _rows(call.args[0], call.grads[0], call.batch_axis, batch_size, m)
        own = own_trainable(m)
        if "weight" in own:
            yield m.weight, LinearRep(a, d)
        if "bias" in own:
            yield m.bias, _bias_rep(d)


class Conv1DRule(Rule):
    """transformers.pytorch_utils.Conv1D (GPT-2): y = x W + b with W of shape (I, O)."""

    broadcasts = True

    def representations(self, calls: list[LayerCall], batch_size: int):
        (call,) = calls
        m = call.module
        a, d = _rows(call.args[0], call.grads[0], call.batch_axis, batch_size, m)
        own = own_trainable(m)
        if "weight" in own:
            yield m.weight, TransposedLinearRep(a, d)
        if "bias" in own:
            yield m.bias, _bias_rep(d)


class ProjectionRule(Rule):
    """A projection recorded by a composite rule: call.info names the weight and bias of the
    owner and the rows of them it used (None: all)."""

    def representations(self, calls: list[LayerCall], batch_size: int):
        m = calls[0].module
        info = calls[0].info
        if len(calls) == 1:
            a, d = _rows(calls[0].args[0], calls[0].grads[0], calls[0].batch_axis, batch_size, m)
        else:  # the steps of a recurrence: one representation over all positions
            pairs = [_rows(c.args[0], c.grads[0], c.batch_axis, batch_size, m) for c in calls]
            a = torch.cat([p[0] for p in pairs], 1)
            d = torch.cat([p[1] for p in pairs], 1)
        for name, rows, make in (
            (info["weight"], info["rows"], lambda: LinearRep(a, d)),
            (info["bias"], info["bias_rows"], lambda: _bias_rep(d)),
        ):
            p = getattr(m, name) if name is not None else None
            if p is None or not p.requires_grad:
                continue
            rep = make()
            yield p, rep if rows is None else SliceRep(rep, rows[0], rows[1], p.shape)


class ParameterRule(Rule):
    """A parameter used through a view widened to the batch (bias_k.expand(B, 1, E)): the
    gradient of sample i's slice, summed to the parameter's shape, is its per-sample gradient."""

    def representations(self, calls: list[LayerCall], batch_size: int):
        (call,) = calls
        p = getattr(call.module, call.info["name"])
        if not p.requires_grad:
            return
        g = to_batch_first(
            call.grads[0],
            call.batch_axis,
            batch_size,
            call.module,
            "a widened parameter",
        )
        yield p, DenseRep(g.reshape(batch_size, *p.shape))


PROJECTION = ProjectionRule()
PARAMETER = ParameterRule()
register_rule(nn.Linear, LinearRule())
register_rule("transformers.pytorch_utils.Conv1D", Conv1DRule())
