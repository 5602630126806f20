"""Zero-shot learning on digits: seen classes 0-6 for training, unseen 7-9 for testing, with the
hand-written class-attribute table ``tlkernels.zeroshot.DIGIT_ATTRIBUTES``.

Per seed: the seen digits are split (stratified) 70 / 30 into training and a seen test part (used
only in the generalised setting); the unseen digits into a pool of 5 labelled examples per class
(used only by the few-shot baselines) and the unseen test set (the rest), the same for every row.
All methods use the same features: the 64 raw pixels in [0, 1].

Hyper-parameters are chosen on the seen training data only: 6 of the 7 seen classes, in a
seed-dependent order, form 3 pairs; each pair in turn is held out as pseudo-unseen, the method is
trained on the other 5 classes and scored 2-way among the pair; the grid point with the best mean
accuracy over the 3 folds is refitted on all 7 seen classes. The few-shot baselines pick C the same
way (k labelled examples of each held-out class, scored on the rest of them). Test labels of 7-9
are only used for the reported numbers.

Rows: chance; DAP; bilinear embedding + hinge; ConSE; logistic regression trained on k = 1, 2, 5
labelled examples per unseen class. Columns: 3-way accuracy among 7, 8, 9, and the generalised
10-way setting (candidates = all 10 classes; test = seen test part + unseen test set): accuracy on
unseen (u) and seen (s) test examples and their harmonic mean H. The generalised few-shot row is
one logistic regression on the seen training data plus the k examples per unseen class.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from ..commands.common import add_common_args, seeds_of, write_outputs
from ..data import Dataset, class_split, load_digits, stratified_split
from ..zeroshot import DAP, DIGIT_ATTRIBUTES, ConSE, EmbeddingZeroShot

__all__ = ["run", "table", "plot", "add_parser", "LABELS"]

SEEN, UNSEEN = tuple(range(7)), (7, 8, 9)
SHOTS = (1, 2, 5)
LABELS = {
    "chance": "Chance",
    "dap": "DAP (attribute classifiers)",
    "embedding": "Bilinear embedding + hinge",
    "conse": "ConSE",
}
LABELS.update({f"fewshot_{k}": f"Few-shot logistic, k = {k} / unseen class" for k in SHOTS})
GRIDS = {
    "dap": [{"C": C, "prior": p} for C in (0.01, 0.1, 1.0, 10.0) for p in ("empirical", "uniform")],
    "embedding": [{"margin": m, "weight_decay": wd} for m in (0.1, 0.5, 1.0, 2.0) for wd in (1e-4, 1e-2)],
    "conse": [{"C": C, "T": T, "signed": s} for C in (0.1, 1.0, 10.0) for T in (1, 2, 3, 5) for s in (False, True)],
    "fewshot": [{"C": C} for C in (0.1, 1.0, 10.0)],
}


def _logistic(C, seed):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=2000, random_state=seed)


def _np(d: Dataset):
    return d.X.numpy().astype(np.float64), d.y.numpy()


class _Setting:
    """The per-seed splits (original digit labels kept: they index the attribute table)."""

    def __init__(self, seed: int, fewshot_pool: int = 5):
        digits = load_digits()
        seen = class_split(digits, SEEN, relabel=False)
        unseen = class_split(digits, UNSEEN, relabel=False)
        n_tr = int(round(0.7 * len(seen)))
        tr, te = stratified_split(seen, [n_tr, None], random_state=seed)
        pool, ute = stratified_split(unseen, [fewshot_pool * len(UNSEEN), None], random_state=seed + 1000)
        self.Xtr, self.ytr = _np(tr)
        self.Xse, self.yse = _np(te)
        self.Xpool, self.ypool = _np(pool)
        self.Xte, self.yte = _np(ute)
        rng = np.random.default_rng(seed)
        self.folds = rng.permutation(len(SEEN))[:6].reshape(3, 2)  # pseudo-unseen pairs
        self.pool_order = rng.permutation(len(self.ypool))  # which pool examples are the first k
        self.seed = seed

    def shots(self, k: int):
        """k labelled examples of every unseen class, from the pool in a seed-dependent order."""
        idx = [i for c in UNSEEN for i in [j for j in self.pool_order if self.ypool[j] == c][:k]]
        return self.Xpool[idx], self.ypool[idx]


def _make(method: str, p: dict, seed: int, epochs: int):
    if method == "dap":
        return DAP(C=p["C"], prior=p["prior"], random_state=seed)
    if method == "embedding":
        return EmbeddingZeroShot(
            margin=p["margin"], weight_decay=p["weight_decay"], lr=1e-2, epochs=epochs, random_state=seed
        )
    raise ValueError(method)


def _validate(s: _Setting, method: str, epochs: int) -> tuple[dict, float, list]:
    """The grid point with the best mean pseudo-unseen accuracy over the 3 seen-class folds."""
    scores = np.zeros(len(GRIDS[method]))
    for pair in s.folds:
        held = np.isin(s.ytr, pair)
        Xa, ya, Xh, yh = s.Xtr[~held], s.ytr[~held], s.Xtr[held], s.ytr[held]
        if method == "conse":
            clfs = {}
            for i, p in enumerate(GRIDS[method]):
                if p["C"] not in clfs:
                    clfs[p["C"]] = _logistic(p["C"], s.seed).fit(Xa, ya)
                con = ConSE(clfs[p["C"]], T=p["T"], signed=p["signed"], prefit=True).fit(None, None, DIGIT_ATTRIBUTES)
                scores[i] += con.score(Xh, yh, candidate_classes=pair)
        else:
            for i, p in enumerate(GRIDS[method]):
                est = _make(method, p, s.seed, epochs).fit(Xa, ya, DIGIT_ATTRIBUTES)
                scores[i] += est.score(Xh, yh, candidate_classes=pair)
    scores /= len(s.folds)
    best = int(np.argmax(scores))
    return GRIDS[method][best], float(scores[best]), scores.tolist()


def _validate_fewshot(s: _Setting, k: int) -> tuple[dict, float]:
    """C for k-shot logistic regression, simulated on the pseudo-unseen pairs of seen classes."""
    rng = np.random.default_rng(s.seed + 7 * k)
    scores = np.zeros(len(GRIDS["fewshot"]))
    for pair in s.folds:
        idx = [rng.permutation(np.flatnonzero(s.ytr == c)) for c in pair]
        tr = np.concatenate([i[:k] for i in idx])
        va = np.concatenate([i[k:] for i in idx])
        for j, p in enumerate(GRIDS["fewshot"]):
            scores[j] += _logistic(p["C"], s.seed).fit(s.Xtr[tr], s.ytr[tr]).score(s.Xtr[va], s.ytr[va])
    scores /= len(s.folds)
    best = int(np.argmax(scores))
    return GRIDS["fewshot"][best], float(scores[best])


def _gzsl(pred_seen: np.ndarray, pred_unseen: np.ndarray, s: _Setting) -> dict:
    u = float((pred_unseen == s.yte).mean())
    a = float((pred_seen == s.yse).mean())
    return {"gzsl_unseen": u, "gzsl_seen": a, "gzsl_h": 0.0 if u + a == 0 else 2 * u * a / (u + a)}


def _run_seed(s: _Setting, methods, epochs: int) -> list[dict]:
    rows = [
        {
            "method": "chance",
            "seed": s.seed,
            "unseen_accuracy": 1 / len(UNSEEN),
            "gzsl_unseen": 0.1,
            "gzsl_seen": 0.1,
            "gzsl_h": 0.1,
            "params": {},
            "val_accuracy": None,
            "seconds": 0.0,
        }
    ]
    everything = np.arange(10)
    for m in methods:
        t0 = time.time()
        if m.startswith("fewshot_"):
            k = int(m.split("_")[1])
            p, val = _validate_fewshot(s, k)
            Xk, yk = s.shots(k)
            acc = _logistic(p["C"], s.seed).fit(Xk, yk).score(s.Xte, s.yte)
            gen = _logistic(p["C"], s.seed).fit(np.vstack([s.Xtr, Xk]), np.concatenate([s.ytr, yk]))
            g = _gzsl(gen.predict(s.Xse), gen.predict(s.Xte), s)
        else:
            p, val, _ = _validate(s, m, epochs)
            if m == "conse":
                est = ConSE(T=p["T"], C=p["C"], signed=p["signed"], random_state=s.seed)
            else:
                est = _make(m, p, s.seed, epochs)
            est.fit(s.Xtr, s.ytr, DIGIT_ATTRIBUTES)
            acc = est.score(s.Xte, s.yte)  # default candidates = the unseen classes 7, 8, 9
            g = _gzsl(est.predict(s.Xse, everything), est.predict(s.Xte, everything), s)
        rows.append(
            {
                "method": m,
                "seed": s.seed,
                "unseen_accuracy": float(acc),
                **g,
                "params": p,
                "val_accuracy": val,
                "seconds": time.time() - t0,
            }
        )
    return rows


def run(seeds=(0, 1, 2), verbose: bool = False, methods=None, epochs: int = 30, **options) -> dict:
    """The table. methods: subset of ['dap', 'embedding', 'conse', 'fewshot_1', 'fewshot_2',
    'fewshot_5'] (default all); epochs: training epochs of the bilinear embedding; options:
    ``grids`` = {method: [params ...]} to override the validation grids (smoke tests).
    Returns {"rows": [{method, seed, unseen_accuracy, gzsl_unseen, gzsl_seen, gzsl_h, params,
    val_accuracy, seconds}], "methods", "seeds", "settings"}."""
    from sklearn.exceptions import ConvergenceWarning
    from tqdm.auto import tqdm

    all_methods = ["dap", "embedding", "conse"] + [f"fewshot_{k}" for k in SHOTS]
    methods = all_methods if methods is None else list(methods)
    for m in methods:
        if m not in all_methods:
            raise ValueError(f"methods must be a subset of {all_methods}, got {m!r}")
    unknown = set(options) - {"grids"}
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}; the only option is 'grids'")
    saved = {k: list(v) for k, v in GRIDS.items()}
    GRIDS.update(options.get("grids", {}))
    torch.set_num_threads(1)
    rows, t0 = [], time.time()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for seed in tqdm(list(seeds), desc="zeroshot", disable=not verbose):
                rows += _run_seed(_Setting(int(seed)), methods, epochs)
        grids = {k: list(v) for k, v in GRIDS.items()}
    finally:
        GRIDS.clear()
        GRIDS.update(saved)
    return {
        "rows": rows,
        "methods": ["chance"] + methods,
        "seeds": [int(s) for s in seeds],
        "settings": {
            "seen": list(SEEN),
            "unseen": list(UNSEEN),
            "features": "64 raw pixels",
            "seen_train_fraction": 0.7,
            "fewshot_pool_per_class": 5,
            "embedding_epochs": epochs,
            "validation": "3 folds of 2 pseudo-unseen seen classes",
            "grids": grids,
        },
        "seconds": time.time() - t0,
    }


def _cell(rows, key):
    v = np.array([r[key] for r in rows], dtype=np.float64) * 100
    return f"{v.mean():.1f} ± {v.std():.1f}"


def table(result: dict) -> str:
    """Markdown: mean ± std over seeds (%) of the 3-way unseen accuracy and the generalised u / s / H."""
    out = ["| method | unseen 3-way (7/8/9) | GZSL unseen | GZSL seen | GZSL H |", "|---|---|---|---|---|"]
    for m in result["methods"]:
        rows = [r for r in result["rows"] if r["method"] == m]
        out.append(
            f"| {LABELS[m]} | "
            + " | ".join(_cell(rows, k) for k in ("unseen_accuracy", "gzsl_unseen", "gzsl_seen", "gzsl_h"))
            + " |"
        )
    return "\n".join(out)


def plot(result: dict, path: str) -> None:
    """Unseen 3-way accuracy of the few-shot baselines against k, the zero-shot methods as bands."""
    from .._plots import subplots

    def stats(m):
        v = np.array([r["unseen_accuracy"] for r in result["rows"] if r["method"] == m]) * 100
        return v.mean(), v.std()

    fig, ax = subplots(figsize=(6, 4))
    ks = [k for k in SHOTS if f"fewshot_{k}" in result["methods"]]
    if ks:
        ms = np.array([stats(f"fewshot_{k}") for k in ks])
        ax.errorbar(ks, ms[:, 0], ms[:, 1], marker="o", color="k", label="few-shot logistic", capsize=3)
    for m, c in (("dap", "C0"), ("embedding", "C1"), ("conse", "C2"), ("chance", "0.6")):
        if m in result["methods"]:
            mu, sd = stats(m)
            ax.axhline(mu, color=c, label=f"{LABELS[m]} (zero-shot)" if m != "chance" else "chance")
            ax.axhspan(mu - sd, mu + sd, color=c, alpha=0.15)
    ax.set_xlabel("labelled examples per unseen class (few-shot)")
    ax.set_ylabel("accuracy on unseen digits 7/8/9, 3-way (%)")
    ax.set_title(f"Zero-shot vs few-shot on digits (seeds {result['seeds']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _cmd(args) -> int:
    seeds = seeds_of(args)
    result = run(seeds=seeds, verbose=not args.quiet, epochs=args.epochs)
    print(f"digits: seen 0-6 -> unseen 7-9, accuracy (%) mean ± std over seeds {seeds}; {result['seconds']:.0f} s")
    print(table(result))
    return write_outputs(args, result, plot)


def add_parser(subparsers) -> None:
    """Registers ``tlkernels zeroshot``."""
    p = subparsers.add_parser("zeroshot", help="zero-shot digits 0-6 -> 7-9: DAP, bilinear hinge, ConSE, few-shot")
    add_common_args(p, plot_help="zero-shot accuracy against few-shot (PNG)")
    p.add_argument("--epochs", type=int, default=30, help="epochs of the bilinear embedding")
    p.set_defaults(func=_cmd)
