"""``tlkernels dataserver build | experiment`` and ``tlkernels serve``: the dataserver of
self-supervised experts (Yan et al. 2020)."""

from __future__ import annotations

import argparse

from .common import one_line_errors, write_json

__all__ = ["add_parser"]


def _cmd_dataserver_build(args: argparse.Namespace) -> int:
    return one_line_errors("tlkernels dataserver build", _dataserver_build, args)


def _dataserver_build(args: argparse.Namespace) -> int:
    import os

    import numpy as np

    from ..selection.dataserver import Store, partition_store, train_experts

    if os.path.exists(args.store) and not os.path.isdir(args.store):
        raise SystemExit(f"tlkernels dataserver build: --store {args.store} exists and is not a directory")
    if os.path.isdir(args.store) and os.listdir(args.store) and not args.overwrite:
        # checked before anything is read or trained: the directory's contents would be replaced
        raise SystemExit(
            f"tlkernels dataserver build: --store {args.store} exists and is not empty; "
            "pass --overwrite to replace its contents"
        )
    datasets = {}
    for spec in args.npz or []:
        name, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"--npz takes NAME=PATH, got {spec!r}")
        d = np.load(path)
        if "X" not in d:
            raise SystemExit(f"{path}: an npz with an array X (and optionally y) is expected")
        datasets[name] = (d["X"], d["y"] if "y" in d else None)  # noqa: SIM401 (an NpzFile)
    for spec in args.image_folder or []:
        name, _, path = spec.partition("=")
        from ..data import load_image_folder

        ds = load_image_folder(path, size=args.size, grayscale=args.grayscale)
        datasets[name] = (ds.X, ds.y)
    if args.offline_demo:
        from ..experiments.dataserver import build_offline_store

        store, _, _ = build_offline_store(
            args.store,
            seed=args.seed,
            k=args.partitions,
            expert_epochs=args.expert_epochs,
            verbose=True,
            overwrite=args.overwrite,
        )
        print(f"wrote the offline demo store ({store.size} images, {args.partitions} partitions) to {args.store}")
        return 0
    if not datasets:
        raise SystemExit("name at least one source: --npz NAME=PATH, --image-folder NAME=DIR or --offline-demo")
    store = Store.create(args.store, datasets, overwrite=args.overwrite)
    print(f"wrote {store.size} examples from {len(datasets)} dataset(s) to {args.store}")
    if args.partitions:
        partition_store(store, args.partitions, method=args.method, seed=args.seed, verbose=True)
        train_experts(store, epochs=args.expert_epochs, seed=args.seed, task=args.task, verbose=True)
        print(f"{args.partitions} partitions ({args.method}) and their {args.task} experts written")
    return 0


def _cmd_dataserver_experiment(args: argparse.Namespace) -> int:
    import numpy as np

    from ..experiments.dataserver import run_dataserver_experiment

    results = [run_dataserver_experiment(seed=args.seed + k, verbose=not args.quiet) for k in range(args.seeds)]
    print(f"{'method':<12} target test accuracy   selection precision  ({len(results)} seed(s))")
    for m in results[0]["accuracy"]:
        a = np.array([r["accuracy"][m] for r in results]) * 100
        p = [r["selection_precision"].get(m) for r in results]
        ptxt = f"{np.mean(p):.2f}" if p[0] is not None else "-"
        print(f"{m:<12} {a.mean():5.1f} ± {a.std():4.1f}           {ptxt}")
    c = np.array([r["pad_score_correlation"] for r in results])
    print(
        f"correlation of proxy A-distance (partition vs target) with the expert score: {c.mean():.2f} ± {c.std():.2f}"
    )
    write_json(args.json, results[0] if len(results) == 1 else results)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..selection.dataserver.service import serve

    def run(args):
        serve(
            args.store,
            host=args.host,
            port=args.port,
            max_body_bytes=args.max_body_bytes,
            max_selections=args.keep_selections,
            selection_ttl=args.selection_ttl,
        )
        return 0

    return one_line_errors("tlkernels serve", run, args)


def add_parser(subparsers) -> None:
    """Registers ``tlkernels dataserver``, ``tlkernels serve``."""
    p = subparsers.add_parser("dataserver", help="the dataserver of self-supervised experts (Yan et al. 2020)")
    dsub = p.add_subparsers(dest="dataserver_command", required=True)
    b = dsub.add_parser("build", help="create a store from arrays or image folders, partition it, train experts")
    b.add_argument("--store", required=True, help="directory to write")
    b.add_argument("--npz", action="append", metavar="NAME=PATH", help="a dataset: an .npz with X (and y)")
    b.add_argument("--image-folder", action="append", metavar="NAME=DIR", help="a dataset: DIR/<class>/*.png")
    b.add_argument("--offline-demo", action="store_true", help="the experiment's store (digits, photo patches, noise)")
    b.add_argument("--size", type=int, default=8, help="image side for --image-folder")
    b.add_argument("--grayscale", action="store_true")
    b.add_argument("--partitions", type=int, default=8, help="K: partitions and experts (0: none)")
    b.add_argument("--method", choices=["unsupervised", "superclass"], default="unsupervised")
    b.add_argument("--expert-epochs", type=int, default=3)
    b.add_argument("--task", choices=["rotation", "classification"], default="rotation", help="what the experts learn")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--overwrite", action="store_true")
    b.set_defaults(func=_cmd_dataserver_build)
    e = dsub.add_parser("experiment", help="the offline experiment: none / full / uniform / Ngiam / ours")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--seeds", type=int, default=1)
    e.add_argument("--json", metavar="PATH")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=_cmd_dataserver_experiment)

    p = subparsers.add_parser("serve", help="serve a dataserver store over HTTP (FastAPI + uvicorn)")
    p.add_argument("--store", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--max-body-bytes", type=int, default=1 << 20, help="larger request bodies get 413 (default 1 MiB; 0: no limit)"
    )
    p.add_argument(
        "--keep-selections",
        type=int,
        default=10_000,
        help="stored selections kept, the oldest removed first (default 10000; 0: no limit)",
    )
    p.add_argument(
        "--selection-ttl",
        type=float,
        default=7 * 24 * 3600,
        help="seconds a stored selection is kept (default 7 days; 0: no limit)",
    )
    p.set_defaults(func=_cmd_serve)
