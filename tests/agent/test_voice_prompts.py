"""How the voice agent speaks: static prompts from memory, others streamed; caller data never cached."""

from __future__ import annotations

import numpy as np
import pytest

from parley.agent.loader import load_agent_text
from parley.agent.runtime import Say
from parley.agent.voice import VoiceAgent
from parley.speech.tts import CachedTts, FliteTts, PromptCache, render, trim_silence

AGENT = """
name: prompts-test
voice: {engine: flite, voice: slt}
steps:
  - id: hello
    type: say
    text: "Hello, this is the test bank."
  - id: account
    type: ask
    slot: account
    slot_type: digits
    digits: 4
    prompt: "What is your account number?"
    confirm: always
  - id: bye
    type: hangup
    message: "Goodbye."
"""
LOUD = 100


def lead_ms(pcm: np.ndarray) -> float:
    """Milliseconds before the first sample louder than ``LOUD``."""
    return float(np.flatnonzero(np.abs(pcm.astype(np.int32)) > LOUD)[0]) / 8


@pytest.fixture
async def agent(tmp_path):
    app = VoiceAgent(load_agent_text(AGENT), engines=[], tts=CachedTts(FliteTts(), PromptCache(tmp_path)))
    await app.start()
    return app


def cached_files(app: VoiceAgent) -> set[str]:
    return {p.name for p in app.tts.cache.directory.rglob("*.pcm")}


async def test_static_prompts_are_ready_at_start_without_the_synthesiser_silence(agent):
    assert set(agent.static_audio) == {
        "Hello, this is the test bank.",
        "What is your account number?",
        "Goodbye.",
    }
    raw = await render(agent.tts.engine, "Hello, this is the test bank.", "slt")
    assert lead_ms(raw) > 150  # flite starts with ~250 ms of silence: reply latency for nothing
    audio = agent.static_audio["Hello, this is the test bank."]
    assert lead_ms(audio) <= 20
    chunks = [c async for c in agent.prompt_audio(Say("Hello, this is the test bank."))]
    assert len(chunks) == 1 and chunks[0] is audio  # no synthesis, no cache read


async def test_prompts_with_caller_data_stream_and_never_reach_the_disk_cache(agent):
    before = cached_files(agent)
    say = Say("I heard 4 2 7 1, is that right?", personal=True)
    chunks = [c async for c in agent.prompt_audio(say)]
    assert len(chunks) >= 2  # streamed clause by clause
    assert lead_ms(chunks[0]) <= 20
    assert cached_files(agent) == before
    other = Say("Sorry, I am having trouble. Goodbye.")  # a built-in text: cached like a static prompt
    [c async for c in agent.prompt_audio(other)]
    assert len(cached_files(agent)) == len(before) + 1


def test_trim_silence_keeps_a_short_lead_and_optionally_the_tail():
    pcm = np.zeros(8000, dtype=np.int16)
    pcm[4000:4800] = 3000
    assert len(trim_silence(pcm)) == 8000 - 4000 + 20 * 8
    trimmed = trim_silence(pcm, lead_ms=10, tail_ms=50)
    assert len(trimmed) == 10 * 8 + 800 + 50 * 8 and trimmed[80] == 3000
    assert len(trim_silence(np.zeros(800, dtype=np.int16))) == 0
    assert len(trim_silence(pcm[:100])) == 0
