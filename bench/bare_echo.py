"""Baseline for ``calls_per_core.py``: the least a uvloop process can do to echo calls.

It answers INVITE with a canned 200 OK (no transactions, no dialogs, no jitter buffer, no
clock) and bounces each RTP datagram straight back from a per-call socket. Parley's
figures are reported as a ratio to this one.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal

import uvloop

HEADERS = re.compile(rb"^(Via|From|To|Call-ID|CSeq):.*$", re.MULTILINE | re.IGNORECASE)


class RtpBounce(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


class BareSip(asyncio.DatagramProtocol):
    def __init__(self, host: str) -> None:
        self.host = host
        self.calls: dict[bytes, asyncio.BaseTransport] = {}
        self.next_port = 40000
        self.tasks: set[asyncio.Task] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        task = asyncio.ensure_future(self.handle(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def handle(self, data: bytes, addr: tuple) -> None:
        method = data.split(b" ", 1)[0]
        if method == b"ACK" or data.startswith(b"SIP/"):
            return
        lines = [m.group(0).rstrip(b"\r") for m in HEADERS.finditer(data)]
        call_id = next((line for line in lines if line.lower().startswith(b"call-id")), b"")
        body = b""
        if method == b"INVITE" and call_id not in self.calls:
            loop = asyncio.get_running_loop()
            self.next_port += 2
            transport, _ = await loop.create_datagram_endpoint(
                RtpBounce, local_addr=(self.host, self.next_port)
            )
            self.calls[call_id] = transport
            body = (
                f"v=0\r\no=- 1 1 IN IP4 {self.host}\r\ns=-\r\nc=IN IP4 {self.host}\r\nt=0 0\r\n"
                f"m=audio {self.next_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            ).encode()
        elif method == b"BYE" and call_id in self.calls:
            self.calls.pop(call_id).close()
        out = [b"SIP/2.0 200 OK"]
        for line in lines:
            out.append(
                line + b";tag=bare" if line.lower().startswith(b"to:") and b"tag=" not in line else line
            )
        out.append(f"Contact: <sip:bare@{self.host}>".encode())
        if body:
            out.append(b"Content-Type: application/sdp")
        out.append(b"Content-Length: %d" % len(body))
        self.transport.sendto(b"\r\n".join(out) + b"\r\n\r\n" + body, addr)  # type: ignore[attr-defined]


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: BareSip(host), local_addr=(host, port))
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("bare echo ready", flush=True)
    await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5099)
    args = parser.parse_args()
    uvloop.run(main(args.host, args.port))
