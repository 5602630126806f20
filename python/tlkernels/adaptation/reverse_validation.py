"""Reverse validation (Zhong et al. ECML 2010; Bruzzone & Marconcini TPAMI 2010): label-free model
selection for unsupervised domain adaptation, Lampert 2019's steps a-e:

  a) train the DA method on labelled source -> unlabeled target;
  b) predict pseudo-labels for the target data;
  c) train the same DA method in reverse: pseudo-labelled target -> unlabeled source;
  d) (model selection inside c: the reverse model uses the setting under evaluation);
  e) the reverse model's accuracy on held-out labelled source data is the score.

No target label is ever read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..data import Dataset, stratified_split

__all__ = ["reverse_validation", "select_by_reverse_validation"]


def _split_source(Xs, ys, val_fraction: float, random_state):
    Xs, ys = torch.as_tensor(Xs), torch.as_tensor(ys).long()
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = max(1, int(round(val_fraction * len(ys))))
    tr, va = stratified_split(Dataset(Xs, ys), [None, n_val], random_state=random_state)
    return tr, va


def reverse_validation(
    make_model: Callable[[], Any], Xs, ys, Xt, val_fraction: float = 0.2, random_state=0, details: bool = False
):
    """The reverse-validation score of the DA method ``make_model()`` (higher is better).

    make_model: returns an unfitted estimator with ``fit(Xs, ys, Xt)`` and ``predict(X)``.
    Xs (N, *), ys (N,), Xt (M, *). A stratified `val_fraction` of the source is held out: the
    forward model trains on the rest; the reverse model trains on (Xt, pseudo-labels) adapting to
    the whole source input set (unlabeled), and is scored on the held-out source labels.
    details=True returns a dict: score, the forward model's held-out source accuracy
    (``source_accuracy``), the pseudo-label class histogram and both models.
    """
    tr, va = _split_source(Xs, ys, val_fraction, random_state)
    Xt = torch.as_tensor(Xt)
    forward = make_model().fit(tr.X, tr.y, Xt)  # a
    pseudo = torch.as_tensor(forward.predict(Xt)).long().cpu()  # b
    Xs_all = torch.cat([tr.X, va.X])
    reverse = make_model().fit(Xt, pseudo, Xs_all)  # c, d
    score = float((torch.as_tensor(reverse.predict(va.X)).cpu() == va.y).float().mean())  # e
    if not details:
        return score
    src_acc = float((torch.as_tensor(forward.predict(va.X)).cpu() == va.y).float().mean())
    return dict(
        score=score,
        source_accuracy=src_acc,
        pseudo_label_counts=np.bincount(pseudo.numpy()).tolist(),
        forward=forward,
        reverse=reverse,
    )


def _reverse_scores_over_epochs(make_model, epochs: Sequence[int], tr, va, Xt) -> tuple[list, list]:
    """Steps a-e for every stopping epoch from ONE forward run (snapshots) and one reverse run
    per epoch. Every reverse run trains for max(epochs): the stopping epoch is a choice about the
    forward model, and a shorter reverse run would mostly measure its own under-training."""
    epochs = sorted(set(int(e) for e in epochs))
    forward = make_model().set_params(snapshot_epochs=epochs, epochs=epochs[-1])
    forward.fit(tr.X, tr.y, Xt)
    Xs_all = torch.cat([tr.X, va.X])
    scores, src = [], []
    for e in epochs:
        forward.use_snapshot(e)
        pseudo = torch.as_tensor(forward.predict(Xt)).long().cpu()
        src.append(float((torch.as_tensor(forward.predict(va.X)).cpu() == va.y).float().mean()))
        reverse = make_model().set_params(epochs=epochs[-1]).fit(Xt, pseudo, Xs_all)
        scores.append(float((torch.as_tensor(reverse.predict(va.X)).cpu() == va.y).float().mean()))
    return scores, src


def select_by_reverse_validation(
    make_model: Callable[..., Any],
    settings: Sequence[dict],
    Xs,
    ys,
    Xt,
    epochs: Sequence[int] | None = None,
    val_fraction: float = 0.2,
    random_state=0,
    verbose: bool = False,
) -> dict:
    """Scores every setting by ``reverse_validation(lambda: make_model(**setting), ...)``.

    settings: list of keyword dicts (e.g. ``[{'lam_max': 0.0}, {'lam_max': 0.3}, ...]``; include
    lam_max = 0, source-only, so that adaptation is only chosen when it scores better).
    epochs: optional list of stopping epochs crossed with every setting; then ``make_model(**s)``
    must return an estimator with ``epochs`` and ``snapshot_epochs`` parameters (``set_params``)
    and ``use_snapshot(e)`` (as ``DANN``): one forward run per setting serves every epoch (its
    snapshots give the pseudo-labels), each reverse run trains for max(epochs). The returned settings then carry 'epochs'.
    Returns dict(best=setting, best_index, settings=[...], scores=[float per setting],
    source_accuracy=[forward model's held-out source accuracy per setting]); ties go to the
    earlier setting (put the more conservative settings first).
    """
    if not settings:
        raise ValueError("settings must be a non-empty list of keyword dicts")
    tr, va = _split_source(Xs, ys, val_fraction, random_state)
    Xt = torch.as_tensor(Xt)
    out_settings, scores, src = [], [], []
    it = settings
    if verbose:
        from tqdm.auto import tqdm

        it = tqdm(settings, desc="reverse validation", unit="setting")
    for s in it:
        if epochs:
            sc, sa = _reverse_scores_over_epochs(lambda: make_model(**s), epochs, tr, va, Xt)
            out_settings += [dict(s, epochs=e) for e in sorted(set(int(e) for e in epochs))]
        else:
            forward = make_model(**s).fit(tr.X, tr.y, Xt)
            pseudo = torch.as_tensor(forward.predict(Xt)).long().cpu()
            reverse = make_model(**s).fit(Xt, pseudo, torch.cat([tr.X, va.X]))
            sc = [float((torch.as_tensor(reverse.predict(va.X)).cpu() == va.y).float().mean())]
            sa = [float((torch.as_tensor(forward.predict(va.X)).cpu() == va.y).float().mean())]
            out_settings.append(dict(s))
        scores += sc
        src += sa
    best = int(np.argmax(scores))
    return dict(best=out_settings[best], best_index=best, settings=out_settings, scores=scores, source_accuracy=src)
