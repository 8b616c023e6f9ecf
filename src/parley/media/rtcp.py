"""RFC 3550 RTCP: sender/receiver reports, SDES, BYE and compound packets.

Hand-written on ``struct`` (sans-I/O, no dependencies): the session needs only the handful of
packet types RFC 3550 defines, built from its own :class:`~parley.media.rtp.RtpSender` and
:class:`~parley.media.rtp.ReceptionStats`, and a parser that never raises anything but
:class:`RtcpError` on hostile input. Packet types other than SR/RR/SDES/BYE (APP, XR, feedback)
are returned as :class:`UnknownRtcp` rather than rejected.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

from parley.media.rtp import ReceptionStats, RtpSender

SR = 200
RR = 201
SDES = 202
BYE = 203
APP = 204

SDES_END = 0
SDES_CNAME = 1

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01

_COMMON = struct.Struct("!BBH")
_SENDER_INFO = struct.Struct("!IIIIII")  # SSRC, NTP sec, NTP frac, RTP ts, packets, octets
_BLOCK = struct.Struct("!IIIIII")  # SSRC, fraction|cumulative, ext seq, jitter, LSR, DLSR
_SSRC = struct.Struct("!I")


class RtcpError(ValueError):
    """An RTCP packet or compound packet is malformed, or a report cannot be serialised."""


@dataclass(slots=True)
class ReportBlock:
    """A reception report block about one source."""

    ssrc: int
    fraction_lost: int  # 8-bit fixed point
    cumulative_lost: int  # 24-bit signed
    extended_max_seq: int
    jitter: int  # RTP timestamp units
    lsr: int = 0  # middle 32 bits of the last SR's NTP timestamp
    dlsr: int = 0  # delay since that SR, in 1/65536 s

    def serialize(self) -> bytes:
        """Encode the 24-byte block (cumulative loss clamped to the 24-bit signed range)."""
        lost = max(-0x800000, min(0x7FFFFF, self.cumulative_lost)) & 0xFFFFFF
        return _BLOCK.pack(
            self.ssrc & 0xFFFFFFFF,
            (max(0, min(255, self.fraction_lost)) << 24) | lost,
            self.extended_max_seq & 0xFFFFFFFF,
            max(0, min(0xFFFFFFFF, self.jitter)),
            self.lsr & 0xFFFFFFFF,
            max(0, min(0xFFFFFFFF, self.dlsr)),
        )

    @classmethod
    def parse_from(cls, data: bytes, offset: int) -> ReportBlock:
        """Decode the block at ``offset`` (the caller checks the length)."""
        ssrc, lost_word, ext_seq, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(ssrc, lost_word >> 24, lost, ext_seq, jitter, lsr, dlsr)


def _header(padding_count: int, packet_type: int, body: bytes) -> bytes:
    if len(body) % 4:
        raise RtcpError("RTCP packet body is not a multiple of 32 bits")
    return _COMMON.pack(0x80 | padding_count, packet_type, len(body) // 4) + body


def _blocks(reports: Sequence[ReportBlock]) -> bytes:
    if len(reports) > 31:
        raise RtcpError("at most 31 report blocks fit in one SR/RR")
    return b"".join(block.serialize() for block in reports)


@dataclass(slots=True)
class SenderReport:
    """SR: sender information plus reception report blocks."""

    ssrc: int
    ntp_seconds: int
    ntp_fraction: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    def serialize(self) -> bytes:
        """Encode the SR packet."""
        body = _SENDER_INFO.pack(
            self.ssrc & 0xFFFFFFFF,
            self.ntp_seconds & 0xFFFFFFFF,
            self.ntp_fraction & 0xFFFFFFFF,
            self.rtp_timestamp & 0xFFFFFFFF,
            self.packet_count & 0xFFFFFFFF,
            self.octet_count & 0xFFFFFFFF,
        )
        return _header(len(self.reports), SR, body + _blocks(self.reports))

    @property
    def ntp_middle(self) -> int:
        """Middle 32 bits of the NTP timestamp: the LSR value a receiver echoes back."""
        return ntp_middle32(self.ntp_seconds, self.ntp_fraction)


@dataclass(slots=True)
class ReceiverReport:
    """RR: reception report blocks from a participant that has not sent RTP."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def serialize(self) -> bytes:
        """Encode the RR packet."""
        return _header(len(self.reports), RR, _SSRC.pack(self.ssrc & 0xFFFFFFFF) + _blocks(self.reports))


