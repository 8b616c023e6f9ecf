"""``parley serve echo --workers 2``: a real node (supervisor + two worker processes) called by SIPp.

One node goes through its whole life in one test (each start costs seconds on a busy machine):
calls to both workers, the metrics endpoint checked against SIPp's counts, ``kill -9`` of a worker
(restarted, its port answering again), a roll while a call is in progress (the draining worker
answers OPTIONS 503, the call completes, the new worker takes calls), and SIGTERM (exit 0, the
stats summed over every worker that exited cleanly).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.harness import HOST, ROOT, SippResult, assert_sipp_ok, needs_sipp, run_sipp
from parley.cluster.probe import probe
from parley.cluster.supervisor import combine_stats, plan_workers

from .nodes import Node


def test_plan_gives_each_worker_its_own_sip_port_and_an_even_slice_of_the_rtp_range():
    plans = plan_workers(3, 5060, (20000, 20100))
    assert [p.port for p in plans] == [5060, 5061, 5062]
    assert [p.rtp_ports for p in plans] == [(20000, 20032), (20032, 20064), (20064, 20096)]
    assert all(first % 2 == 0 and last - first >= 2 for first, last in (p.rtp_ports for p in plans))


@pytest.mark.parametrize(
    ("count", "port", "rtp", "message"),
    [
        (0, 5060, (20000, 20100), "at least one worker"),
        (3, 65534, (20000, 20100), "not all valid ports"),
        (2, 5060, (20001, 20100), "even port"),
        (4, 5060, (20000, 20006), "cannot give 4 workers"),
    ],
)
def test_plan_refuses_what_cannot_work(count, port, rtp, message):
    with pytest.raises(ValueError, match=message):
        plan_workers(count, port, rtp)


def test_workers_get_the_sip_limits_and_the_allow_list_plus_the_probe_source():
    from parley.cluster.node import worker_command
    from parley.cluster.supervisor import WorkerPlan

    options = {
        "agent": "echo", "host": "127.0.0.1", "transport": "udp", "max_load": 0.85, "media_timeout": 30.0,
        "drain": 0.0, "records": "calls.jsonl", "decode_processes": 1, "max_calls": None,
        "tcp_idle_timeout": 60.0, "max_connections": 100, "max_connections_per_ip": 10,
        "max_message_size": 8000, "max_transactions": 500, "rate_per_ip": 20.0, "rate_action": "drop",
        "allow": ("192.0.2.0/24",),
    }  # fmt: skip
    cmd = worker_command(options, {})(WorkerPlan(0, 5070, (20000, 20100)), Path("w.json"))
    pairs = dict(itertools.pairwise(cmd))
    assert pairs["--tcp-idle-timeout"] == "60.0" and pairs["--max-connections"] == "100"
    assert pairs["--max-connections-per-ip"] == "10" and pairs["--max-message-size"] == "8000"
    assert pairs["--max-transactions"] == "500" and pairs["--rate-per-ip"] == "20.0"
    assert pairs["--rate-action"] == "drop"
    allowed = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--allow"]
    assert allowed == ["192.0.2.0/24", "127.0.0.1"]


def test_combined_stats_sum_counters_and_leave_timings_out():
    one = {"answered": 3, "ended": {"remote-bye": 3}, "media": {"lost": 1}, "clock": {"tick_p99_ms": 2.0}}
    two = {"answered": 2, "ended": {"remote-bye": 1, "media-timeout": 1}, "media": {"lost": 0}}
    assert combine_stats([one, two]) == {
        "answered": 5,
        "ended": {"remote-bye": 4, "media-timeout": 1},
        "media": {"lost": 1},
    }


@pytest.fixture
def node(tmp_path) -> Iterator[Node]:
    started = Node(tmp_path, HOST, workers=2, extra=["--drain", "20"], options=["-v", "--log-format", "json"])
    yield started
    started.kill()


async def probe_until(status: int, port: int, timeout: float = 10) -> bool:
    """Probe until the answer is ``status`` (the worker handles SIGTERM a moment after it is sent)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await probe(HOST, port) == status:
            return True
        await asyncio.sleep(0.05)
    return False


