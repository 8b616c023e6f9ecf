"""Calls through a real Kamailio load balancer (dispatcher, round robin) to two ``parley serve``."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator

import pytest

from parley.cluster.kamailio import module_path

from .harness import (
    HERE,
    HOST,
    KAMAILIO,
    Kamailio,
    Sniffer,
    UdpClient,
    assert_sipp_ok,
    free_port,
    header,
    needs_kamailio,
    needs_sipp,
    run_sipp,
    sip_request,
    status,
)

pytestmark = [pytest.mark.kamailio, pytest.mark.sipp, needs_kamailio, needs_sipp]


@pytest.fixture
def kamailio(tmp_path) -> Iterator:
    """Factory: ``kamailio(worker_ports)`` starts a proxy dispatching round-robin to the workers."""
    started: list[Kamailio] = []

    def start(worker_ports: list[int]) -> Kamailio:
        assert KAMAILIO is not None
        port = free_port()
        dispatcher = tmp_path / "dispatcher.list"
        dispatcher.write_text("".join(f"1 sip:{HOST}:{p}\n" for p in worker_ports))
        cfg = (HERE / "kamailio-lb.cfg").read_text()
        modules = module_path()
        if modules is None:
            pytest.skip("kamailio's dispatcher module not found")
        cfg = cfg.replace("@PORT@", str(port)).replace("@MPATH@", modules)
        cfg = cfg.replace("@DISPATCHER_LIST@", str(dispatcher))
        cfg_file = tmp_path / "kamailio.cfg"
        cfg_file.write_text(cfg)
        proxy = Kamailio.start(port, cfg_file, tmp_path)
        started.append(proxy)
        # Ready when an OPTIONS through the proxy comes back answered by a worker.
        client = UdpClient()
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if proxy.proc.poll() is not None:
                    pytest.fail(f"kamailio exited with {proxy.proc.returncode}:\n{proxy.log_text()}")
                client.send(sip_request("OPTIONS", port, client.port), port)
                if status(client.response("OPTIONS", timeout=0.3)) == 200:
                    return proxy
            pytest.fail(f"kamailio on port {port} never relayed an OPTIONS:\n{proxy.log_text()}")
        finally:
            client.close()

    yield start
    for proxy in started:
        proxy.stop()


def _received_messages(trace: str) -> list[str]:
    """SIP messages SIPp received, from its -trace_msg log."""
    out = []
    for block in re.split(r"-{20,} [^\n]*\n", trace):
        match = re.match(r"\s*(?:UDP|TCP) message received \[\d+\] bytes :\s*\n\s*\n?(.*)", block, re.S)
        if match:
            out.append(match[1].replace("\r\n", "\n"))
    return out


def test_calls_through_kamailio_are_balanced_and_record_routed(parley_server, kamailio, tmp_path):
    workers = [parley_server(transport="udp"), parley_server(transport="udp")]
    proxy = kamailio([w.port for w in workers])
    sniffer = None
    if os.geteuid() == 0:
        try:
            sniffer = Sniffer().start()
        except OSError:
            sniffer = None
    try:
        result = run_sipp(
            "uac_proxy_rr.xml",
            f"{HOST}:{proxy.port}",
            tmp_path=tmp_path,
            calls=6,
            rate=10,
            duration_ms=1500,
            trace_msg=True,
        )
    finally:
        if sniffer is not None:
            sniffer.stop()
    assert_sipp_ok(result, calls=6)
    stats = [w.stop() for w in workers]
    for worker, worker_stats in zip(workers, stats, strict=True):
        assert worker_stats["answered"] > 0, f"worker {worker.port} answered no call: {worker_stats}"
        assert worker_stats["ended"] == {"remote-bye": worker_stats["answered"]}, worker_stats
    assert sum(s["answered"] for s in stats) == 6, stats
    assert [s["answered"] for s in stats] == [3, 3], f"round robin should split 6 calls 3/3: {stats}"

    # SIPp's view: every 200 OK to an INVITE carries the proxy's Record-Route.
    answers = [
        m for m in _received_messages(result.messages) if m.startswith("SIP/2.0 200") and "INVITE" in m
    ]
    assert len(answers) >= 6, f"SIPp logged {len(answers)} answers\n{result.messages[:2000]}"
    for answer in answers:
        routes = re.findall(r"(?im)^Record-Route:\s*(.*)$", answer)
        assert routes, f"200 OK without Record-Route (Parley must copy it from the INVITE):\n{answer}"
        assert any(f"{HOST}:{proxy.port}" in r and "lr" in r for r in routes), routes

    # The wire: Parley itself put the Record-Route in its 200 OK (not just the proxy passing it on),
    # and the in-dialog requests (ACK, BYE) reached Parley through the proxy.
    if sniffer is not None:
        for worker in workers:
            sip = sniffer.sip(worker.port)
            ok = [t for p, t in sip if p.src == worker.port and t.startswith("SIP/2.0 200") and "INVITE" in t]
            assert ok, f"no 200 OK from worker {worker.port} seen on the wire"
            for text in ok:
                assert header(text, "Record-Route"), f"Parley's 200 OK lacks Record-Route:\n{text}"
            acks = [p for p, t in sip if p.dst == worker.port and t.startswith("ACK")]
            byes = [p for p, t in sip if p.dst == worker.port and t.startswith("BYE")]
            assert {p.src for p in acks + byes} == {proxy.port}, "ACK/BYE did not come through the proxy"
    assert proxy.proc.poll() is None, f"kamailio died:\n{proxy.log_text()}"
    # Parley's 200 OK Contact is where the proxy routes the ACK/BYE: it must be reachable.
    contact = header(answers[0].replace("\n", "\r\n"), "Contact") or ""
    assert re.search(rf"sip:[^@>]*@?{re.escape(HOST)}:({workers[0].port}|{workers[1].port})", contact), (
        contact
    )
