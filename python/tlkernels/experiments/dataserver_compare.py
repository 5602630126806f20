"""The dataserver experiment's comparison (Yan et al. 2020), for any partitioned store with experts:
every method selects pre-training data from the store, a network is rotation-pretrained on it and
fine-tuned on the client's labels (``dataserver_recipe``). Methods, by name:

    none                 no pre-training
    full                 the whole store
    uniform_P            a uniform random P % of the store
    ngiam_P              Ngiam et al. (2018): P % by importance weights over the labelled sources
    ours_P               the dataserver: label-free FastAdapt scores (each expert's rotation
                         accuracy on the client's images) and OutputData sampling of P %
    ours_probe_P         the same with the labelled FastAdapt scores (linear probes)
    oracle_P             a uniform P % of the relevant sources only (what perfect selection gives)

Selection precision = share of the selected examples that come from the relevant sources.
The domain-confusion check: the proxy A-distance between each partition and the client's images,
correlated with that expert's label-free score.
"""

from __future__ import annotations

import re
import time

import numpy as np

from ..adaptation import proxy_a_distance
from ..data import Dataset
from ..selection.dataserver import Store, fast_adapt_scores, output_data
from ..selection.dataserver.experts import load_expert
from .dataserver_recipe import Recipe, fine_tune, linear_probe, ngiam_selection, pretrain

__all__ = ["METHODS", "compare_methods", "select"]

METHODS = ("none", "full", "uniform_20", "uniform_40", "ngiam_20", "ours_20", "ours_40", "ours_probe_20")
_NAME = re.compile(r"^(uniform|ngiam|ours|ours_probe|oracle)_(\d{1,2})$")


def _parse(name: str) -> tuple[str, float]:
    if name in ("none", "full"):
        return name, 1.0
    m = _NAME.match(name)
    if not m or not 0 < int(m.group(2)) < 100:
        raise ValueError(
            f"method {name!r} is not one of none, full, uniform_P, ngiam_P, ours_P, ours_probe_P, oracle_P "
            "(P a percentage in 1..99)"
        )
    return m.group(1), int(m.group(2)) / 100


def select(
    methods, store: Store, relevant: np.ndarray, scores, probe_scores, target_X, recipe: Recipe, seed: int, rng
) -> dict:
    """{method: sorted store indices (int64), or None for 'none'}. relevant (N,) bool marks the
    examples of the relevant sources (oracle_P); scores / probe_scores (K,) the experts' FastAdapt
    scores; target_X (M, C, H, W) the client's images (ngiam_P); rng (numpy Generator) draws the
    uniform selections in the order of `methods`."""
    n, parts, out = store.size, store.partitions, {}
    for name in methods:
        kind, frac = _parse(name)
        budget = int(frac * n)
        if kind == "none":
            out[name] = None
        elif kind == "full":
            out[name] = np.arange(n)
        elif kind == "uniform":
            out[name] = np.sort(rng.choice(n, budget, replace=False))
        elif kind == "ngiam":
            out[name] = ngiam_selection(recipe, store, target_X, budget, seed)
        elif kind in ("ours", "ours_probe"):
            out[name] = output_data(scores if kind == "ours" else probe_scores, parts, budget, seed=seed)
        else:  # oracle
            pool = np.flatnonzero(relevant)
            gen = np.random.default_rng([seed, 1])
            out[name] = np.sort(gen.choice(pool, min(budget, pool.size), replace=False))
    return out


def _pad_check(store: Store, k: int, target_X, scores, rng, seed: int, per_partition: int) -> tuple[list, float]:
    """Proxy A-distance between (up to per_partition images of) every partition and target_X,
    and its correlation with the experts' scores (nan when either is constant)."""
    pad = []
    for i in range(k):
        members = np.flatnonzero(store.partitions == i)
        members = rng.choice(members, size=min(per_partition, members.size), replace=False)
        pad.append(proxy_a_distance(store.get(np.sort(members))[0], target_X, random_state=seed))
    ok = np.std(pad) > 0 and np.std(scores) > 0
    return pad, float(np.corrcoef(pad, scores)[0, 1]) if ok else float("nan")


