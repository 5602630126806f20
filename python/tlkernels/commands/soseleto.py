"""``tlkernels demo`` and ``tlkernels soseleto``: SOSELETO (Litany & Freedman 2018) on offline data."""

from __future__ import annotations

import argparse

from .common import torch_device, write_json

__all__ = ["add_parser"]


def _print_table(results: list[dict]) -> None:
    import numpy as np

    methods = list(results[0]["accuracy"])
    labels = {
        "target_only": "Target only",
        "fine_tuning": "Fine-tuning",
        "soseleto": "SOSELETO",
        "soseleto_ft": "SOSELETO + fine-tuning",
    }
    print(f"{'method':<24} test accuracy (mean ± std over {len(results)} seed(s))")
    for m in methods:
        v = np.array([r["accuracy"][m] for r in results]) * 100
        print(f"{labels.get(m, m):<24} {v.mean():5.1f} ± {v.std():4.1f}")
    if "auroc" in results[0]:
        a = np.array([r["auroc"] for r in results])
        print(f"{'alpha AUROC clean/noisy':<24} {a.mean():.3f} ± {a.std():.3f}")
    if "linear_probe" in results[0]:
        for k in results[0]["linear_probe"]:
            v = np.array([r["linear_probe"][k] for r in results]) * 100
            print(f"{'linear probe, ' + k:<24} {v.mean():5.1f} ± {v.std():4.1f}  (frozen features, new last layer)")


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..experiments.soseleto import run_noisy

    print("SOSELETO on digits with 40% symmetric label noise on the source, 100 clean target examples")
    r = run_noisy(
        noise=0.4,
        n_target=100,
        seed=args.seed,
        epochs=args.epochs,
        plot=args.plot,
        device=torch_device(args.device),
        verbose=not args.quiet,
    )
    _print_table([r])
    print(
        f"alpha: mean {r['alpha_mean_clean']:.2f} on clean labels, {r['alpha_mean_noisy']:.2f} on flipped labels; "
        f"{r['seconds']:.0f} s"
    )
    if args.plot:
        print(f"wrote {args.plot}")
    write_json(args.json, r)
    return 0


def _svhn_mnist(args: argparse.Namespace, seeds: list[int], dev) -> list[dict]:
    from ..experiments import soseleto_digits

    results = [
        soseleto_digits.run_svhn_mnist(
            n_target=args.n_target or 20, seed=s, source_epochs=args.epochs or 3, device=dev, verbose=not args.quiet
        )
        for s in seeds
    ]
    soseleto_digits.print_table(results)
    return results


def _synthetic(args: argparse.Namespace, seeds: list[int], dev) -> list[dict]:
    from ..experiments import soseleto as ex

    results = [
        ex.run_synthetic(
            seed=s, epochs=args.epochs or 60, plot=args.plot if k == 0 else None, device=dev, verbose=not args.quiet
        )
        for k, s in enumerate(seeds)
    ]
    for r in results:
        print(f"seed {r['seed']}: alpha AUROC clean/noisy {r['auroc']:.3f}, target accuracy {r['target_accuracy']:.3f}")
    return results


def _noisy(args: argparse.Namespace, seeds: list[int], dev) -> list[dict]:
    from ..experiments import soseleto as ex

    results = [
        ex.run_noisy(
            noise=args.noise,
            n_target=args.n_target or 100,
            seed=s,
            epochs=args.epochs or 30,
            device=dev,
            kind=args.kind,
            plot=args.plot if k == 0 else None,
            verbose=not args.quiet,
        )
        for k, s in enumerate(seeds)
    ]
    _print_table(results)
    return results


def _disjoint(args: argparse.Namespace, seeds: list[int], dev) -> list[dict]:
    from ..experiments import soseleto as ex

    results = [
        ex.run_disjoint(
            n_target=args.n_target or 25,
            seed=s,
            epochs=args.epochs or 30,
            shift=args.shift,
            device=dev,
            verbose=not args.quiet,
        )
        for s in seeds
    ]
    _print_table(results)
    return results


