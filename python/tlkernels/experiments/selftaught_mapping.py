"""Self-taught clustering (subcommand ``stc``) and CycleGAN domain mapping (``mapping``) on digits.

stc: target = digits 0-4, n unlabeled images per class (stratified draw per seed); auxiliary =
all images of digits 5-9, unlabeled. NMI (against the hidden target labels) of k-means on the
target pixels, k-means on the target projected by a PCA fitted on the auxiliary images,
information-theoretic co-clustering of the target alone (STC with lam = 0) and STC (lam = 1).
Also a synthetic word-count problem (``make_shared_feature_problem``) built so that the target
is too small to reveal the feature groups that the auxiliary set shares. Hyper-parameters are
fixed a priori (no labels are available to choose them): 16 feature clusters (a quarter of the
64 pixels), lam = 1 (the paper's default weighting), 5 auxiliary clusters (the auxiliary set
holds 5 digit classes), PCA with 16 components.

mapping: digits split (stratified, per seed) into a labelled source half and a target half that
is shifted (inversion: x -> 1 - x; rotation by 30 degrees); the target half is split into 2/3
unlabeled training images (the CycleGAN's target set; with their labels they train the oracle)
and 1/3 test images. Rows: source-only classifier, classifier trained on the CycleGAN-mapped
source F(x_s) with the source labels, target oracle; all the same MLP (64-128-64-10), Adam 1e-3,
30 epochs. CycleGAN settings fixed a priori: cycle_weight 10 (CycleGAN's value), identity_weight
0, 30 epochs, batch 64, lr 2e-3 (2e-4 is CycleGAN's for large nets and many steps; 2e-3 was set
on the inversion sanity problem of the unit tests, never on target labels).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..commands.common import add_common_args, seeds_of
from ..data import class_split, load_digits, shift_images, stratified_split

__all__ = [
    "make_shared_feature_problem",
    "run_stc",
    "run_mapping",
    "run",
    "table",
    "table_stc",
    "table_mapping",
    "plot_mapping",
    "add_parser",
]

STC_LABELS = {
    "kmeans": "k-means (target pixels)",
    "pca_kmeans": "k-means on aux-fitted PCA(16)",
    "coclustering": "Co-clustering target only (STC, λ = 0)",
    "stc": "Self-taught clustering (λ = 1)",
}
MAP_LABELS = {"source_only": "Source only", "mapped": "CycleGAN-mapped source", "oracle": "Target oracle"}
SHIFTS = {"inversion": 1.0, "rotation": 30.0}


# ---------------------------------------------------------------------------------------------
# stc
# ---------------------------------------------------------------------------------------------
def make_shared_feature_problem(
    seed: int,
    n_groups: int = 6,
    words_per_group: int = 10,
    n_per_class: int = 8,
    target_draws: int = 6,
    n_aux: int = 300,
    aux_draws: int = 30,
    noise: float = 0.1,
):
    """Word counts with hidden feature groups. Target class c (n_groups // 2 classes) draws its
    words from groups 2c and 2c+1 (weight 1, others `noise`), only `target_draws` words per
    instance, so two same-class target instances rarely share a word; auxiliary instances draw
    `aux_draws` words from a single random group (other classes than the target's) and reveal
    the groups. Returns X_target (N, M), y_target (N,), X_aux (n_aux, M), feature groups (M,)."""
    rng = np.random.default_rng(seed)
    M = n_groups * words_per_group
    group = np.repeat(np.arange(n_groups), words_per_group)[rng.permutation(M)]

    def sample(weights, draws):
        p = weights[group]
        return rng.multinomial(draws, p / p.sum())

    K = n_groups // 2
    yt = np.repeat(np.arange(K), n_per_class)
    Xt = np.stack(
        [sample(np.where(np.isin(np.arange(n_groups), [2 * c, 2 * c + 1]), 1.0, noise), target_draws) for c in yt]
    )
    ga = rng.integers(n_groups, size=n_aux)
    Xa = np.stack([sample(np.where(np.arange(n_groups) == g, 1.0, noise / 3), aux_draws) for g in ga])
    return Xt.astype(np.float64), yt, Xa.astype(np.float64), group


def _stc_methods(X, y, Xa, K, L, Ka, seed, pca=16):
    from sklearn.decomposition import PCA
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from ..cluster import KMeans
    from ..transfer.selftaught_clustering import SelfTaughtClustering

    out = {"kmeans": nmi(y, KMeans(K, n_init=10, random_state=seed).fit(X).labels_)}
    if pca:
        Z = PCA(pca, random_state=seed).fit(Xa).transform(X)
        out["pca_kmeans"] = nmi(y, KMeans(K, n_init=10, random_state=seed).fit(Z).labels_)
    out["coclustering"] = nmi(y, SelfTaughtClustering(K, L, lam=0.0, random_state=seed).fit(X, Xa).labels_)
    out["stc"] = nmi(y, SelfTaughtClustering(K, L, n_aux_clusters=Ka, lam=1.0, random_state=seed).fit(X, Xa).labels_)
    return out


def run_stc(seeds=(0, 1, 2), n_per_class=(10, 20), n_feature_clusters: int = 16, verbose: bool = False) -> dict:
    """NMI per seed on digits (per n) and on the synthetic problem."""
    d = load_digits()
    target, aux = class_split(d, range(5)), class_split(d, range(5, 10))
    Xa = aux.X.numpy().astype(np.float64)
    rows = []
    for seed in seeds:
        for n in n_per_class:
            t0 = time.time()
            t, _ = stratified_split(target, [5 * n, None], random_state=seed)
            res = _stc_methods(t.X.numpy().astype(np.float64), t.y.numpy(), Xa, 5, n_feature_clusters, 5, seed)
            rows.append({"problem": f"digits, {n} / class", "seed": seed, "nmi": res, "seconds": time.time() - t0})
        t0 = time.time()
        Xt, yt, Xs, _ = make_shared_feature_problem(seed)
        res = _stc_methods(Xt, yt, Xs, 3, 6, 6, seed, pca=5)
        rows.append({"problem": "synthetic word groups", "seed": seed, "nmi": res, "seconds": time.time() - t0})
        if verbose:
            print(f"stc seed {seed} done")
    return {
        "experiment": "stc",
        "rows": rows,
        "seeds": list(seeds),
        "n_per_class": list(n_per_class),
        "settings": {
            "target_classes": [0, 1, 2, 3, 4],
            "aux_classes": [5, 6, 7, 8, 9],
            "n_feature_clusters": n_feature_clusters,
            "lam": 1.0,
            "n_aux_clusters": 5,
            "pca": 16,
            "synthetic": {"n_clusters": 3, "n_feature_clusters": 6, "n_aux_clusters": 6, "pca": 5},
        },
    }


# ---------------------------------------------------------------------------------------------
# mapping
# ---------------------------------------------------------------------------------------------
def _classifier(seed):
    from .transfer import make_mlp

    torch.manual_seed(seed)
    return make_mlp(10)


def _fit_clf(X, y, seed, epochs=30):
    from ..transfer import FineTune

    return FineTune(_classifier(seed), 1e-3, epochs, batch_size=64, random_state=seed).fit(X, y)


def _mapping_setting(seed, shift):
    d = load_digits(images=True)
    src, tgt = stratified_split(d, [900, None], random_state=seed)
    tgt_X = shift_images(tgt.X, shift, SHIFTS[shift])
    from ..data import Dataset

    tgt = Dataset(tgt_X, tgt.y)
    tr, te = stratified_split(tgt, [600, None], random_state=seed + 1000)
    return src, tr, te


def run_mapping(
    seeds=(0, 1, 2),
    shifts=("inversion", "rotation"),
    epochs: int = 30,
    cycle_weight: float = 10.0,
    lr: float = 2e-3,
    classifier_epochs: int = 30,
    verbose: bool = False,
    keep_mappers: bool = False,
) -> dict:
    """Target test accuracy per seed and shift: source only, CycleGAN-mapped source, oracle."""
    from ..adaptation.domain_mapping import CycleGAN, MappedSourceClassifier

    torch.set_num_threads(1)
    rows, mappers = [], {}
    for shift in shifts:
        if shift not in SHIFTS:
            raise ValueError(f"shifts must be among {list(SHIFTS)}, got {shift!r}")
        for seed in seeds:
            t0 = time.time()
            src, tr, te = _mapping_setting(seed, shift)
            acc = {"source_only": _fit_clf(src.X, src.y, seed, classifier_epochs).score(te.X, te.y)}
            cg = CycleGAN(
                cycle_weight=cycle_weight, lr=lr, epochs=epochs, batch_size=64, random_state=seed, verbose=verbose
            ).fit(src.X, tr.X)
            clf = MappedSourceClassifier(
                cg, _classifier(seed), lr=1e-3, epochs=classifier_epochs, prefit=True, random_state=seed
            ).fit(src.X, src.y)
            acc["mapped"] = clf.score(te.X, te.y)
            acc["oracle"] = _fit_clf(tr.X, tr.y, seed, classifier_epochs).score(te.X, te.y)
            h = cg.history_[-1]
            rows.append(
                {
                    "shift": shift,
                    "seed": seed,
                    "accuracy": acc,
                    "seconds": time.time() - t0,
                    "final_losses": {k: v for k, v in h.items() if k != "epoch"},
                }
            )
            if keep_mappers and seed == seeds[0]:
                mappers[shift] = (cg, src.X[:10], tr.X[:10])
            if verbose:
                print(f"mapping {shift} seed {seed}: {acc}")
    out = {
        "experiment": "mapping",
        "rows": rows,
        "seeds": list(seeds),
        "shifts": list(shifts),
        "settings": {
            "shift_amounts": {s: SHIFTS[s] for s in shifts},
            "cyclegan_epochs": epochs,
            "cycle_weight": cycle_weight,
            "identity_weight": 0.0,
            "lr": lr,
            "batch_size": 64,
            "classifier": f"MLP 64-128-64-10, Adam 1e-3, {classifier_epochs} epochs",
            "n_source": 900,
            "n_target_unlabeled": 600,
            "selection": "fixed a priori, no target labels",
        },
    }
    if keep_mappers:
        out["_mappers"] = mappers
    return out


def plot_mapping(mappers: dict, path: str) -> None:
    """Per shift: 10 source images, their F(source), real target images, and G(target)."""
    from .._plots import subplots

    names = ["source x", "F(x)", "target t", "G(t)"]
    fig, axes = subplots(4 * len(mappers), 10, figsize=(10, 4.3 * len(mappers)))
    axes = np.atleast_2d(axes)
    for b, (shift, (cg, xs, xt)) in enumerate(mappers.items()):
        imgs = [xs, torch.as_tensor(cg.transform(xs)), xt, torch.as_tensor(cg.inverse_transform(xt))]
        for r, (name, im) in enumerate(zip(names, imgs)):
            for j in range(10):
                ax = axes[4 * b + r, j]
                ax.imshow(im[j, 0].numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(f"{shift}\n{name}" if r == 0 else name, fontsize=8)
    fig.suptitle("CycleGAN on digits: source images and their mapped versions (seed 0)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------------------------------
# tables, run, CLI
# ---------------------------------------------------------------------------------------------
def _cell(v):
    v = np.asarray(v, dtype=np.float64) * 100
    return f"{v.mean():.1f} ± {v.std():.1f}" if len(v) else "-"


def table_stc(result: dict) -> str:
    """Markdown: NMI (%) mean ± std over seeds, methods x problems."""
    problems = list(dict.fromkeys(r["problem"] for r in result["rows"]))
    out = ["| method | " + " | ".join(problems) + " |", "|---|" + "---|" * len(problems)]
    for m, label in STC_LABELS.items():
        cells = [_cell([r["nmi"][m] for r in result["rows"] if r["problem"] == p and m in r["nmi"]]) for p in problems]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def table_mapping(result: dict) -> str:
    """Markdown: target test accuracy (%) mean ± std over seeds, methods x shifts."""
    shifts = result["shifts"]
    head = [f"{s} ({result['settings']['shift_amounts'][s]:g})" for s in shifts]
    out = ["| classifier trained on | " + " | ".join(head) + " |", "|---|" + "---|" * len(shifts)]
    for m, label in MAP_LABELS.items():
        cells = [_cell([r["accuracy"][m] for r in result["rows"] if r["shift"] == s]) for s in shifts]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def table(result: dict) -> str:
    """The markdown table of a run_stc or run_mapping result."""
    return table_stc(result) if result["experiment"] == "stc" else table_mapping(result)


def run(seeds=(0, 1, 2), verbose: bool = False, experiment: str = "mapping", **options) -> dict:
    """experiment='stc' -> run_stc(seeds, **options); 'mapping' -> run_mapping(seeds, **options)."""
    if experiment == "stc":
        return run_stc(seeds=seeds, verbose=verbose, **options)
    if experiment == "mapping":
        return run_mapping(seeds=seeds, verbose=verbose, **options)
    raise ValueError(f"experiment must be 'stc' or 'mapping', got {experiment!r}")


def _cmd(args) -> int:
    from ..cli import _write_json

    torch.set_num_threads(1)
    seeds = tuple(seeds_of(args))
    t0 = time.time()
    if args.experiment == "stc":
        result = run_stc(seeds=seeds, verbose=not args.quiet)
    else:
        result = run_mapping(seeds=seeds, epochs=args.epochs, verbose=not args.quiet, keep_mappers=bool(args.plot))
        mappers = result.pop("_mappers", None)
        if args.plot and mappers:
            plot_mapping(mappers, args.plot)
            print(f"wrote {args.plot}")
    result["seconds"] = time.time() - t0
    print(table(result))
    _write_json(args.json, result)
    return 0


def add_parser(subparsers) -> None:
    """Registers the ``stc`` and ``mapping`` subcommands."""
    p = subparsers.add_parser(
        "stc", help="self-taught clustering on digits 0-4 with digits 5-9 as auxiliary data (NMI)"
    )
    add_common_args(p)
    p.set_defaults(func=_cmd, experiment="stc", plot=None)

    p = subparsers.add_parser(
        "mapping", help="CycleGAN domain mapping on shifted digits: source-only / mapped / oracle"
    )
    add_common_args(p, plot_help="PNG of source images and their mapped versions")
    p.add_argument("--epochs", type=int, default=30, help="CycleGAN epochs")
    p.set_defaults(func=_cmd, experiment="mapping")
