"""k-means: CPU time per Lloyd iteration on ONE thread, tlkernels vs scikit-learn (load-robust).

The machines these benchmarks run on are 2-core VMs shared with other jobs, where wall-clock
times of multi-threaded runs swing by 2-10x (see bench_kmeans.py's JSON). CPU time of a
single-threaded process (time.process_time, BLAS and OpenMP limited to one thread) measures the
work each library does and barely depends on the neighbours. Per iteration:
(t(fit with 1 + I iterations) - t(fit with 1 iteration)) / I, best of 3; GEMM floor: at::mm of
the X·Cᵀ products in 1024-row chunks.

    python bench/bench_kmeans_cputime.py
"""

import time
import warnings

import torch
from sklearn.cluster import KMeans as SK
from threadpoolctl import threadpool_limits

from tlkernels.cluster import KMeans, batched_kmeans

warnings.filterwarnings("ignore")
torch.set_num_threads(1)


def cpu(f, reps=3):
    best = 1e9
    for _ in range(reps):
        t0 = time.process_time()
        f()
        best = min(best, time.process_time() - t0)
    return best


def per_iter(fit, I=5):
    return (cpu(lambda: fit(1 + I)) - cpu(lambda: fit(1))) / I


with threadpool_limits(1):
    for N, D, K in [(200000, 64, 256), (1000000, 16, 64)]:
        g = torch.Generator().manual_seed(0)
        X = torch.randn(N, D, generator=g)
        init = X[torch.randperm(N, generator=g)[:K]].clone()
        Xn, In = X.numpy(), init.numpy()
        t_ours = per_iter(lambda n: KMeans(K, init=init, max_iter=n, tol=0).fit(X))
        t_sk = per_iter(lambda n: SK(K, init=In, n_init=1, max_iter=n, tol=0, algorithm="lloyd").fit(Xn))
        out = torch.empty(1024, K)

        def mm():
            for i in range(0, N, 1024):
                torch.mm(X[i : i + 1024], init.T, out=out[: min(1024, N - i)])

        t_mm = cpu(mm)
        print(
            f"N={N} D={D} K={K}: CPU ms/iter (1 thread) tlkernels {t_ours * 1e3:.1f}  sklearn {t_sk * 1e3:.1f}  "
            f"ratio {t_sk / t_ours:.2f}x  GEMM floor {t_mm * 1e3:.1f} ({t_ours / t_mm:.2f}x floor)",
            flush=True,
        )
    P, N, D, K = 64, 10000, 32, 32
    g = torch.Generator().manual_seed(0)
    X = torch.randn(P, N, D, generator=g)
    init = X[:, :K].clone()
    t_ours = per_iter(lambda n: batched_kmeans(X, K, init=init, max_iter=n, tol=0), I=10)
    t_sk = per_iter(
        lambda n: [
            SK(K, init=init[p].numpy(), n_init=1, max_iter=n, tol=0, algorithm="lloyd").fit(X[p].numpy())
            for p in range(P)
        ],
        I=10,
    )
    print(
        f"batched P={P} N={N} D={D} K={K}: CPU ms/iter (1 thread) tlkernels {t_ours * 1e3:.1f}  sklearn looped {t_sk * 1e3:.1f}  ratio {t_sk / t_ours:.2f}x",
        flush=True,
    )
