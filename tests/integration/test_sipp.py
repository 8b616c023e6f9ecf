"""``parley serve echo`` against SIPp (and hostile raw sockets) over loopback.

Every test starts its own server on free ports, drives it with a scenario from ``scenarios/`` and
checks three things: SIPp's verdict, the wire (a loopback sniffer: RTP really flows, SIP headers
are right) and the stats JSON Parley writes when it exits cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import re
import secrets
import signal
import socket
import struct
import time

import numpy as np
import pytest

from .harness import (
    HOST,
    Rtp,
    Sniffer,
    UdpClient,
    assert_sipp_ok,
    free_port,
    header,
    needs_sipp,
    offer_sdp,
    parse_rtp,
    rtp_range,
    run_sipp,
    sdp_media_port,
    sip_request,
    status,
)

pytestmark = pytest.mark.sipp

PCAP_PACKETS = 150  # scenarios/pcap/pcmu_speech_3s.pcap: 3 s of speech, 20 ms PCMU packets
ULAW_SILENCE = {0xFF, 0x7F}


# -- helpers ---------------------------------------------------------------------------------
def parley_answers(sniffer: Sniffer, server_port: int) -> list[tuple[float, str]]:
    """(time, text) of the 200 OKs to INVITEs Parley sent."""
    return [
        (p.time, text)
        for p, text in sniffer.sip(server_port)
        if p.src == server_port and text.startswith("SIP/2.0 200") and re.search(r"CSeq:\s*\d+ INVITE", text)
    ]


def parley_rtp_ports(sniffer: Sniffer, server_port: int) -> list[int]:
    """Parley's RTP ports, from the SDP of its 200 OKs, in call order."""
    ports: list[int] = []
    for _, text in parley_answers(sniffer, server_port):
        port = sdp_media_port(text)
        if port is not None and port not in ports:
            ports.append(port)
    return ports


def sent_from(sniffer: Sniffer, port: int) -> dict[int, list[Rtp]]:
    """RTP packets sent from ``port``, grouped by destination port."""
    out: dict[int, list[Rtp]] = {}
    for packet in sniffer.udp(src=port):
        rtp = parse_rtp(packet)
        if rtp is not None:
            out.setdefault(packet.dst, []).append(rtp)
    return out


def assert_regular_stream(packets: list[Rtp], payload_type: int, what: str) -> None:
    """~50 packets/s, sequence numbers +1, timestamps +160, one SSRC, one payload type."""
    assert len(packets) >= 50, f"{what}: only {len(packets)} RTP packets"
    seqs = [p.seq for p in packets]
    steps = {(b - a) % 65536 for a, b in itertools.pairwise(seqs)}
    assert steps == {1}, f"{what}: sequence numbers do not increment by 1: steps {sorted(steps)[:10]}"
    ts_steps = {(b.timestamp - a.timestamp) % 2**32 for a, b in itertools.pairwise(packets)}
    assert ts_steps == {160}, f"{what}: timestamp steps {sorted(ts_steps)[:10]}"
    assert len({p.ssrc for p in packets}) == 1, f"{what}: SSRC changed"
    assert {p.payload_type for p in packets} == {payload_type}, (
        f"{what}: payload types { ({p.payload_type for p in packets}) }"
    )
    span = packets[-1].time - packets[0].time
    rate = (len(packets) - 1) / span
    assert 45 <= rate <= 55, f"{what}: {rate:.1f} packets/s over {span:.2f} s (expected 50)"
    gaps = np.diff([p.time for p in packets])
    assert gaps.max() < 0.2, f"{what}: a {gaps.max() * 1000:.0f} ms gap in the stream"


def call_ids(texts: list[str]) -> set[str]:
    return {header(t, "Call-ID") or header(t, "i") or "" for t in texts}


