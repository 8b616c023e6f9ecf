"""RTP/RTCP sockets: one even/odd port pair per call from a configured range, read by the media clock."""

from __future__ import annotations

import socket
from collections.abc import Callable

from parley.media.datagram import Address, Handler, implementation

_datagram = implementation()
DatagramPoller = _datagram.DatagramPoller
DatagramSocket = _datagram.DatagramSocket


class RtpEndpoint:
    """A bound RTP socket and its RTCP neighbour (port + 1), watched by a :class:`DatagramPoller`."""

    def __init__(
        self, host: str, port: int, rtp: DatagramSocket, rtcp: DatagramSocket, poller: DatagramPoller
    ) -> None:
        self.host = host
        self.port = port
        self._rtp = rtp
        self._rtcp = rtcp
        self._poller = poller
        # The socket's own sendto, so sending a packet costs no Python frame of ours.
        self.send: Callable[[bytes, Address], None] = rtp.sendto
        self.send_rtcp: Callable[[bytes, Address], None] = rtcp.sendto
        poller.add(rtp)
        poller.add(rtcp)

    def on_rtp(self, handler: Handler | None) -> None:
        """``handler(data, source, arrival)`` for every RTP datagram, from the media clock's tick."""
        self._rtp.handler = handler

    def on_rtcp(self, handler: Handler | None) -> None:
        self._rtcp.handler = handler

    def close(self) -> None:
        for sock in (self._rtp, self._rtcp):
            self._poller.remove(sock)
            sock.close()


class PortAllocator:
    """Hands out RTP/RTCP port pairs, cycling through ``[first, last)``."""

    def __init__(self, host: str, first: int = 20000, last: int = 40000, *, poller: DatagramPoller) -> None:
        if first % 2 or last - first < 2:
            raise ValueError("the RTP port range must start on an even port and hold a pair")
        self.host = host
        self.poller = poller
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # An index, not itertools.cycle: cycle keeps a copy of every port it has handed out (40 bytes a
        # call over the first pass through the range: a growth a soak measures).
        self._first = first
        self._size = (last - first) // 2
        self._next = 0

    async def open(self) -> RtpEndpoint:
        """Bind the next free pair (skipping ports in use)."""
        for _ in range(self._size):
            port = self._first + 2 * self._next
            self._next = (self._next + 1) % self._size
            rtp = self._bind(port)
            if rtp is None:
                continue
            rtcp = self._bind(port + 1)
            if rtcp is None:
                rtp.close()
                continue
            return RtpEndpoint(self.host, port, DatagramSocket(rtp), DatagramSocket(rtcp), self.poller)
        raise OSError("no free RTP port pair in the configured range")

    def _bind(self, port: int) -> socket.socket | None:
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, port))
        except OSError:
            sock.close()
            return None
        return sock
