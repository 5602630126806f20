"""Load test of the dataserver: a real ``tlkernels serve`` process on loopback, N concurrent
clients (asyncio + httpx, in this process), requests/s and p50 / p99 latency.

The store is built here: 20,000 random 1x8x8 examples in two datasets (shards of 4,096), 8
partitions (ids i mod 8: no k-means, the partitioning is not what is measured), no experts.
Each client loops over one round of three requests:

    POST /v1/selections              8 scores, budget 256, its own seed
    GET  /v1/selections/{id}/samples the selection's 256 rows (one chunk)
    GET  /v1/store

For each client count (8 / 32 / 64 by default) the run stops after --requests requests or
--seconds seconds, whichever comes first. The server binds 127.0.0.1 only, on a free port, and
is stopped at the end. Clients and server share the machine's cores: on a 2-core machine the
client side takes a good part of one core, so the numbers are a floor of the server's capacity.

    python bench/bench_dataserver_load.py --json bench/results/dataserver_load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import cpu_model  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_store(root: str, n: int = 20_000, k: int = 8) -> None:
    from tlkernels.selection.dataserver import Store

    rng = np.random.default_rng(0)
    a = rng.random((n // 2, 1, 8, 8), dtype=np.float32)
    b = rng.random((n - n // 2, 1, 8, 8), dtype=np.float32) * 0.1
    store = Store.create(root, {"a": (a, rng.integers(0, 10, n // 2)), "b": (b, None)}, shard_size=4096)
    store.save_partitions(np.arange(n) % k)


def start_server(root: str, port: int, log) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tlkernels.cli", "serve", "--store", root]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    import httpx

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode}")
        try:
            if httpx.get(url + "/v1/store", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # uvicorn shuts down cleanly on SIGINT
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def run_level(url: str, clients: int, max_requests: int, max_seconds: float) -> dict:
    import httpx

    latencies: dict[str, list[float]] = {"post": [], "samples": [], "store": []}
    errors: list[str] = []
    issued = 0
    deadline = time.perf_counter() + max_seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:

        async def timed(kind: str, coro):
            t0 = time.perf_counter()
            r = await coro
            latencies[kind].append(time.perf_counter() - t0)
            if r.status_code >= 400:
                errors.append(f"{kind} {r.status_code}: {r.text[:200]}")
            return r

        async def client(c: int) -> None:
            nonlocal issued
            rng = np.random.default_rng(c)
            seed = 0
            while issued + 3 <= max_requests and time.perf_counter() < deadline:
                issued += 3
                body = {
                    "scores": rng.random(8).tolist(),
                    "budget": 256,
                    "seed": c * 1_000_000 + seed,
                }
                seed += 1
                r = await timed("post", http.post("/v1/selections", json=body))
                if r.status_code == 200:
                    sid = r.json()["id"]
                    path = f"/v1/selections/{sid}/samples"
                    await timed("samples", http.get(path, params={"limit": 256}))
                await timed("store", http.get("/v1/store"))

        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        seconds = time.perf_counter() - t0

    every = [t for v in latencies.values() for t in v]

    def stats(v: list[float]) -> dict:
        a = np.asarray(v) * 1e3
        return {
            "n": len(v),
            "p50_ms": float(np.percentile(a, 50)) if len(a) else None,
            "p99_ms": float(np.percentile(a, 99)) if len(a) else None,
        }

    return {
        "clients": clients,
        "requests": len(every),
        "seconds": seconds,
        "requests_per_s": len(every) / seconds,
        "errors": len(errors),
        "first_errors": errors[:5],
        **stats(every),
        "by_endpoint": {k: stats(v) for k, v in latencies.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, nargs="+", default=[8, 32, 64])
    p.add_argument("--requests", type=int, default=3000, help="at most this many per level")
    p.add_argument("--seconds", type=float, default=30.0, help="at most this long per level")
    p.add_argument("--json", default="bench/results/dataserver_load.json")
    args = p.parse_args()

    import httpx
    import torch

    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores)")
    results = {
        "machine": {
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "httpx": httpx.__version__,
        },
        "config": {
            "store": "20,000 x 1x8x8 float32, 2 datasets, shards of 4,096, 8 partitions",
            "round": "POST /v1/selections (budget 256), GET its samples (256 rows), GET /v1/store",
            "max_requests_per_level": args.requests,
            "max_seconds_per_level": args.seconds,
            "server": "tlkernels serve (uvicorn, 1 worker) on 127.0.0.1",
        },
        "levels": [],
    }
    with tempfile.TemporaryDirectory(prefix="tlk-load-") as tmp:
        root = os.path.join(tmp, "store")
        build_store(root)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(os.path.join(tmp, "server.log"), "wb")  # noqa: SIM115 (closed below)
        proc = start_server(root, port, log)
        try:
            wait_ready(url, proc)
            asyncio.run(run_level(url, 4, 60, 10.0))  # warm-up
            print(f"{'clients':>7} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
            for c in args.clients:
                load_before = os.getloadavg()[0]
                r = asyncio.run(run_level(url, c, args.requests, args.seconds))
                # the machine's 1-minute load average around the level: others' work on a
                # shared machine shows here (2 cores: above ~2 the server waits for a core)
                r["loadavg_1min"] = [load_before, os.getloadavg()[0]]
                results["levels"].append(r)
                print(
                    f"{c:>7} {r['requests']:>8} {r['requests_per_s']:>8.1f} "
                    f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['errors']:>6}"
                    f"   (load average {load_before:.1f} -> {os.getloadavg()[0]:.1f})"
                )
                for kind, s in r["by_endpoint"].items():
                    print(f"{'':>7} {kind:>8} p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms ({s['n']})")
            n_sel = len(os.listdir(os.path.join(root, "selections")))
            results["selections_stored"] = n_sel
        except BaseException:
            stop_server(proc)
            log.close()
            with open(os.path.join(tmp, "server.log"), "rb") as f:
                print(f.read().decode(errors="replace")[-3000:], file=sys.stderr)
            raise
        stop_server(proc)
        log.close()
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