@dataclass(slots=True)
class SdesChunk:
    """The SDES items (type, value) describing one source."""

    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()

    @property
    def cname(self) -> str | None:
        """The CNAME item, decoded as UTF-8 (None when absent)."""
        for kind, value in self.items:
            if kind == SDES_CNAME:
                return value.decode("utf-8", "replace")
        return None


@dataclass(slots=True)
class SourceDescription:
    """SDES packet: one chunk per source."""

    chunks: tuple[SdesChunk, ...] = ()

    def serialize(self) -> bytes:
        """Encode the SDES packet."""
        if len(self.chunks) > 31:
            raise RtcpError("at most 31 SDES chunks fit in one packet")
        parts = []
        for chunk in self.chunks:
            data = bytearray(_SSRC.pack(chunk.ssrc & 0xFFFFFFFF))
            for kind, value in chunk.items:
                if not 1 <= kind <= 255 or len(value) > 255:
                    raise RtcpError("SDES item type must be 1-255 and its value at most 255 bytes")
                data += bytes((kind, len(value))) + value
            data += b"\x00" * (4 - len(data) % 4)  # END item plus padding to 32 bits
            parts.append(bytes(data))
        return _header(len(self.chunks), SDES, b"".join(parts))


@dataclass(slots=True)
class Bye:
    """BYE: the listed sources are leaving, with an optional reason."""

    ssrcs: tuple[int, ...] = ()
    reason: str | None = None

    def serialize(self) -> bytes:
        """Encode the BYE packet."""
        if len(self.ssrcs) > 31:
            raise RtcpError("at most 31 sources fit in one BYE")
        body = b"".join(_SSRC.pack(s & 0xFFFFFFFF) for s in self.ssrcs)
        if self.reason is not None:
            text = self.reason.encode("utf-8")[:255]
            body += bytes((len(text),)) + text
            body += b"\x00" * (-len(body) % 4)
        return _header(len(self.ssrcs), BYE, body)


@dataclass(slots=True)
class UnknownRtcp:
    """A packet of a type this module does not interpret (APP, XR, feedback, ...)."""

    packet_type: int
    count: int
    body: bytes

    def serialize(self) -> bytes:
        """Re-encode the packet unchanged."""
        return _header(self.count & 0x1F, self.packet_type, self.body)


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | UnknownRtcp


def _parse_blocks(body: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    if offset + 24 * count > len(body):
        raise RtcpError("RTCP report blocks truncated")
    return tuple(ReportBlock.parse_from(body, offset + 24 * i) for i in range(count))


def _parse_sdes(body: bytes, count: int) -> SourceDescription:
    chunks = []
    offset = 0
    size = len(body)
    for _ in range(count):
        if offset + 4 > size:
            raise RtcpError("SDES chunk truncated")
        (ssrc,) = _SSRC.unpack_from(body, offset)
        offset += 4
        items = []
        while True:
            if offset >= size:
                raise RtcpError("SDES chunk lacks an END item")
            kind = body[offset]
            if kind == SDES_END:
                offset = (offset + 4) & ~3  # skip END and the padding to the next 32-bit boundary
                break
            if offset + 2 > size or offset + 2 + body[offset + 1] > size:
                raise RtcpError("SDES item truncated")
            length = body[offset + 1]
            items.append((kind, bytes(body[offset + 2 : offset + 2 + length])))
            offset += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return SourceDescription(tuple(chunks))


def _parse_bye(body: bytes, count: int) -> Bye:
    end = 4 * count
    if end > len(body):
        raise RtcpError("BYE source list truncated")
    ssrcs = struct.unpack_from(f"!{count}I", body)
    reason = None
    if end < len(body):
        length = body[end]
        if end + 1 + length > len(body):
            raise RtcpError("BYE reason truncated")
        reason = bytes(body[end + 1 : end + 1 + length]).decode("utf-8", "replace")
    return Bye(ssrcs, reason)


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    if packet_type == SR:
        if len(body) < 24:
            raise RtcpError("SR too short")
        ssrc, ntp_sec, ntp_frac, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body)
        return SenderReport(ssrc, ntp_sec, ntp_frac, rtp_ts, packets, octets, _parse_blocks(body, 24, count))
    if packet_type == RR:
        if len(body) < 4:
            raise RtcpError("RR too short")
        return ReceiverReport(_SSRC.unpack_from(body)[0], _parse_blocks(body, 4, count))
    if packet_type == SDES:
        return _parse_sdes(body, count)
    if packet_type == BYE:
        return _parse_bye(body, count)
    return UnknownRtcp(packet_type, count, bytes(body))


