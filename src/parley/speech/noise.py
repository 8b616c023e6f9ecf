"""Background noises for the simulated phone line: white, pink, street and babble, at unit power.

Each maker returns float64 samples at 8 kHz scaled to unit mean power, so the corpus sets the SNR
with one gain. Everything random comes from the ``numpy`` generator passed in, so a seed fixes
every sample.

* **white** and **pink** (1/f power) are stationary: the easy case.
* **street** is what a caller on a pavement hears: traffic rumble (brown, 1/f² power, above 40 Hz)
  swelling and fading as vehicles pass, tyre and wind hiss (pink), and transients (a door, a
  bus's brakes, a horn) at random moments.
* **babble** is other people talking: several TTS talkers (different voices, pitches and rates,
  each reading a different order of :data:`BABBLE_TEXTS`) summed into one *bed*, rendered once
  per corpus; each utterance takes a slice of it from a random offset. Its level swings with
  syllables and its spectrum is speech's, so an engine cannot tell it from the caller by
  spectrum alone, which is what makes it hard.

numpy is enough: no packaged noise generator ships these (audiomentations' babble needs recorded
noise files, which no package here carries), and the shapes are a few lines of FFT filtering.
"""

from __future__ import annotations

import numpy as np

from parley.speech.types import TELEPHONE_RATE

NOISE_KINDS = ("white", "pink", "street", "babble")

# What the babble talkers say: café and open-plan office chatter, none of it an answer to a question.
BABBLE_TEXTS = (
    "I told her we would meet at the station after work, but the trains were all running late.",
    "Did you see the match on Saturday? The second half was much better than the first.",
    "She has been looking for a new flat near the park for months now.",
    "Can you pass me the milk? I think there's some sugar on the other table.",
    "We went to the seaside for the weekend and it rained the whole time.",
    "He said the meeting has been moved to Thursday afternoon, in the big room upstairs.",
    "The new cafe on the corner does really good sandwiches, and it's not expensive either.",
    "My brother is coming over next week with the kids, so the house will be busy.",
    "I'm not sure the printer is working again, somebody should call the office manager.",
    "They're painting the kitchen this weekend, a sort of pale green, I think.",
)
BABBLE_TALKERS = 5
BABBLE_GAINS = (1.0, 0.8, 0.9, 0.7, 0.85)  # talkers sit at different distances


def unit_power(samples: np.ndarray) -> np.ndarray:
    """``samples`` scaled to mean power 1 (silence stays silence)."""
    power = float(np.mean(samples**2)) if len(samples) else 0.0
    return samples / np.sqrt(power) if power > 0 else samples


def _shaped(rng: np.random.Generator, samples: int, floor_hz: float, exponent: float) -> np.ndarray:
    """White noise whose amplitude spectrum falls as f^-exponent above ``floor_hz``."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    freqs = np.fft.rfftfreq(samples, 1.0 / TELEPHONE_RATE)
    spectrum /= np.maximum(freqs, floor_hz) ** exponent
    return unit_power(np.fft.irfft(spectrum, samples))


def street_noise(samples: int, rng: np.random.Generator) -> np.ndarray:
    """Traffic rumble swelling as vehicles pass, tyre hiss, and random transients (unit power)."""
    seconds = samples / TELEPHONE_RATE
    t = np.arange(samples) / TELEPHONE_RATE
    rumble = _shaped(rng, samples, 40.0, 1.0)  # amplitude 1/f: brown
    passing = 1.0 + 0.7 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 2 * np.pi))
    bed = 0.8 * unit_power(rumble * passing) + 0.45 * _shaped(rng, samples, 20.0, 0.5)
    for _ in range(int(rng.poisson(0.4 * seconds))):
        start = int(rng.integers(samples))
        if rng.random() < 0.25:  # a horn: a buzzy harmonic tone with short fades
            length = min(samples - start, int(rng.uniform(0.2, 0.6) * TELEPHONE_RATE))
            f0 = rng.uniform(350.0, 500.0)
            tt = np.arange(length) / TELEPHONE_RATE
            sound = sum(np.sin(2 * np.pi * f0 * k * tt) / k for k in (1, 2, 3))
            fade = np.minimum(1.0, np.minimum(tt, tt[::-1]) / 0.01) if length else tt
            sound = np.asarray(sound) * fade
        else:  # a knock, a slammed door, brakes: a decaying noise burst
            length = min(samples - start, int(rng.uniform(0.02, 0.25) * TELEPHONE_RATE))
            decay = np.exp(-np.arange(length) / max(1.0, length / 4))
            sound = rng.standard_normal(length) * decay
        if length:
            bed[start : start + length] += unit_power(sound) * rng.uniform(1.5, 4.0)
    return unit_power(bed)


def mix_babble(tracks: list[np.ndarray]) -> np.ndarray:
    """One babble bed from the talkers' renders: each looped to the longest, started at its own
    offset, weighted by :data:`BABBLE_GAINS` and summed (unit power)."""
    tracks = [track.astype(np.float64) for track in tracks if len(track)]
    if not tracks:
        raise ValueError("no babble talker produced audio")
    length = max(len(track) for track in tracks)
    bed = np.zeros(length)
    for i, track in enumerate(tracks):
        looped = np.resize(unit_power(track), length)  # np.resize repeats the track
        bed += np.roll(looped, i * length // len(tracks)) * BABBLE_GAINS[i % len(BABBLE_GAINS)]
    return unit_power(bed)


def babble_noise(bed: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """``samples`` of the babble ``bed`` from a random offset (wrapping round), at unit power."""
    offset = int(rng.integers(len(bed)))
    return unit_power(np.take(bed, np.arange(offset, offset + samples), mode="wrap"))


def make_noise(
    kind: str, samples: int, rng: np.random.Generator, babble: np.ndarray | None = None
) -> np.ndarray:
    """Unit-power noise of ``kind`` (one of :data:`NOISE_KINDS`), float64.

    ``babble`` is the corpus's babble bed (:func:`mix_babble`); only the babble kind needs it.
    """
    if kind == "babble":
        if babble is None or not len(babble):
            raise ValueError("babble noise needs a babble bed (mix_babble)")
        return babble_noise(babble, samples, rng)
    if kind == "street":
        return street_noise(samples, rng)
    white = rng.standard_normal(samples)
    if kind == "white" or samples < 2:
        return white
    if kind != "pink":
        raise ValueError(f"unknown noise {kind!r} (have {', '.join(NOISE_KINDS)})")
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(samples, 1.0 / TELEPHONE_RATE)
    spectrum /= np.sqrt(np.maximum(freqs, 20.0))
    pink = np.fft.irfft(spectrum, samples)
    return pink / np.sqrt(np.mean(pink**2))
