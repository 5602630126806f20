"""Optional dependencies: imported on first use, with an error naming the extra that provides them.

The library's core needs torch, numpy, scikit-learn, tqdm and safetensors; the dataserver's HTTP
service needs the ``service`` extra (fastapi, uvicorn, httpx), the plots the ``plots`` extra
(matplotlib), some datasets the ``data`` extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str, what: str) -> ModuleType:
    """Imports `module` (e.g. "fastapi", "matplotlib.figure") and returns it, or raises ImportError
    naming the package and the extra to install.

    extra: the pyproject extra that provides it ("service", "plots", "data"); what: the feature
    that needs it, for the message (e.g. "tlkernels serve").
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        package = module.split(".")[0]
        raise ImportError(
            f"{what} needs the '{package}' package: install the {extra} extra "
            f"(pip install 'tlkernels[{extra}]') or pip install {package}"
        ) from e
