"""k-means ops (kmeans_assign, kmeans_update) on every backend against the float64 reference:
awkward sizes, batched / shared layouts, ties, float32 cancellation, determinism, bad inputs,
opcheck."""

from __future__ import annotations

import pytest
import torch

from conftest import TOLERANCES, assert_close
from tlkernels import reference
from tlkernels.ops import BACKEND_NAMESPACES

# (N, D, K): ones, primes, non-multiples of every tile size, a K above the 8/4-lane SIMD width
SIZES = [(1, 1, 1), (7, 3, 2), (31, 5, 17), (97, 13, 37), (300, 2, 5), (129, 70, 9), (0, 4, 3), (53, 37, 1)]


def _check_assignment(labels, dist2, X, C, dtype):
    """labels / dist2 of one backend against the exact float64 reference: dist2 equals the exact
    distance to the chosen centroid and the minimum distance; a label may differ from the
    reference's only at a near-tie (within the dtype's tolerance)."""
    ref_labels, ref_d2 = reference.kmeans_assign(X.double().cpu(), C.double().cpu())
    labels, dist2 = labels.cpu(), dist2.cpu()
    assert labels.dtype == torch.long and dist2.dtype == dtype
    assert labels.shape == ref_labels.shape and dist2.shape == ref_d2.shape
    assert_close(dist2, ref_d2, dtype)
    if dtype == torch.float64:
        assert torch.equal(labels, ref_labels)
    else:
        tol = TOLERANCES[dtype]
        Xp, Cp, _ = reference._as_problems(X.double().cpu(), C.double().cpu())
        chosen = (
            (Xp - torch.gather(Cp, 1, labels.reshape(Cp.shape[0], -1, 1).expand(-1, -1, Cp.shape[2])))
            .square()
            .sum(-1)
            .reshape(ref_d2.shape)
        )
        assert torch.all(chosen <= ref_d2 + tol["atol"] + tol["rtol"] * ref_d2.abs())
        assert (labels != ref_labels).float().mean() < 0.01 or labels.numel() < 100


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", SIZES, ids=str)
def test_assign_matches_reference(backend, dtype, size):
    N, D, K = size
    gen = torch.Generator().manual_seed(N * 1000 + D * 10 + K)
    X = torch.randn(N, D, generator=gen, dtype=torch.float64).to(dtype).to(backend.device)
    C = torch.randn(K, D, generator=gen, dtype=torch.float64).to(dtype).to(backend.device)
    labels, dist2 = backend.op("kmeans_assign")(X, C)
    assert labels.shape == (N,)
    _check_assignment(labels, dist2, X, C, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "layout", ["batched", "shared_x", "runs_per_x", "shared_c", "expanded_x", "transposed", "strided"]
)
def test_assign_layouts(backend, dtype, layout):
    gen = torch.Generator().manual_seed(7)
    N, D, K = 61, 11, 6
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64).to(dtype).to(backend.device)  # noqa: E731
    if layout == "batched":
        X, C = r(3, N, D), r(3, K, D)
    elif layout == "shared_x":  # one data set, 4 problems
        X, C = r(N, D), r(4, K, D)
    elif layout == "runs_per_x":  # 2 data sets, 3 problems each
        X, C = r(2, N, D), r(6, K, D)
    elif layout == "shared_c":
        X, C = r(3, N, D), r(K, D)
    elif layout == "expanded_x":  # stride-0 expansion: read once, never copied
        X, C = r(N, D).expand(5, N, D), r(5, K, D)
    elif layout == "transposed":
        X, C = r(D, N).t(), r(2, D, K).transpose(1, 2)
    else:
        X, C = r(N, 2 * D)[:, ::2], r(K, D)
    labels, dist2 = backend.op("kmeans_assign")(X, C)
    _check_assignment(labels, dist2, X, C, dtype)


