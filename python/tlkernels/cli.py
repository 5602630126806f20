"""The ``tlkernels`` command."""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["COMMANDS", "build_parser", "main"]

# Every subcommand registers itself the same way: the module's add_parser(subparsers) adds it
# with set_defaults(func=...). (module relative to tlkernels, the subcommands it registers)
COMMANDS: tuple[tuple[str, str], ...] = (
    ("commands.info", "info"),
    ("commands.soseleto", "demo, soseleto"),
    ("commands.dataserver", "dataserver, serve"),
    ("commands.dann", "dann"),
    ("commands.transfer", "transfer"),
    ("experiments.distill", "distill"),
    ("experiments.zeroshot", "zeroshot"),
    ("experiments.selftaught_mapping", "stc, mapping"),
    ("experiments.multitask", "multitask, domaingen"),
    ("experiments.weak", "weak"),
    ("emu_profile", "emu-profile"),
)


def __getattr__(name: str):
    # EXPERIMENT_MODULES (the experiments registered by name) is replaced by COMMANDS; one release.
    if name == "EXPERIMENT_MODULES":
        from ._deprecation import warn_moved

        warn_moved("tlkernels.cli.EXPERIMENT_MODULES", "tlkernels.cli.COMMANDS")
        return [m.split(".", 1)[1] for m, _ in COMMANDS if m.startswith("experiments.")]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand of COMMANDS registered."""
    parser = argparse.ArgumentParser(prog="tlkernels", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module, _ in COMMANDS:
        importlib.import_module(f".{module}", __package__).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs ``tlkernels ARGV`` (default sys.argv[1:]); returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
