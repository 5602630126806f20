"""The k-means assignment on a vendor GEMM (csrc/kmeans_gemm.h) through the emulator: the CPU BLAS
stands in for cuBLAS, optionally coarsened to TF32 / bf16 inputs (TLK_EMU_GEMM), and the CUDA
device code rescores inside the band. Labels must equal the CPU backend's bit for bit and dist2
the SIMT kernel's, on data full of near-ties that a coarse GEMM alone would get wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tlkernels import emu_profile
from tlkernels.ops import BACKEND_NAMESPACES

pytestmark = pytest.mark.skipif(
    "tlkernels_emu" not in BACKEND_NAMESPACES, reason="emulator backend not built (TLK_EMU=OFF)"
)


def _near_ties(px: int, n: int, d: int, k: int, seed: int, dtype: torch.dtype, offset: float = 30.0):
    """(Px, N, D) rows on or next to the bisector of two of the (K, D) centroids, far from the
    origin: the two distances differ by far less than a TF32 / bf16 product's error."""
    g = torch.Generator().manual_seed(seed)
    C = torch.randn(k, d, generator=g, dtype=torch.float64) + offset
    i = torch.randint(0, k, (px, n), generator=g)
    j = (i + torch.randint(1, k, (px, n), generator=g)) % k
    mid = (C[i] + C[j]) / 2
    step = (C[i] - C[j]) * (torch.randn(px, n, 1, generator=g, dtype=torch.float64) * 1e-4)
    X = mid + step + torch.randn(px, n, d, generator=g, dtype=torch.float64) * 1e-3
    return X.to(dtype), C.to(dtype)


def _layouts(dtype: torch.dtype, seed: int):
    """(name, X, C): one matrix, one data set shared by P problems, P data sets sharing C, and
    n_init-style problems (Px data sets, M problems each)."""
    X, C = _near_ties(2, 413, 19, 11, seed, dtype)
    g = torch.Generator().manual_seed(seed + 1)
    # per-problem centroids: C in another order, each nudged, so that every problem keeps the ties
    Cp = torch.stack([C[torch.randperm(C.shape[0], generator=g)] for _ in range(6)])
    Cp = Cp + (torch.randn(Cp.shape, generator=g, dtype=torch.float64) * 1e-6).to(dtype)
    return [
        ("single", X[0], C),
        ("shared_x", X[0], Cp[:3]),
        ("shared_c", X, C),
        ("batched", X, Cp[:6]),
    ]


def _emu_assign(monkeypatch, X, C, mode: str, emu: str, claim: str | None = None, chunk: str = "700"):
    monkeypatch.setenv("TLK_KMEANS_GEMM", mode)
    monkeypatch.setenv("TLK_EMU_GEMM", emu)
    monkeypatch.setenv("TLK_KMEANS_GEMM_CHUNK", chunk)
    if claim is None:
        monkeypatch.delenv("TLK_EMU_GEMM_CLAIM", raising=False)
    else:
        monkeypatch.setenv("TLK_EMU_GEMM_CLAIM", claim)
    return torch.ops.tlkernels_emu.kmeans_assign(X, C)


@pytest.mark.parametrize("chunk", ["700", "1000000"])  # 13-23 rows per chunk, or one chunk
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("emu", ["ieee", "tf32", "bf16"])
@pytest.mark.parametrize("mode", ["gemm", "bf16x3"])
def test_gemm_path_labels_equal_the_cpu(monkeypatch, mode, emu, dtype, chunk):
    for name, X, C in _layouts(dtype, seed=3):
        cpu_labels, cpu_d2 = torch.ops.tlkernels.kmeans_assign(X, C)
        monkeypatch.setenv("TLK_KMEANS_GEMM", "simt")
        simt_labels, simt_d2 = torch.ops.tlkernels_emu.kmeans_assign(X, C)
        labels, d2 = _emu_assign(monkeypatch, X, C, mode, emu, chunk=chunk)
        assert torch.equal(labels, cpu_labels), (name, (labels != cpu_labels).sum().item())
        assert torch.equal(labels, simt_labels), name
        assert torch.equal(d2, simt_d2), name  # the same exact-distance code
        torch.testing.assert_close(d2, cpu_d2, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0)


@pytest.mark.parametrize("emu", ["tf32", "bf16"])
def test_a_band_too_narrow_for_the_gemm_gives_wrong_labels(monkeypatch, emu):
    """The same data with the coarsened GEMM but the IEEE band: labels go wrong in every layout,
    so the test above holds because the band covers the GEMM's
    precision, not by luck of the data."""
    for name, X, C in _layouts(torch.float32, seed=3):
        cpu_labels, _ = torch.ops.tlkernels.kmeans_assign(X, C)
        labels, _ = _emu_assign(monkeypatch, X, C, "gemm", emu, claim="ieee")
        assert (labels != cpu_labels).sum() > 0, name


