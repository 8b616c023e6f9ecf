"""Flood: normal calls while the server is attacked with OPTIONS and idle TCP connections.

``parley serve echo`` (one worker, pinned to core 1, its limits at their defaults unless given
after ``--``) is attacked from other loopback addresses than the callers':

- ``--options`` OPTIONS requests over UDP in ``--seconds`` (default 60,000 in 10 s), each a new
  transaction, from ``--flood-sources`` addresses (127.0.1.x);
- ``--idle-tcp`` TCP connections (default 10,000) opened before the flood and left idle, from
  ``--tcp-sources`` addresses (127.0.2.x);

while SIPp (core 0, from 127.0.0.1) places ``--calls`` normal calls (PCMU both ways, 3 s each).
Reported: the calls that succeeded (the goal: all), the server's peak and final RSS (the bound
to document), what the flood got back (200s, 503s, nothing), how many idle connections the
server kept or refused, the tracebacks and lines in its log, and the server's SIP counters.

Usage: ``.venv/bin/python bench/flood.py`` (``-- --rate-per-ip 0`` passes options to the server).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from soak import free_port, start_server_cmd, write_result

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "sipp" / "uac_rtpstream.xml"


def options_request(port: int, source: tuple[str, int], n: int) -> bytes:
    host, local = source
    return (
        f"OPTIONS sip:flood@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{local};branch=z9hG4bKflood{n}x{local};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:flood@{host}>;tag=f{n}\r\nTo: <sip:x@127.0.0.1>\r\n"
        f"Call-ID: flood-{n}-{local}@{host}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


class Flood(threading.Thread):
    """Sends ``total`` OPTIONS evenly over ``seconds`` from several source addresses; counts answers."""

    def __init__(self, port: int, total: int, seconds: float, sources: int) -> None:
        super().__init__(daemon=True)
        self.port, self.total, self.seconds = port, total, seconds
        self.socks = []
        for i in range(sources):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((f"127.0.1.{i + 1}", 0))
            sock.setblocking(False)
            self.socks.append(sock)
        self.sent = 0
        self.answers: dict[str, int] = {}

    def _drain(self) -> None:
        for sock in self.socks:
            while True:
                try:
                    data = sock.recv(65535)
                except BlockingIOError:
                    break
                status = data.split(b" ", 2)[1].decode() if data.startswith(b"SIP/2.0 ") else "?"
                self.answers[status] = self.answers.get(status, 0) + 1

    def run(self) -> None:
        start = time.monotonic()
        batch = max(1, self.total // int(self.seconds * 200))  # 200 batches a second
        while self.sent < self.total:
            due = start + self.seconds * self.sent / self.total
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            for _ in range(min(batch, self.total - self.sent)):
                sock = self.socks[self.sent % len(self.socks)]
                with contextlib.suppress(BlockingIOError):  # a full send buffer drops it, as UDP does
                    sock.sendto(
                        options_request(self.port, sock.getsockname(), self.sent), ("127.0.0.1", self.port)
                    )
                self.sent += 1
            self._drain()
        end = time.monotonic() + 3
        while time.monotonic() < end:
            self._drain()
            time.sleep(0.05)


def open_idle(port: int, count: int, sources: int) -> tuple[list[socket.socket], int]:
    """Open ``count`` TCP connections (non-blocking connects); returns them and how many failed at once."""
    socks, failed = [], 0
    for i in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((f"127.0.2.{i % sources + 1}", 0))
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            socks.append(sock)
        except OSError:
            failed += 1
            sock.close()
    return socks, failed


def still_open(socks: list[socket.socket]) -> int:
    """How many connections the server has not closed (a closed one reads EOF or an error)."""
    alive = 0
    for sock in socks:
        try:
            data = sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            alive += 1
            continue
        except OSError:
            continue
        if data:
            alive += 1
    return alive


def run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    port = free_port()
    server = start_server_cmd(
        ["echo", "--transport", "both", "--port", str(port), *args.server_options], workdir, port
    )
    process = psutil.Process(server.pid)
    idle_rss = process.memory_info().rss / 1e6
    peak = [idle_rss]
    sampling = True

    def sample() -> None:
        while sampling:
            peak[0] = max(peak[0], process.memory_info().rss / 1e6)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        started = time.monotonic()
        idle, connect_failed = open_idle(port, args.idle_tcp, args.tcp_sources)
        opened_in = time.monotonic() - started
        flood = Flood(port, args.options, args.seconds, args.flood_sources)
        flood.start()
        time.sleep(1.0)
        stat_csv = workdir / "calls.csv"
        sipp = subprocess.run(
            ["taskset", "-c", "0", "sipp", "-sf", str(SCENARIO), "-i", "127.0.0.1", "-p", str(free_port()),
             "-mp", str(free_port()), "-m", str(args.calls), "-l", str(args.calls), "-r", "4", "-d", "3000",
             "-rtp_threadtasks", "20", "-nostdin", "-trace_stat", "-stf", str(stat_csv), "-fd", "1",
             "-timeout", "60s", "-timeout_error", f"127.0.0.1:{port}"],
            cwd=SCENARIO.parent, capture_output=True, text=True,
        )  # fmt: skip
        flood.join()
        kept = still_open(idle)
        for sock in idle:
            sock.close()
        time.sleep(2.0)
        final_rss = process.memory_info().rss / 1e6
    finally:
        sampling = False
        server.send_signal(2)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    stats = json.loads((workdir / "stats.json").read_text()) if (workdir / "stats.json").exists() else {}
    log = (workdir / "server.log").read_text(errors="replace")
    from calls_per_core import sipp_counts

    calls = sipp_counts(stat_csv)
    return {
        "calls": args.calls,
        "calls_ok": calls["successful"],
        "calls_failed": calls["failed"],
        "sipp_exit": sipp.returncode,
        "options_sent": flood.sent,
        "options_answers": flood.answers,
        "options_unanswered": flood.sent - sum(flood.answers.values()),
        "idle_tcp_opened": len(idle),
        "idle_tcp_connect_failed": connect_failed,
        "idle_tcp_open_seconds": round(opened_in, 2),
        "idle_tcp_still_open_after_flood": kept,
        "rss_idle_mb": round(idle_rss, 1),
        "rss_peak_mb": round(peak[0], 1),
        "rss_after_mb": round(final_rss, 1),
        "server_log_tracebacks": log.count("Traceback"),
        "server_log_lines": log.count("\n"),
        "server_sip": stats.get("sip", {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--options", type=int, default=60_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--flood-sources", type=int, default=4)
    parser.add_argument("--idle-tcp", type=int, default=10_000)
    parser.add_argument("--tcp-sources", type=int, default=50)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "flood.json")
    parser.add_argument("server_options", nargs="*", help="after --: options for parley serve")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args, Path(tmp))
    write_result(result, args.out)
    sys.exit(0 if result["calls_ok"] == args.calls else 1)


if __name__ == "__main__":
    main()
