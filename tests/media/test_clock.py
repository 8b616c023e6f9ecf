"""The media clock: its batched G.711 phases equal per-stream ticks, and its asyncio scheduling."""

import asyncio
import dataclasses
import gc
import math
import random
import time
import weakref
from collections import Counter
from itertools import pairwise

import numpy as np

from parley.media import clock as clock_module
from parley.media import g711
from parley.media.clock import (
    FULL_AFTER_ENDED,
    FULL_EVERY_S,
    YOUNG_THRESHOLD,
    MediaClock,
    _decode_and_deliver,
    _encode_and_send,
    _housekeeping_all,
    _next_out_all,
    _Phases,
    _pull_all,
)
from parley.media.dtmf import dtmf_payloads
from parley.media.rtcp import SenderReport, parse_compound
from parley.media.rtp import RtpPacket, RtpSender
from parley.media.stream import RtpStream

TICKS = 260  # past the first RTCP report (tick 250) and several inactivity checks


# -- batched phases vs. per-stream tick() ---------------------------------------------------------
class Recorder:
    def __init__(self):
        self.sent = []
        self.rtcp = []
        self.audio = []
        self.inactive = 0


def tone(samples, freq, amplitude=9000.0):
    return amplitude * np.sin(2 * np.pi * freq * np.arange(samples) / 8000.0)


# (codec, payload type, what the scenario does with it)
SPECS = [
    ("PCMU", 0, "receive"),
    ("PCMA", 8, "receive"),
    ("PCMU", 0, "lossy"),  # missing frames: concealment
    ("PCMA", 8, "lossy"),
    ("PCMU", 0, "odd"),  # odd-sized payloads come out of the jitter buffer
    ("PCMA", 8, "odd"),
    ("PCMU", 0, "reframe"),  # 30 ms packets
    ("PCMU", 0, "playback"),  # play() (bytes) and play_frame() (PCM, several dtypes), barge-in
    ("PCMA", 8, "playback"),
    ("PCMU", 0, "echo"),  # on_audio -> play_frame, as the echo app does
    ("PCMA", 8, "echo"),
    ("PCMU", 0, "held"),  # send=False, later resumed
    ("PCMA", 8, "held"),
    ("PCMU", 0, "dtmf"),  # sending RFC 4733 events
    ("PCMA", 8, "dtmf"),
    ("PCMU", 0, "silent"),  # nothing received: inactivity fires
]


def build_streams():
    now = [500.0]
    streams, recorders, peers = [], [], []
    for i, (codec, pt, _) in enumerate(SPECS):
        rec = Recorder()
        stream = RtpStream(
            codec,
            pt,
            ("192.0.2.1", 30000 + 2 * i),
            lambda data, addr, rec=rec: rec.sent.append((data, addr)),
            time=lambda: now[0],
            inactivity_timeout=1.5,
            send_rtcp=lambda data, addr, rec=rec: rec.rtcp.append((data, addr)),
        )
        stream.sender = RtpSender(pt, ssrc=0x1000 + i, sequence=65000 + 50 * i, timestamp=123456 * i)
        stream.on_audio = lambda pcm, rec=rec: rec.audio.append(pcm.copy())

        def on_inactive(rec=rec):
            rec.inactive += 1

        stream.on_inactive = on_inactive
        streams.append(stream)
        recorders.append(rec)
        peers.append(RtpSender(pt, ssrc=0x2000 + i, sequence=10 * i, timestamp=999 * i))
    return now, streams, recorders, peers


def drive(step):
    """Run the same scripted scenario, ``step(streams)`` doing one 20 ms tick of every stream."""
    now, streams, recorders, peers = build_streams()
    rng = random.Random(42)  # same draws for both runs
    source = ("198.51.100.9", 7000)
    for k in range(TICKS):
        now[0] += 0.02
        for i, (codec, _pt, role) in enumerate(SPECS):
            stream, peer = streams[i], peers[i]
            noise = bytes(rng.randrange(256) for _ in range(160))
            if role in ("receive", "echo", "held", "dtmf", "playback"):
                stream.receive(peer.packet(noise), source)
            elif role == "lossy":
                if rng.random() < 0.2:
                    peer.sequence += 1
                    peer.timestamp += 160
                else:
                    stream.receive(peer.packet(noise), source)
            elif role == "odd":
                # the jitter buffer only ever gets 160-byte frames from receive(), so push directly
                size = 160 if k % 3 else rng.choice([1, 80, 159, 161, 320])
                payload = bytes(rng.randrange(256) for _ in range(size))
                packet = RtpPacket(0, peer.sequence, peer.timestamp, peer.ssrc, payload)
                peer.sequence += 1
                peer.timestamp += 160
                stream.jitter.push(packet, int(k * 160))
            elif role == "reframe" and k % 3 != 2:
                stream.receive(peer.packet(noise + noise[:80], 240), source)
            if role == "playback":
                if k == 3:
                    stream.play(tone(1234, 400))
                    stream.play_frame(tone(160, 500).astype(np.int16))
                    stream.play_frame(tone(160, 600, 60000.0))  # float64, clipped when encoded
                    stream.play_frame(tone(160, 700).astype(np.int32))
                    stream.play_frame(tone(160, 800).astype(np.float32))
                elif k == 5:
                    stream.play(tone(8000, 300))
                elif k == 30:
                    stream.stop_playback()  # barge-in
                elif k == 40:
                    stream.play(g711.decode(codec, noise))
            elif role == "echo" and k == 2:
                stream.on_audio = lambda pcm, s=stream, rec=recorders[i]: (
                    rec.audio.append(pcm.copy()),
                    s.play_frame(pcm),
                )
            elif role == "held":
                if k == 10:
                    stream.update_remote(stream.remote, send=False, receive=True)
                elif k == 100:
                    stream.update_remote(stream.remote, send=True, receive=True)
            elif role == "dtmf" and k in (4, 120):
                stream.send_dtmf("1*9D" if k == 4 else "0")
        step(streams)
    return streams, recorders


