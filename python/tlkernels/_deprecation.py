"""Old import paths of names that moved, kept for one release with a DeprecationWarning.

A module whose public name moved keeps the old path with ``__getattr__ = moved_names(__name__,
{"old_name": "tlkernels.new.module"})``: the name is looked up in its new module on access and a
DeprecationWarning names both paths. The name must not be a global of the old module any more
(module ``__getattr__`` is only asked for missing attributes) nor listed in its ``__all__``.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["moved_names", "warn_moved"]


def warn_moved(old: str, new: str, stacklevel: int = 3) -> None:
    """Emits the DeprecationWarning of a moved name: ``old`` (dotted path) now lives at ``new``."""
    warnings.warn(
        f"{old} moved to {new}; the old import path will be removed in the next release",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def moved_names(module: str, moved: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for `module` (its ``__name__``) resolving each key of
    `moved` (a name that left the module) in the module given as its value, with a warning.

    Other names raise AttributeError as a module without ``__getattr__`` would.
    """
    moved = dict(moved)
    for name, target in moved.items():
        if not isinstance(name, str) or not isinstance(target, str) or not target:
            raise ValueError(f"moved must map names to module paths, got {name!r}: {target!r}")

    def __getattr__(name: str) -> Any:
        target = moved.get(name)
        if target is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warn_moved(f"{module}.{name}", f"{target}.{name}")
        return getattr(importlib.import_module(target), name)

    return __getattr__
