"""A whole load-test run: webhook sink, workers, live progress, ``calls.jsonl``, summary, report, exit code.

The coordinator (this process) runs the webhook sink, so the agent's posts land in one place whatever
the number of workers; each call record coming back from a worker gets its slots scored here
(expected value vs what the agent posted for that Call-ID) and is appended to ``OUT/calls.jsonl``
at once. With ``workers == 1`` the calls run on this process's event loop; with more, each worker is
a spawned process with its own SIP port and a share of the RTP ports and of the calls (every N-th
index), sending its records over a multiprocessing queue.

SIGINT and SIGTERM stop placing calls and hang up the calls in progress (bounded), then the files
of what ran are written; the exit status is 130 (SIGINT) or 143 (SIGTERM), else 1 when a threshold
was missed and 0 when all were met.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import queue
import signal
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from parley.loadtest.runner import WorkerConfig, apply_overrides, run_worker
from parley.loadtest.scenario import Scenario, load_scenario
from parley.loadtest.sink import WebhookSink

EXIT_OK, EXIT_THRESHOLDS, EXIT_USAGE = 0, 1, 2
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}
WORKER_EXIT_WAIT_S = 15.0


@dataclass
class RunOptions:
    scenario_path: Path
    targets: tuple[str, ...] = ()  # several: calls go round-robin over them (e.g. a node's worker ports)
    calls: int | None = None
    rate: float | None = None
    concurrency: int | None = None
    duration_s: float | None = None
    out: Path | None = None
    seed: int = 0
    workers: int = 1
    host: str = "127.0.0.1"
    sip_port: int = 0  # 0: a free port (per worker)
    rtp_ports: tuple[int, int] = (40000, 60000)
    webhook_port: int | None = None
    console: Console | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    out: Path
    records: list[dict[str, Any]]
    summary: dict[str, Any]
    failures: list[str]
    exit_code: int
    stopped_by: str | None = None


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host`` right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
            return port
    raise OSError("no free port")


def score_slots(record: dict[str, Any], sink: WebhookSink) -> dict[str, Any]:
    """Fill ``got``/``correct``/``status`` of the record's slots and ``webhook_posts`` from the sink."""
    from parley.loadtest.summary import slot_status

    call_id = record.get("call_id")
    posts = sink.posts_for(call_id) if call_id else []
    got = sink.slots_for(call_id) if call_id else {}
    record["webhook_posts"] = len(posts)
    for slot in record["slots"]:
        slot["got"] = got.get(slot["name"])
        slot["correct"] = slot["got"] is not None and same_value(slot["expected"], slot["got"])
        slot["status"] = slot_status(record, slot)  # right, wrong, or not_reached (no webhook reached)
    return record


def same_value(expected: Any, got: Any) -> bool:
    """Expected (a rendered template or a YAML scalar) vs a posted JSON value, loosely typed."""
    return _norm(expected) == _norm(got)


def _norm(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = " ".join(str(value).split()).lower()
    return {"yes": "true", "no": "false"}.get(text, text)


class _Progress:
    """The live view: a bar over calls (or over the duration) and a few running figures."""

    def __init__(self, console: Console, scenario: Scenario) -> None:
        self.console = console
        traffic = scenario.traffic
        self.total = traffic.calls
        self.started = self.done = self.failed = self.slot_ok = self.slot_all = 0
        self.latencies: list[float] = []
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[figures]}"),
            console=console,
            disable=not console.is_terminal,
            refresh_per_second=4,
        )
        self.task = self.progress.add_task(scenario.name, total=self.total, figures="")

    def on_started(self) -> None:
        self.started += 1
        self._update()

    def on_record(self, record: dict[str, Any]) -> None:
        self.done += 1
        self.failed += record["outcome"] in ("rejected", "no_answer", "failed")
        turns = record["turns"]
        self.latencies += [t["reply_latency_ms"] for t in turns if t["reply_latency_ms"] is not None]
        scored = [s for s in record["slots"] if s.get("status") != "not_reached"]
        self.slot_all += len(scored)
        self.slot_ok += sum(s["correct"] for s in scored)
        self._update()

    def _update(self) -> None:
        active = self.started - self.done
        figures = f"active {active}  failed {self.failed}"
        if self.latencies:
            ordered = sorted(self.latencies)
            figures += f"  p95 turn {ordered[int(0.95 * (len(ordered) - 1))]:.0f} ms"
        if self.slot_all:
            figures += f"  slots {100 * self.slot_ok / self.slot_all:.1f}%"
        self.progress.update(self.task, completed=self.done, figures=figures)


def _worker_process(config: WorkerConfig, messages: Any) -> None:
    """A spawned worker: its calls on uvloop; SIGINT/SIGTERM stop it cleanly."""

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await run_worker(config, lambda kind, data: messages.put((kind, config.worker, data)), stop)

    try:
        stats = _run_loop(main())
    except BaseException as exc:
        messages.put(("error", config.worker, f"{type(exc).__name__}: {exc}"))
        raise
    messages.put(("done", config.worker, stats))


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)
    return uvloop.run(coro)


