"""The media hot path as built by Cython: really compiled, current, and the same on every path.

``rtp``, ``jitter``, ``stream`` and ``clock`` are compiled from their ``.py`` sources (typed by the
``.pxd`` files beside them), and ``datagram_c`` from its ``.pyx``, when the package is installed;
so is the load tester's per-packet tap (``parley.loadtest.listen``). The receive path has a C fast
path for plain packets and the general parser for the rest; both must give the same result.
"""

import importlib
from pathlib import Path

import numpy as np
import pytest

from parley.media import g711
from parley.media.clock import MediaClock
from parley.media.jitter import JitterBuffer
from parley.media.rtp import ReceptionStats, RtpPacket, RtpSender
from parley.media.stream import RtpStream

HOT_PATH = [f"parley.media.{name}" for name in ("rtp", "jitter", "stream", "clock", "datagram_c")]
HOT_PATH += ["parley.loadtest.listen"]
PEER = ("192.0.2.10", 40000)


@pytest.mark.parametrize("name", HOT_PATH)
def test_hot_path_module_is_compiled_and_newer_than_its_sources(name):
    module = importlib.import_module(name)
    built = Path(module.__file__)
    name = name.rpartition(".")[2]
    assert built.suffix == ".so", f"{module.__name__} runs interpreted: reinstall with `pip install -e .`"
    for source in (built.parent / f"{name}{suffix}" for suffix in (".py", ".pxd", ".pyx")):
        if source.exists():
            assert source.stat().st_mtime <= built.stat().st_mtime, (
                f"{source.name} changed after {built.name} was built: rerun `pip install -e .`"
            )


def with_csrc(data: bytes) -> bytes:
    """The same RTP packet with one CSRC added, so it takes the general parser."""
    return bytes([data[0] | 1]) + data[1:12] + b"\x00\x00\x00\x07" + data[12:]


def play_through(packets: list[bytes]) -> tuple[RtpStream, list[np.ndarray]]:
    now = [100.0]
    audio: list[np.ndarray] = []
    stream = RtpStream("PCMU", 0, PEER, lambda data, addr: None, time=lambda: now[0])
    stream.on_audio = audio.append
    for data in packets:
        stream.receive(data, PEER)
        now[0] += 0.02
        stream.tick()
    stream.tick()
    stream.tick()
    return stream, audio


def test_fast_and_general_receive_paths_agree():
    rng = np.random.default_rng(7)
    # unsigned extremes: SSRC 0xFFFFFFFF and a timestamp wrapping past 2^32 in the middle
    peer = RtpSender(0, ssrc=0xFFFFFFFF, sequence=65530, timestamp=2**32 - 5 * 160)
    packets = [peer.packet(rng.integers(0, 127, 160, dtype=np.uint8).tobytes()) for _ in range(12)]
    packets[5], packets[6] = packets[6], packets[5]  # reordered
    packets.insert(8, packets[8])  # duplicated
    fast, fast_audio = play_through(packets)
    general, general_audio = play_through([with_csrc(data) for data in packets])
    assert len(fast_audio) == len(general_audio) >= 12
    assert all(np.array_equal(a, b) for a, b in zip(fast_audio, general_audio, strict=True))
    for stream in (fast, general):
        assert stream.reception.ssrc == 0xFFFFFFFF
        # the first packet is on probation, the duplicate counts as received (RFC 3550 6.4.1)
        assert (stream.reception.expected, stream.reception.received) == (11, 12)
        assert stream.reception.duplicates == 1
        assert stream.jitter.stats.duplicates == 1
        assert stream.stats.packets_in == 13


def test_header_entry_points_equal_the_packet_ones():
    by_packet, by_header = ReceptionStats(), ReceptionStats()
    buffer_a, buffer_b = JitterBuffer(), JitterBuffer()
    assert by_packet.ssrc is None and by_packet.expected == 0
    sequences = [10, 11, 13, 12, 12, 40000, 40001, 14]
    for k, seq in enumerate(sequences):
        packet = RtpPacket(0, seq, (seq * 160) & 0xFFFFFFFF, 0x80000000, bytes([k]) * 160)
        arrival = 1000 + 160 * k + (k % 3) * 7
        header = (seq, packet.timestamp, packet.ssrc)
        assert by_packet.update(packet, arrival) == by_header.update_header(*header, arrival)
        buffer_a.push(packet, arrival)
        buffer_b.insert(packet.payload, packet.timestamp, packet.ssrc, arrival)
        assert buffer_a.pop() == buffer_b.pop()
    assert (by_packet.lost, by_packet.jitter, by_packet.extended_max_seq) == (
        by_header.lost, by_header.jitter, by_header.extended_max_seq,
    )  # fmt: skip
    assert buffer_a.stats == buffer_b.stats


def test_duplicate_detection_reaches_63_packets_back_and_stops_at_64():
    stats = ReceptionStats(min_sequential=1)
    for seq in range(100):
        stats.update_header(seq, seq * 160, 5, seq * 160)
    stats.update_header(99 - 63, 0, 5, 0)  # still in the 64-packet window: a duplicate
    stats.update_header(99 - 64, 0, 5, 0)  # beyond it: counted as out of order
    assert (stats.duplicates, stats.out_of_order) == (1, 1)


def test_clock_encodes_int16_and_other_pcm_frames_in_one_tick():
    """int16 frames are joined as bytes; any other dtype takes numpy's concatenate, same result."""
    sent: list[bytes] = []
    clock = MediaClock()
    streams = [
        RtpStream("PCMU", 0, PEER, lambda data, addr: sent.append(data), time=lambda: 0.0) for _ in range(3)
    ]
    ramp = np.linspace(-20000, 20000, 160)
    streams[0].play_frame(ramp.astype(np.int16))
    streams[1].play_frame(ramp)  # float64: clipped and rounded by g711.encode
    streams[2].play_frame(ramp.astype(np.int16)[::-1])  # a reversed view: not C-contiguous
    for stream in streams:
        clock.streams[id(stream)] = stream
    clock._run_streams(0.0, 0.0)
    clock._run_streams(0.02, 0.0)  # all three in one batch, then the silence of the next tick
    payloads = [RtpPacket.parse(data).payload for data in sent[:3]]
    assert payloads[0] == g711.encode("PCMU", ramp.astype(np.int16))
    assert payloads[1] == g711.encode("PCMU", ramp)
    assert payloads[2] == g711.encode("PCMU", ramp.astype(np.int16)[::-1].copy())
    assert [RtpPacket.parse(data).payload for data in sent[3:]] == [g711.SILENCE_PCMU] * 3
