"""The k-means assignment on a vendor GEMM (csrc/kmeans_gemm.h): its band, measured and on paper.

1. The error bound: max |x̃·c̃' − x·c'| / (‖x‖·‖c'‖) of float32 GEMMs with TF32- / bf16-truncated
   inputs and of the bf16x3 split, against ε of kmeans_gemm.h (the bound must hold; the ratio says
   how much slack it has).
2. The cost of the wider band: exact distances per row that the rescoring kernel computes, counted
   by the emulator (kmeans_scores_kernel's FLOPs) for each GEMM precision on Gaussian blobs.
3. A paper roofline (estimates) of the SIMT kernel against the GEMM path on A100 / H100.

    OMP_NUM_THREADS=1 python bench/kmeans_gemm_band.py
"""

from __future__ import annotations

import os

import torch

# Published dense peaks: NVIDIA A100 (SXM4 80 GB) and H100 (SXM5) datasheets.
GPUS = {
    "A100": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "hbm": 2.039e12},
    "H100": {"fp32": 67e12, "tf32": 495e12, "bf16": 990e12, "hbm": 3.35e12},
}
GEMM_EFF, SIMT_EFF, BW_EFF = 0.7, 0.4, 0.8  # assumed fractions of peak (as bench/gpu_roofline.py)


def epsilon(prec: str, D: int) -> float:
    """ε of kmeans_gemm.h: |computed x·c' − x·c'| ≤ ε·‖x‖·‖c'‖."""

    def gamma(n: float) -> float:
        nu = n * 2.0**-23
        return nu / (1 - min(nu, 0.5))

    if prec == "bf16x3":
        u = 2.0**-8
        return 3.1 * u * u + 1.05 * gamma(3 * D + 2)
    u = 2.0**-10 if prec == "tf32" else 2.0**-7
    return 2 * u + u * u + gamma(D) * (1 + u) ** 2


def _truncate(v: torch.Tensor, keep: int) -> torch.Tensor:
    mask = ~((1 << (23 - keep)) - 1)
    return (v.contiguous().view(torch.int32) & mask).view(torch.float32)


def _split(v: torch.Tensor, first: bool) -> torch.Tensor:
    hi = v.to(torch.bfloat16)
    lo = (v - hi.float()).to(torch.bfloat16)
    return torch.cat([hi, hi, lo] if first else [hi, lo, hi], -1).float()


