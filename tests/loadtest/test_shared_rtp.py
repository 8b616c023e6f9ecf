"""Every call of a load-tester process on one RTP port pair: routing by the far end's address,
sends that leave at the media clock's poll, and the fallback to a port pair per call."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from integration.harness import start_server
from parley.loadtest.listen import PacketTap
from parley.loadtest.run import run_loadtest
from parley.loadtest.shared_rtp import share_rtp_ports
from parley.media import g711
from parley.media.clock import MediaClock
from parley.media.rtp import RtpSender
from parley.media.stream import RtpStream

from .conftest import write
from .test_e2e import ECHO_SCENARIO, options, read_jsonl

SILENCE = g711.encode("PCMU", np.zeros(160, np.int16))


def far_end() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(1.0)
    return sock


def manager() -> SimpleNamespace:
    return SimpleNamespace(ports=None, clock=MediaClock())


def test_calls_share_one_port_pair_and_each_gets_its_far_ends_packets():
    owner = manager()
    inner = owner.clock.poller
    ports = share_rtp_ports(owner, "127.0.0.1", 41000, 41100)
    far = [far_end(), far_end()]
    try:
        assert ports is not None and owner.ports is ports and owner.clock.poller is not inner
        endpoints = [asyncio.run(ports.open()) for _ in far]
        assert {(e.host, e.port) for e in endpoints} == {("127.0.0.1", ports.port)}  # one port in every SDP
        streams = []
        for endpoint, sock in zip(endpoints, far, strict=True):
            stream = RtpStream("PCMU", 0, sock.getsockname(), endpoint.send, time=time.monotonic)
            endpoint.on_rtp(stream.receive)
            streams.append(stream)
        taps = [PacketTap(stream, b"\xff\x7f", lambda arrival: None, 0.06) for stream in streams]
        endpoints[1].on_rtp(taps[1])  # the caller's tap takes over from the stream's receive
        for k, sock in enumerate(far):
            sender = RtpSender(0)
            for _ in range(5 + k):
                sock.sendto(sender.packet(SILENCE), ("127.0.0.1", ports.port))
        for stream in streams:
            stream.send_payload(SILENCE)
        assert all(stream.packets_out == 1 for stream in streams)
        time.sleep(0.05)
        owner.clock.poller.poll()  # as the media clock does each tick: queued sends leave, then reads
        assert [stream.packets_in for stream in streams] == [5, 6] and taps[1].packets == 6
        for sock in far:
            data, source = sock.recvfrom(2048)
            assert len(data) == 172 and source == ("127.0.0.1", ports.port)
        assert ports.report()["unrouted"] == 0
    finally:
        owner.clock.poller.close()
        for sock in far:
            sock.close()


def test_a_later_call_to_the_same_far_end_takes_its_packets_and_silences_the_older_call():
    owner = manager()
    ports = share_rtp_ports(owner, "127.0.0.1", 41100, 41200)
    assert ports is not None
    try:
        far = ("127.0.0.1", 45678)  # a worker that died and gave its port to a new call
        old, new = asyncio.run(ports.open()), asyncio.run(ports.open())
        streams = [RtpStream("PCMU", 0, far, e.send, time=time.monotonic) for e in (old, new)]
        old.on_rtp(streams[0].receive)
        new.on_rtp(streams[1].receive)
        assert ports.rtp.routed(far) == streams[1].receive
        for stream in streams:
            stream.send_payload(SILENCE)
        ports.rtp.flush()
        assert ports.rtp.sent == 1  # the new call's frame; the old call sends nothing more
        old.close()
        assert ports.rtp.routed(far) is not None  # still the new call's
        new.close()
        assert ports.rtp.routed(far) is None
        with pytest.raises(TypeError, match="far end"):
            new.on_rtp(lambda data, source, arrival: None)  # no stream to tell the far end by
    finally:
        owner.clock.poller.close()


def test_without_ipv4_or_a_free_pair_each_call_keeps_its_own_port_pair():
    owner = manager()
    assert share_rtp_ports(owner, "::1", 41200, 41300) is None and owner.ports is None
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1] & ~1  # the pair's RTP or RTCP port is taken
    try:
        assert share_rtp_ports(owner, "127.0.0.1", port, port + 2) is None and owner.ports is None
    finally:
        taken.close()
        owner.clock.poller.close()


def test_a_load_test_against_echo_runs_every_call_on_the_shared_pair(tmp_path: Path) -> None:
    server = start_server(tmp_path, transport="udp")
    try:
        scenario = write(tmp_path / "echo.yaml", ECHO_SCENARIO)
        result = run_loadtest(options(tmp_path, scenario, server.uri, seed=5))
    finally:
        server.stop()
    records = read_jsonl(tmp_path / "out" / "calls.jsonl")
    assert [r["outcome"] for r in records] == ["hung_up_early"] * 6 and result.exit_code == 0, records
    assert all(not r["turns"][0]["prompt_timeout"] and r["rtp"]["loss_pct"] == 0.0 for r in records), records
    (worker,) = json.loads((tmp_path / "out" / "summary.json").read_text())["worker_stats"]
    shared = worker["manager"]["rtp_sockets"]
    packets = sum(r["rtp"]["packets"] for r in records)
    assert packets > 6 * 50 and packets <= shared["received"] - shared["unrouted"], (packets, shared)
    assert shared["sent"] > 6 * 50 and shared["send_errors"] == 0, shared
