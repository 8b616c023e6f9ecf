"""Echo calls one node holds: ``parley serve echo --workers 2`` on 2 cores against ``--workers 1`` on 1 core.

For each configuration and each step N, SIPp (``rtp_stream``, 20 s of PCMU a call each way) places N
calls, spread evenly over the node's workers (one SIPp per worker port), and holds them 20 s:

- **1 worker, 1 core**: the node pinned to core 1 (``taskset``), SIPp to core 0.
- **2 workers, 2 cores**: the node on both cores, and SIPp with it: this machine has no third core
  for the caller, so this configuration pays SIPp's CPU too and its capacity is a *lower bound*.

A step passes when every call succeeded and RTP loss (the node's own counters, all workers summed)
is below 0.1 %. The highest passing step of each configuration is its capacity; the ratio of the two
is the figure. Reported beside: the node's CPU (supervisor and workers) while all calls are up, and
the worst worker's outgoing frame timing p99 (how far a stream's frame intervals stray from 20 ms).
Timing is not a pass criterion here, unlike ``calls_per_core.py``: on this shared 2-core machine
other engineers' processes run on the node's cores and alone push it past 5 ms at a few hundred calls.

Usage: ``.venv/bin/python bench/cluster_capacity.py --steps-1 300,500 --steps-2 600,1000``.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from calls_per_core import SCENARIO, free_port, sipp_counts

HOLD_S = 20.0
RAMP_S = 10.0
READY = "parley: node ready"


def free_block(count: int) -> int:
    """The first of ``count`` consecutive UDP ports free on loopback (a node's workers)."""
    for _ in range(100):
        first = free_port()
        if first + count <= 65535 and all(bindable(first + i) for i in range(1, count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports")


def bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def tree_cpu(root: psutil.Process) -> float:
    """CPU seconds of a process and all its descendants alive now."""
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def start_node(workers: int, port: int, stats_file: Path, pin: str | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "parley", "serve", "echo", "--workers", str(workers), "--port", str(port)]
    cmd += ["--host", "127.0.0.1", "--transport", "udp", "--rtp-ports", "20000-40000", "--max-load", "0"]
    cmd += ["--stats-file", str(stats_file)]
    ready = "answering calls" if workers == 1 else READY  # one worker runs as one process
    proc = subprocess.Popen(
        [*(["taskset", "-c", pin] if pin else []), *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if ready in line:
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"the node with {workers} workers did not start")


def sipp(port: int, calls: int, stat_csv: Path, pin: str | None) -> subprocess.Popen:
    rate = max(calls / RAMP_S, 5)
    cmd = ["sipp", "-sf", str(SCENARIO), "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port())]
    cmd += ["-r", f"{rate:.0f}", "-l", str(calls), "-m", str(calls), "-d", str(int(HOLD_S * 1000))]
    cmd += ["-rtp_threadtasks", "100", "-nostdin", "-trace_stat", "-stf", str(stat_csv), "-fd", "1"]
    cmd += ["-timeout", f"{int(RAMP_S + HOLD_S + 60)}s", "-max_socket", str(calls * 2 + 100)]
    cmd += [f"127.0.0.1:{port}"]
    return subprocess.Popen(
        [*(["taskset", "-c", pin] if pin else []), *cmd], cwd=SCENARIO.parent,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def run_step(workers: int, calls: int, workdir: Path) -> dict[str, object]:
    port = free_block(workers)
    stats_file = workdir / f"node-{workers}-{calls}.json"
    node_pin, sipp_pin = ("1", "0") if workers == 1 else (None, None)
    node = start_node(workers, port, stats_file, node_pin)
    root = psutil.Process(node.pid)
    callers = [
        sipp(port + i, calls // workers, workdir / f"sipp-{workers}-{calls}-{i}.csv", sipp_pin)
        for i in range(workers)
    ]
    time.sleep(RAMP_S + 1.5)  # every call up: measure until just before the first BYE
    cpu0, t0 = tree_cpu(root), time.monotonic()
    time.sleep(HOLD_S - RAMP_S - 3.0)
    cpu1, t1 = tree_cpu(root), time.monotonic()
    for caller in callers:
        try:
            caller.wait(timeout=RAMP_S + HOLD_S + 90)
        except subprocess.TimeoutExpired:
            caller.kill()
            caller.wait()
    node.send_signal(signal.SIGTERM)
    node.wait(timeout=60)
    counts = [sipp_counts(workdir / f"sipp-{workers}-{calls}-{i}.csv") for i in range(workers)]
    result: dict[str, object] = {
        "workers": workers,
        "calls": calls,
        "successful": sum(c["successful"] for c in counts),
        "failed": sum(c["failed"] for c in counts),
        "node_cpu_cores": round((cpu1 - cpu0) / (t1 - t0), 2),
    }
    if stats_file.exists():
        stats = json.loads(stats_file.read_text())
        media = stats["media"]
        result["rtp_loss_percent"] = round(100 * media.get("lost", 0) / max(media.get("expected", 0), 1), 3)
        clocks = [r["clock"] for r in stats.get("workers", [stats])]
        result["timing_p99_ms"] = round(max(c["departure_jitter_p99_ms"] for c in clocks), 2)
    return result


def passes(result: dict[str, object]) -> bool:
    return (
        result["failed"] == 0
        and result["successful"] == result["calls"]
        and float(result.get("rtp_loss_percent", 100.0)) < 0.1  # type: ignore[arg-type]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps-1", default="500,1000,1500", help="calls for 1 worker on 1 core")
    parser.add_argument("--steps-2", default="1000,2000,3000", help="calls for 2 workers on 2 cores")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cluster-capacity-"))
    results = []
    capacity = {}
    for workers, steps in ((1, args.steps_1), (2, args.steps_2)):
        capacity[workers] = 0
        for calls in (int(s) for s in steps.split(",")):
            result = run_step(workers, calls, workdir)
            result["pass"] = passes(result)
            results.append(result)
            print(json.dumps(result), flush=True)
            if not result["pass"]:
                break
            capacity[workers] = calls
    ratio = capacity[2] / capacity[1] if capacity[1] else None
    summary = {"command": " ".join([sys.executable, *sys.argv]), "capacity": capacity, "ratio": ratio}
    print(json.dumps(summary))
    if args.out:
        args.out.write_text(json.dumps({"steps": results, **summary}, indent=2))


if __name__ == "__main__":
    main()
