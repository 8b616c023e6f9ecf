"""Three hosts made of network namespaces: Kamailio in the root namespace, a 2-worker ``parley serve``
node in each of two namespaces joined to it by veth pairs; calls from the root namespace.

- Node B's link is taken down under a steady load of SIPp calls. Kamailio must stop sending it new
  calls within its probe interval (1 s) plus one probe's timeout (2 s): after that, no new call
  waits for a timeout and fails over, every call succeeds on node A, and only calls B held fail.
  With the link back, B is probed up and takes calls again.
- ``parley loadtest`` places calls with RTP both ways (each caller speaks and waits for its echo)
  while ``parley cluster roll`` upgrades both nodes (no call may fail), and while a worker is
  killed with ``kill -9`` (only the calls that worker held may fail; later calls succeed).

Needs root (``ip netns``); skipped otherwise.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.harness import ROOT, SCENARIOS, SIPP, Kamailio, needs_kamailio, needs_sipp
from parley.cluster.kamailio import Node as NodeSpec
from parley.cluster.kamailio import dispatcher_list, kamailio_cfg, module_path

from .nodes import Node

pytestmark = [pytest.mark.kamailio, pytest.mark.sipp, needs_kamailio, needs_sipp, pytest.mark.timeout(240)]
PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 2.0  # kamailio-config's fr_timer
SIP_PORT = 5060  # each node has a namespace of its own: no other process can hold its ports


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class Host:
    """A namespace joined to the root namespace by a veth pair on its own /24."""

    def __init__(self, tag: str, subnet: int) -> None:
        self.namespace = f"parley-{tag}"
        self.link = f"pv{tag}"  # the root namespace's end (interface names: 15 characters at most)
        self.gateway, self.address = f"10.216.{subnet}.1", f"10.216.{subnet}.2"
        ip("netns", "add", self.namespace)
        ip("link", "add", self.link, "type", "veth", "peer", "name", f"{self.link}n")
        ip("link", "set", f"{self.link}n", "netns", self.namespace)
        ip("addr", "add", f"{self.gateway}/24", "dev", self.link)
        ip("link", "set", self.link, "up")
        inside = ["netns", "exec", self.namespace, "ip"]
        ip(*inside, "addr", "add", f"{self.address}/24", "dev", f"{self.link}n")
        ip(*inside, "link", "set", f"{self.link}n", "up")
        ip(*inside, "link", "set", "lo", "up")
        ip(*inside, "route", "add", "default", "via", self.gateway)

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("netns", "delete", self.namespace)  # takes its end of the veth pair, and so the pair
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("link", "delete", self.link)


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    tag = secrets.token_hex(3)
    subnet = random.randrange(1, 250)
    made: list[Host] = []
    try:
        for i in range(2):
            made.append(Host(f"{tag}{'ab'[i]}", subnet + i))
    except subprocess.CalledProcessError as exc:
        for host in made:
            host.remove()
        pytest.skip(f"cannot make network namespaces here: {exc.stderr.strip()}")
    yield made
    for host in made:
        host.remove()


def sipp_load(proxy: str, source: str, tmp_path: Path, calls: int, rate: int) -> subprocess.Popen:
    """Signalling-only calls (2 s each) through ``proxy``, with each call's setup time in an RTT file."""
    cmd = [str(SIPP), proxy, "-sf", str(SCENARIOS / "uac_proxy_signalling.xml"), "-s", "echo", "-i", source]
    cmd += ["-p", "0", "-m", str(calls), "-r", str(rate), "-d", "2000", "-trace_rtt", "-rtt_freq", "1"]
    cmd += ["-trace_stat", "-stf", "stat.csv", "-nostdin", "-timeout", "120s", "-timeout_error"]
    return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_cluster(hosts: list[Host], tmp_path: Path) -> tuple[list[Node], Kamailio, str]:
    """A 2-worker echo node in each namespace and Kamailio in front of them: (nodes, proxy, its address)."""
    a = hosts[0]
    nodes: list[Node] = []
    try:
        for host in hosts:
            prefix = ["ip", "netns", "exec", host.namespace]
            nodes.append(Node(tmp_path, host.address, workers=2, port=SIP_PORT, prefix=prefix,
                              extra=["--drain", "30"]))  # fmt: skip
        listen = f"{a.gateway}:{SIP_PORT}"
        destinations = tmp_path / "dispatcher.list"
        destinations.write_text(dispatcher_list([NodeSpec(h.address, SIP_PORT, 2) for h in hosts]))
        cfg = kamailio_cfg(listen=listen, dispatcher_file=str(destinations), modules=module_path())
        (tmp_path / "kamailio.cfg").write_text(cfg)
        proxy = Kamailio.start(SIP_PORT, tmp_path / "kamailio.cfg", tmp_path)
    except BaseException:
        for node in nodes:
            node.kill()
        raise
    time.sleep(2 * PROBE_INTERVAL_S + 0.5)  # every worker probed
    assert proxy.proc.poll() is None, proxy.log_text()
    return nodes, proxy, listen


