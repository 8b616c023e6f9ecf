"""The apology a call hears when every TTS voice fails: pre-rendered audio shipped with the package.

``voice.fallback`` speaks a prompt the agent's engine fails on with other voices; when all of them
fail too (no synthesiser works on this machine any more), the caller would hear nothing. The call
then plays this apology, rendered by the project's own TTS (flite's slt voice) and shipped as package
data (``apology.wav``, 8 kHz mono 16-bit), then transfers or hangs up (see
:meth:`parley.agent.voice.VoiceAgent`). Its SHA-256 is pinned here: a file that was altered or
truncated is not played (an error is logged and the call just ends), so a caller never hears noise.

Render it again (after changing the text) with ``python -m parley.agent.apology`` and pin the new sum.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import wave
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

APOLOGY_TEXT = "We are sorry: we have a technical problem and cannot speak with you now."
APOLOGY_VOICE = ("flite", "slt")
APOLOGY_FILE = Path(__file__).with_name("apology.wav")
APOLOGY_SHA256 = "38733b760410469f9255cba21e7b226c2240edafde35a88df18d52c581308b01"
RATE = 8000


def load_apology(path: Path = APOLOGY_FILE, sha256: str = APOLOGY_SHA256) -> np.ndarray | None:
    """The apology's 8 kHz int16 audio, or None (logged) when the file is missing, altered or not
    8 kHz mono 16-bit."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        log.error("the pre-rendered apology %s cannot be read: %s", path, exc)
        return None
    if hashlib.sha256(data).hexdigest() != sha256:
        log.error("the pre-rendered apology %s does not match its pinned SHA-256: not played", path)
        return None
    with wave.open(io.BytesIO(data)) as w:
        if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, RATE):
            log.error("the pre-rendered apology %s is not 8 kHz mono 16-bit: not played", path)
            return None
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


async def render_apology(path: Path) -> None:
    """Write the apology's WAV file to ``path`` as the project's TTS renders it now (leading silence
    trimmed, 200 ms kept after the last word)."""
    from parley.speech.corpus import write_wav
    from parley.speech.tts import load_tts, render, trim_silence

    engine, voice = APOLOGY_VOICE
    write_wav(path, trim_silence(await render(load_tts(engine), APOLOGY_TEXT, voice), tail_ms=200), RATE)


if __name__ == "__main__":
    asyncio.run(render_apology(APOLOGY_FILE))
    data = APOLOGY_FILE.read_bytes()
    print(f"{APOLOGY_FILE}: {len(data)} bytes, SHA-256 {hashlib.sha256(data).hexdigest()}")
