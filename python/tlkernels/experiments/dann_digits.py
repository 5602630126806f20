"""DANN (Ganin & Lempitsky 2015) on SynDigits 0-9 -> MNIST 0-9: the printed -> handwritten
benchmark with an unlabelled target, on the ``digits_cnn`` backbone.

Per seed: MNIST's 5,000-image subset is split (stratified) into an unlabelled adaptation set and
a test set; the source is a fixed set of rendered digits. For every lam_max of the grid
(0 = source only) a forward model is trained on 80% of the source (+ the unlabelled target) and
scored by reverse validation (Zhong et al. 2010; a reverse model trained on its target
pseudo-labels, scored on the held-out 20% of the source): no target label is read. Rows:
source only (lam_max 0), DANN (the lam_max reverse validation picks), DANN at lam_max 1 (the
textbook setting), and the target oracle (the same CNN trained on the labelled adaptation set).
"""

from __future__ import annotations

import time

import torch

from ..adaptation import DANN
from ..adaptation.reverse_validation import reverse_validation
from ..backbones import digits_cnn
from ..data import load_mnist, make_syndigits, standardize_images, stratified_split

__all__ = ["dann_alignment_diagnostic", "run_dann_digits"]


def run_dann_digits(seed: int = 0, *, n_source: int = 5000, n_test: int = 2500, n_adapt: int | None = None,
                    epochs: int = 4, lam_grid=(0.0, 0.3, 1.0), widths=(16, 32, 64), source_style: str = "syn",
                    device="cpu", cache_dir=None) -> dict:  # fmt: skip
    """One seed. n_adapt: unlabelled target images (default: all MNIST images not in the test set).
    Returns {"accuracy": {source_only, dann, dann_lam1, target_oracle} (test, MNIST),
    "rv_scores": {lam_max: score}, "rv_choice", "source_heldout_accuracy", "seconds",
    "cpu_seconds", ...}. Every model: Adam lr 1e-3 with Ganin's annealing, batch 64, `epochs`."""
    t0, c0 = time.perf_counter(), time.process_time()
    src = make_syndigits(n_source, range(10), source_style, 0, cache_dir=cache_dir)
    Xs, ys = standardize_images(src.X), src.y
    mn = load_mnist()
    test, adapt = stratified_split(mn, [n_test, n_adapt], random_state=seed)
    Xt, yt = standardize_images(adapt.X), adapt.y
    Xtest = standardize_images(test.X)

    def make(lam_max: float = 0.0) -> DANN:
        torch.manual_seed(seed)
        return DANN(digits_cnn(widths=widths), 10, lam_max=float(lam_max), lr=1e-3, batch_size=64, epochs=epochs,
                    random_state=seed, device=device)  # fmt: skip

    scores, test_acc, heldout = {}, {}, {}
    for lam in lam_grid:
        r = reverse_validation(lambda lam=lam: make(lam), Xs, ys, Xt, random_state=seed, details=True)
        key = f"{lam:g}"
        scores[key], heldout[key] = r["score"], r["source_accuracy"]
        test_acc[key] = float(r["forward"].score(Xtest.to(device), test.y.to(device)))
    best = max(scores, key=lambda k: (scores[k], -float(k)))  # ties: the smaller lam_max
    oracle = make(0.0).fit(Xt, yt, Xt)
    acc = {"source_only": test_acc.get("0", float("nan")), "dann": test_acc[best],
           "dann_lam1": test_acc.get("1", float("nan")),
           "target_oracle": float(oracle.score(Xtest.to(device), test.y.to(device)))}  # fmt: skip
    return {"experiment": "dann-digits", "source": f"SynDigits '{source_style}' 0-9", "target": "MNIST 0-9",
            "seed": seed, "n_source": n_source, "n_adapt": len(adapt), "n_test": n_test, "epochs": epochs,
            "widths": list(widths), "lam_grid": list(lam_grid), "accuracy": acc, "rv_scores": scores,
            "rv_choice": float(best), "test_accuracy_by_lam": test_acc, "source_heldout_accuracy": heldout,
            "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "threads": torch.get_num_threads()}  # fmt: skip


def dann_alignment_diagnostic(seed: int = 0, *, epochs: int = 8, lam_grid=(0.0, 0.3, 1.0), n_source: int = 5000,
                              n_test: int = 2500, n_adapt: int | None = None, widths=(16, 32, 64),
                              source_style: str = "syn", cache_dir=None) -> dict:  # fmt: skip
    """Why DANN does or does not help on SynDigits 0-9 -> MNIST 0-9: for every lam_max (no
    reverse validation, the whole source), after `epochs`, per epoch the MNIST test accuracy of
    the source classifier and, at the end, what the features hold:

    - "domain_accuracy": the domain head's balanced accuracy on 2,000 source / target images (0.5:
      the marginals look aligned to it);
    - "target_probe": the test accuracy of a logistic regression fitted on the features of the
      labelled adaptation images (n_adapt; default all MNIST images not in the test set) (an oracle: it reads target labels) - how much target class
      structure the features keep, whatever the source classifier does with them.

    Returns {"by_lam": {lam: {"test_by_epoch": [...], "test", "domain_accuracy", "target_probe"}},
    "seed", "epochs", "source_style", "cpu_seconds"}."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    c0 = time.process_time()
    src = make_syndigits(n_source, range(10), source_style, 0, cache_dir=cache_dir)
    Xs, ys = standardize_images(src.X), src.y
    test, adapt = stratified_split(load_mnist(), [n_test, n_adapt], random_state=seed)
    Xt, Xtest = standardize_images(adapt.X), standardize_images(test.X)
    out = {}
    for lam in lam_grid:
        torch.manual_seed(seed)
        m = DANN(digits_cnn(widths=widths), 10, lam_max=float(lam), lr=1e-3, batch_size=64, epochs=epochs,
                 random_state=seed, snapshot_epochs=list(range(1, epochs + 1))).fit(Xs, ys, Xt)  # fmt: skip
        by_epoch = [float(m.use_snapshot(e).score(Xtest, test.y)) for e in range(1, epochs + 1)]
        ft, fte = m.transform(Xt).numpy(), m.transform(Xtest).numpy()
        scaler = StandardScaler().fit(ft)
        probe = LogisticRegression(max_iter=2000).fit(scaler.transform(ft), adapt.y.numpy())
        out[f"{lam:g}"] = {"test_by_epoch": by_epoch, "test": by_epoch[-1],
                           "domain_accuracy": m.domain_accuracy(Xs[:2000], Xt[:2000]),
                           "target_probe": float(probe.score(scaler.transform(fte), test.y.numpy()))}  # fmt: skip
    return {"seed": seed, "epochs": epochs, "source_style": source_style, "n_source": n_source, "by_lam": out,
            "cpu_seconds": time.process_time() - c0}  # fmt: skip
