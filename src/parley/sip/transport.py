"""Thin asyncio transports (UDP and TCP) around the sans-I/O :class:`UserAgent`.

Every input is handed to the user agent with the loop's time; afterwards its outbox is
flushed and one loop timer is (re)armed for the earliest transaction/session deadline.

Nothing from the network raises past its handler here: a message that cannot be handled or
sent is counted and logged once per kind (:class:`RepeatedErrors`), and never stops the other
messages of a flush nor the re-arming of the timer. Targets named by host name are resolved the
RFC 3263 way (:class:`SipResolver`); one that does not resolve is a transport error for its
transaction. TCP connections are capped (in total and per source) and closed when idle without
a call on them (:class:`SipLimits`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Coroutine

from parley.repeats import RepeatedErrors
from parley.sip.resolver import ResolveError, SipResolver, is_numeric
from parley.sip.tls import TlsConfig
from parley.sip.transaction import ClientTransaction, Outgoing
from parley.sip.useragent import CallEvent, SessionState, UserAgent

log = logging.getLogger(__name__)
Address = tuple[str, int]


class SipTransport:
    """Binds a :class:`UserAgent` to UDP and/or TCP sockets on one address."""

    def __init__(
        self,
        ua: UserAgent,
        on_events: Callable[[list[CallEvent]], None],
        resolver: SipResolver | None = None,
        tls: TlsConfig | None = None,
    ) -> None:
        self.ua = ua
        self.tls = tls
        self._server_ssl = tls.server_context() if tls is not None else None
        self._client_ssl = tls.client_context() if tls is not None else None
        self.tls_server: asyncio.Server | None = None
        self.on_events = on_events
        self.loop = asyncio.get_running_loop()
        self.resolver = resolver or SipResolver()
        self.limits = ua.limits
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp_server: asyncio.Server | None = None
        self.connections: dict[Address, _SipStream] = {}
        self.per_host: dict[str, int] = {}
        self._pending_tcp: dict[Address, list[Outgoing]] = {}
        self._resolving: dict[tuple[str, int, str], list[Outgoing]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._udp_v6 = False
        self.on_connections: Callable[[int], None] | None = None  # +1/-1 as TCP/TLS connections come and go
        self.errors = RepeatedErrors(log)
        self.stats = {"tcp_refused": 0, "tcp_idle_closed": 0, "send_errors": 0}

    async def start(self, transports: tuple[str, ...] = ("UDP",)) -> None:
        host, port = self.ua.host, self.ua.port
        if "UDP" in transports:
            self.udp, _ = await self.loop.create_datagram_endpoint(
                lambda: _SipDatagram(self), local_addr=(host, port), reuse_port=False
            )
            sockname = self.udp.get_extra_info("sockname")
            self._udp_v6 = ":" in sockname[0]
            if port == 0:
                self.ua.port = port = sockname[1]
        if "TCP" in transports:
            self.tcp_server = await self.loop.create_server(lambda: _SipStream(self, "TCP"), host, port)
            if port == 0:
                self.ua.port = self.tcp_server.sockets[0].getsockname()[1]
        if self.tls is not None:
            self.tls_server = await self.loop.create_server(
                lambda: _SipStream(self, "TLS"), host, self.tls.port, ssl=self._server_ssl
            )
            self.ua.tls_port = self.tls_server.sockets[0].getsockname()[1]
        if self.tcp_server is not None or self.tls_server is not None:
            self._sweep_later()

    async def close(self) -> None:
        for handle in (self._timer, self._sweeper):
            if handle is not None:
                handle.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self.udp is not None:
            self.udp.close()
        for conn in list(self.connections.values()):
            conn.close()
        for server in (self.tcp_server, self.tls_server):
            if server is not None:
                server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 1)
        self.resolver.close()

    def report(self) -> dict[str, object]:
        """The transport's limits and counters, for the stats and metrics."""
        return {
            "tcp_connections": len(self.connections),
            "tcp_refused": self.stats["tcp_refused"],
            "tcp_idle_closed": self.stats["tcp_idle_closed"],
            "send_errors": self.stats["send_errors"],
            "resolver": dict(self.resolver.stats),
            "errors": self.errors.counts,
            "limits": {
                "tcp_idle_timeout": self.limits.tcp_idle_timeout,
                "max_connections": self.limits.max_connections,
                "max_connections_per_ip": self.limits.max_connections_per_ip,
                "max_message_size": self.limits.max_message_size,
                "max_transactions": self.limits.max_transactions,
                "rate_per_ip": self.limits.rate_per_ip,
                "rate_action": self.limits.rate_action,
            },
        }

    # -- driving the core ---------------------------------------------------------------------
    def feed(self, data: bytes, source: Address, transport: str) -> None:
        try:
            self.ua.receive(data, source, transport, self.loop.time())
        except ConnectionError as exc:
            self.errors.report("stream-closed", "SIP stream from %s closed: %s", source[0], exc)
            self.flush()  # what the user agent answered (a 400, a 413) is written before the close
            conn = self.connections.get(source)
            if conn is not None:
                conn.close()
            return
        except Exception:
            self.errors.report(
                "input-failed", "SIP input from %s could not be handled", source[0], exc_info=True
            )
        self.flush()

    def flush(self) -> None:
        """Send the user agent's output, report its events and re-arm the timer.

        A message that fails to send is counted and logged once; the rest still go out, and the
        timer is re-armed whatever happened.
        """
        ua = self.ua
        try:
            for _ in range(100):  # events may queue output that queues events...: bounded
                if ua.outbox:
                    out, ua.outbox[:] = list(ua.outbox), []
                    for item in out:
                        try:
                            self._send(item)
                        except Exception as exc:
                            self._send_failed(item, exc)
                if not ua.events:
                    break
                events, ua.events[:] = list(ua.events), []
                try:
                    self.on_events(events)
                except Exception:
                    self.errors.report("events-failed", "handling SIP events failed", exc_info=True)
        finally:
            self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.ua.next_deadline()
        if deadline != self._timer_at or (deadline is not None and self._timer is None):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer) if deadline is not None else None

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        try:
            self.ua.expire(self.loop.time())
        except Exception:
            self.errors.report("timer-failed", "SIP timer handling failed", exc_info=True)
        self.flush()

    def _send_failed(self, item: Outgoing, exc: BaseException) -> None:
        self.stats["send_errors"] += 1
        self.errors.report(
            "send-failed", "SIP message to %s:%s not sent: %s", item.addr[0], item.addr[1], exc
        )
        try:
            self.ua.transport_error(item, self.loop.time())
        except Exception:
            self.errors.report("timer-failed", "SIP transport error handling failed", exc_info=True)

    # -- sending ------------------------------------------------------------------------------
    def _send(self, item: Outgoing, name: str | None = None) -> None:
        host, port = item.addr
        if not is_numeric(host) or port == 0:
            name = host
            key = (host, port, item.transport)
            try:
                found = self.resolver.cached(host, port, item.transport, self.loop.time())
            except ResolveError as exc:
                self._send_failed(item, exc)
                return
            if found is None:
                waiting = self._resolving.get(key)
                if waiting is None:
                    self._resolving[key] = [item]
                    self._spawn(self._resolve(key))
                elif len(waiting) < 64:
                    waiting.append(item)
                return
            item = Outgoing(item.data, found[0], item.transport, item.txn)
        if not 0 < item.addr[1] < 65536:
            raise ValueError(f"port {item.addr[1]} out of range")
        if item.transport == "UDP":
            if self.udp is not None:
                # A destination of the other address family is refused here: asyncio's own check
                # would treat it as a fatal error and close the socket for every call.
                if (":" in item.addr[0]) != self._udp_v6:
                    raise ValueError("destination address of the other IP family than the SIP socket")
                self.udp.sendto(item.data, item.addr)
            return
        conn = self.connections.get(item.addr)
        if conn is not None:
            conn.write(item)
            return
        if item.transport == "TLS" and self._client_ssl is None:
            raise ValueError("no TLS configured for a sips: or transport=tls target")
        pending = self._pending_tcp.setdefault(item.addr, [])
        pending.append(item)
        if len(pending) == 1:
            self._spawn(self._connect(item.addr, item.transport, name))

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, key: tuple[str, int, str]) -> None:
        host, port, transport = key
        try:
            await self.resolver.resolve(host, port, transport)
        except ResolveError as exc:
            for item in self._resolving.pop(key, []):
                self._send_failed(item, exc)
            self.flush()
            return
        except Exception as exc:  # the resolver library failed in a way it does not document
            for item in self._resolving.pop(key, []):
                self._send_failed(item, exc)
            self.flush()
            return
        for item in self._resolving.pop(key, []):
            try:
                self._send(item)
            except Exception as exc:
                self._send_failed(item, exc)
        self.flush()

    async def _connect(self, addr: Address, transport: str = "TCP", name: str | None = None) -> None:
        tls = self._client_ssl if transport == "TLS" else None
        if tls is not None and name is None:
            tls = self._client_ssl_by_address()
        try:
            await self.loop.create_connection(
                lambda: _SipStream(self, transport, addr), addr[0], addr[1], ssl=tls,
                server_hostname=(name or addr[0]) if tls is not None else None,
            )  # fmt: skip
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            self.errors.report(f"connect-failed:{transport}", "%s connection to %s:%s failed: %s",
                               transport, addr[0], addr[1], exc)  # fmt: skip
            for item in self._pending_tcp.pop(addr, []):  # their transactions fail now, not at timer B
                self._send_failed(item, exc)
            self.flush()

    def _client_ssl_by_address(self) -> ssl.SSLContext:
        """The client context for a target given by address: the chain is checked, not the name."""
        assert self.tls is not None
        context = self.tls.client_context()
        context.check_hostname = False
        return context

    # -- TCP connections ----------------------------------------------------------------------
    def admit(self, conn: _SipStream, peer: Address, inbound: bool) -> bool:
        """Register a new connection, or refuse it over a limit or outside the allow-list."""
        limits = self.limits
        reason = ""
        if inbound and not self.ua.allows_source(peer[0]):
            reason = "source not allowed"
        elif len(self.connections) >= limits.max_connections:
            reason = "connection limit"
        elif self.per_host.get(peer[0], 0) >= limits.max_connections_per_ip:
            reason = "per-source connection limit"
        if reason:
            self.stats["tcp_refused"] += 1
            self.errors.report(f"tcp-refused:{reason}", "TCP connection refused: %s", reason)
            if reason != "source not allowed" and self.ua.on_sip_refused is not None:
                self.ua.on_sip_refused("connections")  # (the allow-list counted its own)
            return False
        self.connections[peer] = conn
        if self.on_connections is not None:
            self.on_connections(1)
        self.per_host[peer[0]] = self.per_host.get(peer[0], 0) + 1
        return True

    def forget(self, conn: _SipStream) -> None:
        peer = conn.peer
        if peer is None or self.connections.get(peer) is not conn:
            return
        del self.connections[peer]
        if self.on_connections is not None:
            self.on_connections(-1)
        count = self.per_host.get(peer[0], 1) - 1
        if count > 0:
            self.per_host[peer[0]] = count
        else:
            self.per_host.pop(peer[0], None)
        self.ua.connection_lost(peer)

    def _sweep_later(self) -> None:
        self._sweeper = self.loop.call_later(min(self.limits.tcp_idle_timeout / 4, 5.0), self._sweep)

    def _sweep(self) -> None:
        """Close connections idle for longer than the timeout, unless a call still uses them."""
        try:
            cutoff = self.loop.time() - self.limits.tcp_idle_timeout
            idle = [c for c in self.connections.values() if c.last_activity < cutoff]
            if idle:
                in_use = {
                    s.peer
                    for s in self.ua.sessions.values()
                    if s.transport != "UDP" and s.state != SessionState.TERMINATED
                }
                for conn in idle:
                    if conn.peer not in in_use:
                        self.stats["tcp_idle_closed"] += 1
                        conn.close()
        except Exception:
            self.errors.report("sweep-failed", "closing idle TCP connections failed", exc_info=True)
        finally:
            self._sweep_later()


