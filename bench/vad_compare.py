"""Compare Parley's VADs on telephone speech: frame accuracy, noise false positives, onset delay, CPU.

Speech comes from Debian's flite voices (and espeak-ng), placed between silences at varied
levels, mixed with white or pink noise at a set SNR and sent through a G.711 µ-law round trip.
The reference is an energy detector on the clean signal (a frame is speech when its RMS is within
30 dB of the utterance's loudest frame). Run: ``.venv/bin/python bench/vad_compare.py``.
"""

from __future__ import annotations

import io
import subprocess
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

from parley.media import g711
from parley.speech.vad import SileroVad, Vad, WebRtcVad

RATE = 8000
FRAME = 160
SENTENCES = [
    "my account number is four two seven nine one",
    "yes that's right",
    "I would like to change the address on my policy please",
    "no",
    "the twenty third of March",
    "about three hundred and forty dollars",
    "Smith, S M I T H",
    "I'm calling because my card was declined yesterday",
]
VOICES = [("flite", "kal"), ("flite", "slt"), ("flite", "awb"), ("flite", "rms"), ("espeak-ng", "en-us")]


def resample(pcm: np.ndarray, rate: int) -> np.ndarray:
    """Band-limited resampling of a whole clip to 8 kHz (FFT truncation)."""
    if rate == RATE:
        return pcm.astype(np.float64)
    n_out = round(len(pcm) * RATE / rate)
    spectrum = np.fft.rfft(pcm.astype(np.float64))[: n_out // 2 + 1]
    return np.fft.irfft(spectrum, n_out) * (n_out / len(pcm))


def synth(engine: str, voice: str, text: str) -> np.ndarray:
    """Speech from flite or espeak-ng as float 8 kHz samples, trimmed of leading/trailing silence."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        if engine == "flite":
            cmd = ["flite", "-voice", voice, "-t", text, "-o", str(out)]
        else:
            cmd = ["espeak-ng", "-v", voice, "-w", str(out), text]
        subprocess.run(cmd, check=True, capture_output=True)
        with wave.open(io.BytesIO(out.read_bytes())) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    audio = resample(pcm, rate)
    loud = np.flatnonzero(np.abs(audio) > 0.01 * np.abs(audio).max())
    return audio[loud[0] : loud[-1] + 1]


def frames_of(pcm: np.ndarray) -> np.ndarray:
    n = len(pcm) // FRAME
    return pcm[: n * FRAME].reshape(n, FRAME)


def frame_rms(pcm: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(frames_of(pcm).astype(np.float64) ** 2, axis=1))


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
    spectrum[0] = 0
    noise = np.fft.irfft(spectrum, n)
    return noise / noise.std()


def build(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(clean float signal, reference speech flags per frame, reference onset frame per utterance)."""
    parts: list[np.ndarray] = []
    reference: list[np.ndarray] = []
    onsets: list[int] = []
    frames = 0
    for i, text in enumerate(SENTENCES * 2):
        engine, voice = VOICES[i % len(VOICES)]
        speech = synth(engine, voice, text)
        level_db = rng.uniform(-28, -16)  # active speech RMS, dBFS
        speech *= 32768 * 10 ** (level_db / 20) / np.sqrt(np.mean(speech**2))
        gap = np.zeros(FRAME * int(rng.integers(35, 60)))
        speech = np.concatenate([speech, np.zeros(-len(speech) % FRAME)])
        rms = frame_rms(speech)
        flags = rms > rms.max() * 10 ** (-30 / 20)
        parts += [gap, speech]
        reference += [np.zeros(len(gap) // FRAME, bool), flags]
        onsets.append(frames + len(gap) // FRAME + int(np.argmax(flags)))
        frames += (len(gap) + len(speech)) // FRAME
    tail = np.zeros(FRAME * 40)
    return np.concatenate([*parts, tail]), np.concatenate([*reference, np.zeros(40, bool)]), onsets


def telephone(signal: np.ndarray) -> np.ndarray:
    pcm = np.clip(np.round(signal), -32768, 32767).astype(np.int16)
    return g711.decode("PCMU", g711.encode("PCMU", pcm))


def run(vad: Vad, pcm: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-frame speech flags (probability ≥ 0.5) and CPU µs per frame."""
    vad.reset()
    frames = frames_of(pcm)
    started = time.process_time()
    probabilities = np.array([vad.speech_probability(frame) for frame in frames])
    cpu = (time.process_time() - started) / len(frames) * 1e6
    return probabilities >= 0.5, cpu


def onset_delays(flags: np.ndarray, onsets: list[int]) -> tuple[list[int], int]:
    """Frames from each reference onset to the VAD's first speech frame (from 2 frames before); misses."""
    delays, misses = [], 0
    for onset in onsets:
        hits = np.flatnonzero(flags[onset - 2 : onset + 50])
        if len(hits):
            delays.append(int(hits[0]) - 2)
        else:
            misses += 1
    return delays, misses


def main() -> None:
    rng = np.random.default_rng(7)
    clean, reference, onsets = build(rng)
    speech_rms = np.sqrt(np.mean(clean[np.repeat(reference, FRAME)[: len(clean)]] ** 2))
    conditions = {"clean": clean}
    for snr in (20, 10):
        noise = rng.standard_normal(len(clean)) * speech_rms / 10 ** (snr / 20)
        conditions[f"white {snr} dB SNR"] = clean + noise
        conditions[f"pink {snr} dB SNR"] = clean + pink(len(clean), rng) * speech_rms / 10 ** (snr / 20)
    seconds = 30 * RATE
    noises = {
        "white −40 dBFS": rng.standard_normal(seconds) * 32768 * 10 ** (-40 / 20),
        "white −25 dBFS": rng.standard_normal(seconds) * 32768 * 10 ** (-25 / 20),
        "pink −25 dBFS": pink(seconds, rng) * 32768 * 10 ** (-25 / 20),
        "hum 50 Hz+harm. −25 dBFS": sum(
            np.sin(2 * np.pi * 50 * k * np.arange(seconds) / RATE) / k for k in range(1, 8)
        ) * 32768 * 10 ** (-25 / 20),
    }  # fmt: skip
    vads: dict[str, Vad] = {f"webrtc/{a}": WebRtcVad(a) for a in (1, 2, 3)}
    vads["silero"] = SileroVad()
    print(f"{len(onsets)} utterances, {len(reference) * 0.02:.0f} s, {reference.mean():.0%} speech frames\n")
    for name, vad in vads.items():
        print(f"== {name}")
        cpus = []
        for condition, signal in conditions.items():
            flags, cpu = run(vad, telephone(signal))
            cpus.append(cpu)
            n = min(len(flags), len(reference))
            accuracy = np.mean(flags[:n] == reference[:n])
            missed = np.mean(~flags[:n][reference[:n]])
            false_alarm = np.mean(flags[:n][~reference[:n]])
            delays, misses = onset_delays(flags, onsets)
            print(
                f"  {condition:18} acc {accuracy:6.1%}  miss {missed:5.1%}  FA {false_alarm:5.1%}  "
                f"onset mean {np.mean(delays) * 20:5.1f} ms  p90 {np.percentile(delays, 90) * 20:4.0f} ms  "
                f"max {max(delays) * 20:4d} ms  missed onsets {misses}"
            )
        for condition, signal in noises.items():
            flags, cpu = run(vad, telephone(signal))
            cpus.append(cpu)
            print(f"  noise only: {condition:26} FP {flags.mean():6.2%}")
        print(f"  CPU {np.mean(cpus):.0f} µs per 20 ms frame")


if __name__ == "__main__":
    main()