def _raise_fd_limit() -> None:
    """Two sockets per call: lift the soft open-files limit to the hard one."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _run(options: RunOptions, scenario: Scenario, out: Path, console: Console) -> RunResult:
    from parley.loadtest.report import print_summary, write_html
    from parley.loadtest.summary import check_thresholds, summarize

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    stopped_by: list[int] = []

    def on_signal(sig: signal.Signals) -> None:
        if not stopped_by:
            console.print(f"[yellow]{sig.name}: stopping — hanging up calls in progress…[/]")
        stopped_by.append(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)

    hooks = scenario.webhook
    sink = WebhookSink(
        host=hooks.host,
        port=options.webhook_port if options.webhook_port is not None else hooks.port,
        responses={path: (r.status, r.body) for path, r in hooks.responses.items()},
    ).start()
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    jsonl: IO[str] = (out / "calls.jsonl").open("w", encoding="utf-8")
    progress = _Progress(console, scenario)
    t0 = time.time()
    first, last = options.rtp_ports
    share = ((last - first) // options.workers) & ~1
    configs = [
        WorkerConfig(
            scenario_path=str(options.scenario_path),
            targets=options.targets,
            overrides=options.overrides,
            seed=options.seed,
            worker=w,
            workers=options.workers,
            host=options.host,
            sip_port=options.sip_port + w if options.sip_port else free_port(options.host),
            rtp_ports=(first + w * share, first + (w + 1) * share),
            t0_wall=t0,
        )
        for w in range(options.workers)
    ]

    def on_message(kind: str, data: Any) -> None:
        if kind == "started":
            progress.on_started()
        elif kind == "record":
            record = score_slots(data, sink)
            records.append(record)
            jsonl.write(json.dumps(record) + "\n")
            jsonl.flush()
            progress.on_record(record)

    worker_stats: list[Any] = []
    try:
        with progress.progress:
            if options.workers == 1:
                worker_stats.append(await run_worker(configs[0], on_message, stop))
            else:
                worker_stats = await _run_processes(configs, on_message, stop, console)
    finally:
        jsonl.close()
        sink.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    duration = time.time() - t0
    records.sort(key=lambda r: r["index"])
    summary = summarize(records, duration)
    thresholds = scenario.thresholds_dict()
    failures = check_thresholds(summary, thresholds)
    summary_doc = {
        "scenario": scenario.name,
        "target": options.targets[0],
        "targets": list(options.targets),
        "seed": options.seed,
        "workers": options.workers,
        "started_at": t0,  # Unix time; each record's ``started`` counts seconds from it
        "duration_s": round(duration, 3),
        "stopped_by": stopped_by[0].name if stopped_by else None,
        "thresholds": thresholds,
        "threshold_failures": failures,
        "worker_stats": worker_stats,
        "summary": summary,
    }
    (out / "summary.json").write_text(json.dumps(summary_doc, indent=2, default=str) + "\n")
    print_summary(summary, console, thresholds)
    write_html(records, summary, out / "report.html", title=f"Parley load test: {scenario.name}",
               thresholds=thresholds, failures=failures)  # fmt: skip
    for failure in failures:
        console.print(f"[bold red]threshold missed:[/] {failure}")
    code = EXIT_THRESHOLDS if failures else EXIT_OK
    if stopped_by:
        code = EXIT_SIGNAL.get(stopped_by[0], 130)
    console.print(f"results in {out} (calls.jsonl, summary.json, report.html)")
    return RunResult(out, records, summary, failures, code, stopped_by[0].name if stopped_by else None)


async def _run_processes(
    configs: list[WorkerConfig], on_message: Any, stop: asyncio.Event, console: Console
) -> list[Any]:
    """Spawn one process per worker config; relay their messages until all are done."""
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    procs = [context.Process(target=_worker_process, args=(c, messages), daemon=True) for c in configs]
    for proc in procs:
        proc.start()
    loop = asyncio.get_running_loop()
    done: dict[int, Any] = {}
    finished = asyncio.Event()

    def pump() -> None:
        while len(done) < len(procs):
            try:
                kind, worker, data = messages.get(timeout=0.2)
            except queue.Empty:
                if all(not p.is_alive() for p in procs) and messages.empty():
                    break
                continue
            if kind in ("done", "error"):
                done[worker] = data
                if kind == "error":
                    loop.call_soon_threadsafe(console.print, f"[red]worker {worker} failed: {data}[/]")
            else:
                loop.call_soon_threadsafe(on_message, kind, data)
        loop.call_soon_threadsafe(finished.set)

    thread = threading.Thread(target=pump, name="loadtest-workers", daemon=True)
    thread.start()
    stopper = asyncio.ensure_future(stop.wait())
    waiter = asyncio.ensure_future(finished.wait())
    await asyncio.wait({stopper, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), WORKER_EXIT_WAIT_S)
    stopper.cancel()
    waiter.cancel()
    await asyncio.sleep(0)  # deliver the last relayed records
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
    return [done.get(c.worker) for c in configs]


def default_out_dir() -> Path:
    return Path("loadtest-results") / time.strftime("%Y%m%d-%H%M%S")


def run_loadtest(options: RunOptions) -> RunResult:
    """Load the scenario (raises ScenarioFileError), run it, write the files; the caller exits with
    ``result.exit_code``."""
    scenario = apply_overrides(load_scenario(options.scenario_path), options.overrides)
    targets = options.targets or ((scenario.target,) if scenario.target else ())
    if not targets:
        raise ValueError("no target: give --target sip:HOST:PORT or 'target:' in the scenario")
    options = replace(options, targets=tuple(targets))
    console = options.console or Console(stderr=False)
    out = options.out or default_out_dir()
    _raise_fd_limit()
    return _run_loop(_run(options, scenario, out, console))
