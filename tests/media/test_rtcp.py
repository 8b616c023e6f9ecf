import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parley.media.rtcp import (
    NTP_EPOCH_OFFSET,
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpError,
    SdesChunk,
    SenderReport,
    SourceDescription,
    UnknownRtcp,
    build_compound,
    ntp_middle32,
    ntp_timestamp,
    parse_compound,
    report_block,
)
from parley.media.rtp import ReceptionStats, RtpPacket, RtpSender

BLOCK = ReportBlock(0xAABBCCDD, 64, -5, 70000, 123, 0x12345678, 65536)


def test_report_block_round_trip_including_negative_cumulative_loss():
    data = BLOCK.serialize()
    assert len(data) == 24
    assert ReportBlock.parse_from(data, 0) == BLOCK
    assert data[4:8] == bytes([64, 0xFF, 0xFF, 0xFB])


def test_report_block_clamps_cumulative_loss_to_24_bits():
    big = ReportBlock(1, 300, 10**9, 0, -3, 0, 0)
    parsed = ReportBlock.parse_from(big.serialize(), 0)
    assert parsed.cumulative_lost == 0x7FFFFF and parsed.fraction_lost == 255 and parsed.jitter == 0
    small = ReportBlock(1, 0, -(10**9), 0, 0, 0, 0)
    assert ReportBlock.parse_from(small.serialize(), 0).cumulative_lost == -0x800000


def test_sender_report_round_trip_and_layout():
    sr = SenderReport(1, 2, 3, 4, 5, 6, (BLOCK,))
    data = sr.serialize()
    assert data[:4] == bytes([0x81, 200, 0, 12])
    assert len(data) == 52
    assert parse_compound(data) == [sr]


def test_receiver_report_round_trip_with_no_blocks_and_many():
    rr0 = ReceiverReport(7)
    assert rr0.serialize() == bytes([0x80, 201, 0, 1]) + struct.pack("!I", 7)
    rr = ReceiverReport(7, tuple(ReportBlock(i, i, i, i, i, i, i) for i in range(31)))
    assert parse_compound(rr.serialize()) == [rr]
    with pytest.raises(RtcpError):
        ReceiverReport(7, tuple(BLOCK for _ in range(32))).serialize()


def test_sdes_round_trip_and_padding():
    for name in ["", "a", "ab", "abc", "abcd", "user@example.com"]:
        sdes = SourceDescription(
            (SdesChunk(9, ((1, name.encode()),)), SdesChunk(10, ((1, b"x"), (6, b"tool"))))
        )
        data = sdes.serialize()
        assert len(data) % 4 == 0
        parsed = parse_compound(data)
        assert parsed == [sdes]
        assert parsed[0].chunks[0].cname == name
    assert SdesChunk(1, ((2, b"name"),)).cname is None


def test_sdes_rejects_oversized_items():
    with pytest.raises(RtcpError):
        SourceDescription((SdesChunk(1, ((1, b"x" * 256),)),)).serialize()


def test_bye_round_trip_with_and_without_reason():
    for bye in [Bye((1, 2)), Bye((3,), "done"), Bye((), ""), Bye((4,), "abc")]:
        data = bye.serialize()
        assert len(data) % 4 == 0
        assert parse_compound(data) == [bye]


def test_unknown_packet_types_are_kept():
    app = UnknownRtcp(204, 3, b"nameDATA")
    parsed = parse_compound(ReceiverReport(1).serialize() + app.serialize())
    assert parsed[1] == app


def test_build_compound_rr_when_nothing_sent():
    sender = RtpSender(ssrc=5)
    data = build_compound(5, "parley@host", [BLOCK], sender=sender)
    packets = parse_compound(data, strict=True)
    assert isinstance(packets[0], ReceiverReport) and packets[0].reports == (BLOCK,)
    assert isinstance(packets[1], SourceDescription) and packets[1].chunks[0].cname == "parley@host"
    assert packets[1].chunks[0].ssrc == 5


def test_build_compound_sr_after_sending_and_bye():
    sender = RtpSender(ssrc=5, timestamp=1000)
    for _ in range(3):
        sender.packet(b"\x00" * 160)
    data = build_compound(5, "c", (), sender=sender, unix_time=1_700_000_000.5, bye=True, bye_reason="hangup")
    sr, sdes, bye = parse_compound(data, strict=True)
    assert isinstance(sr, SenderReport)
    assert (sr.ssrc, sr.packet_count, sr.octet_count, sr.rtp_timestamp) == (5, 3, 480, 1480)
    assert sr.ntp_seconds == 1_700_000_000 + NTP_EPOCH_OFFSET
    assert sr.ntp_fraction == 1 << 31
    assert isinstance(sdes, SourceDescription)
    assert bye == Bye((5,), "hangup")