def wait_tcp_responses(sock: socket.socket, want: int, timeout: float) -> list[str]:
    """Read SIP messages from a TCP socket until ``want`` final responses or ``timeout``."""
    buf = b""
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while sum(1 for m in messages if m[8:11] >= "200") < want and (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        buf += chunk
        while b"\r\n\r\n" in buf:
            head, rest = buf.split(b"\r\n\r\n", 1)
            match = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
            length = int(match[1]) if match else 0
            if len(rest) < length:
                break
            messages.append((head + b"\r\n\r\n" + rest[:length]).decode("utf-8", "replace"))
            buf = rest[length:]
    return messages


# -- 1 & 3: a basic call, audio flows and is echoed exactly --------------------------------------
def _audio_call(parley_server, sniffer, tmp_path, scenario="uac_pcmu.xml", duration_ms=3500):
    server = parley_server(transport="udp")
    media_port = free_port(4)
    result = run_sipp(
        scenario, f"{HOST}:{server.port}", tmp_path=tmp_path, media_port=media_port, duration_ms=duration_ms
    )
    time.sleep(0.1)
    stats = server.stop()
    return server, media_port, result, stats


@needs_sipp
def test_udp_call_audio_flows_both_ways(parley_server, sniffer, tmp_path):
    server, media_port, result, stats = _audio_call(parley_server, sniffer, tmp_path)
    assert_sipp_ok(result)
    ports = parley_rtp_ports(sniffer, server.port)
    assert len(ports) == 1, f"expected one 200 OK with SDP from Parley, saw RTP ports {ports}"
    rtp_port = ports[0]
    assert server.rtp_ports[0] <= rtp_port < server.rtp_ports[1], "RTP port outside --rtp-ports"
    incoming = sniffer.rtp(dst=rtp_port)
    assert len(incoming) >= PCAP_PACKETS * 0.95, f"SIPp sent only {len(incoming)} RTP packets to Parley"
    outgoing = sent_from(sniffer, rtp_port)
    sipp_source = {p.src for p in sniffer.udp(dst=rtp_port)}
    assert set(outgoing) <= sipp_source | {media_port}, (
        f"Parley sent RTP to {set(outgoing)}, SIPp sent from {sipp_source}, SDP media port {media_port}"
    )
    packets = [p for packets in outgoing.values() for p in packets]
    packets.sort(key=lambda p: p.time)
    assert_regular_stream(packets, 0, "Parley -> SIPp")
    assert len(packets) >= 0.8 * 50 * 3.5, f"only {len(packets)} packets for a 3.5 s call"
    assert stats["answered"] == 1, stats
    assert stats["ended"] == {"remote-bye": 1}, stats
    assert stats["media"]["packets_in"] >= PCAP_PACKETS * 0.95, stats
    assert stats["media"]["packets_out"] >= len(packets), stats


def _match_echo(sent: list[Rtp], echoed: list[Rtp]) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Pair echoed frames with the sent frames they copy.

    Returns (pairs of (sent index, echoed index), sent frames skipped, echoed frames that copy
    nothing), from the first speech frame to the end of what was sent. The adaptive jitter buffer
    may drop a frame when it lowers its delay, so a skipped frame is not an error by itself;
    a changed or reordered frame is.
    """
    first = next(i for i, p in enumerate(sent) if len(set(p.payload) - ULAW_SILENCE) > 40)
    start = next((j for j, p in enumerate(echoed) if p.payload == sent[first].payload), None)
    assert start is not None, "the first speech frame SIPp sent never came back from Parley"
    # G.711 u-law decode -> encode is the identity except for negative zero (0x7F -> 0xFF).
    wanted = [p.payload.replace(b"\x7f", b"\xff") for p in sent]
    pairs: list[tuple[int, int]] = []
    skipped: list[int] = []
    strays: list[int] = []
    i = first
    for j in range(start, len(echoed)):
        if i >= len(sent):
            break
        ahead = next((k for k in range(i, min(i + 4, len(sent))) if wanted[k] == echoed[j].payload), None)
        if ahead is None:
            strays.append(j)
            continue
        skipped.extend(range(i, ahead))
        pairs.append((ahead, j))
        i = ahead + 1
    return pairs, skipped, strays


@needs_sipp
def test_echo_returns_the_same_bytes_quickly(parley_server, sniffer, tmp_path):
    server, _, result, _ = _audio_call(parley_server, sniffer, tmp_path)
    assert_sipp_ok(result)
    (rtp_port,) = parley_rtp_ports(sniffer, server.port)
    sent = sniffer.rtp(dst=rtp_port)
    sent.sort(key=lambda p: p.seq)  # the jitter buffer plays in sequence order
    echoed = [p for packets in sent_from(sniffer, rtp_port).values() for p in packets]
    echoed.sort(key=lambda p: p.time)
    pairs, skipped, strays = _match_echo(sent, echoed)
    # Byte-exact and in order, except where the adaptive jitter buffer changed its delay: lowering
    # it drops a frame, an underrun inserts a concealment frame. Allow one such event per 2 s
    # adaptation window (and one more); anything beyond that is corrupted or reordered audio.
    spoken = len(sent) - pairs[0][0]
    events = len(skipped) + len(strays)
    assert events <= 1 + spoken // 100, (
        f"echo differs from what SIPp sent: {len(skipped)} frames missing {skipped[:10]},"
        f" {len(strays)} frames that copy nothing {strays[:10]}"
    )
    assert len(pairs) >= 0.95 * spoken, f"only {len(pairs)} of {spoken} frames echoed byte-exact"
    delays = np.array([echoed[j].time - sent[i].time for i, j in pairs])
    assert delays.min() > 0, "echo before the original?"
    assert np.median(delays) < 0.2, f"median echo delay {np.median(delays) * 1000:.0f} ms"
    assert delays.max() < 0.3, f"max echo delay {delays.max() * 1000:.0f} ms"


@needs_sipp
def test_pcma_call_with_30ms_packets(parley_server, sniffer, tmp_path):
    """SIPp's own PCMA sample (30 ms packets, a=ptime:30): Parley answers PCMA and echoes it intact."""
    server, _, result, stats = _audio_call(parley_server, sniffer, tmp_path, "uac_pcma.xml", 3500)
    assert_sipp_ok(result)
    (_, answer), *_ = parley_answers(sniffer, server.port)
    assert re.search(r"m=audio \d+ RTP/AVP 8\b", answer), f"Parley did not answer PCMA:\n{answer}"
    (rtp_port,) = parley_rtp_ports(sniffer, server.port)
    packets = sorted((p for ps in sent_from(sniffer, rtp_port).values() for p in ps), key=lambda p: p.time)
    assert_regular_stream(packets, 8, "Parley -> SIPp (PCMA)")
    assert stats["answered"] == 1, stats
    # A-law decode -> encode is the identity: 60 ms probes of the sent audio must come back intact.
    sent = sorted(sniffer.rtp(dst=rtp_port), key=lambda p: p.seq)
    sent_stream = b"".join(p.payload for p in sent)
    echo_stream = b"".join(p.payload for p in packets)
    probes = [sent_stream[k : k + 480] for k in range(4000, len(sent_stream) - 4000, 1200)]
    probes = [p for p in probes if len(set(p) - {0xD5, 0x55}) > 20]
    assert len(probes) >= 4, "the PCMA sample has too little speech"
    found = sum(1 for p in probes if p in echo_stream)
    assert found >= len(probes) - 1, f"only {found} of {len(probes)} 60 ms speech probes echoed intact"
    assert stats["media"]["concealed"] == 0, stats


# -- 2: TCP, several calls over one connection ---------------------------------------------------
@needs_sipp
def test_tcp_three_calls_over_one_connection(parley_server, sniffer, tmp_path):
    server = parley_server(transport="tcp")
    result = run_sipp(
        "uac_pcmu.xml",
        f"{HOST}:{server.port}",
        tmp_path=tmp_path,
        transport="t1",
        calls=3,
        rate=10,
        duration_ms=2500,
    )
    time.sleep(0.1)
    stats = server.stop()
    assert_sipp_ok(result, calls=3)
    assert not sniffer.udp(dst=server.port), "SIP went over UDP in a TCP test"
    clients = {p.src for p in sniffer.packets if p.proto == "tcp" and p.dst == server.port}
    assert len(clients) == 1, f"SIPp used {len(clients)} TCP connections, expected one: {clients}"
    ports = parley_rtp_ports(sniffer, server.port)
    assert len(ports) == 3, f"expected 3 answered calls with distinct RTP ports, got {ports}"
    for port in ports:
        packets = sorted((p for ps in sent_from(sniffer, port).values() for p in ps), key=lambda p: p.time)
        assert_regular_stream(packets, 0, f"Parley RTP port {port}")
    assert stats["answered"] == 3, stats
    assert stats["ended"] == {"remote-bye": 3}, stats


# -- 4: CANCEL --------------------------------------------------------------------------------
@needs_sipp
@pytest.mark.parametrize(
    ("scenario", "freeze"),
    [("uac_cancel.xml", False), ("uac_cancel.xml", True), ("uac_cancel_late.xml", False)],
    ids=["race", "parley-frozen", "after-answer"],
)
def test_cancel_racing_the_answer(parley_server, sniffer, tmp_path, scenario, freeze):
    """INVITE and CANCEL back-to-back: whichever wins, the call must be handled consistently.

    SIPp sends the CANCEL one scheduling round after the INVITE, by when Parley has usually
    answered. With ``freeze`` Parley is stopped (SIGSTOP) while SIPp sends both, so the CANCEL
    is queued right behind its INVITE and must win every time. ``uac_cancel_late.xml`` sends the
    CANCEL after the 200 OK: Parley must answer it without 487 and keep the call up until the BYE.
    """
    server = parley_server(transport="udp")
    if freeze:
        server.proc.send_signal(signal.SIGSTOP)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(
            run_sipp,
            scenario,
            f"{HOST}:{server.port}",
            tmp_path=tmp_path,
            calls=5,
            rate=20,
            # -nr: SIPp otherwise holds the CANCEL until a response to the INVITE arrives (RFC 3261
            # section 9.1); here it must cross the 100 Trying on the wire, as it can in a real network.
            extra=["-default_behaviors", "bye", "-nr"],
        )
        if freeze:
            try:
                sniffer.wait_for(
                    lambda: len([t for _, t in sniffer.sip(server.port) if t.startswith("CANCEL")]) == 5, 3
                )
            finally:
                server.proc.send_signal(signal.SIGCONT)
        result = future.result(timeout=60)
    time.sleep(0.2)
    stats = server.stop()
    assert_sipp_ok(result, calls=5)
    from_parley = [text for p, text in sniffer.sip(server.port) if p.src == server.port]
    cancelled = call_ids([t for t in from_parley if t.startswith("SIP/2.0 487")])
    answered = call_ids(
        [t for t in from_parley if t.startswith("SIP/2.0 200") and "INVITE" in header(t, "CSeq")]
    )
    print(f"CANCEL won {len(cancelled)} times, the answer won {len(answered)} times")
    assert not cancelled & answered, f"calls both answered and cancelled: {cancelled & answered}"
    assert len(cancelled) + len(answered) == 5, (cancelled, answered)
    if freeze:
        assert len(cancelled) == 5, "CANCEL sent before the INVITE was even read must win"
    if scenario == "uac_cancel_late.xml":
        assert len(answered) == 5, "a CANCEL after the answer cannot win"
        cancel_answers = [t for t in from_parley if header(t, "CSeq").endswith("CANCEL")]
        assert {t[8:11] for t in cancel_answers} <= {"200", "481"}, cancel_answers
    for text in from_parley:
        if text.startswith("SIP/2.0 487"):
            assert header(text, "CSeq").endswith("INVITE"), text
    assert stats["answered"] == len(answered), (stats, len(answered))
    expected_ended = {k: v for k, v in (("cancelled", len(cancelled)), ("remote-bye", len(answered))) if v}
    assert stats["ended"] == expected_ended, stats


def test_cancel_before_answer_is_deterministic_over_tcp(parley_server, tmp_path):
    """INVITE and CANCEL in one TCP segment: both are parsed before the answer can start -> 487."""
    server = parley_server(transport="tcp")
    with socket.create_connection((HOST, server.port), timeout=5) as sock:
        local_port = sock.getsockname()[1]
        branch, call_id, tag = "z9hG4bK" + secrets.token_hex(8), secrets.token_hex(8), secrets.token_hex(4)
        common = dict(transport="TCP", branch=branch, call_id=call_id, from_tag=tag)
        invite = sip_request("INVITE", server.port, local_port, body=offer_sdp(free_port(2)), **common)
        cancel = sip_request("CANCEL", server.port, local_port, **common)
        sock.sendall(invite + cancel)
        messages = wait_tcp_responses(sock, want=2, timeout=5)
        finals = {(header(m, "CSeq"), m[8:11]) for m in messages if m[8:11] >= "200"}
        assert finals == {("1 CANCEL", "200"), ("1 INVITE", "487")}, messages
        to_487 = next(m for m in messages if m.startswith("SIP/2.0 487"))
        to_tag = re.search(r"tag=([^;\s>]+)", header(to_487, "To"))[1]
        ack = sip_request("ACK", server.port, local_port, to_tag=to_tag, **common)
        sock.sendall(ack)
        extra = wait_tcp_responses(sock, want=1, timeout=1.0)
        assert not [m for m in extra if "INVITE" in (header(m, "CSeq") or "")], (
            f"487 retransmitted after ACK: {extra}"
        )
    stats = server.stop()
    assert stats["answered"] == 0, stats
    assert stats["ended"] == {"cancelled": 1}, stats


def test_cancel_before_answer_is_deterministic_over_udp(parley_server):
    """INVITE and CANCEL queued together while Parley is stopped (SIGSTOP): the CANCEL must win -> 487."""
    server = parley_server(transport="udp")
    client = UdpClient()
    try:
        common = dict(
            branch="z9hG4bK" + secrets.token_hex(8), call_id=secrets.token_hex(8), from_tag="c4nc3l"
        )
        invite = sip_request("INVITE", server.port, client.port, body=offer_sdp(free_port(2)), **common)
        cancel = sip_request("CANCEL", server.port, client.port, **common)
        server.proc.send_signal(signal.SIGSTOP)
        try:
            client.send(invite, server.port)
            client.send(cancel, server.port)
            time.sleep(0.1)
        finally:
            server.proc.send_signal(signal.SIGCONT)
        assert status(client.response("CANCEL")) == 200
        final = client.response("INVITE")
        assert status(final) == 487, final
        to_tag = re.search(r"tag=([^;\s>]+)", header(final, "To"))[1]
        client.send(sip_request("ACK", server.port, client.port, to_tag=to_tag, **common), server.port)
        assert client.response("INVITE", timeout=1.0) is None, "487 retransmitted after the ACK"
    finally:
        client.close()
    stats = server.stop()
    assert stats["answered"] == 0, stats
    assert stats["ended"] == {"cancelled": 1}, stats


# -- 5: hold and resume ------------------------------------------------------------------------
@needs_sipp
def test_reinvite_hold_and_resume(parley_server, sniffer, tmp_path):
    server = parley_server(transport="udp")
    media_port = free_port(4)
    result = run_sipp("uac_hold.xml", f"{HOST}:{server.port}", tmp_path=tmp_path, media_port=media_port)
    stats = server.stop()
    assert_sipp_ok(result)
    answers = parley_answers(sniffer, server.port)
    assert len(answers) == 3, [t for _, t in answers]
    (t_answer, first), (t_hold, held), (t_resume, resumed) = answers
    assert "a=recvonly" in held, f"hold answer is not recvonly:\n{held}"
    assert "a=sendrecv" in resumed, f"resume answer is not sendrecv:\n{resumed}"
    rtp_port = sdp_media_port(first)
    assert sdp_media_port(held) == sdp_media_port(resumed) == rtp_port
    bye_time = next(p.time for p, t in sniffer.sip(server.port) if t.startswith("BYE"))
    resume_request = next(
        p.time
        for p, t in sniffer.sip(server.port)
        if p.dst == server.port and t.startswith("INVITE") and "a=sendrecv" in t and "CSeq: 3" in t
    )
    out = sorted((p for ps in sent_from(sniffer, rtp_port).values() for p in ps), key=lambda p: p.time)
    before = [p for p in out if p.time < t_hold]
    during = [p for p in out if t_hold + 0.05 < p.time < resume_request]
    after = [p for p in out if t_resume < p.time < bye_time]
    assert len(before) >= 0.8 * 50 * (t_hold - t_answer), f"{len(before)} packets before hold"
    assert not during, f"Parley sent {len(during)} RTP packets while held (recvonly)"
    assert len(after) >= 0.8 * 50 * (bye_time - t_resume - 0.1), f"{len(after)} packets after resume"
    assert_regular_stream(after, 0, "after resume")
    assert (after[0].seq - before[-1].seq) % 65536 == 1, "RTP sequence numbers must continue across a hold"
    assert after[0].ssrc == before[-1].ssrc, "SSRC changed across the hold"
    assert stats["ended"] == {"remote-bye": 1}, stats


# -- 6: Parley hangs up (media timeout) --------------------------------------------------------
@needs_sipp
def test_parley_sends_bye_after_media_timeout(parley_server, sniffer, tmp_path):
    server = parley_server(transport="udp", media_timeout=2)
    result = run_sipp("uac_wait_bye.xml", f"{HOST}:{server.port}", tmp_path=tmp_path)
    stats = server.stop()
    assert_sipp_ok(result)
    # The sniffer's thread may lag behind SIPp's exit: wait for the 200 to the BYE to be read.
    sniffer.wait_for(
        lambda: any("BYE" in t and t.startswith("SIP/2.0 200") for _, t in sniffer.sip(server.port)), 2
    )
    sip = sniffer.sip(server.port)
    ack_time = next(p.time for p, t in sip if p.dst == server.port and t.startswith("ACK"))
    byes = [(p, t) for p, t in sip if p.src == server.port and t.startswith("BYE")]
    assert byes, "Parley sent no BYE"
    waited = byes[0][0].time - ack_time
    assert 1.8 <= waited <= 4.0, f"BYE {waited:.2f} s after the ACK with --media-timeout 2"
    ok = [
        t
        for p, t in sip
        if p.dst == server.port and t.startswith("SIP/2.0 200") and "BYE" in header(t, "CSeq")
    ]
    assert ok, "SIPp's 200 for the BYE was not seen"
    assert len(byes) == 1, f"BYE retransmitted {len(byes) - 1} times although SIPp answered it"
    assert stats["ended"] == {"local-bye": 1}, stats


@needs_sipp
def test_sigterm_during_a_call_hangs_up_and_exits_cleanly(parley_server, sniffer, tmp_path):
    server = parley_server(transport="udp")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(run_sipp, "uac_wait_bye.xml", f"{HOST}:{server.port}", tmp_path=tmp_path)
        assert sniffer.wait_for(lambda: parley_answers(sniffer, server.port), timeout=5), "call not answered"
        time.sleep(0.5)
        started = time.monotonic()
        stats = server.stop(timeout=5)
        result = future.result(timeout=30)
    assert time.monotonic() - started < 4, "shutdown took too long"
    assert_sipp_ok(result)
    # SIPp may have answered the BYE before the sniffer's thread has read it: wait for it a moment.
    byes = lambda: [t for p, t in sniffer.sip(server.port) if p.src == server.port and t.startswith("BYE")]  # noqa: E731
    assert sniffer.wait_for(byes, timeout=2), "no BYE"
    assert stats["ended"] == {"local-bye": 1}, stats


# -- 7: RFC 4733 DTMF ---------------------------------------------------------------------------
@needs_sipp
def test_rfc4733_digits_are_received(parley_server, sniffer, tmp_path):
    server = parley_server(transport="udp")
    result = run_sipp("uac_dtmf.xml", f"{HOST}:{server.port}", tmp_path=tmp_path)
    stats = server.stop()
    assert_sipp_ok(result)
    (rtp_port,) = parley_rtp_ports(sniffer, server.port)
    events = [p for p in sniffer.rtp(dst=rtp_port) if p.payload_type == 101]
    digits = {p.timestamp: p.payload[0] for p in events}
    assert sorted(digits.values()) == [1, 2, 3], f"SIPp sent events {digits} (expected digits 1, 2, 3)"
    assert stats["media"]["dtmf_in"] == 3, stats


# -- 8: 503 over the call limit -------------------------------------------------------------------
@needs_sipp
def test_calls_over_the_limit_get_503_with_retry_after(parley_server, sniffer, tmp_path):
    server = parley_server(transport="udp", max_calls=2)
    result = run_sipp(
        "uac_busy.xml", f"{HOST}:{server.port}", tmp_path=tmp_path, calls=4, rate=100, duration_ms=2000
    )
    stats = server.stop()
    assert_sipp_ok(result, calls=4)
    from_parley = [t for p, t in sniffer.sip(server.port) if p.src == server.port]
    busy = [t for t in from_parley if t.startswith("SIP/2.0 503")]
    answered = call_ids(
        [t for t in from_parley if t.startswith("SIP/2.0 200") and "INVITE" in header(t, "CSeq")]
    )
    assert len(call_ids(busy)) == 2, f"{len(call_ids(busy))} calls got 503, expected 2"
    assert len(answered) == 2, f"{len(answered)} calls answered, expected 2"
    for text in busy:
        assert re.fullmatch(r"\d+(\s*\(.*\))?(\s*;.*)?", header(text, "Retry-After") or ""), text
    assert stats["answered"] == 2, stats
    assert stats["rejected_busy"] == 2, stats


# -- 9: INVITE retransmission ---------------------------------------------------------------------
@needs_sipp
def test_retransmitted_invite_is_answered_once(parley_server, sniffer, tmp_path):
    server = parley_server(transport="udp")
    # -default_behaviors bye: the 100 Trying may arrive before SIPp sends the copy (ignored, not fatal).
    result = run_sipp(
        "uac_retransmit.xml", f"{HOST}:{server.port}", tmp_path=tmp_path, extra=["-default_behaviors", "bye"]
    )
    stats = server.stop()
    assert_sipp_ok(result)
    sip = sniffer.sip(server.port)
    invites = [t for p, t in sip if p.dst == server.port and t.startswith("INVITE")]
    assert len(invites) >= 2 and len({header(t, "Via") for t in invites}) == 1, "SIPp did not retransmit"
    answers = [t for _, t in parley_answers(sniffer, server.port)]
    to_tags = {header(t, "To") for t in answers}
    assert len(to_tags) == 1, f"answered the retransmission as a new call: {to_tags}"
    assert stats["answered"] == 1, stats
    assert stats["ended"] == {"remote-bye": 1}, stats


# -- 10: hostile input during a call --------------------------------------------------------------
@needs_sipp
def test_hostile_input_does_not_disturb_a_call(parley_server, sniffer, tmp_path):
    server = parley_server(transport="udp")
    media_port = free_port(4)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(
            run_sipp,
            "uac_pcmu.xml",
            f"{HOST}:{server.port}",
            tmp_path=tmp_path,
            media_port=media_port,
            duration_ms=4500,
        )
        ports = sniffer.wait_for(lambda: parley_rtp_ports(sniffer, server.port), timeout=5)
        assert ports, "the SIPp call was not answered"
        (rtp_port,) = ports
        assert sniffer.wait_for(lambda: len(sniffer.udp(dst=rtp_port)) > 5, timeout=3), "SIPp sends no RTP"
        invite = next(t for p, t in sniffer.sip(server.port) if t.startswith("INVITE"))
        call_id, from_header = header(invite, "Call-ID"), header(invite, "From")
        from_tag = re.search(r"tag=([^;\s>]+)", from_header)[1]

        client = UdpClient()
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.bind((HOST, 0))
        stranger_port = stranger.getsockname()[1]
        try:
            # RTP from an address that is not the caller's: must be ignored, never answered.
            for n in range(50):
                rtp = struct.pack("!BBHII", 0x80, 0, n, n * 160, 0xBADC0DE) + bytes([n]) * 160
                stranger.sendto(rtp, (HOST, rtp_port))
                stranger.sendto(b"\x00not rtp", (HOST, rtp_port))
                if n % 10 == 0:
                    time.sleep(0.02)
            # Garbage on the SIP port.
            for junk in (
                b"\x00" * 100,
                secrets.token_bytes(1400),
                b"INVITE",
                b"INVITE sip:x SIP/2.0\r\nVia: nonsense\r\n\r\n",
                b"SIP/2.0 200 OK\r\n\r\n",
                b"\r\n\r\n",
                "OPTIONS sip:\u00e9\u00e9 SIP/2.0\r\n\r\n".encode(),
                b"BYE sip:echo@127.0.0.1 SIP/2.0\r\nContent-Length: 99999\r\n\r\nshort",
            ):
                client.send(junk, server.port)
            # A near-maximum UDP datagram (65 kB; 70 kB cannot travel in one UDP/IPv4 datagram).
            big = sip_request("OPTIONS", server.port, client.port, extra="X-Pad: " + "a" * 65000)
            assert len(big) <= 65507
            client.send(big, server.port)
            huge = client.response("OPTIONS", timeout=2)
            assert status(huge) in (413, 513), f"65 kB request: {huge and huge[:300]}"
            # 10 kB of headers in an otherwise valid request: within limits, answered normally.
            client.send(
                sip_request("OPTIONS", server.port, client.port, extra="X-Big: " + "b" * 10240), server.port
            )
            big_headers = client.response("OPTIONS", timeout=2)
            assert status(big_headers) in (200, 413, 513), big_headers and big_headers[:300]
            # A Content-Length larger than the datagram -> 400 (RFC 3261 section 18.3).
            lying = sip_request("OPTIONS", server.port, client.port, body=b"v=0\r\n")
            client.send(lying.replace(b"Content-Length: 5", b"Content-Length: 99999"), server.port)
            assert status(client.response("OPTIONS")) == 400
            # Unknown method -> 501.
            client.send(sip_request("FOO", server.port, client.port), server.port)
            unknown = client.response("FOO")
            assert status(unknown) == 501, unknown
            # BYE in the live call's Call-ID but with a wrong To tag -> 481, call untouched.
            bye = sip_request(
                "BYE", server.port, client.port, call_id=call_id, from_tag=from_tag, to_tag="wrongtag", cseq=5
            )
            client.send(bye, server.port)
            assert status(client.response("BYE")) == 481
            client.send(sip_request("BYE", server.port, client.port, to_tag="nosuchdialog"), server.port)
            assert status(client.response("BYE")) == 481
            # OPTIONS -> 200.
            client.send(sip_request("OPTIONS", server.port, client.port), server.port)
            assert status(client.response("OPTIONS")) == 200
        finally:
            client.close()
            stranger.close()
        result = future.result(timeout=60)
    assert server.alive(), f"parley died during the hostile input\n{server.log()}"
    stats = server.stop()
    assert_sipp_ok(result)
    outgoing = sent_from(sniffer, rtp_port)
    assert stranger_port not in outgoing, "Parley sent RTP to the stranger"
    assert set(outgoing) == {p.src for p in sniffer.udp(dst=rtp_port) if p.src != stranger_port}
    packets = sorted((p for ps in outgoing.values() for p in ps), key=lambda p: p.time)
    assert_regular_stream(packets, 0, "Parley -> SIPp during hostile input")
    assert stats["media"]["strangers"] >= 50, stats
    assert stats["parse_errors"] >= 6, stats
    assert stats["ended"] == {"remote-bye": 1}, stats


def test_oversized_request_over_tcp_is_refused_cleanly(parley_server):
    """A 70 kB request (too big for UDP) over TCP: answered or the connection closed, within 3 s."""
    server = parley_server(transport="tcp")

    def options(sock: socket.socket, body: bytes = b"") -> list[str]:
        local_port = sock.getsockname()[1]
        sock.sendall(sip_request("OPTIONS", server.port, local_port, transport="TCP", body=body))
        return wait_tcp_responses(sock, want=1, timeout=3)

    with socket.create_connection((HOST, server.port), timeout=3) as tcp:
        assert [status(m) for m in options(tcp)] == [200], "plain OPTIONS over TCP not answered"
        try:
            reply = options(tcp, b"x" * 70_000)
        except ConnectionResetError:
            reply = None
        if reply:
            assert status(reply[0]) in (200, 413, 513), reply[0][:300]
        elif reply is not None:  # nothing read: the server must have closed the connection
            tcp.settimeout(0.5)
            try:
                closed = tcp.recv(1) == b""
            except ConnectionResetError:
                closed = True
            except TimeoutError:
                closed = False
            assert closed, "70 kB TCP request: neither answered nor refused within 3 s"
    with socket.create_connection((HOST, server.port), timeout=3) as tcp:
        assert [status(m) for m in options(tcp)] == [200], "server no longer answers over TCP"
    assert server.alive()


# -- 11: Parley's own UAC against the server ----------------------------------------------------
def _tone_energy(frames: list[np.ndarray], freq: float = 1000.0) -> tuple[float, float]:
    """(RMS, share of the signal power at ``freq``) of the concatenated frames."""
    pcm = np.concatenate(frames).astype(np.float64)
    rms = float(np.sqrt(np.mean(pcm**2)))
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm)))) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / 8000)
    band = (freqs > freq - 30) & (freqs < freq + 30)
    return rms, float(spectrum[band].sum() / max(spectrum.sum(), 1e-9))


