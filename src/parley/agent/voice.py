"""A voice agent on a live call: the I/O around the sans-I/O :class:`Conversation`.

Per call, prompts are rendered by TTS (static ones come from the prompt cache) and played over
RTP; while a prompt plays and after it, the caller's 20 ms frames feed the endpointer (VAD) and
the ASR arbiter (engines decoding in worker processes). Every partial goes to the NLU; when the
answer is complete and stable the turn closes at once (early close) instead of waiting out the
silence; at a short pause in a digits answer the recognisers' final is checked too (semantic
endpointing, :meth:`Conversation.on_pause`). Speech during an interruptible prompt stops it
(barge-in). RFC 4733 digits answer keypad-capable questions. Webhooks, transfers (REFER) and
hang-ups are performed here, and the call record is appended to a JSON-lines file when the call ends.

Each closed turn's reply time goes into its record, in milliseconds from the moment the caller
stopped (the end of speech, or the last key): ``decision_ms`` when the dialogue had decided, and
``first_audio_ms`` when the reply's first RTP frame left the server (beside the speech layer's parts:
the endpointer's ``close_after_speech_ms`` and the recognisers' ``asr_finish_ms``). An agent with an
``acknowledgement`` ("Okay.") says it when the decision takes longer than ``acknowledge_after_ms``, so
the caller hears it at once while the recognisers finish (``acknowledgement_ms``); the reply follows it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import os
import time
import wave
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from parley.agent import metrics
from parley.agent.apology import load_apology
from parley.agent.model import Agent, TransferStep
from parley.agent.records import CallRecord, RecordFile, Turn, jsonable
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
from parley.agent.sealing import Keyring
from parley.agent.webhook import run_webhook
from parley.media.stream import Playback
from parley.speech.arbiter import Arbiter, EnginePriors
from parley.speech.endpoint import Endpointer, NoInput, Paused, SpeechEnded, SpeechStarted
from parley.speech.engines import load_engines
from parley.speech.engines.pool import HANG_S, DecodePool
from parley.speech.tts import CachedTts, FallbackTts, TtsEngine, load_tts, render, trim_silence
from parley.speech.types import FRAME_SAMPLES, AsrEngine, Hypothesis, Question, SlotType, TurnRecord
from parley.speech.vad import make_vad
from parley.telephony.call import Call, DtmfDigit
from parley.telephony.load import CpuMeter, usable_cores

log = logging.getLogger(__name__)

# Closed questions: the per-question grammar and the per-agent LM (cheap, streaming: the partials the
# dialogue understands while the caller speaks) and whisper's base and tiny.en models (decode once, at
# the end of the turn, hear best, and make different mistakes); on the answers whisper hears worst on
# noisy lines (digits, phone numbers, spellings, amounts), base again on noise-reduced audio too; free
# speech: whisper and the agent LM, whose partials feed early understanding. The general LM, the
# costliest engine, added nothing beside whisper (see bench/asr_arbiter.py).
_CLOSED_ENGINES = ("sphinx-grammar", "sphinx-agent-lm", "whisper", "whisper-tiny")
_NOISY_TYPES = (SlotType.DIGITS, SlotType.PHONE, SlotType.SPELLED, SlotType.AMOUNT)
LEAN_SELECTION: dict[SlotType, tuple[str, ...]] = {
    **{t: _CLOSED_ENGINES for t in SlotType if t is not SlotType.FREE},
    **{t: (*_CLOSED_ENGINES, "whisper-denoised") for t in _NOISY_TYPES},
    SlotType.FREE: ("sphinx-agent-lm", "whisper"),
}
# Asked in turn, each only when the engines before it do not agree (the arbiter's second opinions); the
# streaming decoders close a turn alone only when their agreement is sure (EnginePriors.sure_confidence;
# never on digits, phone numbers or spellings), at once after the end of speech, before whisper could
# have decoded. On the ASR benchmark's corpora (bench/asr_arbiter.py) the same answers right as when
# whisper base is always asked (280 of 342 evaluation answers): 13 % of them decided on the streaming
# decoders, 29 % with whisper base, 39 % with tiny.en, 19 % with all; 1.95 CPU-s per 4-answer call
# against 2.04 s, and 2.97 s with every engine at once.
SECOND_OPINIONS = (("whisper",), ("whisper-tiny",), ("whisper-denoised",))
# decode once per answer: a decode process of their own each
WHOLE_ANSWER_ENGINES = ("whisper", "whisper-tiny", "whisper-denoised")
# End of speech -> decision at the latest. Whisper base costs 0.25 CPU-s a decode on one machine of this
# project's kind and 1.6 on another (CTranslate2's int8 kernels differ by CPU): where it misses the
# deadline the turn closes on the streaming engines; PARLEY_ASR_DEADLINE_S waits longer for it.
ARBITER_DEADLINE_S = float(os.environ.get("PARLEY_ASR_DEADLINE_S") or 1.5)
# The recognisers hear the caller only from the VAD's speech onset (no decoding of silence or of
# the prompt's echo), plus this much audio before the onset: weak first sounds ("f" of "four").
PREROLL_MS = 300
FRAME_MS = 20
PROMPT_TAIL_MS = 150  # silence kept after a static prompt's last word (the caller's cue to speak)
ACKNOWLEDGEMENT_TAIL_MS = 40  # the reply follows the acknowledgement: no pause between them
PREROLL_FRAMES_MAX = 100  # frames kept while waiting for an onset (the VAD confirms within a few)
# Semantic endpointing: after this much of the caller's silence in a counted-digits answer, take the
# recognisers' final and close if the understanding layer finds it complete (Conversation.on_pause);
# else restart the recognisers on the turn's audio and listen on. Answers whose partials never held
# every digit (a first digit heard as "it is") waited the whole silence timeout before.
PAUSE_CHECK_MS = 250
PAUSE_CHECKS_MAX = 3  # per turn: each refused check re-decodes the turn's audio so far
# A complete answer closes the turn at the first pause this long (the VAD's own hangover included).
# WebRTC's VAD calls the end of a word such as the "s" of "yes" silence: closed 20 ms after it (the
# endpointer's 40 ms), whisper got "ye" and wrote "No.", which the arbiter took over the streaming
# engines' "yes" (every "yes" of a 30-call load test). 200 ms keeps the word whole (about 120 ms of
# silence after the VAD's last speech frame).
EARLY_CLOSE_MS = 200
# A turn that follows one closed early (at the first short pause of a complete answer) takes speech
# that comes before this much pause for the rest of that answer: "yes" closed the read-back of "yes,
# that's right", and "that's right" must not answer the next question nor barge in on it.
CARRY_OVER_MS = 400
PAUSE_CHECK_DEADLINE_S = 0.5  # a check waits this long for finals (frames queue meanwhile); else refused


class VoiceAgent:
    """The app ``CallManager`` runs for each answered call (``await agent_app(call)``)."""

    def __init__(
        self,
        agent: Agent,
        *,
        engines: list[AsrEngine] | None = None,
        pool: DecodePool | None = None,
        tts: TtsEngine | None = None,
        records: Path | RecordFile | None = None,
        priors: EnginePriors | None = None,
        pause_check_ms: int | None = PAUSE_CHECK_MS,
        version: int | None = None,
        keyring: Keyring | None = None,
        record_audio: bool = False,
        on_record: Callable[[CallRecord], None] | None = None,
    ) -> None:
        self.agent = agent
        self.on_record = on_record  # each ended call's record, beside the records file (the studio's calls)
        self.version = version  # the studio's version number, named in each call record
        self.keyring = keyring  # seals caller data in the records file
        self.record_audio = record_audio  # each turn's caller audio into the record (a WAV)
        self.pause_check_ms = pause_check_ms  # None: no semantic endpointing
        # One partial with a complete value closes the turn: engines only emit changed partials.
        self.nlu = ParleyUnderstanding(agent, stable_partials=1)
        self.engines = engines if engines is not None else load_engines()
        self.pool = pool
        self.arbiter = Arbiter(
            self.engines,
            pool=pool,
            priors=priors,
            deadline=ARBITER_DEADLINE_S,
            selection=LEAN_SELECTION,
            second_opinions=SECOND_OPINIONS,
        )
        engine = tts or load_tts(agent.voice.engine)
        self.tts = engine if isinstance(engine, CachedTts) else CachedTts(engine)
        # When the agent's engine fails on a prompt, its fallback voices speak it (none cached).
        fallbacks: list[tuple[TtsEngine, str | None]] = [
            (load_tts(name), voice) for name, voice in agent.voice.fallback_voices()
        ]
        self.speaker = FallbackTts([(self.tts, None), *fallbacks])  # static prompts: the cache first
        self.personal_speaker = FallbackTts([(self.tts.engine, None), *fallbacks])  # never cached
        self.apology = load_apology()  # played when every voice fails (None: the file is damaged)
        # the JSON-lines call records (a RecordFile: calls go on while the disk refuses them)
        self.records = RecordFile(records, keyring) if isinstance(records, Path) else records
        self.static_audio: dict[str, np.ndarray] = {}  # static prompts, rendered once at start
        self.acknowledgement: np.ndarray | None = None  # the agent's acknowledgement ("Okay."), start()
        self.http: httpx.AsyncClient | None = None  # one client for every call's webhooks (start())
        self._decoders_load: CpuMeter | None = None  # decode processes, each one core (start())
        self._cores_load: CpuMeter | None = None  # this process and its decoders on their cores
        self._decoders_replaced = 0  # the pool's count of replaced processes when last metered

    async def start(self) -> None:
        """Warm up before the first call: decoder processes, static prompts, question grammars, and
        the webhook client (a client per call cost ~40 ms of CPU: its TLS context)."""
        self.http = httpx.AsyncClient()
        if self.pool is not None:
            for pid in await self.pool.warm():
                engines = ", ".join(self.pool.engines_of(pid)) or "its engines"
                log.info("decode process %d runs %s", pid, engines)
            self._watch_decoders()
        voice = self.agent.voice
        for text in self.agent.prompts():
            if "{" not in text:
                try:
                    audio = await render(self.speaker, text, voice.voice, voice.rate)
                    self.static_audio[text] = trim_silence(audio, tail_ms=PROMPT_TAIL_MS)
                except Exception as exc:  # rendered again on first use; never fatal at start-up
                    log.warning("could not pre-render a prompt of %s: %s", self.agent.name, exc)
        said = self.static_audio.get(self.agent.settings.acknowledgement or "")
        self.acknowledgement = None if said is None else trim_silence(said, tail_ms=ACKNOWLEDGEMENT_TAIL_MS)
        for step in self.agent.slots().values():
            await self.arbiter.prepare(ask_question(self.agent, step, step.prompt))

    def _watch_decoders(self) -> None:
        """Meter the decode processes running now (again after the pool replaced one)."""
        assert self.pool is not None
        workers = self.pool.pids()
        self._decoders_replaced = self.pool.replaced
        if self.pool.kind == "process" and workers:
            self._decoders_load = CpuMeter(workers, cores=len(workers))
            self._cores_load = CpuMeter([os.getpid(), *workers], cores=usable_cores())

    def cpu_load(self) -> float:
        """Load of the speech decoding beyond the event loop's process (admission control): its
        worker processes, or the cores they share with the event loop, whichever is busier."""
        pool = self.pool
        if pool is not None and pool.replaced != self._decoders_replaced and pool.all_running:
            self._watch_decoders()
        if self._decoders_load is None or self._cores_load is None:
            return 0.0
        load = max(self._decoders_load(), self._cores_load())
        metrics.DECODE_LOAD.set(load)
        return load

    async def close(self) -> None:
        if self.http is not None:
            await self.http.aclose()
        if self.pool is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.pool.close)

    async def prompt_audio(self, say: Say) -> AsyncIterator[np.ndarray]:
        """The prompt's 8 kHz audio as it is rendered: static prompts from memory at once, others
        streamed clause by clause. Prompts made from the caller's data never reach the disk cache."""
        static = self.static_audio.get(say.text)
        if static is not None:
            yield static
            return
        voice = self.agent.voice
        engine = self.personal_speaker if say.personal else self.speaker
        started = False
        async for chunk in engine.stream(say.text, voice.voice, voice.rate):
            if not started:
                chunk = trim_silence(chunk)  # the reply starts with the first word, not 250 ms later
                started = len(chunk) > 0
            if len(chunk):
                yield chunk

    def screen(self, caller: str, called: str) -> str | None:
        """Why a call from ``caller`` to ``called`` is refused by the agent's ``access`` rules, or
        None (the call manager answers 403 and logs the reason, which never holds the numbers)."""
        refusal = self.agent.access.refusal(caller, called)
        return None if refusal is None else f"agent {self.agent.name}: {refusal}"

    async def __call__(self, call: Call) -> None:
        await _CallSession(self, call).run()


