"""Paper roofline of ghost_dot on A100 / H100 at bench_ghost_ops.py's layer shapes (estimates).

No GPU runs here. For each shape it prints the arithmetic: the GEMM FLOPs of A·Gᵀ (or D·G) and
the bytes the vendor-GEMM path moves (inputs once, the float32 GEMM result written and read
back by the row-dot, D read by the row-dot), the time at published peaks, the time of the fused
SIMT kernel at 40 % of the FP32 SIMT peak, and the ghost_dot / plain-step ratio, the plain step
of the layer being its three GEMMs (forward, input gradient, weight gradient) on tensor cores.
With --emu it also runs the emulator on a scaled-down shape (B / 16) and prints its counters.

    python bench/gpu_roofline.py [--emu]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from bench_ghost_ops import SHAPES

# Published dense peaks: NVIDIA A100 (SXM4 80 GB) and H100 (SXM5) datasheets.
GPUS = {
    "A100": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "hbm": 2.039e12},
    "H100": {"fp32": 67e12, "tf32": 495e12, "bf16": 990e12, "hbm": 3.35e12},
}
GEMM_EFF = 0.7  # fraction of tensor-core peak a large cuBLAS GEMM reaches (assumed)
SIMT_EFF = 0.4  # fraction of FP32 SIMT peak of the 64x64-tile SIMT kernel (assumed, 30-50 %)
BW_EFF = 0.8  # fraction of HBM bandwidth a streaming kernel reaches (assumed)


def estimate(B, T, I, O, gpu, in_bytes=2):
    rows = B * T
    W = min(I, O)  # the narrower GEMM result (ghost_gemm.h picks it)
    flops = 2 * rows * I * O
    gemm_bytes = in_bytes * (rows * I + rows * O + I * O) + 4 * rows * W  # inputs + fp32 result
    rowdot_bytes = 4 * rows * W + in_bytes * rows * W  # read the result and the other operand
    p = GPUS[gpu]
    t_gemm = max(flops / (GEMM_EFF * p["bf16"]), gemm_bytes / (BW_EFF * p["hbm"]))
    t_rowdot = rowdot_bytes / (BW_EFF * p["hbm"])
    t_simt = flops / (SIMT_EFF * p["fp32"])
    t_plain = 3 * max(flops / (GEMM_EFF * p["bf16"]), gemm_bytes / (BW_EFF * p["hbm"]))
    return {
        "flops": flops,
        "gemm_MB": gemm_bytes / 1e6,
        "rowdot_MB": rowdot_bytes / 1e6,
        "t_vendor_us": 1e6 * (t_gemm + t_rowdot),
        "t_simt_us": 1e6 * t_simt,
        "t_plain_us": 1e6 * t_plain,
        "ratio_vendor": (t_plain + t_gemm + t_rowdot) / t_plain,
        "ratio_simt": (t_plain + t_simt) / t_plain,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emu", action="store_true", help="also the emulator's counters at B / 16")
    args = parser.parse_args(argv)
    print(
        f"assumed: GEMM at {GEMM_EFF:.0%} of bf16 tensor-core peak, SIMT kernel at {SIMT_EFF:.0%} of FP32 "
        f"peak, streaming at {BW_EFF:.0%} of HBM; bf16 inputs, float32 GEMM result"
    )
    head = (
        f"{'shape':26s} {'gpu':5s} {'GFLOP':>7s} {'GEMM MB':>8s} {'rowdot MB':>9s} {'vendor us':>10s} "
        f"{'SIMT us':>9s} {'plain us':>9s} {'(plain+dot)/plain vendor':>25s} {'SIMT':>6s}"
    )
    print(head)
    for name, (B, T, I, O) in SHAPES.items():
        for gpu in GPUS:
            e = estimate(B, T, I, O, gpu)
            print(
                f"{name:26s} {gpu:5s} {e['flops'] / 1e9:7.2f} {e['gemm_MB']:8.2f} {e['rowdot_MB']:9.2f} "
                f"{e['t_vendor_us']:10.1f} {e['t_simt_us']:9.1f} {e['t_plain_us']:9.1f} "
                f"{e['ratio_vendor']:25.2f} {e['ratio_simt']:6.2f}"
            )
    if args.emu:
        from tlkernels import emu_profile

        for name, (B, T, I, O) in SHAPES.items():
            b = max(1, B // 16)
            for mode in ("vendor", "simt"):
                os.environ["TLK_GHOST_GEMM"] = mode
                launches = emu_profile.profile_op("ghost_dot", {"B": b, "T": min(T, 64), "I": I, "O": O})
                print(f"{name} at B={b}{', T=64' if T > 64 else ''}, {mode}:")
                print(emu_profile.format_table(launches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
