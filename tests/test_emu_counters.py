"""The emulator's counters (csrc/emu/counters.h, tlkernels.emu_profile) and the hot kernels held
to their design: loads coalesced, padded shared tiles free of bank conflicts, FLOPs as designed.

Sector and wavefront counts follow from the addresses alone, so the expected numbers below are
derived by hand from the kernels' index arithmetic (comments give the derivation).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tlkernels import emu_profile
from tlkernels.cli import main

if not hasattr(torch.ops.tlkernels_emu, "_profile_start"):
    pytest.skip("emulator backend not built (TLK_EMU=OFF)", allow_module_level=True)


def _one(launches, name):
    found = [L for L in launches if name in L.short_name]
    assert len(found) == 1, [L.short_name for L in launches]
    return found[0]


def test_streaming_kernel_is_fully_coalesced():
    # grad_reverse on float32: 16-byte vector loads, 32 lanes = 512 contiguous bytes = 16 sectors
    launches = emu_profile.profile_op("grad_reverse_backward", {"N": 1 << 12})
    L = _one(launches, "grad_reverse_combine_kernel")
    ld, st = L.kinds["global_load"], L.kinds["global_store"]
    assert ld.requests > 0 and ld.units == ld.ideal and st.units == st.ideal
    assert ld.bytes == 4 * (1 << 12) and st.bytes == 4 * (1 << 12)
    assert ld.per_request == 16.0


def test_row_dot_after_the_vendor_gemm_is_fully_coalesced(monkeypatch):
    monkeypatch.setenv("TLK_GHOST_GEMM", "vendor")
    launches = emu_profile.profile_op("ghost_dot", {"B": 4, "T": 8, "I": 96, "O": 64, "V": 2})
    L = _one(launches, "ghost_segdot_kernel")
    ld = L.kinds["global_load"]
    # W = O = 64 floats per row: each request is 32 consecutive floats = 4 sectors
    assert ld.units == ld.ideal and ld.per_request == 4.0
    assert L.flops == 2 * 4 * 8 * 2 * 64
    assert L.divergent_branches == 0


def test_simt_gemm_tile_loads_and_padded_shared_tiles(monkeypatch):
    monkeypatch.setenv("TLK_GHOST_GEMM", "simt")
    B, T, I, O = 4, 16, 64, 64
    launches = emu_profile.profile_op("ghost_dot", {"B": B, "T": T, "I": I, "O": O, "V": 1})
    L = _one(launches, "ghost_dot_rows_kernel")
    # the FLOPs of A·Gᵀ exactly (shapes are multiples of the 64 × 64 × 16 tiles)
    assert L.flops == 2 * B * T * I * O
    # inner-loop shared loads: a[i] reads 2 words per warp (broadcast), b[j] 16 consecutive words:
    # one wavefront each, no conflicts
    loads = L.kinds["shared_load"]
    assert loads.units == loads.ideal == loads.requests
    # tile stores As[tx·65 + ty + 16l]: bank (tx + ty) mod 32; a warp holds ty = 2w, 2w + 1, so
    # (tx, 2w + 1) and (tx + 1, 2w) share a bank with different words: 2 wavefronts per request
    stores = L.kinds["shared_store"]
    assert stores.units == 2 * stores.requests and stores.ideal == stores.requests
    # global tile loads: 16 lanes read 16 consecutive floats of one row (64 bytes = 2 sectors), the
    # other 16 lanes the next row: 4 sectors per request, the ideal
    g = L.site("ghost.cuh", "global_load")
    assert g.units == g.ideal
    assert L.divergent_branches == 0  # every row and column in range


def _line(header, text):
    """'<header>:<line>:' of the first line of csrc/kernels/<header> containing text."""
    path = Path(__file__).resolve().parents[1] / "csrc" / "kernels" / header
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if text in line:
            return f"{header}:{n}:"
    raise AssertionError(f"{text!r} not in {header}")


def test_kmeans_assignment_padded_tiles_and_uncoalesced_rescoring():
    launches = emu_profile.profile_op("kmeans_assign", {"N": 256, "K": 64, "D": 32})
    L = _one(launches, "kmeans_assign_kernel")
    # Xs[t][c] with a row stride of 33 words: bank (t + c) mod 32, 32 distinct banks per warp
    xs = L.site(_line("kmeans.cuh", "ld_shared(&Xs[t][c])"), "shared_load")
    assert xs.requests > 0 and xs.excess == 0
    assert L.bank_conflicts == 0
    # tile loads: consecutive lanes read consecutive features (128 bytes = 4 sectors per request)
    tile = L.site(_line("kmeans.cuh", "ld_global(&Xp[gn * D + gd])"), "global_load")
    assert tile.units == tile.ideal == 4 * tile.requests
    # the exact-distance rescoring reads one row per lane (stride D): uncoalesced, and counted
    rescoring = L.site(_line("kmeans.cuh", "ld_global(&x[d])"), "global_load")
    assert rescoring.units > 4 * rescoring.ideal
    # the band branch is counted; executed FLOPs cover the 2·N·K·D of the scores
    assert L.kinds["branch"].requests > 0
    assert L.flops >= 2 * 256 * 64 * 32


def test_profiles_do_not_nest_and_counting_is_off_outside():
    with (
        emu_profile.profile() as prof,
        pytest.raises(RuntimeError, match="already running"),
    ):
        torch.ops.tlkernels_emu._profile_start()
    assert prof.launches == []
    with pytest.raises(RuntimeError, match="no profile is running"):
        torch.ops.tlkernels_emu._profile_stop()


def test_unknown_op_and_shape_names_are_refused():
    with pytest.raises(ValueError, match="op must be one of"):
        emu_profile.profile_op("ghost_dots")
    with pytest.raises(ValueError, match="shape name 'X' is not one of ghost_dot's"):
        emu_profile.profile_op("ghost_dot", {"X": 3})


def test_cli_prints_one_line_per_launch(capsys):
    assert main(["emu-profile", "ghost_norm", "--shape", "B=2,T=4,I=8,O=8"]) == 0
    out = capsys.readouterr().out
    assert "ghost_norm" in out and "kernel" in out and "ghost_" in out.splitlines()[-1]