def test_a_node_whose_link_goes_down_stops_getting_calls_within_the_probe_interval(hosts, tmp_path):
    a, b = hosts
    nodes, proxy, listen = start_cluster(hosts, tmp_path)
    try:
        rate, calls = 5, 125  # 25 s of calls: B goes down at 6 s, back at 14 s
        started = time.monotonic()
        load = sipp_load(listen, a.gateway, tmp_path, calls, rate)
        time.sleep(6)
        before = nodes[1].metric("parley_calls_admitted_total")
        held = nodes[1].metric("parley_calls_active")
        ip("link", "set", b.link, "down")
        down_at = time.monotonic() - started
        time.sleep(8)
        ip("link", "set", b.link, "up")
        load.wait(timeout=150)
        after = nodes[1].metric("parley_calls_admitted_total")
    finally:
        proxy.stop()
        for node in nodes:
            node.kill()

    (rtt_file,) = tmp_path.glob("*_rtt.csv")
    answers = [(float(r["Date_ms"]) / 1000, float(r["response_time_ms"]) / 1000)
               for r in csv.DictReader(rtt_file.open(), delimiter=";")]  # fmt: skip
    setups = [(answered - setup, setup) for answered, setup in answers]  # (INVITE sent, setup time), s
    settled = down_at + PROBE_INTERVAL_S + PROBE_TIMEOUT_S + 1.0  # + a busy machine's margin
    late = [(t, s) for t, s in setups if settled < t < down_at + 7.5 and s > 1.0]
    assert not late, f"calls still waited for node B after {settled:.1f} s (down at {down_at:.1f} s): {late}"
    failed_over = [(t, s) for t, s in setups if down_at <= t <= settled and s > 1.0]
    stat = list(csv.DictReader((tmp_path / "stat.csv").open(), delimiter=";"))[-1]
    failed = int(stat["FailedCall(C)"])
    print(f"node B down at {down_at:.1f} s holding {held:.0f} calls: {len(failed_over)} new calls "
          f"failed over late, {failed} of {calls} failed")  # fmt: skip
    assert failed <= held + rate * PROBE_TIMEOUT_S, (failed, held)  # B's calls, and INVITEs caught mid-way
    assert after > before, "node B took no call once its link was back up"


