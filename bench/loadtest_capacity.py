"""How many conversational calls one load-tester process holds, and a run against a real agent.

1. **Capacity** — ``parley serve echo`` pinned to one core (``taskset``), the load tester (this
   process, one worker) pinned to another. Per step of concurrency (``--steps``), every call says an
   answer, waits for the prompt end (the echo of its answer: speech, then silence, detected on the
   arriving RTP), holds on, says a second answer, waits again, presses two keys and hangs up; the
   calls overlap for ``--hold`` seconds at full concurrency. Reported per step: calls completed, RTP
   loss and gaps on the load tester's side, prompt timeouts, the load tester's CPU (share of one
   core, from ``getrusage``) and its media clock's lateness. A step "holds" (the issue's measure)
   when every call completed, loss < 0.1 % and no prompt timed out; it is also "on time" when the
   load tester's own media clock kept time (p99 lateness < 20 ms: beyond that a few of its outgoing
   frames leave in bursts, though arrival times stay the kernel's). Beside: the load tester's and
   the server's CPU µs per packet received, and "audio %", the packets that arrived against 50 a
   second over every call's life — a starved side skips its late ticks (no sequence gap, so no
   "loss"), and this is where that shows.
   With ``--workers N`` the load tester places the calls from N processes and with
   ``--server-workers M`` the echo server runs M workers, the calls round-robin over their ports;
   then nothing is pinned (this machine has two cores for both sides), and the CPU columns are the
   load tester's processes together and the server's tree, as shares of one core.
2. **Prompt-detection cost** — CPU per 20 ms packet of the energy test on the encoded G.711 bytes
   (what the caller uses) beside a WebRTC VAD call on the decoded frame and a numpy peak.
3. **End to end** — ``parley serve examples/card_block.yaml`` (its webhook URL pointed at the load
   tester's sink) and ``examples/loadtest/card_block.yaml`` for ``--agent-calls`` calls: calls
   completed, p50/p95 turn latency, slot accuracy.

Usage::

    .venv/bin/python bench/loadtest_capacity.py --steps 250,500,1000 --hold 20 --agent-calls 5
    .venv/bin/python bench/loadtest_capacity.py --steps 20,50 --hold 5 --agent-calls 2   # quick
    .venv/bin/python bench/loadtest_capacity.py --steps 1000,2000 --workers 2 --server-workers 2 \
        --hold 20 --rate 100 --agent-calls 0   # 2,000 calls from two processes

Writes ``bench/results/loadtest_capacity-<time>.json`` and prints tables.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

from agent.voice_caller import start_agent_server, stop_agent_server  # noqa: E402
from cluster_capacity import free_block, tree_cpu  # noqa: E402
from integration.harness import READY_LINE, spawn_until_ready  # noqa: E402
from parley.cluster.node import NODE_READY_LINE  # noqa: E402
from parley.loadtest.audio import QUIET  # noqa: E402
from parley.loadtest.listen import PacketTap  # noqa: E402
from parley.loadtest.run import RunOptions, free_port, run_loadtest  # noqa: E402
from parley.media import g711  # noqa: E402

ECHO_SCENARIO = """
name: capacity-{calls}
traffic: {{calls: {calls}, rate: {rate}, concurrency: {calls}, setup_timeout_s: 15, max_call_s: {max_call}}}
webhook: {{port: 0}}
caller:
  prompt: {{silence_ms: 500, min_speech_ms: 200, timeout_s: 20}}
variables:
  answer: {{choice: ["four two seven one", "one two three", "seven eight nine"]}}
scripts:
  - name: echo_conversation
    steps:
      - say: "{{answer|lower}}"
      - wait_prompt                       # the echo of the answer
      - pause: {hold_ms}
      - say: "yes please"
      - wait_prompt
      - dtmf: "12"
      - hangup
