"""The dataserver: store, OutputData sampling, partitions and experts, the service and the client."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from tlkernels.selection.dataserver import (
    DataServerClient,
    Store,
    fast_adapt_scores,
    output_data,
    partition_store,
    selection_probabilities,
    train_experts,
)
from tlkernels.selection.dataserver.service import create_app


def small_store(root, n_a=90, n_b=70, shard_size=32):
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(n_a, 1, 8, 8, generator=gen)
    b = torch.rand(n_b, 1, 8, 8, generator=gen) * 0.1
    ya = torch.randint(0, 3, (n_a,), generator=gen)
    return Store.create(str(root), {"a": (a, ya), "b": (b, None)}, shard_size=shard_size), (a, ya, b)


# ----------------------------------------------------------------------------- store
def test_store_round_trip_across_shards(tmp_path):
    store, (a, ya, b) = small_store(tmp_path / "s")
    assert len(store) == 160 and store.example_shape == (1, 8, 8)
    idx = np.array([159, 0, 95, 31, 32, 89, 90])  # crosses shard and dataset borders, unsorted
    X, y = store.get(idx)
    full_X = torch.cat([a, b])
    full_y = torch.cat([ya, torch.full((70,), -1)])
    assert torch.equal(X, full_X[idx]) and torch.equal(y, full_y[idx])
    assert store.dataset_ids().tolist() == [0] * 90 + [1] * 70
    with pytest.raises(IndexError, match="indices must be in"):
        store.get([160])


def test_store_bad_inputs_leave_nothing(tmp_path):
    root = tmp_path / "bad"
    with pytest.raises(ValueError, match="share one example shape"):
        Store.create(str(root), {"a": (torch.rand(3, 1, 8, 8), None), "b": (torch.rand(3, 1, 4, 4), None)})
    with pytest.raises(ValueError, match="NaN"):
        Store.create(str(root), {"a": (torch.full((3, 1, 8, 8), float("nan")), None)})
    assert not root.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".store-")]
    small_store(root)
    with pytest.raises(FileExistsError):
        small_store(root)
    with pytest.raises(FileNotFoundError, match="not .*store|no manifest"):
        Store(str(tmp_path))


# ----------------------------------------------------------------------------- OutputData
def test_selection_probabilities_follow_algorithm_1():
    parts = np.array([0, 0, 0, 1, 1, 2])
    p = selection_probabilities([0.2, 0.8, 0.5], parts, temperature=0.1)
    zn = np.array([0.0, 1.0, 0.5])
    w = np.exp(zn / 0.1) / np.exp(zn / 0.1).sum()
    want = w[parts] / np.bincount(parts)[parts]
    np.testing.assert_allclose(p, want / want.sum(), rtol=1e-12)
    assert abs(p.sum() - 1) < 1e-12
    np.testing.assert_allclose(selection_probabilities([3, 3, 3], parts), 1.0 / np.bincount(parts)[parts] / 3)


def test_output_data_is_reproducible_and_distinct():
    parts = np.repeat(np.arange(4), 50)
    a = output_data([0.1, 0.9, 0.2, 0.3], parts, 60, seed=3)
    b = output_data([0.1, 0.9, 0.2, 0.3], parts, 60, seed=3)
    assert np.array_equal(a, b) and len(np.unique(a)) == 60
    assert (parts[a] == 1).sum() == 50  # the best partition is exhausted first at T = 0.1
    with pytest.raises(ValueError, match="budget"):
        output_data([1, 2, 3, 4], parts, 201)
    with pytest.raises(ValueError, match="finite"):
        output_data([1, float("nan"), 3, 4], parts, 5)


# ----------------------------------------------------------------------------- service
def test_service_endpoints_errors_and_persistence(tmp_path):
    store, _ = small_store(tmp_path / "s")
    store.save_partitions(np.arange(160) % 4)
    client = TestClient(create_app(store.root))
    info = client.get("/v1/store").json()
    assert info["size"] == 160 and info["n_partitions"] == 4 and [d["name"] for d in info["datasets"]] == ["a", "b"]
    assert client.get("/v1/experts").status_code == 404

    r = client.post("/v1/selections", json={"scores": [0.1, 0.2, 0.9, 0.3], "budget": 25, "seed": 1})
    assert r.status_code == 200
    sid, idx = r.json()["id"], r.json()["indices"]
    assert idx == output_data([0.1, 0.2, 0.9, 0.3], store.partitions, 25, seed=1).tolist()

    bad = [
        ({"scores": [0.1, 0.2], "budget": 5}, 400, "one value per expert"),
        ({"scores": [0.1, float("nan"), 0.2, 0.3], "budget": 5}, 400, "finite"),
        ({"scores": [0.1, 0.2, 0.3, 0.4], "budget": 161}, 400, "budget"),
        ({"scores": [0.1, 0.2, 0.3, 0.4]}, 422, "budget"),
    ]
    for body, code, msg in bad:
        r = client.post("/v1/selections", content=json.dumps(body), headers={"content-type": "application/json"})
        assert r.status_code == code and msg in r.text, (body, r.status_code, r.text)
    assert client.get("/v1/selections/nope/samples").status_code == 404

    # a restarted server still serves the selection, in chunks
    ds = DataServerClient(http=TestClient(create_app(store.root)))
    X, y, index = ds.samples(sid, chunk=7)
    assert index.tolist() == idx
    Xw, yw = store.get(idx)
    assert torch.equal(X, Xw) and torch.equal(y, yw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_eight_concurrent_clients(tmp_path):
    import uvicorn

    store, _ = small_store(tmp_path / "s")
    store.save_partitions(np.arange(160) % 4)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store.root), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        results, errors = {}, []

        def work(k):
            try:
                c = DataServerClient(f"http://127.0.0.1:{port}")
                scores = [0.1 * k, 0.5, 0.2, 0.9 - 0.1 * k]
                sid, idx = c.select(scores, 30 + k, seed=k)
                X, y, index = c.samples(sid, chunk=8)
                assert np.array_equal(index.numpy(), idx)
                results[k] = (idx, output_data(scores, store.partitions, 30 + k, seed=k))
            except Exception as e:  # collected: an assertion in a thread would be lost
                errors.append(repr(e))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(results) == 8 and all(np.array_equal(a, b) for a, b in results.values())
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# ----------------------------------------------------------------------------- partitions, experts, client
def _has_kmeans() -> bool:
    try:
        import tlkernels.cluster  # noqa: F401

        return True
    except ImportError:
        return False


@pytest.mark.skipif(not _has_kmeans(), reason="tlkernels.cluster (KMeans) is not in this build yet")
def test_partition_experts_and_a_client_that_sends_only_scores(tmp_path):
    store, _ = small_store(tmp_path / "s")
    ids = partition_store(store, 2, epochs=1)
    assert ids.shape == (160,) and set(np.unique(ids)) <= {0, 1}
    assert np.array_equal(store.partitions, ids)
    manifest = train_experts(store, epochs=1)
    assert manifest["k"] == len(np.unique(ids))

    sent = []
    http = TestClient(create_app(store.root))
    http.event_hooks["request"].append(lambda req: sent.append((req.method, req.url.path, req.content)))
    client = DataServerClient(http=http)
    experts = client.experts()
    assert len(experts) == manifest["k"]
    gen = torch.Generator().manual_seed(1)
    Xt = torch.rand(40, 1, 8, 8, generator=gen)
    yt = torch.arange(40) % 2
    z_unlabelled = fast_adapt_scores(experts, Xt)
    assert z_unlabelled.shape == (manifest["k"],) and ((0 <= z_unlabelled) & (z_unlabelled <= 1)).all()
    Xs, ys, idx, scores = client.request_data(Xt, yt, budget=20, seed=0)
    assert Xs.shape == (20, 1, 8, 8) and len(scores) == manifest["k"]
    # nothing the client sent carries target data: only GETs and the one selection request
    posts = [json.loads(body) for method, _, body in sent if method == "POST"]
    assert [m for m, _, _ in sent if m not in ("GET", "POST")] == []
    assert len(posts) == 1 and set(posts[0]) == {"scores", "budget", "seed"}
    assert all(body in (b"", None) for method, _, body in sent if method == "GET")


@pytest.mark.skipif(not _has_kmeans(), reason="tlkernels.cluster (KMeans) is not in this build yet")
def test_superclass_partitions_keep_classes_together(tmp_path):
    store, (a, ya, b) = small_store(tmp_path / "s")
    ids = partition_store(store, 2, method="superclass", epochs=1)
    lab = ya.numpy()
    for c in np.unique(lab):  # every labelled class lies in one partition
        assert len(np.unique(ids[:90][lab == c])) == 1
    with pytest.raises(ValueError, match="at least k=5 classes"):
        partition_store(store, 5, method="superclass", epochs=1)
    with pytest.raises(ValueError, match="method must be"):
        partition_store(store, 2, method="random")


@pytest.mark.skipif(not _has_kmeans(), reason="tlkernels.cluster (KMeans) is not in this build yet")
def test_classification_experts(tmp_path):
    gen = torch.Generator().manual_seed(3)
    X = torch.rand(60, 1, 8, 8, generator=gen)
    y = torch.arange(60) % 3
    store = Store.create(str(tmp_path / "s"), {"a": (X, y), "b": (X.flip(0), y)})
    store.save_partitions(np.arange(120) % 2)
    manifest = train_experts(store, epochs=1, task="classification")
    assert [e["task"] for e in manifest["experts"]] == ["classification"] * 2
    assert all(e["config"]["n_outputs"] == 6 for e in manifest["experts"])  # 3 labels x 2 datasets
    experts = DataServerClient(http=TestClient(create_app(store.root))).experts()
    assert fast_adapt_scores(experts, X[:30], y[:30]).shape == (2,)
    with pytest.raises(ValueError, match="rotation logits"):
        fast_adapt_scores(experts, X[:30])  # the label-free score needs rotation experts
    unlabelled = Store.create(str(tmp_path / "u"), {"a": (X, None)})
    unlabelled.save_partitions(np.zeros(60, dtype=np.int64))
    with pytest.raises(ValueError, match="no labelled examples"):
        train_experts(unlabelled, epochs=1, task="classification")


def _experts_worker(rank: int, world: int, port: int, root: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.set_num_threads(1)  # as the single process below: one thread count, one summation order
    try:
        train_experts(Store(root), epochs=1, seed=5, rank=rank, world_size=world)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not _has_kmeans(), reason="tlkernels.cluster (KMeans) is not in this build yet")
def test_experts_trained_partition_parallel_match_one_process(tmp_path):
    """Two gloo ranks train partitions 0, 2 / 1, 3; the experts equal a single process's."""
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    stores = []
    for name in ("single", "dist"):
        store, _ = small_store(tmp_path / name)
        store.save_partitions(np.arange(160) % 4)
        stores.append(store)
    # Bit-identical experts need the same GEMM blocking: a fixed single thread in both runs (with
    # more threads, MKL may pick its thread count by the machine's load and sum in another order).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_experts(stores[0], epochs=1, seed=5)
    finally:
        torch.set_num_threads(threads)
    mp.spawn(_experts_worker, args=(2, _free_port(), stores[1].root), nprocs=2, join=True)
    for i in range(4):
        a = load_file(os.path.join(stores[0].root, "experts", f"expert-{i:03d}.safetensors"))
        b = load_file(os.path.join(stores[1].root, "experts", f"expert-{i:03d}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.load(open(os.path.join(stores[1].root, "experts", "manifest.json")))["k"] == 4
