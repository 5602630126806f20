"""What every op family's wrappers share: the loaded extension, the backend namespaces of this
build, and the argument check of a floating tensor."""

from __future__ import annotations

import json

from torch import Tensor

from .. import _C  # the pybind11 module; loading it registers the ops

__all__ = ["BACKEND_NAMESPACES", "BUILD_INFO", "check_floating"]

BUILD_INFO: dict = json.loads(_C.build_info())
BACKEND_NAMESPACES: tuple[str, ...] = ("tlkernels",) + (("tlkernels_emu",) if BUILD_INFO["emu"] else ())


def check_floating(x, name: str) -> None:
    """Raises unless `x` is a floating torch.Tensor; the message names the argument."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor (float16, bfloat16, float32 or float64), got {x.dtype}")
