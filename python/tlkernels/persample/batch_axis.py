"""Where the batch is: the batch axis of every module's inputs, known from the model, not guessed.

Sequence-first modules of torch (``batch_first=False``: ``nn.MultiheadAttention``, ``nn.RNN`` /
``nn.LSTM`` / ``nn.GRU``, ``nn.Transformer*``) take (T, B, ...) inputs, and so do the layers inside
them (the Linear and LayerNorm layers of a ``TransformerEncoderLayer``). A module inherits the
batch axis of its nearest such ancestor; an explicit ``batch_axes={module name: axis}`` wins.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from .registry import UnsupportedModuleError

_SEQUENCE_MODULES = (
    nn.MultiheadAttention,
    nn.RNNBase,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    nn.TransformerEncoder,
    nn.Transformer,
)


def _own_axis(module: nn.Module) -> int | None:
    if isinstance(module, _SEQUENCE_MODULES):
        if isinstance(module, nn.TransformerEncoder):  # its batch_first lives in its layers
            first = module.layers[0] if len(module.layers) else None
            flag = getattr(getattr(first, "self_attn", None), "batch_first", None)
        else:
            flag = getattr(module, "batch_first", None)
        if isinstance(flag, bool):
            return 0 if flag else 1
    return None


def batch_axes(model: nn.Module, overrides: Mapping[str, int] | None = None) -> dict[nn.Module, int]:
    """{module: batch axis of its inputs} for every module of `model`.

    overrides: {module name as in model.named_modules(): axis}, inherited by its submodules.
    """
    overrides = dict(overrides or {})
    names = {name for name, _ in model.named_modules()}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise KeyError(f"batch_axes names modules that are not in the model: {unknown}")
    for name, axis in overrides.items():
        if not isinstance(axis, int) or isinstance(axis, bool) or axis < 0:
            raise ValueError(f"batch_axes[{name!r}] must be a non-negative int, got {axis!r}")
    axes: dict[nn.Module, int] = {}

    def walk(module: nn.Module, name: str, inherited: int) -> None:
        axis = overrides.get(name)
        if axis is None:
            own = _own_axis(module)
            axis = inherited if own is None else own
        axes.setdefault(module, axis)
        for child_name, child in module.named_children():
            walk(child, f"{name}.{child_name}" if name else child_name, axis)

    walk(model, "", 0)
    return axes


def to_batch_first(t: Tensor, axis: int, batch_size: int, module: nn.Module, what: str = "an input") -> Tensor:
    """t with its batch axis moved to the front, after checking that it holds the batch."""
    if t.dim() <= axis or t.shape[axis] != batch_size:
        where = "leading dimension" if axis == 0 else f"dimension {axis} (sequence-first: batch_first=False)"
        raise UnsupportedModuleError(
            f"{type(module).__name__} got {what} of shape {tuple(t.shape)} whose {where} is not the batch size "
            f"{batch_size}: per-sample products need to know the batch axis; pass batch_axes={{module name: axis}} "
            "for a module that takes its batch elsewhere"
            + (
                " (here a dimension is a multiple of the batch size: the model seems to fold the batch with another "
                "axis, as window attention does; such layers cannot be split by sample)"
                if any(d % batch_size == 0 and d > batch_size for d in t.shape)
                else ""
            )
        )
    return t if axis == 0 else t.movedim(axis, 0)