def test_ties_go_to_the_lowest_index(backend):
    for dtype in (torch.float32, torch.float64):
        X = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [5.0, 5.0]], dtype=dtype, device=backend.device)
        # duplicated centroids and a point (0, 0) equidistant from (1, 0) and (-1, 0)
        C = torch.tensor(
            [[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 3.0]] + [[9.0, 9.0]] * 12,
            dtype=dtype,
            device=backend.device,
        )
        labels, dist2 = backend.op("kmeans_assign")(X, C)
        assert labels.tolist() == [0, 0, 3, 3]
        assert dist2.tolist() == [1.0, 0.0, 0.0, 29.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_ties_in_integer_data(backend, dtype):
    """Integer data (like digits) has many exactly equidistant centroids: whatever the rounding
    of the scores, the lowest index among the truly nearest wins, as in the exact reference."""
    gen = torch.Generator().manual_seed(12)
    X = torch.randint(-3, 4, (600, 5), generator=gen).to(dtype).to(backend.device)
    C = torch.randint(-3, 4, (40, 5), generator=gen).to(dtype).to(backend.device)
    labels, dist2 = backend.op("kmeans_assign")(X, C)
    ref_labels, ref_d2 = reference.kmeans_assign(X.double().cpu(), C.double().cpu())
    assert torch.equal(labels.cpu(), ref_labels)
    assert torch.equal(dist2.double().cpu(), ref_d2)


@pytest.mark.parametrize("K", [9, 80])  # 80: beyond one block of the direct kernel (GEMM, AMX or blocked, by CPU)
def test_float32_cancellation_is_not_visible(backend, K):
    """Far from the origin, ‖x‖² − 2x·c + ‖c‖² in float32 loses every digit; the reported
    distance is recomputed from differences (non-negative, exact where x == c)."""
    gen = torch.Generator().manual_seed(3)
    X64 = 1000.0 + 1e-3 * torch.randn(257, 6, generator=gen, dtype=torch.float64)
    X = X64.float().to(backend.device)
    C = X[:K].clone()
    labels, dist2 = backend.op("kmeans_assign")(X, C)
    assert bool((dist2 >= 0).all())
    assert torch.equal(dist2[:K].cpu(), torch.zeros(K))
    exact = (X.double() - C.double()[labels]).square().sum(-1)
    torch.testing.assert_close(dist2.double(), exact, rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", SIZES, ids=str)
def test_update_matches_reference(backend, dtype, size):
    N, D, K = size
    gen = torch.Generator().manual_seed(N + D + K)
    X = torch.randn(N, D, generator=gen, dtype=torch.float64).to(dtype).to(backend.device)
    labels = torch.randint(0, K, (N,), generator=gen).to(backend.device)
    sums, counts = backend.op("kmeans_update")(X, labels, K, None)
    ref_s, ref_c = reference.kmeans_update(X.double(), labels, K)
    assert sums.shape == (K, D) and counts.shape == (K,) and sums.dtype == dtype
    assert_close(sums, ref_s, dtype)
    assert_close(counts, ref_c, dtype)
    w = torch.rand(N, generator=gen, dtype=torch.float64).to(dtype).to(backend.device)
    sums, counts = backend.op("kmeans_update")(X, labels, K, w)
    ref_s, ref_c = reference.kmeans_update(X.double(), labels, K, w.double())
    assert_close(sums, ref_s, dtype)
    assert_close(counts, ref_c, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "layout",
    ["batched", "runs_per_x", "weights_per_x", "weights_per_problem", "shared_labels", "int32_labels", "strided"],
)
def test_update_layouts(backend, dtype, layout):
    gen = torch.Generator().manual_seed(11)
    N, D, K = 53, 7, 5
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64).to(dtype).to(backend.device)  # noqa: E731
    lab = lambda *s: torch.randint(0, K, s, generator=gen).to(backend.device)  # noqa: E731
    w = None
    if layout == "batched":
        X, L = r(3, N, D), lab(3, N)
    elif layout == "runs_per_x":
        X, L = r(2, N, D), lab(6, N)
    elif layout == "weights_per_x":
        X, L, w = r(2, N, D), lab(6, N), r(2, N).abs()
    elif layout == "weights_per_problem":
        X, L, w = r(N, D), lab(4, N), r(4, N).abs()
    elif layout == "shared_labels":
        X, L = r(3, N, D), lab(N)
    elif layout == "int32_labels":
        X, L = r(N, D), lab(N).int()
    else:
        X, L, w = r(N, 3 * D)[:, ::3], lab(N), r(2 * N).abs()[::2]
    sums, counts = backend.op("kmeans_update")(X, L, K, w)
    ref_s, ref_c = reference.kmeans_update(X.double().cpu(), L.cpu(), K, None if w is None else w.double().cpu())
    assert_close(sums, ref_s, dtype)
    assert_close(counts, ref_c, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "layout",
    ["plain", "batched", "runs_per_x", "weights", "weights_per_problem", "shared_c_weights_per_problem", "empty"],
)
def test_step_is_assign_then_update(backend, dtype, layout):
    """kmeans_step (fused on the CPU) == kmeans_assign followed by kmeans_update of its labels."""
    gen = torch.Generator().manual_seed(13)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64).to(dtype).to(backend.device)  # noqa: E731
    N, D, K, w = 301, 9, 11, None
    if layout == "plain":
        X, C = r(N, D), r(K, D)
    elif layout == "batched":
        X, C = r(3, N, D), r(3, K, D)
    elif layout == "runs_per_x":
        X, C = r(2, N, D), r(6, K, D)
    elif layout == "weights":
        X, C, w = r(N, D), r(4, K, D), r(N).abs()
    elif layout == "weights_per_problem":
        X, C, w = r(2, N, D), r(4, K, D), r(4, N).abs()
    elif layout == "shared_c_weights_per_problem":
        X, C, w = r(N, D).expand(3, N, D), r(K, D), r(3, N).abs()
    else:
        X, C = r(0, D), r(K, D)
    labels, dist2, sums, counts = backend.op("kmeans_step")(X, C, w)
    _check_assignment(labels, dist2, X, C, dtype)
    ref_s, ref_c = reference.kmeans_update(X.double().cpu(), labels.cpu(), K, None if w is None else w.double().cpu())
    assert sums.shape == ref_s.shape and counts.shape == ref_c.shape
    assert_close(sums, ref_s, dtype)
    assert_close(counts, ref_c, dtype)
    if X.shape[-2] and backend.name == "cpu":
        sums2, counts2 = backend.op("kmeans_update")(X, labels, K, w)
        assert_close(sums, sums2.double(), dtype)


