"""The per-packet part of a scripted caller: arrival figures and speech energy, then the stream.

Every datagram of every load-test call passes here (50 a second per call, 50,000 at 1,000
calls), so it is compiled by Cython like the media hot path (``listen.pxd``, ``setup.py``):
interpreted, this tap cost more than the rest of the load tester's receive path together, and
at 1,000 calls a tick's backlog grew faster than it drained. The Python side is called only for
a loud packet (:attr:`PacketTap.on_loud`), which is where prompt detection and reply timing live.
"""

from __future__ import annotations

from collections.abc import Callable

Handler = Callable[[bytes, tuple[str, int], float], None]


class PacketTap:
    """Sees each RTP datagram before the stream does (``handler(data, source, arrival)``)."""

    def __init__(
        self,
        payload_type: int,
        quiet: bytes,
        receive: Handler,
        on_loud: Callable[[float], None],
        gap_s: float,
    ) -> None:
        """``quiet``: the G.711 byte values that are not speech; ``on_loud(arrival)`` for the others."""
        self.payload_type = payload_type
        loud = bytearray(b"\x01" * 256)
        for value in quiet:
            loud[value] = 0
        self._loud = bytes(loud)
        self.receive = receive
        self.on_loud = on_loud
        self.gap_s = gap_s
        self.packets = 0  # packets of the call's audio payload type
        self.gaps = 0  # inter-arrival intervals longer than gap_s
        self.last_arrival = -1.0

    def __call__(self, data: bytes, source: tuple[str, int], arrival: float) -> None:
        self.feed(data, arrival)
        self.receive(data, source, arrival)

    def feed(self, data: bytes, arrival: float) -> None:
        """Count the packet and test its payload for speech."""
        size = len(data)
        if size <= 12 or (data[1] & 0x7F) != self.payload_type:
            return
        self.packets += 1
        if self.last_arrival >= 0.0 and arrival - self.last_arrival > self.gap_s:
            self.gaps += 1
        self.last_arrival = arrival
        header = 12 + 4 * (data[0] & 0x0F)
        if data[0] & 0x10 and size >= header + 4:  # header extension
            header += 4 + 4 * ((data[header + 2] << 8) | data[header + 3])
        loud = self._loud
        for k in range(header, size):
            if loud[data[k]]:
                self.on_loud(arrival)
                return
