"""A three-host cluster under ``parley loadtest``: Kamailio (configured by ``parley cluster
kamailio-config``) on one host, a ``parley serve echo --workers 2`` node on each of two others, the
load tester calling Kamailio from the root namespace with RTP both ways (each caller speaks twice
and must hear both echoes, so a call whose worker died fails even if its SIP dialog looks whole).

The hosts are network namespaces on a bridge where the test runs as root, else the loopback
addresses 127.0.0.1-3 (``hosts.py``); each test prints which, and records it as the ``hosts``
property of its JUnit entry.

- A roll of both nodes (``parley cluster roll``) fails no call, and the nodes' Prometheus figures,
  scraped while the calls run and summed over nodes, agree with the load tester's own counts.
- ``kill -9`` of a worker fails at most the calls its node held; every later call succeeds.
- A node whose link goes down (namespaces only) stops getting new calls within Kamailio's probe
  interval plus one probe's timeout; with the link back, it takes calls again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from integration.harness import ROOT, Kamailio, needs_kamailio
from parley.cluster.kamailio import Node as NodeSpec
from parley.cluster.kamailio import dispatcher_list, kamailio_cfg, module_path
from parley.cluster.probe import wait_until_ready

from .hosts import Hosts, NamespaceHosts, make_hosts
from .nodes import Node

pytestmark = [pytest.mark.kamailio, needs_kamailio, pytest.mark.timeout(150)]
PROBE_INTERVAL_S = 1.0  # kamailio-config's default
PROBE_TIMEOUT_S = 2.0  # its fr_timer: how long an INVITE or a probe waits for a first answer

ECHO_CALLS = """
name: cluster-echo
traffic: {{calls: {calls}, rate: {rate}, concurrency: {calls}, setup_timeout_s: 10, max_call_s: 30}}
webhook: {{port: 0}}
caller:
  prompt: {{silence_ms: 400, min_speech_ms: 200, timeout_s: 5}}
variables:
  word: {{choice: ["one two three", "seven eight nine"]}}
scripts:
  - name: echo_talk
    steps:
      - say: "{{word}}"
      - wait_prompt                      # the echo of what was said: RTP both ways
      - pause: {hold_ms}
      - say: "yes please"
      - wait_prompt                      # a call whose worker died hears no echo: it fails here
      - hangup
