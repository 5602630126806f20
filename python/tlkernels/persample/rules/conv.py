"""Convolutions: nn.Conv1d / Conv2d / Conv3d (stride, padding incl. 'same', padding modes,
dilation, groups); the batch is always the leading axis."""

from __future__ import annotations

from torch import nn

from ..batch_axis import to_batch_first
from ..engine import own_trainable
from ..registry import LayerCall, Rule, UnsupportedModuleError, register_rule
from ..reps import ConvRep, DenseRep


class ConvRule(Rule):
    def representations(self, calls: list[LayerCall], batch_size: int):
        (call,) = calls
        m = call.module
        x = to_batch_first(call.args[0], 0, batch_size, m)
        dy = call.grads[0]
        if x.dim() == len(m.kernel_size) + 1:
            raise UnsupportedModuleError(f"{type(m).__name__} got an unbatched input of shape {tuple(x.shape)}")
        own = own_trainable(m)
        if "weight" in own:
            yield m.weight, ConvRep(m, x, dy)
        if "bias" in own:
            yield m.bias, DenseRep(dy.flatten(2).sum(2))


register_rule(nn.Conv1d, ConvRule())
register_rule(nn.Conv2d, ConvRule())
register_rule(nn.Conv3d, ConvRule())
