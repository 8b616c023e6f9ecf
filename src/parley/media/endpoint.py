"""asyncio UDP sockets for RTP/RTCP: one even/odd port pair per call from a configured range."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)
Address = tuple[str, int]


class _Receiver(asyncio.DatagramProtocol):
    __slots__ = ("handler", "transport")

    def __init__(self) -> None:
        self.handler: Callable[[bytes, Address], None] | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        handler = self.handler
        if handler is not None:
            handler(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("RTP socket error: %s", exc)


class RtpEndpoint:
    """A bound RTP socket and its RTCP neighbour (port + 1)."""

    def __init__(self, host: str, port: int, rtp: _Receiver, rtcp: _Receiver) -> None:
        self.host = host
        self.port = port
        self._rtp = rtp
        self._rtcp = rtcp
        assert rtp.transport is not None
        # The transport's own sendto, so sending a packet costs no Python frame of ours.
        self.send: Callable[[bytes, Address], None] = rtp.transport.sendto

    def on_rtp(self, handler: Callable[[bytes, Address], None]) -> None:
        self._rtp.handler = handler

    def on_rtcp(self, handler: Callable[[bytes, Address], None]) -> None:
        self._rtcp.handler = handler

    def send_rtcp(self, data: bytes, addr: Address) -> None:
        if self._rtcp.transport is not None:
            self._rtcp.transport.sendto(data, addr)

    def close(self) -> None:
        self._rtp.handler = self._rtcp.handler = None
        for receiver in (self._rtp, self._rtcp):
            if receiver.transport is not None:
                receiver.transport.close()


class PortAllocator:
    """Hands out RTP/RTCP port pairs, cycling through ``[first, last)``."""

    def __init__(self, host: str, first: int = 20000, last: int = 40000) -> None:
        if first % 2 or last - first < 2:
            raise ValueError("the RTP port range must start on an even port and hold a pair")
        self.host = host
        self._ports = itertools.cycle(range(first, last, 2))
        self._size = (last - first) // 2

    async def open(self) -> RtpEndpoint:
        loop = asyncio.get_running_loop()
        for _ in range(self._size):
            port = next(self._ports)
            rtp = _Receiver()
            try:
                await loop.create_datagram_endpoint(lambda r=rtp: r, local_addr=(self.host, port))
            except OSError:
                continue
            rtcp = _Receiver()
            try:
                await loop.create_datagram_endpoint(lambda r=rtcp: r, local_addr=(self.host, port + 1))
            except OSError:
                assert rtp.transport is not None
                rtp.transport.close()
                continue
            return RtpEndpoint(self.host, port, rtp, rtcp)
        raise OSError("no free RTP port pair in the configured range")
