"""Layer rules: how each kind of module gives per-sample gradient representations.

A rule is registered for a module type (or for a class's qualified name, for libraries that may
not be installed) in the manner of Opacus' grad samplers. Two kinds exist:

- a leaf rule reads one recorded call of its module (inputs, output gradients) and yields, for
  each trainable parameter the module owns, a representation from ``persample.reps``;
- a composite rule (``decomposes = True``) replaces the module's forward during a capture by an
  equivalent forward written with ``Recorder`` primitives (``recorder.linear`` ...), so that every
  parameter use is recorded even where the module's own forward never calls its submodules
  (``nn.MultiheadAttention`` uses ``out_proj.weight`` directly) or hides them in a fused kernel
  (``nn.LSTM``).

Users register rules for their own modules with ``register_rule(MyModule, MyRule())``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

__all__ = ["LayerCall", "Rule", "UnsupportedModuleError", "register_rule", "rule_for"]


class UnsupportedModuleError(ValueError):
    """A module with trainable parameters that the capture cannot handle per sample."""


@dataclass(eq=False)
class LayerCall:
    """One recorded use of a module's parameters during the forward.

    module: the module owning the parameters (for a composite rule's primitive: that module).
    rule: the rule that turns this call into representations.
    args, kwargs: the inputs, detached (tensors of any shape; ``batch_axis`` is their batch axis).
    batch_axis: the axis of the batch in the inputs and output (0, or 1 for sequence-first).
    grads: the gradient of sum_i l_i with respect to each output tensor (pytree leaf order),
        filled after the backward.
    info: rule-specific data (for instance which rows of a packed weight a projection used).
    """

    module: nn.Module
    rule: Rule
    args: tuple
    kwargs: dict
    batch_axis: int = 0
    grads: list | None = None
    info: dict = field(default_factory=dict)
    output_meta: tuple = ()  # (shape, dtype) of every output tensor
    versions: tuple = ()
    input_versions: tuple = ()
    group: Any = None
    seq: int = 0  # position among the forward's recorded calls


class Rule:
    """Base class of the layer rules.

    Leaf rules override ``representations``; composite rules set ``decomposes = True`` and
    override ``forward`` (and ``covers``, the submodules whose parameters the decomposed forward
    records itself)."""

    decomposes = False
    #: whether an input of batch size 1 may stand for the whole batch (a (1, T) position index)
    broadcasts = False
    #: a short reason shown when the rule is a fallback (None: a native rule)
    fallback_reason: str | None = None

    def representations(self, calls: list[LayerCall], batch_size: int) -> Iterator[tuple[Tensor, Any]]:
        """Yields (parameter, representation) for the calls of one module (several calls only
        when a composite rule groups them, e.g. the time steps of a recurrence)."""
        raise NotImplementedError

    def forward(self, module: nn.Module, recorder, *args, **kwargs):  # composite rules only
        raise NotImplementedError

    def covers(self, module: nn.Module) -> list[nn.Module]:
        return []

    def check(self, module: nn.Module, name: str) -> None:
        """Raises UnsupportedModuleError when this module's configuration cannot be handled."""


_BY_TYPE: dict[type, Rule] = {}
_BY_NAME: dict[str, Rule] = {}


def register_rule(module_type: type | str, rule: Rule) -> None:
    """Registers `rule` for `module_type` and its subclasses; a string names a class by
    ``module.qualname`` (``"transformers.pytorch_utils.Conv1D"``) so that the library defining it
    need not be installed. A later registration replaces an earlier one."""
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be a tlkernels.persample.Rule, got {type(rule).__name__}")
    if isinstance(module_type, str):
        _BY_NAME[module_type] = rule
    elif isinstance(module_type, type) and issubclass(module_type, nn.Module):
        _BY_TYPE[module_type] = rule
    else:
        raise TypeError(f"module_type must be an nn.Module subclass or a qualified class name, got {module_type!r}")


def rule_for(module: nn.Module) -> Rule | None:
    """The rule of the most specific registered class in the module's MRO, or None.

    A subclass whose ``forward`` comes from elsewhere than the registered class's own module may
    compute something else (timm's LayerNorm2d normalises the channel axis of an nn.LayerNorm):
    the class's rule does not apply to it unless registered for the subclass itself. (Subclasses
    defined beside the registered class, torch's LSTM / GRU for RNNBase, keep the rule.)"""
    kind = type(module)
    for cls in kind.__mro__:
        rule = _BY_TYPE.get(cls) or _BY_NAME.get(f"{cls.__module__}.{cls.__qualname__}")
        if rule is not None:
            defines = next(c for c in kind.__mro__ if "forward" in c.__dict__)
            return rule if defines.__module__ == cls.__module__ else None
    return None
