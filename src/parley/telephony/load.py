"""CPU load of a group of processes, for admission control (new calls get 503 above a load).

The media clock measures the event loop's own process. An agent also decodes speech in worker
processes: when they (or the cores they share with the event loop) are saturated, every call's
recognition slows down while the event loop looks idle. :class:`CpuMeter` measures such a group
with psutil, lazily, over windows of at least a second, so an INVITE costs a few ``/proc`` reads at
most once a second.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import psutil


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity: ``taskset`` narrows it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class CpuMeter:
    """CPU time the processes ``pids`` used over the last window, as a fraction of ``cores``
    (1.0: every one of those cores busy all the time). Processes that exit are dropped."""

    def __init__(self, pids: Sequence[int], cores: int, window: float = 1.0) -> None:
        if cores < 1:
            raise ValueError(f"cores must be at least 1, not {cores}")
        self.cores = cores
        self.window = window
        self._processes = [psutil.Process(pid) for pid in pids]
        self._mark = (time.monotonic(), self._cpu_seconds())
        self._load = 0.0

    def _cpu_seconds(self) -> float:
        total = 0.0
        for process in list(self._processes):
            try:
                times = process.cpu_times()
            except psutil.Error:  # exited: its CPU no longer loads the cores
                self._processes.remove(process)
                continue
            total += times.user + times.system
        return total

    def __call__(self) -> float:
        """The load over the last complete window (0.0 until the first has passed)."""
        now = time.monotonic()
        started, cpu_then = self._mark
        if now - started >= self.window:
            cpu = self._cpu_seconds()
            self._load = max(0.0, cpu - cpu_then) / ((now - started) * self.cores)
            self._mark = (now, cpu)
        return self._load
