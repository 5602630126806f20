"""KMeans / batched_kmeans: parity with scikit-learn's Lloyd given the same initial centres,
k-means++ quality, batched == looped, spherical, empty clusters, duplicate points, bad inputs,
distributed mode (2 gloo processes)."""

from __future__ import annotations

import os
import socket
import warnings

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import load_digits, make_blobs

from tlkernels.cluster import KMeans, batched_kmeans


def blobs(n=3000, k=8, d=5, seed=0, std=2.0):
    X, _ = make_blobs(n, centers=k, n_features=d, random_state=seed, cluster_std=std)
    return X


def some_rows(X, k, seed):
    return X[np.random.RandomState(seed).choice(len(X), k, replace=False)].copy()


def assert_same_clustering(ours, sk, rtol=1e-10):
    np.testing.assert_array_equal(ours.labels_, sk.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, sk.cluster_centers_, rtol=rtol, atol=1e-12)
    assert ours.inertia_ == pytest.approx(sk.inertia_, rel=rtol)
    assert ours.n_iter_ == sk.n_iter_


# ----------------------------------------------------------------------------- sklearn parity
@pytest.mark.parametrize("case", ["blobs", "overlapping", "weighted", "tol0", "few_iters", "digits"])
def test_lloyd_parity_with_sklearn_given_the_init(case):
    X, k, kw, fit_kw = blobs(), 8, {}, {}
    if case == "overlapping":
        X = blobs(n=2000, k=5, d=3, seed=1, std=6.0)
        k = 11
    elif case == "weighted":
        fit_kw = {"sample_weight": np.random.RandomState(2).uniform(0.1, 3.0, len(X))}
    elif case == "tol0":
        kw = {"tol": 0.0}
    elif case == "few_iters":
        X, k, kw = blobs(n=2000, k=5, d=3, seed=1, std=6.0), 11, {"max_iter": 3}
    elif case == "digits":
        X, k = load_digits().data, 10
    init = some_rows(X, k, seed=3)
    sk = SKKMeans(k, init=init, n_init=1, algorithm="lloyd", **kw).fit(X, **fit_kw)
    ours = KMeans(k, init=init, n_init=1, **kw).fit(X, **fit_kw)
    assert_same_clustering(ours, sk)
    np.testing.assert_array_equal(ours.predict(X), sk.predict(X))
    np.testing.assert_allclose(ours.transform(X[:50]), sk.transform(X[:50]), rtol=1e-10)
    assert ours.score(X) == pytest.approx(sk.score(X), rel=1e-10)


def test_float32_parity_with_sklearn():
    X = blobs(seed=4).astype(np.float32)
    init = some_rows(X, 8, seed=5)
    sk = SKKMeans(8, init=init, n_init=1, algorithm="lloyd").fit(X)
    ours = KMeans(8, init=init, n_init=1).fit(X)
    assert ours.cluster_centers_.dtype == np.float32
    assert (ours.labels_ == sk.labels_).mean() > 0.999
    np.testing.assert_allclose(ours.cluster_centers_, sk.cluster_centers_, rtol=1e-4, atol=1e-4)
    assert ours.inertia_ == pytest.approx(sk.inertia_, rel=1e-5)


@pytest.mark.parametrize("data", ["blobs", "digits"])
def test_kmeans_plusplus_quality_within_2_percent_of_sklearn(data):
    X, k = (blobs(n=4000, k=12, d=7, std=2.5), 12) if data == "blobs" else (load_digits().data, 10)
    sk = SKKMeans(k, n_init=5, random_state=0).fit(X)
    ours = KMeans(k, n_init=5, random_state=0).fit(X)
    assert ours.inertia_ <= 1.02 * sk.inertia_
    # the reported inertia is the exact inertia of the reported centres and labels
    exact = ((X - ours.cluster_centers_[ours.labels_]) ** 2).sum()
    assert ours.inertia_ == pytest.approx(exact, rel=1e-12)


