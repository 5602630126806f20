"""What this build of tlkernels contains, and a quick self-check of every available backend."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from . import _C, reference
from ._version import __version__
from .ops import BACKEND_NAMESPACES, BUILD_INFO

__all__ = ["build_info", "available_backends", "self_check"]


def available_backends() -> list[tuple[str, str, str]]:
    """(backend, op namespace, device) for every backend that can run here: 'cpu' always, 'emu'
    when the emulator was built, 'cuda' when the CUDA kernels were built and a GPU is present."""
    out = [("cpu", "tlkernels", "cpu")]
    if "tlkernels_emu" in BACKEND_NAMESPACES:
        out.append(("emu", "tlkernels_emu", "cpu"))
    if BUILD_INFO["cuda"] and torch.cuda.is_available():
        out.append(("cuda", "tlkernels", "cuda"))
    return out


def build_info() -> dict:
    """Version, the torch the extension was built against and the one running, the compiled
    backends, the CUDA architectures, whether a GPU is visible, and the k-means CPU kernel level
    this CPU runs (capped by TLK_KMEANS_SIMD)."""
    compiled = ["cpu"] + (["cuda"] if BUILD_INFO["cuda"] else []) + (["emu"] if BUILD_INFO["emu"] else [])
    return {
        "version": __version__,
        "torch_built_against": BUILD_INFO["torch"],
        "torch_running": torch.__version__,
        "compiled_backends": compiled,
        "cuda_archs": BUILD_INFO["cuda_archs"].split(",") if BUILD_INFO["cuda_archs"] else [],
        "gpu_available": torch.cuda.is_available(),
        "runnable_backends": [b for b, _, _ in available_backends()],
        "compiler": BUILD_INFO["compiler"],
        "kmeans_cpu_kernels": _C.kmeans_cpu_level(),
    }


# Each check: (namespace, device, generator) -> max |op - reference| in float64.
_CHECKS: list[tuple[str, Callable]] = []


def _check(name: str):
    def deco(fn):
        _CHECKS.append((name, fn))
        return fn

    return deco


@_check("grad_reverse_backward")
def _check_grad_reverse(ns: str, device: str, gen: torch.Generator) -> float:
    g = torch.randn(1031, dtype=torch.float64, generator=gen).to(device)
    got = getattr(torch.ops, ns).grad_reverse_backward(g, 0.7, None)
    return (got - reference.grad_reverse_backward(g, 0.7)).abs().max().item()


@_check("grad_reverse_branch_backward")
def _check_grad_reverse_branch(ns: str, device: str, gen: torch.Generator) -> float:
    a = torch.randn(1031, dtype=torch.float64, generator=gen).to(device)
    b = torch.randn(1031, dtype=torch.float64, generator=gen).to(device)
    got = getattr(torch.ops, ns).grad_reverse_branch_backward(a, b, 0.7, None)
    return (got - reference.grad_reverse_branch_backward(a, b, 0.7)).abs().max().item()


@_check("ghost_dot")
def _check_ghost_dot(ns: str, device: str, gen: torch.Generator) -> float:
    A = torch.randn(5, 3, 67, dtype=torch.float64, generator=gen).to(device)
    D = torch.randn(5, 3, 13, dtype=torch.float64, generator=gen).to(device)
    G = torch.randn(2, 13, 67, dtype=torch.float64, generator=gen).to(device)
    got = getattr(torch.ops, ns).ghost_dot(A, D, G)
    return (got - reference.ghost_dot(A, D, G)).abs().max().item()


@_check("ghost_gram")
def _check_ghost_gram(ns: str, device: str, gen: torch.Generator) -> float:
    A1 = torch.randn(3, 5, 17, dtype=torch.float64, generator=gen).to(device)
    D1 = torch.randn(3, 5, 7, dtype=torch.float64, generator=gen).to(device)
    A2 = torch.randn(4, 2, 17, dtype=torch.float64, generator=gen).to(device)
    D2 = torch.randn(4, 2, 7, dtype=torch.float64, generator=gen).to(device)
    got = getattr(torch.ops, ns).ghost_gram(A1, D1, A2, D2)
    return (got - reference.ghost_gram(A1, D1, A2, D2)).abs().max().item()


@_check("ghost_norm")
def _check_ghost_norm(ns: str, device: str, gen: torch.Generator) -> float:
    err = 0.0
    for T in (1, 4, 40):  # plain rows, T×T tiles, one Q_i at a time
        A = torch.randn(3, T, 11, dtype=torch.float64, generator=gen).to(device)
        D = torch.randn(3, T, 9, dtype=torch.float64, generator=gen).to(device)
        got = getattr(torch.ops, ns).ghost_norm(A, D)
        err = max(err, (got - reference.ghost_norm(A, D)).abs().max().item())
    return err


@_check("clip_update_")
def _check_clip_update(ns: str, device: str, gen: torch.Generator) -> float:
    alpha = torch.rand(17, dtype=torch.float64, generator=gen).to(device)
    index = torch.tensor([3, 0, 3, 16, 5], device=device)
    s = torch.randn(5, dtype=torch.float64, generator=gen).to(device)
    want = reference.clip_update_(alpha.clone(), index, s, 0.7)
    getattr(torch.ops, ns).clip_update_(alpha, index, s, 0.7)
    return (alpha - want).abs().max().item()


@_check("kmeans_assign")
def _check_kmeans_assign(ns: str, device: str, gen: torch.Generator) -> float:
    X = torch.randn(2, 97, 13, dtype=torch.float64, generator=gen).to(device)
    C = torch.randn(4, 37, 13, dtype=torch.float64, generator=gen).to(device)
    labels, dist2 = getattr(torch.ops, ns).kmeans_assign(X, C)
    ref_labels, ref_dist2 = reference.kmeans_assign(X.cpu(), C.cpu())
    return max(float((labels.cpu() != ref_labels).sum()), (dist2.cpu() - ref_dist2).abs().max().item())


@_check("kmeans_update")
def _check_kmeans_update(ns: str, device: str, gen: torch.Generator) -> float:
    X = torch.randn(2, 97, 13, dtype=torch.float64, generator=gen)
    labels = torch.randint(0, 7, (4, 97), generator=gen)
    w = torch.rand(97, dtype=torch.float64, generator=gen)
    sums, counts = getattr(torch.ops, ns).kmeans_update(X.to(device), labels.to(device), 7, w.to(device))
    ref_sums, ref_counts = reference.kmeans_update(X, labels, 7, w)
    return max((sums.cpu() - ref_sums).abs().max().item(), (counts.cpu() - ref_counts).abs().max().item())


def self_check(tol: float = 1e-10) -> list[dict]:
    """Runs every op on every available backend against ``tlkernels.reference`` in float64.

    Returns one dict per (op, backend): op, backend, max_abs_error, ok, seconds.
    """
    rows = []
    for backend, ns, device in available_backends():
        for name, fn in _CHECKS:
            gen = torch.Generator().manual_seed(0)
            t0 = time.perf_counter()
            try:
                err = fn(ns, device, gen)
                ok = err <= tol
                msg = ""
            except Exception as e:  # reported, not raised: info should show every backend
                err, ok, msg = float("nan"), False, f"{type(e).__name__}: {e}"
            rows.append(
                {
                    "op": name,
                    "backend": backend,
                    "max_abs_error": err,
                    "ok": ok,
                    "seconds": time.perf_counter() - t0,
                    "error": msg,
                }
            )
    return rows
