"""Shared benchmark helpers: median timing after warm-up (alone, or interleaved), machine description, JSON + PNG."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch


def median_time(fn: Callable[[], object], repeats: int = 15, warmup: int = 3, min_seconds: float = 0.0) -> float:
    """Median wall time of fn() in seconds over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    while len(times) < repeats or sum(times) < min_seconds:
        times.append(_timed(fn))
    return statistics.median(times)


def best_time(fn: Callable[[], object], repeats: int = 7, warmup: int = 1) -> float:
    """Smallest wall time of fn() in seconds over `repeats` runs after `warmup` runs: on a shared
    machine the neighbours only ever add time, so the minimum is the steadiest estimate of the
    work itself (for calls of 10 ms and more, where the median still swings by 20-30%)."""
    for _ in range(warmup):
        fn()
    return min(_timed(fn) for _ in range(repeats))


def _timed(fn: Callable[[], object]) -> float:
    """Wall time of one fn() in seconds (GPU work included)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def interleaved_median_times(
    fns: dict[str, Callable[[], object]], repeats: int = 200, warmup: int = 10
) -> dict[str, float]:
    """{name: median wall time in seconds}, the functions run in turn within each repeat, so a
    drift of the machine's speed (frequency, a neighbour's load: 20-30% on these 2 vCPUs) hits
    every function alike and their ratios stay meaningful. For fast functions (< ~10 ms)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(_timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def cpu_model() -> str:
    """The CPU's model name, with family / model numbers (they tell AMD generations apart)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if not line.strip():
                    break
    except OSError:
        return platform.processor() or platform.machine()
    name = fields.get("model name", platform.machine())
    return f"{name} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


def machine() -> dict:
    """What the numbers were measured on."""
    return {
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def write_results(path_json: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path_json)), exist_ok=True)
    with open(path_json, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"wrote {path_json}")


def save_figure(fig, path: str) -> None:
    """tight_layout, create the folder, save at 120 dpi, say so."""
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")
