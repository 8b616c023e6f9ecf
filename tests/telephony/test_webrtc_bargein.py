"""Barge-in over WebRTC: a voice agent (flite prompts, the real VAD, a scripted recogniser) plays a long
prompt to a browser (aiortc, :class:`BrowserPeer`); the caller starts speaking a second into it and
the prompt stops at the browser within a bound, while the caller's answer fills the slot."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest

from agent.e2e_agents import agent_yaml, ask
from agent.test_voice_turns import ScriptedEngine, speech
from parley.agent.loader import load_agent_text
from parley.agent.records import CallRecord
from parley.agent.voice import VoiceAgent
from parley.speech.tts import CachedTts, FliteTts, PromptCache, load_tts, render, trim_silence
from parley.telephony.webrtc import WebRtcChannel

from .test_webrtc_channel import connect
from .webrtc_peer import LOUD_RMS, BrowserPeer

pytestmark = [
    pytest.mark.skipif(shutil.which("flite") is None, reason="flite speaks the prompt and the caller"),
    pytest.mark.timeout(90),
]

PROMPT = (
    "Thank you for calling the card services line. Please listen carefully, as our options have "
    "changed. To block a card, we need your account number. Please say your four digit account number."
)
ANSWER = "four two seven one, four two seven one"  # long enough to outlast the bound below
BARGE_AFTER_S = 1.0  # the caller speaks this long after the prompt's first audio reached the browser
STOP_WITHIN_S = 1.2  # VAD onset (~0.1-0.3 s), packets already sent, the browser's jitter buffer; loaded


async def test_the_caller_speaking_over_a_prompt_stops_it_at_the_browser(managers, tmp_path) -> None:
    prompt_s = len(trim_silence(await render(load_tts("flite"), PROMPT, "slt"))) / 8000
    answer = await speech(ANSWER)
    answer_s = len(answer) / 8000
    # without barge-in, the prompt would still be playing when the caller stops speaking
    assert prompt_s > BARGE_AFTER_S + answer_s + 1.0, (prompt_s, answer_s)
    records: list[CallRecord] = []
    agent = agent_yaml("barge-test", [ask("account", "digits", PROMPT, digits=4)], no_input_ms=10000)
    app = VoiceAgent(
        load_agent_text(agent),
        engines=[ScriptedEngine(partials=[], finals=[(0.0, "four two seven one")])],
        tts=CachedTts(FliteTts(), PromptCache(tmp_path)),
        pause_check_ms=None,  # the turn ends at the end of speech, not at a pause check
        on_record=records.append,
    )
    await app.start()
    manager = await managers(app)
    channel = WebRtcChannel(manager)
    peer = BrowserPeer()
    try:
        await connect(channel, peer)
        for _ in range(1000):  # the prompt's first audio at the browser
            first = peer.first_loud_after(0.0)
            if first is not None:
                break
            await asyncio.sleep(0.01)
        assert first is not None, "the agent's prompt never reached the browser"
        await asyncio.sleep(max(0.0, first + BARGE_AFTER_S - time.monotonic()))
        peer.say(answer)
        stopped_speaking = await peer.said()
        speaking = peer.microphone.first_speech_sent
        last = max(t for t, rms in peer.heard if first <= t < stopped_speaking and rms > LOUD_RMS)
        went_on = last - speaking
        assert went_on <= STOP_WITHIN_S, f"the prompt went on {went_on:.2f} s into the caller's speech"
        assert last > speaking  # the prompt was playing when the caller began: a barge-in, not a pause
        await asyncio.wait_for(peer.hung_up.wait(), 30)  # the answer taken, then "Thank you, goodbye."
    finally:
        await peer.close()
        await channel.close()
        await app.close()
    (record,) = records
    assert record.channel == "webrtc" and record.outcome == "completed", record.to_dict()
    assert [p["interruptible"] for p in record.prompts[:1]] == [True]
    assert record.slots == {"account": "4271"}
    print(f"barge-in: the prompt stopped at the browser {1000 * (last - speaking):.0f} ms after speech began")
