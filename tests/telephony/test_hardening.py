"""Issue 15 over real loopback sockets: hostile or sloppy peers never cost a call nor a traceback.

A raw SIP peer (a UDP or TCP socket and hand-written messages) talks to a real CallManager. Every
test also checks the log: an error from the network is a warning logged once, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import socket

import pytest
from prometheus_client import REGISTRY

from integration.harness import HOST, free_port, rtp_range
from parley.media.rtp import RtpPacket, RtpSender
from parley.sip.limits import SipLimits
from parley.sip.resolver import SipResolver
from parley.sip.transaction import Outgoing
from parley.telephony.call import Call
from parley.telephony.manager import CallManager

from .conftest import ManagerFactory as Factory


@pytest.fixture
def managers(managers: Factory) -> Factory:
    """Managers whose DNS server is a closed loopback port: names resolve through the hosts file
    only, and every other lookup fails at once (the tests never depend on the network's DNS)."""

    async def factory(app=None, **options) -> CallManager:
        options.setdefault("resolver", SipResolver(nameservers=[f"{HOST}:{free_port()}"]))
        return await managers(app, **options)

    return factory


ManagerFactory = Factory


def sdp(address: str, port: int) -> bytes:
    return (
        f"v=0\r\no=peer 1 1 IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    ).encode()


class RawPeer:
    """A SIP peer on a UDP socket that writes its messages by hand."""

    def __init__(self, server: CallManager, contact_host: str = HOST) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, free_port()))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.contact = f"<sip:peer@{contact_host}:{self.port}>"
        self.call_id = secrets.token_hex(8)
        self.tag = secrets.token_hex(4)

    def close(self) -> None:
        self.sock.close()

    def request(self, method: str, *, body: bytes = b"", to_tag: str = "", cseq: int = 1) -> bytes:
        to = f"<sip:agent@{HOST}:{self.server.port}>" + (f";tag={to_tag}" if to_tag else "")
        head = (
            f"{method} sip:agent@{HOST}:{self.server.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{self.port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:peer@{HOST}>;tag={self.tag}\r\nTo: {to}\r\n"
            f"Call-ID: {self.call_id}\r\nCSeq: {cseq} {method}\r\nContact: {self.contact}\r\n"
            + ("Content-Type: application/sdp\r\n" if body else "")
            + f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, (HOST, self.server.port))

    async def receive(self, wanted: str, timeout: float = 5.0) -> bytes:
        """The next message whose start line contains ``wanted`` (others are skipped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                pytest.fail(f"no {wanted!r} within {timeout} s")
            try:
                data, _ = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 65535), remaining)
            except TimeoutError:
                pytest.fail(f"no {wanted!r} within {timeout} s")
            if wanted in data.split(b"\r\n", 1)[0].decode():
                return data

    def reply_ok(self, request: bytes) -> None:
        """200 to a request from the server (copying its Via, From, To, Call-ID, CSeq)."""
        lines = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
        keep = [line for line in lines if re.match(rb"(?i)(via|from|to|call-id|cseq):", line)]
        self.sock.sendto(b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n",
                         (HOST, self.server.port))  # fmt: skip


def header(message: bytes, name: str) -> str:
    found = re.search(rb"(?im)^" + name.encode() + rb":\s*(.*?)\r$", message)
    assert found is not None, message
    return found.group(1).decode()


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text


async def answer_and_confirm(peer: RawPeer, offer: bytes) -> tuple[bytes, str]:
    """INVITE with ``offer``, wait for the 200, ACK it; (the 200, its To tag)."""
    peer.send(peer.request("INVITE", body=offer))
    ok = await peer.receive("200")
    to_tag = header(ok, "To").split("tag=")[1]
    peer.send(peer.request("ACK", to_tag=to_tag))
    return ok, to_tag


async def hang_up_at_once(call: Call) -> None:
    await asyncio.sleep(0.2)


# -- item 1: a host name in Contact ---------------------------------------------------------------
async def test_bye_reaches_a_contact_given_by_host_name(managers: ManagerFactory, caplog) -> None:
    caplog.set_level(logging.INFO)
    server = await managers(hang_up_at_once)
    peer = RawPeer(server, contact_host="localhost")  # resolved through the hosts file
    try:
        await answer_and_confirm(peer, sdp(HOST, free_port()))
        bye = await peer.receive("BYE", 5)
        assert bye.startswith(f"BYE sip:peer@localhost:{peer.port} SIP/2.0".encode())
        peer.reply_ok(bye)
        await asyncio.sleep(0.2)
        assert server.stats.ended == {"local-bye": 1}
        no_tracebacks(caplog)
    finally:
        peer.close()


async def test_an_unresolvable_contact_ends_the_call_with_one_warning(managers: ManagerFactory, caplog):
    caplog.set_level(logging.INFO)
    server = await managers(hang_up_at_once)
    peer = RawPeer(server, contact_host="nowhere.invalid")
    try:
        await answer_and_confirm(peer, sdp(HOST, free_port()))
        for _ in range(60):
            if server.ua.stats["transport_errors"]:
                break
            await asyncio.sleep(0.1)
        assert server.ua.stats["transport_errors"] >= 1
        assert not server.calls
        # The transport's timer and other messages still work: an OPTIONS is answered.
        peer.send(peer.request("OPTIONS"))
        assert b" 200 " in (await peer.receive("200", 3))[:20]
        warnings = [r for r in caplog.records if "not sent" in r.getMessage()]
        assert len(warnings) == 1
        no_tracebacks(caplog)
    finally:
        peer.close()


async def test_one_unsendable_message_does_not_stop_the_others(managers: ManagerFactory, caplog) -> None:
    """flush(): a message that cannot be sent is counted and logged; the ones after it still go out
    and the transaction timer is re-armed (it used to drop them and leave the timer unarmed)."""
    caplog.set_level(logging.INFO)
    server = await managers(None)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind((HOST, 0))
    receiver.setblocking(False)
    try:
        transport = server._transport
        assert transport is not None
        bad = [
            Outgoing(b"to an IPv6 address from an IPv4 socket", ("::1", 5060), "UDP"),
            Outgoing(b"to a port out of range", (HOST, 70000), "UDP"),
        ]
        # An INVITE to the receiver, queued after the two that cannot be sent; its timers A and B
        # must be armed on the loop whatever happened before.
        server.ua.invite(f"sip:x@{HOST}:{receiver.getsockname()[1]}", b"", server._now())
        server.ua.outbox[:0] = bad
        transport.flush()
        data, _ = await asyncio.wait_for(asyncio.get_running_loop().sock_recvfrom(receiver, 4096), 2)
        assert data.startswith(b"INVITE ")
        assert transport.stats["send_errors"] == 2
        assert transport._timer is not None and transport._timer_at == server.ua.next_deadline()
        # ... and the timer fires: timer A retransmits the INVITE.
        again, _ = await asyncio.wait_for(asyncio.get_running_loop().sock_recvfrom(receiver, 4096), 2)
        assert again == data
        assert server._transport is not None and server._transport.udp is not None
        assert not server._transport.udp.is_closing()
        no_tracebacks(caplog)
    finally:
        receiver.close()


# -- item 2: a connection address that is no address --------------------------------------------------
@pytest.mark.parametrize("address", ["v.x.y.z", "10.10.10.a"])
async def test_a_bad_sdp_connection_address_is_refused_cleanly(
    managers: ManagerFactory, caplog, address: str
) -> None:
    caplog.set_level(logging.INFO)
    started: list[Call] = []

    async def app(call: Call) -> None:
        started.append(call)

    server = await managers(app)
    peer = RawPeer(server)
    try:
        peer.send(peer.request("INVITE", body=sdp(address, 40000)))
        refused = await peer.receive("488", 10)
        assert "tag=" in header(refused, "To") and header(refused, "Server") == "Parley"
        await asyncio.sleep(0.1)
        assert not started and not server.calls
        no_tracebacks(caplog)
    finally:
        peer.close()


# -- item 5: delayed offer ---------------------------------------------------------------------------
async def test_delayed_offer_call_echoes_audio(managers: ManagerFactory) -> None:
    async def echo(call: Call) -> None:
        call.on_audio = call.stream.play_frame
        await call.wait_ended()

    server = await managers(echo)
    peer = RawPeer(server)
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind((HOST, 0))
    media.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        ok, to_tag = await answer_and_confirm_delayed(peer, sdp(HOST, media.getsockname()[1]))
        offer = ok.split(b"\r\n\r\n", 1)[1]
        port = int(re.search(rb"m=audio (\d+)", offer).group(1))  # type: ignore[union-attr]
        sender = RtpSender(0)
        for _ in range(10):
            media.sendto(sender.packet(b"\x10" * 160), (HOST, port))
            await asyncio.sleep(0.02)
        data, _ = await asyncio.wait_for(loop.sock_recvfrom(media, 2048), 3)
        assert RtpPacket.parse(data).payload_type == 0
        assert len(server.calls) == 1
        peer.send(peer.request("BYE", to_tag=to_tag, cseq=2))
        await peer.receive("200", 3)
    finally:
        peer.close()
        media.close()


async def answer_and_confirm_delayed(peer: RawPeer, answer: bytes) -> tuple[bytes, str]:
    peer.send(peer.request("INVITE"))
    ok = await peer.receive("200")
    assert header(ok, "Content-Type") == "application/sdp"  # the offer is in the 200
    to_tag = header(ok, "To").split("tag=")[1]
    ack = peer.request("ACK", to_tag=to_tag, body=answer)  # and the answer in the ACK
    peer.send(ack)
    return ok, to_tag


def refused_metric(reason: str) -> float:
    return REGISTRY.get_sample_value("parley_sip_refused_total", {"reason": reason}) or 0.0


# -- items 3 and 9: TCP limits ------------------------------------------------------------------------
async def tcp_connect(manager: CallManager) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(HOST, manager.port)


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(65536), timeout) == b""
    except (TimeoutError, ConnectionError):
        return False


async def test_idle_tcp_connections_are_closed(managers: ManagerFactory) -> None:
    server = await managers(None, transports=("UDP", "TCP"), limits=SipLimits(tcp_idle_timeout=0.4))
    reader, writer = await tcp_connect(server)
    try:
        assert await closed_by_server(reader, 3.0)
        assert server.sip_report()["tcp_idle_closed"] == 1
        assert server.sip_report()["tcp_connections"] == 0
    finally:
        writer.close()


async def test_tcp_connections_are_capped_per_source_and_in_total(managers: ManagerFactory, caplog) -> None:
    caplog.set_level(logging.INFO)
    limits = SipLimits(max_connections=3, max_connections_per_ip=2)
    server = await managers(None, transports=("UDP", "TCP"), limits=limits)
    refused_before = refused_metric("connections")
    open_before = REGISTRY.get_sample_value("parley_sip_tcp_connections") or 0.0
    opened = []
    try:
        for _ in range(2):
            opened.append(await tcp_connect(server))
        await asyncio.sleep(0.1)
        refused = await tcp_connect(server)  # a third from 127.0.0.1
        assert await closed_by_server(refused[0], 2.0)
        other = await asyncio.open_connection(HOST, server.port, local_addr=("127.0.0.2", 0))
        opened.append(other)  # another source: allowed, and the third in total
        await asyncio.sleep(0.1)
        over = await asyncio.open_connection(HOST, server.port, local_addr=("127.0.0.3", 0))
        assert await closed_by_server(over[0], 2.0)  # over the total
        assert not await closed_by_server(other[0], 0.3)
        report = server.sip_report()
        assert report["tcp_refused"] == 2 and report["tcp_connections"] == 3
        assert refused_metric("connections") - refused_before == 2  # and in the Prometheus metrics
        assert REGISTRY.get_sample_value("parley_sip_tcp_connections") - open_before == 3
        assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 2  # one per reason
        no_tracebacks(caplog)
    finally:
        for _reader, writer in opened:
            writer.close()


async def test_a_message_too_large_for_tcp_is_answered_413(managers: ManagerFactory) -> None:
    server = await managers(None, transports=("UDP", "TCP"), limits=SipLimits(max_message_size=2000))
    reader, writer = await tcp_connect(server)
    try:
        body = b"v=0\r\n" + b"a=x\r\n" * 1000
        head = (
            f"INVITE sip:agent@{HOST}:{server.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {HOST}:5999;branch=z9hG4bKbig\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:peer@{HOST}>;tag=a\r\nTo: <sip:agent@{HOST}>\r\nCall-ID: big\r\n"
            f"CSeq: 1 INVITE\r\nContact: <sip:peer@{HOST}:5999;transport=tcp>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        writer.write(head + body)
        answer = await asyncio.wait_for(reader.read(65536), 3)
        assert answer.startswith(b"SIP/2.0 413 ")
        assert await closed_by_server(reader, 3.0)
    finally:
        writer.close()


async def test_sip_limits_are_in_the_stats(managers: ManagerFactory) -> None:
    server = await managers(None, transports=("UDP", "TCP"), rtp_ports=rtp_range(4))
    report = server.report()["sip"]
    assert report["limits"] == {  # type: ignore[index]
        "tcp_idle_timeout": 120.0,
        "max_connections": 4096,
        "max_connections_per_ip": 256,
        "max_message_size": 65535,
        "max_transactions": 20000,
        "rate_per_ip": 200.0,
        "rate_action": "reply",
    }