def calls(node: Node, worker: int, count: int, tmp_path, duration_ms: int = 500) -> SippResult:
    target = f"{HOST}:{node.port + worker}"
    return run_sipp("uac_pcmu.xml", target, tmp_path=tmp_path, calls=count, duration_ms=duration_ms)


@needs_sipp
@pytest.mark.sipp
@pytest.mark.timeout(240)
def test_a_node_serves_restarts_rolls_and_drains_its_workers(node, tmp_path):
    for worker in (0, 1):
        assert_sipp_ok(calls(node, worker, 3, tmp_path), calls=3)
    # One scrape of the node sums both workers (prometheus-client multiprocess mode).
    assert node.metric("parley_calls_admitted_total") == 6
    assert node.settled_metric("parley_calls_ended_total", 6) == 6
    assert node.metric("parley_calls_active") == 0
    assert node.metric("parley_call_setup_seconds_count") == 6
    assert node.metric("parley_rtp_packets_expected_total") >= 6 * 20  # 0.5 s calls: 25 packets each

    # kill -9: the supervisor notices, starts a new worker on the same port, and it takes calls.
    killed = node.status()["workers"][1]["pid"]
    os.kill(killed, signal.SIGKILL)
    restarted = lambda s: s["workers"][1]["restarts"] == 1 and s["workers"][1]["state"] == "ready"  # noqa: E731
    status = node.wait_for(restarted, "restarted worker 1")
    assert status["workers"][1]["pid"] != killed and status["workers"][1]["last_exit"] == -signal.SIGKILL
    assert status["workers"][0]["generation"] == 1  # the other worker was left alone
    assert_sipp_ok(calls(node, 1, 2, tmp_path), calls=2)
    assert node.settled_metric("parley_calls_admitted_total", 8) == 8  # the killed worker's counts are kept

    # A roll while a 6 s call is in progress on worker 0: it drains (OPTIONS 503), the call ends
    # normally, then the new worker 0 answers; worker 1 follows.
    long_call: list[SippResult] = []
    caller = threading.Thread(target=lambda: long_call.append(calls(node, 0, 1, tmp_path, duration_ms=6000)))
    caller.start()
    node.wait_for(lambda s: node.metric("parley_calls_active") == 1, "had the long call up", timeout=10)
    assert node.post("/roll?settle=0") == 202
    node.wait_for(lambda s: s["workers"][0]["state"] == "draining", "drained worker 0", timeout=10)
    assert asyncio.run(probe_until(503, node.port)), "worker 0 never answered its probe 503 while draining"
    assert asyncio.run(probe(HOST, node.port + 1)) == 200  # the other worker still takes calls
    caller.join(timeout=60)
    assert_sipp_ok(long_call[0], calls=1)
    status = node.wait_for(lambda s: s["rolls_completed"] == 1, "completed the roll")
    assert [w["generation"] for w in status["workers"]] == [2, 3]
    assert [w["state"] for w in status["workers"]] == ["ready", "ready"]
    for worker in (0, 1):
        assert_sipp_ok(calls(node, worker, 1, tmp_path), calls=1)

    # SIGTERM drains the whole node; it exits 0 with the stats of every worker that exited cleanly
    # (the killed worker's 3 calls are in the metrics above, not in a stats file).
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=30) == 0, node.log()
    stats = json.loads(node.stats_file.read_text())
    assert stats["answered"] == 6 + 2 + 1 + 1 + 1 - 3, stats
    assert stats["ended"] == {"remote-bye": stats["answered"]}
    assert stats["restarts"] == 1
    reports = sorted((r["worker"], r["generation"]) for r in stats["workers"])
    assert reports == [(0, 1), (0, 2), (1, 2), (1, 3)]

    # The workers logged JSON lines; each call's lines carry its Call-ID (SIPp's: number-pid@host).
    logged = [json.loads(line) for line in node.lines if line.startswith("{")]
    answered = [line for line in logged if line["message"] == "call answered"]
    ended = [line for line in logged if line["message"] == "call ended: remote-bye"]
    assert len(answered) == len(ended) == 6 + 2 + 1 + 1 + 1, node.log()
    assert {line["call_id"] for line in answered} == {line["call_id"] for line in ended}
    assert all(line["call_id"].endswith(f"@{HOST}") for line in answered)
    fields = {"time", "level", "logger", "message", "call_id", "error"}
    assert {key for line in logged for key in line} <= fields