def compare_methods(
    store: Store,
    tr: Dataset,
    val: Dataset,
    test: Dataset,
    n_classes: int,
    relevant_sources,
    recipe: Recipe,
    seed: int = 0,
    methods=METHODS,
    pad_per_partition: int = 300,
    probe: bool = False,
    verbose: bool = False,
) -> dict:
    """Runs every method on a partitioned store with experts (``partition_store``,
    ``train_experts``) for the client (tr: labelled training images (M, C, H, W) with labels in
    [0, n_classes); val: the validation split the fine-tuning grid is chosen on; test: the test
    split). relevant_sources: names of the store's datasets that count as relevant.

    Returns {"accuracy": {method: test accuracy}, "selection_precision": {method: share from
    the relevant sources}, "selection_shares": {method: {dataset: share}}, "selected": {method:
    count}, "expert_scores", "expert_probe_scores", "proxy_a_distance", "pad_score_correlation",
    "chosen": {method: fine-tuning choice}, "seconds" / "cpu_seconds": {phase: time}}; with
    probe=True also "linear_probe": {method: test accuracy of a logistic regression on the
    pre-trained network's features of tr} (are the features better before fine-tuning?)."""
    names = [d.name for d in store.datasets]
    missing = sorted(set(relevant_sources) - set(names))
    if missing:
        raise ValueError(f"relevant_sources {missing} are not datasets of the store ({names})")
    if store.partitions is None:
        raise ValueError("the store has no partitions: run partition_store and train_experts first")
    methods = list(methods)
    for m in methods:
        _parse(m)
    clock = _Clock()
    dsid = store.dataset_ids()
    relevant = np.isin(dsid, [i for i, d in enumerate(names) if d in relevant_sources])
    k = int(store.partitions.max()) + 1
    experts = [load_expert(store.root, i) for i in range(k)]
    # computed on the client's side: label-free rotation accuracy, and the labelled probe
    scores = fast_adapt_scores(experts, tr.X, seed=seed)
    probe_scores = fast_adapt_scores(experts, tr.X, tr.y, seed=seed)
    clock.lap("scores")
    rng = np.random.default_rng(seed)
    selections = select(methods, store, relevant, scores, probe_scores, tr.X, recipe, seed, rng)
    clock.lap("selection")
    # the paper's domain-confusion check (Fig. 3)
    pad, corr = _pad_check(store, k, tr.X, scores, rng, seed, pad_per_partition)
    clock.lap("proxy_a_distance")
    acc, chosen, precision, shares, count, probes = {}, {}, {}, {}, {}, {}
    for name, sel in selections.items():
        X = None if sel is None else store.get(sel)[0]
        net = pretrain(recipe, X, seed)
        clock.lap(f"pretrain_{name}")
        if probe:
            probes[name] = linear_probe(net, tr, test)
        acc[name], chosen[name] = fine_tune(recipe, net, tr, val, test, n_classes, seed)
        clock.lap(f"fine_tune_{name}")
        if sel is not None:
            precision[name] = float(relevant[sel].mean())
            per = np.bincount(dsid[sel], minlength=len(names)) / len(sel)
            shares[name] = {d: float(s) for d, s in zip(names, per)}
            count[name] = int(len(sel))
        if verbose:
            p = f"   precision {precision[name]:.2f}" if name in precision else ""
            print(f"  {name:13s} accuracy {acc[name]:.3f}{p}", flush=True)
    return {
        "accuracy": acc,
        "selection_precision": precision,
        "selection_shares": shares,
        "selected": count,
        "expert_scores": scores.tolist(),
        "expert_probe_scores": probe_scores.tolist(),
        "proxy_a_distance": pad,
        "pad_score_correlation": corr,
        "chosen": chosen,
        **({"linear_probe": probes} if probe else {}),
        "seconds": clock.wall,
        "cpu_seconds": clock.cpu,
    }


class _Clock:
    """Wall and CPU (process) seconds per named phase."""

    def __init__(self):
        self.wall, self.cpu = {}, {}
        self._t, self._c = time.perf_counter(), time.process_time()

    def lap(self, name: str) -> None:
        t, c = time.perf_counter(), time.process_time()
        self.wall[name], self.cpu[name] = t - self._t, c - self._c
        self._t, self._c = t, c