def test_outputs_are_deterministic_for_any_thread_count(backend):
    gen = torch.Generator().manual_seed(5)
    X = (
        torch.randn(20011, 19, generator=gen).to(backend.device)
        if backend.name != "emu"
        else torch.randn(1031, 19, generator=gen)
    )
    C = torch.randn(3, 23, 19, generator=gen).to(X.device)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (threads, 1, threads):
            torch.set_num_threads(n)
            labels, dist2 = backend.op("kmeans_assign")(X, C)
            sums, counts = backend.op("kmeans_update")(X, labels, 23, None)
            results.append((labels, dist2, sums, counts) + tuple(backend.op("kmeans_step")(X, C, None)))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


# ----------------------------------------------------------------------------- bad inputs
def test_bad_inputs_name_the_argument(backend):
    dev = backend.device
    assign, update = backend.op("kmeans_assign"), backend.op("kmeans_update")
    X, C = torch.randn(10, 3, device=dev), torch.randn(4, 3, device=dev)
    L = torch.zeros(10, dtype=torch.long, device=dev)
    with pytest.raises(ValueError, match="X must be a float32 or float64 tensor"):
        assign(torch.ones(10, 3, dtype=torch.long, device=dev), C)
    with pytest.raises(ValueError, match="X must be a float32 or float64 tensor"):
        assign(X.half(), C.half())
    with pytest.raises(ValueError, match=r"X must have shape \(N, D\) or \(P, N, D\)"):
        assign(torch.randn(10, device=dev), C)
    with pytest.raises(ValueError, match="C must have the feature dimension of X"):
        assign(X, torch.randn(4, 5, device=dev))
    with pytest.raises(ValueError, match="C must have the dtype of X"):
        assign(X, C.double())
    with pytest.raises(ValueError, match="C must hold at least one centroid"):
        assign(X, torch.randn(0, 3, device=dev))
    with pytest.raises(ValueError, match="C must hold a multiple of X's number of data sets"):
        assign(torch.randn(2, 10, 3, device=dev), torch.randn(3, 4, 3, device=dev))
    with pytest.raises(ValueError, match="C must be finite"):
        assign(X, C.clone().fill_(float("nan")))
    for bad in (float("nan"), float("inf")):
        Xb = X.clone()
        Xb[7, 1] = bad
        with pytest.raises(ValueError, match="X must be finite: the distance of row 7"):
            assign(Xb, C)
        with pytest.raises(ValueError, match="X must be finite: the distance of row 7"):
            assign(Xb, C[:1])  # one centroid: the path without scores
        with pytest.raises(ValueError, match="X must be finite"):
            update(Xb, L, 4, None)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, K\) = \[0, 4\), got 4 at row 3"):
        update(X, L.clone().index_fill_(0, torch.tensor([3], device=dev), 4), 4, None)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, K\) = \[0, 4\), got -1 at row 2"):
        update(X, L.clone().index_fill_(0, torch.tensor([2], device=dev), -1), 4, None)
    with pytest.raises(ValueError, match="labels must be an int64"):
        update(X, L.float(), 4, None)
    with pytest.raises(ValueError, match="labels must have one entry per row of X"):
        update(X, L[:9], 4, None)
    with pytest.raises(ValueError, match="K must be at least 1"):
        update(X, L, 0, None)
    w = torch.ones(10, device=dev)
    w[5] = -1.0
    with pytest.raises(ValueError, match="weights must be finite and non-negative, got -1 at row 5"):
        update(X, L, 4, w)
    with pytest.raises(ValueError, match="weights must have shape"):
        update(X, L, 4, torch.ones(9, device=dev))
    step = backend.op("kmeans_step")
    with pytest.raises(ValueError, match="weights must be finite and non-negative, got -1 at row 5"):
        step(X, C, w)
    with pytest.raises(ValueError, match="weights must have shape"):
        step(X, C, torch.ones(9, device=dev))
    Xb = X.clone()
    Xb[4, 0] = float("nan")
    with pytest.raises(ValueError, match="X must be finite: the distance of row 4"):
        step(Xb, C, None)


