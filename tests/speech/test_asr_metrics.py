"""The speech layer's metrics over real engines: each engine's final latency, the winner per slot
type, and an engine that fails counted as a miss."""

from __future__ import annotations

from prometheus_client import REGISTRY

from parley.speech.arbiter import Arbiter, EnginePriors

from .test_arbiter import DIGITS, ExplodingEngine, engines, pytestmark, telephone_speech  # noqa: F401


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_turn_counts_each_engines_final_the_winner_and_a_crashed_engine(engines):  # noqa: F811
    audio = await telephone_speech("four two seven one")
    before = {
        "grammar": sample("parley_asr_final_seconds_count", engine="sphinx-grammar"),
        "lm": sample("parley_asr_final_seconds_count", engine="sphinx-lm"),
        "win": sample("parley_asr_wins_total", engine="sphinx-grammar", slot_type="digits"),
        "miss": sample("parley_asr_misses_total", engine="exploding", why="error"),
    }
    equal = EnginePriors()  # equal priors: every engine's final is awaited (the shipped ones settle early)
    record = await Arbiter([*engines, ExplodingEngine()], priors=equal, deadline=10).recognize(DIGITS, audio)
    assert record.winner is not None and record.winner.engine == "sphinx-grammar"
    assert sample("parley_asr_final_seconds_count", engine="sphinx-grammar") == before["grammar"] + 1
    assert sample("parley_asr_final_seconds_count", engine="sphinx-lm") == before["lm"] + 1
    assert sample("parley_asr_wins_total", engine="sphinx-grammar", slot_type="digits") == before["win"] + 1
    assert sample("parley_asr_misses_total", engine="exploding", why="error") == before["miss"] + 1
    assert sample("parley_asr_final_seconds_count", engine="exploding") == 0
    assert sample("parley_asr_final_seconds_sum", engine="sphinx-grammar") < 10  # within the deadline
