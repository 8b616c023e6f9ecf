"""A voice agent on a live call: the I/O around the sans-I/O :class:`Conversation`.

Per call, prompts are rendered by TTS (static ones come from the prompt cache) and played over
RTP; while a prompt plays and after it, the caller's 20 ms frames feed the endpointer (VAD) and
the ASR arbiter (engines decoding in worker processes). Every partial goes to the NLU; when the
answer is complete and stable the turn closes at once (early close) instead of waiting out the
silence. Speech during an interruptible prompt stops it (barge-in). RFC 4733 digits answer
keypad-capable questions. Webhooks, transfers (REFER) and hang-ups are performed here, and the
call record is appended to a JSON-lines file when the call ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from parley.agent.model import Agent
from parley.agent.runtime import (
    Action,
    CallWebhook,
    Conversation,
    EarlyClose,
    Hangup,
    Listen,
    ParleyUnderstanding,
    Say,
    Transfer,
    ask_question,
)
from parley.agent.webhook import perform_webhook
from parley.speech.arbiter import Arbiter, EnginePriors
from parley.speech.endpoint import Endpointer, NoInput, SpeechEnded, SpeechStarted
from parley.speech.engines import load_engines
from parley.speech.engines.pool import DecodePool
from parley.speech.tts import CachedTts, TtsEngine, load_tts, render
from parley.speech.types import AsrEngine, Hypothesis, SlotType
from parley.speech.vad import make_vad
from parley.telephony.call import Call, DtmfDigit

log = logging.getLogger(__name__)

# Closed questions: the per-question grammar and the per-agent LM (cheap, and best on them); the
# general LM, the costliest engine, listens to free speech (see bench/asr_arbiter.py).
LEAN_SELECTION: dict[SlotType, tuple[str, ...]] = {
    **{t: ("sphinx-grammar", "sphinx-agent-lm") for t in SlotType if t is not SlotType.FREE},
    SlotType.FREE: ("sphinx-lm", "sphinx-agent-lm"),
}
DTMF_INTERDIGIT_S = 3.0


class VoiceAgent:
    """The app ``CallManager`` runs for each answered call (``await agent_app(call)``)."""

    def __init__(
        self,
        agent: Agent,
        *,
        engines: list[AsrEngine] | None = None,
        pool: DecodePool | None = None,
        tts: TtsEngine | None = None,
        records: Path | None = None,
        priors: EnginePriors | None = None,
    ) -> None:
        self.agent = agent
        # One partial with a complete value closes the turn: engines only emit changed partials.
        self.nlu = ParleyUnderstanding(agent, stable_partials=1)
        self.engines = engines if engines is not None else load_engines()
        self.pool = pool
        self.arbiter = Arbiter(self.engines, pool=pool, priors=priors, deadline=1.0, selection=LEAN_SELECTION)
        self.tts = tts or CachedTts(load_tts(agent.voice.engine))
        self.records = records

    async def start(self) -> None:
        """Warm up before the first call: decoder processes, static prompts, question grammars."""
        if self.pool is not None:
            await self.pool.warm()
        for text in self.agent.prompts():
            if "{" not in text:
                try:
                    await self.speak(text)
                except Exception as exc:  # rendered again on first use; never fatal at start-up
                    log.warning("could not pre-render a prompt of %s: %s", self.agent.name, exc)
        for step in self.agent.slots().values():
            await self.arbiter.prepare(ask_question(self.agent, step, step.prompt))

    async def close(self) -> None:
        if self.pool is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.pool.close)

    async def speak(self, text: str) -> np.ndarray:
        voice = self.agent.voice
        return await render(self.tts, text, voice.voice, voice.rate)

    async def __call__(self, call: Call) -> None:
        await _CallSession(self, call).run()


class _CallSession:
    """One call: plays prompts, runs turns, performs the conversation's actions."""

    def __init__(self, app: VoiceAgent, call: Call) -> None:
        self.app = app
        self.call = call
        self.conversation = Conversation(app.agent, app.nlu, call_id=call.call_id)
        self.inbox: asyncio.Queue[np.ndarray | DtmfDigit | None] = asyncio.Queue()
        self.pending: list[Say] = []

    async def _pump(self) -> None:
        async for item in self.call.incoming():
            self.inbox.put_nowait(item)
        self.inbox.put_nowait(None)  # the call ended

    async def run(self) -> None:
        pump = asyncio.ensure_future(self._pump())
        try:
            actions = self.conversation.start()
            while actions and not self.call.ended.is_set():
                actions = await self._perform(actions)
        except CallGone:
            pass
        finally:
            pump.cancel()
            if self.call.ended.is_set() and self.conversation.outcome is None:
                self.conversation.on_hangup()
            if self.app.records is not None:
                self.conversation.record.write_jsonl(self.app.records)

    async def _perform(self, actions: list[Action]) -> list[Action]:
        following: list[Action] = []
        for action in actions:
            if isinstance(action, Say):
                self.pending.append(action)
            elif isinstance(action, Listen):
                following += await self._listen(action)
            elif isinstance(action, CallWebhook):
                await self._play_pending(wait=False)
                result = await perform_webhook(action)
                following += self.conversation.on_webhook_result(
                    result.status,
                    result.body,
                    result.error,
                    latency_s=result.latency_s,
                    attempts=result.attempts,
                )
            elif isinstance(action, Transfer):
                await self._play_pending(wait=True)
                status = await self.call.transfer(action.to)
                following += self.conversation.on_transfer_result(status)
                if 200 <= status < 300:
                    self.call.hangup()
            elif isinstance(action, Hangup):  # its message came as a Say just before it
                await self._play_pending(wait=True)
                self.call.hangup()
                return []
        return following

    async def _play_pending(self, *, wait: bool) -> bool:
        """Render and queue the pending prompts; wait for the end if asked. Interruptible if all are."""
        says, self.pending = self.pending, []
        last = None
        for say in says:
            last = self.call.play(await self.app.speak(say.text))
        if wait and last is not None:
            await self.call.wait_played(last)
        return all(s.interruptible for s in says)

    async def _listen(self, listen: Listen) -> list[Action]:
        """One caller turn, from the start of the prompt (barge-in) to the answer, silence or keys."""
        settings = self.app.agent.settings
        interruptible = await self._play_pending(wait=False) and settings.barge_in
        endpointer = Endpointer(
            make_vad(),
            silence_ms=settings.silence_ms,
            no_input_ms=settings.no_input_ms,
            max_speech_ms=settings.max_turn_ms,
        )
        early: list[bool] = []

        def on_partial(hypothesis: Hypothesis) -> None:
            if any(isinstance(a, EarlyClose) for a in self.conversation.on_partial(hypothesis.text)):
                early.append(True)

        turn = self.app.arbiter.start_turn(listen.question, on_partial=on_partial)
        digits = ""
        speaking = False
        try:
            while True:
                try:
                    item = await asyncio.wait_for(self.inbox.get(), DTMF_INTERDIGIT_S if digits else None)
                except TimeoutError:
                    return self.conversation.on_dtmf(digits)
                if item is None:
                    raise CallGone
                if isinstance(item, DtmfDigit):
                    if not listen.dtmf_allowed:
                        continue
                    self.call.stop_playback()
                    if item.digit == "#":
                        return self.conversation.on_dtmf(digits)
                    digits += item.digit
                    if _keypad_complete(listen, digits):
                        return self.conversation.on_dtmf(digits)
                    continue
                playing = self.call.stream.playing
                if playing and not interruptible:
                    endpointer.reset()  # the caller's turn starts when the prompt ends
                    continue
                if playing:
                    endpointer.hold_no_input()
                turn.feed(item)
                event = endpointer.feed(item)
                if early and not speaking:
                    early.clear()  # a partial before any speech onset: not an answer yet
                elif early:
                    event = endpointer.request_early_close() or event
                if isinstance(event, SpeechStarted):
                    speaking = True
                    if playing:
                        self.call.stop_playback()  # barge-in
                elif isinstance(event, SpeechEnded):
                    record = await turn.finish()
                    winner = record.winner
                    return self.conversation.on_final(
                        winner.text if winner else "",
                        winner.confidence if winner else 0.0,
                        hypotheses=[h for h in record.hypotheses if h.is_final],
                        arbiter_reason=record.reason,
                        winner=winner.engine if winner else None,
                    )
                elif isinstance(event, NoInput):
                    return self.conversation.on_no_input()
        finally:
            if not turn.finished:
                await turn.abandon()


class CallGone(Exception):
    """The caller hung up during a turn."""


def _keypad_complete(listen: Listen, digits: str) -> bool:
    question = listen.question
    if question.slot_type in (SlotType.YES_NO, SlotType.CHOICE):
        return len(digits) >= 1
    return question.digit_count is not None and len(digits) >= question.digit_count


async def serve_agent(path: Path, records: Path | None, **options: Any) -> dict[str, Any]:
    """``parley serve AGENT.yaml``: load, warm up and answer calls with the agent until stopped."""
    from parley.agent.loader import load_agent
    from parley.telephony.server import run_server

    agent = load_agent(path)
    engines = load_engines()
    # One decoder process per core beside the event loop's (at least one): decoding scales with cores.
    pool = DecodePool([engine.name for engine in engines], workers=max(1, (os.cpu_count() or 2) - 1))
    app = VoiceAgent(agent, engines=engines, pool=pool, records=records)
    try:
        await app.start()
        return await run_server(app, **options)
    finally:
        with contextlib.suppress(Exception):
            await app.close()
