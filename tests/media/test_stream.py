"""Behavioural tests of RtpStream, driven sans-I/O: receive() in, tick() out, a fake clock."""

import random
import struct
from itertools import pairwise

import numpy as np
import pytest

from parley.media import g711
from parley.media.dtmf import DtmfPayload, DtmfReceiver, dtmf_payloads
from parley.media.jitter import JitterBuffer, conceal
from parley.media.rtcp import (
    ReceiverReport,
    RtcpError,
    SdesChunk,
    SenderReport,
    SourceDescription,
    build_compound,
    parse_compound,
)
from parley.media.rtp import RtpPacket, RtpSender
from parley.media.stream import RtpStream

REMOTE = ("192.0.2.10", 40000)  # the address signalled in SDP
NAT = ("198.51.100.7", 61000)  # where the peer's media really comes from
STRANGER = ("203.0.113.66", 5004)
NEW_REMOTE = ("192.0.2.20", 42000)
OUR_SSRC = 0x11223344
PEER_SSRC = 0x0BADCAFE
DTMF_PT = 101
DELAY = JitterBuffer().target  # ticks between the first packet and the first frame played out


def ulaw_frames(count, seed=1, size=160):
    """Random µ-law payloads avoiding 0x7F (the second zero code, which decodes like 0xFF)."""
    rng = random.Random(seed)
    return [
        bytes(rng.choice([b for b in range(256) if b != 0x7F]) for _ in range(size)) for _ in range(count)
    ]


def tone(samples, freq=440.0, amplitude=8000):
    t = np.arange(samples) / 8000.0
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


class Rig:
    """One RtpStream with recording transports, a fake clock and a fixed-seed peer."""

    def __init__(self, codec="PCMU", payload_type=0, remote=REMOTE, **kwargs):
        self.now = [1000.0]
        self.sent = []
        self.rtcp = []
        self.audio = []
        self.digits = []
        self.stream = RtpStream(
            codec,
            payload_type,
            remote,
            lambda data, addr: self.sent.append((data, addr)),
            time=lambda: self.now[0],
            send_rtcp=lambda data, addr: self.rtcp.append((data, addr)),
            **kwargs,
        )
        # sequence and timestamp close to their wrap-around, so continuity checks must use modular arithmetic
        self.stream.sender = RtpSender(payload_type, ssrc=OUR_SSRC, sequence=65530, timestamp=2**32 - 800)
        self.stream.on_audio = self.audio.append
        self.stream.on_dtmf = self.digits.append
        self.peer = RtpSender(payload_type, ssrc=PEER_SSRC, sequence=1000, timestamp=50000)

    def tick(self, count=1):
        for _ in range(count):
            self.now[0] += 0.02
            self.stream.tick()

    def receive(self, payload, source=REMOTE, samples=None):
        self.stream.receive(self.peer.packet(payload, len(payload) if samples is None else samples), source)

    def packets(self):
        return [RtpPacket.parse(data) for data, _ in self.sent]

    def addresses(self):
        return [addr for _, addr in self.sent]


def assert_continuous(packets, step=160):
    assert len({p.ssrc for p in packets}) == 1
    for a, b in pairwise(packets):
        assert (b.sequence - a.sequence) & 0xFFFF == 1
        assert (b.timestamp - a.timestamp) & 0xFFFFFFFF == step


# -- symmetric RTP ---------------------------------------------------------------------------------
def test_first_packet_latches_and_output_follows_the_latched_address():
    rig = Rig()
    rig.tick()
    assert rig.addresses() == [REMOTE]  # nothing received yet: the signalled address
    rig.receive(b"\xff" * 160, NAT)
    assert rig.stream.latched == NAT
    rig.receive(b"\xff" * 160, STRANGER)
    rig.receive(b"\xff" * 160, STRANGER)
    assert rig.stream.stats.strangers == 2
    assert rig.stream.stats.packets_in == 1
    assert rig.stream.latched == NAT
    rig.tick(3)
    assert rig.addresses()[1:] == [NAT] * 3


