"""The scripted caller's per-packet tap: which packets count, which are speech, and gaps."""

import numpy as np
import pytest

from parley.loadtest.audio import LOUD, QUIET
from parley.loadtest.listen import PacketTap
from parley.media import g711
from parley.media.rtp import RtpSender

SILENCE = g711.encode("PCMU", np.zeros(160, np.int16))


def tap_with_log(payload_type=0, codec="PCMU"):
    received, loud = [], []
    tap = PacketTap(payload_type, QUIET[codec], lambda *packet: received.append(packet), loud.append, 0.06)
    return tap, received, loud


def one_loud_sample_at_the_end(level, codec="PCMU"):
    pcm = np.zeros(160, np.int16)
    pcm[-1] = level
    return g711.encode(codec, pcm)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_a_packet_is_speech_when_one_sample_is_above_the_level(codec):
    tap, _, loud = tap_with_log(0, codec)
    sender = RtpSender(0)
    tap(sender.packet(g711.encode(codec, np.zeros(160, np.int16))), ("127.0.0.1", 4000), 1.0)
    tap(sender.packet(one_loud_sample_at_the_end(LOUD // 2, codec)), ("127.0.0.1", 4000), 1.02)
    tap(sender.packet(one_loud_sample_at_the_end(LOUD * 2, codec)), ("127.0.0.1", 4000), 1.04)
    assert loud == [1.04]
    assert tap.packets == 3


def test_every_datagram_reaches_the_stream_but_only_the_audio_type_is_counted_and_tested():
    tap, received, loud = tap_with_log(0)
    loud_payload = one_loud_sample_at_the_end(LOUD * 4)
    dtmf = RtpSender(101).packet(b"\x05\x0a\x00\xa0")
    source = ("127.0.0.1", 4000)
    for data in (dtmf, b"\x80\x00junk", RtpSender(0).packet(loud_payload)):
        tap(data, source, 2.0)
    assert [packet[0] for packet in received] == [dtmf, b"\x80\x00junk", received[2][0]]
    assert all(packet[1:] == (source, 2.0) for packet in received)
    assert tap.packets == 1 and loud == [2.0]


def test_csrcs_and_header_extensions_are_skipped_before_the_energy_test():
    tap, _, loud = tap_with_log(0)
    plain = RtpSender(0).packet(SILENCE)
    loud_bytes = b"\x00\x00\x00\x00"  # µ-law 0x00 is the loudest negative sample
    with_csrc = bytes([plain[0] | 1]) + plain[1:12] + loud_bytes + SILENCE  # CSRC that looks loud
    extension = b"\xbe\xde\x00\x01" + loud_bytes  # one word of extension that looks loud
    with_extension = bytes([plain[0] | 0x10]) + plain[1:12] + extension + SILENCE
    tap(with_csrc, ("127.0.0.1", 4000), 1.0)
    tap(with_extension, ("127.0.0.1", 4000), 1.0)
    assert loud == [] and tap.packets == 2
    tap(with_extension[:-1] + b"\x00", ("127.0.0.1", 4000), 1.5)
    assert loud == [1.5]


def test_gaps_are_inter_arrival_intervals_longer_than_the_limit():
    tap, _, _ = tap_with_log(0)
    sender = RtpSender(0)
    for arrival in (0.0, 0.02, 0.04, 0.11, 0.13, 0.30):
        tap(sender.packet(SILENCE), ("127.0.0.1", 4000), arrival)
    assert tap.gaps == 2
