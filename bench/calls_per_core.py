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

``--srtp`` measures what SRTP costs instead: ``parley serve echo`` over SIP/TLS (a certificate
authority and a server certificate made with ``openssl`` for the run) with ``--srtp off`` (plain RTP),
then with ``--srtp required`` (the same TLS signalling), each step one after the other in the same
run. SIPp here has neither TLS nor SRTP, so the callers are a Parley process (pinned to core 0,
``CallManager`` over TLS with the same policy) that places the calls at ``calls / 10 s`` and plays a
tone for ``HOLD_S`` into each; every call must answer, echo audio back and (SRTP) have no packet
rejected. Reported: the server's CPU with every call up, per call, and SRTP's over plain RTP
(``cpu_ratio_srtp_vs_plain``). Usage: ``.venv/bin/python bench/calls_per_core.py --srtp --steps
100,200``. Measured here (``--steps 200,400``, load average about 5 from other work): 200 calls
12.4 % of a core plain, 21.2 % with SRTP (1.71x); 400 calls 24.9 % and 32.0 % (1.29x): 0.18-0.44 ms
more CPU per call-second, about what ``bench/rtp_hot_path.py --srtp`` predicts (0.27: 6.4 against 1.1 us per
packet pair); every call answered, with two-way audio and no packet rejected.
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


def start_server(
    kind: str, port: int, stats_file: Path, max_load: float | None = None, extra: tuple[str, ...] = ()
) -> subprocess.Popen:
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
            "--rate-per-ip",  # one caller address places every call: a load, not a flood
            "0",
            *(["--max-load", str(max_load)] if max_load is not None else []),
            *extra,
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