def test_gemm_path_through_kmeans_step(monkeypatch):
    X, C = _near_ties(1, 300, 7, 5, 11, torch.float32)
    w = torch.rand(1, 300, generator=torch.Generator().manual_seed(0))
    ref = torch.ops.tlkernels.kmeans_step(X, C, w)
    monkeypatch.setenv("TLK_KMEANS_GEMM", "gemm")
    monkeypatch.setenv("TLK_EMU_GEMM", "tf32")
    got = torch.ops.tlkernels_emu.kmeans_step(X, C, w)
    assert torch.equal(got[0], ref[0])
    for a, b in zip(got[1:], ref[1:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _kernels(X, C) -> list[str]:
    with emu_profile.profile() as prof:
        torch.ops.tlkernels_emu.kmeans_assign(X, C)
    return [launch.short_name for launch in prof.launches]


def test_auto_takes_the_simt_kernel_only_below_the_flop_threshold(monkeypatch):
    monkeypatch.delenv("TLK_KMEANS_GEMM", raising=False)
    small = _near_ties(1, 64, 8, 4, 0, torch.float32)  # 2·N·K·D = 4096 FLOPs
    large = _near_ties(1, 4096, 32, 16, 0, torch.float32)  # 2^22 FLOPs
    assert _kernels(small[0][0], small[1]) == ["kmeans_assign_kernel<float>"]
    names = _kernels(large[0][0], large[1])
    assert names and set(names) == {"kmeans_scores_kernel<float>"}


def _line(header: str, text: str) -> str:
    """'<header>:<line>:' of the first line of csrc/kernels/<header> containing text."""
    path = Path(__file__).resolve().parents[1] / "csrc" / "kernels" / header
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if text in line:
            return f"{header}:{n}:"
    raise AssertionError(f"{text!r} not in {header}")


def test_scores_kernel_reads_the_score_block_coalesced(monkeypatch):
    """A warp's score loads are one 128-byte run of a row of G (consecutive rows of X): 4 sectors."""
    monkeypatch.setenv("TLK_KMEANS_GEMM", "gemm")
    g = torch.Generator().manual_seed(0)
    C = torch.randn(8, 16, generator=g) * 10
    X = C[torch.arange(256) % 8] + torch.randn(256, 16, generator=g) * 1e-3
    with emu_profile.profile() as prof:
        torch.ops.tlkernels_emu.kmeans_assign(X, C)
    (launch,) = [x for x in prof.launches if x.short_name == "kmeans_scores_kernel<float>"]
    scores = launch.site(_line("kmeans.cuh", "ld_global(&Gq[k * ldg])"), "global_load")
    assert scores.requests == 8 * 8  # K loads by each of the 8 warps
    assert scores.units == scores.ideal == 4 * scores.requests


@pytest.mark.parametrize(
    ("var", "value"), [("TLK_KMEANS_GEMM", "tensor"), ("TLK_EMU_GEMM", "fp8"), ("TLK_KMEANS_GEMM_CHUNK", "0")]
)
def test_bad_settings_name_the_variable(monkeypatch, var, value):
    monkeypatch.setenv("TLK_KMEANS_GEMM", "gemm")
    monkeypatch.setenv(var, value)
    X, C = _near_ties(1, 10, 3, 2, 0, torch.float32)
    with pytest.raises(ValueError, match=var):
        torch.ops.tlkernels_emu.kmeans_assign(X[0], C)


def test_band_follows_torchs_float32_matmul_precision(monkeypatch):
    """float32_matmul_precision('medium') lets the BLAS use bf16: the emulator reports bf16 and the
    band widens (more exact distances, same labels)."""
    monkeypatch.setenv("TLK_KMEANS_GEMM", "gemm")
    monkeypatch.setenv("TLK_EMU_GEMM", "ieee")
    X, C = _near_ties(1, 500, 16, 8, 5, torch.float32)

    def run():
        with emu_profile.profile() as prof:
            labels, _ = torch.ops.tlkernels_emu.kmeans_assign(X[0], C)
        return labels, sum(x.flops for x in prof.launches)

    before = torch.get_float32_matmul_precision()
    try:
        labels_high, flops_high = run()
        torch.set_float32_matmul_precision("medium")
        labels_medium, flops_medium = run()
    finally:
        torch.set_float32_matmul_precision(before)
    assert torch.equal(labels_high, labels_medium)
    assert flops_medium > flops_high