def test_random_state_reproducible_and_random_init():
    X = blobs(seed=6)
    a = KMeans(8, random_state=3).fit(X)
    b = KMeans(8, random_state=3).fit(X)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    r = KMeans(8, init="random", random_state=3).fit(X)  # n_init='auto' -> 10 runs
    assert r.inertia_ <= 1.05 * SKKMeans(8, init="random", n_init=10, random_state=0).fit(X).inertia_


# ----------------------------------------------------------------------------- batched
def test_batched_equals_looped():
    """Problems that converge at different iterations (the solver computes finished ones along
    until few are left, then copies the rest) give each exactly the single-problem fit."""
    rng = np.random.RandomState(7)
    P, N, D, K = 9, 400, 6, 7
    X = np.stack([blobs(n=N, k=5, d=D, seed=s, std=3.0) for s in range(P)])
    init = np.stack([some_rows(X[p], K, seed=p) for p in range(P)])
    lengths = rng.randint(K, N + 1, size=P)
    lengths[0] = N
    res = batched_kmeans(torch.from_numpy(X), K, lengths=lengths, init=init)
    for p in range(P):
        n = lengths[p]
        one = KMeans(K, init=init[p], n_init=1).fit(X[p, :n])
        np.testing.assert_array_equal(res.labels[p, :n].numpy(), one.labels_)
        assert bool((res.labels[p, n:] == -1).all())
        np.testing.assert_allclose(res.centers[p].numpy(), one.cluster_centers_, rtol=1e-12, atol=1e-12)
        assert float(res.inertia[p]) == pytest.approx(one.inertia_, rel=1e-12)
        assert int(res.n_iter[p]) == one.n_iter_
    assert len(set(res.n_iter.tolist())) >= 4, res.n_iter  # the working set shrinks more than once
    # a (P, N) mask is the same as lengths
    mask = torch.arange(N)[None, :] < torch.as_tensor(lengths)[:, None]
    res2 = batched_kmeans(torch.from_numpy(X), K, lengths=mask, init=init)
    assert torch.equal(res2.labels, res.labels)


@pytest.mark.parametrize("tol", [0.0, 1e-4])
def test_iteration_counts_equal_sklearn_batched_and_single(tol):
    """The convergence test (labels unchanged, or shift <= tol) stops at scikit-learn's iteration,
    for single fits and for a batch whose working set shrinks, with empty clusters relocated in
    some problems (two far initial centres) at the first iterations."""
    P, N, D, K = 8, 500, 4, 9
    X = np.stack([blobs(n=N, k=6, d=D, seed=20 + s, std=4.0) for s in range(P)])
    init = np.stack([some_rows(X[p], K, seed=p) for p in range(P)])
    init[1::3, :2] = 1e3 * np.array([[1.0, 1.0, 1.0, 1.0], [-1.0, 1.0, -1.0, 1.0]])
    want = [SKKMeans(K, init=init[p], n_init=1, algorithm="lloyd", tol=tol).fit(X[p]) for p in range(P)]
    res = batched_kmeans(torch.from_numpy(X), K, init=init, tol=tol)
    for p in range(P):
        one = KMeans(K, init=init[p], n_init=1, tol=tol).fit(X[p])
        assert one.n_iter_ == want[p].n_iter_, p
        assert int(res.n_iter[p]) == want[p].n_iter_, p
        np.testing.assert_array_equal(res.labels[p].numpy(), want[p].labels_)
    assert len(set(res.n_iter.tolist())) >= 3, res.n_iter


def test_batched_n_init_runs_keep_the_best():
    X = torch.from_numpy(np.stack([blobs(n=500, k=6, d=4, seed=s, std=3.0) for s in range(3)]))
    res = batched_kmeans(X, 6, n_init=4, random_state=0)
    assert res.centers.shape == (3, 6, 4) and res.labels.shape == (3, 500)
    for p in range(3):
        exact = (X[p] - res.centers[p][res.labels[p]]).square().sum()
        assert float(res.inertia[p]) == pytest.approx(float(exact), rel=1e-10)
        single = batched_kmeans(X[p : p + 1], 6, n_init=1, random_state=0)
        assert float(res.inertia[p]) <= 1.05 * float(single.inertia[0])