def test_strangers_packets_are_not_played():
    rig = Rig()
    frames = ulaw_frames(10, seed=3)
    intruder = RtpSender(0, ssrc=0x66666666, sequence=7, timestamp=9)
    for frame in frames:
        rig.receive(frame, NAT)
        rig.stream.receive(intruder.packet(b"\x00" * 160), STRANGER)  # loud, and must not be heard
        rig.tick()
    played = np.concatenate(rig.audio)
    expected = g711.decode("PCMU", b"".join(frames[: len(rig.audio)]))
    assert np.array_equal(played, expected)
    assert rig.stream.stats.strangers == 10


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"hello",
        b"\x80\x00\x00",  # shorter than an RTP header
        b"GET / HTTP/1.1\r\n\r\n",  # version 1
        b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12),  # a STUN binding request (version 0)
        b"\xa0\x00\x00\x01" + bytes(8) + b"\x00",  # padding length 0
    ],
)
def test_garbage_from_a_stranger_does_not_latch(garbage):
    rig = Rig()
    rig.stream.receive(garbage, STRANGER)
    assert rig.stream.latched is None
    assert rig.stream.stats.malformed == 1
    rig.receive(b"\xff" * 160, NAT)
    assert rig.stream.latched == NAT
    rig.tick()
    assert rig.addresses() == [NAT]


def test_rtcp_datagram_from_a_stranger_does_not_latch():
    rig = Rig()
    rtcp = build_compound(0x5555, "intruder", sender=RtpSender(0, ssrc=0x5555))  # an RR + SDES
    rig.stream.receive(rtcp, STRANGER)
    rig.receive(b"\xff" * 160, NAT)
    assert rig.stream.latched == NAT
    assert rig.stream.stats.packets_in == 1


def test_update_remote_with_a_new_address_resets_the_latch():
    rig = Rig()
    rig.receive(b"\xff" * 160, NAT)
    rig.tick()
    assert rig.addresses() == [NAT]
    rig.stream.update_remote(NEW_REMOTE, send=True, receive=True)
    assert rig.stream.latched is None
    rig.tick()
    assert rig.addresses()[-1] == NEW_REMOTE
    new_nat = ("198.51.100.8", 62000)
    rig.receive(b"\xff" * 160, new_nat)
    assert rig.stream.latched == new_nat
    rig.tick()
    assert rig.addresses()[-1] == new_nat


def test_update_remote_with_the_same_address_keeps_the_latch():
    rig = Rig()
    rig.receive(b"\xff" * 160, NAT)
    rig.stream.update_remote(REMOTE, send=True, receive=True)
    assert rig.stream.latched == NAT
    rig.tick()
    assert rig.addresses() == [NAT]


# -- receiving audio -------------------------------------------------------------------------------
def test_received_frames_are_decoded_in_order_one_per_tick_after_the_jitter_delay():
    rig = Rig()
    frames = ulaw_frames(20)
    counts = []
    for frame in frames:
        rig.receive(frame)
        rig.tick()
        counts.append(len(rig.audio))
    assert counts == [0] * DELAY + list(range(1, len(frames) - DELAY + 1))
    for pcm, frame in zip(rig.audio, frames, strict=False):
        assert pcm.dtype == np.int16 and pcm.shape == (160,)
        assert np.array_equal(pcm, g711.decode("PCMU", frame))
    assert rig.stream.stats.packets_in == 20


def test_receiving_without_a_consumer_is_harmless():
    rig = Rig()
    rig.stream.on_audio = None
    for i, frame in enumerate(ulaw_frames(30)):
        if i != 10:  # a loss too: concealment without a consumer
            rig.receive(frame)
        else:
            rig.peer.sequence += 1
            rig.peer.timestamp += 160
        rig.tick()
    rig.tick(20)
    assert rig.stream.stats.packets_in == 29
    assert len(rig.sent) == 50