# How a call ended without the caller hanging up (the Call's end reason): said in the record.
CALLER_GONE = {
    "ice-failed": "caller gone: the browser stopped answering (ICE consent expired)",
    "timeout": "caller gone: no answer to our SIP requests",
}


SPEECHLESS = "every TTS voice failed"  # the record's outcome reason; also queued in a call's inbox


class Speechless(Exception):
    """Every TTS voice failed on a prompt: the call ends with the pre-rendered apology."""


class _CallSession:
    """One call: plays prompts, runs turns, performs the conversation's actions."""

    def __init__(self, app: VoiceAgent, call: Call) -> None:
        self.app = app
        self.call = call
        self.conversation = Conversation(app.agent, app.nlu, call_id=call.call_id)
        self.conversation.record.agent_version = app.version
        self.heard: list[np.ndarray] = []  # the open turn's audio as the recognisers got it
        self.carry_over = False  # the last turn closed while the caller may have been speaking on
        self.inbox: asyncio.Queue[np.ndarray | DtmfDigit | str | None] = asyncio.Queue()
        self.pending: list[Say] = []
        self.prompts = _PromptPlayer(app, call, on_speechless=lambda: self.inbox.put_nowait(SPEECHLESS))
        self.listened: Turn | None = None  # the record's turn of the Listen in progress

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
        except Speechless:
            await self._apologise()
        finally:
            pump.cancel()
            self.prompts.cancel()
            record = self.conversation.record
            record.channel = self.call.channel
            if self.call.ended.is_set() and self.conversation.outcome is None:
                self.conversation.on_hangup(CALLER_GONE.get(self.call.end_reason, "caller hung up"))
            record.end_reason = self.call.end_reason or None
            if self.app.records is not None:
                self.app.records.append(record)
            if self.app.on_record is not None:
                self.app.on_record(record)

    async def _apologise(self) -> None:
        """No voice can speak: play the pre-rendered apology, then hand the call over to the agent's
        first transfer target (without its message: that needs a voice), else hang up."""
        self.prompts.cancel()
        app = self.app
        target = next((step.to for step in app.agent.steps if isinstance(step, TransferStep)), None)
        self.conversation._finish("transferred" if target else "failed", SPEECHLESS)
        if app.apology is not None and not self.call.ended.is_set():
            await self.call.wait_played(self.call.play(app.apology))
        if target is not None and not self.call.ended.is_set():
            status = await self.call.transfer(target)
            if not 200 <= status < 300:
                self.conversation.record.outcome = "failed"
        self.call.hangup()

    async def _perform(self, actions: list[Action]) -> list[Action]:
        following: list[Action] = []
        for action in actions:
            if isinstance(action, Say):
                self.pending.append(action)
                self.call.publish({"type": "prompt", "text": action.text})
            elif isinstance(action, Listen):
                turn = len(self.conversation.record.turns) - 1  # the Listen's turn (its answer adds the next)
                following += await self._listen(action)
                if self.app.record_audio and self.heard and turn >= 0:
                    self.conversation.record.audio[turn] = wav_base64(np.concatenate(self.heard))
            elif isinstance(action, CallWebhook):
                await self._play_pending(wait=False)

                def hold(says: list[Say]) -> None:  # a slow backend: "one moment, please", after the prompts
                    self.pending, queued = [], [*self.pending, *says]
                    self.prompts.speak(queued)

                result, after = await run_webhook(self.conversation, action, hold, client=self.app.http)
                metrics.WEBHOOK_SECONDS.observe(result.latency_s)
                if not result.ok:
                    failed = "unknown" if result.unknown else "status" if result.status else "error"
                    metrics.WEBHOOK_ERRORS.labels(failed).inc()
                following += after
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
        """Start speaking the pending prompts; wait for their end if asked. Interruptible if all are."""
        says, self.pending = self.pending, []
        if says:
            self.prompts.speak(says)
        if wait:
            await self.prompts.wait()
            if self.prompts.speechless:
                raise Speechless
        return all(s.interruptible for s in says)

    async def _listen(self, listen: Listen) -> list[Action]:
        """One caller turn, from the start of the prompt (barge-in) to the answer, silence or keys."""
        settings = self.app.agent.settings
        interruptible = await self._play_pending(wait=False) and settings.barge_in
        checks = PAUSE_CHECKS_MAX if _pause_checkable(listen.question) else 0
        endpointer = Endpointer(
            make_vad(),
            silence_ms=settings.silence_ms,
            no_input_ms=settings.no_input_ms,
            max_speech_ms=settings.max_turn_ms,
            pause_check_ms=self.app.pause_check_ms if checks else None,
            early_close_ms=EARLY_CLOSE_MS,
        )
        early: list[bool] = []
        before_onset: deque[np.ndarray] = deque(maxlen=PREROLL_FRAMES_MAX)
        heard: list[np.ndarray] = []  # every frame the recognisers got this turn (replayed on a restart)
        self.heard = heard

        def on_partial(hypothesis: Hypothesis) -> None:
            self.call.publish({"type": "partial", "engine": hypothesis.engine, "text": hypothesis.text})
            if any(isinstance(a, EarlyClose) for a in self.conversation.on_partial(hypothesis.text)):
                early.append(True)

        turn = self.app.arbiter.start_turn(listen.question, on_partial=on_partial)
        turns = self.conversation.record.turns
        self.listened = turns[-1] if turns else None  # this Listen's turn (its answer adds the next)
        keys = KeypadEntry(listen)
        speaking = False
        words: asyncio.Future[TurnRecord] | None = None  # the words before the first key, recognised
        carry, carrying = self.carry_over, False
        self.carry_over = False
        try:
            while True:
                if words is not None and words.done() and self._keys_complete(keys, words):
                    return await self._keyed(keys, words)
                try:
                    # the inter-digit deadline runs from the last key: audio frames do not extend it
                    item = await asyncio.wait_for(self.inbox.get(), keys.remaining(time.monotonic()))
                except TimeoutError:
                    return await self._keyed(keys, words)
                if item is None:
                    raise CallGone
                if item is SPEECHLESS:
                    raise Speechless
                if isinstance(item, DtmfDigit):
                    if not listen.dtmf_allowed:
                        continue
                    self.prompts.cancel()
                    if not keys.digits and speaking:
                        # "four two…" then keys: one answer; the words are over: recognise them now
                        words = asyncio.ensure_future(turn.finish())
                    if keys.press(item.digit, time.monotonic(), after_words=words is not None):
                        return await self._keyed(keys, words)
                    continue
                playing = self.prompts.active
                if playing and not interruptible:
                    endpointer.reset()  # the caller's turn starts when the prompt ends
                    before_onset.clear()
                    carry = False
                    continue
                if playing:
                    endpointer.hold_no_input()
                event = endpointer.feed(item)
                if carry and endpointer.silence * FRAME_MS >= CARRY_OVER_MS:
                    carry = False  # a pause: what the caller says next is a new answer
                if carry and isinstance(event, SpeechStarted):
                    carrying, carry = True, False
                if carrying:
                    # the rest of the last answer, which closed early ("yes" of "yes, that's right"):
                    # no answer to this question, and no barge-in on its prompt
                    carrying = not isinstance(event, SpeechEnded)
                    if not carrying:
                        endpointer.reset()
                        before_onset.clear()
                    continue
                if speaking and not turn.finished:
                    turn.feed(item)
                    heard.append(item)
                else:
                    before_onset.append(item)
                if early and speaking:
                    event = endpointer.request_early_close() or event
                record: TurnRecord | None = None
                # a check needs recognisers that kept up: a lagging one's final would come too late;
                # once keys come, the keypad ends the turn (the words before them begin the answer)
                if isinstance(event, Paused) and checks and not turn.lagging and not keys.digits:
                    checks -= 1
                    record = await turn.finish(deadline=PAUSE_CHECK_DEADLINE_S)
                    ended = endpointer.end_on_pause() if self._closes_at_pause(record) else None
                    if ended is None:  # listen on: fresh sessions, fed the turn's audio so far
                        turn = self.app.arbiter.start_turn(listen.question, on_partial=on_partial)
                        for frame in heard:
                            turn.feed(frame)
                        continue
                    event = ended
                if isinstance(event, SpeechStarted):
                    speaking = True
                    if playing:
                        self.prompts.cancel()  # barge-in
                    onset = len(before_onset) - (endpointer.elapsed_ms - event.at_ms + PREROLL_MS) // FRAME_MS
                    for frame in list(before_onset)[max(0, onset) :]:
                        turn.feed(frame)
                        heard.append(frame)
                    before_onset.clear()
                elif isinstance(event, SpeechEnded):
                    if keys.digits:  # keying goes on: the keypad ends this turn
                        speaking = False
                        continue
                    ended_at = time.monotonic() - (event.at_ms - event.last_speech_ms) / 1000  # last speech
                    self.carry_over = event.reason in ("early-close", "pause")
                    acknowledgement: list[Playback] = []
                    if record is None:
                        acknowledging = self._acknowledge_unless_decided(ended_at, acknowledgement)
                        try:
                            record = await turn.finish()
                        finally:
                            if acknowledging is not None:
                                acknowledging.cancel()
                    winner = record.winner
                    timing = {
                        "close_after_speech_ms": event.at_ms - event.last_speech_ms,  # VAD hangover included
                        "asr_finish_ms": record.finish_seconds * 1000,
                        **{f"asr_{name}_ms": s * 1000 for name, s in record.answer_seconds.items()},
                    }
                    decided = self.conversation.on_final(
                        winner.text if winner else "",
                        winner.confidence if winner else 0.0,
                        hypotheses=[h for h in record.hypotheses if h.is_final],
                        arbiter_reason=record.reason,
                        winner=winner.engine if winner else None,
                        timing=timing,
                    )
                    self._decided(ended_at)
                    for playback in acknowledgement:  # noted after on_final, which sets the turn's timing
                        self._note_acknowledgement(playback, ended_at)
                    latency = time.monotonic() - ended_at
                    metrics.TURN_LATENCY_SECONDS.observe(latency)
                    self._publish_turn(latency)
                    return decided
                elif isinstance(event, NoInput) and not keys.digits:
                    decided = self.conversation.on_no_input()
                    self._publish_turn()
                    return decided
        finally:
            if words is not None and not words.done():
                words.cancel()
                await turn.abandon()
            elif not turn.finished:
                await turn.abandon()

    def _keys_complete(self, keys: KeypadEntry, words: asyncio.Future[TurnRecord]) -> bool:
        """Whether the words said before the keys (recognised by now) and the keys so far make an
        answer of the expected length; asked once per key."""
        if keys.checked == keys.digits or words.cancelled() or words.exception() is not None:
            return False
        keys.checked = keys.digits
        return self.conversation.keys_complete(keys.digits, [h.text for h in _finals(words.result())])

    async def _keyed(self, keys: KeypadEntry, words: asyncio.Future[TurnRecord] | None) -> list[Action]:
        """The keypad ended the turn; words spoken before the first key (if any) begin the answer."""
        finals: list[Hypothesis] = []
        winner = None
        if words is not None:
            record = await words
            winner = record.winner
            finals = _finals(record)
        decided = self.conversation.on_dtmf(
            keys.digits,
            spoken=[h.text for h in finals],
            hypotheses=finals,
            winner=winner.engine if winner is not None else None,
        )
        if keys.last_key is not None:
            self._decided(keys.last_key)
        self._publish_turn()
        return decided

    def _acknowledge_unless_decided(
        self, stopped: float, said: list[Playback]
    ) -> asyncio.TimerHandle | None:
        """Have the agent's acknowledgement ("Okay.") said ``acknowledge_after_ms`` after the end of
        speech unless the answer is decided by then (the caller of this cancels the timer); its
        playback is appended to ``said``. None: the agent has no acknowledgement."""
        settings = self.app.agent.settings
        pcm = self.app.acknowledgement
        if pcm is None:
            return None
        delay = max(0.0, stopped + settings.acknowledge_after_ms / 1000 - time.monotonic())
        return asyncio.get_running_loop().call_later(delay, lambda: said.append(self.call.play(pcm)))

    def _note_acknowledgement(self, playback: Playback, stopped: float) -> None:
        """The acknowledgement's first frame out (``acknowledgement_ms`` in the turn's timing), now
        or when it has left."""
        turn = self.listened
        if turn is None:
            return
        if playback.first_sent is not None or playback.finished:
            _note_first_frame(turn, "acknowledgement_ms", playback, stopped)
            return

        def noted(_stopped: bool) -> None:
            _note_first_frame(turn, "acknowledgement_ms", playback, stopped)

        playback.callbacks.append(noted)

    def _decided(self, stopped: float) -> None:
        """Note in the closed turn's record when the dialogue decided, counted from ``stopped`` (when
        the caller stopped, ``time.monotonic``), and have the reply's first audio out noted there too."""
        turn = self.listened
        if turn is None:
            return
        turn.timing["decision_ms"] = round((time.monotonic() - stopped) * 1000, 1)
        self.prompts.reply_to(turn, stopped)

    def _publish_turn(self, latency_s: float | None = None) -> None:
        """The closed turn and the slots so far, for whoever watches the call (a browser's page):
        the winning hypothesis, and the time from the end of the caller's speech to the decision."""
        turn = self.listened
        if turn is None:
            return
        winner = next((h for h in turn.hypotheses if h.get("chosen")), None)
        self.call.publish(
            {
                "type": "turn",
                "step": turn.step,
                "input": turn.input,
                "transcript": turn.transcript,
                "engine": winner.get("engine") if winner else None,
                "confidence": turn.confidence,
                "result": turn.result,
                "latency_ms": None if latency_s is None else round(1000 * latency_s, 1),
            }
        )
        slots = {name: jsonable(value) for name, value in self.conversation.slots.items()}
        self.call.publish({"type": "slots", "slots": slots})

    def _closes_at_pause(self, record: TurnRecord) -> bool:
        """Whether the arbiter's final at a pause completes the answer (the conversation decides)."""
        winner = record.winner
        if winner is None or not winner.is_final:
            return False
        for heard in pause_witnesses(record):
            actions = self.conversation.on_pause(winner.text, winner.confidence, heard=heard)
            if any(isinstance(a, EarlyClose) for a in actions):
                return True
        return False


