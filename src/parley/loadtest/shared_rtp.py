"""Every call of a load-tester process on one RTP socket and one RTCP socket.

A server gives each call its own RTP port, and so did the load tester: one ``recvmmsg(2)`` and one
``sendto(2)`` per call per 20 ms tick, plus the poll that finds the readable sockets. On this
path the kernel's work was two thirds of the load tester's CPU. Here all of a process's calls
share one port pair (every call's SDP offers the same port; each answer's address tells the
calls apart). The media clock's poller is wrapped so that at each tick, right after the
streams' sends were queued, they leave together (``sendmmsg(2)``, 64 a call) and everything that
arrived is read 64 datagrams a ``recvmmsg(2)``, each handed to the call whose answer named its
source address (:class:`parley.media.datagram_c.SharedSocket`).

What this asks of the far end: it sends each call's RTP from the address its SDP answer gave
(symmetric RTP, as Parley, Asterisk, FreeSWITCH and rtpengine do). Datagrams from any other
address count as ``unrouted`` in the worker's report and are lost to the call, which shows as RTP
loss; a re-INVITE that moves a call's media is not followed. RTCP from the far end is read and
dropped (the load tester needs none of it); the calls still send their reports.

Every call sends from the same address, so the far end can tell two of them apart only by their
destination. When a new call's answer names an address an older call still sends to, the far end
has given that port to the new call: the older call's far end is gone (a worker that crashed and
came back with its port range), and the older call stops sending, as if the far end ignored it.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from parley.media.datagram import Address, Handler, implementation

_datagram = implementation()
SharedSocket = _datagram.SharedSocket
SharedSender = _datagram.SharedSender
RECEIVE_BUFFER = 64 << 20  # bytes: ~30 ticks of 1,000 calls' RTP, should the process stall
log = logging.getLogger(__name__)


class SharedEndpoint:
    """One call's view of the shared sockets, as :class:`parley.media.endpoint.RtpEndpoint` offers it."""

    def __init__(self, ports: SharedRtpPorts) -> None:
        self.host = ports.host
        self.port = ports.port
        self._ports = ports
        self._remote: Address | None = None
        self._senders = (SharedSender(ports.rtp), SharedSender(ports.rtcp))
        self.send: Callable[[bytes, Address], None] = self._senders[0].sendto
        self.send_rtcp: Callable[[bytes, Address], None] = self._senders[1].sendto

    def on_rtp(self, handler: Handler | None) -> None:
        """Route the far end's RTP to ``handler``: a stream's ``receive`` or a tap with a ``stream``,
        whose ``remote`` (the SDP answer's address) is where the far end sends from."""
        if handler is None:
            self._unroute()
            return
        stream: Any = getattr(handler, "stream", None) or getattr(handler, "__self__", None)
        remote = getattr(stream, "remote", None)
        if remote is None:
            raise TypeError(f"cannot tell which far end {handler!r} receives from")
        self._unroute()
        self._remote = (remote[0], remote[1])
        self._ports.rtp.route(self._remote, handler)
        previous = self._ports.owners.get(self._remote)
        if previous is not None and previous is not self:
            previous.mute()  # its far end now serves this call (see the module docstring)
        self._ports.owners[self._remote] = self

    def mute(self) -> None:
        """Send nothing more (the far end is gone)."""
        for sender in self._senders:
            sender.muted = True

    def on_rtcp(self, handler: Handler | None) -> None:
        """RTCP from the far end is dropped (see the module docstring)."""

    def _unroute(self) -> None:
        """Drop this call's route, unless a later call with the same far end has taken it over."""
        remote, self._remote = self._remote, None
        if remote is None or self._ports.owners.get(remote) is not self:
            return
        del self._ports.owners[remote]
        if self._ports.rtp.fd >= 0:
            self._ports.rtp.route(remote, None)

    def close(self) -> None:
        self._unroute()


class SharedRtpPorts:
    """Hands every call a :class:`SharedEndpoint` on one port pair (RTP ``port``, RTCP ``port + 1``)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.owners: dict[Address, SharedEndpoint] = {}  # far end -> the call it serves now
        self.rtp = SharedSocket(_bind(host, port))
        try:
            self.rtcp = SharedSocket(_bind(host, port + 1))
        except OSError:
            self.rtp.close()
            raise

    async def open(self) -> SharedEndpoint:
        return SharedEndpoint(self)

    def report(self) -> dict[str, int]:
        rtp, rtcp = self.rtp, self.rtcp
        return {"received": rtp.received, "unrouted": rtp.unrouted, "sent": rtp.sent + rtcp.sent,
                "send_errors": rtp.send_errors + rtcp.send_errors}  # fmt: skip

    def close(self) -> None:
        for sock in (self.rtp, self.rtcp):
            if sock.fd >= 0:
                sock.close()


class _SharedPoller:
    """The media clock's poller: the shared sockets (their sends leave, then all is read), then the rest."""

    def __init__(self, ports: SharedRtpPorts, inner: Any) -> None:
        self.ports = ports
        self.inner = inner

    def poll(self) -> int:
        offset = time.time() - time.monotonic()
        return self.ports.rtp.drain(offset) + self.ports.rtcp.drain(offset) + self.inner.poll()

    def __len__(self) -> int:
        return len(self.inner) + 2

    def add(self, sock: Any) -> None:
        self.inner.add(sock)

    def remove(self, sock: Any) -> None:
        self.inner.remove(sock)

    def close(self) -> None:
        unrouted = self.ports.rtp.unrouted
        if unrouted:
            log.warning("%d RTP datagrams came from addresses no call's answer gave", unrouted)
        self.ports.close()
        self.inner.close()


def share_rtp_ports(manager: Any, host: str, first: int, last: int) -> SharedRtpPorts | None:
    """Put ``manager``'s calls on one port pair from ``[first, last)`` (before it starts); None, and the
    manager keeps a port pair per call, when ``host`` is not IPv4 or no pair in the range is free."""
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return None
    for port in range(first + first % 2, last - 1, 2):
        try:
            ports = SharedRtpPorts(host, port)
        except OSError:
            continue
        manager.ports = ports
        manager.clock.poller = _SharedPoller(ports, manager.clock.poller)
        return ports
    return None


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
        _grow_receive_buffer(sock)
    except OSError:
        sock.close()
        raise
    return sock


def _grow_receive_buffer(sock: socket.socket) -> None:
    """Past ``net.core.rmem_max`` when allowed (root: SO_RCVBUFFORCE), else up to it."""
    force = getattr(socket, "SO_RCVBUFFORCE", 33)
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, RECEIVE_BUFFER)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
