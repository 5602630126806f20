"""Tests of the SIMT emulator (csrc/emu/emu.h), independent of torch.

* test_selftest: compiles tests/emu/selftest.cpp with g++ and runs it; every expected check must
  report ``ok`` (so a check that silently disappears fails too). Runs three times: with the
  default context switch (assembly on x86_64), with the portable ucontext one (the aarch64
  path), and under AddressSanitizer + UBSan (the emulator annotates its stack switches; the
  sanitizers must see no error in it or in the self-test kernels).
* test_selftest_kernels_are_valid_cuda: compiles tests/emu/selftest_kernels.cuh with nvcc,
  instantiating and launching every kernel, to prove the emulator's test kernels are real CUDA.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CSRC = REPO / "csrc"
EMU_TESTS = REPO / "tests" / "emu"

# Every check tests/emu/selftest.cpp prints, in order.
EXPECTED_CHECKS = [
    "reverse_shared",
    "missing_sync_wrong",
    "missing_sync_fixed",
    "early_exit_sync",
    "syncthreads_count_and_or",
    "uninitialized_shared_nan",
    "shared_fresh_per_block",
    "shared_in_device_function",
    "dynamic_shared_block_sum",
    "static_and_dynamic_shared",
    "transpose_2d_tile",
    "shfl_down_reduce",
    "shfl_xor_allreduce",
    "shfl_modes_exact",
    "shfl_up_scan",
    "ballot_any_all",
    "warp_reduce_intrinsics",
    "syncwarp_exchange",
    "atomic_add_int_float",
    "atomics_misc",
    "deterministic_float_atomics",
    "indices_1d",
    "indices_2d",
    "indices_3d",
    "grid_stride_loop",
    "launch_plan_overload",
    "deadlock_divergent_syncthreads",
    "deadlock_divergent_sites",
    "deadlock_warp_op_mismatch",
    "warp_lane_missing",
    "warp_lane_exited",
    "launch_error_1025_threads",
    "launch_error_dimensions",
    "launch_error_shared_memory",
    "device_exception_propagates",
    "nested_launch_rejected",
    "builtins_outside_kernel",
    "fiber_stack_size",
    "concurrent_launches",
    "timing_64x256_4_barriers",
]


def _run(cmd: list[str], timeout: float, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)


VARIANTS = {
    "default": [],
    "ucontext": ["-DTLK_EMU_UCONTEXT"],
    "asan": ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"],
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_selftest(tmp_path: Path, variant: str) -> None:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not on PATH")
    exe = tmp_path / "selftest"
    cmd = [gxx, "-std=c++20", "-O1", "-pthread", "-Wall", "-Wextra", "-Werror", "-I", str(CSRC)]
    cmd += VARIANTS[variant]
    cmd += [str(EMU_TESTS / "selftest.cpp"), "-o", str(exe)]
    build = _run(cmd, timeout=300)
    if variant == "asan" and build.returncode != 0 and "cannot find" in build.stderr:
        pytest.skip(f"the sanitizer runtimes are not installed: {build.stderr.strip()[:200]}")
    assert build.returncode == 0, f"compiling the self-test failed:\n{' '.join(cmd)}\n{build.stderr}"

    run = _run([str(exe)], timeout=120, cwd=tmp_path)
    report = run.stdout + run.stderr
    lines = run.stdout.splitlines()
    passed = [line.split()[1].rstrip(":") for line in lines if line.startswith("ok ")]
    failed = [line for line in lines if line.startswith("FAIL ")]
    assert not failed, "emulator self-test failures:\n" + "\n".join(failed) + "\n\nfull output:\n" + report
    assert run.returncode == 0, f"self-test exited with {run.returncode}:\n{report}"
    assert "ERROR: AddressSanitizer" not in report and "runtime error:" not in report, report
    missing = [name for name in EXPECTED_CHECKS if name not in passed]
    assert not missing, f"checks not reported ok: {missing}\n\nfull output:\n{report}"
    unexpected = [name for name in passed if name not in EXPECTED_CHECKS]
    assert not unexpected, f"checks missing from EXPECTED_CHECKS: {unexpected}"
    for line in lines:
        if line.startswith("info "):
            print(line)


# Host code that instantiates and launches every kernel of selftest_kernels.cuh (never run).
NVCC_LAUNCHES = r"""
#include "selftest_kernels.cuh"

