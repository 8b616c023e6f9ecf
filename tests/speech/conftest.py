"""Speech test fixtures: real utterances rendered by flite and sent down a G.711 line."""

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import soxr

from parley.media import g711


class Speech:
    """flite utterances rendered once per test session, as 8 kHz G.711-round-tripped int16."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.cache: dict[tuple[str, str], np.ndarray] = {}

    def __call__(self, text: str, voice: str = "slt") -> np.ndarray:
        key = (text, voice)
        if key not in self.cache:
            path = self.folder / f"{voice}-{text.replace(' ', '_')}.wav"
            subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
            with wave.open(str(path)) as w:
                pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
                rate = w.getframerate()
            # float in and out: soxr dithers int16 output randomly, the audio would differ per run
            pcm8 = np.rint(soxr.resample(pcm.astype(np.float32), rate, 8000)).astype(np.int16)
            # 300 ms of faint line noise either side, as the endpointer hands over a turn (pre-roll and
            # hangover): speech starting on the very first frame loses its first phone.
            rng = np.random.default_rng(len(text))
            pad = [np.rint(rng.normal(0, 30, 2400)).astype(np.int16) for _ in range(2)]
            pcm8 = np.concatenate([pad[0], pcm8, pad[1]])
            self.cache[key] = g711.ulaw_decode(g711.ulaw_encode(pcm8))
        return self.cache[key]


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Speech:
    return Speech(tmp_path_factory.mktemp("flite"))
