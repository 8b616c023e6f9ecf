"""Real telephone speech for the VAD, endpointing and barge-in tests: Debian flite voices, 8 kHz, G.711.

Audio is synthesised once per process (cached) and trimmed to the speech itself, so a test
knows on which frame the speech starts and ends when it puts silence around it.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
import pytest

from parley.media import g711

RATE = 8000
FRAME = 160
FLITE = shutil.which("flite")

needs_flite = pytest.mark.skipif(FLITE is None, reason="flite not installed (apt-get install flite)")

HAVE_SILERO = importlib.util.find_spec("silero_vad") is not None
VAD_NAMES = [
    "webrtc",
    pytest.param(
        "silero",
        marks=pytest.mark.skipif(not HAVE_SILERO, reason="pip install --no-deps silero-vad (see ./run)"),
    ),
]


def to_8k(pcm: np.ndarray, rate: int) -> np.ndarray:
    """Band-limited resampling of a whole clip to 8 kHz (FFT truncation)."""
    if rate == RATE:
        return pcm.astype(np.float64)
    n_out = round(len(pcm) * RATE / rate)
    spectrum = np.fft.rfft(pcm.astype(np.float64))[: n_out // 2 + 1]
    return np.fft.irfft(spectrum, n_out) * (n_out / len(pcm))


def telephone(signal: np.ndarray) -> np.ndarray:
    """Clip to int16 and send through a G.711 µ-law round trip."""
    pcm = np.clip(np.round(signal), -32768, 32767).astype(np.int16)
    return g711.decode("PCMU", g711.encode("PCMU", pcm))


@functools.cache
def flite(text: str, voice: str = "kal", level_dbfs: float = -20.0) -> np.ndarray:
    """``text`` spoken by a flite voice: 8 kHz int16 after G.711, whole frames, no silence around it.

    Trimmed where the signal first and last reaches 1 % of its peak, then extended to whole frames
    with the audio that follows (zeros only where the file ends), so the first and last frames
    hold speech.
    """
    assert FLITE is not None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        subprocess.run([FLITE, "-voice", voice, "-t", text, "-o", str(out)], check=True, capture_output=True)
        with wave.open(str(out)) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    audio = to_8k(pcm, rate)
    loud = np.flatnonzero(np.abs(audio) >= 0.01 * np.abs(audio).max())
    first, last = int(loud[0]), int(loud[-1]) + 1
    last = min(len(audio), first + -(-(last - first) // FRAME) * FRAME)
    audio = audio[first:last]
    audio = np.concatenate([audio, np.zeros(-len(audio) % FRAME)])
    audio *= 32768 * 10 ** (level_dbfs / 20) / np.sqrt(np.mean(audio**2))
    return telephone(audio)


def silence(ms: int) -> np.ndarray:
    return np.zeros(RATE * ms // 1000, dtype=np.int16)


def noise(ms: int, dbfs: float, seed: int = 0) -> np.ndarray:
    """White noise at ``dbfs`` RMS, through G.711."""
    rng = np.random.default_rng(seed)
    return telephone(rng.standard_normal(RATE * ms // 1000) * 32768 * 10 ** (dbfs / 20))


def frames(*parts: np.ndarray) -> list[np.ndarray]:
    """The parts joined and cut into 20 ms frames (each part must be whole frames)."""
    for part in parts:
        assert len(part) % FRAME == 0, len(part)
    pcm = np.concatenate(parts)
    return [pcm[i : i + FRAME] for i in range(0, len(pcm), FRAME)]


def n_frames(pcm: np.ndarray) -> int:
    return len(pcm) // FRAME


def rms(frame: np.ndarray) -> float:
    return float(np.sqrt(np.mean(frame.astype(np.float64) ** 2)))