async def test_parley_uac_dials_the_echo_server(parley_server):
    from parley.telephony.call import DtmfDigit
    from parley.telephony.manager import CallManager

    server = parley_server(transport="udp")
    manager = CallManager(None, host=HOST, port=free_port(), rtp_ports=rtp_range())
    await manager.start()
    try:
        call = await asyncio.wait_for(manager.dial(server.uri, timeout=5), 6)
        t = np.arange(8000 * 2) / 8000
        tone = (8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
        playback = call.play(tone)
        frames: list[np.ndarray] = []

        async def collect() -> None:
            async for item in call.incoming():
                if not isinstance(item, DtmfDigit):
                    frames.append(item)
                if len(frames) >= 125:  # 2.5 s
                    return

        await asyncio.wait_for(collect(), 6)
        assert await asyncio.wait_for(call.wait_played(playback), 2)
        loud = [f for f in frames if np.sqrt(np.mean(f.astype(np.float64) ** 2)) > 2000]
        assert len(loud) >= 80, f"only {len(loud)} of {len(frames)} echoed frames carry the tone"
        rms, share = _tone_energy(loud)
        assert share > 0.9, f"echo is not a 1 kHz tone: {share:.2f} of the power at 1 kHz"
        assert 0.5 * 8000 / np.sqrt(2) < rms < 1.5 * 8000 / np.sqrt(2), f"echo RMS {rms:.0f}"
        assert await call.hold() == 200
        assert await call.hold(False) == 200
        call.hangup()
        reason = await asyncio.wait_for(call.wait_ended(), 5)
        assert reason == "local-bye"
    finally:
        await asyncio.wait_for(manager.stop(), 10)
    stats = server.stop()
    assert stats["answered"] == 1, stats
    assert stats["ended"] == {"remote-bye": 1}, stats
