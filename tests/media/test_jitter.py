import random
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parley.media.jitter import JitterBuffer, conceal
from parley.media.rtp import RtpPacket

FRAME = 160
TS0 = 0xFFFFF000  # wraps during most tests


def packet(k, ssrc=1, ts0=TS0, seq0=65500, marker=False):
    return RtpPacket(
        0, (seq0 + k) & 0xFFFF, (ts0 + k * FRAME) & 0xFFFFFFFF, ssrc, struct.pack("!i", k), marker
    )


def frame_id(payload):
    return None if payload is None else struct.unpack("!i", payload)[0]


def run(jb, arrivals, ticks, phase=80):
    """Push (arrival_time, packet) pairs and pop every 20 ms (at ``j * 160 + phase``); return frame ids."""
    arrivals = sorted(arrivals, key=lambda a: a[0])
    out = []
    i = 0
    for j in range(ticks):
        now = j * FRAME + phase
        while i < len(arrivals) and arrivals[i][0] <= now:
            jb.push(arrivals[i][1], arrivals[i][0])
            i += 1
        out.append(frame_id(jb.pop()))
    return out


def stream(n, delay=lambda k: 0, drop=(), interval=FRAME, **kw):
    return [(k * interval + delay(k), packet(k, **kw)) for k in range(n) if k not in drop]


def played(out):
    return [k for k in out if k is not None]


def test_pop_before_first_packet_counts_nothing():
    jb = JitterBuffer()
    assert [jb.pop() for _ in range(10)] == [None] * 10
    s = jb.stats
    assert (s.received, s.played, s.lost, s.underruns) == (0, 0, 0, 0)


def test_in_order_perfect_network():
    jb = JitterBuffer(initial_delay=2)
    out = run(jb, stream(100), 110)
    assert out[:2] == [None, None]  # initial playout delay
    assert out[2:102] == list(range(100))
    s = jb.stats
    assert (s.received, s.played, s.lost, s.late, s.duplicates, s.overflow_drops) == (100, 100, 0, 0, 0, 0)
    assert s.jitter_ms == 0.0


def test_reordered_packets_are_played_in_order():
    # every pair arrives swapped, within the playout delay
    arrivals = [(k * FRAME + (FRAME if k % 2 == 0 else 0), packet(k)) for k in range(100)]
    jb = JitterBuffer(initial_delay=2)
    out = run(jb, arrivals, 110)
    assert played(out) == list(range(100))
    assert jb.stats.late == 0 and jb.stats.lost == 0


def test_isolated_losses_are_reported_as_missing_slots():
    lost = {10, 30, 31, 50}
    jb = JitterBuffer(initial_delay=2)
    out = run(jb, stream(80, drop=lost), 90)
    start = out.index(0)
    for k in range(80):
        assert out[start + k] == (None if k in lost else k)
    assert jb.stats.lost == len(lost)
    assert jb.stats.played == 80 - len(lost)


def test_duplicates_are_dropped():
    arrivals = stream(50) + [(k * FRAME + 40, packet(k)) for k in range(0, 50, 5)]
    jb = JitterBuffer()
    out = run(jb, arrivals, 60)
    assert played(out) == list(range(50))
    assert jb.stats.duplicates == 10
    assert jb.stats.received == 60


def test_duplicate_of_played_frame_is_not_late():
    jb = JitterBuffer(initial_delay=1)
    out = run(jb, [*stream(10), (9 * FRAME + 10, packet(3))], 15)
    assert played(out) == list(range(10))
    assert jb.stats.duplicates == 1 and jb.stats.late == 0


def test_late_packet_dropped_counted_and_delay_grows():
    delays = {20: 5 * FRAME}  # 100 ms late while the buffer holds 40 ms
    jb = JitterBuffer(initial_delay=2, max_delay=8)
    out = run(jb, stream(60, delay=lambda k: delays.get(k, 0)), 70)
    assert 20 not in played(out)
    s = jb.stats
    assert s.late == 1 and s.lost == 1
    assert s.current_delay_frames == 3
    assert s.stretches == 1
    assert played(out) == [k for k in range(60) if k != 20]