def certificates(workdir: Path) -> dict[str, Path]:
    """A CA, and a server and a client certificate it signed for 127.0.0.1 (``openssl``)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=workdir, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=Parley bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign")  # fmt: skip
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")  # fmt: skip
        (workdir / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")  # fmt: skip
    names = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")
    return {name: workdir / name for name in names}


async def place_calls(args: argparse.Namespace) -> dict[str, object]:
    """The callers of ``--srtp`` (``--run-callers N``, in their own process): N calls over TLS to
    ``--target``, placed over ``RAMP_S``, each playing a tone for ``HOLD_S`` and hanging up."""
    import asyncio

    import numpy as np

    from parley.sip.tls import TlsConfig
    from parley.telephony.manager import CallManager

    workdir = Path(args.pki)
    tls = TlsConfig(
        workdir / "client.pem", workdir / "client.key", port=free_port(), ca_file=workdir / "ca.pem"
    )
    manager = CallManager(
        None, host="127.0.0.1", port=free_port(), rtp_ports=(40002, 60000), max_load=None, tls=tls,
        srtp=args.policy, media_timeout=HOLD_S + 30,
    )  # fmt: skip
    await manager.start()
    t = np.arange(int(8000 * HOLD_S)) / 8000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    results: list[dict[str, int] | str] = []

    async def one(delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            call = await manager.dial(args.target, timeout=30)
        except Exception as exc:
            results.append(f"{type(exc).__name__}: {exc}")
            return
        await call.wait_played(call.play(tone))
        stats = call.stream.stats
        rejected = call.srtp.rejected if call.srtp is not None else 0
        results.append({"in": stats.packets_in, "out": stats.packets_out, "rejected": rejected,
                        "srtp": int(call.srtp is not None)})  # fmt: skip
        call.hangup()
        await asyncio.wait_for(call.wait_ended(), 10)

    await asyncio.gather(*(one(RAMP_S * i / args.run_callers) for i in range(args.run_callers)))
    await asyncio.wait_for(manager.stop(), 10)
    calls = [r for r in results if isinstance(r, dict)]
    return {
        "answered": len(calls),
        "errors": sorted({r for r in results if isinstance(r, str)})[:5],
        "two_way": sum(1 for r in calls if r["in"] > 0.9 * (HOLD_S - 1) * 50 and r["out"] > 0),
        "srtp_calls": sum(r["srtp"] for r in calls),
        "rejected": sum(r["rejected"] for r in calls),
    }


def run_secure_step(policy: str, calls: int, workdir: Path, pki: dict[str, Path]) -> dict[str, object]:
    """``parley serve echo`` over TLS with ``--srtp POLICY`` and ``calls`` calls from Parley callers."""
    port, tls_port = free_port(), free_port()
    extra = ("--tls-cert", str(pki["server.pem"]), "--tls-key", str(pki["server.key"]), "--tls-port",
             str(tls_port), "--srtp", policy)  # fmt: skip
    server = start_server("parley", port, workdir / f"{policy}-{calls}.json", 0, extra)
    callers = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, __file__, "--run-callers", str(calls), "--policy", policy,
         "--pki", str(workdir), "--target", f"sip:echo@127.0.0.1:{tls_port};transport=tls"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    time.sleep(RAMP_S + 1.5)
    cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
    time.sleep(HOLD_S - RAMP_S - 3.0 if HOLD_S > RAMP_S + 4 else 3.0)
    cpu1, t1 = cpu_seconds(server.pid), time.monotonic()
    try:
        out, _ = callers.communicate(timeout=RAMP_S + HOLD_S + 90)
    except subprocess.TimeoutExpired:
        callers.kill()
        out, _ = callers.communicate()
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
    cpu = 100 * (cpu1 - cpu0) / (t1 - t0)
    result: dict[str, object] = {
        "srtp": policy, "calls": calls, "cpu_percent": round(cpu, 1),
        "cpu_ms_per_call_second": round(10 * cpu / calls, 3),
    }  # fmt: skip
    try:
        result.update(json.loads(out.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        result["errors"] = ["the callers reported nothing"]
    return result


def secure_main(args: argparse.Namespace) -> None:
    """``--srtp``: SRTP against plain RTP, both over SIP/TLS, step by step in one run."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        pki = certificates(Path(tmp))
        for calls in [int(s) for s in args.steps.split(",")]:
            plain = run_secure_step("off", calls, Path(tmp), pki)
            srtp = run_secure_step("required", calls, Path(tmp), pki)
            srtp["cpu_ratio_srtp_vs_plain"] = round(
                float(srtp["cpu_percent"]) / max(float(plain["cpu_percent"]), 0.1), 2
            )
            results += [plain, srtp]
            print(json.dumps(plain), flush=True)
            print(json.dumps(srtp), flush=True)
    titles = f"{'calls':>6} {'plain cpu%':>10} {'srtp cpu%':>10} {'ratio':>6} {'answered':>9} {'two-way':>8}"
    print(f"\n{titles} rejected")
    for plain, srtp in zip(results[::2], results[1::2], strict=True):
        answered = f"{plain.get('answered', 0)}/{srtp.get('answered', 0)}"
        two_way = f"{plain.get('two_way', 0)}/{srtp.get('two_way', 0)}"
        cpu = f"{plain['cpu_percent']:>10} {srtp['cpu_percent']:>10} {srtp['cpu_ratio_srtp_vs_plain']:>6}"
        print(f"{plain['calls']:>6} {cpu} {answered:>9} {two_way:>8} {srtp.get('rejected', '-')}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"srtp": results}, indent=2))


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
    parser.add_argument("--srtp", action="store_true", help="SRTP vs plain RTP, both over SIP/TLS")
    parser.add_argument("--run-callers", type=int, help=argparse.SUPPRESS)  # --srtp's caller process
    parser.add_argument("--policy", help=argparse.SUPPRESS)
    parser.add_argument("--pki", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_callers:
        import uvloop

        print(json.dumps(uvloop.run(place_calls(args))), flush=True)
        return
    if args.srtp:
        if args.out == parser.get_default("out"):
            args.out = HERE / "results" / "calls_per_core_srtp.json"
        secure_main(args)
        return
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