"""
LOSS_GOAL_PCT = 0.1
CLOCK_LATENESS_GOAL_MS = 20.0  # the load tester's own clock must keep time, or it skews what it measures


def cpu_seconds() -> float:
    """CPU of this process and of its reaped children (the load tester's worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def capacity_step(
    calls: int, args: argparse.Namespace, server_uris: tuple[str, ...], workdir: Path, server: psutil.Process
) -> dict[str, Any]:
    rate = min(args.rate, calls)
    hold_s = args.hold + calls / rate  # the first call is still up when the last one is placed
    path = workdir / f"capacity-{calls}.yaml"
    path.write_text(
        ECHO_SCENARIO.format(calls=calls, rate=rate, hold_ms=int(hold_s * 1000), max_call=int(hold_s + 60))
    )
    out = workdir / f"capacity-{calls}"
    cpu0, server_cpu0, t0 = cpu_seconds(), tree_cpu(server), time.monotonic()
    load0 = os.getloadavg()[0]
    result = run_loadtest(
        RunOptions(
            scenario_path=path, targets=server_uris, out=out, workers=args.workers,
            rtp_ports=(40000, 40000 + 4 * calls + 100 * args.workers),
        )
    )  # fmt: skip
    cpu, server_cpu, wall = cpu_seconds() - cpu0, tree_cpu(server) - server_cpu0, time.monotonic() - t0
    records = result.records
    packets = sum(r["rtp"]["packets"] for r in records)
    lost = sum(r["rtp"]["lost"] for r in records)
    loss_pct = 100 * lost / max(1, packets + lost)
    timeouts = sum(t["prompt_timeout"] for r in records for t in r["turns"])
    completed = sum(r["outcome"] == "hung_up_early" for r in records)  # the script ends by hanging up
    stats = json.loads((out / "summary.json").read_text())["worker_stats"]
    clocks = [w["manager"]["clock"] for w in stats if w]
    clock = max(clocks, key=lambda c: c["lateness_p99_ms"])  # the latest of the load tester's processes
    skipped = max(c["skipped"] / max(1, c["ticks"] + c["skipped"]) for c in clocks)
    call_seconds = sum(r["duration_s"] or 0.0 for r in records)
    return {
        "calls": calls,
        "load_tester_processes": args.workers,
        "server_workers": len(server_uris),
        "rate_cps": rate,
        "completed": completed,
        "failed": len(records) - completed,
        "errors": sorted({str(r["error"]) for r in records if r["error"]})[:3],
        "peak_concurrency": result.summary.get("peak_concurrency"),
        "packets": packets,
        "lost": lost,
        "loss_pct": round(loss_pct, 4),
        "gaps": sum(r["rtp"]["gaps"] for r in records),
        # Audio that arrived, against 50 packets a second over every call's life: a starved side
        # (either) skips its late ticks, so fewer packets leave, with no sequence gap (not "loss").
        "audio_pct": round(100 * packets / max(1.0, 50 * call_seconds), 1),
        "clock_skipped_pct": round(100 * skipped, 1),  # ticks the load tester skipped (its worst process)
        "prompt_timeouts": timeouts,
        "cpu_s": round(cpu, 2),
        "cpu_us_per_packet": round(1e6 * cpu / max(1, packets), 2),  # the load tester's, per packet received
        "server_cpu_us_per_packet": round(1e6 * server_cpu / max(1, packets), 2),
        "wall_s": round(wall, 2),
        "cpu_share_of_core": round(cpu / wall, 3),
        "server_cpu_share_of_core": round(server_cpu / wall, 3),
        "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "clock": clock,
        "gaps_per_call": round(sum(r["rtp"]["gaps"] for r in records) / max(1, len(records)), 2),
        "holds": completed == calls and loss_pct < LOSS_GOAL_PCT and timeouts == 0,
        "on_time": clock["lateness_p99_ms"] < CLOCK_LATENESS_GOAL_MS,
    }


