"""A cluster on this machine: Kamailio (configured by ``parley cluster kamailio-config``) in front of two
``parley serve echo --workers 2`` nodes, under a steady load of SIPp calls with RTP both ways.

The two "hosts" are the loopback addresses 127.0.0.2 and 127.0.0.3 (Linux routes all of 127/8 to
``lo``), not network namespaces: these tests then run unprivileged, on any CI machine. Kamailio
listens on 127.0.0.1, SIPp calls it from 127.0.0.1. A node's link going down needs namespaces:
``test_namespaces.py``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from integration.harness import (
    HOST,
    ROOT,
    Kamailio,
    SippResult,
    assert_sipp_ok,
    free_port,
    needs_kamailio,
    needs_sipp,
    run_sipp,
)
from parley.cluster.probe import wait_until_ready

from .nodes import Node

pytestmark = [pytest.mark.kamailio, pytest.mark.sipp, needs_kamailio, needs_sipp, pytest.mark.timeout(240)]
HOSTS = ("127.0.0.2", "127.0.0.3")


class Cluster:
    def __init__(self, nodes: list[Node], proxy: Kamailio) -> None:
        self.nodes = nodes
        self.proxy = proxy

    def metric(self, name: str, labels: str = "") -> float:
        return sum(node.metric(name, labels) for node in self.nodes)

    def settled_metric(self, name: str, expected: float, labels: str = "", timeout: float = 5) -> float:
        """The metric summed over the nodes once it equals ``expected`` (or at ``timeout``)."""
        deadline = time.monotonic() + timeout
        while (value := self.metric(name, labels)) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return value

    def load(self, tmp_path, *, calls: int, rate: float, duration_ms: int) -> tuple[threading.Thread, list]:
        """SIPp calls through Kamailio in a background thread; the result lands in the list."""
        results: list[SippResult] = []

        def place() -> None:
            results.append(
                run_sipp("uac_proxy_rr.xml", f"{HOST}:{self.proxy.port}", tmp_path=tmp_path, calls=calls,
                         rate=rate, duration_ms=duration_ms, timeout=180, extra=["-timeout", "150s"])
            )  # fmt: skip

        thread = threading.Thread(target=place, daemon=True)
        thread.start()
        return thread, results


def parley(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "parley", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    nodes: list[Node] = []
    proxy = None
    try:
        for host in HOSTS:
            nodes.append(Node(tmp_path, host, workers=2, extra=["--drain", "30"]))
        port = free_port()
        out = tmp_path / "kamailio"
        made = parley("cluster", "kamailio-config", *(n.spec() for n in nodes), "--listen", f"{HOST}:{port}",
                      "--out", str(out), "--children", "2")  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert (out / "dispatcher.list").read_text().count("maxload=") == 4
        proxy = Kamailio.start(port, out / "kamailio.cfg", tmp_path)
        # Ready when Kamailio answers its own OPTIONS (the same probe the supervisor uses on workers).
        assert asyncio.run(wait_until_ready(HOST, port, timeout=15)), f"kamailio down:\n{proxy.log_text()}"
        time.sleep(1.5)  # one probe round: every worker seen answering
        yield Cluster(nodes, proxy)
    finally:
        if proxy is not None:
            proxy.stop()
        for node in nodes:
            node.kill()


def test_rolling_upgrade_of_both_nodes_under_steady_load_fails_no_call(cluster, tmp_path):
    calls = 150  # 30 s of calls at 5 a second, 2 s each: about 10 up at any time, the roll inside
    thread, results = cluster.load(tmp_path, calls=calls, rate=5, duration_ms=2000)
    time.sleep(3)
    assert cluster.metric("parley_calls_active") > 0  # scraped under load
    rolled = parley("cluster", "roll", *(node.admin for node in cluster.nodes), "--settle", "1.5")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    for node in cluster.nodes:
        workers = node.status()["workers"]
        assert [(w["generation"], w["state"]) for w in workers] == [(2, "ready")] * 2, workers
    assert thread.is_alive(), "the load ended before the roll did: the roll was not under load"
    thread.join(timeout=120)
    print(f"roll under load: {rolled.stdout.strip()}; refused while draining (then failed over):",
          cluster.metric("parley_calls_refused_total", 'reason="draining"'))  # fmt: skip
    assert_sipp_ok(results[0], calls=calls)
    # The nodes' metrics agree with the load tester: every call admitted once and ended by its BYE.
    # A worker that had begun draining before Kamailio's probe saw it refused a few INVITEs with
    # 503 (counted as refused, reason draining); Kamailio sent those to the next worker.
    assert cluster.metric("parley_calls_admitted_total") == results[0].successful == calls
    assert cluster.settled_metric("parley_calls_ended_total", calls, 'reason="remote-bye"') == calls
    assert cluster.metric("parley_calls_active") == 0
    assert cluster.metric("parley_calls_refused_total") == cluster.metric(
        "parley_calls_refused_total", 'reason="draining"'
    )


def test_kill_9_of_a_worker_fails_at_most_its_calls_and_new_calls_keep_succeeding(cluster, tmp_path):
    calls = 75  # 15 s of calls at 5 a second, 4 s each: about 20 up at once, 5 a worker
    thread, results = cluster.load(tmp_path, calls=calls, rate=5, duration_ms=4000)
    victim = cluster.nodes[0]
    time.sleep(5)
    held = victim.metric("parley_calls_active")  # both of its workers: a bound on the killed one's
    assert held > 0, "the node held no call when its worker was killed"
    pid = victim.status()["workers"][0]["pid"]
    subprocess.run(["kill", "-9", str(pid)], check=True)
    victim.wait_for(lambda s: s["workers"][0]["restarts"] == 1 and s["workers"][0]["state"] == "ready",
                    "restarted the killed worker")  # fmt: skip
    thread.join(timeout=120)
    result = results[0]
    print(f"kill -9 under load: node held {held:.0f} calls, {result.failed} of {calls} calls failed")
    assert result.successful + result.failed == calls, result.describe()
    assert result.failed <= held, f"{result.failed} calls failed, the node held {held}\n{result.describe()}"
    # The calls placed after the kill all succeeded: the rest of the node's calls, and the others'.
    assert result.successful >= calls - held