"""


@pytest.fixture
def hosts(record_property) -> Iterator[Hosts]:
    made, why = make_hosts()
    print(f"\nhosts: {made.kind} ({why})")
    record_property("hosts", made.kind)
    try:
        yield made
    finally:
        made.remove()


class LoadTest:
    """``parley loadtest`` from the root namespace, through Kamailio, in the background."""

    def __init__(
        self, tmp_path: Path, source: str, proxy: str, *, calls: int, rate: float, hold_ms: int
    ) -> None:
        scenario = tmp_path / "echo-calls.yaml"
        scenario.write_text(ECHO_CALLS.format(calls=calls, rate=rate, hold_ms=hold_ms))
        self.calls = calls
        self.out = tmp_path / "out"
        cmd = [sys.executable, "-m", "parley", "loadtest", str(scenario), "--target", f"sip:echo@{proxy}"]
        cmd += ["--host", source, "--out", str(self.out), "--seed", "7"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)  # fmt: skip

    def running(self) -> bool:
        return self.proc.poll() is None

    def records(self, timeout: float = 90) -> list[dict]:
        """Each call's record, its times made absolute: ``invited``, ``answered``, ``ended`` (Unix time)."""
        try:
            _, errors = self.proc.communicate(timeout=timeout)
        finally:
            self.stop()
        assert self.proc.returncode == 0, errors[-3000:]
        started_at = json.loads((self.out / "summary.json").read_text())["started_at"]
        records = [json.loads(line) for line in (self.out / "calls.jsonl").read_text().splitlines()]
        for record in records:
            record["invited"] = started_at + record["started"]
            if record["setup_ms"] is not None:
                record["answered"] = record["invited"] + record["setup_ms"] / 1000
                record["ended"] = record["answered"] + record["duration_s"]
        assert len(records) == self.calls
        return records

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@dataclass
class Cluster:
    hosts: Hosts
    tmp_path: Path
    nodes: list[Node] = field(default_factory=list)
    proxy: Kamailio | None = None
    loads: list[LoadTest] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.hosts.proxy.address}:{self.hosts.proxy.sip_port}"

    def start(self) -> Cluster:
        """Both nodes, then Kamailio in front of them, ready once it and every worker answer probes."""
        for host in self.hosts.nodes:
            node = Node(self.tmp_path, host.address, workers=2, port=host.sip_port, prefix=host.prefix,
                        extra=["--drain", "30", "--rate-per-ip", "0"])  # fmt: skip
            self.nodes.append(node)
        destinations = self.tmp_path / "dispatcher.list"
        destinations.write_text(dispatcher_list([NodeSpec(n.host, n.port, n.workers) for n in self.nodes]))
        config = kamailio_cfg(listen=self.address, dispatcher_file=str(destinations), modules=module_path())
        (self.tmp_path / "kamailio.cfg").write_text(config)
        proxy = self.hosts.proxy
        self.proxy = Kamailio.start(int(proxy.sip_port), self.tmp_path / "kamailio.cfg", self.tmp_path,
                                    prefix=proxy.prefix)  # fmt: skip
        up = wait_until_ready(proxy.address, int(proxy.sip_port), timeout=20, source=self.hosts.caller)
        assert asyncio.run(up), f"kamailio never answered:\n{self.proxy.log_text()}"
        time.sleep(2 * PROBE_INTERVAL_S + 0.5)  # every worker probed and seen up
        return self

    def stop(self) -> None:
        for load in self.loads:
            load.stop()
        if self.proxy is not None:
            self.proxy.stop()
        for node in self.nodes:
            node.kill()

    def load(self, *, calls: int, rate: float, hold_ms: int) -> LoadTest:
        load = LoadTest(
            self.tmp_path, self.hosts.caller, self.address, calls=calls, rate=rate, hold_ms=hold_ms
        )
        self.loads.append(load)
        return load

    def metric(self, name: str, labels: str = "") -> float:
        """A metric summed over the nodes (each node's endpoint sums its workers)."""
        return sum(node.metric(name, labels) for node in self.nodes)

    def settled_metric(self, name: str, expected: float, labels: str = "", timeout: float = 5) -> float:
        deadline = time.monotonic() + timeout
        while (value := self.metric(name, labels)) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return value


@pytest.fixture
def cluster(hosts, tmp_path) -> Iterator[Cluster]:
    started = Cluster(hosts, tmp_path)
    try:
        yield started.start()
    finally:
        started.stop()


def failed(records: list[dict]) -> list[dict]:
    """The calls that did not play their script to its end, both echoes heard (it ends by hanging up)."""
    timed_out = [r for r in records if any(turn["prompt_timeout"] for turn in r["turns"])]
    return [r for r in records if r["outcome"] != "hung_up_early" or r in timed_out]


def peer_host(record: dict) -> str | None:
    """The address of the worker that took the call (its RTP address, from the SDP answer)."""
    return record["media_peer"].rsplit(":", 1)[0] if record["media_peer"] else None


def peer_port(record: dict) -> int:
    return int(record["media_peer"].rsplit(":", 1)[1])


def brief(records: list[dict]) -> list[tuple]:
    """What an assertion message needs of each record."""
    fields = ("outcome", "error", "setup_ms", "media_peer")
    return [(r["index"], round(r["started"], 2), *(r[f] for f in fields)) for r in records]


class ActiveCalls:
    """Scrapes ``parley_calls_active`` of every node, summed, every ``interval`` s in the background:
    (scrape began, scrape ended, value) samples, Unix times."""

    def __init__(self, cluster: Cluster, interval: float = 0.5) -> None:
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(cluster, interval), daemon=True)
        self._thread.start()

    def _run(self, cluster: Cluster, interval: float) -> None:
        while not self._stop.wait(interval):
            began = time.time()
            value = cluster.metric("parley_calls_active")
            self.samples.append((began, time.time(), value))

    def stop(self) -> list[tuple[float, float, float]]:
        self._stop.set()
        self._thread.join(timeout=15)
        return self.samples