def _domain(args: argparse.Namespace, seeds: list[int], dev) -> list[dict]:
    from ..experiments import soseleto as ex

    args.shift = args.shift or "rotation"
    results = [
        ex.run_domain(
            n_target=args.n_target or 20,
            seed=s,
            epochs=args.epochs or 30,
            shift=args.shift,
            device=dev,
            verbose=not args.quiet,
        )
        for s in seeds
    ]
    _print_domain_table(results, args.shift)
    return results


def _print_domain_table(results: list[dict], shift: str) -> None:
    """The domain experiment's accuracies (source only, then each method) and alpha's summaries,
    mean ± std over the seeds' results."""
    import numpy as np

    labels = {
        "target_only": "Target only",
        "fine_tuning": "Fine-tuning",
        "soseleto": "SOSELETO (separate heads)",
        "soseleto_ft": "  + fine-tuning",
        "soseleto_shared": "SOSELETO (shared head)",
        "soseleto_shared_ft": "  + fine-tuning",
    }
    print(
        f"digits -> digits under '{shift}', {results[0]['n_target']} labelled target examples; "
        f"test accuracy % (mean ± std over {len(results)} seed(s))"
    )
    rows = [("Source only (no target)", [r["source_only"] for r in results])]
    rows += [(labels[m], [r["accuracy"][m] for r in results]) for m in results[0]["accuracy"]]
    for name, v in rows:
        v = np.array(v) * 100
        print(f"{name:<27} {v.mean():5.1f} ± {v.std():4.1f}")
    for key in results[0]["alpha"]:
        a = [r["alpha"][key] for r in results]
        per_class = np.mean([x["mean_per_class"] for x in a], 0)
        line = (
            f"alpha {key}: mean {np.mean([x['mean'] for x in a]):.2f}, per class "
            f"[{' '.join(f'{c:.2f}' for c in per_class)}]"
        )
        for m in ("spearman_target_p_true", "spearman_slant"):
            vals = [x[m] for x in a if x[m] is not None]
            if vals:
                line += f", {m} {np.mean(vals):+.2f}"
        print(line)
    print(f"{sum(r['seconds'] for r in results):.0f} s")


# --experiment -> the function that runs it over the seeds and prints its table
_EXPERIMENTS = {
    "svhn-mnist": _svhn_mnist,
    "synthetic": _synthetic,
    "noisy": _noisy,
    "disjoint": _disjoint,
    "domain": _domain,
}


def _cmd_soseleto(args: argparse.Namespace) -> int:
    seeds = [args.seed + k for k in range(args.seeds)]
    results = _EXPERIMENTS[args.experiment](args, seeds, torch_device(args.device))
    write_json(args.json, results[0] if len(results) == 1 else results)
    return 0


def add_parser(subparsers) -> None:
    """Registers ``tlkernels demo``, ``tlkernels soseleto``."""
    p = subparsers.add_parser("demo", help="SOSELETO on noisy digits: the table, alpha's AUROC and a plot (< 2 min)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--plot", metavar="PATH", default="soseleto_demo.png")
    p.add_argument("--device", default="cpu", help="torch device for every model (cpu, cuda, cuda:1, ...)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)

    p = subparsers.add_parser(
        "soseleto",
        help="SOSELETO experiments: synthetic 2-D, noisy digits, disjoint digit classes, domain-shifted digits",
    )
    p.add_argument(
        "--experiment",
        choices=["synthetic", "noisy", "disjoint", "domain", "svhn-mnist"],
        default="noisy",
        help="svhn-mnist: SynDigits 0-4 -> MNIST 5-9 on a CNN (needs the data extra)",
    )
    p.add_argument(
        "--shift",
        choices=["rotation", "blur_noise"],
        default=None,
        help="the target's shift (rotation 30°, or blur σ=1 + noise 0.2): domain (default rotation); "
        "disjoint (default none: with a shift, clean 0-4 -> shifted 5-9, disjoint images)",
    )
    p.add_argument("--noise", type=float, default=0.4)
    p.add_argument("--kind", choices=["symmetric", "pairwise"], default="symmetric")
    p.add_argument(
        "--n-target",
        type=int,
        default=None,
        help="labelled target examples (100 noisy, 25 disjoint, 20 domain, 20 svhn-mnist)",
    )
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="run seeds seed, seed+1, ...")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--plot", metavar="PATH")
    p.add_argument("--device", default="cpu", help="torch device for every model (cpu, cuda, cuda:1, ...)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_soseleto)