using namespace tlk_selftest;

void launch_all(float* f, int* i, unsigned* u, double* d, long long* ll, unsigned long long* ull) {
  const dim3 g(2), b(64);
  reverse_block<true><<<g, b>>>(f, f);
  reverse_block<false><<<g, b>>>(f, f);
  early_exit_reverse<<<g, b>>>(f, 1);
  barrier_reductions<<<g, b>>>(i, i);
  four_barrier_sum<<<g, b>>>(f, f);
  read_unwritten_shared<<<g, b>>>(f, d, i);
  read_unwritten_dynamic<<<g, b, 256>>>(f);
  shared_fresh_per_block<<<g, b>>>(f);
  shared_in_device_function<<<g, b>>>(f, i);
  block_sum_dynamic<<<g, b, 256>>>(f, f, 1);
  static_and_dynamic<<<g, b, 512>>>(i);
  dynamic_fill_sum<<<g, b, 1024>>>(ll, 1);
  big_static_shared<<<g, b>>>(f);
  transpose_tiled<<<dim3(2, 2), dim3(kTile, kTileRows)>>>(f, f, 1, 1);
  warp_reduce_down<int><<<g, b>>>(i, i);
  warp_reduce_down<unsigned><<<g, b>>>(u, u);
  warp_reduce_down<float><<<g, b>>>(f, f);
  warp_reduce_down<double><<<g, b>>>(d, d);
  warp_reduce_down<long long><<<g, b>>>(ll, ll);
  warp_reduce_down<unsigned long long><<<g, b>>>(ull, ull);
  warp_allreduce_xor<int><<<g, b>>>(i, i, 32);
  warp_allreduce_xor<float><<<g, b>>>(f, f, 32);
  shuffle_modes<<<g, b>>>(i, i, 0, 1u, 1, 32);
  warp_scan_up<<<g, b>>>(i, i);
  warp_votes<<<g, b>>>(u, i);
  warp_reduce_intrinsics<<<g, b>>>(i, i);
  syncwarp_exchange<<<g, b>>>(i);
  histogram_atomic<<<g, b>>>(i, f, i, 1, 1);
  float_sum_atomic<<<g, b>>>(f, f, 1);
  atomics_misc<<<g, b>>>(i, u, i, i, ull, d, i, 1);
  write_indices<<<dim3(2, 3, 2), dim3(4, 3, 5)>>>(u);
  grid_stride_affine<<<g, b>>>(f, f, 1);
  divergent_sync_deadlock<<<g, b>>>(i);
  divergent_sync_sites<<<g, b>>>(f);
  warp_op_mismatch<<<g, b>>>(u);
  warp_lane_missing<<<g, dim3(48)>>>(i);
  warp_lane_exited<<<g, b>>>(i);
  const tlk::LaunchPlan plan{dim3(2), dim3(kReverseThreads), 0};
  reverse_block<true><<<plan.grid, plan.block, plan.shared_bytes>>>(f, f);
}
"""


def test_selftest_kernels_are_valid_cuda(tmp_path: Path) -> None:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH: cannot check that the self-test kernels are valid CUDA")
    src = tmp_path / "selftest_kernels_nvcc.cu"
    src.write_text(NVCC_LAUNCHES)
    cmd = [
        nvcc,
        "-std=c++20",
        "-arch=sm_80",
        "-x",
        "cu",
        "--Werror",
        "all-warnings",
        "-I",
        str(CSRC),
        "-I",
        str(EMU_TESTS),
        "-c",
        str(src),
        "-o",
        str(tmp_path / "kernels.o"),
    ]
    build = _run(cmd, timeout=300)
    assert build.returncode == 0, f"nvcc rejected the self-test kernels:\n{' '.join(cmd)}\n{build.stderr}"