ECHO_CALLS = """
name: cluster-echo
traffic: {{calls: {calls}, rate: {rate}, concurrency: {calls}, setup_timeout_s: 10, max_call_s: 40}}
webhook: {{port: 0}}
caller:
  prompt: {{silence_ms: 500, min_speech_ms: 200, timeout_s: 8}}
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


class LoadTest:
    """``parley loadtest`` from the root namespace, through Kamailio at ``proxy``, in the background."""

    def __init__(
        self, tmp_path: Path, source: str, proxy: str, *, calls: int, rate: float, hold_ms: int
    ) -> None:
        scenario = tmp_path / "echo-calls.yaml"
        scenario.write_text(ECHO_CALLS.format(calls=calls, rate=rate, hold_ms=hold_ms))
        self.out = tmp_path / "out"
        cmd = [sys.executable, "-m", "parley", "loadtest", str(scenario), "--target", f"sip:echo@{proxy}"]
        cmd += ["--host", source, "--out", str(self.out), "--seed", "7"]
        self.started = time.monotonic()  # the records' ``started`` times count from a moment after this
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    def running(self) -> bool:
        return self.proc.poll() is None

    def records(self, timeout: float) -> list[dict]:
        try:
            _, errors = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        assert self.proc.returncode == 0, errors[-3000:]
        return [json.loads(line) for line in (self.out / "calls.jsonl").read_text().splitlines()]


def failed(records: list[dict]) -> list[dict]:
    """The calls that did not play their script to its end, both echoes heard (it ends by hanging up)."""
    timed_out = [r for r in records if any(turn["prompt_timeout"] for turn in r["turns"])]
    return [r for r in records if r["outcome"] != "hung_up_early" or r in timed_out]


def brief(records: list[dict]) -> list[tuple]:
    """What an assertion message needs of each record."""
    return [(r["index"], r["started"], r["outcome"], r["error"], r.get("setup_ms")) for r in records]


def test_a_roll_of_both_nodes_under_parley_loadtest_fails_no_call(hosts, tmp_path):
    nodes, proxy, listen = start_cluster(hosts, tmp_path)
    try:
        calls = 90  # 30 s of calls at 3 a second, about 6 s each: 18 up at any time, the roll inside
        load = LoadTest(tmp_path, hosts[0].gateway, listen, calls=calls, rate=3, hold_ms=2000)
        time.sleep(4)
        assert sum(node.metric("parley_calls_active") for node in nodes) > 0
        roll = [
            sys.executable,
            "-m",
            "parley",
            "cluster",
            "roll",
            *(n.admin for n in nodes),
            "--settle",
            "1.5",
        ]
        rolled = subprocess.run(roll, capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        assert load.running(), "the load ended before the roll did: the roll was not under load"
        for node in nodes:
            assert [(w["generation"], w["state"]) for w in node.status()["workers"]] == [(2, "ready")] * 2
        records = load.records(timeout=120)
    finally:
        proxy.stop()
        for node in nodes:
            node.kill()
    assert len(records) == calls
    assert not failed(records), brief(failed(records))
    assert all(r["rtp"]["packets"] > 100 and r["rtp"]["loss_pct"] < 1.0 for r in records), records[:3]
    print(f"roll under parley loadtest: 0 of {calls} calls failed; {rolled.stdout.strip()}")


def test_kill_9_of_a_worker_under_parley_loadtest_fails_only_its_calls(hosts, tmp_path):
    nodes, proxy, listen = start_cluster(hosts, tmp_path)
    try:
        calls = 60  # 15 s of calls at 4 a second, about 8 s each: about 30 up at once, 8 a worker
        load = LoadTest(tmp_path, hosts[0].gateway, listen, calls=calls, rate=4, hold_ms=4000)
        victim = nodes[0]
        time.sleep(6)
        held = victim.metric("parley_calls_active")  # both of its workers: a bound on the killed one's
        assert held > 0, "the node held no call when its worker was killed"
        killed_at = time.monotonic()
        subprocess.run(["kill", "-9", str(victim.status()["workers"][0]["pid"])], check=True)
        victim.wait_for(lambda s: s["workers"][0]["restarts"] == 1 and s["workers"][0]["state"] == "ready",
                        "restarted the killed worker")  # fmt: skip
        records = load.records(timeout=120)
    finally:
        proxy.stop()
        for node in nodes:
            node.kill()
    lost = failed(records)
    print(f"kill -9 under parley loadtest: the node held {held:.0f} calls, {len(lost)} of {calls} failed")
    assert len(records) == calls
    assert len(lost) <= held, brief(lost)
    after = killed_at - load.started + 0.5
    later = [r for r in records if r["started"] > after]  # placed after the kill
    assert later and not failed(later), (after, brief(failed(later)))
