"""The dataserver under faults and hostile input: data loss, oversized bodies, integrity of the
expert files, retention, corrupt files, extreme scores, strict validation, CLI errors, lazy reads."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from tlkernels.cli import main
from tlkernels.selection.dataserver import (
    DataServerClient,
    Store,
    load_expert,
    output_data,
    selection_probabilities,
    train_experts,
)
from tlkernels.selection.dataserver.service import create_app
from tlkernels.selection.dataserver.store import CorruptFileError

JSON = {"content-type": "application/json"}


def small_store(root, n_a=90, n_b=70, shard_size=32, k=4):
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(n_a, 1, 8, 8, generator=gen)
    b = torch.rand(n_b, 1, 8, 8, generator=gen) * 0.1
    ya = torch.randint(0, 3, (n_a,), generator=gen)
    store = Store.create(str(root), {"a": (a, ya), "b": (b, None)}, shard_size=shard_size)
    store.save_partitions(np.arange(n_a + n_b) % k)
    return store


def post(client, body):
    return client.post("/v1/selections", content=json.dumps(body), headers=JSON)


# ------------------------------------------------------------- 1. no data loss
def test_offline_demo_build_refuses_a_non_empty_store(tmp_path, monkeypatch, capsys):
    import tlkernels.experiments.dataserver as ex

    # the training steps are not what is tested here: keep the build to the store itself
    monkeypatch.setattr(ex, "partition_store", lambda *a, **k: None)
    monkeypatch.setattr(ex, "train_experts", lambda *a, **k: None)
    d = tmp_path / "d"
    d.mkdir()
    (d / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="not empty.*--overwrite"):
        main(["dataserver", "build", "--store", str(d), "--offline-demo"])
    assert (d / "precious.txt").read_text() == "keep me"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ex.build_offline_store(str(d))
    assert (d / "precious.txt").exists()
    # with --overwrite it is replaced; the demo store has 3,847 images (the docs' number)
    assert main(["dataserver", "build", "--store", str(d), "--offline-demo", "--overwrite"]) == 0
    assert not (d / "precious.txt").exists()
    assert len(Store(str(d))) == 3847
    assert "3847 images" in capsys.readouterr().out


def test_npz_build_refusal_names_the_overwrite_flag(tmp_path):
    np.savez(tmp_path / "a.npz", X=np.zeros((4, 1, 2, 2), dtype=np.float32))
    d = tmp_path / "d"
    d.mkdir()
    (d / "x").write_text("x")
    with pytest.raises(SystemExit, match="--overwrite") as e:
        main(["dataserver", "build", "--store", str(d), "--npz", f"a={tmp_path}/a.npz"])
    assert "\n" not in str(e.value.code) and "overwrite=True" not in str(e.value.code)
    with pytest.raises(SystemExit, match=r"tlkernels dataserver build: .*missing\.npz"):
        main(["dataserver", "build", "--store", str(tmp_path / "e")] + ["--npz", f"a={tmp_path}/missing.npz"])


# ------------------------------------------------------------- 2. request bodies
def test_oversized_bodies_get_413_before_they_are_read(tmp_path):
    store = small_store(tmp_path / "s")
    client = TestClient(create_app(store.root, max_body_bytes=1000))
    big = {"scores": [0.5] * 400, "budget": 5}
    r = post(client, big)
    assert r.status_code == 413 and "limit of 1000 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit is applied while streaming
        data = json.dumps(big).encode()
        for i in range(0, len(data), 256):
            yield data[i : i + 256]

    r = client.post("/v1/selections", content=chunks(), headers=JSON)
    assert r.status_code == 413 and "exceeds" in r.json()["detail"]
    r = post(client, {"scores": [0.1, 0.2, 0.3, 0.4], "budget": 5})
    assert r.status_code == 200
    assert client.get("/v1/store").status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_server(app):
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def test_a_big_post_does_not_stall_other_requests(tmp_path):
    """A 48 MB POST (the default limit is 1 MiB) is refused before it is parsed: GETs sent all
    the while are answered at once (unlimited, its parse blocked the event loop for seconds)."""
    store = small_store(tmp_path / "s")
    server, thread, url = _run_server(create_app(store.root))
    try:
        body = json.dumps({"scores": [0.123456789] * 4_000_000, "budget": 5}).encode()
        done, latencies = {}, []

        def big_post():
            t0 = time.perf_counter()
            r = httpx.post(url + "/v1/selections", content=body, headers=JSON, timeout=60)
            done["post"] = (r.status_code, time.perf_counter() - t0, r.text[:200])

        with httpx.Client(base_url=url, timeout=60) as c:
            c.get("/v1/store")
            t = threading.Thread(target=big_post)
            t.start()
            while t.is_alive() or len(latencies) < 5:
                t0 = time.perf_counter()
                assert c.get("/v1/store").status_code == 200
                latencies.append(time.perf_counter() - t0)
            t.join()
        status, post_seconds, text = done["post"]
        assert max(latencies) < 0.3, (max(latencies), post_seconds)
        assert status == 413 and "1048576 bytes" in text, text
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# ------------------------------------------------------------- 3. expert integrity
@pytest.fixture
def expert_store(tmp_path):
    store = small_store(tmp_path / "s", k=2)
    torch.manual_seed(0)
    train_experts(store, epochs=1)
    return store


def _flip_a_bit(path):
    data = bytearray(Path(path).read_bytes())
    data[-5] ^= 0x10  # in the weights, not the header: still a valid safetensors file
    Path(path).write_bytes(bytes(data))


def test_expert_files_are_hashed_and_checked(expert_store):
    root = expert_store.root
    manifest = json.loads(Path(root, "experts", "manifest.json").read_text())
    assert all(len(e["sha256"]) == 64 for e in manifest["experts"])
    _flip_a_bit(os.path.join(root, "experts", "expert-001.safetensors"))
    client = TestClient(create_app(root))
    assert client.get("/v1/experts/0").status_code == 200
    r = client.get("/v1/experts/1")
    assert r.status_code == 500 and "experts/expert-001.safetensors" in r.text
    assert "sha256" in r.text
    with pytest.raises(RuntimeError, match="expert-001.safetensors"):
        DataServerClient(http=client).experts()
    load_expert(root, 0)
    with pytest.raises(CorruptFileError, match="expert-001.safetensors"):
        load_expert(root, 1)


def test_the_client_checks_what_it_downloads(expert_store):
    """A file damaged between the server and the client is refused by the client."""
    inner = TestClient(create_app(expert_store.root))

    class Tampering:
        def get(self, path, params=None):
            r = inner.get(path, params=params)
            if path == "/v1/experts/1":
                data = bytearray(r.content)
                data[-5] ^= 0x10
                return httpx.Response(200, content=bytes(data))
            return r

    with pytest.raises(CorruptFileError, match="expert-001.safetensors.*downloaded"):
        DataServerClient(http=Tampering()).experts()
    assert len(DataServerClient(http=inner).experts()) == 2


# ------------------------------------------------------------- 4. retention, DELETE
def test_selection_retention_by_count_and_age_and_delete(tmp_path):
    store = small_store(tmp_path / "s")
    sel = os.path.join(store.root, "selections")
    body = {"scores": [0.1, 0.2, 0.3, 0.4], "budget": 5}
    client = TestClient(create_app(store.root, max_selections=3, selection_ttl=3600))
    ids = []
    for _ in range(5):
        ids.append(post(client, body).json()["id"])
        time.sleep(0.01)
    assert sorted(os.listdir(sel)) == sorted(f"{s}.json" for s in ids[2:])
    assert client.get(f"/v1/selections/{ids[0]}/samples").status_code == 404
    assert client.get(f"/v1/selections/{ids[4]}/samples").status_code == 200

    # age: an expired selection is 404 at once and removed at the next start
    old = time.time() - 7200
    os.utime(os.path.join(sel, f"{ids[2]}.json"), (old, old))
    r = client.get(f"/v1/selections/{ids[2]}/samples")
    assert r.status_code == 404 and "expired" in r.text
    Path(os.path.join(sel, ".deadbeef.json.tmp")).write_text("{")  # an interrupted write
    client = TestClient(create_app(store.root, max_selections=3, selection_ttl=3600))
    assert sorted(os.listdir(sel)) == sorted(f"{s}.json" for s in ids[3:])

    # DELETE
    assert client.delete(f"/v1/selections/{ids[3]}").status_code == 204
    assert client.get(f"/v1/selections/{ids[3]}/samples").status_code == 404
    assert client.delete(f"/v1/selections/{ids[3]}").status_code == 404
    assert client.delete("/v1/selections/not-an-id").status_code == 404
    DataServerClient(http=client).delete(ids[4])
    assert os.listdir(sel) == []


def test_retention_defaults_and_limits_are_checked(tmp_path):
    store = small_store(tmp_path / "s")
    with pytest.raises(ValueError, match="max_selections"):
        create_app(store.root, max_selections=-1)
    from tlkernels.selection.dataserver import service

    assert service.DEFAULT_MAX_SELECTIONS == 10_000
    assert service.DEFAULT_SELECTION_TTL == 7 * 24 * 3600


# ------------------------------------------------------------- 5. corrupt files
def test_corrupt_files_fail_only_their_requests_and_name_the_file(expert_store):
    root = expert_store.root
    client = TestClient(create_app(root))
    body = {"scores": [0.3, 0.4], "budget": 3, "seed": 0}
    good = post(client, body).json()["id"]
    bad = post(client, body).json()["id"]
    Path(os.path.join(root, "selections", f"{bad}.json")).write_text('{"indic')
    r = client.get(f"/v1/selections/{bad}/samples")
    assert r.status_code == 500 and f"selections/{bad}.json" in r.text
    assert client.get(f"/v1/selections/{good}/samples").status_code == 200

    # a shard: only the selections that read it fail
    in_a = os.path.join(root, "selections", "0a1b2c.json")
    Path(in_a).write_text(json.dumps({"indices": [0, 1, 2]}))  # dataset a only
    shard = os.path.join(root, "data", "b-00000.safetensors")
    with open(shard, "r+b") as f:
        f.write(b"\xff" * 16)
    everything = post(client, {"scores": [0.3, 0.4], "budget": 160}).json()["id"]
    r = client.get(f"/v1/selections/{everything}/samples")
    assert r.status_code == 500 and "data/b-00000.safetensors" in r.text
    assert client.get("/v1/selections/0a1b2c/samples").status_code == 200
    with pytest.raises(CorruptFileError, match="data/b-00000.safetensors"):
        expert_store.get([100])
    assert expert_store.get([0])[0].shape == (1, 1, 8, 8)

    # the experts manifest
    Path(os.path.join(root, "experts", "manifest.json")).write_text("[1, 2")
    r = client.get("/v1/experts")
    assert r.status_code == 500 and "experts/manifest.json" in r.text
    assert client.get("/v1/store").status_code == 200

    # the partitions
    Path(os.path.join(root, "partitions.npy")).write_bytes(b"\x93NUMPY garbage")
    r = post(client, body)
    assert r.status_code == 500 and "partitions.npy" in r.text
    assert client.get("/v1/selections/0a1b2c/samples").status_code == 200


def test_serve_with_a_corrupt_store_manifest_exits_with_one_line(tmp_path):
    store = small_store(tmp_path / "s")
    Path(os.path.join(store.root, "manifest.json")).write_text('{"datasets": [{"name": 1}]}')
    with pytest.raises(SystemExit, match=r"tlkernels serve: .*manifest\.json is corrupt"):
        main(["serve", "--store", store.root])
    with pytest.raises(CorruptFileError, match="manifest.json"):
        Store(store.root)
    Path(os.path.join(store.root, "manifest.json")).write_text("{not json")
    # the real command: one line on stderr, exit status 1, no traceback
    r = subprocess.run(
        [sys.executable, "-m", "tlkernels.cli", "serve", "--store", store.root],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "manifest.json" in lines[0] and "Traceback" not in r.stderr


# ------------------------------------------------------------- 6. extreme scores
def test_extreme_finite_scores_do_not_overflow(tmp_path):
    parts = np.arange(8) % 4
    p = selection_probabilities([1e308, -1e308, 0.0, 0.0], parts)
    assert np.isfinite(p).all() and abs(p.sum() - 1) < 1e-12 and (p > 0).all()
    np.testing.assert_allclose(p, selection_probabilities([1.0, -1.0, 0.0, 0.0], parts), rtol=1e-12)
    assert (selection_probabilities([1, 2, 3, 4], parts, temperature=1e-320) >= 0).all()
    store = small_store(tmp_path / "s")
    r = post(
        TestClient(create_app(store.root)),
        {"scores": [1e308, -1e308, 0, 0], "budget": 50},
    )
    assert r.status_code == 200 and len(r.json()["indices"]) == 50


# ------------------------------------------------------------- 7. strict validation
def test_selection_requests_are_validated_strictly(tmp_path):
    store = small_store(tmp_path / "s")
    client = TestClient(create_app(store.root))
    s = [0.1, 0.2, 0.3, 0.4]
    for body, field in [
        ({"scores": s, "budget": True}, "budget"),
        ({"scores": s, "budget": "5"}, "budget"),
        ({"scores": s, "budget": 5.0}, "budget"),
        ({"scores": ["0.1", 0.2, 0.3, 0.4], "budget": 5}, "scores"),
        ({"scores": s, "budget": 5, "seed": -1}, "seed"),
        ({"scores": s, "budget": 5, "seed": "1"}, "seed"),
        ({"scores": s, "budget": 5, "target": [1, 2]}, "target"),
    ]:
        r = post(client, body)
        assert r.status_code == 422, (body, r.text)
        assert field in [loc for e in r.json()["detail"] for loc in e["loc"]], r.text
    r = client.post("/v1/selections", content=b"{not json", headers=JSON)
    assert r.status_code == 422
    assert post(client, {"scores": [1, 2, 3, 4], "budget": 5}).status_code == 200
    parts = np.arange(8) % 4
    with pytest.raises(ValueError, match="budget"):
        output_data(s, parts, True)
    with pytest.raises(ValueError, match="seed"):
        output_data(s, parts, 3, seed=-1)


def test_selection_answers_before_partitioning_and_for_bad_scores_budgets_and_records(tmp_path):
    gen = torch.Generator().manual_seed(0)
    root = str(tmp_path / "s")
    store = Store.create(root, {"a": (torch.rand(20, 1, 4, 4, generator=gen), None)}, shard_size=8)
    client = TestClient(create_app(root))
    info = client.get("/v1/store").json()
    assert info["n_partitions"] is None and info["datasets"] == [
        {"name": "a", "size": 20, "shape": [1, 4, 4], "labelled": False}
    ]
    r = post(client, {"scores": [0.5, 0.5], "budget": 3})
    assert r.status_code == 409 and "not partitioned" in r.text
    store.save_partitions(np.arange(20) % 2)
    for body, message in [
        ({"scores": [0.5], "budget": 3}, "one value per expert: 2, got 1"),
        ({"scores": [0.5, float("inf")], "budget": 3}, "finite"),
        ({"scores": [0.5, 0.5], "budget": 21}, "budget must be in [1, 20]"),
        ({"scores": [0.5, 0.5], "budget": 0}, "budget must be in [1, 20]"),
    ]:
        r = client.post("/v1/selections", content=json.dumps(body, allow_nan=True), headers=JSON)
        assert r.status_code == 400 and message in r.json()["detail"], (body, r.text)
    sid = post(client, {"scores": [0.5, 0.5], "budget": 4, "seed": 1}).json()["id"]
    record = json.loads(Path(root, "selections", f"{sid}.json").read_text())
    assert record["budget"] == 4 and record["seed"] == 1 and len(record["indices"]) == 4
    Path(root, "selections", f"{sid}.json").write_text(json.dumps({"indices": [0, 20]}))
    r = client.get(f"/v1/selections/{sid}/samples")
    assert r.status_code == 500 and f"selections/{sid}.json" in r.text and "[0, 20)" in r.text


# ------------------------------------------------------------- 8. CLI and messages
def test_cli_errors_are_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"^tlkernels serve: .*no manifest\.json") as e:
        main(["serve", "--store", str(tmp_path / "nothing")])
    assert "\n" not in e.value.code
    store = small_store(tmp_path / "s")
    with pytest.raises(SystemExit, match="max_selections"):
        main(["serve", "--store", store.root, "--keep-selections", "-1"])
    r = TestClient(create_app(store.root)).get("/v1/experts")
    assert r.status_code == 404 and "--partitions" in r.text


# ------------------------------------------------------------- 9. lazy row reads
def _page_faults() -> int:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_minflt + u.ru_majflt


def test_reading_one_row_does_not_read_its_whole_shard(tmp_path, monkeypatch):
    """Whatever safetensors' get_tensor does (before 0.6 it copied the whole tensor: simulated
    here), reading one row touches only that row's pages of the shard."""
    import safetensors

    from tlkernels.selection.dataserver import store as store_module

    real_open = safetensors.safe_open

    class CopyingSafeOpen:  # safetensors 0.4-0.5: get_tensor reads all of it
        def __init__(self, *a, **k):
            self.f = real_open(*a, **k)

        def __enter__(self):
            self.f.__enter__()
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def get_tensor(self, name):
            return self.f.get_tensor(name).clone()

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(safetensors, "safe_open", CopyingSafeOpen)
    monkeypatch.setattr(store_module, "safe_open", CopyingSafeOpen, raising=False)
    X = torch.rand(4096, 1, 32, 32)  # one 16 MiB shard: 4096 pages
    store = Store.create(str(tmp_path / "s"), {"a": (X, None)})
    store.get([5])  # warm up the code paths
    before = _page_faults()
    Xr, yr = store.get([4000])
    faults = _page_faults() - before
    assert torch.equal(Xr[0], X[4000]) and yr.tolist() == [-1]
    assert faults < 64, f"{faults} page faults to read one 4 KiB row of a 16 MiB shard"
    rows = [4095, 0, 17, 2048, 17]
    assert torch.equal(store.get(rows)[0], X[rows])