def error_table() -> None:
    print("| D | GEMM | max err / (‖x‖‖c'‖) | ε | ratio |\n|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for D in (19, 128, 1024):
        X = torch.randn(4096, D, generator=g) + 30
        C = torch.randn(64, D, generator=g)
        C = C - C.mean(0)
        exact = X.double() @ C.double().T
        scale = X.double().norm(dim=1, keepdim=True) * C.double().norm(dim=1)
        for prec in ("tf32", "bf16", "bf16x3"):
            if prec == "bf16x3":
                G = _split(X, True) @ _split(C, False).T
            else:
                keep = 10 if prec == "tf32" else 7
                G = _truncate(X, keep) @ _truncate(C, keep).T
            r = ((G.double() - exact).abs() / scale).max().item()
            e = epsilon(prec, D)
            print(f"| {D} | {prec} | {r:.2e} | {e:.2e} | {r / e:.3f} |")


def _blobs(N: int, D: int, K: int, offset: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(K, D, generator=g) * 3 + offset
    X = centres[torch.randint(0, K, (N,), generator=g)] + torch.randn(N, D, generator=g)
    C = X[torch.randperm(N, generator=g)[:K]].clone()  # k-means' first step: centroids from the data
    return X, C


def rescoring_table() -> dict[str, float]:
    """Prints the table; returns the exact distances per row of each GEMM precision on the last
    (D = 128) data set."""
    from tlkernels import emu_profile

    print("\n| N, D, K, offset | GEMM | exact distances / row | labels = CPU |\n|---|---|---|---|")
    last: dict[str, float] = {}
    for N, D, K, offset in ((4096, 32, 64, 0.0), (4096, 32, 64, 100.0), (2048, 128, 256, 0.0)):
        X, C = _blobs(N, D, K, offset)
        cpu, _ = torch.ops.tlkernels.kmeans_assign(X, C)
        for mode, emu in (("gemm", "ieee"), ("bf16x3", "ieee"), ("gemm", "tf32"), ("gemm", "bf16")):
            os.environ["TLK_KMEANS_GEMM"], os.environ["TLK_EMU_GEMM"] = mode, emu
            with emu_profile.profile() as prof:
                labels, _ = torch.ops.tlkernels_emu.kmeans_assign(X, C)
            flops = sum(x.flops for x in prof.launches if x.short_name.startswith("kmeans_scores_kernel"))
            per_row = (flops - N * (3 * D + 3 + K)) / (3 * D) / N
            name = "bf16x3" if mode == "bf16x3" else emu
            print(f"| {N}, {D}, {K}, {offset:g} | {name} | {per_row:.3f} | {bool(torch.equal(labels, cpu))} |")
            last[name] = per_row
    os.environ.pop("TLK_KMEANS_GEMM")
    os.environ.pop("TLK_EMU_GEMM")
    return last


def roofline_table(per_row: dict[str, float]) -> None:
    """Per call, estimates. SIMT: 2·N·K₃₂·D FLOPs (K padded to its 32-centroid tile) at SIMT_EFF of
    FP32, or X read once (4ND), whichever is longer. GEMM path: the GEMM (the longer of its FLOPs at
    GEMM_EFF of its peak and its bytes), then the epilogue (the longer of its bytes and FLOPs). The GEMM
    (IEEE: FP32 SIMT, torch's default; TF32: 2NKD on TF32 tensor cores; bf16x3: 6NKD on bf16 tensor
    cores, with the split operand written and read, 12ND), X read once, the score block written and
    read (8NK: an upper bound, the chunk is sized to stay in L2) and labels / dist2 (12N) at BW_EFF of
    HBM; the epilogue's FLOPs (‖x − v‖, the fold, per_row[precision] exact distances of 3D FLOPs each)
    at SIMT_EFF of FP32, its rows of X and C read from L2 (not counted, as for the SIMT kernel)."""
    print(
        f"\n(exact distances per row: {', '.join(f'{k} {v:.2f}' for k, v in per_row.items())})\n"
        "\n| N, D, K | GPU | SIMT µs | IEEE path µs | TF32 path µs | bf16x3 path µs | best / SIMT |"
        "\n|---|---|---|---|---|---|---|"
    )
    for N, D, K in ((1_000_000, 128, 16), (1_000_000, 128, 256), (1_000_000, 128, 1024), (100_000, 32, 8)):
        k32 = (K + 31) // 32 * 32
        for gpu, p in GPUS.items():
            bw = BW_EFF * p["hbm"]
            t_simt = max(2 * N * k32 * D / (SIMT_EFF * p["fp32"]), 4 * N * D / bw)
            gemm_bytes = (4 * N * D + 4 * N * K) / bw  # X read, score block written

            def epilogue(prec: str, N=N, D=D, K=K, bw=bw) -> float:
                flops = per_row[prec] * 3 * N * D + 3 * N * D + N * K  # distances, ‖x − v‖, the fold
                return max((4 * N * K + 12 * N) / bw, flops / (SIMT_EFF * p["fp32"]))

            paths = {
                "ieee": max(2 * N * K * D / (GEMM_EFF * p["fp32"]), gemm_bytes) + epilogue("ieee"),
                "tf32": max(2 * N * K * D / (GEMM_EFF * p["tf32"]), gemm_bytes) + epilogue("tf32"),
                "bf16x3": max(6 * N * K * D / (GEMM_EFF * p["bf16"]), gemm_bytes + 12 * N * D / bw)
                + epilogue("bf16x3"),
            }
            best = min(paths.values())
            cells = " | ".join(f"{t * 1e6:.0f}" for t in paths.values())
            print(f"| {N}, {D}, {K} | {gpu} | {t_simt * 1e6:.0f} | {cells} | {best / t_simt:.2f} |")


if __name__ == "__main__":
    error_table()
    roofline_table(rescoring_table())