def per_stream(streams):
    for stream in streams:
        stream.tick()


def batched(streams):
    """What MediaClock._tick does, minus the socket reads and the timing."""
    phases = [_Phases(stream) for stream in streams]
    _encode_and_send(phases, _next_out_all(phases))
    _decode_and_deliver(phases, _pull_all(phases))
    _housekeeping_all(phases)


def normalise_rtcp(data):
    """RTCP with the SR's wall-clock NTP time (taken from time.time()) zeroed."""
    return [
        dataclasses.replace(p, ntp_seconds=0, ntp_fraction=0) if isinstance(p, SenderReport) else p
        for p in parse_compound(data)
    ]


def test_batched_phases_equal_per_stream_ticks():
    _, expected = drive(per_stream)
    _, got = drive(batched)
    for (codec, _, role), want, have in zip(SPECS, expected, got, strict=True):
        label = f"{codec} {role}"
        assert have.sent == want.sent, label
        assert len(have.audio) == len(want.audio), label
        for a, b in zip(have.audio, want.audio, strict=True):
            assert a.dtype == b.dtype == np.int16 and np.array_equal(a, b), label
        assert [addr for _, addr in have.rtcp] == [addr for _, addr in want.rtcp], label
        assert [normalise_rtcp(d) for d, _ in have.rtcp] == [normalise_rtcp(d) for d, _ in want.rtcp], label
        assert have.inactive == want.inactive, label


def test_the_equivalence_scenario_exercises_every_case():
    """Guards the test above against a scenario that silently stopped covering something."""
    _, recorders = drive(batched)
    by_role = {}
    for (codec, _, role), rec in zip(SPECS, recorders, strict=True):
        by_role.setdefault(role, []).append((codec, rec))
    for role, entries in by_role.items():
        for codec, rec in entries:
            packets = [RtpPacket.parse(d) for d, _ in rec.sent]
            sizes = Counter(len(pcm) for pcm in rec.audio)
            if role == "odd":
                assert set(sizes) - {160}, codec
            elif role == "held":
                assert 0 < len(packets) < TICKS - 80, codec
            elif role == "dtmf":
                assert sum(p.payload_type == 101 for p in packets) == 5 * len(dtmf_payloads("1")), codec
            elif role == "playback":
                silence = g711.SILENCE[codec]
                assert sum(p.payload != silence for p in packets) == 28, codec
            elif role == "silent":
                assert rec.inactive == 1 and rec.audio == [], codec
            if role != "silent":
                assert sizes[160] > 100, (codec, role)
            if role not in ("held",):
                assert len(rec.rtcp) == 1, (codec, role)
            if role == "lossy":
                [block] = parse_compound(rec.rtcp[0][0])[0].reports
                assert block.cumulative_lost > 0
    pcma_receiver = recorders[SPECS.index(("PCMA", 8, "receive"))]
    assert {RtpPacket.parse(d).payload for d, _ in pcma_receiver.sent} == {g711.SILENCE["PCMA"]}


class FakeStream:
    """Just enough of a stream for the module functions."""

    def __init__(self, codec):
        self.codec = codec
        self.delivered = []
        self.sent = []

    def deliver(self, pcm):
        self.delivered.append(pcm)

    def send_payload(self, payload):
        self.sent.append(payload)

    def pull(self):
        return None

    def next_out(self):
        return None

    def housekeeping(self):
        pass