@pytest.mark.parametrize("K", [4, 100])  # one block / several blocks of the direct kernels
def test_first_non_finite_row_is_named_in_full_row_blocks(backend, K):
    """Rows in complete 16-row blocks (the vector store path of the direct kernel) name the first
    non-finite row in the error too, also when a later block holds another one."""
    gen = torch.Generator().manual_seed(4)
    X = torch.randn(2, 70, 3, generator=gen).to(backend.device)
    C = torch.randn(2, K, 3, generator=gen).to(backend.device)
    for rows, first in (([23, 50], 23), ([50], 50), ([17, 16], 16)):
        Xb = X.clone()
        for r in rows:
            Xb[1, r, 2] = float("inf")
        for op in ("kmeans_assign", "kmeans_step"):
            args = (Xb, C) if op == "kmeans_assign" else (Xb, C, None)
            with pytest.raises(ValueError, match=f"X must be finite: the distance of row {first} \\(problem 1\\)"):
                backend.op(op)(*args)


@pytest.mark.parametrize("namespace", BACKEND_NAMESPACES)
def test_opcheck(namespace):
    ops = getattr(torch.ops, namespace)
    gen = torch.Generator().manual_seed(9)
    for dtype in (torch.float32, torch.float64):
        X = torch.randn(2, 37, 5, generator=gen, dtype=dtype)
        C = torch.randn(4, 6, 5, generator=gen, dtype=dtype)
        torch.library.opcheck(ops.kmeans_assign, (X, C))
        torch.library.opcheck(ops.kmeans_assign, (X[0], C[0]))
        labels = torch.randint(0, 6, (4, 37), generator=gen)
        torch.library.opcheck(ops.kmeans_update, (X, labels, 6, None))
        torch.library.opcheck(ops.kmeans_update, (X[0], labels[0], 6, torch.rand(37, dtype=dtype)))
        torch.library.opcheck(ops.kmeans_step, (X, C, None))
        torch.library.opcheck(ops.kmeans_step, (X[0], C[0], torch.rand(37, dtype=dtype)))


def test_torch_compile_fullgraph():
    def step(X, C):
        labels, d2 = torch.ops.tlkernels.kmeans_assign(X, C)
        sums, counts = torch.ops.tlkernels.kmeans_update(X, labels, C.shape[0], None)
        return sums / counts.clamp_min(1)[:, None], d2.sum()

    X, C = torch.randn(50, 3), torch.randn(4, 3)
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(X, C), step(X, C)):
        torch.testing.assert_close(got, want)