def test_delayed_packet_with_empty_buffer_is_waited_for():
    # all packets after 20 are also delayed (a delay spike): the buffer holds instead of concealing
    jb = JitterBuffer(initial_delay=1)
    out = run(jb, stream(60, delay=lambda k: 3 * FRAME if k >= 20 else 0), 70)
    assert played(out) == list(range(60))
    s = jb.stats
    trailing = len(out) - 1 - max(i for i, k in enumerate(out) if k is not None)
    assert s.lost == 0 and s.late == 0 and s.underruns - trailing == 2
    assert s.current_delay_frames == 2  # grew once: the awaited packet was merely late


def test_burst_overflow_keeps_latency_bounded():
    # 30 packets held back and delivered at once
    arrivals = [(k * FRAME if k < 10 or k >= 40 else 40 * FRAME, packet(k)) for k in range(80)]
    jb = JitterBuffer(initial_delay=2, max_delay=8)
    out = run(jb, arrivals, 90)
    s = jb.stats
    assert s.overflow_drops > 0
    assert jb.buffered <= 9
    seq = played(out)
    assert seq == sorted(seq) and seq[-1] == 79
    assert s.played + s.overflow_drops + s.shrinks + s.lost >= 80 - 1


@pytest.mark.parametrize("ppm", [2000, -2000])
def test_clock_drift_is_absorbed(ppm):
    n = 6000
    interval = FRAME * 1_000_000 / (1_000_000 + ppm)  # sender clock 0.2 % fast or slow
    arrivals = [(int(k * interval), packet(k)) for k in range(n)]
    ticks = int(n * interval / FRAME) + 5
    jb = JitterBuffer(initial_delay=2, max_delay=8)
    levels = []
    out = []
    arrivals.sort(key=lambda a: a[0])
    i = 0
    for j in range(ticks):
        now = j * FRAME + 80
        while i < n and arrivals[i][0] <= now:
            jb.push(arrivals[i][1], arrivals[i][0])
            i += 1
        out.append(frame_id(jb.pop()))
        levels.append(jb.buffered)
    s = jb.stats
    assert max(levels[100:]) <= 4  # latency stays bounded, no creeping growth
    seq = played(out)
    assert seq == sorted(seq)
    drift = n * abs(ppm) / 1_000_000  # frames of drift over the run
    if ppm > 0:  # sender fast: about one frame discarded per frame of drift, nothing else lost
        assert drift - 3 <= s.shrinks + s.overflow_drops <= drift + 3
        assert s.lost == 0 and s.overflow_drops == 0
    else:  # sender slow: we wait (underrun ticks) and play every frame
        assert s.played == n and s.lost == 0
        assert s.underruns >= drift - 3


def test_ssrc_change_resyncs():
    first = stream(30)
    second = [(30 * FRAME + k * FRAME, packet(1000 + k, ssrc=2, ts0=12345, seq0=7)) for k in range(30)]
    jb = JitterBuffer(initial_delay=2)
    out = run(jb, first + second, 70)
    seq = played(out)
    assert seq[:28] == list(range(28))
    assert seq[-30:] == list(range(1000, 1030))
    s = jb.stats
    assert s.resyncs == 1 and s.lost == 0


def test_talk_spurt_after_silence_resyncs_without_loss():
    # 50 frames, then 1 s of silence suppression (timestamps jump, sequence continues), then 50 more
    spurt1 = [(k * FRAME, packet(k)) for k in range(50)]
    spurt2 = [
        (
            (k + 50) * FRAME,
            RtpPacket(
                0,
                (65500 + k) & 0xFFFF,
                (TS0 + (k + 50) * FRAME) & 0xFFFFFFFF,
                1,
                struct.pack("!I", k),
                k == 50,
            ),
        )
        for k in range(50, 100)
    ]
    jb = JitterBuffer(initial_delay=2)
    out = run(jb, spurt1 + spurt2, 160)
    assert played(out) == list(range(100))
    s = jb.stats
    assert s.lost == 0 and s.resyncs == 1
    start2 = out.index(50)
    assert out[start2 - 1] is None and out[start2 - 2] is None  # re-buffered to the target delay


def test_sender_timestamp_jump_backwards_resyncs():
    a = stream(20)
    b = [(20 * FRAME + k * FRAME, packet(500 + k, ts0=TS0 - 10**6, seq0=65520)) for k in range(20)]
    jb = JitterBuffer(initial_delay=1)
    out = run(jb, a + b, 50)
    assert played(out)[-20:] == list(range(500, 520))
    assert jb.stats.resyncs == 1 and jb.stats.late == 0


