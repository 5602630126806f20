"""``tlkernels dann``: DANN on digit domain shifts, reverse-validated."""

from __future__ import annotations

import argparse

from .common import write_json

__all__ = ["add_parser"]


def _cmd_dann(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..experiments import dann as ex

    torch.set_num_threads(args.threads)
    seeds = [args.seed + k for k in range(args.seeds)]
    results = []
    for shift in args.shift:
        rs = [ex.run_shift(shift, seed=s, epoch_grid=args.epochs, verbose=not args.quiet) for s in seeds]
        results += rs
        print(f"\n{shift}: target test accuracy, mean ± std over {len(rs)} seed(s)")
        for m, label in [
            ("source_only", "Source only"),
            ("dann", "DANN (RV-selected)"),
            ("target_oracle", "Target oracle"),
        ]:
            v = np.array([r["accuracy"][m] for r in rs]) * 100
            print(f"  {label:<28} {v.mean():5.1f} ± {v.std():4.1f}")
        v = np.array([r["dann_textbook"] for r in rs]) * 100
        print(f"  {'DANN textbook (lam_max=1)':<28} {v.mean():5.1f} ± {v.std():4.1f}")
        for r in rs:
            c, o = r["rv_choice"], r["oracle_choice"]
            print(
                f"  seed {r['seed']}: RV chose lam_max={c['lam_max']:g}, {c['epochs']} epochs -> "
                f"{r['accuracy']['dann']:.3f}; oracle would choose lam_max={o['lam_max']:g}, {o['epochs']} epochs "
                f"-> {r['oracle_choice_accuracy']:.3f} ({r['seconds']:.0f} s)"
            )
    if args.plot:
        from .._plots import subplots

        fig, ax = subplots(figsize=(6, 3.5))
        labels = ["source_only", "dann", "target_oracle"]
        for k, m in enumerate(labels):
            means = [np.mean([r["accuracy"][m] for r in results if r["shift"] == sh]) for sh in args.shift]
            stds = [np.std([r["accuracy"][m] for r in results if r["shift"] == sh]) for sh in args.shift]
            ax.bar(np.arange(len(args.shift)) + 0.27 * (k - 1), means, 0.27, yerr=stds, label=m)
        ax.set_xticks(range(len(args.shift)), args.shift)
        ax.set_ylabel("target test accuracy")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")
    write_json(args.json, results)
    return 0


def add_parser(subparsers) -> None:
    """Registers ``tlkernels dann``."""
    p = subparsers.add_parser(
        "dann", help="DANN on digits domain shifts: source only / DANN (reverse-validated) / oracle"
    )
    p.add_argument(
        "--shift",
        nargs="+",
        default=["rotation", "intensity"],
        choices=["rotation", "intensity", "blur_noise", "inversion", "translation"],
    )
    p.add_argument(
        "--epochs", type=int, nargs="+", default=[20, 40], help="stopping epochs reverse validation picks from"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="run seeds seed, seed+1, ...")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest for these small nets)")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--plot", metavar="PATH")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_dann)
