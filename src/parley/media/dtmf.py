"""RFC 4733 telephone-event (DTMF) payloads, receiver and sender.

Hand-written (sans-I/O, a 4-byte payload) because the interesting part is the event logic around
it: an event is identified by its RTP timestamp, the start packet may be lost and the end packet
is sent three times, so :class:`DtmfReceiver` reports each digit exactly once, as soon as the first
packet of a new event arrives (lowest latency for IVR menus), and keeps the event's duration up to
date until its end packet (or :meth:`DtmfReceiver.flush`) closes it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from parley.media.rtp import RtpPacket

DIGITS = "0123456789*#ABCD"
_EVENT_OF_DIGIT = {digit: event for event, digit in enumerate(DIGITS)}
_PAYLOAD = struct.Struct("!BBH")
END_REPEATS = 3


class DtmfError(ValueError):
    """A telephone-event payload is malformed, or a digit/parameter is not valid."""


def digit_to_event(digit: str) -> int:
    """Map "0"-"9", "*", "#", "A"-"D" to RFC 4733 events 0-15."""
    try:
        return _EVENT_OF_DIGIT[digit.upper()]
    except (KeyError, AttributeError):
        raise DtmfError(f"{digit!r} is not a DTMF digit") from None


def event_to_digit(event: int) -> str | None:
    """Map RFC 4733 events 0-15 to their digit; None for other events (flash, tones)."""
    return DIGITS[event] if 0 <= event < 16 else None


@dataclass(slots=True)
class DtmfPayload:
    """One telephone-event payload: event code, end bit, volume (-dBm0) and duration (samples)."""

    event: int
    end: bool
    volume: int
    duration: int

    @classmethod
    def parse(cls, data: bytes) -> DtmfPayload:
        """Parse the first 4 bytes of a telephone-event payload; raise :class:`DtmfError` if short."""
        if len(data) < 4:
            raise DtmfError(f"telephone-event payload too short ({len(data)} bytes)")
        event, flags, duration = _PAYLOAD.unpack_from(data)
        return cls(event, flags >= 0x80, flags & 0x3F, duration)

    def serialize(self) -> bytes:
        """Encode the 4-byte payload."""
        if not (0 <= self.event <= 255 and 0 <= self.volume <= 63 and 0 <= self.duration <= 0xFFFF):
            raise DtmfError("telephone-event field out of range")
        return _PAYLOAD.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


@dataclass(slots=True)
class DtmfEvent:
    """A received event: its digit, RTP timestamp, duration so far (samples) and whether it ended."""

    digit: str
    timestamp: int
    duration: int
    volume: int
    ended: bool = False
    clock_rate: int = 8000

    @property
    def duration_ms(self) -> float:
        """Duration in milliseconds."""
        return self.duration * 1000.0 / self.clock_rate


class DtmfReceiver:
    """Turns telephone-event RTP packets (of one negotiated payload type) into digits.

    ``feed`` returns a digit once per event, on the first packet seen for a new event timestamp;
    later packets of the event (including the repeated end packets) only update ``current``.
    Packets of an older event (reordered or retransmitted after a newer one started) are ignored.
    An SSRC change starts afresh.
    """

    __slots__ = ("_ssrc", "clock_rate", "current")

    def __init__(self, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self.current: DtmfEvent | None = None
        self._ssrc: int | None = None

    def feed(self, packet: RtpPacket) -> str | None:
        """Process one telephone-event packet; return the digit if it starts a new event."""
        try:
            payload = DtmfPayload.parse(packet.payload)
        except DtmfError:
            return None
        digit = event_to_digit(payload.event)
        if digit is None:
            return None
        current = self.current
        if packet.ssrc != self._ssrc:
            self._ssrc = packet.ssrc
            current = None
        if current is not None:
            delta = ((packet.timestamp - current.timestamp + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            if delta == 0:
                if payload.duration > current.duration:
                    current.duration = payload.duration
                if payload.end:
                    current.ended = True
                return None
            if delta < 0:
                return None  # a packet of an earlier event
            current.ended = True  # its end packets were lost
        self.current = DtmfEvent(
            digit, packet.timestamp, payload.duration, payload.volume, payload.end, self.clock_rate
        )
        return digit

    def flush(self, now_ts: int | None = None, timeout: int = 800) -> DtmfEvent | None:
        """Close the current event if its end packets never came; return it if this call closed it.

        Without ``now_ts`` the event is closed unconditionally (call ending, audio resumed). With
        ``now_ts`` (the sender's RTP clock, e.g. the latest audio packet's timestamp) it is closed
        only once ``timeout`` samples have passed since the event's last known instant.
        """
        current = self.current
        if current is None or current.ended:
            return None
        if now_ts is not None:
            elapsed = ((now_ts - current.timestamp - current.duration + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            if elapsed < timeout:
                return None
        current.ended = True
        return current


def dtmf_payloads(
    digit: str, duration_ms: int = 100, volume: int = 10, frame_ms: int = 20, clock_rate: int = 8000
) -> list[tuple[bytes, bool]]:
    """Payloads (and marker bits) to send for one digit, one per ``frame_ms`` tick.

    All go out with the same RTP timestamp (the event start, see ``RtpSender.packet_at``); the
    duration grows by one frame per packet and the final (end) payload is repeated three times.
    """
    event = digit_to_event(digit)
    if duration_ms <= 0 or frame_ms <= 0:
        raise DtmfError("duration and frame length must be positive")
    frame = clock_rate * frame_ms // 1000
    total = clock_rate * duration_ms // 1000
    if total > 0xFFFF:
        raise DtmfError("event too long for one telephone-event segment")
    ticks = -(-total // frame)
    out = [(DtmfPayload(event, False, volume, (i + 1) * frame).serialize(), i == 0) for i in range(ticks - 1)]
    end = DtmfPayload(event, True, volume, total).serialize()
    out.extend((end, not out and i == 0) for i in range(END_REPEATS))
    return out
