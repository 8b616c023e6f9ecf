"""Every call's RTP and RTCP sockets, read once per media tick and written without the event loop.

asyncio (uvloop too) hands each datagram to Python through an event-loop callback: an epoll
wake-up, the source address formatted into a string, a Python frame — per packet. At 1,000
calls that is 50,000 times a second in each direction, and that glue cost more CPU than Parley's
own RTP work. Instead the media clock calls :meth:`DatagramPoller.poll` once in each 20 ms
tick, after its sends: it asks which sockets have data, reads all of each one's datagrams, and
hands each to its socket's ``handler`` as ``(data, source, arrival)``. A packet waits at most one tick in
the kernel and is still played out at the same tick as before (the jitter buffer is only read
at ticks); ``arrival`` is the kernel's receive time (``SO_TIMESTAMPNS``) on the monotonic clock,
so jitter and latency figures do not see the tick's 20 ms grid (Linux enables receive stamps
a moment after the first socket asks; datagrams before that are stamped when read).

This module is the portable implementation (selectors and the ``socket`` module). The one used
in production is :mod:`parley.media.datagram_c`, the same classes in C (``recvmmsg(2)``, cached
``sockaddr``s); :func:`implementation` picks it when it was built.

:class:`SharedSocket` is one socket for many peers, each routed to its own handler by its source
address: a load tester's calls, whose datagrams are then read and sent many at a time
(``recvmmsg(2)``/``sendmmsg(2)`` in C) instead of one system call per call per tick.
"""

from __future__ import annotations

import contextlib
import ipaddress
import selectors
import socket
import struct
import time
from collections.abc import Callable
from types import ModuleType

Address = tuple[str, int]
Handler = Callable[[bytes, Address, float], None]
BATCH = 16  # datagrams read from one socket per poll before moving on (the rest wait a tick)
_TIMESPEC = struct.Struct("@qq")


def _arrival(ancillary: list[tuple[int, int, bytes]], clock_offset: float) -> float:
    """A datagram's arrival on the monotonic clock: the kernel's SO_TIMESTAMPNS stamp when the
    ancillary data holds one (``clock_offset``: wall clock minus monotonic), else now."""
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(value)
            return seconds + nanoseconds * 1e-9 - clock_offset
    return time.monotonic()
_CONTROL_SIZE = socket.CMSG_SPACE(_TIMESPEC.size)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


def implementation() -> ModuleType:
    """The C implementation when it was built, else this module."""
    try:
        from parley.media import datagram_c
    except ImportError:  # built without a C compiler: same behaviour, more CPU per packet
        import parley.media.datagram as module

        return module
    return datagram_c


class DatagramSocket:
    """A bound, non-blocking UDP socket: ``handler`` gets what arrives, :meth:`sendto` sends."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock = sock
        self.fd = sock.fileno()
        self.handler: Handler | None = None
        self.received = 0
        self.sent = 0
        self.send_errors = 0
        self._destination: Address | None = None

    def sendto(self, data: bytes, addr: Address) -> None:
        """Send one datagram; a full buffer or an ICMP error drops it (counted), like UDP does.

        ValueError if ``addr`` is not a numeric IP address (no name lookups on the media path).
        """
        if self.fd < 0:
            return
        if addr != self._destination:
            ipaddress.ip_address(addr[0])
            self._destination = addr
        try:
            self.sock.sendto(data, addr)
            self.sent += 1
        except OSError:
            self.send_errors += 1

    def drain(self, clock_offset: float) -> int:
        """Read up to :data:`BATCH` waiting datagrams and hand them on; returns how many."""
        count = 0
        while count < BATCH:
            try:
                data, ancillary, flags, source = self.sock.recvmsg(2048, _CONTROL_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # an ICMP error queued by an earlier send: read and gone
                count += 1
                continue
            count += 1
            if flags & socket.MSG_TRUNC:
                continue
            arrival = _arrival(ancillary, clock_offset)
            self.received += 1
            handler = self.handler
            if handler is not None:
                handler(data, (source[0], source[1]), arrival)
            if self.fd < 0:  # the handler closed the socket (the call ended)
                break
        return count

    def close(self) -> None:
        self.handler = None
        self.fd = -1
        self.sock.close()


class DatagramPoller:
    """The sockets the media clock reads at each tick."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()

    def __len__(self) -> int:
        return len(self._selector.get_map())

    def add(self, sock: DatagramSocket) -> None:
        self._selector.register(sock.fd, selectors.EVENT_READ, sock)

    def remove(self, sock: DatagramSocket) -> None:
        """Forget a socket (call before closing it); unknown sockets are ignored."""
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock.fd)

    def poll(self) -> int:
        """Hand every waiting datagram to its socket's handler; returns how many were read."""
        if not self._selector.get_map():
            return 0
        offset = time.time() - time.monotonic()
        count = 0
        for key, _ in self._selector.select(0):
            sock: DatagramSocket = key.data
            if sock.fd >= 0:  # a handler may have closed it during this poll
                count += sock.drain(offset)
        return count

    def close(self) -> None:
        self._selector.close()


class SharedSocket:
    """One bound IPv4 UDP socket for many peers; see :class:`parley.media.datagram_c.SharedSocket`.

    Here sends leave at once (:meth:`flush` has nothing to do) and datagrams are read one by one.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock = sock
        self.fd = sock.fileno()
        self.received = self.unrouted = self.sent = self.send_errors = 0
        self._routes: dict[Address, tuple[Handler, Address]] = {}

    def route(self, source: Address, handler: Handler | None) -> None:
        """Hand datagrams from ``source`` (a numeric IPv4 ``(host, port)``) to ``handler``; None: stop."""
        key = _ipv4(source)
        if handler is None:
            self._routes.pop(key, None)
        else:
            self._routes[key] = (handler, (source[0], source[1]))

    def routed(self, source: Address) -> Handler | None:
        entry = self._routes.get(_ipv4(source))
        return None if entry is None else entry[0]

    def sendto(self, data: bytes, addr: Address) -> None:
        if self.fd < 0:
            return
        try:
            self.sock.sendto(data, addr)
            self.sent += 1
        except OSError:
            self.send_errors += 1

    def flush(self) -> int:
        return 0

    def drain(self, clock_offset: float) -> int:
        """Hand every waiting datagram to its route; returns how many were read."""
        count = 0
        while self.fd >= 0 and count < 4096:
            try:
                data, ancillary, flags, source = self.sock.recvmsg(2048, _CONTROL_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                count += 1
                continue
            count += 1
            self.received += 1
            entry = None if flags & socket.MSG_TRUNC else self._routes.get((source[0], source[1]))
            if entry is None:
                self.unrouted += 1
                continue
            arrival = _arrival(ancillary, clock_offset)
            entry[0](data, entry[1], arrival)
        return count

    def close(self) -> None:
        self._routes.clear()
        self.fd = -1
        self.sock.close()


class SharedSender:
    """Sends datagrams through a :class:`SharedSocket` (ValueError for a non-IPv4 destination);
    ``muted`` drops them instead."""

    def __init__(self, socket: SharedSocket) -> None:
        self._socket = socket
        self._destination: Address | None = None
        self.muted = False

    def sendto(self, data: bytes, addr: Address) -> None:
        if self.muted:
            return
        if addr != self._destination:
            _ipv4(addr)
            self._destination = addr
        self._socket.sendto(data, addr)


def _ipv4(addr: Address) -> Address:
    """The address as a routing key; ValueError unless its host is a numeric IPv4 address."""
    ipaddress.IPv4Address(addr[0])
    return (str(addr[0]), int(addr[1]))
