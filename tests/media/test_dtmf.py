import random

import pytest

from parley.media.dtmf import (
    DIGITS,
    DtmfError,
    DtmfPayload,
    DtmfReceiver,
    digit_to_event,
    dtmf_payloads,
    event_to_digit,
)
from parley.media.rtp import RtpPacket, RtpSender

PT = 101


def test_digit_event_mapping():
    assert [digit_to_event(d) for d in "0123456789*#ABCD"] == list(range(16))
    assert digit_to_event("a") == 12
    assert [event_to_digit(e) for e in range(16)] == list(DIGITS)
    assert event_to_digit(16) is None and event_to_digit(-1) is None
    for bad in ["E", "", "12", "x"]:
        with pytest.raises(DtmfError):
            digit_to_event(bad)


def test_payload_round_trip_and_layout():
    p = DtmfPayload(11, True, 10, 800)
    assert p.serialize() == bytes([11, 0x80 | 10, 0x03, 0x20])
    assert DtmfPayload.parse(p.serialize()) == p
    assert DtmfPayload.parse(bytes([5, 0x4A, 0, 160])) == DtmfPayload(5, False, 10, 160)  # R bit ignored


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x02\x03"])
def test_payload_too_short(data):
    with pytest.raises(DtmfError):
        DtmfPayload.parse(data)


@pytest.mark.parametrize(
    "p", [DtmfPayload(256, False, 0, 0), DtmfPayload(1, False, 64, 0), DtmfPayload(1, False, 0, 70000)]
)
def test_payload_out_of_range(p):
    with pytest.raises(DtmfError):
        p.serialize()


def test_dtmf_payloads_shape():
    out = dtmf_payloads("5", duration_ms=100)
    payloads = [DtmfPayload.parse(p) for p, _ in out]
    assert [m for _, m in out] == [True] + [False] * 6
    assert [p.duration for p in payloads] == [160, 320, 480, 640, 800, 800, 800]
    assert [p.end for p in payloads] == [False] * 4 + [True] * 3
    assert all(p.event == 5 and p.volume == 10 for p in payloads)


def test_dtmf_payloads_short_digit_and_errors():
    out = dtmf_payloads("#", duration_ms=20)
    assert [m for _, m in out] == [True, False, False]
    assert all(DtmfPayload.parse(p).end for p, _ in out)
    assert DtmfPayload.parse(dtmf_payloads("1", duration_ms=50)[-1][0]).duration == 400
    with pytest.raises(DtmfError):
        dtmf_payloads("X")
    with pytest.raises(DtmfError):
        dtmf_payloads("1", duration_ms=0)
    with pytest.raises(DtmfError):
        dtmf_payloads("1", duration_ms=9000)


def send(digits, sender=None, duration_ms=100, gap_ticks=3):
    """RTP packets a sender emits for ``digits`` (one per 20 ms tick; audio ticks only advance time)."""
    sender = sender or RtpSender(payload_type=0, ssrc=77, sequence=65530, timestamp=0xFFFFF000)
    packets = []
    for digit in digits:
        event_ts = sender.timestamp
        for payload, marker in dtmf_payloads(digit, duration_ms):
            packets.append(RtpPacket.parse(sender.packet_at(payload, event_ts, marker, PT)))
            sender.advance(160)
        for _ in range(gap_ticks):
            sender.advance(160)
    return packets


def receive(packets, receiver=None):
    receiver = receiver or DtmfReceiver()
    return "".join(d for p in packets if (d := receiver.feed(p)) is not None)


def test_receiver_decodes_sender_output():
    assert receive(send("0123456789*#ABCD")) == "0123456789*#ABCD"


def test_repeated_digits_are_separate_events():
    assert receive(send("1233")) == "1233"
    assert receive(send("333", gap_ticks=0)) == "333"


def test_first_packet_lost():
    packets = send("1233")
    dropped = [p for p in packets if not p.marker]
    assert receive(dropped) == "1233"


def test_end_packets_lost():
    packets = [p for p in send("1233") if not DtmfPayload.parse(p.payload).end]
    r = DtmfReceiver()
    assert receive(packets, r) == "1233"
    assert r.current is not None and not r.current.ended
    closed = r.flush()
    assert closed is r.current and closed.ended and closed.digit == "3"
    assert r.flush() is None


def test_only_end_packets_received():
    packets = [p for p in send("47") if DtmfPayload.parse(p.payload).end]
    r = DtmfReceiver()
    assert receive(packets, r) == "47"
    assert r.current.ended and r.current.duration_ms == 100.0


def test_duplicates_and_reordering_within_and_across_events():
    packets = send("1233")
    shuffled = []
    for p in packets:
        shuffled.extend([p, p])
    assert receive(shuffled) == "1233"
    # an end packet of the previous event arriving after the next event started is ignored
    first_two = send("12")
    late_end = next(
        p for p in first_two if DtmfPayload.parse(p.payload).end and p.timestamp == first_two[0].timestamp
    )
    second_start = next(p for p in first_two if p.timestamp != first_two[0].timestamp)
    assert receive([first_two[0], second_start, late_end]) == "12"


def test_random_loss_duplication_and_local_reordering():
    rng = random.Random(4733)
    digits = "".join(rng.choice(DIGITS) for _ in range(40))
    packets = send(digits)
    mangled = []
    for p in packets:
        if rng.random() < 0.2:
            continue
        mangled.append(p)
        if rng.random() < 0.2:
            mangled.append(p)
    for i in range(0, len(mangled) - 1, 3):  # swap neighbours within an event
        if mangled[i].timestamp == mangled[i + 1].timestamp:
            mangled[i], mangled[i + 1] = mangled[i + 1], mangled[i]
    # every event keeps at least one packet with 20 % loss over 7 packets, almost surely; check it:
    surviving = {p.timestamp for p in mangled}
    expected = "".join(
        d
        for d, ts in zip(
            digits,
            sorted({p.timestamp for p in packets}, key=lambda t: (t - 0xFFFFF000) & 0xFFFFFFFF),
            strict=True,
        )
        if ts in surviving
    )
    assert receive(mangled) == expected
    assert len(expected) >= 38


def test_duration_tracking_and_end():
    r = DtmfReceiver()
    packets = send("9", duration_ms=200)
    assert r.feed(packets[0]) == "9"
    assert r.current.duration == 160 and r.current.duration_ms == 20.0 and not r.current.ended
    for p in packets[1:]:
        assert r.feed(p) is None
    assert r.current.ended and r.current.duration_ms == 200.0 and r.current.volume == 10


def test_flush_with_timeout():
    packets = [p for p in send("5") if not DtmfPayload.parse(p.payload).end]
    r = DtmfReceiver()
    receive(packets, r)
    start, duration = r.current.timestamp, r.current.duration
    assert r.flush(now_ts=start + duration + 100, timeout=800) is None
    assert r.flush(now_ts=(start + duration + 800) & 0xFFFFFFFF, timeout=800) is r.current
    assert r.current.ended


def test_new_ssrc_restarts_and_bad_payloads_ignored():
    r = DtmfReceiver()
    a = send("1")
    b = send("1")  # same timestamps, same SSRC: nothing new
    assert receive(a + b, r) == "1"
    c = send("1", sender=RtpSender(ssrc=78, sequence=0, timestamp=0))
    assert receive(c, r) == "1"
    assert r.feed(RtpPacket(PT, 1, 5, 78, b"\x01")) is None
    assert r.feed(RtpPacket(PT, 1, 99999, 78, bytes([16, 0x0A, 0, 160]))) is None  # flash: not a digit
