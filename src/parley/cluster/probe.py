"""The health probe Kamailio's dispatcher uses, from Python: one SIP OPTIONS, the answer's status.

A worker answers 200 while it takes calls and 503 while it drains (``UserAgent.draining``); the
supervisor waits for 200 before it counts a (re)started worker as ready, exactly as the load
balancer in front will.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from parley.sip.errors import SipParseError
from parley.sip.message import Headers, SipRequest, SipResponse, parse_message


def options_request(host: str, port: int, local: tuple[str, int], transport: str = "UDP") -> SipRequest:
    """An out-of-dialog OPTIONS to ``sip:host:port`` from ``local``."""
    call_id = "probe-" + secrets.token_hex(8)
    headers = Headers(
        [
            ("Via", f"SIP/2.0/{transport} {local[0]}:{local[1]};branch=z9hG4bK{secrets.token_hex(8)};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:probe@{local[0]}>;tag={secrets.token_hex(4)}"),
            ("To", f"<sip:{host}:{port}>"),
            ("Call-ID", call_id),
            ("CSeq", "1 OPTIONS"),
        ]
    )
    return SipRequest(headers=headers, body=b"", method="OPTIONS", uri=f"sip:{host}:{port}")


class _Answer(asyncio.DatagramProtocol):
    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.status: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(SipParseError, ValueError):
            message = parse_message(data)
            final = isinstance(message, SipResponse) and message.status >= 200
            if final and message.call_id == self.call_id and not self.status.done():
                self.status.set_result(message.status)


async def probe(host: str, port: int, timeout: float = 1.0, source: str | None = None) -> int | None:
    """Send one OPTIONS over UDP to ``host:port`` from ``source`` (by default ``host``: a worker of this
    machine); the final status, or None without one in ``timeout``."""
    loop = asyncio.get_running_loop()
    local = (source or host, 0)
    transport, protocol = await loop.create_datagram_endpoint(lambda: _Answer(""), local_addr=local)
    try:
        request = options_request(host, port, transport.get_extra_info("sockname")[:2])
        protocol.call_id = request.call_id
        transport.sendto(request.serialize(), (host, port))
        try:
            return await asyncio.wait_for(asyncio.shield(protocol.status), timeout)
        except TimeoutError:
            return None
    finally:
        transport.close()


async def wait_until_ready(
    host: str, port: int, timeout: float, interval: float = 0.25, source: str | None = None
) -> bool:
    """Probe (from ``source``) until ``host:port`` answers 200; False when ``timeout`` passes first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        wait = min(1.0, max(0.05, deadline - loop.time()))
        if await probe(host, port, timeout=wait, source=source) == 200:
            return True
        await asyncio.sleep(interval)
    return False