def detection_cost() -> dict[str, float]:
    """CPU µs per 20 ms packet: the caller's tap (energy on the G.711 bytes of a silent packet, the
    worst case: every byte is looked at) vs a numpy peak vs WebRTC VAD on the decoded frame."""
    from parley.media.rtp import RtpSender
    from parley.media.stream import RtpStream
    from parley.speech.vad import make_vad

    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(160) * 3000).astype(np.int16)
    payload = g711.encode("PCMU", pcm)
    silent = RtpSender(0).packet(g711.encode("PCMU", np.zeros(160, np.int16)))
    stream = RtpStream("PCMU", 0, ("127.0.0.1", 4000), lambda data, addr: None, time=lambda: 0.0)
    tap = PacketTap(stream, QUIET["PCMU"], lambda arrival: None, 0.06)
    vad = make_vad("webrtc")
    n = 20000
    return {
        "tap_on_silent_packet_us": 1e6 * timeit.timeit(lambda: tap.feed(silent, None, 1.0), number=n) / n,
        "numpy_peak_us": 1e6 * timeit.timeit(lambda: int(np.abs(pcm.astype(np.int32)).max()), number=n) / n,
        "decode_plus_numpy_peak_us": 1e6
        * timeit.timeit(lambda: int(np.abs(g711.decode("PCMU", payload).astype(np.int32)).max()), number=n)
        / n,
        "webrtc_vad_us": 1e6 * timeit.timeit(lambda: vad.speech_probability(pcm), number=n // 4) / (n // 4),
    }


def agent_run(args: argparse.Namespace, workdir: Path, prefix: list[str]) -> dict[str, Any]:
    sink_port = free_port()
    agent = workdir / "card_block.yaml"
    agent.write_text(
        (ROOT / "examples" / "card_block.yaml")
        .read_text()
        .replace("127.0.0.1:8080", f"127.0.0.1:{sink_port}")
    )
    cache = workdir / "cache"
    os.environ["PARLEY_CACHE_DIR"] = str(cache)  # fresh prompts for the agent and the caller alike
    started = time.monotonic()
    server = start_agent_server(
        agent, port=free_port(), rtp_ports=(24000, 24400), records=workdir / "agent-calls.jsonl",
        extra=["--workers", "1", "--max-load", "0"], startup_timeout=180, prefix=prefix, cache_dir=cache,
    )  # fmt: skip
    startup = time.monotonic() - started
    try:
        result = run_loadtest(
            RunOptions(
                scenario_path=ROOT / "examples" / "loadtest" / "card_block.yaml",
                targets=(server.uri,),
                out=workdir / "agent-run",
                rtp_ports=(44000, 44400),
                webhook_port=sink_port,
                overrides={"calls": args.agent_calls, "rate": 0.5, "concurrency": args.agent_calls},
                seed=1,
            )
        )
    finally:
        stop_agent_server(server)
    s = result.summary
    return {
        "agent": "examples/card_block.yaml",
        "server_startup_s": round(startup, 1),
        "calls": s["attempted"],
        "outcomes": {k: v for k, v in s["outcomes"].items() if v},
        "turn_latency_p50_ms": s["reply_latency_ms"]["p50"],
        "turn_latency_p95_ms": s["reply_latency_ms"]["p95"],
        "slot_accuracy_pct": s["slots"]["pct"],
        "slots_by_type": s["slots"]["by_type"],
        "threshold_failures": result.failures,
        "out": str(workdir / "agent-run"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="250,500,1000", help="Concurrent calls per step.")
    parser.add_argument("--hold", type=float, default=20.0, help="Seconds all calls of a step overlap.")
    parser.add_argument("--rate", type=float, default=50.0, help="Calls placed per second in a step.")
    parser.add_argument("--agent-calls", type=int, default=5, help="Calls of the end-to-end run (0: skip).")
    parser.add_argument("--server-cpu", type=int, default=None, help="Core for the server (default: last).")
    parser.add_argument("--workers", type=int, default=1, help="Load-tester processes (>1: unpinned).")
    parser.add_argument("--server-workers", type=int, default=1, help="Echo server workers (ports P..P+N-1).")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    steps = [int(x) for x in args.steps.split(",")]
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = args.server_cpu if args.server_cpu is not None else cpus[-1]
    prefix: list[str] = []
    if args.workers == 1 and args.server_workers == 1:  # one core each; several processes share them all
        os.sched_setaffinity(0, [c for c in cpus if c != server_cpu] or cpus)
        prefix = ["taskset", "-c", str(server_cpu)] if shutil.which("taskset") else []
    workdir = Path(tempfile.mkdtemp(prefix="loadtest-capacity-"))
    report: dict[str, Any] = {"command": " ".join([sys.executable, *sys.argv]), "server_cpu": server_cpu}

    report["detection_cost"] = cost = detection_cost()
    print("prompt detection, CPU per 20 ms packet: " + ", ".join(f"{k} {v:.2f}" for k, v in cost.items()))

    port = free_block(args.server_workers)
    cmd = [*prefix, sys.executable, "-m", "parley", "serve", "echo", "--host", "127.0.0.1"]
    cmd += ["--workers", str(args.server_workers), "--port", str(port)]
    cmd += ["--transport", "udp", "--rtp-ports", f"20000-{20000 + 4 * max(steps) + 100}", "--max-load", "0"]
    cmd += ["--rate-per-ip", "0"]  # one caller address places every call: a load, not a flood
    lines: list[str] = []
    ready = READY_LINE if args.server_workers == 1 else NODE_READY_LINE
    proc = spawn_until_ready(cmd, lines, cwd=ROOT, startup_timeout=60, ready_line=ready)
    uris = tuple(f"sip:echo@127.0.0.1:{port + i}" for i in range(args.server_workers))
    header = f"{'calls':>6} {'done':>5} {'fail':>5} {'loss %':>8} {'gaps':>6} {'p-t/o':>5} {'cpu %':>6}"
    header += f" {'holds':>5} {'clock p99 ms':>12} {'server cpu %':>12} {'peak':>6}"
    print(header + f" {'µs/pkt':>6} {'server':>6} {'audio %':>7}")
    report["capacity"] = []
    try:
        for calls in steps:
            row = capacity_step(calls, args, uris, workdir, psutil.Process(proc.pid))
            report["capacity"].append(row)
            print(
                f"{row['calls']:>6} {row['completed']:>5} {row['failed']:>5} {row['loss_pct']:>8.3f} "
                f"{row['gaps']:>6} {row['prompt_timeouts']:>5} {100 * row['cpu_share_of_core']:>6.0f} "
                f"{'yes' if row['holds'] else 'no':>5} {row['clock']['lateness_p99_ms']:>12.1f} "
                f"{100 * row['server_cpu_share_of_core']:>12.0f} {row['peak_concurrency']:>6} "
                f"{row['cpu_us_per_packet']:>6.1f} {row['server_cpu_us_per_packet']:>6.1f} "
                f"{row['audio_pct']:>7.1f}",
                flush=True,
            )
            for error in row["errors"]:
                print(f"       ! {error}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    holding = [r["calls"] for r in report["capacity"] if r["holds"]]
    on_time = [r["calls"] for r in report["capacity"] if r["holds"] and r["on_time"]]
    report["max_calls_held"] = held = max(holding) if holding else 0
    report["max_calls_held_on_time"] = timely = max(on_time) if on_time else 0
    print(
        f"one load-tester process held {held} calls (all completed, < {LOSS_GOAL_PCT} % loss, no prompt "
        f"timeout); {timely} with its clock on time (p99 lateness < {CLOCK_LATENESS_GOAL_MS:.0f} ms)"
    )

    if args.agent_calls:
        report["agent_run"] = run = agent_run(args, workdir, prefix)
        print(
            f"card_block: {run['calls']} calls {run['outcomes']}, "
            f"turn latency p50 {run['turn_latency_p50_ms']} p95 {run['turn_latency_p95_ms']} ms, "
            f"slot accuracy {run['slot_accuracy_pct']} %"
        )
    out = args.out or HERE / "results" / f"loadtest_capacity-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
