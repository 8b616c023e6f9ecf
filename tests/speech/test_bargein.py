"""Barge-in: frame-level behaviour, then timing over real RTP between two CallManagers on loopback.

The RTP test measures on the agent's received-frame sequence: onset is the first frame in which
the caller's speech arrives (any sample above G.711 silence), stop is the frame during which
``stop_playback`` was called; the delay counts both frames whole, (stop − onset + 1) × 20 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np
import pytest

from integration.harness import HOST, free_port
from parley.speech.bargein import BargeIn
from parley.speech.vad import make_vad
from parley.telephony.call import Call
from parley.telephony.manager import CallManager

from .vad_audio import FRAME, VAD_NAMES, flite, frames, needs_flite, noise, silence

pytestmark = needs_flite
CALLER_SAYS = "hello, I need to speak to someone about my bill"
PROMPT = "Thank you for calling. Please listen carefully, as our menu options have recently changed."
LEGAL = "This call is recorded for quality and training purposes."


def first_audible(pcm_frames: list[np.ndarray]) -> int:
    """Index of the first frame holding more than G.711 silence (µ-law silence decodes to 0)."""
    return next(i for i, frame in enumerate(pcm_frames) if int(np.abs(frame.astype(np.int32)).max()) > 8)


# -- frame level -----------------------------------------------------------------------------
@pytest.mark.parametrize("voice", ["kal", "slt", "awb", "rms"])
def test_fires_two_frames_after_onset_during_playback(voice):
    pcm_frames = frames(silence(600), flite(CALLER_SAYS, voice), silence(400))
    barge_in = BargeIn(make_vad())
    fired = [i for i, frame in enumerate(pcm_frames) if barge_in.feed(frame, playing=True)]
    onset = first_audible(pcm_frames)
    assert fired == [barge_in.stopped_frame]  # once per prompt
    assert barge_in.onset_ms == onset * 20
    assert barge_in.stopped_ms - barge_in.onset_ms == 40  # two frames: the onset frame and the next


@pytest.mark.parametrize("name", VAD_NAMES)
@pytest.mark.parametrize("level", [-50.0, -35.0])
def test_line_noise_from_the_start_of_the_call_never_fires(name, level):
    barge_in = BargeIn(make_vad(name))
    assert not any(barge_in.feed(frame) for frame in frames(noise(5000, level)))
    assert barge_in.count == 0 and barge_in.onset_ms is None and barge_in.stopped_ms is None


def test_no_barge_in_during_warm_up():
    pcm_frames = frames(noise(1000, -45.0))
    cold = BargeIn(make_vad(), warmup_frames=0)  # a fresh WebRTC model calls the first noise "speech"
    assert any(cold.feed(frame) for frame in pcm_frames) and cold.onset_frame == 0
    assert not any(BargeIn(make_vad()).feed(frame) for frame in pcm_frames)


def test_silence_never_fires():
    barge_in = BargeIn(make_vad())
    assert not any(barge_in.feed(frame) for frame in frames(silence(3000)))


def test_disabled_or_not_playing_never_fires_and_fires_once_per_prompt():
    speech = frames(silence(200), flite(CALLER_SAYS), silence(200))
    disabled = BargeIn(make_vad(), enabled=False)
    assert not any(disabled.feed(frame) for frame in speech)
    idle = BargeIn(make_vad())
    assert not any(idle.feed(frame, playing=False) for frame in speech)
    barge_in = BargeIn(make_vad(), onset_frames=3)
    assert sum(barge_in.feed(frame) for frame in speech) == 1
    barge_in.feed(speech[0], playing=False)  # the prompt stopped; the next one listens again
    assert sum(barge_in.feed(frame) for frame in speech) == 1
    assert barge_in.count == 2 and barge_in.stopped_ms - barge_in.onset_ms == 60


# -- over real RTP ---------------------------------------------------------------------------
@pytest.fixture
async def call_pair() -> AsyncIterator:
    """``await call_pair(app)`` → (caller's Call, agent's Call); the agent answers with ``app``."""
    managers: list[CallManager] = []

    async def connect(app) -> tuple[Call, Call]:
        inbound: asyncio.Queue[Call] = asyncio.Queue()

        async def run(call: Call) -> None:
            inbound.put_nowait(call)
            await app(call)

        agent = CallManager(run, host=HOST, port=free_port(), rtp_ports=(48000, 48100))
        caller = CallManager(None, host=HOST, port=free_port(), rtp_ports=(48100, 48200))
        for manager in (agent, caller):
            await manager.start()
            managers.append(manager)
        caller_call = await asyncio.wait_for(caller.dial(f"sip:agent@{HOST}:{agent.port}", timeout=5), 6)
        return caller_call, await asyncio.wait_for(inbound.get(), 2)

    yield connect
    for manager in reversed(managers):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(manager.stop(), 5)


async def speak_after_hearing(caller: Call, frames_of_prompt: int, speech: np.ndarray) -> None:
    """The caller listens to ``frames_of_prompt`` audible frames of the agent's prompt, then talks."""
    heard = asyncio.get_running_loop().create_future()
    count = 0

    def on_audio(frame: np.ndarray) -> None:
        nonlocal count
        count += int(np.abs(frame.astype(np.int32)).max()) > 8
        if count == frames_of_prompt and not heard.done():
            heard.set_result(None)

    caller.on_audio = on_audio
    await asyncio.wait_for(heard, 5)
    caller.play(speech)