def network(n, rng, jitter_frames):
    """Deterministic jittery network: each packet delayed by a uniform 0..jitter_frames frames."""
    return [(k * FRAME + int(rng.random() * jitter_frames * FRAME), packet(k)) for k in range(n)]


def test_adapts_up_under_jitter_then_down_when_calm():
    rng = random.Random(1234)
    noisy = network(1500, rng, 4)  # up to 80 ms of jitter for 30 s
    calm = [(k * FRAME + 7, packet(k)) for k in range(1500, 4500)]  # then 60 s of a clean network
    jb = JitterBuffer(min_delay=1, max_delay=8, initial_delay=1)
    targets = []
    arrivals = sorted(noisy + calm, key=lambda a: a[0])
    i = 0
    out = []
    for j in range(4510):
        now = j * FRAME + 80
        while i < len(arrivals) and arrivals[i][0] <= now:
            jb.push(arrivals[i][1], arrivals[i][0])
            i += 1
        out.append(frame_id(jb.pop()))
        targets.append(jb.stats.current_delay_frames)
    assert max(targets[:1500]) >= 4  # grew to cover the ~80 ms spread
    assert targets[1400] >= 4
    assert targets[-1] <= 2  # shrank back on the calm network
    late_noisy = jb.stats.late
    assert late_noisy < 0.02 * 1500  # few packets lost to lateness once adapted
    seq = played(out)
    assert seq == sorted(seq)
    assert len(seq) > 4500 - 100
    assert jb.stats.jitter_ms < 2.0  # the estimate decayed on the calm network


def test_delay_never_exceeds_max():
    rng = random.Random(99)
    arrivals = network(2000, rng, 20)  # 400 ms of jitter, far beyond max_delay
    jb = JitterBuffer(min_delay=1, max_delay=5)
    arrivals.sort(key=lambda a: a[0])
    i = 0
    for j in range(2050):
        now = j * FRAME + 80
        while i < len(arrivals) and arrivals[i][0] <= now:
            jb.push(arrivals[i][1], arrivals[i][0])
            i += 1
            assert jb.buffered <= 6
        jb.pop()
        assert jb.stats.current_delay_frames <= 5
    s = jb.stats
    assert s.late > 0
    assert s.received == 2000


def test_min_delay_respected():
    jb = JitterBuffer(min_delay=3, max_delay=6, initial_delay=1)
    run(jb, stream(2000), 2010)
    assert jb.stats.current_delay_frames == 3


def test_invalid_parameters():
    with pytest.raises(ValueError):
        JitterBuffer(min_delay=5, max_delay=2)
    with pytest.raises(ValueError):
        JitterBuffer(frame_samples=0)


def test_conceal():
    last = np.full(160, 10000, dtype=np.int16)
    first = conceal(last, 1)
    assert first.dtype == np.int16 and first.shape == (160,)
    levels = [int(conceal(last, n)[0]) for n in (1, 2, 3)]
    assert 10000 > levels[0] > levels[1] > levels[2] > 0
    assert not conceal(last, 4).any() and not conceal(last, 100).any()
    assert not conceal(None, 1).any() and conceal(None, 1).shape == (160,)
    assert conceal(None, 1, frame_samples=80).shape == (80,)
    neg = np.full(160, -32768, dtype=np.int16)
    assert conceal(neg, 1)[0] < 0
    assert last[0] == 10000  # input untouched


@given(
    st.lists(
        st.one_of(
            st.tuples(st.integers(0, 3), st.integers(-40, 120), st.integers(-400, 400)),
            st.none(),
        ),
        max_size=300,
    )
)
def test_random_operations_keep_invariants(ops):
    """push(ssrc, frame offset, arrival jitter) or pop (None) in any order never breaks the buffer."""
    jb = JitterBuffer(min_delay=1, max_delay=6)
    tick = 0
    for op in ops:
        if op is None:
            payload = jb.pop()
            assert payload is None or len(payload) == 4
            tick += 1
        else:
            ssrc, k, jitter = op
            jb.push(packet(k, ssrc=ssrc), tick * FRAME + jitter)
        assert jb.buffered <= jb.max_delay + 1
        assert jb.min_delay <= jb.stats.current_delay_frames <= jb.max_delay
    s = jb.stats
    pushes = sum(op is not None for op in ops)
    assert s.received == pushes
    assert s.played + s.duplicates + s.late + s.overflow_drops + s.shrinks + jb.buffered <= pushes
