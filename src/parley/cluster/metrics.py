"""A node's Prometheus endpoint over all its workers: prometheus-client's multiprocess mode.

Why multiprocess mode, not an endpoint per worker: Prometheus then scrapes one target per node,
whose figures stay whole across worker restarts and rolls (a restarted worker's counters would
otherwise start again from zero under a new target, and a drained worker's last increments would
never be scraped). Each worker writes its metrics to memory-mapped files in a directory the
supervisor owns (``PROMETHEUS_MULTIPROC_DIR``, set for the workers only); the supervisor's
``/metrics`` sums them: counters and histograms over every worker that ever ran, the active-calls
gauge over live workers only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from types import TracebackType

from prometheus_client import CollectorRegistry, generate_latest, multiprocess


class NodeMetrics:
    """The multiprocess directory (created on enter, removed on exit) and its exposition."""

    def __init__(self) -> None:
        self.directory = ""

    def __enter__(self) -> NodeMetrics:
        self.directory = tempfile.mkdtemp(prefix="parley-metrics-")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def worker_env(self) -> dict[str, str]:
        """The environment for worker processes: this one, writing metrics to the node's directory."""
        return {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self.directory}

    def process_exited(self, pid: int) -> None:
        """Drop an exited worker's live gauges (its counters still count)."""
        multiprocess.mark_process_dead(pid, self.directory)

    def exposition(self) -> bytes:
        """Every worker's metrics, summed, in Prometheus' text format."""
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.directory)
        return generate_latest(registry)
