"""Deprecated import path: the arguments and outputs every subcommand shares moved to
``tlkernels.commands.common`` (add_common_args, seeds_of, write_outputs)."""

from .._deprecation import warn_moved
from ..commands.common import add_common_args, seeds_of, write_outputs

__all__ = ["add_common_args", "seeds_of", "write_outputs"]

warn_moved("tlkernels.experiments._cli", "tlkernels.commands.common", stacklevel=2)
