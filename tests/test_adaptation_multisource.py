"""Untrusted sources and multi-task with unlabeled tasks: the bound's weights and known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tlkernels.adaptation import (
    MultiTaskUnlabeled,
    UntrustedSources,
    bound_weights,
    choose_tasks_to_label,
    pairwise_discrepancies,
)


def test_bound_weights():
    d, m = np.array([0.0, 0.05, 0.6]), np.array([20, 200, 200])
    a = bound_weights(d, m, lam=1.0)
    assert abs(a.sum() - 1) < 1e-9 and (a >= 0).all()
    assert a[2] < 1e-6 and a[1] > a[0]  # share from the big close source, not the far one
    assert bound_weights(d, m, lam=0.0)[0] == 1.0  # no sample-size term: the closest source only
    np.testing.assert_allclose(bound_weights(np.zeros(3), m, lam=1.0), m / m.sum(), atol=1e-3)
    with pytest.raises(ValueError, match="sizes"):
        bound_weights(d, -m)


def sample(n, rule, seed, mean=(0.0, 0.0)):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 2, generator=g, dtype=torch.float64) + torch.tensor(mean, dtype=torch.float64)
    return X, rule(X)


def test_untrusted_sources_known_answer():
    def good(X):
        return (X[:, 0] > 0).long()

    def bad(X):
        return (X[:, 1] > 0).long()  # another labelling rule on the same inputs

    def flipped(X):
        return (X[:, 0] <= 0).long()

    sources = [
        sample(200, good, 1),
        sample(200, good, 2),
        sample(200, bad, 3),
        sample(200, flipped, 4),
        sample(200, bad, 5),
    ]
    target = sample(40, good, 6)
    test = sample(1000, good, 7)
    m = UntrustedSources().fit(sources, target)
    assert m.discrepancies_[:2].max() < 0.25 and m.discrepancies_[2:5].min() > 0.4
    assert m.weights_[2:5].sum() < 1e-3 and m.weights_[:2].sum() > 0.6
    assert m.score(*test) > 0.95
    pooled = UntrustedSources(lam=1e6).fit(sources, target)  # ~ uniform over examples
    assert pooled.score(*test) < m.score(*test) - 0.1


def test_multitask_with_unlabeled_tasks_known_answer():
    # two groups of tasks: inputs around (-3, 0) labelled by x2 > 0, inputs around (3, 0) by x1 > 3
    def ra(X):
        return (X[:, 1] > 0).long()

    def rb(X):
        return (X[:, 0] > 3).long()

    tasks = [sample(150, ra, s, (-3, 0)) for s in range(3)] + [sample(150, rb, s, (3, 0)) for s in range(3, 6)]
    X = [t[0] for t in tasks]
    D = pairwise_discrepancies(X, kind="proxy_a")
    assert D[:3, :3].max() < 0.3 and D[:3, 3:].min() > 0.9
    chosen = choose_tasks_to_label(D, 2)
    assert len(chosen) == 2 and chosen[0] < 3 <= chosen[1]  # one task of each group
    m = MultiTaskUnlabeled(lam=0.3).fit(X, {i: tasks[i][1] for i in chosen}, discrepancies=D)
    assert (m.weights_[:3, 0] > 0.99).all() and (m.weights_[3:, 1] > 0.99).all()
    for t in range(6):
        Xt, yt = sample(500, ra if t < 3 else rb, 100 + t, (-3, 0) if t < 3 else (3, 0))
        assert m.score(t, Xt, yt) > 0.9
    assert pairwise_discrepancies(X[:2], kind="linear")[0, 1] < 0.3