def test_a_lost_frame_is_concealed_from_the_previous_one():
    rig = Rig()
    frames = ulaw_frames(12, seed=5)
    lost = 6
    for i, frame in enumerate(frames):
        if i == lost:
            rig.peer.sequence += 1  # never arrives
            rig.peer.timestamp += 160
        else:
            rig.receive(frame)
        rig.tick()
    decoded = [g711.decode("PCMU", f) for f in frames]
    played = rig.audio
    assert len(played) == len(frames) - DELAY
    for i in range(len(played)):
        expected = conceal(decoded[lost - 1], 1) if i == lost else decoded[i]
        assert np.array_equal(played[i], expected), i
    assert not np.array_equal(played[lost], decoded[lost])


def test_concealment_fades_to_silence_when_the_peer_stops():
    rig = Rig()
    frames = ulaw_frames(5, seed=6)
    for frame in frames:
        rig.receive(frame)
        rig.tick()
    rig.tick(10)
    last = g711.decode("PCMU", frames[-1])
    tail = rig.audio[len(frames) :]
    assert len(rig.audio) == len(frames) - DELAY + 10  # still one frame per tick
    assert np.array_equal(rig.audio[len(frames) - 1], last)
    assert all(np.array_equal(t, conceal(last, k + 1)) for k, t in enumerate(tail[:3]))
    assert all(not t.any() for t in tail[3:])


def test_pcma_stream_decodes_and_encodes_a_law():
    rig = Rig("PCMA", 8)
    rng = random.Random(9)
    frames = [bytes(rng.randrange(256) for _ in range(160)) for _ in range(6)]
    for frame in frames:
        rig.receive(frame)
        rig.tick()
    for pcm, frame in zip(rig.audio, frames, strict=False):
        assert np.array_equal(pcm, g711.decode("PCMA", frame))
    assert len(rig.audio) == len(frames) - DELAY
    audio = tone(480)
    rig.stream.play(audio)
    rig.tick(4)
    out = rig.packets()[-4:]
    assert all(p.payload_type == 8 for p in out)
    assert [p.payload for p in out] == [
        g711.encode("PCMA", audio[i * 160 : (i + 1) * 160]) for i in range(3)
    ] + [b"\xd5" * 160]
    assert g711.encode("PCMA", audio) != g711.encode("PCMU", audio)
    assert {p.payload for p in rig.packets()[:6]} == {b"\xd5" * 160}  # A-law silence before