class _SipDatagram(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.owner.feed(data, (addr[0], addr[1]), "UDP")

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class _SipStream(asyncio.Protocol):
    def __init__(self, owner: SipTransport, kind: str, peer: Address | None = None) -> None:
        self.owner = owner
        self.kind = kind  # "TCP" or "TLS"
        self.inbound = peer is None
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.last_activity = owner.loop.time()
        self.unanswered: list[Outgoing] = []  # requests sent on a connection we opened, before any reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is no asyncio.Transport
        name = transport.get_extra_info("peername")
        peer = (name[0], name[1])
        if not self.owner.admit(self, peer, self.inbound):
            self.peer = None
            transport.abort()
            return
        self.peer = peer
        for item in self.owner._pending_tcp.pop(peer, []):
            self.write(item)

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            return
        self.last_activity = self.owner.loop.time()
        self.unanswered.clear()
        self.owner.feed(data, self.peer, self.kind)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.forget(self)
        # A connection we opened that closed before the peer said anything (e.g. it refused our TLS
        # client certificate after the handshake, as TLS 1.3 allows): what we sent on it failed.
        unanswered, self.unanswered = self.unanswered, []
        for item in unanswered:
            self.owner._send_failed(
                item, exc or ConnectionError(f"{self.kind} connection closed by the peer")
            )
        if unanswered:
            self.owner.flush()

    def write(self, item: Outgoing) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.last_activity = self.owner.loop.time()
            if not self.inbound and isinstance(item.txn, ClientTransaction):
                self.unanswered.append(item)
            self.transport.write(item.data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
