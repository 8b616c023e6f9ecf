"""``parley serve --workers N``: one supervisor process keeping N worker processes answering calls.

Each worker is a whole single-process ``parley serve`` (its own event loop, media clock, RTP port
range and speech decoder processes) started from the command line, not forked: a worker restarted
during a rolling upgrade runs the code and agent file on disk *now*, and no supervisor state
(event loop, sockets, threads) leaks into it.

A port per worker, not SO_REUSEPORT. Linux spreads a SO_REUSEPORT group by a hash of the
datagram's addresses, and a load balancer sends every request from one address: Kamailio's
traffic would all land on one worker. A worker restart changes the group, so the hash moves the
ACKs and BYEs of calls in progress to a worker that does not know their dialog (481). And a
shared port cannot be drained or health-probed worker by worker. So worker ``i`` listens on
``port + i``, each is one destination in Kamailio's dispatcher list (``parley cluster
kamailio-config``), and its Contact routes in-dialog requests back to it.

The supervisor restarts a worker that dies (backing off while it keeps dying), forwards SIGTERM
and SIGINT as a drain (workers answer OPTIONS and new INVITEs 503, finish their calls within
``--drain`` and exit), rolls the workers one at a time on :meth:`Supervisor.roll` (drain, start
the new one, wait for its OPTIONS probe to answer 200, let the load balancer's probe see it, next),
and reports each worker's state (:meth:`Supervisor.status`). At exit it sums the stats every
worker generation wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parley.cluster.probe import wait_until_ready

# A worker that dies within this long of starting counts as failing to start: restarts back off.
STEADY_AFTER_S = 30.0
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """Where worker ``index`` listens: SIP ``port`` and RTP ports ``[rtp_ports[0], rtp_ports[1])``."""

    index: int
    port: int
    rtp_ports: tuple[int, int]


def plan_workers(count: int, port: int, rtp_ports: tuple[int, int]) -> list[WorkerPlan]:
    """Consecutive SIP ports from ``port`` and equal even-aligned slices of the RTP range."""
    first, last = rtp_ports
    if count < 1:
        raise ValueError(f"need at least one worker, not {count}")
    if port < 1 or port + count - 1 > 65535:
        raise ValueError(f"SIP ports {port}-{port + count - 1} are not all valid ports")
    if first % 2:
        raise ValueError(f"the RTP port range must start on an even port, not {first}")
    size = (last - first) // count // 2 * 2
    if size < 2:
        raise ValueError(f"RTP ports {first}-{last} cannot give {count} workers a port pair each")
    return [WorkerPlan(i, port + i, (first + i * size, first + (i + 1) * size)) for i in range(count)]


def combine_stats(reports: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum the counters of several workers' ``parley serve`` stats (nested dicts of numbers)."""

    def add(total: dict[str, Any], part: dict[str, Any]) -> None:
        for key, value in part.items():
            if isinstance(value, dict):
                add(total.setdefault(key, {}), value)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value

    total: dict[str, Any] = {}
    for report in reports:
        add(total, {k: v for k, v in report.items() if k != "clock"})  # timings do not add up
    return total


