"""What the benchmarks share: peak-memory measurement around a timed call.

The benchmarks run as scripts (``python benchmarks/NAME.py``), so this folder is on the
import path and ``from common import PeakMemory`` works.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any


class PeakMemory:
    """Peak memory above the level at entry: CUDA allocator stats, or sampled RSS on CPU."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self.base)
            time.sleep(0.002)

    def __enter__(self) -> PeakMemory:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self._rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop.set()
            self._thread.join()


def run_timed(fn: Callable[[], Any], device: str, repeats: int) -> tuple[list[float], int, Any]:
    """Wall times of ``repeats`` calls of ``fn`` (synchronised on CUDA), the peak memory of
    any of them, and the last result. Callers choose the statistic (best, median)."""
    import torch

    times, peak, result = [], 0, None
    for _ in range(repeats):
        with PeakMemory(device) as mem:
            start = time.perf_counter()
            result = fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        peak = max(peak, mem.peak)
    return times, peak, result