def test_ntp_helpers():
    assert ntp_timestamp(0.0) == (NTP_EPOCH_OFFSET, 0)
    sec, frac = ntp_timestamp(1.25)
    assert sec == NTP_EPOCH_OFFSET + 1 and frac == 1 << 30
    assert ntp_middle32(0x12345678, 0x9ABCDEF0) == 0x56789ABC
    assert SenderReport(1, 0x12345678, 0x9ABCDEF0, 0, 0, 0).ntp_middle == 0x56789ABC
    _s, f = ntp_timestamp(1.9999999999999998)
    assert 0 <= f < 1 << 32


def test_report_block_from_stats():
    stats = ReceptionStats()
    for seq in range(0, 101):
        if seq % 10 != 5:
            stats.update(RtpPacket(0, seq, seq * 160, 0xCAFE, b""), seq * 160)
    block = report_block(stats, now=10.5, last_sr=0x11112222, last_sr_received=10.0)
    assert block.ssrc == 0xCAFE
    assert block.extended_max_seq == 100
    assert block.cumulative_lost == 10
    assert block.fraction_lost == (10 << 8) // 100
    assert block.lsr == 0x11112222 and block.dlsr == 32768
    assert block.jitter == 0
    again = report_block(stats, now=11.0)
    assert again.fraction_lost == 0 and again.lsr == 0 and again.dlsr == 0


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\xc9\x00",
        bytes([0x40, 201, 0, 1]) + b"\x00" * 4,  # version 1
        bytes([0x80, 201, 0, 2]) + b"\x00" * 4,  # length beyond datagram
        bytes([0x80, 201, 0, 1]) + b"\x00" * 5,  # trailing garbage
        bytes([0x81, 201, 0, 1]) + b"\x00" * 4,  # RR claims a block it lacks
        bytes([0x80, 200, 0, 1]) + b"\x00" * 4,  # SR too short
        bytes([0x80, 201, 0, 0]),  # RR without SSRC
        bytes([0x80, 100, 0, 0]),  # not an RTCP type (RTP PT range)
        bytes([0xA0, 201, 0, 1]) + b"\x00" * 4,  # padding count 0
        bytes([0xA0, 201, 0, 1]) + b"\x00\x00\x00\x09",  # padding longer than packet
        bytes([0xA0, 201, 0, 1]) + b"\x00\x00\x00\x04" + ReceiverReport(1).serialize(),  # padding not last
        bytes([0x81, 202, 0, 1]) + b"\x00\x00\x00\x01",  # SDES chunk without END
        bytes([0x81, 202, 0, 2]) + b"\x00\x00\x00\x01" + b"\x01\x09ab\x00\x00\x00\x00"[:4],  # item truncated
        bytes([0x82, 203, 0, 1]) + b"\x00\x00\x00\x01",  # BYE list truncated
        bytes([0x81, 203, 0, 2]) + b"\x00\x00\x00\x01" + b"\x09abc",  # BYE reason truncated
    ],
)
def test_malformed_rejected(data):
    with pytest.raises(RtcpError):
        parse_compound(data)


def test_strict_requires_report_first():
    data = SourceDescription((SdesChunk(1, ((1, b"x"),)),)).serialize()
    assert len(parse_compound(data)) == 1
    with pytest.raises(RtcpError):
        parse_compound(data, strict=True)


def test_padding_in_last_packet_is_accepted():
    rr = ReceiverReport(1).serialize()
    padded = bytes([0xA0, 201, 0, 2]) + rr[4:] + b"\x00\x00\x00\x04"
    assert parse_compound(rr + padded) == [ReceiverReport(1), ReceiverReport(1)]


def test_rtcp_error_is_value_error():
    assert issubclass(RtcpError, ValueError)


@given(st.binary(max_size=120))
def test_parse_random_bytes_only_raises_rtcp_error(data):
    with contextlib.suppress(RtcpError):
        parse_compound(data)


@given(st.binary(min_size=4, max_size=60), st.integers(192, 223))
def test_parse_random_bodies_with_valid_headers(body, packet_type):
    body = body[: len(body) // 4 * 4]
    data = (
        bytes([0x80 | (body[0] & 0x1F) if body else 0x80, packet_type])
        + struct.pack("!H", len(body) // 4)
        + body
    )
    with contextlib.suppress(RtcpError):
        parse_compound(data)
