"""tlkernels._C is a pybind11 module: build information, the k-means CPU level and the backend
switches; the ops stay in the dispatcher (torch.ops.tlkernels)."""

from __future__ import annotations

import json

import pytest
import torch

from tlkernels import _C


def test_build_info_is_the_dispatcher_ops_build_info():
    info = json.loads(_C.build_info())
    assert info == json.loads(torch.ops.tlkernels._build_info())
    assert info["cuda"] is _C.with_cuda and info["emu"] is _C.with_emu
    assert info["torch"].split("+")[0] == torch.__version__.split("+")[0]


def test_kmeans_cpu_level_follows_the_cap(monkeypatch):
    levels = _C.kmeans_cpu_levels()
    assert levels[:2] == ["scalar", "avx2"] and len(levels) == len(set(levels))
    assert _C.kmeans_cpu_level() in levels
    monkeypatch.setenv("TLK_KMEANS_SIMD", "scalar")
    assert _C.kmeans_cpu_level() == "scalar" == torch.ops.tlkernels._kmeans_cpu_kernels()


def test_poison_switch_round_trips():
    before = _C.poison_outputs()
    try:
        _C.set_poison_outputs(not before)
        assert _C.poison_outputs() is (not before)
    finally:
        _C.set_poison_outputs(before)
    assert _C.poison_outputs() is before


@pytest.mark.skipif(not _C.with_emu, reason="this build has no emulator (TLK_EMU=OFF)")
def test_emulator_fiber_stack_switch():
    before = _C.emu_fiber_stack_size()
    try:
        _C.emu_set_fiber_stack_size(256 * 1024)
        assert _C.emu_fiber_stack_size() >= 256 * 1024
        x = torch.randn(100, 8, dtype=torch.float64)
        c = torch.randn(3, 8, dtype=torch.float64)
        assert torch.equal(torch.ops.tlkernels_emu.kmeans_assign(x, c)[0], torch.ops.tlkernels.kmeans_assign(x, c)[0])
        with pytest.raises(ValueError, match="bytes: .*at least 16 KiB"):
            _C.emu_set_fiber_stack_size(1024)
    finally:
        _C.emu_set_fiber_stack_size(before)
    assert _C.emu_fiber_stack_size() == before