def test_serve_refuses_tcp_only_workers_clearly():
    result = subprocess.run(
        [sys.executable, "-m", "parley", "serve", "echo", "--workers", "2", "--transport", "tcp"],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2
    assert "need UDP" in result.stderr


def test_json_log_lines_carry_the_call_id_of_the_task_that_logged():
    import logging

    from parley.telephony.logs import JsonFormatter, call_id

    formatter = JsonFormatter()
    record = logging.LogRecord("parley.test", logging.INFO, __file__, 1, "turn %d done", (3,), None)
    assert json.loads(formatter.format(record)).keys() == {"time", "level", "logger", "message"}

    async def one_call(name: str) -> dict:
        call_id.set(name)
        await asyncio.sleep(0)
        return json.loads(formatter.format(record))

    async def both() -> list[dict]:
        return await asyncio.gather(one_call("a@host"), one_call("b@host"))

    lines = asyncio.run(both())
    assert [(line["call_id"], line["message"], line["level"]) for line in lines] == [
        ("a@host", "turn 3 done", "info"),
        ("b@host", "turn 3 done", "info"),
    ]
    assert call_id.get() is None  # each call's task had its own context
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        failed = logging.LogRecord("parley.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "RuntimeError: boom" in json.loads(formatter.format(failed))["error"]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_taken_admin_port_is_one_clear_error(workers):
    import socket

    from integration.harness import free_port

    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        admin = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "parley", "serve", "echo", "--workers", workers, "--host", HOST,
             "--port", str(free_port(block=2)), "--transport", "udp", "--admin-port", str(admin)],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on {HOST}:{admin}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_worker_that_exits_before_its_first_probe_fails_the_node_start_at_once(tmp_path):
    from parley.cluster.supervisor import Supervisor

    def command(plan, stats_file):
        return [sys.executable, "-c", f"import sys; sys.exit({3 + plan.index})"]

    async def run() -> tuple[bool, float, list[int | None]]:
        supervisor = Supervisor(command, plan_workers(2, 59990, (61000, 61008)), host=HOST,
                                state_dir=tmp_path, ready_timeout=60)  # fmt: skip
        loop = asyncio.get_running_loop()
        began = loop.time()
        ready = await supervisor.start()
        took = loop.time() - began
        await asyncio.sleep(1.0)  # a restart would have come by now (the first backoff is 0.5 s)
        return ready, took, [(w.last_exit, w.restarts, w.state) for w in supervisor.workers]

    ready, took, workers = asyncio.run(run())
    assert not ready and took < 10
    assert workers == [(3, 0, "stopped"), (4, 0, "stopped")]


def test_serve_refuses_a_bad_allow_list_before_starting_workers():
    result = subprocess.run(
        [sys.executable, "-m", "parley", "serve", "echo", "--workers", "2", "--allow", "not-a-network"],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2
    assert "not-a-network" in result.stderr and "worker" not in result.stderr


def test_tls_ports_that_overlap_the_workers_sip_ports_are_refused(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-days", "1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, timeout=60,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip("openssl cannot make a test certificate")
    from integration.harness import free_port

    port = free_port(block=2)
    result = subprocess.run(
        [sys.executable, "-m", "parley", "serve", "echo", "--workers", "2", "--host", HOST,
         "--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key), "--tls-port", str(port + 1)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "overlap the workers' SIP ports" in result.stderr
