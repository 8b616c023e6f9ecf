"""Both VADs on real telephone speech (flite voices through G.711): speech found, silence and noise not."""

from __future__ import annotations

import numpy as np
import pytest

from parley.speech.vad import DEFAULT_VAD, SileroVad, Vad, WebRtcVad, make_vad, silero_model_path

from .vad_audio import (
    FRAME,
    HAVE_SILERO,
    VAD_NAMES,
    flite,
    frames,
    n_frames,
    needs_flite,
    noise,
    rms,
    silence,
)

SENTENCES = [
    ("my account number is four two seven nine one", "kal"),
    ("yes that's right", "slt"),
    ("I would like to change my address please", "awb"),
    ("the twenty third of March", "rms"),
]


def decisions(vad: Vad, pcm_frames: list[np.ndarray]) -> np.ndarray:
    return np.array([vad.speech_probability(frame) >= 0.5 for frame in pcm_frames])


@needs_flite
@pytest.mark.parametrize("name", VAD_NAMES)
@pytest.mark.parametrize(("text", "voice"), SENTENCES)
def test_detects_flite_speech_and_rejects_silence(name, text, voice):
    speech = flite(text, voice)
    vad = make_vad(name)
    flags = decisions(vad, frames(silence(1000), speech, silence(1000)))
    lead, body, tail = flags[:50], flags[50 : 50 + n_frames(speech)], flags[50 + n_frames(speech) :]
    reference = np.array([rms(frame) > 100 for frame in frames(speech)])  # energy on the speech itself
    assert not lead.any()
    assert body[reference].mean() > 0.85, f"{name} found {body[reference].mean():.0%} of loud speech frames"
    assert not tail[10:].any(), "still 'speech' 200 ms into silence"


@pytest.mark.parametrize("name", VAD_NAMES)
def test_rejects_line_noise(name):
    vad = make_vad(name)
    flags = decisions(vad, frames(noise(5000, -45.0, seed=1)))
    assert flags.mean() < 0.02


@needs_flite
@pytest.mark.parametrize("name", VAD_NAMES)
def test_reset_makes_it_deterministic(name):
    pcm_frames = frames(silence(200), flite("can you hear me"), silence(400))
    vad = make_vad(name)
    first = [vad.speech_probability(frame) for frame in pcm_frames]
    vad.reset()
    assert [vad.speech_probability(frame) for frame in pcm_frames] == first


def test_make_vad_names_and_default():
    assert DEFAULT_VAD == "webrtc"
    vad = make_vad()
    assert isinstance(vad, WebRtcVad) and isinstance(vad, Vad)
    assert vad.aggressiveness == 2
    assert make_vad("webrtc", aggressiveness=3).aggressiveness == 3
    with pytest.raises(ValueError, match="unknown VAD"):
        make_vad("nope")
    with pytest.raises(ValueError):
        WebRtcVad(4)
    with pytest.raises(ValueError, match="160-sample"):
        vad.speech_probability(np.zeros(FRAME * 2, dtype=np.int16))


@pytest.mark.skipif(not HAVE_SILERO, reason="pip install --no-deps silero-vad")
def test_silero_runs_the_wheel_model_at_8khz_without_torch():
    import sys

    path = silero_model_path()
    assert path.name == "silero_vad.onnx" and path.is_file()
    vad = make_vad("silero")
    assert isinstance(vad, SileroVad) and isinstance(vad, Vad)
    assert "torch" not in sys.modules and "silero_vad" not in sys.modules
    # Two 20 ms frames make 320 samples: one 256-sample window ran, 64 samples wait for the next.
    vad.speech_probability(np.zeros(FRAME, dtype=np.int16))
    assert vad._filled == FRAME
    vad.speech_probability(np.zeros(FRAME, dtype=np.int16))
    assert vad._filled == 2 * FRAME - SileroVad.WINDOW
    assert make_vad("silero")._session is vad._session  # one model for every call
