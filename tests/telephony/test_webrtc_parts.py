"""The browser channel's parts without a browser: the stream a browser Call plays and hears through
(Opus both ways, the jitter buffer, RFC 4733 keys, playback, barge-in, the inactivity check) and the
page's rate limit."""

import fractions

import av
import numpy as np
from fastapi.testclient import TestClient

from parley.media.g711 import FRAME_SAMPLES
from parley.media.stream import Playback
from parley.telephony.manager import CallManager
from parley.telephony.webpage import RateLimit, create_page_app
from parley.telephony.webrtc import OPUS_FRAME, BrowserStream, WebRtcChannel


def tone(seconds: float, rate: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def browser_opus(audio: np.ndarray) -> list[bytes]:
    """48 kHz audio as a browser sends it: 20 ms Opus packets (aiortc's encoder: 48 kHz stereo)."""
    from aiortc.codecs.opus import OpusEncoder

    encoder, packets = OpusEncoder(), []
    for i, start in enumerate(range(0, len(audio), OPUS_FRAME)):
        frame = av.AudioFrame.from_ndarray(audio[start : start + OPUS_FRAME].reshape(1, -1), layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, i * OPUS_FRAME, fractions.Fraction(1, 48000)
        packets += encoder.encode(frame)[0]
    return packets


def tick(stream: BrowserStream) -> None:
    """The media clock's receiving phases for one stream."""
    stream.pull()
    stream.deliver(None)


def test_the_browsers_opus_reaches_the_call_as_8khz_frames_one_a_tick() -> None:
    frames: list[np.ndarray] = []
    stream = BrowserStream(lambda packet, starts: None)
    stream.on_audio = frames.append
    packets = browser_opus(tone(1.0, 48000))
    for i, packet in enumerate(packets):  # arriving in real time, played out by the clock
        stream.receive_opus(packet, 5000 + i * OPUS_FRAME, 7, stream.started + i * 0.02)
        tick(stream)
    for _ in range(3):
        tick(stream)
    assert len(frames) >= len(packets) and all(
        len(f) == FRAME_SAMPLES and f.dtype == np.int16 for f in frames
    )
    heard = np.concatenate(frames[5:-3]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(heard))
    assert abs(np.argmax(spectrum) * 8000 / len(heard) - 440) < 10  # the same tone, at 8 kHz
    assert np.sqrt(np.mean(heard**2)) > 4000
    assert stream.jitter.stats.lost == 0


def test_a_lost_or_broken_packet_is_concealed_and_the_call_goes_on() -> None:
    frames: list[np.ndarray] = []
    stream = BrowserStream(lambda packet, starts: None)
    stream.on_audio = frames.append
    packets = browser_opus(tone(0.4, 48000))
    packets[10] = b"\xff\xff not opus"  # a packet libopus refuses
    del packets[12]  # and one that never came
    for i, packet in enumerate(packets):
        stream.receive_opus(
            packet, i * OPUS_FRAME if i < 12 else (i + 1) * OPUS_FRAME, 7, stream.started + i * 0.02
        )
        tick(stream)
    for _ in range(3):
        tick(stream)
    assert stream.opus_in.errors == 1
    assert len(frames) >= 20  # a frame for every slot: concealment for the broken and the missing one
    assert all(len(f) == FRAME_SAMPLES for f in frames)


def test_rfc4733_events_become_one_key_each() -> None:
    from parley.media.dtmf import DtmfReceiver, dtmf_payloads
    from parley.media.rtp import RtpPacket

    keys: list[str] = []
    stream = BrowserStream(lambda packet, starts: None)
    stream.on_dtmf = keys.append
    stream.dtmf[126] = DtmfReceiver(8000)
    sequence = 0
    for n, digit in enumerate("42#"):
        for payload, marker in dtmf_payloads(digit, duration_ms=100):  # start, updates, 3 end packets
            sequence += 1
            stream.receive_event(126, RtpPacket(126, sequence, 1000 + n * 4000, 9, payload, marker))
    stream.receive_event(
        127, RtpPacket(127, sequence + 1, 99999, 9, b"\x05\x80\x00\xa0", True)
    )  # not negotiated
    stream.receive_event(126, RtpPacket(126, sequence + 2, 99999, 9, b"\x05", True))  # too short: dropped
    assert keys == ["4", "2", "#"] and stream.dtmf_rfc4733 == 3


def test_playback_goes_out_a_packet_a_tick_and_barge_in_stops_it() -> None:
    sent: list[av.Packet] = []
    starts: list[Playback | None] = []
    stream = BrowserStream(lambda packet, playback: (sent.append(packet), starts.append(playback)))
    playback = stream.play(tone(0.05, 8000))  # 400 samples: 2 frames and a half
    assert stream.playing and playback.first_sent is None
    for _ in range(3):
        assert stream.next_out() is None  # nothing for the clock to encode: the packet went to send
    assert playback.finished and not playback.stopped and not stream.playing
    assert playback.first_sent is not None  # when its first frame left (a turn's first_audio_ms)
    assert len(sent) == 3 and [p.pts for p in sent] == [0, FRAME_SAMPLES, 2 * FRAME_SAMPLES]
    assert starts == [playback, None, None]  # the packet to stamp when aiortc takes it
    assert all(len(bytes(p)) > 20 for p in sent)  # the tone
    for _ in range(30):  # the codec's memory of the tone dies out over about twelve frames
        stream.next_out()
    # silent frames until the encoder's own silence packet, then nothing while nothing plays
    assert len(bytes(sent[-1])) <= 3 and all(len(bytes(p)) > 3 for p in sent[:-1])
    assert len(sent) == stream.frames_out < 33 and stream.frames_skipped == 33 - len(sent)
    interrupted = stream.play(tone(1.0, 8000))
    stream.next_out()
    assert sent[-1].pts == 33 * FRAME_SAMPLES  # the RTP timestamp leaps over the gap (as with DTX)
    assert starts[-1] is interrupted
    stream.stop_playback()
    assert interrupted.finished and interrupted.stopped and not stream.playing


def test_nothing_is_sent_before_the_first_audio_nor_long_after_each() -> None:
    sent: list[av.Packet] = []
    stream = BrowserStream(lambda packet, starts: sent.append(packet))
    for _ in range(50):  # the call is up, the agent not speaking yet
        stream.next_out()
    assert sent == [] and stream.frames_skipped == 50
    for _ in range(3):  # a live source's frames (echo) go out even when they are silent
        stream.play_frame(np.zeros(FRAME_SAMPLES, dtype=np.int16))
        stream.next_out()
    assert [p.pts for p in sent] == [(50 + i) * FRAME_SAMPLES for i in range(3)]


def test_what_the_call_plays_reaches_a_browsers_decoder_as_the_same_tone() -> None:
    from aiortc.codecs.opus import OpusDecoder
    from aiortc.jitterbuffer import JitterFrame

    sent: list[av.Packet] = []
    stream = BrowserStream(lambda packet, starts: sent.append(packet))
    stream.play(tone(1.0, 8000))
    for _ in range(50):
        stream.next_out()
    decoder = OpusDecoder()  # as a browser decodes: 48 kHz
    pcm = [
        frame.to_ndarray().reshape(-1, 2)[:, 0]
        for packet in sent
        for frame in decoder.decode(JitterFrame(bytes(packet), packet.pts * 6))
    ]
    heard = np.concatenate(pcm[5:]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(heard))
    assert abs(np.argmax(spectrum) * 48000 / len(heard) - 440) < 10
    assert np.sqrt(np.mean(heard**2)) > 3000


def test_a_stream_that_hears_nothing_reports_it_once() -> None:
    gone: list[bool] = []
    stream = BrowserStream(lambda pcm: None, inactivity_timeout=0.0)
    stream.on_inactive = lambda: gone.append(True)
    for _ in range(150):
        stream.pull()
        stream.housekeeping()
    assert gone == [True]


def test_the_rate_limit_allows_a_burst_then_refills() -> None:
    now = [0.0]
    limit = RateLimit(per_minute=6, clock=lambda: now[0])
    assert [limit.allow("a") for _ in range(7)] == [True] * 6 + [False]
    assert limit.allow("b")  # per address
    now[0] += 10.0  # one offer's worth (6 a minute)
    assert limit.allow("a") and not limit.allow("a")


def test_the_page_refuses_an_address_over_its_rate_with_429() -> None:
    channel = WebRtcChannel(CallManager(None))
    with TestClient(create_page_app(channel.answer, rate_per_minute=3)) as client:
        statuses = [client.post("/offer", json={"type": "offer", "sdp": "v=0"}).status_code for _ in range(4)]
        assert statuses == [400, 400, 400, 429]
        assert "wait a minute" in client.post("/offer", json={}).json()["error"]
        page = client.get("/")
        assert page.status_code == 200 and 'src="assets/call.js"' in page.text
        assert client.get("/assets/call.js").status_code == 200
