"""RFC 3550 RTP: packet parsing/serialisation, per-stream sender state and reception statistics.

Sans-I/O and hand-written on ``struct`` because every call carries 50 packets/s each way and the
server must hold 1,000 calls on one core: parsing is a single ``unpack_from`` of the fixed header,
and no general-purpose RTP library offers a cheap path plus the RFC 3550 Appendix A.1/A.3/A.8
receiver algorithms (sequence validation, loss and interarrival jitter) this module implements.
Compiled with Cython, typed by ``rtp.pxd``, for the same reason (see :mod:`parley.media.stream`);
the receive path feeds :meth:`ReceptionStats.update_header` the header fields it parsed itself.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass

_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")
_CSRC_STRUCTS = tuple(struct.Struct(f"!{n}I") for n in range(16))

RTP_VERSION = 2
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
_MASK64 = 0xFFFFFFFFFFFFFFFF
_ONE = 1  # typed unsigned 64-bit in rtp.pxd, so shifts of it stay in C


class RtpError(ValueError):
    """A datagram is not a well-formed RTP packet, or a packet cannot be serialised."""


@dataclass(slots=True)
class RtpPacket:
    """One RTP data packet; header extensions are skipped and padding is stripped on parse."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse a datagram; raise :class:`RtpError` if it is not a valid RTP version 2 packet."""
        size = len(data)
        if size < 12:
            raise RtpError(f"RTP packet too short ({size} bytes)")
        b0, b1, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        if b0 == 0x80:  # fast path: version 2, no padding, extension or CSRCs
            payload = data[12:]
            if type(payload) is not bytes:
                payload = bytes(payload)
            return cls(b1 & 0x7F, sequence, timestamp, ssrc, payload, b1 >= 0x80)
        if b0 >> 6 != RTP_VERSION:
            raise RtpError(f"unsupported RTP version {b0 >> 6}")
        offset = 12
        csrcs: tuple[int, ...] = ()
        count = b0 & 0x0F
        if count:
            offset += 4 * count
            if size < offset:
                raise RtpError("RTP packet truncated in CSRC list")
            csrcs = _CSRC_STRUCTS[count].unpack_from(data, 12)
        if b0 & 0x10:
            if size < offset + 4:
                raise RtpError("RTP packet truncated in header extension")
            offset += 4 + 4 * _EXT_HEADER.unpack_from(data, offset)[1]
            if size < offset:
                raise RtpError("RTP header extension longer than packet")
        end = size
        if b0 & 0x20:
            padding = data[-1]
            if padding == 0 or offset + padding > size:
                raise RtpError(f"invalid RTP padding length {padding}")
            end -= padding
        payload = data[offset:end]
        if type(payload) is not bytes:
            payload = bytes(payload)
        return cls(b1 & 0x7F, sequence, timestamp, ssrc, payload, b1 >= 0x80, csrcs)

    def serialize(self) -> bytes:
        """Encode the packet (no padding, no extension); sequence/timestamp are taken modulo 2^16/2^32."""
        count = len(self.csrcs)
        if count > 15:
            raise RtpError("at most 15 CSRCs fit in an RTP header")
        if not 0 <= self.payload_type <= 127:
            raise RtpError(f"payload type {self.payload_type} out of range")
        header = _HEADER.pack(
            0x80 | count,
            self.payload_type | 0x80 if self.marker else self.payload_type,
            self.sequence & 0xFFFF,
            self.timestamp & 0xFFFFFFFF,
            self.ssrc & 0xFFFFFFFF,
        )
        if count:
            header += _CSRC_STRUCTS[count].pack(*self.csrcs)
        return header + self.payload


