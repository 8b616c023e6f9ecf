"""The scripted caller's per-packet tap: which packets count, which are speech, gaps, and what it
hands the stream (plain frames from the latched source are taken whole; everything else goes on)."""

import numpy as np
import pytest

from parley.loadtest.audio import LOUD, QUIET
from parley.loadtest.listen import PacketTap
from parley.media import g711
from parley.media.rtp import RtpSender
from parley.media.stream import RtpStream

SILENCE = g711.encode("PCMU", np.zeros(160, np.int16))
SOURCE = ("127.0.0.1", 4000)


def tap_with_log(payload_type=0, codec="PCMU"):
    """A tap on a real stream, whose ``receive`` is logged as well as run."""
    stream = RtpStream(codec, payload_type, SOURCE, lambda data, addr: None, time=lambda: 0.0)
    received, loud = [], []
    tap = PacketTap(stream, QUIET[codec], loud.append, 0.06)

    class Logged:  # what the tap hands on to the stream
        def receive(self, data, source, arrival):
            received.append((data, source, arrival))
            stream.receive(data, source, arrival)

    return tap, stream, Logged(), received, loud


def feed(tap, logged, data, source=SOURCE, arrival=1.0):
    """What the caller's socket does with a datagram: the tap, then the stream unless taken."""
    if not tap.feed(data, source, arrival):
        logged.receive(data, source, arrival)


def one_loud_sample_at_the_end(level, codec="PCMU"):
    pcm = np.zeros(160, np.int16)
    pcm[-1] = level
    return g711.encode(codec, pcm)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_a_packet_is_speech_when_one_sample_is_above_the_level(codec):
    tap, _, logged, _, loud = tap_with_log(0, codec)
    sender = RtpSender(0)
    feed(tap, logged, sender.packet(g711.encode(codec, np.zeros(160, np.int16))), arrival=1.0)
    feed(tap, logged, sender.packet(one_loud_sample_at_the_end(LOUD // 2, codec)), arrival=1.02)
    feed(tap, logged, sender.packet(one_loud_sample_at_the_end(LOUD * 2, codec)), arrival=1.04)
    assert loud == [1.04]
    assert tap.packets == 3


def test_plain_frames_from_the_latched_source_give_the_streams_own_figures_and_are_never_buffered():
    tap, stream, logged, received, _ = tap_with_log(0)
    reference = RtpStream("PCMU", 0, SOURCE, lambda data, addr: None, time=lambda: 0.0)  # receive alone
    sender = RtpSender(0)
    first = sender.packet(SILENCE)
    feed(tap, logged, first, arrival=1.0)
    reference.receive(first, SOURCE, 1.0)
    assert received == [(first, SOURCE, 1.0)] and stream.latched == SOURCE  # the stream latches on it
    arrivals = [1.0 + 0.02 * k + (0.004 if k % 7 == 0 else 0.0) for k in range(1, 60)]  # some jitter
    for k, arrival in enumerate(arrivals, 1):
        packet = sender.packet(SILENCE)
        if k not in (20, 21):  # two packets lost on the way
            feed(tap, logged, packet, arrival=arrival)
            reference.receive(packet, SOURCE, arrival)
    assert len(received) == 1  # the rest were taken whole by the tap
    assert stream.packets_in == reference.packets_in == 58 and stream.last_rx == reference.last_rx
    figures = [(s.reception.received, s.reception.lost, s.reception.jitter_ms) for s in (stream, reference)]
    assert figures[0] == figures[1] and figures[0][1] == 2 and figures[0][2] > 0
    stream.pull()  # the first frame, which went through the stream's own receive
    assert stream.pull() is None  # nothing else was buffered for decoding


def test_strangers_and_other_payload_types_go_to_the_stream_which_counts_them():
    tap, stream, logged, received, loud = tap_with_log(0)
    sender = RtpSender(0)
    feed(tap, logged, sender.packet(SILENCE))
    stranger = sender.packet(SILENCE)
    feed(tap, logged, stranger, source=("127.0.0.1", 4002))
    dtmf = RtpSender(101).packet(b"\x05\x0a\x00\xa0")
    feed(tap, logged, dtmf)
    feed(tap, logged, b"\x80\x00junk")
    assert [packet[0] for packet in received[1:]] == [stranger, dtmf, b"\x80\x00junk"]
    assert stream.strangers == 1 and stream.packets_in == 2  # the first frame and the DTMF event
    assert tap.packets == 2 and loud == []


def test_csrcs_and_header_extensions_are_skipped_before_the_energy_test():
    tap, _, logged, received, loud = tap_with_log(0)
    plain = RtpSender(0).packet(SILENCE)
    loud_bytes = b"\x00\x00\x00\x00"  # µ-law 0x00 is the loudest negative sample
    with_csrc = bytes([plain[0] | 1]) + plain[1:12] + loud_bytes + SILENCE  # CSRC that looks loud
    extension = b"\xbe\xde\x00\x01" + loud_bytes  # one word of extension that looks loud
    with_extension = bytes([plain[0] | 0x10]) + plain[1:12] + extension + SILENCE
    feed(tap, logged, with_csrc, arrival=1.0)
    feed(tap, logged, with_extension, arrival=1.0)
    assert loud == [] and tap.packets == 2
    assert len(received) == 2  # not plain frames: the stream parses them itself
    feed(tap, logged, with_extension[:-1] + b"\x00", arrival=1.5)
    assert loud == [1.5]


def test_gaps_are_inter_arrival_intervals_longer_than_the_limit():
    tap, _, logged, _, _ = tap_with_log(0)
    sender = RtpSender(0)
    for arrival in (0.0, 0.02, 0.04, 0.11, 0.13, 0.30):
        feed(tap, logged, sender.packet(SILENCE), arrival=arrival)
    assert tap.gaps == 2


def test_called_as_the_socket_handler_it_hands_what_it_does_not_take_to_the_stream():
    tap, stream, _, _, _ = tap_with_log(0)
    sender = RtpSender(0)
    for k in range(5):
        tap(sender.packet(SILENCE), SOURCE, 1.0 + 0.02 * k)
    assert (
        stream.latched == SOURCE and stream.packets_in == 5 and stream.reception.received == 4
    )  # the first is on probation (RFC 3550 A.1)
