"""k-means: time per Lloyd iteration of tlkernels against the peers a user would pick instead.

Side by side in one run, from the same initial centres and for a fixed number of iterations
(tol = 0), after checking that every peer agrees with tlkernels (labels after one iteration;
the inertia after all of them for scikit-learn, which relocates empty clusters the same way):
  tlkernels        KMeans.fit / batched_kmeans, and the bare ops loop (kmeans_step + divide),
                   also with the kernels capped at AVX2 (what a CPU without AVX-512 runs)
  scikit-learn     KMeans(algorithm='lloyd'), chunked BLAS + argmin
  faiss-cpu        faiss.Kmeans (IndexFlatL2 search), on all points (no subsampling)
  fast-pytorch-kmeans
  torch            cdist + argmin + index_add_ (the N×K matrix in memory)
Peers that are not installed are reported as "not installed".

Per-iteration time of a ``fit`` is (t(fit with 1 + I iterations) − t(fit with 1 iteration)) / I,
which removes each library's fixed costs (checks, centring, final E-step) from the comparison;
every time is the best of the repeats (on a shared machine neighbours only add time).
A last row times what a user runs with default settings on the batched shape: whole fits
(k-means++, iterations to convergence, fixed costs), one batched_kmeans call against a loop of
scikit-learn fits.
The GEMM floor is 2·N·K·D flops at the rate at::mm reaches on the same shapes (row chunks of
1024, all threads): no Lloyd iteration can beat it without a faster GEMM.

    python bench/bench_kmeans.py --json bench/results/kmeans.json --plot bench/results/kmeans.png
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import best_time, machine, save_figure, write_results  # noqa: E402
from tlkernels.cluster import KMeans, batched_kmeans  # noqa: E402
from tlkernels.ops import kmeans_step  # noqa: E402


def peer(name: str):
    try:
        if name == "faiss":
            import faiss

            return faiss
        if name == "fast_pytorch_kmeans":
            import fast_pytorch_kmeans

            return fast_pytorch_kmeans
        if name == "sklearn":
            import sklearn.cluster

            return sklearn.cluster
    except ImportError:
        return None
    raise AssertionError(name)


def gaussian_data(P: int, N: int, D: int, K: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard normal float32 data (no cluster structure: Lloyd keeps moving for many
    iterations, so every library runs the fixed iteration count), and K distinct rows as init."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(P, N, D, generator=gen)
    init = torch.stack([X[p, torch.randperm(N, generator=gen)[:K]] for p in range(P)])
    return X.contiguous(), init.contiguous()


def peak_rss_mb(fn) -> float:
    """Peak resident memory added while fn() runs (Linux: resets VmHWM through clear_refs)."""

    def status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024
        return float("nan")

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return float("nan")
    before = status("VmRSS")
    fn()
    return status("VmHWM") - before


# ---------------------------------------------------------------------------------------------
# one fit per library: fit(X (N, D) float32, init (K, D), iters) -> (labels, inertia)
# ---------------------------------------------------------------------------------------------
def fit_tlk(X, init, iters):
    km = KMeans(init.shape[0], init=init, n_init=1, max_iter=iters, tol=0.0).fit(X)
    return km.labels_.numpy(), km.inertia_


def fit_sklearn(X, init, iters):
    km = (
        peer("sklearn")
        .KMeans(init.shape[0], init=init.numpy(), n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd")
        .fit(X.numpy())
    )
    return km.labels_, km.inertia_


def fit_faiss(X, init, iters):
    faiss = peer("faiss")
    x = X.numpy()
    km = faiss.Kmeans(
        x.shape[1],
        init.shape[0],
        niter=iters,
        seed=0,
        max_points_per_centroid=1 << 30,
        min_points_per_centroid=1,
        verbose=False,
    )
    km.train(x, init_centroids=init.numpy())
    d2, labels = km.index.search(x, 1)
    return labels[:, 0], float(d2.astype(np.float64).sum())


def fit_fast_pytorch(X, init, iters):
    fpk = peer("fast_pytorch_kmeans")
    km = fpk.KMeans(n_clusters=init.shape[0], max_iter=iters, tol=-1.0, mode="euclidean", verbose=0)
    km.fit_predict(X, centroids=init.clone())  # returns the labels of the last E-step, before its update
    C = km.centroids
    labels = km.predict(X)
    return labels.numpy(), float((X - C[labels]).double().square().sum())


def fit_torch(X, init, iters):
    C = init.clone()
    K = C.shape[0]
    for _ in range(iters):
        labels = torch.cdist(X, C).argmin(1)
        sums = torch.zeros_like(C).index_add_(0, labels, X)
        counts = torch.bincount(labels, minlength=K).to(X.dtype)
        C = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], C)
    labels = torch.cdist(X, C).argmin(1)
    return labels.numpy(), float((X - C[labels]).double().square().sum())


FITS = {
    "tlkernels": fit_tlk,
    "sklearn": fit_sklearn,
    "faiss": fit_faiss,
    "fast_pytorch_kmeans": fit_fast_pytorch,
    "torch_cdist": fit_torch,
}
NEEDS = {"sklearn": "sklearn", "faiss": "faiss", "fast_pytorch_kmeans": "fast_pytorch_kmeans"}


def ops_iteration(X, C):
    """The bare tlkernels Lloyd step: the fused assign + update op, then the division."""
    _, _, sums, counts = kmeans_step(X, C)
    return sums / counts.clamp_min(1)[..., None]


def ops_at_avx2(X, C, repeats) -> float | None:
    """Seconds per bare ops iteration with the kernels capped at AVX2 (TLK_KMEANS_SIMD=avx2: what
    a CPU without AVX-512, e.g. most laptops, runs); None on CPUs without AVX2."""
    if not torch.backends.cpu.get_cpu_capability().startswith(("AVX2", "AVX512")):
        return None
    old = os.environ.get("TLK_KMEANS_SIMD")
    os.environ["TLK_KMEANS_SIMD"] = "avx2"
    try:
        return best_time(lambda: ops_iteration(X, C), repeats=repeats, warmup=1)
    finally:
        if old is None:
            del os.environ["TLK_KMEANS_SIMD"]
        else:
            os.environ["TLK_KMEANS_SIMD"] = old


def print_avx2_row(row, t_avx2, sklearn_key):
    if t_avx2 is None:
        return
    row["tlkernels_ops_avx2"] = {"s_per_iter": t_avx2}
    sk = row.get(sklearn_key)
    vs = f"   {sk['s_per_iter'] / t_avx2:.2f}x {sklearn_key}" if isinstance(sk, dict) else ""
    print(f"  {'ops loop, AVX2 only':22s} {t_avx2 * 1e3:9.2f} ms/iter{vs}", flush=True)


def gemm_floor(P, N, D, K, repeats) -> tuple[float, float]:
    """(seconds, GFLOP/s) of the X·Cᵀ products of one iteration with at::mm in 1024-row chunks."""
    gen = torch.Generator().manual_seed(1)
    X, C = torch.randn(min(N, 200_000), D, generator=gen), torch.randn(K, D, generator=gen)
    out = torch.empty(1024, K)

    def run():
        for i in range(0, X.shape[0], 1024):
            torch.mm(X[i : i + 1024], C.T, out=out[: min(1024, X.shape[0] - i)])

    t = best_time(run, repeats=max(7, repeats), warmup=1) * (P * N / X.shape[0])
    return t, 2.0 * P * N * K * D / t / 1e9


def per_iteration_interleaved(fits: dict, X, init, iters, repeats) -> dict:
    """{name: seconds per iteration} with the libraries timed round-robin within every repeat
    (the machine is shared: a load spike then hits every library, not one), each as
    (best t(fit with 1 + iters iterations) − best t(fit with 1 iteration)) / iters over the
    repeats (the differences of single runs swing by ±30% on these 2 vCPUs; minima do not)."""
    for fit in fits.values():  # warm-up
        fit(X, init, 1)
    one = {name: math.inf for name in fits}
    more = {name: math.inf for name in fits}
    for _ in range(repeats):
        for name, fit in fits.items():
            t0 = time.perf_counter()
            fit(X, init, 1)
            t1 = time.perf_counter()
            fit(X, init, 1 + iters)
            t2 = time.perf_counter()
            one[name], more[name] = min(one[name], t1 - t0), min(more[name], t2 - t1)
    return {name: max((more[name] - one[name]) / iters, 1e-9) for name in fits}


def bench_single(name, N, D, K, iters, repeats, peers):
    X, init = gaussian_data(1, N, D, K, seed=N + D + K)
    X, init = X[0], init[0]
    row = {"shape": name, "P": 1, "N": N, "D": D, "K": K, "iters": iters}
    ref_labels, ref_inertia = fit_tlk(X, init, 1)
    _, ref_inertia_n = fit_tlk(X, init, 1 + iters)
    n_iter = KMeans(K, init=init, n_init=1, max_iter=1 + iters, tol=0.0).fit(X).n_iter_
    assert n_iter == 1 + iters, f"converged after {n_iter} iterations: the per-iteration times would be wrong"
    timed = {}
    for lib in peers:
        if lib in NEEDS and peer(NEEDS[lib]) is None:
            row[lib] = "not installed"
            print(f"  {lib:22s} not installed", flush=True)
            continue
        labels, _ = FITS[lib](X, init, 1)
        agree = float((np.asarray(labels) == ref_labels).mean())
        _, inertia_n = FITS[lib](X, init, 1 + iters)
        rel = abs(inertia_n - ref_inertia_n) / ref_inertia_n
        assert agree > 0.999, f"{lib} disagrees with tlkernels on {name}: {agree:.5f} of the labels equal"
        # same algorithm, same empty-cluster rule: the inertia must agree after all iterations
        # (faiss splits empty clusters and torch / fast-pytorch-kmeans keep them: only reported)
        if lib == "sklearn":
            assert rel < 1e-3, f"{lib} inertia after {1 + iters} iterations differs by {rel:.2e} on {name}"
        mem = peak_rss_mb(lambda: FITS[lib](X, init, 1 + iters))
        row[lib] = {"label_agreement": agree, "inertia_rel_diff": rel, "peak_rss_mb": mem}
        timed[lib] = FITS[lib]
    for lib, t in per_iteration_interleaved(timed, X, init, iters, repeats).items():
        row[lib]["s_per_iter"] = t
        print(
            f"  {lib:22s} {t * 1e3:9.2f} ms/iter   agreement {row[lib]['label_agreement']:.5f}   "
            f"peak +{row[lib]['peak_rss_mb']:7.1f} MB",
            flush=True,
        )
    C = init.clone()
    t_ops = best_time(lambda: ops_iteration(X, C), repeats=repeats, warmup=1)
    row["tlkernels_ops"] = {"s_per_iter": t_ops}
    floor, rate = gemm_floor(1, N, D, K, repeats)
    row["gemm_floor_s"], row["gemm_gflops"] = floor, rate
    print(
        f"  {'tlkernels ops loop':22s} {t_ops * 1e3:9.2f} ms/iter   GEMM floor {floor * 1e3:.2f} ms "
        f"({rate:.0f} GFLOP/s)",
        flush=True,
    )
    print_avx2_row(row, ops_at_avx2(X, C, repeats), "sklearn")
    return row


def bench_batched(P, N, D, K, iters, repeats, peers):
    iters = 2 * iters  # small problems: more iterations so that the fixed costs do not dominate
    X, init = gaussian_data(P, N, D, K, seed=7)
    row = {"shape": f"batched P={P} x (N={N}, D={D}, K={K})", "P": P, "N": N, "D": D, "K": K, "iters": iters}

    def fit_batched(X, init, n):
        r = batched_kmeans(X, K, init=init, n_init=1, max_iter=n, tol=0.0)
        return r.labels.numpy(), r.inertia.numpy()

    ref_labels, _ = fit_batched(X, init, 1)
    n_iter = batched_kmeans(X, K, init=init, n_init=1, max_iter=1 + iters, tol=0.0).n_iter
    assert bool((n_iter == 1 + iters).all()), f"some problems converged early: {n_iter.tolist()}"
    mem = peak_rss_mb(lambda: fit_batched(X, init, 1 + iters))
    row["tlkernels"] = {"peak_rss_mb": mem}
    timed = {"tlkernels": fit_batched}
    for lib in peers:
        if lib == "tlkernels":
            continue
        if lib in NEEDS and peer(NEEDS[lib]) is None:
            row[lib + "_looped"] = "not installed"
            print(f"  {lib + ' (looped)':22s} not installed", flush=True)
            continue
        fit = FITS[lib]
        agree = float(np.mean([(np.asarray(fit(X[p], init[p], 1)[0]) == ref_labels[p]).mean() for p in range(P)]))
        assert agree > 0.999, f"{lib} disagrees with tlkernels on the batched shape: {agree:.5f}"
        row[lib + "_looped"] = {"label_agreement": agree}
        timed[lib + "_looped"] = (lambda fit: lambda X, init, n: [fit(X[p], init[p], n) for p in range(P)])(fit)
    for key, t in per_iteration_interleaved(timed, X, init, iters, repeats).items():
        row[key]["s_per_iter"] = t
        print(f"  {key:22s} {t * 1e3:9.2f} ms/iter", flush=True)
    t_ops = best_time(lambda: ops_iteration(X, init), repeats=repeats, warmup=1)
    row["tlkernels_ops"] = {"s_per_iter": t_ops}
    print(f"  {'tlkernels ops loop':22s} {t_ops * 1e3:9.2f} ms/iter", flush=True)
    print_avx2_row(row, ops_at_avx2(X, init, repeats), "sklearn_looped")
    floor, rate = gemm_floor(P, N, D, K, repeats)
    row["gemm_floor_s"], row["gemm_gflops"] = floor, rate
    print(f"  GEMM floor {floor * 1e3:.2f} ms ({rate:.0f} GFLOP/s)", flush=True)
    return row


def bench_batched_defaults(P, N, D, K, repeats):
    """What a user runs with default settings (k-means++, tol=1e-4, max_iter=300): one
    batched_kmeans call against a loop of scikit-learn fits, whole-fit wall time (init, the
    iterations to convergence and every fixed cost), interleaved, best of the repeats; quality as the mean
    final inertia, and the mean iteration count."""
    sk = peer("sklearn")
    X, _ = gaussian_data(P, N, D, K, seed=11)
    row = {"shape": f"defaults P={P} x (N={N}, D={D}, K={K})", "P": P, "N": N, "D": D, "K": K}
    if sk is None:
        row["sklearn_looped"] = "not installed"
        return row
    Xn = [X[p].numpy() for p in range(P)]
    runs = {
        "tlkernels": lambda: batched_kmeans(X, K, random_state=0),
        "sklearn_looped": lambda: [sk.KMeans(K, random_state=0).fit(x) for x in Xn],
    }
    times = {name: [] for name in runs}
    out = {}
    for _ in range(repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            out[name] = run()
            times[name].append(time.perf_counter() - t0)
    res, fits = out["tlkernels"], out["sklearn_looped"]
    row["tlkernels"] = {
        "s_per_fit": min(times["tlkernels"]),
        "mean_inertia": float(res.inertia.mean()),
        "mean_n_iter": float(res.n_iter.float().mean()),
    }
    row["sklearn_looped"] = {
        "s_per_fit": min(times["sklearn_looped"]),
        "mean_inertia": float(np.mean([f.inertia_ for f in fits])),
        "mean_n_iter": float(np.mean([f.n_iter_ for f in fits])),
    }
    row["speedup_vs_sklearn_looped"] = row["sklearn_looped"]["s_per_fit"] / row["tlkernels"]["s_per_fit"]
    for name in runs:
        r = row[name]
        print(
            f"  {name:22s} {r['s_per_fit']:9.2f} s per fit   mean inertia {r['mean_inertia']:.6g}   "
            f"mean n_iter {r['mean_n_iter']:.1f}",
            flush=True,
        )
    return row


def ratios(row) -> dict:
    def t(key):
        v = row.get(key)
        return v["s_per_iter"] if isinstance(v, dict) else None

    ours = t("tlkernels")
    out = {}
    for key in (
        "sklearn",
        "faiss",
        "fast_pytorch_kmeans",
        "torch_cdist",
        "sklearn_looped",
        "faiss_looped",
        "fast_pytorch_kmeans_looped",
        "torch_cdist_looped",
    ):
        if t(key) is not None:
            out[f"speedup_vs_{key}"] = t(key) / ours
    out["x_gemm_floor"] = ours / row["gemm_floor_s"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller shapes (a smoke run)")
    parser.add_argument("--json", default="bench/results/kmeans.json")
    parser.add_argument("--plot", default="bench/results/kmeans.png")
    args = parser.parse_args(argv)
    peers = ["tlkernels", "sklearn", "faiss", "fast_pytorch_kmeans", "torch_cdist"]
    scale = 10 if args.quick else 1
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    rows = []
    for name, N, D, K in [
        ("N=200k D=64 K=256", 200_000 // scale, 64, 256),
        ("N=1M D=16 K=64", 1_000_000 // scale, 16, 64),
    ]:
        print(f"{name} (float32, {args.iters} iterations)", flush=True)
        rows.append(bench_single(name, N, D, K, args.iters, args.repeats, peers))
    P = 64 // (4 if args.quick else 1)
    print(f"batched P={P} x (N=10k, D=32, K=32)", flush=True)
    rows.append(bench_batched(P, 10_000, 32, 32, args.iters, args.repeats, peers))
    for row in rows:
        row.update(ratios(row))
        print(row["shape"], {k: round(v, 2) for k, v in row.items() if k.startswith(("speedup", "x_gemm"))})
    print(f"batched P={P} x (N=10k, D=32, K=32), default settings, whole fits", flush=True)
    defaults = bench_batched_defaults(P, 10_000, 32, 32, args.repeats)
    payload = {
        "benchmark": "k-means Lloyd iteration",
        "device": "cpu",
        "dtype": "float32",
        "machine": machine(),
        "seconds_total": time.perf_counter() - t0,
        "loadavg_1_5_15_before_after": [load_before, os.getloadavg()],
        "note": "2-core machine shared with other jobs: compare ratios within this run, not absolute times",
        "rows": rows,
        "defaults": defaults,
    }
    write_results(args.json, payload)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 4))
        libs = ["tlkernels", "sklearn", "faiss", "fast_pytorch_kmeans", "torch_cdist"]
        for i, row in enumerate(rows):
            for j, lib in enumerate(libs):
                v = row.get(lib) or row.get(lib + "_looped")
                if isinstance(v, dict):
                    ax.bar(
                        i + 0.15 * (j - 2),
                        v["s_per_iter"] * 1e3,
                        width=0.14,
                        color=f"C{j}",
                        label=lib if i == 0 else None,
                    )
            ax.hlines(
                row["gemm_floor_s"] * 1e3,
                i - 0.4,
                i + 0.4,
                colors="k",
                linestyles="--",
                label="GEMM floor" if i == 0 else None,
            )
        ax.set_xticks(range(len(rows)), [r["shape"] for r in rows], fontsize=8)
        ax.set(ylabel="ms per Lloyd iteration (CPU, float32)", title="k-means: tlkernels vs peers (lower is better)")
        ax.legend(fontsize=8)
        save_figure(fig, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
