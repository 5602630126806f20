"""``tlkernels transfer``: representation transfer on digits 0-4 -> 5-9."""

from __future__ import annotations

import argparse

from .common import write_json

__all__ = ["add_parser"]


def _cmd_transfer(args: argparse.Namespace) -> int:
    from ..experiments import transfer as ex

    methods = None if args.method == "all" else [m.strip() for m in args.method.split(",")]
    seeds = [args.seed + k for k in range(args.seeds)]
    ns = [int(v) for v in args.n_per_class.split(",")]
    result = ex.run(methods, n_per_class=ns, seeds=seeds, verbose=not args.quiet)
    print(f"digits 0-4 -> 5-9, test accuracy (%) mean ± std over seeds {seeds}")
    print(ex.table(result))
    if args.plot:
        result["tradeoff"] = ex.run_tradeoff(seed=args.seed, n_per_class=max(ns), plot=args.plot)
        print(f"wrote {args.plot}")
    write_json(args.json, result)
    return 0


def add_parser(subparsers) -> None:
    """Registers ``tlkernels transfer``."""
    p = subparsers.add_parser("transfer", help="representation transfer on digits 0-4 -> 5-9 (the README table)")
    p.add_argument(
        "--method",
        default="all",
        help="'all' or a comma-separated list of: "
        + "scratch, probe_logistic, probe_knn, finetune, flextune, layer_transfer, l2sp, "
        "output_constraint, progressive, rotation_probe, autoencoder_probe, self_taught",
    )
    p.add_argument("--n-per-class", default="5,20", help="labelled target examples per class (comma-separated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=3, help="run seeds seed, seed+1, ...")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--plot", metavar="PATH", help="also the fine-tuning trade-off plot (PNG)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_transfer)