@dataclass(slots=True)
class Worker:
    plan: WorkerPlan
    state: str = "stopped"  # starting, ready, draining, exited (waiting for a restart), stopped
    generation: int = 0
    restarts: int = 0
    pid: int | None = None
    started_at: float = 0.0
    last_exit: int | None = None
    process: asyncio.subprocess.Process | None = None
    retiring: bool = False  # stopped on purpose (drain for a roll or shutdown): not restarted
    quick_failures: int = 0
    watcher: asyncio.Task | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.plan.index,
            "port": self.plan.port,
            "rtp_ports": list(self.plan.rtp_ports),
            "state": self.state,
            "pid": self.pid,
            "generation": self.generation,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
        }


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the worker gets SIGTERM (a drain) if the supervisor dies, instead of living on."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    """Runs the workers of one node. ``command(plan, stats_file)`` is a worker's command line."""

    def __init__(
        self,
        command: Callable[[WorkerPlan, Path], list[str]],
        plans: list[WorkerPlan],
        *,
        host: str,
        state_dir: Path,
        env: dict[str, str] | None = None,
        ready_timeout: float = 120.0,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        self.command = command
        self.workers = [Worker(plan) for plan in plans]
        self.host = host
        self.state_dir = state_dir
        self.env = env
        self.ready_timeout = ready_timeout
        self.on_exit = on_exit  # a worker process (its pid) has exited
        self.stopping = False
        self.started = False  # every worker has answered its probe once: from then on, restart the dead
        self.rolls_completed = 0
        self.rolls_failed = 0
        self.rolling: asyncio.Task | None = None
        self._stopped = asyncio.Event()

    # -- reporting ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "supervisor_pid": os.getpid(),
            "stopping": self.stopping,
            "rolling": self.rolling is not None and not self.rolling.done(),
            "rolls_completed": self.rolls_completed,
            "rolls_failed": self.rolls_failed,
            "workers": [worker.as_dict() for worker in self.workers],
        }

    def _set(self, worker: Worker, state: str, detail: str = "") -> None:
        worker.state = state
        where = f"sip:{self.host}:{worker.plan.port}, pid {worker.pid}"
        print(f"parley: worker {worker.plan.index} ({where}) {state}{detail}", file=sys.stderr, flush=True)

    # -- life cycle --------------------------------------------------------------------------
    async def start(self) -> bool:
        """Start every worker; True once all answer their OPTIONS probe with 200. A worker that exits
        before then is not restarted (a bad option or a taken port would only fail again): False."""
        ready = all(await asyncio.gather(*(self._start(worker) for worker in self.workers)))
        self.started = ready
        return ready

    async def _start(self, worker: Worker) -> bool:
        if self.stopping:
            return False
        worker.generation += 1
        worker.retiring = False
        stats = self.state_dir / f"worker-{worker.plan.index}-{worker.generation}.json"
        process = await asyncio.create_subprocess_exec(
            *self.command(worker.plan, stats),
            stdin=asyncio.subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,  # the supervisor alone signals its workers
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        worker.process, worker.pid, worker.started_at = process, process.pid, time.monotonic()
        worker.watcher = asyncio.ensure_future(self._watch(worker, process))
        self._set(worker, "starting")
        if self.stopping:  # the stop came while it was being spawned
            await self._drain(worker)
            return False
        probing = asyncio.ensure_future(wait_until_ready(self.host, worker.plan.port, self.ready_timeout))
        exiting = asyncio.ensure_future(process.wait())
        await asyncio.wait({probing, exiting}, return_when=asyncio.FIRST_COMPLETED)
        exiting.cancel()
        if not probing.done():  # it exited before answering: no use waiting for the probe
            probing.cancel()
            return False
        if probing.result():
            if worker.process is process and worker.state == "starting":
                self._set(worker, "ready")
                return True
            return False
        if process.returncode is None:  # never answered: kill it, the watcher restarts it
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        return False

    async def _watch(self, worker: Worker, process: asyncio.subprocess.Process) -> None:
        returncode = await process.wait()
        if worker.process is not process:
            return
        worker.last_exit = returncode
        if self.on_exit is not None and worker.pid is not None:
            self.on_exit(worker.pid)
        if worker.retiring or self.stopping or not self.started:
            self._set(worker, "stopped", f" (exit status {returncode})")
            worker.pid = None
            return
        ran = time.monotonic() - worker.started_at
        worker.quick_failures = worker.quick_failures + 1 if ran < STEADY_AFTER_S else 0
        self._set(worker, "exited", f" (exit status {returncode}): restarting")
        worker.pid = None
        delay = min(MAX_BACKOFF_S, 0.5 * 2 ** max(0, worker.quick_failures - 1))
        await asyncio.sleep(delay)
        if not self.stopping and not worker.retiring and worker.process is process:
            worker.restarts += 1
            await self._start(worker)

    async def _drain(self, worker: Worker) -> int | None:
        """SIGTERM one worker (it drains) and wait for it to exit; its exit status."""
        process = worker.process
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        worker.retiring = True
        self._set(worker, "draining")
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        returncode = await process.wait()
        if worker.watcher is not None:
            await asyncio.gather(worker.watcher, return_exceptions=True)
        return returncode

    async def roll(self, settle: float = 0.0) -> bool:
        """Replace the workers one at a time: drain, start anew, wait for its probe, then ``settle``
        seconds (for the load balancer's own probe to see it back) before the next."""
        for worker in self.workers:
            if self.stopping:
                return False
            await self._drain(worker)
            if self.stopping:
                return False
            if not await self._start(worker):
                self.rolls_failed += 1
                return False  # the watcher keeps restarting it; the others are left running
            await asyncio.sleep(settle)
        self.rolls_completed += 1
        return True

    def request_roll(self, settle: float = 0.0) -> bool:
        """Start a roll unless one is running or the node is stopping; False if not started."""
        if self.stopping or (self.rolling is not None and not self.rolling.done()):
            return False
        self.rolling = asyncio.ensure_future(self.roll(settle))
        return True

    def request_stop(self) -> None:
        self.stopping = True
        self._stopped.set()

    async def run_until_stopped(self) -> list[int | None]:
        """Wait for :meth:`request_stop`, then drain every worker at once; their exit statuses."""
        await self._stopped.wait()
        if self.rolling is not None:
            self.rolling.cancel()
            await asyncio.gather(self.rolling, return_exceptions=True)
        return list(await asyncio.gather(*(self._drain(worker) for worker in self.workers)))

    def collected_stats(self) -> dict[str, Any]:
        """Every worker generation's stats file, summed, with the per-worker reports beside."""
        reports = []
        for path in sorted(self.state_dir.glob("worker-*.json")):
            with contextlib.suppress(OSError, ValueError):
                index, generation = (int(part) for part in path.stem.split("-")[1:3])
                reports.append({"worker": index, "generation": generation, **json.loads(path.read_text())})
        total = combine_stats(reports)
        total.pop("worker", None)
        total.pop("generation", None)
        total["workers"] = reports
        total["restarts"] = sum(worker.restarts for worker in self.workers)
        return total
