"""A real ``parley serve echo --workers N`` node for the cluster tests, with its admin endpoint."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from integration.harness import ROOT, free_port, rtp_range, spawn_until_ready
from parley.cluster.node import NODE_READY_LINE


class Node:
    """``parley serve echo`` on ``host`` with ``workers`` workers (ports ``port`` .. ``port+workers-1``)."""

    def __init__(
        self,
        tmp_path: Path,
        host: str,
        *,
        workers: int,
        port: int | None = None,
        extra: list[str] = (),
        options: list[str] = (),
        prefix: list[str] = (),
    ) -> None:
        """``options`` go before ``serve`` (``-v``, ``--log-format``), ``extra`` after it; ``prefix``
        runs the command (e.g. ``ip netns exec NAME``)."""
        self.host = host
        self.workers = workers
        self.port = port or free_port(block=workers)
        self.admin_port = free_port()
        first, last = rtp_range(40 * workers)
        self.stats_file = tmp_path / f"node-{host}-{self.port}-stats.json"
        cmd = [*prefix, sys.executable, "-m", "parley", *options, "serve", "echo", "--workers", str(workers)]
        cmd += ["--host", host]
        cmd += ["--port", str(self.port), "--transport", "udp", "--rtp-ports", f"{first}-{last}"]
        cmd += ["--admin-port", str(self.admin_port), "--stats-file", str(self.stats_file), *extra]
        self.lines: list[str] = []
        self.proc = spawn_until_ready(
            cmd, self.lines, cwd=ROOT, startup_timeout=90, ready_line=NODE_READY_LINE
        )

    @property
    def admin(self) -> str:
        return f"http://{self.host}:{self.admin_port}"

    def spec(self) -> str:
        """This node as ``parley cluster kamailio-config`` takes it."""
        return f"{self.host}:{self.port}/{self.workers}"

    def log(self) -> str:
        """The log's last 80 lines, after the errors logged before them (a worker's exit is explained
        by a line that a busy node's call lines push out of the tail)."""
        earlier = [line for line in self.lines[:-80] if "error" in line.lower() or "exit" in line.lower()]
        return "".join([*earlier[-20:], *(["...\n"] if earlier else []), *self.lines[-80:]])

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"{self.admin}{path}", timeout=10) as response:
            return response.read().decode()

    def post(self, path: str) -> int:
        request = urllib.request.Request(f"{self.admin}{path}", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status

    def status(self) -> dict:
        return json.loads(self.get("/status"))

    def metric(self, name: str, labels: str = "") -> float:
        """A metric summed over the label sets that contain ``labels`` (e.g. ``reason="draining"``)."""
        pattern = rf"(?m)^{re.escape(name)}(?:{{([^}}]*)}})? (\S+)$"
        values = [float(v) for found, v in re.findall(pattern, self.get("/metrics")) if labels in found]
        return sum(values)

    def settled_metric(self, name: str, expected: float, labels: str = "", timeout: float = 5) -> float:
        """The metric once it equals ``expected`` (a call's end is counted just after its BYE is
        answered), or its value when ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while (value := self.metric(name, labels)) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return value

    def wait_for(self, check: Callable[[dict], bool], what: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if check(status):
                return status
            time.sleep(0.2)
        pytest.fail(f"node never {what}: {self.status()}\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the supervisor and every worker (teardown of a test that failed midway)."""
        if self.proc.poll() is None:
            pids = [w["pid"] for w in self.status()["workers"] if w["pid"]] if self._admin_up() else []
            for pid in [*pids, self.proc.pid]:  # each worker leads its own process group
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def _admin_up(self) -> bool:
        try:
            self.get("/status")
        except OSError:
            return False
        return True