class RtpSender:
    """Outgoing state of one RTP stream: SSRC, next sequence number and timestamp, RTCP counters."""

    __slots__ = ("octets_sent", "packets_sent", "payload_type", "sequence", "ssrc", "timestamp")

    def __init__(
        self,
        payload_type: int = 0,
        ssrc: int | None = None,
        sequence: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        self.payload_type = payload_type
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc & 0xFFFFFFFF
        self.sequence = secrets.randbits(16) if sequence is None else sequence & 0xFFFF
        self.timestamp = secrets.randbits(32) if timestamp is None else timestamp & 0xFFFFFFFF
        self.packets_sent = 0
        self.octets_sent = 0

    def packet(
        self, payload: bytes, samples: int = 160, marker: bool = False, payload_type: int | None = None
    ) -> bytes:
        """Build the next packet, then advance the sequence by 1 and the timestamp by ``samples``."""
        pt = self.payload_type if payload_type is None else payload_type
        data = _HEADER.pack(0x80, pt | 0x80 if marker else pt, self.sequence, self.timestamp, self.ssrc)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return data + payload

    def packet_at(
        self, payload: bytes, timestamp: int, marker: bool = False, payload_type: int | None = None
    ) -> bytes:
        """Build the next packet with an explicit ``timestamp``; only the sequence number advances.

        Used for RFC 4733 events, whose packets all carry the event's start timestamp while the
        stream clock keeps running (advance it with :meth:`advance`).
        """
        pt = self.payload_type if payload_type is None else payload_type
        data = _HEADER.pack(
            0x80, pt | 0x80 if marker else pt, self.sequence, timestamp & 0xFFFFFFFF, self.ssrc
        )
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return data + payload

    def advance(self, samples: int) -> None:
        """Advance the stream timestamp without sending (time spent in an event or silence)."""
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF


class ReceptionStats:
    """Receiver statistics for one remote source (RFC 3550 A.1 validation, A.3 loss, A.8 jitter).

    ``update`` returns False while a new source is on probation (the first ``min_sequential - 1``
    packets) and for packets after a large sequence jump that is not (yet) confirmed as a restart.
    Duplicates are valid and, as RFC 3550 6.4.1 requires, counted in ``received`` (so ``lost`` can
    go negative); they are also counted in ``duplicates``. A packet from a different SSRC resets the
    statistics to that new source. Packets repeating the previous packet's timestamp (RFC 4733 event
    continuations) do not feed the jitter estimate.
    """

    __slots__ = (
        "_bad_seq",
        "_base_seq",
        "_cycles",
        "_expected_prior",
        "_have_transit",
        "_jitter",
        "_last_ts",
        "_max_seq",
        "_probation",
        "_received",
        "_received_prior",
        "_seen",
        "_ssrc",
        "_transit",
        "clock_rate",
        "duplicates",
        "min_sequential",
        "out_of_order",
    )

    def __init__(self, clock_rate: int = 8000, min_sequential: int = MIN_SEQUENTIAL) -> None:
        self.clock_rate = clock_rate
        self.min_sequential = max(1, min_sequential)
        self._ssrc = -1  # no source yet (SSRCs are unsigned)
        self._reset()

    def _reset(self) -> None:
        self._probation = 0
        self._base_seq = 0
        self._max_seq = 0
        self._bad_seq = SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._seen = 0  # bit i: extended_max_seq - i was received (duplicate detection)
        self._transit = 0
        self._have_transit = False
        self._last_ts = -1  # no packet yet (timestamps are unsigned)
        self._jitter = 0.0
        self.duplicates = 0
        self.out_of_order = 0

    def _init_seq(self, seq: int) -> None:
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._seen = 1

    def update(self, packet: RtpPacket, arrival_ts: int) -> bool:
        """Account for ``packet`` arriving at ``arrival_ts`` (local clock, RTP timestamp units)."""
        return self.update_header(packet.sequence, packet.timestamp, packet.ssrc, arrival_ts)

    def update_header(self, seq: int, timestamp: int, ssrc: int, arrival_ts: int) -> bool:
        """:meth:`update` from the header fields alone (the receive path's way, no packet object)."""
        if ssrc != self._ssrc:
            self._ssrc = ssrc
            self._reset()
            self._max_seq = (seq - 1) & 0xFFFF
            self._probation = self.min_sequential
        if timestamp != self._last_ts:  # RFC 3550 A.8 interarrival jitter
            self._last_ts = timestamp
            transit = arrival_ts - timestamp
            if self._have_transit:
                d = ((transit - self._transit + 0x80000000) & 0xFFFFFFFF) - 0x80000000
                if d < 0:
                    d = -d
                self._jitter += (d - self._jitter) / 16.0
            self._transit = transit
            self._have_transit = True
        max_seq = self._max_seq
        udelta = (seq - max_seq) & 0xFFFF
        if self._probation:
            if udelta == 1:
                self._probation -= 1
                self._max_seq = seq
                if self._probation == 0:
                    self._init_seq(seq)
                    self._received = 1
                    return True
            else:
                self._probation = self.min_sequential - 1
                self._max_seq = seq
            return False
        if udelta == 0:
            self.duplicates += 1
        elif udelta < MAX_DROPOUT:
            if seq < max_seq:
                self._cycles += SEQ_MOD
            self._max_seq = seq
            self._seen = ((self._seen << udelta) | 1) & _MASK64 if udelta < 64 else 1
        elif udelta <= SEQ_MOD - MAX_MISORDER:
            if seq == self._bad_seq:
                self._init_seq(seq)  # two sequential packets: the source restarted
            else:
                self._bad_seq = (seq + 1) & 0xFFFF
                return False
        else:
            back = SEQ_MOD - udelta
            if back < 64 and (self._seen >> back) & 1:
                self.duplicates += 1
            else:
                self.out_of_order += 1
                if back < 64:
                    self._seen |= _ONE << back
        self._received += 1
        return True

    @property
    def ssrc(self) -> int | None:
        """SSRC of the source the statistics are about (None before the first packet)."""
        return None if self._ssrc < 0 else self._ssrc

    @property
    def received(self) -> int:
        """Packets received from the validated source (duplicates included)."""
        return self._received

    @property
    def extended_max_seq(self) -> int:
        """Highest sequence number received, extended with the wrap-around cycle count."""
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        """Packets expected since the source was validated (0 while on probation)."""
        if self._ssrc < 0 or self._probation:
            return 0
        return self._cycles + self._max_seq - self._base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (expected - received; negative when duplicates outnumber losses)."""
        return self.expected - self._received

    def fraction_lost(self) -> int:
        """Fraction lost since the previous call, 8-bit fixed point (0-255); starts a new interval."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        self._expected_prior = expected
        received_interval = self._received - self._received_prior
        self._received_prior = self._received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            return 0
        return min(255, (lost_interval << 8) // expected_interval)

    @property
    def jitter(self) -> float:
        """Interarrival jitter estimate in RTP timestamp units."""
        return self._jitter

    @property
    def jitter_ms(self) -> float:
        """Interarrival jitter estimate in milliseconds."""
        return self._jitter * 1000.0 / self.clock_rate
