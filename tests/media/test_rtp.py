import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parley.media.rtp import ReceptionStats, RtpError, RtpPacket, RtpSender


def raw(
    pt=0, seq=1, ts=160, ssrc=0x11223344, payload=b"\xff" * 160, marker=False, csrcs=(), ext=None, padding=0
):
    b0 = 0x80 | len(csrcs) | (0x10 if ext is not None else 0) | (0x20 if padding else 0)
    data = struct.pack("!BBHII", b0, pt | (0x80 if marker else 0), seq, ts, ssrc)
    data += b"".join(struct.pack("!I", c) for c in csrcs)
    if ext is not None:
        data += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    data += payload
    if padding:
        data += b"\x00" * (padding - 1) + bytes([padding])
    return data


# -- RtpPacket ---------------------------------------------------------------------------------


def test_parse_basic():
    p = RtpPacket.parse(raw(pt=8, seq=65535, ts=0xFFFFFFFF, marker=True, payload=b"abc"))
    assert (p.payload_type, p.sequence, p.timestamp, p.ssrc, p.payload, p.marker, p.csrcs) == (
        8,
        65535,
        0xFFFFFFFF,
        0x11223344,
        b"abc",
        True,
        (),
    )
    assert isinstance(p.payload, bytes)


def test_parse_csrcs_extension_and_padding():
    data = raw(csrcs=(1, 2, 3), ext=b"\x10\xaa\x00\x00" * 2, padding=4, payload=b"hello")
    p = RtpPacket.parse(data)
    assert p.csrcs == (1, 2, 3)
    assert p.payload == b"hello"


def test_parse_empty_payload_and_memoryview():
    assert RtpPacket.parse(raw(payload=b"")).payload == b""
    p = RtpPacket.parse(memoryview(raw(payload=b"xyz")))
    assert p.payload == b"xyz" and type(p.payload) is bytes


def test_serialize_round_trip():
    p = RtpPacket(96, 1234, 5678, 42, b"\x01\x02", marker=True, csrcs=(7, 8))
    assert RtpPacket.parse(p.serialize()) == p
    assert p.serialize() == raw(
        pt=96, seq=1234, ts=5678, ssrc=42, payload=b"\x01\x02", marker=True, csrcs=(7, 8)
    )


def test_serialize_wraps_sequence_and_timestamp():
    p = RtpPacket(0, 65536 + 5, (1 << 32) + 7, 1, b"")
    q = RtpPacket.parse(p.serialize())
    assert (q.sequence, q.timestamp) == (5, 7)


@pytest.mark.parametrize(
    "bad",
    [
        RtpPacket(128, 0, 0, 0, b""),
        RtpPacket(-1, 0, 0, 0, b""),
        RtpPacket(0, 0, 0, 0, b"", csrcs=tuple(range(16))),
    ],
)
def test_serialize_rejects_out_of_range(bad):
    with pytest.raises(RtpError):
        bad.serialize()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x00",
        raw()[:11],
        b"\x40" + raw()[1:],  # version 1
        b"\x00" + raw()[1:],  # version 0
        b"\xc0" + raw()[1:],  # version 3
        raw(csrcs=(1, 2))[:16],  # CSRC list truncated
        raw(ext=b"\x00" * 8, payload=b"")[:18],  # extension truncated
        raw(ext=b"", payload=b"")[:14],  # extension header truncated
        bytes([0xA0]) + raw(payload=b"abc\x00")[1:],  # padding count 0
        bytes([0xA0]) + raw(payload=b"\x09")[1:],  # padding longer than payload
    ],
)
def test_parse_rejects_malformed(data):
    with pytest.raises(RtpError):
        RtpPacket.parse(data)


def test_rtp_error_is_value_error():
    assert issubclass(RtpError, ValueError)


@given(st.binary(max_size=80))
def test_parse_random_bytes_only_raises_rtp_error(data):
    try:
        p = RtpPacket.parse(data)
    except RtpError:
        return
    assert 0 <= p.payload_type <= 127 and len(p.payload) <= len(data) - 12