def pause_witnesses(record: TurnRecord) -> list[str]:
    """The partials that may confirm the winning final at a pause (``Conversation.on_pause``'s
    ``heard``): the winning engine's last one; for an engine without partials (whisper decodes the
    whole answer), each streaming engine's last one. Whisper's complete "2 8 1 3" had no partial of its
    own to agree with, so the turn waited out the silence timeout while the grammar's "it is eight one
    three" (its "two" heard as "it is", on a browser's Opus audio) said the same."""
    winner = record.winner
    if winner is None:
        return []
    last: dict[str, str] = {}
    for hypothesis in record.hypotheses:
        if not hypothesis.is_final:
            last[hypothesis.engine] = hypothesis.text
    if winner.engine in last:
        return [last[winner.engine]]
    return list(last.values()) or [""]


class CallGone(Exception):
    """The caller hung up during a turn."""


class _PromptPlayer:
    """Speaks a call's prompts in the background, so listening (and barge-in) starts with the first
    audio, not after the whole prompt is rendered. Streamed chunks are queued whole 20 ms frames at a
    time (a ragged chunk end would be padded with silence: a click inside a word)."""

    def __init__(self, app: VoiceAgent, call: Call, on_speechless: Callable[[], None]) -> None:
        self.app = app
        self.call = call
        self.on_speechless = on_speechless  # every voice failed on a prompt (called once)
        self.speechless = False
        self.task: asyncio.Task[None] | None = None
        self.last: Playback | None = None
        self.replying: tuple[Turn, float] | None = None  # the turn whose reply's first audio is awaited

    def reply_to(self, turn: Turn, stopped: float) -> None:
        """Note in ``turn``'s timing (``first_audio_ms``) when the next audio's first frame leaves,
        counted from ``stopped`` (``time.monotonic``, the media clock's time)."""
        self.replying = (turn, stopped)

    def _play(self, pcm: np.ndarray) -> None:
        playback = self.call.play(pcm)
        self.last = playback
        if self.replying is not None:
            playback.callbacks.append(lambda _stopped: self._sent(playback))

    def _sent(self, playback: Playback) -> None:
        """A reply's playback ended (played out or stopped): its first frame's time, if it left."""
        if self.replying is not None and playback.first_sent is not None:
            turn, stopped = self.replying
            _note_first_frame(turn, "first_audio_ms", playback, stopped)
            self.replying = None

    def speak(self, says: list[Say]) -> None:
        """Queue ``says`` after whatever is still being rendered."""
        self.task = asyncio.ensure_future(self._render(says, self.task))

    async def _render(self, says: list[Say], previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        for say in says:
            carry = np.empty(0, dtype=np.int16)
            try:
                async for chunk in self.app.prompt_audio(say):
                    pcm = np.concatenate((carry, chunk)) if len(carry) else chunk
                    whole = len(pcm) - len(pcm) % FRAME_SAMPLES
                    if whole:
                        self._play(pcm[:whole])
                    carry = pcm[whole:]
            except Exception as exc:  # every voice failed (FallbackTts logged each): the apology
                log.error("call %s: no voice can speak (%s)", self.call.call_id, type(exc).__name__)
                self.speechless = True
                self.on_speechless()
                return
            if len(carry):
                self._play(carry)

    @property
    def active(self) -> bool:
        """A prompt is being rendered or is still queued for sending."""
        return (self.task is not None and not self.task.done()) or self.call.stream.playing

    async def wait(self) -> None:
        """Until everything spoken so far has been sent (or stopped)."""
        if self.task is not None:
            await asyncio.wait([self.task])
        if self.last is not None:
            await self.call.wait_played(self.last)

    def cancel(self) -> None:
        """Stop at once: rendering and queued audio (barge-in, end of call)."""
        if self.task is not None:
            self.task.cancel()
        self.call.stop_playback()


def _note_first_frame(turn: Turn, key: str, playback: Playback, stopped: float) -> None:
    """``turn.timing[key]``: when ``playback``'s first frame left, in ms after ``stopped``."""
    if playback.first_sent is not None:
        turn.timing[key] = round((playback.first_sent - stopped) * 1000, 1)


def wav_base64(pcm: np.ndarray, rate: int = 8000) -> str:
    """8 kHz 16-bit audio as a base64 WAV file (a turn's caller audio in the call record)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return base64.b64encode(out.getvalue()).decode("ascii")


def _finals(record: TurnRecord) -> list[Hypothesis]:
    """A turn's finals, the arbiter's choice first."""
    finals = [h for h in record.hypotheses if h.is_final]
    finals.sort(key=lambda h: h != record.winner)
    return finals


def _pause_checkable(question: Question) -> bool:
    """Counted digits: the grammar forces its final to the count, which partials may never reach."""
    return question.slot_type in (SlotType.DIGITS, SlotType.PHONE) and bool(question.digit_count)


class KeypadEntry:
    """The keys of one answer: complete at the terminator, at the maximum number of keys, when the
    inter-digit time has passed since the *last key* (an absolute deadline: the 20 ms audio frames
    that keep arriving meanwhile must not restart it), or when a first key that is an answer by itself
    (a read-back's 1 or 2, unless words came before it) is followed by no other key within
    ``dtmf_answer_wait_s`` (other keys make it the start of a keyed value: a correction)."""

    def __init__(self, listen: Listen) -> None:
        self.listen = listen
        self.digits = ""
        self.deadline: float | None = None
        self.last_key: float | None = None  # when the last key came
        self.checked: str | None = None  # the keys last asked about (whether the answer is whole)

    def press(self, key: str, now: float, *, after_words: bool = False) -> bool:
        """Add a key pressed at ``now`` (``after_words``: the caller spoke before the first key);
        True when the answer is complete."""
        self.last_key = now
        if key == self.listen.dtmf_terminator:
            self.deadline = now  # also ends an empty answer: on_dtmf("") is a no-match
            return True
        self.digits += key
        self.deadline = now + self.listen.dtmf_interdigit_s
        if self.digits in self.listen.dtmf_answer_keys and len(self.digits) == 1 and not after_words:
            if self.listen.dtmf_answer_wait_s <= 0:
                return True
            self.deadline = now + self.listen.dtmf_answer_wait_s  # alone by then: the answer
        limit = self.listen.dtmf_max_digits
        return limit is not None and len(self.digits) >= limit

    def remaining(self, now: float) -> float | None:
        """Seconds left until the inter-digit timeout (None: no key yet, wait for anything)."""
        return None if self.deadline is None else max(0.0, self.deadline - now)


def decode_pool(engines: list[AsrEngine], processes: int | None, hang_s: float = HANG_S) -> DecodePool:
    """The decode processes of a serving process: ``processes``, or one per core beside the event
    loop's (at least one), as decoding scales with cores; whisper, which decodes whole answers, in a
    process of its own (see DecodePool)."""
    names = [engine.name for engine in engines]
    dedicated = [name for name in names if name in WHOLE_ANSWER_ENGINES]
    workers = processes or max(1, (os.cpu_count() or 2) - 1)
    return DecodePool(names, workers=workers, dedicated=dedicated, hang_s=hang_s)


async def serve_agent(
    path: Path,
    records: Path | None,
    *,
    decode_processes: int | None = None,
    decode_hang_s: float = HANG_S,
    keyring: Keyring | None = None,
    **options: Any,
) -> dict[str, Any]:
    """``parley serve AGENT.yaml``: load, warm up and answer calls with the agent until stopped."""
    from parley.agent.loader import load_agent
    from parley.telephony.server import run_server

    agent = load_agent(path)
    engines = load_engines()
    pool = decode_pool(engines, decode_processes, decode_hang_s)
    app = VoiceAgent(agent, engines=engines, pool=pool, records=records, keyring=keyring)
    try:
        await app.start()
        return await run_server(app, load_sources=[app.cpu_load], **options)
    finally:
        with contextlib.suppress(Exception):
            await app.close()
