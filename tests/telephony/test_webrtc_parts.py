"""The browser channel's parts without a browser: the stream a browser Call plays and hears through
(resampling, playback, barge-in, the inactivity check) and the page's rate limit."""

import numpy as np
from fastapi.testclient import TestClient

from parley.media.g711 import FRAME_SAMPLES
from parley.telephony.manager import CallManager
from parley.telephony.webpage import RateLimit, create_page_app
from parley.telephony.webrtc import BrowserStream, WebRtcChannel


def tone(seconds: float, rate: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def test_the_browsers_48khz_audio_reaches_the_call_as_8khz_frames() -> None:
    frames: list[np.ndarray] = []
    stream = BrowserStream(lambda pcm: None)
    stream.on_audio = frames.append
    audio = tone(1.0, 48000)
    for start in range(0, len(audio), 960):  # 20 ms Opus frames, as aiortc decodes them
        stream.receive(audio[start : start + 960])
    assert len(frames) >= 48  # the resampler holds back at most 40 ms
    assert all(len(f) == FRAME_SAMPLES and f.dtype == np.int16 for f in frames)
    heard = np.concatenate(frames[5:]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(heard))
    assert abs(np.argmax(spectrum) * 8000 / len(heard) - 440) < 10  # the same tone, at 8 kHz
    assert np.sqrt(np.mean(heard**2)) > 4000


def test_playback_goes_out_a_frame_a_tick_and_barge_in_stops_it() -> None:
    sent: list[np.ndarray] = []
    stream = BrowserStream(sent.append)
    playback = stream.play(tone(0.05, 8000))  # 400 samples: 2 frames and a half
    assert stream.playing and playback.first_sent is None
    for _ in range(3):
        assert stream.next_out() is None  # nothing for the clock to encode: the frame went to send
    assert playback.finished and not playback.stopped and not stream.playing
    assert playback.first_sent is not None  # when its first frame left (a turn's first_audio_ms)
    assert [len(f) for f in sent] == [FRAME_SAMPLES] * 3
    assert not sent[2][80:].any()  # the last frame padded with silence
    stream.next_out()
    assert not sent[3].any()  # silence when nothing plays

    interrupted = stream.play(tone(1.0, 8000))
    stream.next_out()
    stream.stop_playback()
    assert interrupted.finished and interrupted.stopped and not stream.playing


def test_silence_goes_to_the_browser_as_digital_silence() -> None:
    """No dither: the Opus encoder sends 3-byte packets for silence, not 50-byte ones for noise."""
    from parley.telephony.webrtc import _OutgoingAudio

    out = _OutgoingAudio()
    for _ in range(10):
        out.push(np.zeros(FRAME_SAMPLES, dtype=np.int16))
    assert len(out._frames) >= 4 and not any(frame.any() for frame in out._frames)


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
    with TestClient(create_page_app(channel, rate_per_minute=3)) as client:
        statuses = [client.post("/offer", json={"type": "offer", "sdp": "v=0"}).status_code for _ in range(4)]
        assert statuses == [400, 400, 400, 429]
        assert "wait a minute" in client.post("/offer", json={}).json()["error"]
        page = client.get("/")
        assert page.status_code == 200 and 'src="assets/call.js"' in page.text
        assert client.get("/assets/call.js").status_code == 200