@given(
    st.integers(0, 127),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=200),
    st.booleans(),
    st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
)
def test_round_trip_property(pt, seq, ts, ssrc, payload, marker, csrcs):
    p = RtpPacket(pt, seq, ts, ssrc, payload, marker, tuple(csrcs))
    assert RtpPacket.parse(p.serialize()) == p


# -- RtpSender ---------------------------------------------------------------------------------


def test_sender_sequence_and_timestamp_advance_and_wrap():
    s = RtpSender(payload_type=8, ssrc=99, sequence=65534, timestamp=0xFFFFFF00)
    packets = [RtpPacket.parse(s.packet(b"\xd5" * 160)) for _ in range(3)]
    assert [p.sequence for p in packets] == [65534, 65535, 0]
    assert [p.timestamp for p in packets] == [0xFFFFFF00, 0xFFFFFFA0, 0x40]
    assert all(p.ssrc == 99 and p.payload_type == 8 for p in packets)
    assert (s.packets_sent, s.octets_sent) == (3, 480)
    assert s.sequence == 1 and s.timestamp == 0xE0


def test_sender_randomises_initial_state():
    senders = [RtpSender() for _ in range(8)]
    assert len({s.ssrc for s in senders}) > 1
    assert len({(s.sequence, s.timestamp) for s in senders}) > 1
    for s in senders:
        assert 0 <= s.ssrc < 1 << 32 and 0 <= s.sequence < 1 << 16 and 0 <= s.timestamp < 1 << 32


def test_sender_marker_payload_type_override_and_samples():
    s = RtpSender(payload_type=0, sequence=10, timestamp=1000)
    p = RtpPacket.parse(s.packet(b"x", samples=80, marker=True, payload_type=101))
    assert p.marker and p.payload_type == 101
    assert s.timestamp == 1080 and s.payload_type == 0
    s.payload_type = 8
    assert RtpPacket.parse(s.packet(b"y")).payload_type == 8


def test_sender_packet_at_keeps_timestamp():
    s = RtpSender(sequence=0, timestamp=5000)
    event_ts = s.timestamp
    packets = []
    for i in range(4):
        packets.append(
            RtpPacket.parse(s.packet_at(b"\x01\x0a\x00\xa0", event_ts, marker=i == 0, payload_type=101))
        )
        s.advance(160)
    assert [p.sequence for p in packets] == [0, 1, 2, 3]
    assert {p.timestamp for p in packets} == {5000}
    assert [p.marker for p in packets] == [True, False, False, False]
    assert s.timestamp == 5000 + 4 * 160
    nxt = RtpPacket.parse(s.packet(b"audio"))
    assert nxt.sequence == 4 and nxt.timestamp == 5640
    assert s.packets_sent == 5 and s.octets_sent == 4 * 4 + 5


# -- ReceptionStats ----------------------------------------------------------------------------


def pkt(seq, ts=None, ssrc=1):
    return RtpPacket(0, seq & 0xFFFF, (seq * 160 if ts is None else ts) & 0xFFFFFFFF, ssrc, b"")


def feed(stats, seqs, ssrc=1):
    return [stats.update(pkt(s, ssrc=ssrc), (s * 160)) for s in seqs]


def test_probation_then_valid():
    st_ = ReceptionStats()
    assert st_.expected == 0 and st_.received == 0 and st_.lost == 0
    assert feed(st_, [100]) == [False]
    assert st_.expected == 0
    assert feed(st_, [101, 102]) == [True, True]
    assert st_.received == 2 and st_.expected == 2 and st_.lost == 0
    assert st_.extended_max_seq == 102


def test_probation_restarts_on_non_sequential():
    st_ = ReceptionStats()
    assert feed(st_, [10, 20, 21]) == [False, False, True]
    assert st_.received == 1 and st_.extended_max_seq == 21


def test_min_sequential_one_accepts_first_packet():
    st_ = ReceptionStats(min_sequential=1)
    assert feed(st_, [7, 8]) == [True, True]
    assert st_.received == 2 and st_.expected == 2


