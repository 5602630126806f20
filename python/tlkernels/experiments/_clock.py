"""Per-phase timing of the experiments: wall and CPU seconds under a name."""

from __future__ import annotations

import contextlib
import time

__all__ = ["PhaseClock"]


class PhaseClock:
    """with clock(name): adds the block's wall time to clock.seconds[name] and the process's CPU
    time to clock.cpu_seconds[name] (on a shared machine the CPU time is the steadier measure of
    the work: with one thread it is the wall time the block takes alone)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + time.process_time() - c