def test_decode_and_deliver_matches_g711_decode_per_stream():
    rng = random.Random(3)
    codecs = ["PCMU", "PCMA", "PCMA", "PCMU", "PCMU", "PCMA", "PCMU"]
    payloads = [
        bytes(rng.randrange(256) for _ in range(160)),
        bytes(rng.randrange(256) for _ in range(160)),
        None,
        bytes(rng.randrange(256) for _ in range(97)),
        b"",
        bytes(rng.randrange(256) for _ in range(161)),
        bytes(rng.randrange(256) for _ in range(160)),
    ]
    streams = [FakeStream(c) for c in codecs]
    _decode_and_deliver([_Phases(stream) for stream in streams], payloads)
    for stream, payload in zip(streams, payloads, strict=True):
        [got] = stream.delivered
        if payload is None:
            assert got is None
        else:
            want = g711.decode(stream.codec, payload)
            assert got.dtype == want.dtype and np.array_equal(got, want)


def test_encode_and_send_matches_g711_encode_per_stream():
    codecs = ["PCMU", "PCMA", "PCMU", "PCMA", "PCMU", "PCMA"]
    outgoing = [
        tone(160, 300).astype(np.int16),
        tone(160, 400).astype(np.int16),
        b"\x01" * 160,  # already encoded: sent as is
        None,  # nothing to send (held, or DTMF went out)
        tone(160, 500, 50000.0),  # float beyond int16: clipped
        tone(160, 600).astype(np.int32),
    ]
    expected = [
        o if o is None or isinstance(o, bytes) else g711.encode(c, o)
        for c, o in zip(codecs, outgoing, strict=True)
    ]
    streams = [FakeStream(c) for c in codecs]
    _encode_and_send([_Phases(stream) for stream in streams], list(outgoing))
    for stream, want in zip(streams, expected, strict=True):
        assert stream.sent == ([] if want is None else [want])


# -- MediaClock on a real event loop --------------------------------------------------------------
class CountingStream:
    codec = "PCMU"

    def __init__(self):
        self.calls = Counter()

    def pull(self):
        self.calls["pull"] += 1
        return b"\xff" * 160

    def deliver(self, pcm):
        assert pcm is not None and len(pcm) == 160
        self.calls["deliver"] += 1

    def next_out(self):
        self.calls["next_out"] += 1
        return np.zeros(160, dtype=np.int16)

    def send_payload(self, payload):
        assert payload == b"\xff" * 160
        self.calls["send_payload"] += 1

    def housekeeping(self):
        self.calls["housekeeping"] += 1

    @property
    def ticks(self):
        return self.calls["housekeeping"]


def real_stream(codec="PCMU", pt=0):
    sent = []
    stream = RtpStream(codec, pt, ("127.0.0.1", 9), lambda d, a: sent.append(d), time=time.monotonic)
    return stream, sent


async def wait_until(predicate, timeout=5.0):
    async def poll():
        while not predicate():
            await asyncio.sleep(0.002)

    await asyncio.wait_for(poll(), timeout)


async def test_every_stream_is_ticked_once_per_clock_tick():
    clock = MediaClock()
    stubs = [CountingStream() for _ in range(3)]
    (ulaw, ulaw_sent), (alaw, alaw_sent) = real_stream(), real_stream("PCMA", 8)
    try:
        for stream in [*stubs, ulaw, alaw]:
            clock.add(stream)
        await wait_until(lambda: clock.ticks >= 10)
        n = clock.ticks
        for stub in stubs:
            assert stub.calls == {
                phase: n for phase in ("pull", "deliver", "next_out", "send_payload", "housekeeping")
            }
        assert ulaw.stats.packets_out == alaw.stats.packets_out == n
        for sent, silence in ((ulaw_sent, b"\xff" * 160), (alaw_sent, b"\xd5" * 160)):
            packets = [RtpPacket.parse(d) for d in sent]
            assert all(p.payload == silence for p in packets)
            assert all((b.sequence - a.sequence) & 0xFFFF == 1 for a, b in pairwise(packets))
    finally:
        clock.stop()


async def test_remove_stops_ticking_a_stream_and_an_empty_clock_stops():
    clock = MediaClock()
    keep, drop = CountingStream(), CountingStream()
    try:
        clock.add(keep)
        clock.add(drop)
        await wait_until(lambda: clock.ticks >= 5)
        clock.remove(drop)
        dropped_at = drop.ticks
        mark = clock.ticks
        await wait_until(lambda: clock.ticks >= mark + 5)
        assert drop.ticks == dropped_at
        assert keep.ticks == clock.ticks
        clock.remove(keep)
        clock.remove(keep)  # removing twice is harmless
        kept_at = keep.ticks
        await wait_until(lambda: clock._handle is None)
        stopped_at = clock.ticks
        await asyncio.sleep(5 * clock.period)
        assert clock.ticks == stopped_at
        # adding a stream again restarts it
        again = CountingStream()
        clock.add(again)
        await wait_until(lambda: again.ticks >= 3)
        assert clock.ticks == stopped_at + again.ticks
        assert keep.ticks == kept_at and drop.ticks == dropped_at
    finally:
        clock.stop()


