"""Caller audio: answers rendered once, and the loudness test the caller's ears use.

* :class:`AnswerBook` renders each distinct answer text once (the TTS engine wrapped in
  :class:`~parley.speech.tts.CachedTts`: content-addressed on disk, so later runs skip the engine
  too, plus an in-memory map), trims its leading and trailing silence so the last frame sent is the
  end of speech, and shares one in-flight render between calls asking for the same text at once.
* :data:`QUIET` lists the G.711 byte values whose sample is not speech (at most :data:`LOUD`):
  the caller's tap (:class:`parley.loadtest.listen.PacketTap`) tests a packet's energy straight
  from its encoded bytes with it — no decoding, no numpy call: a fraction of a µs per packet,
  against ≈ 2.3 µs for a WebRTC VAD call on the decoded frame (plus the decoding) and ≈ 2.8 µs
  for a numpy peak (``bench/loadtest_capacity.py`` measures them). Agents' prompts are clean TTS
  over G.711 silence, so energy with a hang-over (the prompt's ``silence_ms``) tells speech from
  silence as well as a VAD does here.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np

from parley.media import g711
from parley.speech.tts import CachedTts, TtsEngine, render

TRIM_LEVEL = 30  # flite's own background is ≈ 20-40
LOUD = 300  # peak |sample| of a packet that carries speech (G.711 silence decodes to 0 or ±8)
FRAME_SAMPLES = 160
FRAME_MS = 20


def _quiet_bytes(codec: str) -> bytes:
    """The G.711 byte values whose sample is at most :data:`LOUD` in magnitude."""
    samples = g711.decode(codec, bytes(range(256))).astype(np.int32)
    return bytes(b for b in range(256) if abs(int(samples[b])) <= LOUD)


QUIET = {codec: _quiet_bytes(codec) for codec in ("PCMU", "PCMA")}


def loud_frame(pcm: np.ndarray) -> bool:
    """The same test on decoded 8 kHz int16 audio."""
    return bool(len(pcm)) and int(np.abs(pcm.astype(np.int32)).max()) > LOUD


def speech_ms(pcm: np.ndarray) -> int:
    """How much of ``pcm`` the caller's prompt detector counts as speech (20 ms frames, same level)."""
    frames = [pcm[i : i + FRAME_SAMPLES] for i in range(0, len(pcm) - FRAME_SAMPLES + 1, FRAME_SAMPLES)]
    return FRAME_MS * sum(loud_frame(f) for f in frames)


def trim(pcm: np.ndarray, level: int = TRIM_LEVEL) -> np.ndarray:
    """``pcm`` without leading and trailing silence (so the last frame sent is the end of speech).

    The level is low: a higher one cuts weak onsets ("f" of "four"), which the recognisers then miss.
    """
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > level)
    if not len(loud):
        return pcm[:0]
    return pcm[loud[0] : loud[-1] + 1]


def read_wav(path: Path) -> np.ndarray:
    """A mono 16-bit WAV as 8 kHz int16 (resampled with soxr when needed)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAVs are supported")
        rate, channels = w.getframerate(), w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if rate != 8000:
        import soxr

        pcm = np.clip(soxr.resample(pcm.astype(np.float32), rate, 8000), -32768, 32767).astype(np.int16)
    return pcm.astype(np.int16)


class AnswerBook:
    """Caller answers rendered once per distinct text (TTS, disk cache), trimmed of silence."""

    def __init__(
        self, engine: TtsEngine, voice: str = "slt", rate: float = 1.0, *, cache: bool = True
    ) -> None:
        self.engine: TtsEngine = CachedTts(engine) if cache and not isinstance(engine, CachedTts) else engine
        self.voice = voice
        self.rate = rate
        self._done: dict[str, np.ndarray] = {}
        self._pending: dict[str, asyncio.Future[np.ndarray]] = {}
        self.renders = 0  # texts this book rendered (or read from the disk cache)

    async def get(self, text: str) -> np.ndarray:
        done = self._done.get(text)
        if done is not None:
            return done
        pending = self._pending.get(text)
        if pending is None:
            pending = asyncio.ensure_future(self._render(text))
            self._pending[text] = pending
        return await asyncio.shield(pending)

    async def _render(self, text: str) -> np.ndarray:
        try:
            pcm = trim(await render(self.engine, text, self.voice, self.rate))
            self.renders += 1
            self._done[text] = pcm
            return pcm
        finally:
            self._pending.pop(text, None)

    def wav(self, path: Path) -> np.ndarray:
        key = f"wav:{path.resolve()}"
        if key not in self._done:
            self._done[key] = read_wav(path)
        return self._done[key]