async def run_prompt(
    call_pair, text: str, *, interruptible: bool
) -> tuple[BargeIn, list[np.ndarray], bool, float]:
    """The agent plays ``text`` with barge-in attached while the caller speaks over it.

    Returns the BargeIn, the frames the agent received until the prompt ended, whether the
    prompt played to the end, and how long it played (s).
    """
    prompt = flite(text, "slt")
    result: asyncio.Future = asyncio.get_running_loop().create_future()
    notified: list[BargeIn] = []

    async def agent(call: Call) -> None:
        received: list[np.ndarray] = []
        call.on_audio = received.append  # the consumer barge-in chains to: same frame sequence
        barge_in = BargeIn(make_vad(), onset_frames=2, on_barge_in=notified.append)
        barge_in.attach(call)
        loop = asyncio.get_running_loop()
        started = loop.time()
        completed = await barge_in.play(call, prompt, interruptible=interruptible)
        seconds = loop.time() - started
        barge_in.detach()
        assert call.on_audio == received.append  # the previous consumer is back
        result.set_result((barge_in, received[:], completed, seconds))
        await call.wait_ended()

    caller, _ = await call_pair(agent)
    await speak_after_hearing(caller, 20, flite(CALLER_SAYS, "kal"))
    barge_in, received, completed, seconds = await asyncio.wait_for(result, len(prompt) / 8000 + 3)
    caller.hangup()
    assert notified == ([] if completed else [barge_in])
    return barge_in, received, completed, seconds


async def test_caller_speech_stops_the_prompt_within_60_ms_over_rtp(call_pair):
    barge_in, received, completed, seconds = await run_prompt(call_pair, PROMPT, interruptible=True)
    assert not completed, "the prompt played to the end"
    onset = first_audible(received)
    assert barge_in.count == 1 and barge_in.stopped_frame is not None
    delay_ms = (barge_in.stopped_frame - onset + 1) * 20
    assert delay_ms <= 60, f"stopped {delay_ms} ms after the caller's speech arrived"
    assert seconds < len(flite(PROMPT, "slt")) / 8000 - 1  # and the prompt really was cut short
    assert all(len(frame) == FRAME for frame in received)


async def test_uninterruptible_prompt_plays_to_the_end_over_rtp(call_pair):
    barge_in, received, completed, seconds = await run_prompt(call_pair, LEGAL, interruptible=False)
    assert completed and seconds >= len(flite(LEGAL, "slt")) / 8000 - 0.1
    assert barge_in.count == 0 and barge_in.stopped_ms is None
    onset = first_audible(received)  # the caller did talk over it, for more than a second
    assert sum(int(np.abs(f.astype(np.int32)).max()) > 1000 for f in received[onset:]) > 50
    assert barge_in.enabled  # restored after the prompt
