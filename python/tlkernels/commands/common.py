"""What every subcommand shares: the common arguments (docs/design.md §5: --seed, --seeds, --json,
--plot), the JSON output, the --device check, and one-line errors for mistakes a user can make."""

from __future__ import annotations

import argparse
import json

__all__ = ["add_common_args", "one_line_errors", "seeds_of", "torch_device", "write_json", "write_outputs"]


def add_common_args(p: argparse.ArgumentParser, plot_help: str | None = None, seeds: int = 3) -> None:
    """--seed, --seeds, --json PATH, --quiet, and --plot PATH when the experiment draws one."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=seeds, help="run seeds seed, seed+1, ...")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    if plot_help is not None:
        p.add_argument("--plot", metavar="PATH", help=plot_help)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def seeds_of(args: argparse.Namespace) -> list[int]:
    """[seed, seed + 1, ..., seed + seeds - 1]."""
    return [args.seed + k for k in range(args.seeds)]


def write_json(path: str | None, payload) -> None:
    """Writes `payload` as indented JSON to `path` (nothing when path is None); objects JSON does
    not know are written as their str()."""
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=2, default=str)
        print(f"wrote {path}")


def write_outputs(args: argparse.Namespace, result: dict, plot=None, payload: dict | None = None) -> int:
    """After the table: plot(result, args.plot) when --plot was given, the JSON of `payload`
    (default: result) when --json was; returns the exit code 0."""
    if plot is not None and args.plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    write_json(args.json, result if payload is None else payload)
    return 0


def torch_device(name: str):
    """--device NAME -> torch.device, refusing a CUDA device this machine does not have."""
    import torch

    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise SystemExit(f"--device: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA device is visible (torch.cuda.is_available() is False)")
    return dev


def one_line_errors(command: str, func, args: argparse.Namespace) -> int:
    """Runs func(args); the errors a user can cause (missing or corrupt files, a non-empty store
    directory, bad values) end it with one line on stderr and exit status 1, not a traceback."""
    from ..selection.dataserver.store import CorruptFileError

    try:
        return func(args)
    except FileExistsError as e:
        raise SystemExit(f"{command}: {str(e).replace('pass overwrite=True', 'pass --overwrite')}") from None
    except (
        CorruptFileError,
        FileNotFoundError,
        IsADirectoryError,
        NotADirectoryError,
        PermissionError,
        ValueError,
    ) as e:
        raise SystemExit(f"{command}: {e}") from None
