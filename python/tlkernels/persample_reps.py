"""Deprecated import path: the representations moved to ``tlkernels.persample.reps``."""

import warnings

from .persample.reps import *  # noqa: F401,F403
from .persample.reps import ghost_is_cheaper, gram, numel_per_sample  # noqa: F401

warnings.warn("tlkernels.persample_reps moved to tlkernels.persample.reps", DeprecationWarning, stacklevel=2)
