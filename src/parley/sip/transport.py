"""Thin asyncio transports (UDP and TCP) around the sans-I/O :class:`UserAgent`.

Every input is handed to the user agent with the loop's time; afterwards its outbox is
flushed and one loop timer is (re)armed for the earliest transaction/session deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from parley.sip.transaction import Outgoing
from parley.sip.useragent import CallEvent, UserAgent

log = logging.getLogger(__name__)
Address = tuple[str, int]


class SipTransport:
    """Binds a :class:`UserAgent` to UDP and/or TCP sockets on one address."""

    def __init__(self, ua: UserAgent, on_events: Callable[[list[CallEvent]], None]) -> None:
        self.ua = ua
        self.on_events = on_events
        self.loop = asyncio.get_running_loop()
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp_server: asyncio.Server | None = None
        self.connections: dict[Address, _SipStream] = {}
        self._pending_tcp: dict[Address, list[bytes]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    async def start(self, transports: tuple[str, ...] = ("UDP",)) -> None:
        host, port = self.ua.host, self.ua.port
        if "UDP" in transports:
            self.udp, _ = await self.loop.create_datagram_endpoint(
                lambda: _SipDatagram(self), local_addr=(host, port), reuse_port=False
            )
            if port == 0:
                self.ua.port = port = self.udp.get_extra_info("sockname")[1]
        if "TCP" in transports:
            self.tcp_server = await self.loop.create_server(lambda: _SipStream(self), host, port)
            if port == 0:
                self.ua.port = self.tcp_server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.udp is not None:
            self.udp.close()
        for conn in list(self.connections.values()):
            conn.close()
        if self.tcp_server is not None:
            self.tcp_server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.tcp_server.wait_closed(), 1)

    # -- driving the core ---------------------------------------------------------------------
    def feed(self, data: bytes, source: Address, transport: str) -> None:
        try:
            self.ua.receive(data, source, transport, self.loop.time())
        except ConnectionError as exc:
            log.warning("%s", exc)
            conn = self.connections.get(source)
            if conn is not None:
                conn.close()
        except Exception:
            log.exception("SIP input from %s:%s could not be handled", *source)
        self.flush()

    def flush(self) -> None:
        """Send the user agent's output, report its events and re-arm the timer."""
        ua = self.ua
        if ua.outbox:
            out, ua.outbox[:] = list(ua.outbox), []
            for item in out:
                self._send(item)
        if ua.events:
            events, ua.events[:] = list(ua.events), []
            self.on_events(events)
            if ua.outbox:
                self.flush()
                return
        deadline = ua.next_deadline()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer) if deadline is not None else None

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        try:
            self.ua.expire(self.loop.time())
        except Exception:
            log.exception("SIP timer handling failed")
        self.flush()

    def _send(self, item: Outgoing) -> None:
        if item.transport == "UDP":
            if self.udp is not None:
                self.udp.sendto(item.data, item.addr)
            return
        conn = self.connections.get(item.addr)
        if conn is not None:
            conn.write(item.data)
            return
        pending = self._pending_tcp.setdefault(item.addr, [])
        pending.append(item.data)
        if len(pending) == 1:
            self.loop.create_task(self._connect(item.addr))

    async def _connect(self, addr: Address) -> None:
        try:
            await self.loop.create_connection(lambda: _SipStream(self, addr), addr[0], addr[1])
        except OSError as exc:
            log.warning("TCP connection to %s:%s failed: %s", addr[0], addr[1], exc)
            self._pending_tcp.pop(addr, None)


class _SipDatagram(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.owner.feed(data, (addr[0], addr[1]), "UDP")

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class _SipStream(asyncio.Protocol):
    def __init__(self, owner: SipTransport, peer: Address | None = None) -> None:
        self.owner = owner
        self.peer = peer
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is no asyncio.Transport
        name = transport.get_extra_info("peername")
        self.peer = (name[0], name[1])
        self.owner.connections[self.peer] = self
        for data in self.owner._pending_tcp.pop(self.peer, []):
            transport.write(data)

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None
        self.owner.feed(data, self.peer, "TCP")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.owner.connections.get(self.peer) is self:
            del self.owner.connections[self.peer]
            self.owner.ua.connection_lost(self.peer)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
