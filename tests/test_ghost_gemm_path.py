"""The vendor-GEMM path of the per-sample products (csrc/ghost_gemm.h) under the emulator.

On CUDA the GEMM-shaped work goes to cuBLAS and our kernels reduce the result; under the emulator
the same host code runs with the CPU BLAS standing in for cuBLAS, and the reductions
(ghost_segdot, ghost_pair_reduce, ghost_dot_finish) are the CUDA device code. These tests force
each path with TLK_GHOST_GEMM and shrink the chunk and tile sizes (TLK_GHOST_GEMM_CHUNK /
TLK_GHOST_GEMM_TILE) so that chunks and tiles end inside a sample, and compare against the
float64 reference and the fused SIMT kernels. What they cannot show: cuBLAS itself, and the
TF32 / bfloat16 rounding of the GPU's tensor cores (the CPU computes the GEMM in float32).
"""

from __future__ import annotations

import pytest
import torch

from test_ghost_ops import assert_within_bound
from tlkernels import reference  # also loads the compiled ops

if not hasattr(torch.ops.tlkernels_emu, "ghost_dot"):
    pytest.skip("emulator backend not built (TLK_EMU=OFF)", allow_module_level=True)
emu = torch.ops.tlkernels_emu


@pytest.fixture
def path(request, monkeypatch):
    mode, chunk, tile = request.param
    monkeypatch.setenv("TLK_GHOST_GEMM", mode)
    if chunk:
        monkeypatch.setenv("TLK_GHOST_GEMM_CHUNK", str(chunk))
    if tile:
        monkeypatch.setenv("TLK_GHOST_GEMM_TILE", str(tile))
    return request.param


PATHS = [("vendor", None, None), ("vendor", 40, 5), ("simt", None, None)]
PATH_IDS = ["vendor", "vendor-small-chunks-and-tiles", "simt"]
# (B, T, I, O): T = 1, T not dividing the small chunk / tile, I > O and I < O (both GEMM sides)
SHAPES = [(5, 1, 7, 3), (3, 7, 9, 13), (4, 6, 20, 5), (2, 33, 4, 6)]


def _inputs(B, T, I, O, V, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(B, T, I, dtype=torch.float64, generator=g).to(dtype)
    D = torch.randn(B, T, O, dtype=torch.float64, generator=g).to(dtype)
    G = torch.randn(V, O, I, dtype=torch.float64, generator=g).to(dtype)
    return A, D, G


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS, indirect=True)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dot_gram_norm_match_the_reference(path, shape, dtype):
    B, T, I, O = shape
    A, D, G = _inputs(B, T, I, O, 3, dtype, seed=sum(shape))
    A64, D64, G64 = A.double(), D.double(), G.double()
    got = emu.ghost_dot(A, D, G)
    assert got.shape == (B, 3) and got.dtype == dtype
    assert_within_bound(
        got,
        reference.ghost_dot(A64, D64, G64),
        reference.ghost_dot(A64.abs(), D64.abs(), G64.abs()),
        I + O + T,
        dtype,
    )
    got = emu.ghost_gram(A, D, A[:3], D[:3])
    assert_within_bound(
        got,
        reference.ghost_gram(A64, D64, A64[:3], D64[:3]),
        reference.ghost_gram(A64.abs(), D64.abs(), A64[:3].abs(), D64[:3].abs()),
        I + O + T * T,
        dtype,
    )
    got = emu.ghost_norm(A, D)
    assert_within_bound(
        got,
        reference.ghost_norm(A64, D64),
        reference.ghost_norm(A64.abs(), D64.abs()),
        I + O + T * T,
        dtype,
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_take_the_gemm_path_with_a_float32_result(monkeypatch, dtype):
    """auto sends float16 / bfloat16 to the GEMM path; results match the SIMT path on float32 copies."""
    A, D, G = _inputs(4, 5, 24, 10, 1, dtype, seed=3)
    monkeypatch.setenv("TLK_GHOST_GEMM", "auto")
    auto = (emu.ghost_dot(A, D, G[0]), emu.ghost_gram(A, D, A, D), emu.ghost_norm(A, D))
    monkeypatch.setenv("TLK_GHOST_GEMM", "simt")
    simt = (emu.ghost_dot(A, D, G[0]), emu.ghost_gram(A, D, A, D), emu.ghost_norm(A, D))
    for a, s in zip(auto, simt):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), s.float(), rtol=1e-2, atol=1e-2)


def test_vendor_and_simt_paths_agree_to_rounding(monkeypatch):
    A, D, G = _inputs(6, 9, 31, 17, 2, torch.float64, seed=11)
    out = {}
    for mode in ("vendor", "simt"):
        monkeypatch.setenv("TLK_GHOST_GEMM", mode)
        out[mode] = (
            emu.ghost_dot(A, D, G),
            emu.ghost_gram(A, D, A[:4], D[:4]),
            emu.ghost_norm(A, D),
        )
    for v, s in zip(out["vendor"], out["simt"]):
        torch.testing.assert_close(v, s, rtol=1e-12, atol=1e-12)


def test_a_bad_mode_or_size_names_the_variable(monkeypatch):
    A, D, G = _inputs(2, 2, 3, 3, 1, torch.float32, seed=0)
    monkeypatch.setenv("TLK_GHOST_GEMM", "tensorcore")
    with pytest.raises(ValueError, match="TLK_GHOST_GEMM must be 'auto', 'vendor' or 'simt'"):
        emu.ghost_dot(A, D, G[0])
    monkeypatch.setenv("TLK_GHOST_GEMM", "vendor")
    monkeypatch.setenv("TLK_GHOST_GEMM_TILE", "0")
    with pytest.raises(ValueError, match="TLK_GHOST_GEMM_TILE must be a positive integer"):
        emu.ghost_gram(A, D, A, D)
