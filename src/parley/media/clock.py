"""The process-wide media clock: one 20 ms tick drives every call's playout and sending.

A timer per call would mean 1,000 timers drifting apart and 1,000 wake-ups per tick; here a
single callback, scheduled on absolute times (``start + n * period``) so it never drifts,
walks every registered stream. Lateness of each tick is recorded for the benchmark.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

PERIOD = 0.020
log = logging.getLogger(__name__)


class Ticking(Protocol):
    def tick(self) -> None: ...


class MediaClock:
    """Calls ``tick()`` on every registered stream once per period."""

    def __init__(self, period: float = PERIOD, time: Callable[[], float] | None = None) -> None:
        self.period = period
        self.streams: dict[int, Ticking] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._time = time
        self._handle: asyncio.TimerHandle | None = None
        self._start = 0.0
        self._n = 0
        self.ticks = 0
        self.skipped = 0
        self._lateness = np.zeros(4096, dtype=np.float32)  # ring of recent lateness samples (s)
        self._durations = np.zeros(4096, dtype=np.float32)  # ring of recent tick run times (s)

    def add(self, stream: Ticking) -> None:
        self.streams[id(stream)] = stream
        if self._handle is None:
            self.start()

    def remove(self, stream: Ticking) -> None:
        self.streams.pop(id(stream), None)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        now = self._now()
        self._start = now
        self._n = 0
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _now(self) -> float:
        # Lateness is measured on the monotonic clock: uvloop's loop.time() has 1 ms steps.
        return self._time() if self._time else time.monotonic()

    def _schedule(self) -> None:
        assert self._loop is not None
        self._n += 1
        delay = self._start + self._n * self.period - self._now()
        self._handle = self._loop.call_later(max(delay, 0.0), self._tick)

    def _tick(self) -> None:
        due = self._start + self._n * self.period
        late = self._now() - due
        self._lateness[self.ticks % len(self._lateness)] = late
        self.ticks += 1
        if late > 5 * self.period:
            # The process stalled: skip the missed ticks instead of bursting frames out.
            missed = int(late / self.period)
            log.warning("media clock stalled for %.0f ms with %d streams", late * 1000, len(self.streams))
            self.skipped += missed
            self._n += missed
        for stream in list(self.streams.values()):
            stream.tick()
        self._durations[(self.ticks - 1) % len(self._durations)] = self._now() - due - late
        if self.streams:
            self._schedule()
        else:
            self._handle = None

    def lateness_percentile(self, q: float) -> float:
        """The ``q``-th percentile of recent tick start lateness, in seconds."""
        return self._percentile(self._lateness, q)

    def duration_percentile(self, q: float) -> float:
        """The ``q``-th percentile of recent tick run time (the last stream's extra delay), in seconds."""
        return self._percentile(self._durations, q)

    def _percentile(self, ring: np.ndarray, q: float) -> float:
        count = min(self.ticks, len(ring))
        return float(np.percentile(ring[:count], q)) if count else 0.0
