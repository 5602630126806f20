"""DANN on digits domain shifts, with source-only and target-oracle baselines at the same budget,
and reverse validation's label-free choice of (lam_max, stopping epoch) against an oracle's.

Split (per seed): the 1,797 digits are split (stratified) into a source half (clean images,
labelled) and a target half that is shifted; the target half is split again into the unlabeled
adaptation set (which the oracle may use *with* labels) and a test set used only for the
reported accuracies.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ..adaptation import DANN, proxy_a_distance, select_by_reverse_validation
from ..data import load_digits, shift_images, stratified_split

__all__ = ["SHIFTS", "make_shift", "mlp_extractor", "run_shift"]

# name -> function (X (N, 1, 8, 8), rng) -> shifted X
SHIFTS = {
    "inversion": lambda X, rs: shift_images(X, "inversion", 1.0),
    "rotation": lambda X, rs: shift_images(X, "rotation", 30.0),
    "blur_noise": lambda X, rs: shift_images(shift_images(X, "blur", 1.0), "noise", 0.2, random_state=rs),
    "intensity": lambda X, rs: 0.5 * X + 0.3,
    "translation": lambda X, rs: shift_images(X, "translation", 1),
}


def make_shift(shift: str, seed: int, n_target_test: int = 300):
    """(source, target_train, target_test) Datasets with flat X (N, 64); the target parts shifted."""
    if shift not in SHIFTS:
        raise ValueError(f"shift must be one of {sorted(SHIFTS)}, got {shift!r}")
    d = load_digits(images=True)
    src, tgt = stratified_split(d, [len(d) // 2, None], random_state=seed)
    tgt.X = SHIFTS[shift](tgt.X, seed + 1000)
    t_train, t_test = stratified_split(tgt, [None, n_target_test], random_state=seed + 1)
    for part in (src, t_train, t_test):
        part.X = part.X.reshape(len(part), -1).contiguous()
    return src, t_train, t_test


def mlp_extractor(in_dim: int = 64, hidden=(128, 64), seed: int = 0) -> nn.Sequential:
    """Linear + ReLU layers, output (N, hidden[-1])."""
    torch.manual_seed(seed)
    layers, d = [], in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    return nn.Sequential(*layers)


def run_shift(
    shift: str,
    seed: int = 0,
    lam_grid=(0.0, 0.1, 0.3, 1.0),
    epoch_grid=(20, 40),
    dann_kwargs=None,
    verbose: bool = False,
) -> dict:
    """One seed of one shift. Source only (lam_max = 0, the full budget) / DANN with lam_max and
    the stopping epoch chosen by reverse validation (no target label read) / Target oracle
    (trained on the labelled target adaptation set). Also the test accuracy of every grid point,
    to compare reverse validation's choice with the choice an oracle with target labels would
    make. Returns a JSON-able dict."""
    t0 = time.time()
    src, tt, test = make_shift(shift, seed)
    kw = dict(lr=1e-3, batch_size=64, random_state=seed)
    kw.update(dann_kwargs or {})
    epoch_grid = sorted(epoch_grid)
    e_max = epoch_grid[-1]

    def make(lam_max):
        return DANN(mlp_extractor(seed=seed), 10, lam_max=lam_max, **kw)

    rv = select_by_reverse_validation(
        make,
        [dict(lam_max=l) for l in lam_grid],
        src.X,
        src.y,
        tt.X,
        epochs=epoch_grid,
        random_state=seed,
        verbose=verbose,
    )
    # the final models on the whole source, and every grid point's target test accuracy
    test_acc, dom_acc = {}, {}
    for lam in lam_grid:
        m = make(lam).set_params(snapshot_epochs=epoch_grid, epochs=e_max)
        m.fit(src.X, src.y, tt.X)
        for e in epoch_grid:
            m.use_snapshot(e)
            test_acc[_key(lam, e)] = m.score(test.X, test.y)
            dom_acc[_key(lam, e)] = m.history_[e - 1]["domain_acc"]
    best = rv["best"]
    oracle = max(rv["settings"], key=lambda s: test_acc[_key(s["lam_max"], s["epochs"])])
    source_only = (
        test_acc[_key(0.0, e_max)]
        if 0.0 in lam_grid
        else make(0.0).set_params(epochs=e_max).fit(src.X, src.y, tt.X).score(test.X, test.y)
    )
    target_oracle = make(0.0).set_params(epochs=e_max).fit(tt.X, tt.y, tt.X).score(test.X, test.y)
    return dict(
        shift=shift,
        seed=seed,
        lam_grid=list(lam_grid),
        epoch_grid=epoch_grid,
        accuracy=dict(
            source_only=source_only, dann=test_acc[_key(best["lam_max"], best["epochs"])], target_oracle=target_oracle
        ),
        dann_textbook=test_acc.get(_key(1.0, e_max)),
        rv_choice=best,
        oracle_choice=oracle,
        oracle_choice_accuracy=test_acc[_key(oracle["lam_max"], oracle["epochs"])],
        rv_scores={_key(s["lam_max"], s["epochs"]): v for s, v in zip(rv["settings"], rv["scores"])},
        test_accuracy_by_setting=test_acc,
        domain_accuracy_by_setting=dom_acc,
        proxy_a_distance_input=proxy_a_distance(src.X, tt.X, random_state=seed),
        seconds=time.time() - t0,
    )


def _key(lam: float, epoch: int) -> str:
    return f"lam={lam:g},epochs={epoch}"
