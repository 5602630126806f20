"""Arguments every experiment subcommand shares (docs/design.md §5: --seed, --seeds, --json, --plot)."""

from __future__ import annotations

import argparse


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


def write_outputs(args: argparse.Namespace, result: dict, plot=None, payload: dict | None = None) -> int:
    """After the table: plot(result, args.plot) when --plot was given, the JSON of `payload`
    (default: result) when --json was; returns the exit code 0."""
    from ..cli import _write_json

    if plot is not None and args.plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    _write_json(args.json, result if payload is None else payload)
    return 0