def test_loss_counting_and_fraction_lost_intervals():
    st_ = ReceptionStats()
    feed(st_, range(0, 11))  # 0 on probation; 1..10 valid
    assert st_.fraction_lost() == 0
    feed(st_, [s for s in range(11, 111) if s % 4 != 0])  # lose 25 of 100
    assert st_.expected == 110 and st_.received == 85 and st_.lost == 25
    assert st_.fraction_lost() == 64  # 25 % in 1/256 units
    assert st_.fraction_lost() == 0  # empty interval
    feed(st_, range(111, 121))
    assert st_.fraction_lost() == 0
    assert st_.lost == 25


def test_wraparound_extends_sequence():
    st_ = ReceptionStats()
    seqs = [(65530 + i) for i in range(12)]
    assert all(feed(st_, seqs)[1:])
    assert st_.extended_max_seq == 65536 + 5
    assert st_.expected == 11 and st_.lost == 0


def test_duplicates_and_out_of_order():
    st_ = ReceptionStats()
    feed(st_, [0, 1, 2, 4, 3, 3, 4, 5, 5])
    assert st_.duplicates == 3
    assert st_.out_of_order == 1
    assert st_.expected == 5  # 1..5
    assert st_.received == 8  # duplicates count as received (RFC 3550 6.4.1)
    assert st_.lost == -3
    assert st_.fraction_lost() == 0


def test_large_jump_needs_two_sequential_packets():
    st_ = ReceptionStats()
    feed(st_, range(0, 10))
    assert feed(st_, [20000]) == [False]
    assert st_.extended_max_seq == 9
    assert feed(st_, [20001, 20002]) == [True, True]  # restart confirmed
    assert st_.extended_max_seq == 20002
    assert st_.expected == 2 and st_.received == 2


def test_stray_large_jump_is_ignored():
    st_ = ReceptionStats()
    feed(st_, range(0, 10))
    assert feed(st_, [40000, 10, 11]) == [False, True, True]
    assert st_.lost == 0 and st_.extended_max_seq == 11


def test_moderate_gap_counts_as_loss():
    st_ = ReceptionStats()
    feed(st_, [*list(range(0, 5)), 2000])
    assert st_.lost == 1995


def test_ssrc_change_resets():
    st_ = ReceptionStats()
    feed(st_, range(0, 50))
    feed(st_, [500, 501, 502], ssrc=2)
    assert st_.ssrc == 2 and st_.received == 2 and st_.lost == 0


def test_jitter_zero_for_perfect_arrival_and_rfc_formula():
    st_ = ReceptionStats()
    for s in range(100):
        st_.update(pkt(s), 1_000_000 + s * 160)
    assert st_.jitter == 0.0
    # delay alternating 0/40 samples: |D| = 40 for every packet -> J converges to 40
    st2 = ReceptionStats()
    for s in range(500):
        st2.update(pkt(s), s * 160 + (40 if s % 2 else 0))
    assert st2.jitter == pytest.approx(40.0, rel=1e-3)
    assert st2.jitter_ms == pytest.approx(5.0, rel=1e-3)


def test_jitter_single_step_matches_rfc():
    st_ = ReceptionStats()
    st_.update(pkt(0), 0)
    st_.update(pkt(1), 160 + 32)
    assert st_.jitter == pytest.approx(2.0)  # 32/16


def test_jitter_handles_timestamp_wrap():
    st_ = ReceptionStats()
    base = 0xFFFFFF00
    for s in range(10):
        st_.update(RtpPacket(0, s, (base + s * 160) & 0xFFFFFFFF, 1, b""), 7 + s * 160)
    assert st_.jitter == 0.0


def test_repeated_timestamps_do_not_feed_jitter():
    st_ = ReceptionStats()
    for s in range(5):
        st_.update(pkt(s), s * 160)
    for s in range(5, 10):  # an RFC 4733 event: one timestamp across packets
        st_.update(pkt(s, ts=5 * 160), s * 160)
    for s in range(10, 20):
        st_.update(pkt(s), s * 160)
    assert st_.jitter == 0.0