# -- reframing -------------------------------------------------------------------------------------
def feed_paced(rig, payloads, extra_ticks=10):
    """Deliver each packet once its audio has been "recorded" (at its RTP time), ticking every 20 ms."""
    due, elapsed, queue = 0, 0, []
    for payload in payloads:
        due += len(payload)
        queue.append((due, payload))
    for _ in range(-(-due // 160) + extra_ticks):
        elapsed += 160
        while queue and queue[0][0] <= elapsed:
            rig.receive(queue.pop(0)[1])
        rig.tick()
    assert not queue


@pytest.mark.parametrize("size", [240, 80, 400])
def test_other_packet_durations_are_reframed_to_20ms_with_the_audio_intact(size):
    rig = Rig()
    payloads = ulaw_frames(4800 // size, seed=size, size=size)
    feed_paced(rig, payloads)
    assert all(pcm.shape == (160,) for pcm in rig.audio)
    played = np.concatenate(rig.audio)
    sent = g711.decode("PCMU", b"".join(payloads))
    assert np.array_equal(played[: len(sent)], sent)


def test_reframing_restarts_after_a_gap_without_mixing_audio():
    rig = Rig()
    first, second = ulaw_frames(2, seed=11, size=240)
    rig.receive(first)  # 160 bytes framed, 80 held
    rig.peer.timestamp += 240  # one 30 ms packet lost
    rig.peer.sequence += 1
    rig.receive(second)
    rig.tick(DELAY + 3)
    played = np.concatenate(rig.audio)
    assert np.array_equal(played[:160], g711.decode("PCMU", first[:160]))
    # the held 80 bytes of the first packet never get glued to the second packet's audio
    assert not np.array_equal(played[160:240], g711.decode("PCMU", first[160:]))


# -- sending audio ---------------------------------------------------------------------------------
def test_play_one_second_sends_fifty_frames_then_silence_continuously():
    rig = Rig()
    audio = tone(8000)
    done = []
    playback = rig.stream.play(audio)
    playback.callbacks.append(done.append)
    assert rig.stream.playing
    rig.tick(49)
    assert done == [] and not playback.finished
    rig.tick()
    assert done == [False] and playback.finished and not playback.stopped
    rig.tick(5)
    packets = rig.packets()
    assert len(packets) == 55
    assert [p.payload for p in packets[:50]] == [
        g711.encode("PCMU", audio[i * 160 : (i + 1) * 160]) for i in range(50)
    ]
    assert all(p.payload == b"\xff" * 160 for p in packets[50:])
    assert all(p.payload_type == 0 and not p.marker for p in packets)
    assert packets[0].ssrc == OUR_SSRC and packets[0].sequence == 65530
    assert_continuous(packets)
    assert not rig.stream.playing
    assert rig.stream.stats.packets_out == 55


def test_a_partial_last_frame_is_padded_with_silence():
    rig = Rig()
    audio = tone(200)
    rig.stream.play(audio)
    rig.tick(2)
    second = rig.packets()[1].payload
    assert second == g711.encode("PCMU", audio[160:]) + b"\xff" * 120


def test_stop_playback_silences_the_very_next_tick():
    rig = Rig()
    done, later = [], []
    first = rig.stream.play(tone(8000))
    first.callbacks.append(done.append)
    second = rig.stream.play(tone(1600, 1000))
    second.callbacks.append(later.append)
    rig.stream.play_frame(tone(160, 300))
    rig.tick(10)
    rig.stream.stop_playback()
    assert done == [True] and later == [True]
    assert first.stopped and first.finished and second.stopped
    assert not rig.stream.playing
    rig.tick(3)
    packets = rig.packets()
    assert all(p.payload != b"\xff" * 160 for p in packets[:10])
    assert [p.payload for p in packets[10:]] == [b"\xff" * 160] * 3
    assert_continuous(packets)


def test_play_frame_frames_are_sent_in_order_after_queued_playback():
    rig = Rig()
    prompt = tone(320, 200)
    frames = [tone(160, 300 + 100 * i) for i in range(5)]
    rig.stream.play(prompt)
    for frame in frames:
        rig.stream.play_frame(frame)
    rig.stream.play_frame(tone(100, 900))  # not a whole frame: queued as a playback
    rig.tick(9)
    payloads = [p.payload for p in rig.packets()]
    expected = [g711.encode("PCMU", prompt[:160]), g711.encode("PCMU", prompt[160:])]
    expected += [g711.encode("PCMU", f) for f in frames]
    expected += [g711.encode("PCMU", tone(100, 900)) + b"\xff" * 60, b"\xff" * 160]
    assert payloads == expected
    assert_continuous(rig.packets())


# -- hold --------------------------------------------------------------------------------------------
def test_hold_stops_sending_and_resume_continues_the_stream():
    rig = Rig()
    rig.stream.play(tone(8000))
    rig.tick(5)
    rig.stream.update_remote(REMOTE, send=False, receive=True)
    rig.tick(20)
    assert len(rig.sent) == 5
    rig.receive(b"\x10" * 160)  # still receiving while held
    assert rig.stream.stats.packets_in == 1
    rig.stream.update_remote(REMOTE, send=True, receive=True)
    rig.tick(5)
    packets = rig.packets()
    assert len(packets) == 10
    assert {p.ssrc for p in packets} == {OUR_SSRC}
    assert all((b.sequence - a.sequence) & 0xFFFF == 1 for a, b in pairwise(packets))
    assert all((b.timestamp - a.timestamp) & 0xFFFFFFFF >= 160 for a, b in pairwise(packets))


def test_the_rtp_clock_runs_through_a_hold():
    rig = Rig()
    rig.tick(3)
    rig.stream.update_remote(REMOTE, send=False, receive=True)
    rig.tick(20)
    rig.stream.update_remote(REMOTE, send=True, receive=True)
    rig.tick(1)
    before, after = rig.packets()[2], rig.packets()[3]
    assert (after.sequence - before.sequence) & 0xFFFF == 1
    assert (after.timestamp - before.timestamp) & 0xFFFFFFFF == 21 * 160  # 20 held ticks + 1


def test_rtcp_goes_on_during_hold_but_never_to_an_unspecified_address():
    rig = Rig()
    rig.stream.update_remote(REMOTE, send=False, receive=True)
    rig.tick(250)
    assert [addr for _, addr in rig.rtcp] == [(REMOTE[0], REMOTE[1] + 1)]  # RFC 3264 §5.1
    rig.stream.update_remote(("0.0.0.0", REMOTE[1]), send=False, receive=False)  # old-style hold
    rig.tick(250)
    assert len(rig.rtcp) == 1


def test_rtp_on_port_65535_has_no_rtcp_port_and_sends_none():
    """RTCP goes to the RTP port + 1 (RFC 3550 §11): for m=audio 65535 that would be 65536, which a
    socket refuses with OverflowError on every report (issue 15, item 6). RTP still flows."""
    rig = Rig(remote=(REMOTE[0], 65535))
    rig.tick(500)
    assert rig.rtcp == []
    assert len(rig.sent) == 500 and set(rig.addresses()) == {(REMOTE[0], 65535)}


def test_dtmf_cannot_be_sent_without_negotiated_telephone_event():
    rig = Rig(dtmf_payload_type=None)
    with pytest.raises(ValueError, match="telephone-event"):
        rig.stream.send_dtmf("1")


def test_a_straggler_from_the_old_address_does_not_relatch_after_a_media_change():
    rig = Rig()
    rig.receive(b"\xff" * 160)
    assert rig.stream.latched == REMOTE
    moved = ("192.0.2.99", 7000)
    rig.stream.update_remote(moved, send=True, receive=True)
    rig.receive(b"\xff" * 160)  # still in flight from the old address
    assert rig.stream.latched is None
    rig.receive(b"\xff" * 160, source=moved)
    assert rig.stream.latched == moved
    rig.tick(1)
    assert rig.addresses()[-1] == moved


def test_receive_false_ignores_incoming_packets():
    rig = Rig()
    rig.stream.update_remote(REMOTE, send=True, receive=False)
    for frame in ulaw_frames(10):
        rig.receive(frame, NAT)
        rig.tick()
    assert rig.audio == []
    assert rig.stream.stats.packets_in == 0
    assert rig.stream.latched is None
    assert rig.addresses() == [REMOTE] * 10


# -- DTMF ------------------------------------------------------------------------------------------
def test_send_dtmf_sends_rfc4733_events_and_audio_resumes():
    rig = Rig()
    rig.tick(3)
    rig.stream.send_dtmf("12#")
    per_digit = len(dtmf_payloads("1")) + 3  # 7 packets then a 3-tick gap
    rig.tick(3 * per_digit + 2)
    packets = rig.packets()
    audio_before, events, audio_after = packets[:3], packets[3:-2], packets[-2:]
    assert len(events) == 21
    assert all(p.payload_type == DTMF_PT for p in events)
    assert all(p.payload_type == 0 for p in audio_before + audio_after)
    assert {p.ssrc for p in packets} == {OUR_SSRC}
    assert all((b.sequence - a.sequence) & 0xFFFF == 1 for a, b in pairwise(packets))
    start = (audio_before[-1].timestamp + 160) & 0xFFFFFFFF
    for k in range(3):
        event = events[7 * k : 7 * (k + 1)]
        assert {p.timestamp for p in event} == {(start + k * per_digit * 160) & 0xFFFFFFFF}
        assert [p.marker for p in event] == [True] + [False] * 6
        assert [DtmfPayload.parse(p.payload).end for p in event] == [False] * 4 + [True] * 3
    receiver = DtmfReceiver()
    digits = [receiver.feed(p) for p in events]
    assert [d for d in digits if d is not None] == ["1", "2", "#"]
    # the stream clock ran on through the events and gaps
    assert audio_after[0].timestamp == (start + 3 * per_digit * 160) & 0xFFFFFFFF
    assert_continuous(audio_after)
    assert rig.stream.sender.packets_sent == len(packets) == rig.stream.stats.packets_out


def test_incoming_telephone_events_are_reported_once_per_digit():
    rig = Rig()
    for digit in "5*9":
        start = rig.peer.timestamp
        for payload, marker in dtmf_payloads(digit):
            rig.stream.receive(rig.peer.packet_at(payload, start, marker, DTMF_PT), REMOTE)
            rig.peer.advance(160)
            rig.tick()
        rig.receive(b"\xff" * 160)
        rig.tick()
    assert rig.digits == ["5", "*", "9"]
    assert rig.stream.stats.dtmf_in == 3
    assert rig.stream.stats.unknown_payload == 0


def test_incoming_dtmf_without_a_handler_is_counted():
    rig = Rig()
    rig.stream.on_dtmf = None
    for payload, marker in dtmf_payloads("7"):
        rig.stream.receive(rig.peer.packet_at(payload, 123, marker, DTMF_PT), REMOTE)
    assert rig.stream.stats.dtmf_in == 1


# -- RTCP ------------------------------------------------------------------------------------------
def rtcp_reports(rig):
    return [(parse_compound(data, strict=True), addr) for data, addr in rig.rtcp]


def test_sender_report_after_five_seconds_without_reception():
    rig = Rig()
    rig.tick(249)
    assert rig.rtcp == []
    rig.tick()
    [(packets, addr)] = rtcp_reports(rig)
    assert addr == (REMOTE[0], REMOTE[1] + 1)
    sr, sdes = packets
    assert isinstance(sr, SenderReport)
    assert sr.ssrc == OUR_SSRC
    assert sr.packet_count == 250 == len(rig.sent)
    assert sr.octet_count == 250 * 160
    assert sr.reports == ()
    assert sdes == SourceDescription((SdesChunk(OUR_SSRC, ((1, b"parley"),)),))
    rig.tick(250)
    assert len(rig.rtcp) == 2


def test_sender_report_carries_a_block_about_the_peer_with_the_injected_loss():
    rig = Rig()
    lost_at = 100
    for i in range(250):
        if i == lost_at:
            rig.peer.sequence += 1
            rig.peer.timestamp += 160
        else:
            rig.receive(ulaw_frames(1, seed=i)[0] if i % 50 == 0 else b"\x55" * 160, REMOTE)
        rig.tick()
    [(packets, addr)] = rtcp_reports(rig)
    assert addr == (REMOTE[0], REMOTE[1] + 1)
    sr = packets[0]
    assert isinstance(sr, SenderReport)
    assert sr.packet_count == len(rig.sent) == 250
    assert sr.octet_count == sum(len(p.payload) for p in rig.packets())
    [block] = sr.reports
    assert block.ssrc == PEER_SSRC
    assert block.cumulative_lost == 1
    assert block.extended_max_seq == (rig.peer.sequence - 1) & 0xFFFF
    assert block.fraction_lost > 0
    assert block.lsr == 0 and block.dlsr == 0


def test_rtcp_goes_to_the_latched_address():
    rig = Rig()
    for _ in range(250):
        rig.receive(b"\x55" * 160, NAT)
        rig.tick()
    [(_, addr)] = rtcp_reports(rig)
    assert addr == (NAT[0], NAT[1] + 1)


def test_incoming_dtmf_packets_are_not_reported_as_lost():
    rig = Rig()
    for i in range(250):
        if 100 <= i < 107:
            payload, marker = dtmf_payloads("3")[i - 100]
            rig.stream.receive(rig.peer.packet_at(payload, 200000, marker, DTMF_PT), REMOTE)
            rig.peer.advance(160)
        else:
            rig.receive(b"\x55" * 160)
        rig.tick()
    assert rig.digits == ["3"]
    [(packets, _)] = rtcp_reports(rig)
    [block] = packets[0].reports
    assert block.cumulative_lost == 0


def test_peer_sender_report_sets_lsr_and_dlsr():
    rig = Rig()
    peer_sender = RtpSender(0, ssrc=PEER_SSRC, sequence=1, timestamp=1)
    peer_sender.packet(b"\xff" * 160)
    sr_data = build_compound(PEER_SSRC, "peer", sender=peer_sender, unix_time=1_700_000_123.625)
    peer_sr = parse_compound(sr_data)[0]
    assert peer_sr.ntp_middle != 0
    for i in range(250):
        rig.receive(b"\x55" * 160)
        if i == 150:
            rig.stream.receive_rtcp(sr_data, (REMOTE[0], REMOTE[1] + 1))
        rig.tick()
    assert rig.stream.rtcp_in == 1
    [(packets, _)] = rtcp_reports(rig)
    [block] = packets[0].reports
    assert block.lsr == peer_sr.ntp_middle
    assert block.dlsr > 0
    # 100 ticks of 20 ms between the SR's arrival and our report, in 1/65536 s
    assert block.dlsr == pytest.approx(100 * 0.02 * 65536, abs=2)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80",
        b"\x80\xc8\x00",
        b"\x80\xc8\x00\x06" + bytes(8),  # SR length exceeds the datagram
        b"\x40\xc8\x00\x00",  # version 1
        b"\x80\x00\x00\x00",  # packet type 0 is not RTCP (an RTP packet, say)
        b"\x81\xc8\x00\x06" + bytes(24),  # SR announcing a block it does not carry
        b"\x81\xca\x00\x01" + bytes(4),  # SDES chunk without END
        b"\xa0\xc9\x00\x01\x00\x00\x00\x00",  # padding length 0
    ],
)
def test_malformed_rtcp_is_counted_and_never_raises(data):
    rig = Rig()
    rig.stream.receive_rtcp(data, REMOTE)
    assert rig.stream.stats.malformed == 1
    assert rig.stream.rtcp_in == 0


def test_random_rtcp_datagrams_never_raise():
    rig = Rig()
    rng = random.Random(2024)
    valid = build_compound(PEER_SSRC, "peer", sender=rig.peer)
    malformed = 0
    for _ in range(3000):
        if rng.random() < 0.5:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        else:  # mutate a real compound packet
            data = bytearray(valid[: rng.randrange(len(valid) + 1)])
            for _ in range(rng.randrange(1, 4)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        try:
            parse_compound(data)
        except RtcpError:
            malformed += 1
        rig.stream.receive_rtcp(data, REMOTE)
    assert malformed > 0
    assert rig.stream.stats.malformed == malformed
    assert rig.stream.rtcp_in == 3000 - malformed


def test_a_receiver_report_from_the_peer_is_accepted_without_lsr():
    rig = Rig()
    rr = ReceiverReport(PEER_SSRC).serialize() + SourceDescription((SdesChunk(PEER_SSRC, ()),)).serialize()
    rig.stream.receive_rtcp(rr, REMOTE)
    assert rig.stream.rtcp_in == 1 and rig.stream.stats.malformed == 0
    for _ in range(250):
        rig.receive(b"\x55" * 160)
        rig.tick()
    [(packets, _)] = rtcp_reports(rig)
    assert packets[0].reports[0].lsr == 0 and packets[0].reports[0].dlsr == 0


# -- inactivity ------------------------------------------------------------------------------------
def inactivity_rig():
    rig = Rig(inactivity_timeout=2)
    fired = []
    rig.stream.on_inactive = lambda: fired.append(rig.now[0])
    return rig, fired


def test_inactivity_fires_once_after_the_timeout():
    rig, fired = inactivity_rig()
    for _ in range(10):
        rig.receive(b"\xff" * 160)
        rig.tick()
    last_rx = rig.now[0]
    rig.tick(90)  # 1.8 s of silence
    assert fired == []
    rig.tick(400)
    assert len(fired) == 1
    assert fired[0] - last_rx > 2


def test_no_inactivity_while_packets_keep_coming():
    rig, fired = inactivity_rig()
    for _ in range(500):
        rig.receive(b"\xff" * 160)
        rig.tick()
    assert fired == []


def test_strangers_do_not_count_as_activity():
    rig, fired = inactivity_rig()
    rig.receive(b"\xff" * 160, NAT)
    for _ in range(300):
        rig.receive(b"\xff" * 160, STRANGER)
        rig.tick()
    assert len(fired) == 1


def test_no_inactivity_while_on_hold():
    rig, fired = inactivity_rig()
    rig.stream.update_remote(REMOTE, send=False, receive=True)
    rig.tick(500)
    assert fired == []
    rig.stream.update_remote(REMOTE, send=True, receive=True)  # resumed, and still silent
    rig.tick(200)
    assert len(fired) == 1


# -- robustness ------------------------------------------------------------------------------------
def test_unknown_payload_types_are_counted_and_ignored():
    rig = Rig()
    for pt in (8, 13, 96, 127):  # before any audio: they cannot latch the stream either
        rig.stream.receive(RtpPacket(pt, 1, 2, PEER_SSRC, b"\x00" * 160).serialize(), REMOTE)
    assert rig.stream.latched is None and rig.stream.stats.strangers == 4
    rig.stream.receive(rig.peer.packet(b"\xff" * 160), REMOTE)  # PCMU latches
    for pt in (8, 13, 96, 127):
        rig.stream.receive(RtpPacket(pt, 1, 2, PEER_SSRC, b"\x00" * 160).serialize(), REMOTE)
    rig.tick(5)
    assert rig.stream.stats.unknown_payload == 4
    assert all(not frame.any() for frame in rig.audio)  # only the silence frame was played
    assert rig.stream.stats.dtmf_in == 0


def test_dtmf_payload_type_none_treats_events_as_unknown():
    rig = Rig(dtmf_payload_type=None)
    rig.stream.receive(rig.peer.packet(b"\xff" * 160), REMOTE)  # audio latches the stream
    for payload, marker in dtmf_payloads("1"):
        rig.stream.receive(rig.peer.packet_at(payload, 77, marker, DTMF_PT), REMOTE)
    assert rig.digits == [] and rig.stream.stats.unknown_payload == 7


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(11),
        b"\x80\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00",  # 11 bytes
        b"\x40" + bytes(11),  # version 1
        b"\xc0" + bytes(11),  # version 3
        b"\x83\x00" + bytes(10) + bytes(8),  # 3 CSRCs announced, 2 present
        b"\x90\x00" + bytes(10) + b"\x00\x00",  # extension header truncated
        b"\x90\x00" + bytes(10) + b"\x00\x00\x00\x05" + bytes(4),  # extension longer than the packet
        b"\xa0\x00" + bytes(10) + b"\x00",  # padding 0
        b"\xa0\x00" + bytes(10) + b"\x01\x02\x09",  # padding beyond the payload
    ],
)
def test_malformed_rtp_is_counted_and_never_raises(data):
    rig = Rig()
    rig.stream.receive(data, REMOTE)
    assert rig.stream.stats.malformed == 1
    assert rig.stream.stats.packets_in == 0
    assert rig.stream.latched is None


