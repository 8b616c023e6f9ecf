"""Time to first audio chunk vs whole render of a 3-sentence prompt, per TTS engine and voice.

The figures go into the docstring of ``parley.speech.tts``. Run: ``.venv/bin/python bench/tts_latency.py``.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from parley.speech.tts import TtsError, load_tts

PROMPT = (
    "Thank you for calling Parley bank. Your call may be recorded for training purposes. "
    "Please say your account number, one digit at a time."
)
VOICES = [
    ("flite", "slt"),
    ("flite", "kal16"),
    ("flite", "awb"),
    ("flite", "rms"),
    ("festival", "kal_diphone"),
    ("festival", "cmu_us_slt_arctic_hts"),
    ("espeak-ng", "en-us"),
]
RUNS = 5


async def measure(engine_name: str, voice: str) -> tuple[float, float, float] | None:
    """Median (first chunk s, whole render s, audio s) over ``RUNS`` renders."""
    engine = load_tts(engine_name)
    firsts, totals = [], []
    audio = 0.0
    for _ in range(RUNS):
        start = time.perf_counter()
        first = None
        samples = 0
        try:
            async for chunk in engine.stream(PROMPT, voice):
                if first is None:
                    first = time.perf_counter() - start
                samples += len(chunk)
        except TtsError:
            return None
        totals.append(time.perf_counter() - start)
        firsts.append(first or 0.0)
        audio = samples / 8000
    return statistics.median(firsts), statistics.median(totals), audio


async def main() -> None:
    """Print one table row per available voice."""
    print(f"prompt: {len(PROMPT)} characters, 3 sentences; median of {RUNS} runs")
    print(f"{'engine:voice':36} {'first chunk':>12} {'whole':>10} {'audio':>8}")
    for engine_name, voice in VOICES:
        result = await measure(engine_name, voice)
        if result is None:
            print(f"{engine_name}:{voice:28} unavailable")
            continue
        first, total, audio = result
        print(f"{engine_name + ':' + voice:36} {first * 1000:10.0f} ms {total * 1000:7.0f} ms {audio:7.2f} s")


if __name__ == "__main__":
    asyncio.run(main())