def parse_compound(data: bytes, strict: bool = False) -> list[RtcpPacket]:
    """Parse a (compound) RTCP datagram into its packets; raise :class:`RtcpError` if malformed.

    Checks the RFC 3550 A.2 rules: version 2, lengths adding up to the datagram size and padding
    only in the last packet. With ``strict`` the first packet must also be an SR or RR (reduced-size
    RTCP, RFC 5506, relaxes that, so it is off by default).
    """
    size = len(data)
    if size < 4:
        raise RtcpError("RTCP packet too short")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < size:
        if offset + 4 > size:
            raise RtcpError("RTCP header truncated")
        first, packet_type, length = _COMMON.unpack_from(data, offset)
        if first >> 6 != 2:
            raise RtcpError(f"unsupported RTCP version {first >> 6}")
        if not 192 <= packet_type <= 223:
            raise RtcpError(f"{packet_type} is not an RTCP packet type")
        end = offset + 4 + 4 * length
        if end > size:
            raise RtcpError("RTCP length field exceeds the datagram")
        body_end = end
        if first & 0x20:
            if end != size:
                raise RtcpError("padding is only allowed in the last RTCP packet")
            padding = data[end - 1]
            if padding == 0 or padding > 4 * length:
                raise RtcpError(f"invalid RTCP padding length {padding}")
            body_end -= padding
        if strict and not packets and packet_type not in (SR, RR):
            raise RtcpError("a compound RTCP packet must start with an SR or RR")
        packets.append(_parse_one(packet_type, first & 0x1F, data[offset + 4 : body_end]))
        offset = end
    return packets


def ntp_timestamp(unix_time: float) -> tuple[int, int]:
    """Convert a Unix time to a 64-bit NTP timestamp (seconds, 32-bit fraction)."""
    seconds = int(unix_time)
    fraction = int((unix_time - seconds) * 4294967296.0)
    if fraction >= 1 << 32:  # rounding at the very end of a second
        seconds, fraction = seconds + 1, 0
    return (seconds + NTP_EPOCH_OFFSET) & 0xFFFFFFFF, fraction


def ntp_middle32(seconds: int, fraction: int) -> int:
    """The middle 32 bits of an NTP timestamp (LSR field of a report block)."""
    return ((seconds & 0xFFFF) << 16) | (fraction >> 16)


def report_block(
    stats: ReceptionStats, now: float, last_sr: int = 0, last_sr_received: float | None = None
) -> ReportBlock:
    """Build a report block about ``stats``'s source and start a new loss interval.

    ``last_sr`` is the middle 32 bits of the NTP timestamp of the last SR received from that source
    (``SenderReport.ntp_middle``), ``last_sr_received`` the local time in seconds it arrived and
    ``now`` the current time on the same clock; DLSR is 0 when no SR has been received.
    """
    dlsr = 0
    if last_sr and last_sr_received is not None:
        dlsr = max(0, int((now - last_sr_received) * 65536.0))
    return ReportBlock(
        ssrc=stats.ssrc or 0,
        fraction_lost=stats.fraction_lost(),
        cumulative_lost=stats.lost,
        extended_max_seq=stats.extended_max_seq,
        jitter=int(stats.jitter),
        lsr=last_sr & 0xFFFFFFFF,
        dlsr=dlsr,
    )


def build_compound(
    ssrc: int,
    cname: str,
    reports: Sequence[ReportBlock] = (),
    *,
    sender: RtpSender | None = None,
    unix_time: float | None = None,
    rtp_timestamp: int | None = None,
    bye: bool = False,
    bye_reason: str | None = None,
) -> bytes:
    """Build a compound RTCP packet: SR (when ``sender`` has sent RTP) or RR, SDES CNAME, optional BYE.

    The SR's RTP timestamp defaults to ``sender.timestamp`` (the stream clock "now") and its NTP
    time to ``unix_time`` (default: ``time.time()``).
    """
    report: SenderReport | ReceiverReport
    if sender is not None and sender.packets_sent:
        if unix_time is None:
            unix_time = time.time()
        ntp_sec, ntp_frac = ntp_timestamp(unix_time)
        report = SenderReport(
            ssrc,
            ntp_sec,
            ntp_frac,
            sender.timestamp if rtp_timestamp is None else rtp_timestamp,
            sender.packets_sent,
            sender.octets_sent,
            tuple(reports),
        )
    else:
        report = ReceiverReport(ssrc, tuple(reports))
    sdes = SourceDescription((SdesChunk(ssrc, ((SDES_CNAME, cname.encode("utf-8")),)),))
    data = report.serialize() + sdes.serialize()
    if bye:
        data += Bye((ssrc,), bye_reason).serialize()
    return data