def test_random_rtp_datagrams_never_raise():
    rig = Rig()
    rng = random.Random(7)
    for i in range(3000):
        if i % 3 == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
        else:  # a header with random flags (padding, extension, CSRC count) and a random tail
            data = bytes([0x80 | rng.randrange(64), rng.randrange(256)]) + bytes(
                rng.randrange(256) for _ in range(rng.randrange(10, 200))
            )
        rig.stream.receive(data, REMOTE if i % 2 else STRANGER)
        if i % 10 == 0:
            rig.tick()
    stats = rig.stream.stats
    assert stats.malformed > 0
    assert stats.packets_in + stats.malformed + stats.strangers == 3000


def test_extension_csrc_and_padding_do_not_reach_the_audio():
    rig = Rig()
    frames = ulaw_frames(6, seed=21)
    for i, frame in enumerate(frames):
        header = struct.pack("!BBHII", 0xB2, 0, 500 + i, 7000 + 160 * i, PEER_SSRC)  # P, X, CC=2
        data = header + bytes(8) + b"\xbe\xde\x00\x01" + bytes(4) + frame + b"\x00\x00\x03"
        rig.stream.receive(data, REMOTE)
        rig.tick()
    assert len(rig.audio) == len(frames) - DELAY
    for pcm, frame in zip(rig.audio, frames, strict=False):
        assert np.array_equal(pcm, g711.decode("PCMU", frame))