# ----------------------------------------------------------------------------- special cases
def test_spherical_on_unit_vectors():
    gen = torch.Generator().manual_seed(8)
    dirs = torch.nn.functional.normalize(torch.randn(5, 10, generator=gen, dtype=torch.float64), dim=1)
    X = dirs.repeat(80, 1) + 0.15 * torch.randn(400, 10, generator=gen, dtype=torch.float64)
    X = X * torch.rand(400, 1, generator=gen, dtype=torch.float64).add(0.5)  # norms must not matter
    init = X[torch.randperm(400, generator=gen)[:5]]
    km = KMeans(5, init=init, spherical=True).fit(X)
    C = km.cluster_centers_
    torch.testing.assert_close(C.norm(dim=1), torch.ones(5, dtype=torch.float64))
    # the plain cosine k-means from the same start
    U = torch.nn.functional.normalize(X, dim=1)
    c = torch.nn.functional.normalize(init, dim=1)
    for _ in range(km.n_iter_):
        lab = (U @ c.T).argmax(1)
        c = torch.nn.functional.normalize(torch.zeros_like(c).index_add_(0, lab, U), dim=1)
    assert torch.equal(km.labels_, (U @ C.T).argmax(1))
    torch.testing.assert_close(C, c, rtol=1e-10, atol=1e-10)
    assert torch.equal(km.predict(X * 3.0), km.labels_)


def test_empty_clusters_are_relocated_like_sklearn():
    X = blobs(n=600, k=3, d=2, seed=9, std=1.0)
    init = np.concatenate([some_rows(X, 3, seed=1), [[1e3, 1e3], [-1e3, 1e3]]])  # two far centres: empty
    sk = SKKMeans(5, init=init, n_init=1, algorithm="lloyd").fit(X)
    ours = KMeans(5, init=init, n_init=1).fit(X)
    assert_same_clustering(ours, sk)
    assert len(np.unique(ours.labels_)) == 5


def test_duplicate_points():
    base = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, -2.0]])
    X = np.repeat(base, [30, 20, 10], axis=0)
    km = KMeans(3, random_state=0).fit(X)
    assert km.inertia_ < 1e-20  # zero up to the rounding of the mean-centring
    assert sorted(map(tuple, km.cluster_centers_.round(12))) == sorted(map(tuple, base))
    with pytest.warns(RuntimeWarning, match="Number of distinct clusters"):
        km = KMeans(5, random_state=0).fit(X)
    assert km.inertia_ < 1e-20  # zero up to the rounding of the mean-centring


def test_torch_input_gives_tensors_and_device():
    X = torch.from_numpy(blobs(n=300, seed=10)).float()
    km = KMeans(4, random_state=0, device="cpu").fit(X)
    assert isinstance(km.cluster_centers_, torch.Tensor) and km.cluster_centers_.dtype == torch.float32
    assert isinstance(km.labels_, torch.Tensor) and km.labels_.shape == (300,)
    assert torch.equal(km.fit_predict(X), km.labels_)
    assert km.transform(X).shape == (300, 4)
    kn = KMeans(4, random_state=0).fit(X.numpy())
    assert isinstance(kn.cluster_centers_, np.ndarray)
    np.testing.assert_array_equal(kn.cluster_centers_, km.cluster_centers_.numpy())


def test_verbose_shows_progress(capsys):
    KMeans(4, random_state=0, verbose=True).fit(blobs(n=300, seed=11))
    assert "k-means" in capsys.readouterr().err


def test_sklearn_estimator_api():
    from sklearn.base import clone

    km = KMeans(3, tol=1e-3, spherical=True)
    assert clone(km).get_params()["tol"] == 1e-3 and clone(km).get_params()["spherical"] is True


