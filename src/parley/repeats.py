"""Errors that repeat per packet or per frame are logged once, then counted.

A peer that sends something broken usually keeps sending it: 50 RTP packets a second, a SIP
retransmission every T1. Logging each one fills the disk (one malformed-INVITE suite grew a log to
225 MB). :class:`RepeatedErrors` logs the first occurrence of each kind of error, counts the
rest, and writes one summary line with the count at most every ``interval`` seconds. Kinds are
fixed strings chosen by the code (never caller data), so the table stays small.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Kind:
    total: int = 0
    unreported: int = 0
    last_report: float = 0.0


class RepeatedErrors:
    """Log-once-then-count for one logger."""

    def __init__(
        self, log: logging.Logger, interval: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.log = log
        self.interval = interval
        self._clock = clock
        self._kinds: dict[str, _Kind] = {}

    def report(self, kind: str, message: str, *args: object, exc_info: bool = False) -> None:
        """Record one occurrence of ``kind``; ``message % args`` is logged the first time only."""
        entry = self._kinds.get(kind)
        now = self._clock()
        if entry is None:
            entry = self._kinds[kind] = _Kind(total=1, last_report=now)
            self.log.warning(message + " (repeats are counted, not logged)", *args, exc_info=exc_info)
            return
        entry.total += 1
        entry.unreported += 1
        if now - entry.last_report >= self.interval:
            self.log.warning(
                "%s: %d more in the last %.0f s (%d in all)",
                kind,
                entry.unreported,
                now - entry.last_report,
                entry.total,
            )
            entry.unreported = 0
            entry.last_report = now

    @property
    def counts(self) -> dict[str, int]:
        """How often each kind happened."""
        return {kind: entry.total for kind, entry in self._kinds.items()}