def in_progress(records: list[dict], began: float, ended: float, margin: float) -> tuple[int, int]:
    """How many calls the load tester had up throughout [began, ended], and at any moment of it
    (widened by ``margin`` for the time a 200 OK or a BYE takes to arrive)."""
    up = [r for r in records if "answered" in r]
    throughout = sum(1 for r in up if r["answered"] < began - margin and r["ended"] > ended + margin)
    at_some_point = sum(1 for r in up if r["answered"] < ended + margin and r["ended"] > began - margin)
    return throughout, at_some_point


def test_a_roll_of_both_nodes_fails_no_call_and_the_metrics_agree_with_the_load_tester(cluster):
    calls = 78  # 26 s of calls at 3 a second, about 4 s each: 12 up at any time, the roll inside
    load = cluster.load(calls=calls, rate=3, hold_ms=1000)
    active = ActiveCalls(cluster)
    time.sleep(3)
    roll = [
        sys.executable,
        "-m",
        "parley",
        "cluster",
        "roll",
        *(n.admin for n in cluster.nodes),
        "--settle",
        "1.5",
    ]
    rolled = subprocess.run(roll, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert load.running(), "the load ended before the roll did: the roll was not under load"
    for node in cluster.nodes:
        assert [(w["generation"], w["state"]) for w in node.status()["workers"]] == [(2, "ready")] * 2
    records = load.records()
    samples = active.stop()
    print(
        f"roll under parley loadtest: {len(failed(records))} of {calls} calls failed; {rolled.stdout.strip()}"
    )
    assert not failed(records), brief(failed(records))
    assert all(r["rtp"]["packets"] > 100 and r["rtp"]["loss_pct"] < 1.0 for r in records), brief(records[:3])

    # The nodes' figures, summed over nodes (each over its workers, rolled ones included), against
    # the load tester's: every call admitted once, set up once, ended by the caller's BYE.
    answered = sum(1 for r in records if r["sip_status"] == 200)
    assert answered == calls
    assert cluster.metric("parley_calls_admitted_total") == answered
    for node in cluster.nodes:  # and node by node: the calls whose RTP came from its address
        theirs = sum(1 for r in records if peer_host(r) == node.host)
        assert node.metric("parley_calls_admitted_total") == theirs > 0, node.host
    assert cluster.metric("parley_call_setup_seconds_count") == answered
    assert cluster.settled_metric("parley_calls_ended_total", answered) == answered
    assert cluster.metric("parley_calls_ended_total", 'reason="remote-bye"') == answered
    assert cluster.metric("parley_calls_active") == 0
    # A worker that began draining before Kamailio's probe saw it refused INVITEs with 503 (counted
    # as refused, reason draining); Kamailio sent them to the next worker. No other refusal.
    refused = cluster.metric("parley_calls_refused_total")
    assert refused == cluster.metric("parley_calls_refused_total", 'reason="draining"')
    # RTP: the echo workers expected what the callers sent, which came back as what they received.
    expected, lost = (
        cluster.metric("parley_rtp_packets_expected_total"),
        cluster.metric("parley_rtp_packets_lost_total"),
    )
    received = sum(r["rtp"]["packets"] for r in records)
    assert 0.9 * received <= expected <= 1.1 * received, (expected, received)
    assert lost <= 0.001 * expected, (lost, expected)
    # Calls in progress, scraped while the load ran, against the calls the load tester had up then.
    busy = [s for s in samples if s[2] > 0]
    assert len(busy) >= 10, samples
    wrong = []
    for began, ended, value in samples:
        low, high = in_progress(records, began, ended, margin=0.5)
        if not low <= value <= high:
            wrong.append((round(began - records[0]["invited"], 2), low, value, high))
    assert not wrong, f"(s into the load, load tester's low bound, scraped, high bound): {wrong}"
    print(f"metrics: {answered} admitted, {refused:.0f} refused while draining, {expected:.0f} RTP packets "
          f"expected ({received} received by the callers), {len(samples)} scrapes within bounds, "
          f"peak {max(s[2] for s in samples):.0f} calls up")  # fmt: skip


def test_kill_9_of_a_worker_fails_only_its_nodes_calls_and_later_calls_succeed(cluster):
    calls = 54  # 13.5 s of calls at 4 a second, about 4 s each: about 16 up at once, 4 a worker
    load = cluster.load(calls=calls, rate=4, hold_ms=1000)
    victim = cluster.nodes[0]
    time.sleep(5)
    held = victim.metric("parley_calls_active")  # both of its workers: a bound on the killed one's
    assert held > 0, "the node held no call when its worker was killed"
    killed_at = time.time()
    worker = victim.status()["workers"][0]
    os.kill(worker["pid"], signal.SIGKILL)
    victim.wait_for(lambda s: s["workers"][0]["restarts"] == 1 and s["workers"][0]["state"] == "ready",
                    "restarted the killed worker")  # fmt: skip
    records = load.records()
    lost = failed(records)
    print(f"kill -9 under parley loadtest: the node held {held:.0f} calls, {len(lost)} of {calls} failed")
    assert len(lost) <= held, brief(lost)
    first, last = worker["rtp_ports"]  # the lost calls are the killed worker's: its RTP ports
    assert all(peer_host(r) == victim.host and first <= peer_port(r) < last for r in lost), brief(lost)
    later = [r for r in records if r["invited"] > killed_at + 0.2]
    assert len(later) >= 10 and not failed(later), brief(failed(later))


@pytest.fixture
def links(hosts) -> Hosts:
    """The hosts, when their links can be taken down (before a cluster is started on them)."""
    if not isinstance(hosts, NamespaceHosts):
        pytest.skip("a loopback address has no link to take down: this test needs network namespaces")
    return hosts


def test_a_node_whose_link_goes_down_stops_getting_calls_within_the_probe_interval(links, cluster):
    hosts = links
    b = cluster.nodes[1]
    rate, calls = 5, 85  # 17 s of calls: B's link down at about 5 s, back at about 11 s
    load = cluster.load(calls=calls, rate=rate, hold_ms=800)
    time.sleep(5)
    before = b.metric("parley_calls_admitted_total")
    held = b.metric("parley_calls_active")
    hosts.unplug(hosts.nodes[1])
    down_at = time.time()
    time.sleep(6)
    hosts.plug(hosts.nodes[1])
    up_at = time.time()
    records = load.records()
    after = b.metric("parley_calls_admitted_total")

    settled = down_at + PROBE_INTERVAL_S + PROBE_TIMEOUT_S + 0.5  # + a busy machine's margin
    delayed = [r for r in records if down_at <= r["invited"] and (r["setup_ms"] or 0) > 1000]  # failed over
    last_delayed = max((r["invited"] - down_at for r in delayed), default=0.0)
    lost = failed(records)
    print(f"node B's link down holding {held:.0f} calls: {len(delayed)} new calls failed over to A, the "
          f"last {last_delayed:.1f} s after; {len(lost)} of {calls} calls failed")  # fmt: skip
    while_down = [r for r in records if settled < r["invited"] < up_at]
    assert len(while_down) >= 10
    assert not [r for r in while_down if r in lost or r["setup_ms"] > 1000], brief(while_down)
    assert all(peer_host(r) == cluster.nodes[0].host for r in while_down), brief(while_down)
    assert last_delayed <= settled - down_at, brief(delayed)
    # Only B's calls failed (a call whose INVITE was on its way to B as the link went down among them).
    assert len(lost) <= held + 2, (held, brief(lost))
    assert all(peer_host(r) in (b.host, None) for r in lost), brief(lost)
    assert all(r["invited"] < down_at + PROBE_TIMEOUT_S for r in lost), brief(lost)
    assert after > before, "node B took no call once its link was back up"
    assert any(peer_host(r) == b.host for r in records if r["invited"] > up_at), "nor the load tester"