# ---------------------------------------------------------------- CPU SIMD levels of the epilogue
SIMD_LEVELS = [
    "scalar",
    "avx2",
    "avx512",
    "avx512_direct",
    "avx512_wide",
    "avx512_amx",
]  # capped at what the CPU runs (tlkernels reads TLK_KMEANS_SIMD per call)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("level", SIMD_LEVELS)
def test_cpu_simd_levels_agree(monkeypatch, level, dtype):
    """Every row kernel (scalar, AVX2, the transposed AVX-512 epilogue, the direct AVX-512 kernel
    for float32 K <= 64 and, blocked, up to K = 512 (513: back to the GEMM), AMX bf16 tile
    products for float32 K > 64 where the CPU has AMX) gives the
    same labels as the scalar one and the reference's distances, on
    sizes that leave partial vectors / row groups everywhere (1, 2, 3 and 4 vectors of centroids),
    through assign and the fused step, with shared and batched centroids and with one X shared by
    several problems (K = 1 with several problems on one X: the k-means++ candidates)."""
    gen = torch.Generator().manual_seed(21)
    for N, D, K in [
        (1, 1, 1),
        (15, 3, 2),
        (17, 16, 16),
        (33, 5, 17),
        (250, 17, 65),
        (70, 33, 7),
        (300, 16, 64),
        (45, 40, 48),
        (129, 2, 33),
        (53, 37, 1),
        (40, 16, 1),
        (100, 32, 130),
        (37, 70, 80),
        (16, 1, 97),
        (70, 9, 300),
        (20, 4, 512),
        (18, 3, 513),
        (40, 24, 176),
    ]:
        X = torch.randn(2, N, D, generator=gen, dtype=torch.float64).to(dtype)
        C = torch.randn(2, K, D, generator=gen, dtype=torch.float64).to(dtype)
        monkeypatch.setenv("TLK_KMEANS_SIMD", "scalar")
        want_l, want_d = torch.ops.tlkernels.kmeans_assign(X, C)
        want_step = torch.ops.tlkernels.kmeans_step(X[0], C[0], None)
        monkeypatch.setenv("TLK_KMEANS_SIMD", level)
        labels, dist2 = torch.ops.tlkernels.kmeans_assign(X, C)
        assert torch.equal(labels, want_l), (N, D, K)
        assert_close(dist2, want_d, dtype)
        _check_assignment(labels, dist2, X, C, dtype)
        got_step = torch.ops.tlkernels.kmeans_step(X[0], C[0], None)
        assert torch.equal(got_step[0], want_step[0])
        for g, w in zip(got_step[1:], want_step[1:]):
            assert_close(g, w, dtype)
        monkeypatch.setenv("TLK_KMEANS_SIMD", "scalar")
        want_l, want_d = torch.ops.tlkernels.kmeans_assign(X[0], C)  # one X, two problems
        monkeypatch.setenv("TLK_KMEANS_SIMD", level)
        labels, dist2 = torch.ops.tlkernels.kmeans_assign(X[0], C)
        assert torch.equal(labels, want_l), (N, D, K)
        assert_close(dist2, want_d, dtype)


@pytest.mark.parametrize("level", SIMD_LEVELS)
def test_cpu_simd_levels_break_ties_and_band_hits_exactly(monkeypatch, level):
    """Integer data puts several scores inside the rounding band (the exact-distance path) and
    makes exact ties: every level picks the reference's label, lowest index first."""
    monkeypatch.setenv("TLK_KMEANS_SIMD", level)
    gen = torch.Generator().manual_seed(12)
    for dtype in (torch.float32, torch.float64):
        for K in (40, 100, 300):  # the direct kernel (one block, blocked) / the AMX products
            X = torch.randint(-3, 4, (600, 5), generator=gen).to(dtype)
            C = torch.randint(-3, 4, (K, 5), generator=gen).to(dtype)
            labels, dist2 = torch.ops.tlkernels.kmeans_assign(X, C)
            ref_labels, ref_d2 = reference.kmeans_assign(X.double(), C.double())
            assert torch.equal(labels, ref_labels)
            assert torch.equal(dist2.double(), ref_d2)


def test_cpu_simd_level_must_be_known(monkeypatch):
    monkeypatch.setenv("TLK_KMEANS_SIMD", "sse9")
    with pytest.raises(
        ValueError,
        match="TLK_KMEANS_SIMD must be 'scalar', 'avx2', 'avx512', 'avx512_direct', 'avx512_wide' or 'avx512_amx'",
    ):
        torch.ops.tlkernels.kmeans_assign(torch.randn(4, 2), torch.randn(2, 2))