# ----------------------------------------------------------------------------- bad inputs
def test_bad_inputs():
    X = blobs(n=50, seed=12)
    with pytest.raises(ValueError, match="n_samples=50 should be >= n_clusters=51"):
        KMeans(51).fit(X)
    for bad in (np.nan, np.inf):
        Xb = X.copy()
        Xb[3, 1] = bad
        with pytest.raises(ValueError, match="X must be finite"):
            KMeans(3).fit(Xb)
    with pytest.raises(ValueError, match="X must be 2-D"):
        KMeans(3).fit(X[:, 0])
    with pytest.raises(ValueError, match="X must be 3-D"):
        batched_kmeans(X, 3)
    with pytest.raises(ValueError, match="X must hold numbers"):
        KMeans(3).fit(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(ValueError, match="sample_weight must be non-negative"):
        KMeans(3).fit(X, sample_weight=-np.ones(50))
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        KMeans(3).fit(X, sample_weight=np.ones(49))
    with pytest.raises(ValueError, match="init must have shape"):
        KMeans(3, init=X[:4]).fit(X)
    with pytest.raises(ValueError, match="init must be 'k-means\\+\\+', 'random'"):
        KMeans(3, init="kmeans").fit(X)
    with pytest.raises(ValueError, match="n_clusters must be a positive int"):
        KMeans(0).fit(X)
    with pytest.raises(ValueError, match="n_init must be"):
        KMeans(3, n_init=0).fit(X)
    with pytest.raises(ValueError, match="tol must be"):
        KMeans(3, tol=-1.0).fit(X)
    with pytest.raises(ValueError, match="spherical=True needs non-zero rows"):
        KMeans(3, spherical=True).fit(np.vstack([X, np.zeros((1, X.shape[1]))]))
    with pytest.raises(RuntimeError, match="not fitted"):
        KMeans(3).predict(X)
    km = KMeans(3, random_state=0).fit(X)
    with pytest.raises(ValueError, match="X has 3 features, but KMeans was fitted with 5"):
        km.predict(np.ones((4, 3)))  # fitted on 5 features
    with pytest.raises(ValueError, match="lengths must be integers"):
        batched_kmeans(X[None], 3, lengths=[51])
    with pytest.raises(ValueError, match="n_samples=2 should be >= n_clusters=3"):
        batched_kmeans(X[None], 3, lengths=[2])
    with pytest.raises(RuntimeError, match="initialised torch.distributed"):
        KMeans(3, distributed=True).fit(X)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        KMeans(3, init=X[:3], n_init=4).fit(X)
    assert any("performing only one init" in str(x.message) for x in w)


# ----------------------------------------------------------------------------- distributed
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank, world, port, X, init, out):
    import torch.distributed as dist

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        shard = np.array_split(X, world)[rank]
        km = KMeans(init.shape[0], init=init, distributed=True).fit(shard)
        kpp = KMeans(init.shape[0], random_state=rank, distributed=True).fit(shard)  # seeds differ: rank 0 decides
        out[rank] = (km.cluster_centers_, km.inertia_, km.n_iter_, km.labels_, kpp.cluster_centers_, kpp.inertia_)
    finally:
        dist.destroy_process_group()


def test_distributed_two_gloo_processes_match_one_process():
    X = blobs(n=1201, k=6, d=4, seed=13, std=2.5)
    init = some_rows(X, 6, seed=2)
    init[5] = 1e3  # an empty cluster: relocation must pick the global farthest point
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_distributed_worker, args=(2, _free_port(), X, init, out), nprocs=2, join=True)
        out = dict(out)
    one = KMeans(6, init=init).fit(X)
    for rank in (0, 1):
        centers, inertia, n_iter, labels, kpp_centers, kpp_inertia = out[rank]
        np.testing.assert_allclose(centers, one.cluster_centers_, rtol=1e-10, atol=1e-10)
        assert inertia == pytest.approx(one.inertia_, rel=1e-10)
        assert n_iter == one.n_iter_
    np.testing.assert_array_equal(np.concatenate([out[0][3], out[1][3]]), one.labels_)
    np.testing.assert_array_equal(out[0][4], out[1][4])
    assert out[0][5] == out[1][5]
