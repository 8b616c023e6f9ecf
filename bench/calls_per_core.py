"""How many concurrent two-way calls one core carries: Parley's echo vs a bare uvloop echo.

SIPp (pinned to core 0, ``rtp_stream`` with ``-rtp_threadtasks 100``) places N calls that
each stream 20 s of PCMU; the server under test is pinned to core 1. For each step N, both
servers are measured one after the other in the same run:

- SIPp's successful/failed calls,
- the server's CPU use while all N calls are up (from /proc),
- for Parley: RTP loss on its receive side and outgoing frame timing — p99 of how far the
  interval between a stream's consecutive frames strays from 20 ms — from the stats it
  writes at exit.

A step passes when no call failed, loss < 0.1 % and p99 timing is within 5 ms of the 20 ms
clock. Usage: ``.venv/bin/python bench/calls_per_core.py --steps 250,500,750,1000,1250``.
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "sipp" / "uac_rtpstream.xml"
HOLD_S = 20.0
RAMP_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def start_server(kind: str, port: int, stats_file: Path, max_load: float | None = None) -> subprocess.Popen:
    if kind == "parley":
        cmd = [
            sys.executable,
            "-m",
            "parley",
            "serve",
            "echo",
            "--workers",
            "1",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--transport",
            "udp",
            "--stats-file",
            str(stats_file),
            "--rtp-ports",
            "20000-40000",
            *(["--max-load", str(max_load)] if max_load is not None else []),
        ]
        ready = "answering calls"
    else:
        cmd = [sys.executable, str(HERE / "bare_echo.py"), "--port", str(port)]
        ready = "bare echo ready"
    proc = subprocess.Popen(
        ["taskset", "-c", "1", *cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if ready in line:
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"{kind} server did not start")


def run_step(kind: str, calls: int, workdir: Path, max_load: float | None = None) -> dict[str, object]:
    port = free_port()
    stats_file = workdir / f"{kind}-{calls}.json"
    stat_csv = workdir / f"{kind}-{calls}.csv"
    server = start_server(kind, port, stats_file, max_load)
    rate = max(calls / RAMP_S, 10)
    sipp = subprocess.Popen(
        [
            "taskset",
            "-c",
            "0",
            "sipp",
            "-sf",
            str(SCENARIO),
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-mp",
            str(free_port()),
            "-r",
            f"{rate:.0f}",
            "-l",
            str(calls),
            "-m",
            str(calls),
            "-d",
            str(int(HOLD_S * 1000)),
            "-rtp_threadtasks",
            "100",
            "-nostdin",
            "-trace_stat",
            "-stf",
            str(stat_csv),
            "-fd",
            "1",
            "-timeout",
            str(int(RAMP_S + HOLD_S + 60)) + "s",
            "-max_socket",
            str(calls * 2 + 100),
            f"127.0.0.1:{port}",
        ],
        cwd=SCENARIO.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Measure CPU while every call is up: from just after the ramp to just before the first BYE.
    time.sleep(RAMP_S + 1.5)
    cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
    time.sleep(HOLD_S - RAMP_S - 3.0 if HOLD_S > RAMP_S + 4 else 3.0)
    cpu1, t1 = cpu_seconds(server.pid), time.monotonic()
    try:
        sipp.wait(timeout=RAMP_S + HOLD_S + 90)
    except subprocess.TimeoutExpired:
        sipp.kill()
        sipp.wait()
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
    result: dict[str, object] = {
        "kind": kind,
        "calls": calls,
        "cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
    }
    result.update(sipp_counts(stat_csv))
    if kind == "parley" and stats_file.exists():
        stats = json.loads(stats_file.read_text())
        media = stats["media"]
        expected = max(media.get("expected", 0), 1)
        result["rtp_loss_percent"] = round(100 * media.get("lost", 0) / expected, 3)
        result["rtp_late"] = media.get("late", 0)
        clock = stats["clock"]
        result["timing_p99_ms"] = round(clock["departure_jitter_p99_ms"], 2)
        result["tick_p99_ms"] = round(clock["tick_p99_ms"], 2)
        result["clock_skipped_ticks"] = clock["skipped"]
    return result


def sipp_counts(stat_csv: Path) -> dict[str, int]:
    if not stat_csv.exists():
        return {"successful": 0, "failed": -1}
    rows = list(csv.DictReader(stat_csv.open(), delimiter=";"))
    if not rows:
        return {"successful": 0, "failed": -1}
    last = rows[-1]
    return {"successful": int(last["SuccessfulCall(C)"]), "failed": int(last["FailedCall(C)"])}


def passes(result: dict[str, object]) -> bool:
    return (
        result.get("failed") == 0
        and result.get("successful") == result["calls"]
        and float(result.get("rtp_loss_percent", 100.0)) < 0.1  # type: ignore[arg-type]
        and float(result.get("timing_p99_ms", 99.0)) <= 5.0  # type: ignore[arg-type]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", default="250,500,750,1000,1250", help="concurrent call counts to try")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "calls_per_core.json")
    parser.add_argument(
        "--max-load", type=float, help="parley serve --max-load (default: the server's; 0 = off)"
    )
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    results = []
    best = 0
    with tempfile.TemporaryDirectory() as tmp:
        for calls in steps:
            bare = run_step("bare", calls, Path(tmp))
            parley = run_step("parley", calls, Path(tmp), args.max_load)
            parley["cpu_ratio_vs_bare"] = round(
                float(parley["cpu_percent"]) / max(float(bare["cpu_percent"]), 0.1), 2
            )
            ok = passes(parley)
            parley["passes"] = ok
            best = calls if ok else best
            results += [bare, parley]
            print(json.dumps(bare), flush=True)
            print(json.dumps(parley), flush=True)
    print(f"\nhighest passing step: {best} concurrent two-way calls on one core")
    widths = [6, 9, 11, 6, 6, 6, 6]
    titles = ["calls", "bare cpu%", "parley cpu%", "ratio", "failed", "loss%", "p99ms"]
    print(" ".join(f"{title:>{width}}" for title, width in zip(titles, widths, strict=True)), "pass")
    for bare, parley in zip(results[::2], results[1::2], strict=True):
        cells = [
            parley["calls"],
            bare["cpu_percent"],
            parley["cpu_percent"],
            parley["cpu_ratio_vs_bare"],
            parley["failed"],
            parley.get("rtp_loss_percent", "-"),
            parley.get("timing_p99_ms", "-"),
        ]
        print(
            " ".join(f"{cell:>{width}}" for cell, width in zip(cells, widths, strict=True)), parley["passes"]
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results, "highest_passing": best}, indent=2))


if __name__ == "__main__":
    main()