async def test_timing_figures_are_finite_and_non_negative():
    clock = MediaClock()
    assert clock.lateness_percentile(50) == 0.0
    assert clock.departure_jitter_percentile(50) == 0.0
    streams = [CountingStream() for _ in range(5)]
    try:
        for stream in streams:
            clock.add(stream)
        await wait_until(lambda: clock.ticks >= 15)
    finally:
        clock.stop()
    for q in (50, 90, 99, 100):
        for value in (
            clock.lateness_percentile(q),
            clock.duration_percentile(q),
            clock.departure_jitter_percentile(q),
        ):
            assert isinstance(value, float) and math.isfinite(value) and value >= 0.0, q
    assert clock.skipped >= 0


async def test_a_failing_stream_callback_does_not_stop_the_clock():
    clock = MediaClock()
    faulty, _ = real_stream()
    peer = RtpSender(0, ssrc=1, sequence=1, timestamp=1)
    for _ in range(5):
        faulty.receive(peer.packet(b"\x00" * 160), ("127.0.0.1", 9))

    def broken(pcm):
        raise RuntimeError("application bug")

    faulty.on_audio = broken
    healthy = CountingStream()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: None)  # keep the expected traceback out of the log
    try:
        clock.add(faulty)
        clock.add(healthy)
        await wait_until(lambda: healthy.ticks >= 10, timeout=1.0)
    finally:
        clock.stop()
        loop.set_exception_handler(None)


class GarbageMaker(CountingStream):
    """A stream whose consumer leaves reference cycles behind every tick (as callbacks often do)."""

    def deliver(self, pcm):
        super().deliver(pcm)
        for _ in range(300):
            cycle = []
            cycle.append(cycle)


def collections_so_far():
    return sum(stats["collections"] for stats in gc.get_stats())


async def test_while_a_clock_ticks_it_runs_the_garbage_collector_itself_and_hands_it_back_after():
    assert gc.isenabled()
    clock, other = MediaClock(), MediaClock()
    try:
        clock.add(GarbageMaker())
        other.add(CountingStream())
        await wait_until(lambda: clock.ticks >= 2)
        assert not gc.isenabled()  # no automatic collection can start inside a tick
        before = collections_so_far()
        await wait_until(lambda: clock.ticks >= 30)
        assert collections_so_far() > before  # ... the clocks collect after their sends instead
        assert gc.get_count()[0] < 2 * YOUNG_THRESHOLD
        clock.stop()
        assert not gc.isenabled()  # the other clock still ticks
    finally:
        clock.stop()
        other.stop()
    assert gc.isenabled()


async def test_a_clock_that_never_idles_still_gets_a_full_collection_every_few_minutes():
    pacer = clock_module._GC
    clock = MediaClock()
    try:
        clock.add(GarbageMaker())
        await wait_until(lambda: clock.ticks >= 2)
        pauses = len(pacer.full_pauses)
        pacer.last_full -= FULL_EVERY_S  # as if the clock had been busy for that long
        await wait_until(lambda: len(pacer.full_pauses) > pauses)
        assert time.monotonic() - pacer.last_full < 1.0
    finally:
        clock.stop()


class EndedCall:
    """What an ended agent call leaves: objects that refer to each other (a turn and its workers)."""

    def __init__(self) -> None:
        self.me = self


async def test_the_cyclic_garbage_of_ended_calls_is_collected_while_calls_go_on():
    """A server that is never idle: a full collection runs once FULL_AFTER_ENDED streams have ended,
    not minutes later (an agent call's cycles had piled up for 10 minutes)."""
    pacer = clock_module._GC
    clock = MediaClock()
    try:
        clock.add(GarbageMaker())  # always ticking: never idle
        await wait_until(lambda: clock.ticks >= 2)
        ended = EndedCall()
        gc.collect(1)  # survives two young collections: in the oldest generation, as a call's objects are
        dead = weakref.ref(ended)
        del ended
        pauses = len(pacer.full_pauses)
        pacer.ended = 0
        for _ in range(FULL_AFTER_ENDED - 1):
            stream = CountingStream()
            clock.add(stream)
            clock.remove(stream)
        ticks = clock.ticks
        await wait_until(lambda: clock.ticks >= ticks + 10)
        assert dead() is not None and len(pacer.full_pauses) == pauses  # young collections do not free it
        stream = CountingStream()
        clock.add(stream)
        clock.remove(stream)
        await wait_until(lambda: dead() is None)
        assert len(pacer.full_pauses) == pauses + 1 and pacer.ended == 0
    finally:
        clock.stop()
