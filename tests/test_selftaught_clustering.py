"""Self-taught clustering (Dai et al. 2008): known answers on small problems."""

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score as nmi

from tlkernels import KMeans
from tlkernels.experiments.selftaught_mapping import make_shared_feature_problem
from tlkernels.transfer.selftaught_clustering import SelfTaughtClustering, coclustering_objective

torch.set_num_threads(1)


def _mi(P):
    px, pz = P.sum(1, keepdims=True), P.sum(0, keepdims=True)
    m = P > 0
    return float((P[m] * np.log(P[m] / (px @ pz)[m])).sum())


def _blocks(P, r, c, k, l):
    return np.eye(k)[r].T @ P @ np.eye(l)[c]


def _dhillon_step_changes(X, r, c, k, l):
    """Dhillon et al.'s row and column updates, written independently in numpy; returns the
    number of labels either would change (0 at a fixed point)."""
    P = X / X.sum()
    px, pz = P.sum(1), P.sum(0)
    B = _blocks(P, r, c, k, l)
    bx, bz = B.sum(1), B.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        qz = (B / bx[:, None])[:, c] * (pz / bz[c])[None]  # q(z | x~) (k, M)
        pzx = P / px[:, None]
        row_cost = np.array(
            [
                [np.sum(np.where(pzx[i] > 0, pzx[i] * (np.log(pzx[i]) - np.log(qz[j])), 0.0)) for j in range(k)]
                for i in range(len(r))
            ]
        )
        qx = (px / bx[r])[:, None] * (B / bz[None])[r]  # q(x | z~) (N, l)
        pxz = P / pz[None]
        col_cost = np.array(
            [
                [
                    pz[z] * np.sum(np.where(pxz[:, z] > 0, pxz[:, z] * (np.log(pxz[:, z]) - np.log(qx[:, j])), 0))
                    for j in range(l)
                ]
                for z in range(len(c))
            ]
        )
    row_cost = np.nan_to_num(row_cost, nan=np.inf)
    col_cost = np.nan_to_num(col_cost, nan=np.inf)
    rows = sum(row_cost[i, r[i]] > row_cost[i].min() + 1e-10 for i in range(len(r)))
    cols = sum(col_cost[z, c[z]] > col_cost[z].min() + 1e-12 for z in range(len(c)) if pz[z] > 0)
    return rows + cols


def test_stc_beats_kmeans_when_target_hides_feature_groups():
    gains = []
    for seed in (0, 1, 2):
        Xt, yt, Xa, groups = make_shared_feature_problem(seed)
        stc = SelfTaughtClustering(3, 6, n_aux_clusters=6, lam=1.0, random_state=seed).fit(Xt, Xa)
        km = KMeans(3, n_init=10, random_state=seed).fit(Xt)
        gains.append(nmi(yt, stc.labels_) - nmi(yt, km.labels_))
        assert nmi(groups, stc.feature_labels_) > 0.9  # the auxiliary data reveals the feature groups
    assert np.mean(gains) > 0.2 and min(gains) > 0.0


def test_objective_non_increasing_and_equals_mutual_information_loss():
    Xt, yt, Xa, _ = make_shared_feature_problem(3)
    stc = SelfTaughtClustering(3, 6, n_aux_clusters=6, lam=0.7, random_state=3, tol=0).fit(Xt, Xa)
    obj = np.array([h["objective"] for h in stc.objective_history_])
    assert len(obj) >= 2 and np.all(np.diff(obj) <= 1e-12)
    # J = I(X;Z) - I(X~;Z~) + lam [I(Y;Z) - I(Y~;Z~)], computed from the final labels
    Pt, Pa = Xt / Xt.sum(), Xa / Xa.sum()
    jt = _mi(Pt) - _mi(_blocks(Pt, stc.labels_, stc.feature_labels_, 3, 6))
    ja = _mi(Pa) - _mi(_blocks(Pa, stc.aux_labels_, stc.feature_labels_, 6, 6))
    assert stc.objective_ == pytest.approx(jt + 0.7 * ja, rel=1e-9, abs=1e-12)
    assert coclustering_objective(Pt, stc.labels_, stc.feature_labels_, 3, 6) == pytest.approx(jt, abs=1e-12)


def test_lambda_zero_is_plain_coclustering_of_the_target():
    """lam = 0: the auxiliary data has no effect at all (same labels with a different or no
    auxiliary set), and the result is a fixed point of Dhillon et al.'s co-clustering updates."""
    Xt, _, Xa, _ = make_shared_feature_problem(4)
    rng = np.random.default_rng(0)
    a = SelfTaughtClustering(3, 6, lam=0.0, random_state=5).fit(Xt, Xa)
    b = SelfTaughtClustering(3, 6, lam=0.0, random_state=5).fit(Xt, rng.poisson(2.0, Xa.shape).astype(float))
    c = SelfTaughtClustering(3, 6, lam=0.0, random_state=5).fit(Xt, None)
    for other in (b, c):
        np.testing.assert_array_equal(a.labels_, other.labels_)
        np.testing.assert_array_equal(a.feature_labels_, other.feature_labels_)
        assert [h["objective"] for h in a.objective_history_] == [h["objective"] for h in other.objective_history_]
    assert a.aux_labels_ is None and all(h["aux"] == 0.0 for h in a.objective_history_)
    assert a.converged_
    assert _dhillon_step_changes(Xt, a.labels_, a.feature_labels_, 3, 6) == 0
    # with lam > 0 the auxiliary data does change the feature clustering on this problem
    d = SelfTaughtClustering(3, 6, n_aux_clusters=6, lam=1.0, random_state=5).fit(Xt, Xa)
    assert not np.array_equal(a.feature_labels_, d.feature_labels_)


def test_images_are_flattened_and_tensors_accepted():
    X = torch.rand(12, 1, 4, 4)
    s = SelfTaughtClustering(2, 3, random_state=0).fit(X, torch.rand(30, 1, 4, 4))
    assert s.labels_.shape == (12,) and s.feature_labels_.shape == (16,) and s.aux_labels_.shape == (30,)
    assert set(s.labels_) <= {0, 1} and set(s.feature_labels_) <= {0, 1, 2}


@pytest.mark.parametrize(
    "kwargs, X, Xa, match",
    [
        ({"n_clusters": 0, "n_feature_clusters": 2}, np.ones((5, 4)), None, "n_clusters"),
        ({"n_clusters": 2, "n_feature_clusters": 9}, np.ones((5, 4)), None, "n_feature_clusters"),
        ({"n_clusters": 2, "n_feature_clusters": 2, "lam": -1.0}, np.ones((5, 4)), None, "lam"),
        ({"n_clusters": 2, "n_feature_clusters": 2}, -np.ones((5, 4)), None, "X_target must be non-negative"),
        (
            {"n_clusters": 2, "n_feature_clusters": 2},
            np.ones((5, 4)),
            np.ones((5, 3)),
            "X_aux must have the 4 features",
        ),
        (
            {"n_clusters": 2, "n_feature_clusters": 2, "n_aux_clusters": 9},
            np.ones((5, 4)),
            np.ones((5, 4)),
            "n_aux_clusters",
        ),
        ({"n_clusters": 2, "n_feature_clusters": 2}, np.full((5, 4), np.nan), None, "X_target must be finite"),
    ],
)
def test_errors_name_the_argument(kwargs, X, Xa, match):
    with pytest.raises(ValueError, match=match):
        SelfTaughtClustering(**kwargs).fit(X, Xa)
