"""Normalisation layers whose statistics are per sample: LayerNorm, RMSNorm, GroupNorm, and
BatchNorm in eval mode (running statistics). BatchNorm in training mode mixes samples: refused."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..batch_axis import to_batch_first
from ..engine import own_trainable
from ..registry import LayerCall, Rule, UnsupportedModuleError, register_rule
from ..reps import DenseRep


def _affine(m: nn.Module, xhat: Tensor, dy: Tensor, reduce: tuple[int, ...]):
    """(parameter, rep) for weight = sum(dy * xhat) and bias = sum(dy) over the `reduce` axes."""
    own = own_trainable(m)
    if "weight" in own:
        g = dy * xhat
        yield m.weight, DenseRep(g.sum(reduce) if reduce else g)
    if "bias" in own:
        yield m.bias, DenseRep(dy.sum(reduce) if reduce else dy)


class _TrailingNormRule(Rule):
    """Normalisation over the trailing `normalized_shape` dims (LayerNorm, RMSNorm)."""

    def normalise(self, m: nn.Module, x: Tensor) -> Tensor:
        raise NotImplementedError

    def representations(self, calls: list[LayerCall], batch_size: int):
        (call,) = calls
        m = call.module
        x = to_batch_first(call.args[0], call.batch_axis, batch_size, m)
        dy = to_batch_first(call.grads[0], call.batch_axis, batch_size, m, "an output gradient")
        lead = tuple(range(1, x.dim() - len(m.normalized_shape)))
        yield from _affine(m, self.normalise(m, x), dy, lead)


class LayerNormRule(_TrailingNormRule):
    def normalise(self, m, x):
        return F.layer_norm(x, m.normalized_shape, None, None, m.eps)


class RMSNormRule(_TrailingNormRule):
    def normalise(self, m, x):
        return F.rms_norm(x, m.normalized_shape, None, m.eps)


class ChannelsFirstLayerNormRule(LayerNormRule):
    """LayerNorm over the channel axis 1 of (B, C, *spatial) (timm's and torchvision's LayerNorm2d:
    permute, layer_norm over C, permute back)."""

    def representations(self, calls: list[LayerCall], batch_size: int):
        (call,) = calls
        m = call.module
        x = to_batch_first(call.args[0], call.batch_axis, batch_size, m).movedim(1, -1)
        dy = to_batch_first(call.grads[0], call.batch_axis, batch_size, m, "an output gradient").movedim(1, -1)
        yield from _affine(m, self.normalise(m, x), dy, tuple(range(1, x.dim() - 1)))


class GroupNormRule(Rule):
    def representations(self, calls: list[LayerCall], batch_size: int):
        (call,) = calls
        m = call.module
        x = to_batch_first(call.args[0], 0, batch_size, m)
        xhat = F.group_norm(x, m.num_groups, None, None, m.eps)
        yield from _affine(m, xhat, call.grads[0], tuple(range(2, x.dim())))


class BatchNormRule(Rule):
    def check(self, module: nn.Module, name: str) -> None:
        label = f"module {name or type(module).__name__} ({type(module).__name__})"
        if module.training:
            raise UnsupportedModuleError(
                f"{label} is BatchNorm in training mode, which mixes samples so per-sample gradients are "
                "undefined: use GroupNorm or LayerNorm, or put the BatchNorm in eval mode (module.eval()) to use "
                "its running statistics"
            )
        if module.running_mean is None:
            raise UnsupportedModuleError(
                f"{label}: BatchNorm without running statistics (track_running_stats=False) normalises with batch "
                "statistics, which mixes samples"
            )

    def representations(self, calls: list[LayerCall], batch_size: int):
        (call,) = calls
        m = call.module
        x = to_batch_first(call.args[0], 0, batch_size, m)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        xhat = (x - m.running_mean.view(shape)) / torch.sqrt(m.running_var.view(shape) + m.eps)
        yield from _affine(m, xhat, call.grads[0], tuple(range(2, x.dim())))


register_rule(nn.LayerNorm, LayerNormRule())
register_rule(nn.RMSNorm, RMSNormRule())
register_rule(nn.GroupNorm, GroupNormRule())
register_rule(nn.modules.batchnorm._BatchNorm, BatchNormRule())
register_rule("timm.layers.norm.LayerNorm2d", ChannelsFirstLayerNormRule())
register_rule("torchvision.models.convnext.LayerNorm2d", ChannelsFirstLayerNormRule())
# timm's norms: the same computation as torch's (fast_norm only changes the kernel)
register_rule("timm.layers.norm.LayerNorm", LayerNormRule())
register_rule("timm.layers.norm.RmsNorm", RMSNormRule())
register_rule("timm.layers.norm.GroupNorm", GroupNormRule())
register_rule("timm.layers.norm.GroupNorm1", GroupNormRule())
