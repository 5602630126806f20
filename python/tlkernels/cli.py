"""The ``tlkernels`` command."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

# Experiment modules (python/tlkernels/experiments/<name>.py) that register their subcommands
# through add_parser(subparsers).
EXPERIMENT_MODULES = ["zeroshot", "distill", "selftaught_mapping", "weak", "multitask"]


def _cmd_info(args: argparse.Namespace) -> int:
    from .build import build_info, self_check

    info = build_info()
    rows = self_check()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"build": info, "self_check": rows}, f, indent=2)
    print(f"tlkernels {info['version']}")
    print(f"  torch built against : {info['torch_built_against']}")
    print(f"  torch running       : {info['torch_running']}")
    print(f"  compiled backends   : {', '.join(info['compiled_backends'])}")
    print(f"  CUDA architectures  : {', '.join(info['cuda_archs']) or '-'}")
    print(f"  GPU available       : {info['gpu_available']}")
    print(f"  compiler            : {info['compiler']}")
    print(f"  k-means CPU kernels : {info['kmeans_cpu_kernels']} (TLK_KMEANS_SIMD caps the level)")
    print("self-check against tlkernels.reference (float64):")
    for r in rows:
        status = "ok  " if r["ok"] else "FAIL"
        extra = f"  {r['error']}" if r["error"] else ""
        print(f"  {status} {r['backend']:<5} {r['op']:<30} max|err|={r['max_abs_error']:.1e} "
              f"({r['seconds'] * 1e3:.1f} ms){extra}")
    if "cuda" in info["compiled_backends"] and not info["gpu_available"]:
        print("  (cuda kernels compiled but no GPU visible: their device code is checked by the emu backend)")
    return 0 if all(r["ok"] for r in rows) else 1


def _print_table(results: list[dict]) -> None:
    import numpy as np

    methods = list(results[0]["accuracy"])
    labels = {"target_only": "Target only", "fine_tuning": "Fine-tuning", "soseleto": "SOSELETO",
              "soseleto_ft": "SOSELETO + fine-tuning"}
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


def _device(name: str):
    """--device NAME -> torch.device, refusing a CUDA device this machine does not have."""
    import torch

    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise SystemExit(f"--device: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA device is visible (torch.cuda.is_available() is False)")
    return dev


def _write_json(path: str | None, payload) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=2, default=str)
        print(f"wrote {path}")


def _cmd_demo(args: argparse.Namespace) -> int:
    from .experiments.soseleto import run_noisy

    print("SOSELETO on digits with 40% symmetric label noise on the source, 100 clean target examples")
    r = run_noisy(noise=0.4, n_target=100, seed=args.seed, epochs=args.epochs, plot=args.plot,
                  device=_device(args.device), verbose=not args.quiet)
    _print_table([r])
    print(f"alpha: mean {r['alpha_mean_clean']:.2f} on clean labels, {r['alpha_mean_noisy']:.2f} on flipped labels; "
          f"{r['seconds']:.0f} s")
    if args.plot:
        print(f"wrote {args.plot}")
    _write_json(args.json, r)
    return 0


def _cmd_soseleto(args: argparse.Namespace) -> int:
    import numpy as np

    from .experiments import soseleto as ex

    seeds = [args.seed + k for k in range(args.seeds)]
    dev = _device(args.device)
    if args.experiment == "synthetic":
        results = [ex.run_synthetic(seed=s, epochs=args.epochs or 60, plot=args.plot if k == 0 else None, device=dev,
                                    verbose=not args.quiet) for k, s in enumerate(seeds)]
        for r in results:
            print(f"seed {r['seed']}: alpha AUROC clean/noisy {r['auroc']:.3f}, target accuracy "
                  f"{r['target_accuracy']:.3f}")
    elif args.experiment == "noisy":
        results = [ex.run_noisy(noise=args.noise, n_target=args.n_target or 100, seed=s, epochs=args.epochs or 30,
                                device=dev,
                                kind=args.kind, plot=args.plot if k == 0 else None, verbose=not args.quiet)
                   for k, s in enumerate(seeds)]
        _print_table(results)
    elif args.experiment == "disjoint":
        results = [ex.run_disjoint(n_target=args.n_target or 25, seed=s, epochs=args.epochs or 30, shift=args.shift,
                                   device=dev,
                                   verbose=not args.quiet) for s in seeds]
        _print_table(results)
    else:
        args.shift = args.shift or "rotation"
        results = [ex.run_domain(n_target=args.n_target or 20, seed=s, epochs=args.epochs or 30, shift=args.shift,
                                 device=dev,
                                 verbose=not args.quiet) for s in seeds]
        labels = {"target_only": "Target only", "fine_tuning": "Fine-tuning",
                  "soseleto": "SOSELETO (separate heads)", "soseleto_ft": "  + fine-tuning",
                  "soseleto_shared": "SOSELETO (shared head)", "soseleto_shared_ft": "  + fine-tuning"}
        print(f"digits -> digits under '{args.shift}', {results[0]['n_target']} labelled target examples; "
              f"test accuracy % (mean ± std over {len(results)} seed(s))")
        rows = [("Source only (no target)", [r["source_only"] for r in results])]
        rows += [(labels[m], [r["accuracy"][m] for r in results]) for m in results[0]["accuracy"]]
        for name, v in rows:
            v = np.array(v) * 100
            print(f"{name:<27} {v.mean():5.1f} ± {v.std():4.1f}")
        for key in results[0]["alpha"]:
            a = [r["alpha"][key] for r in results]
            per_class = np.mean([x["mean_per_class"] for x in a], 0)
            line = (f"alpha {key}: mean {np.mean([x['mean'] for x in a]):.2f}, per class "
                    f"[{' '.join(f'{c:.2f}' for c in per_class)}]")
            for m in ("spearman_target_p_true", "spearman_slant"):
                vals = [x[m] for x in a if x[m] is not None]
                if vals:
                    line += f", {m} {np.mean(vals):+.2f}"
            print(line)
        print(f"{sum(r['seconds'] for r in results):.0f} s")
    _write_json(args.json, results[0] if len(results) == 1 else results)
    return 0


def _one_line_errors(command: str, func, args: argparse.Namespace) -> int:
    """Runs a command; the errors a user can cause (missing or corrupt files, a non-empty store
    directory, bad values) end it with one line on stderr and exit status 1, not a traceback."""
    from .selection.dataserver.store import CorruptFileError

    try:
        return func(args)
    except FileExistsError as e:
        raise SystemExit(f"{command}: {str(e).replace('pass overwrite=True', 'pass --overwrite')}") from None
    except (CorruptFileError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
            ValueError) as e:
        raise SystemExit(f"{command}: {e}") from None


def _cmd_dataserver_build(args: argparse.Namespace) -> int:
    return _one_line_errors("tlkernels dataserver build", _dataserver_build, args)


def _dataserver_build(args: argparse.Namespace) -> int:
    import os

    import numpy as np

    from .selection.dataserver import Store, partition_store, train_experts

    if os.path.exists(args.store) and not os.path.isdir(args.store):
        raise SystemExit(f"tlkernels dataserver build: --store {args.store} exists and is not a directory")
    if os.path.isdir(args.store) and os.listdir(args.store) and not args.overwrite:
        # checked before anything is read or trained: the directory's contents would be replaced
        raise SystemExit(f"tlkernels dataserver build: --store {args.store} exists and is not empty; "
                         "pass --overwrite to replace its contents")
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
        from .data import load_image_folder
        ds = load_image_folder(path, size=args.size, grayscale=args.grayscale)
        datasets[name] = (ds.X, ds.y)
    if args.offline_demo:
        from .experiments.dataserver import build_offline_store
        store, _, _ = build_offline_store(args.store, seed=args.seed, k=args.partitions,
                                          expert_epochs=args.expert_epochs, verbose=True, overwrite=args.overwrite)
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

    from .experiments.dataserver import run_dataserver_experiment

    results = [run_dataserver_experiment(seed=args.seed + k, verbose=not args.quiet) for k in range(args.seeds)]
    print(f"{'method':<12} target test accuracy   selection precision  ({len(results)} seed(s))")
    for m in results[0]["accuracy"]:
        a = np.array([r["accuracy"][m] for r in results]) * 100
        p = [r["selection_precision"].get(m) for r in results]
        ptxt = f"{np.mean(p):.2f}" if p[0] is not None else "-"
        print(f"{m:<12} {a.mean():5.1f} ± {a.std():4.1f}           {ptxt}")
    c = np.array([r["pad_score_correlation"] for r in results])
    print(f"correlation of proxy A-distance (partition vs target) with the expert score: {c.mean():.2f} ± {c.std():.2f}")
    _write_json(args.json, results[0] if len(results) == 1 else results)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .selection.dataserver.service import serve

    def run(args):
        serve(args.store, host=args.host, port=args.port, max_body_bytes=args.max_body_bytes,
              max_selections=args.keep_selections, selection_ttl=args.selection_ttl)
        return 0

    return _one_line_errors("tlkernels serve", run, args)


def _cmd_dann(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .experiments import dann as ex

    torch.set_num_threads(args.threads)
    seeds = [args.seed + k for k in range(args.seeds)]
    results = []
    for shift in args.shift:
        rs = [ex.run_shift(shift, seed=s, epoch_grid=args.epochs, verbose=not args.quiet) for s in seeds]
        results += rs
        print(f"\n{shift}: target test accuracy, mean ± std over {len(rs)} seed(s)")
        for m, label in [("source_only", "Source only"), ("dann", "DANN (RV-selected)"),
                         ("target_oracle", "Target oracle")]:
            v = np.array([r["accuracy"][m] for r in rs]) * 100
            print(f"  {label:<28} {v.mean():5.1f} ± {v.std():4.1f}")
        v = np.array([r["dann_textbook"] for r in rs]) * 100
        print(f"  {'DANN textbook (lam_max=1)':<28} {v.mean():5.1f} ± {v.std():4.1f}")
        for r in rs:
            c, o = r["rv_choice"], r["oracle_choice"]
            print(f"  seed {r['seed']}: RV chose lam_max={c['lam_max']:g}, {c['epochs']} epochs -> "
                  f"{r['accuracy']['dann']:.3f}; oracle would choose lam_max={o['lam_max']:g}, {o['epochs']} epochs "
                  f"-> {r['oracle_choice_accuracy']:.3f} ({r['seconds']:.0f} s)")
    if args.plot:
        from ._plots import subplots

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
    _write_json(args.json, results)
def _cmd_transfer(args: argparse.Namespace) -> int:
    from .experiments import transfer as ex

    methods = None if args.method == "all" else [m.strip() for m in args.method.split(",")]
    seeds = [args.seed + k for k in range(args.seeds)]
    ns = [int(v) for v in args.n_per_class.split(",")]
    result = ex.run(methods, n_per_class=ns, seeds=seeds, verbose=not args.quiet)
    print(f"digits 0-4 -> 5-9, test accuracy (%) mean ± std over seeds {seeds}")
    print(ex.table(result))
    if args.plot:
        result["tradeoff"] = ex.run_tradeoff(seed=args.seed, n_per_class=max(ns), plot=args.plot)
        print(f"wrote {args.plot}")
    _write_json(args.json, result)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tlkernels", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="build information and a self-check of every backend")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("demo", help="SOSELETO on noisy digits: the table, alpha's AUROC and a plot (< 2 min)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--plot", metavar="PATH", default="soseleto_demo.png")
    p.add_argument("--device", default="cpu", help="torch device for every model (cpu, cuda, cuda:1, ...)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("soseleto", help="SOSELETO experiments: synthetic 2-D, noisy digits, disjoint digit "
                                        "classes, domain-shifted digits")
    p.add_argument("--experiment", choices=["synthetic", "noisy", "disjoint", "domain"], default="noisy")
    p.add_argument("--shift", choices=["rotation", "blur_noise"], default=None,
                   help="the target's shift (rotation 30°, or blur σ=1 + noise 0.2): domain (default rotation); "
                        "disjoint (default none: with a shift, clean 0-4 -> shifted 5-9, disjoint images)")
    p.add_argument("--noise", type=float, default=0.4)
    p.add_argument("--kind", choices=["symmetric", "pairwise"], default="symmetric")
    p.add_argument("--n-target", type=int, default=None,
                   help="labelled target examples (100 noisy, 25 disjoint, 20 domain)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="run seeds seed, seed+1, ...")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--plot", metavar="PATH")
    p.add_argument("--device", default="cpu", help="torch device for every model (cpu, cuda, cuda:1, ...)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_soseleto)
    p = sub.add_parser("dataserver", help="the dataserver of self-supervised experts (Yan et al. 2020)")
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

    p = sub.add_parser("serve", help="serve a dataserver store over HTTP (FastAPI + uvicorn)")
    p.add_argument("--store", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-body-bytes", type=int, default=1 << 20,
                   help="larger request bodies get 413 (default 1 MiB; 0: no limit)")
    p.add_argument("--keep-selections", type=int, default=10_000,
                   help="stored selections kept, the oldest removed first (default 10000; 0: no limit)")
    p.add_argument("--selection-ttl", type=float, default=7 * 24 * 3600,
                   help="seconds a stored selection is kept (default 7 days; 0: no limit)")
    p.set_defaults(func=_cmd_serve)


    p = sub.add_parser("dann", help="DANN on digits domain shifts: source only / DANN (reverse-validated) / oracle")
    p.add_argument("--shift", nargs="+", default=["rotation", "intensity"],
                   choices=["rotation", "intensity", "blur_noise", "inversion", "translation"])
    p.add_argument("--epochs", type=int, nargs="+", default=[20, 40], help="stopping epochs reverse validation picks from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="run seeds seed, seed+1, ...")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest for these small nets)")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--plot", metavar="PATH")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_dann)

    p = sub.add_parser("transfer", help="representation transfer on digits 0-4 -> 5-9 (the README table)")
    p.add_argument("--method", default="all", help="'all' or a comma-separated list of: " +
                   "scratch, probe_logistic, probe_knn, finetune, flextune, layer_transfer, l2sp, "
                   "output_constraint, progressive, rotation_probe, autoencoder_probe, self_taught")
    p.add_argument("--n-per-class", default="5,20", help="labelled target examples per class (comma-separated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=3, help="run seeds seed, seed+1, ...")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--plot", metavar="PATH", help="also the fine-tuning trade-off plot (PNG)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_transfer)
    for name in EXPERIMENT_MODULES:  # each registers its own subcommand(s)
        importlib.import_module(f".experiments.{name}", __package__).add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
