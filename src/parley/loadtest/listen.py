"""The per-packet part of a scripted caller: arrival figures, reception statistics and speech energy.

Every datagram of every load-test call passes here (50 a second per call, 100,000 at 2,000
calls), so it is compiled by Cython like the media hot path (``listen.pxd``, ``setup.py``).
A plain audio frame from the call's latched source — nearly every packet — is handled here
entirely, in C: its header updates the stream's reception figures (loss, jitter: the record's
``rtp`` object) and its payload is tested for speech on the encoded bytes. It never reaches the
stream's jitter buffer, since no one listens to a load-test call's decoded audio: that skips a
copy, a jitter-buffer slot, a decode and a delivery per packet, and makes no Python object. Any
other datagram (the first ones, before the stream has latched, DTMF, odd sizes, junk) goes to
the stream's own ``receive``. The Python side is called only for a loud packet
(:attr:`PacketTap.on_loud`), which is where prompt detection and reply timing live.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from parley.media.g711 import FRAME_SAMPLES

if TYPE_CHECKING:
    from parley.media.stream import RtpStream

CLOCK_RATE = 8000
PLAIN_FRAME = 12 + FRAME_SAMPLES  # a 20 ms G.711 frame behind a header without CSRCs or extension


class PacketTap:
    """Sees each RTP datagram of ``stream`` (as its socket's handler): ``tap(data, source, arrival)``."""

    def __init__(
        self, stream: RtpStream, quiet: bytes, on_loud: Callable[[float], None], gap_s: float
    ) -> None:
        """``quiet``: the G.711 byte values that are not speech; ``on_loud(arrival)`` for the others."""
        self.stream = stream
        self.payload_type = stream.payload_type
        loud = bytearray(b"\x01" * 256)
        for value in quiet:
            loud[value] = 0
        self._loud = bytes(loud)
        self.on_loud = on_loud
        self.gap_s = gap_s
        self.packets = 0  # packets of the call's audio payload type
        self.gaps = 0  # inter-arrival intervals longer than gap_s
        self.last_arrival = -1.0

    def __call__(self, data: bytes, source: tuple[str, int], arrival: float) -> None:
        if not self.feed(data, source, arrival):
            self.stream.receive(data, source, arrival)

    def feed(self, data: bytes, source: tuple[str, int], arrival: float) -> bool:
        """Count the packet and test it for speech; True when it was a plain frame taken here whole."""
        size = len(data)
        if size <= 12 or (data[1] & 0x7F) != self.payload_type:
            return False
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
                break
        return self._received(data, source, arrival)

    def _received(self, data: bytes, source: tuple[str, int], arrival: float) -> bool:
        """The stream's receive for a plain frame from its latched source, less the jitter buffer."""
        stream = self.stream
        latched = stream.latched
        if len(data) != PLAIN_FRAME or data[0] != 0x80 or not stream.receiving or latched is None:
            return False
        if source is not latched and source != latched:
            return False  # a stranger: the stream counts it
        stream.packets_in += 1
        stream.last_rx = arrival
        sequence = (data[2] << 8) | data[3]
        timestamp = data[4]  # widened to 64 bits first: compiled, a byte << 24 is a C int
        timestamp = (timestamp << 24) | (data[5] << 16) | (data[6] << 8) | data[7]
        ssrc = data[8]
        ssrc = (ssrc << 24) | (data[9] << 16) | (data[10] << 8) | data[11]
        stream.reception.update_header(
            sequence, timestamp, ssrc, int((arrival - stream.started) * CLOCK_RATE)
        )
        return True
