"""``tlkernels info``: what this build contains, and a self-check of every backend."""

from __future__ import annotations

import argparse
import json

__all__ = ["add_parser"]


def _cmd_info(args: argparse.Namespace) -> int:
    from ..build import build_info, self_check

    info = build_info()
    rows = self_check()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"build": info, "self_check": rows}, f, indent=2)
    print(f"tlkernels {info['version']}")
    print(f"  torch built against : {info['torch_built_against']}")
    print(f"  torch running       : {info['torch_running']}")
    print(f"  compiled backends   : {', '.join(info['compiled_backends'])}")
    print(f"  CUDA architectures  : {', '.join(info['cuda_archs']) or '-'}")
    print(f"  GPU available       : {info['gpu_available']}")
    print(f"  compiler            : {info['compiler']}")
    print(f"  k-means CPU kernels : {info['kmeans_cpu_kernels']} (TLK_KMEANS_SIMD caps the level)")
    print("self-check against tlkernels.reference (float64):")
    for r in rows:
        status = "ok  " if r["ok"] else "FAIL"
        extra = f"  {r['error']}" if r["error"] else ""
        print(
            f"  {status} {r['backend']:<5} {r['op']:<30} max|err|={r['max_abs_error']:.1e} "
            f"({r['seconds'] * 1e3:.1f} ms){extra}"
        )
    if "cuda" in info["compiled_backends"] and not info["gpu_available"]:
        print("  (cuda kernels compiled but no GPU visible: their device code is checked by the emu backend)")
    return 0 if all(r["ok"] for r in rows) else 1


def add_parser(subparsers) -> None:
    """Registers ``tlkernels info``."""
    p = subparsers.add_parser("info", help="build information and a self-check of every backend")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    p.set_defaults(func=_cmd_info)
