"""Calls one node holds with ``--workers 2`` on 2 cores against ``--workers 1`` on 1 core: echo, then agents.

**Echo.** For each configuration and each step N, SIPp (``rtp_stream``, 20 s of PCMU a call each way) places N
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

**Agent.** ``parley serve examples/card_block.yaml`` (every ``${X_BACKEND}`` of its webhooks pointed
at the load tester's sink), one decode process per worker beside each worker's Whisper process,
pinned and placed as above. For each step C, ``parley loadtest examples/loadtest/card_block.yaml`` places
``--agent-calls-per-step`` × C calls, at most C at once, spread round-robin over the workers' ports
(``--target`` per worker), one node for all the steps of a configuration. Both nodes are up
together and their steps alternate (1 worker's first, 2 workers' first, 1 worker's second, ...),
so that the two configurations share whatever else the machine is doing at the time. A step holds when every
call was answered, no prompt timed out, RTP loss (the load tester's side) is below 0.1 %, the turn
latency p95 (the caller's end of speech to the agent's first reply audio) is within
``--agent-p95-ms``, and Whisper's result came in time on at least ``--whisper-in-time-pct`` of the
spoken turns (from the node's call records). That last test matters: Whisper's decode (≈0.25
CPU-s an answer with AVX-512, 1.6 without) is the agent's main cost, and the agent waits for it at
most ``ARBITER_DEADLINE_S`` (1.5 s) after the end of speech, then answers on the streaming
decoders alone; the agent part first measures that cost on this machine (the report's
``whisper``). A starved node therefore keeps its replies within about 2.4 s (0.6 s of silence
to close the turn, the deadline, the reply's start) while its accuracy falls and dialogues go
astray: the latency alone would hide the overload. Calls whose dialogue went astray (a misheard date ends in a
transfer: the scenario's ``failed``) are reported beside, with the slot accuracy.

The capacity of each configuration is its highest step passing before the first that fails; the
figure is the ratio 2 workers / 1 worker, for echo and for agent calls, in one run.

Usage::

    .venv/bin/python bench/cluster_capacity.py --out capacity.json          # both, ≈ 20 min
    .venv/bin/python bench/cluster_capacity.py --parts agent --agent-steps-1 2,4 --agent-steps-2 4,8
    .venv/bin/python bench/cluster_capacity.py --parts echo --steps-1 300,500 --steps-2 600,1000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from calls_per_core import SCENARIO, free_port, sipp_counts

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
AGENT = ROOT / "examples" / "card_block.yaml"
AGENT_SCENARIO = ROOT / "examples" / "loadtest" / "card_block.yaml"
LOSS_GOAL_PCT = 0.1
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
    """CPU seconds of a process and all its descendants alive now, and of the children they reaped."""
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def start_node(
    workers: int,
    port: int,
    stats_file: Path,
    pin: str | None,
    app: str = "echo",
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """``parley serve APP --workers N`` on ``port`` … ``port+N-1``, returned once every worker answers."""
    cmd = [sys.executable, "-m", "parley", "serve", app, "--workers", str(workers), "--port", str(port)]
    cmd += ["--host", "127.0.0.1", "--transport", "udp", "--rtp-ports", "20000-40000", "--max-load", "0"]
    cmd += ["--rate-per-ip", "0"]  # one caller address places every call: a load, not a flood
    cmd += ["--stats-file", str(stats_file), *extra]
    ready = "answering calls" if workers == 1 else READY  # one worker runs as one process
    proc = subprocess.Popen(
        [*(["taskset", "-c", pin] if pin else []), *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env=env, start_new_session=True,
    )  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if ready in line:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep its pipe drained
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"the node with {workers} workers did not start: {' '.join(cmd)}")


def stop_node(node: subprocess.Popen) -> None:
    node.send_signal(signal.SIGTERM)
    try:
        node.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait()


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
    stop_node(node)
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
        and float(result.get("rtp_loss_percent", 100.0)) < LOSS_GOAL_PCT  # type: ignore[arg-type]
    )


def pinned(pin: str | None) -> list[str]:
    return ["taskset", "-c", pin] if pin else []


def agent_step(
    agent: Path, scenario: Path, workers: int, concurrency: int, port: int, sink_port: int,
    node: psutil.Process, pin: str | None, args: argparse.Namespace, workdir: Path,
) -> dict[str, Any]:  # fmt: skip
    """One load-test run of ``concurrency`` calls at once against the node's workers (round-robin)."""
    calls = args.agent_calls_per_step * concurrency
    out = workdir / f"{agent.stem}-{workers}-{concurrency}"
    cmd = [sys.executable, "-m", "parley", "loadtest", str(scenario), "--out", str(out)]
    for worker in range(workers):
        cmd += ["--target", f"sip:agent@127.0.0.1:{port + worker}"]
    cmd += ["--calls", str(calls), "--concurrency", str(concurrency), "--rate", "1", "--seed", "1"]
    cmd += ["--webhook-port", str(sink_port), "--rtp-ports", "40000-48000"]
    load0 = os.getloadavg()[0]
    records = workdir / f"{agent.stem}-{workers}-records.jsonl"
    seen = len(records.read_text().splitlines()) if records.exists() else 0
    cpu0, t0 = tree_cpu(node), time.monotonic()
    done = subprocess.run([*pinned(pin), *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=calls * 200 + 120)  # fmt: skip
    cpu, wall = tree_cpu(node) - cpu0, time.monotonic() - t0
    if done.returncode not in (0, 1):  # 1: the scenario's own thresholds missed, reported beside
        raise RuntimeError(f"parley loadtest exited {done.returncode}: {done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    figures = summary["summary"]
    latency = figures["reply_latency_ms"]
    call_seconds = (figures["call_duration_s"]["mean"] or 0.0) * figures["call_duration_s"]["count"]
    time.sleep(1.0)  # the node appends a call's record as it ends
    turns = [
        turn
        for line in records.read_text().splitlines()[seen:]
        for turn in json.loads(line).get("turns", [])
        if turn.get("input") == "speech"
    ]
    whisper_in_time = sum("asr_whisper_ms" in (turn.get("timing") or {}) for turn in turns)
    result = {
        "part": "agent",
        "agent": agent.name,
        "workers": workers,
        "concurrency": concurrency,
        "calls": figures["attempted"],
        "not_answered": figures["attempted"] - figures["answered"],
        "failed": figures["failed"],
        "outcomes": {k: v for k, v in figures["outcomes"].items() if v},
        "peak_concurrency": figures["peak_concurrency"],
        "turns": figures["turns"]["replied"],
        "prompt_timeouts": figures["turns"]["prompt_timeouts"],
        "turn_latency_p50_ms": round(latency["p50"], 1) if latency["p50"] is not None else None,
        "turn_latency_p95_ms": round(latency["p95"], 1) if latency["p95"] is not None else None,
        "speech_turns": len(turns),
        "whisper_in_time_pct": round(100 * whisper_in_time / len(turns), 1) if turns else None,
        "rtp_loss_percent": round(figures["rtp"]["loss_pct"], 3),
        "slot_accuracy_pct": figures["slots"].get("pct"),
        "node_cpu_cores": round(cpu / wall, 2),
        "node_cpu_s_per_call": round(cpu / max(figures["attempted"], 1), 2),
        "call_duration_s_mean": round(figures["call_duration_s"]["mean"] or 0.0, 1),
        "node_cores_per_call": round(cpu / call_seconds, 4) if call_seconds else None,
        "wall_s": round(wall, 1),
        "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "threshold_failures": summary["threshold_failures"],
    }
    p95 = result["turn_latency_p95_ms"]
    result["pass"] = (
        result["not_answered"] == 0
        and result["calls"] == calls
        and result["prompt_timeouts"] == 0
        and result["rtp_loss_percent"] < LOSS_GOAL_PCT
        and p95 is not None
        and p95 <= args.agent_p95_ms
        and (result["whisper_in_time_pct"] or 0.0) >= args.whisper_in_time_pct
    )
    return result


def start_agent_node(
    agent: Path, workers: int, port: int, sink_port: int, pin: str | None, workdir: Path
) -> subprocess.Popen:
    """The agent on a node, every ``${X_BACKEND}`` of its webhooks pointed at the load tester's sink."""
    backends = set(re.findall(r"\$\{(\w+_BACKEND)", agent.read_text()))
    env = {**os.environ, **{name: f"http://127.0.0.1:{sink_port}" for name in backends}}
    name = f"{agent.stem}-{workers}"
    extra = ["--decode-processes", "1", "--records", str(workdir / f"{name}-records.jsonl")]
    started = time.monotonic()
    node = start_node(workers, port, workdir / f"{name}.json", pin, str(agent), extra, env)
    print(f"{agent.name}, {workers} worker(s): up in {time.monotonic() - started:.1f} s", flush=True)
    return node


def agent_capacity(
    agent: Path, scenario: Path, steps: dict[int, list[int]], args: argparse.Namespace, workdir: Path
) -> list[dict]:
    """Both configurations' nodes up at once, their steps taken in turn (1 worker's first, 2 workers'
    first, 1 worker's second, ...), each configuration until its first step that fails: the two
    share whatever else the machine is doing at the time."""
    sink_port = free_port()
    nodes: dict[int, tuple[subprocess.Popen, int]] = {}
    results: list[dict] = []
    try:
        for workers in steps:
            port = free_block(workers)
            node_pin = "1" if workers == 1 else None
            nodes[workers] = (start_agent_node(agent, workers, port, sink_port, node_pin, workdir), port)
        failed: set[int] = set()
        for i in range(max(len(s) for s in steps.values())):
            for workers, mine in steps.items():
                if workers in failed or i >= len(mine):
                    continue
                node, port = nodes[workers]
                caller_pin = "0" if workers == 1 else None
                result = agent_step(agent, scenario, workers, mine[i], port, sink_port,
                                    psutil.Process(node.pid), caller_pin, args, workdir)  # fmt: skip
                results.append(result)
                print(json.dumps(result), flush=True)
                if not result["pass"]:
                    failed.add(workers)
    finally:
        for node, _ in nodes.values():
            stop_node(node)
    return results


WHISPER_ANSWERS = ("the second of August nineteen ninety six", "yes", "no thank you", "four two seven one",
                   "can I talk to a real person", "the fifteenth of June nineteen ninety eight")  # fmt: skip


def whisper_cost() -> dict[str, Any]:
    """CPU seconds of one Whisper decode on this machine (the agent's main cost per spoken answer):
    the mean over a few answers the load test's caller speaks (flite, as in the scenario)."""
    import asyncio

    import numpy as np
    import soxr

    from parley.speech.engines.whisper import MODEL_RATE, WhisperEngine
    from parley.speech.tts import load_tts, render

    engine = WhisperEngine()
    model = engine.model()
    model.transcribe(np.zeros(MODEL_RATE, np.float32), None, engine.context_s)  # the first one is slower
    tts = load_tts("flite")
    costs = []
    for text in WHISPER_ANSWERS:
        pcm = asyncio.run(render(tts, text, "slt"))
        audio = soxr.resample(pcm.astype(np.float32) / 32768.0, 8000, MODEL_RATE)
        started = time.process_time()
        model.transcribe(audio, None, engine.context_s)
        costs.append(time.process_time() - started)
    mean = round(sum(costs) / len(costs), 3)
    return {
        "model": engine.model_name,
        "cpu_s_per_answer": mean,
        "load_average": round(os.getloadavg()[0], 2),
    }


def highest_pass(results: list[dict], key: str) -> int:
    """The highest step passing before the first that fails (0: none)."""
    held = 0
    for result in results:
        if not result["pass"]:
            break
        held = result[key]
    return held


def steps_of(text: str) -> list[int]:
    return [int(step) for step in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="echo,agent", help="echo, agent, or both (comma-separated)")
    parser.add_argument("--steps-1", default="1000,1500", help="echo calls for 1 worker on 1 core")
    parser.add_argument("--steps-2", default="2000,3000", help="echo calls for 2 workers on 2 cores")
    parser.add_argument("--agent", type=Path, default=AGENT, help="the agent (its ${X_BACKEND}s: the sink)")
    parser.add_argument("--agent-scenario", type=Path, default=AGENT_SCENARIO, help="its load-test scenario")
    parser.add_argument("--agent-steps-1", default="2,3,4,5", help="agent calls at once, 1 worker")
    parser.add_argument("--agent-steps-2", default="4,6,8,10", help="agent calls at once, 2 workers")
    parser.add_argument("--agent-calls-per-step", type=int, default=2, help="calls a step, × its concurrency")
    parser.add_argument("--agent-p95-ms", type=float, default=1000.0, help="turn p95 bound of 'held'")
    parser.add_argument("--whisper-in-time-pct", type=float, default=95.0, help="of spoken turns, for 'held'")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="cluster-capacity-"))
    report: dict[str, Any] = {"command": " ".join([sys.executable, *sys.argv])}
    report["load_average"] = [os.getloadavg()]
    if "echo" in parts:
        results = []
        capacity = {}
        for workers, steps in ((1, args.steps_1), (2, args.steps_2)):
            mine = []
            for calls in steps_of(steps):
                result = {"part": "echo", **run_step(workers, calls, workdir)}
                result["pass"] = passes(result)
                mine.append(result)
                print(json.dumps(result), flush=True)
                if not result["pass"]:
                    break
            capacity[workers] = highest_pass(mine, "calls")
            results += mine
        ratio = capacity[2] / capacity[1] if capacity[1] else None
        report["echo"] = {"steps": results, "capacity": capacity, "ratio": ratio}
        report["load_average"].append(os.getloadavg())
    if "agent" in parts:
        report["whisper"] = cost = whisper_cost()
        print(f"whisper {cost['model']}: {cost['cpu_s_per_answer']} CPU-s per answer", flush=True)
        steps = {1: steps_of(args.agent_steps_1), 2: steps_of(args.agent_steps_2)}
        results = agent_capacity(args.agent, args.agent_scenario, steps, args, workdir)
        capacity = {w: highest_pass([r for r in results if r["workers"] == w], "concurrency") for w in steps}
        ratio = capacity[2] / capacity[1] if capacity[1] else None
        report["agent"] = {"steps": results, "capacity": capacity, "ratio": ratio}
        held_if = {"p95_ms": args.agent_p95_ms, "whisper_in_time_pct": args.whisper_in_time_pct}
        report["agent"]["held_if"] = held_if
        report["load_average"].append(os.getloadavg())
    print(json.dumps({k: {"capacity": v["capacity"], "ratio": v["ratio"]} for k, v in report.items()
                      if isinstance(v, dict) and "capacity" in v}))  # fmt: skip
    print(f"load average (1 min) through the run: {[round(load[0], 2) for load in report['load_average']]}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
