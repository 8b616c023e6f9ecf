"""A voice agent's caller turn (``_CallSession._listen``) on real speech with scripted recognisers:
semantic endpointing at a pause, and listening on (recognisers restarted on the turn's audio) when
the final at the pause does not complete the answer."""

from __future__ import annotations

import asyncio
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from parley.agent.loader import load_agent_text
from parley.agent.runtime import Listen
from parley.agent.voice import PAUSE_CHECK_MS, VoiceAgent, _CallSession
from parley.loadtest.audio import AnswerBook
from parley.media import g711
from parley.speech.arbiter import EnginePriors
from parley.speech.tts import CachedTts, FliteTts, PromptCache, load_tts, render, trim_silence
from parley.speech.types import FRAME_SAMPLES, Hypothesis, Question

from .e2e_agents import agent_yaml, ask

pytestmark = pytest.mark.skipif(shutil.which("flite") is None, reason="flite renders the caller's speech")

ACCOUNT = ask("account", "digits", "What is your account number?", digits=4)
AGENT = agent_yaml("turns-test", [ACCOUNT])
RATE = 8000


class ScriptedSession:
    """Partials and final chosen by how much audio the session got (seconds → text)."""

    def __init__(self, engine: ScriptedEngine) -> None:
        self.engine = engine
        self.samples = 0
        self.text = ""

    def feed(self, pcm: np.ndarray) -> Hypothesis | None:
        self.samples += len(pcm)
        text = self.engine.text_at(self.engine.partials, self.samples)
        if text == self.text:
            return None
        self.text = text
        return Hypothesis(self.engine.name, text, 0.0, is_final=False)

    def finish(self) -> Hypothesis:
        self.engine.finished.append(self.samples / RATE)
        return Hypothesis(self.engine.name, self.engine.text_at(self.engine.finals, self.samples), 0.9, True)


class ScriptedEngine:
    name = "sphinx-grammar"

    def __init__(self, partials: list[tuple[float, str]], finals: list[tuple[float, str]]) -> None:
        self.partials = partials
        self.finals = finals
        self.finished: list[float] = []  # seconds of audio each finished session had heard

    @staticmethod
    def text_at(script: list[tuple[float, str]], samples: int) -> str:
        return next((text for at, text in reversed(script) if samples >= at * RATE), "")

    def supports(self, question: Question) -> bool:
        return True

    def prepare(self, question: Question) -> None:
        pass

    def start(self, question: Question) -> ScriptedSession:
        return ScriptedSession(self)


async def speech(text: str) -> np.ndarray:
    pcm = trim_silence(await render(load_tts("flite"), text, "slt"), lead_ms=0)
    return g711.decode("PCMU", g711.encode("PCMU", pcm))


def silence(ms: int) -> np.ndarray:
    return np.zeros(ms * RATE // 1000, dtype=np.int16)


def stub_call() -> SimpleNamespace:
    """What a call session needs of its call when no prompt is played."""
    return SimpleNamespace(
        call_id="t1",
        stream=SimpleNamespace(playing=False),
        stop_playback=lambda: None,
        publish=lambda event: None,
    )


async def listen(
    tmp_path, engine: ScriptedEngine | list[ScriptedEngine], audio: np.ndarray
) -> _CallSession:
    """Run the first turn of AGENT over ``audio`` (20 ms frames, paced a little like RTP)."""
    engines = engine if isinstance(engine, list) else [engine]
    app = VoiceAgent(
        load_agent_text(AGENT), engines=engines, tts=CachedTts(FliteTts(), PromptCache(tmp_path))
    )
    session = _CallSession(app, stub_call())  # type: ignore[arg-type]
    listen_action = next(a for a in session.conversation.start() if isinstance(a, Listen))
    frames = [audio[i : i + FRAME_SAMPLES] for i in range(0, len(audio) - FRAME_SAMPLES + 1, FRAME_SAMPLES)]

    async def caller() -> None:
        for frame in frames:
            session.inbox.put_nowait(frame)
            await asyncio.sleep(0.002)  # the scripted engines answer between frames

    feeding = asyncio.ensure_future(caller())
    await asyncio.wait_for(session._listen(listen_action), 20)
    feeding.cancel()
    return session


async def test_a_complete_final_at_a_pause_ends_the_turn_there(tmp_path):
    answer = await speech("two seven three nine")
    end_s = 0.5 + len(answer) / RATE
    engine = ScriptedEngine(  # "two" heard as "it is" in every partial: no early close on partials
        partials=[(0.3, "it is"), (0.9, "it is seven three"), (end_s - 0.2, "it is seven three nine")],
        finals=[(0.0, "two seven three nine")],
    )
    session = await listen(tmp_path, engine, np.concatenate([silence(500), answer, silence(1500)]))
    assert session.conversation.slots["account"] == "2739"
    turn = session.conversation.record.turns[0]
    assert turn.close == "pause" and turn.t_early_close is not None
    assert abs(turn.timing["close_after_speech_ms"] - PAUSE_CHECK_MS) <= 100  # not the 700 ms timeout
    assert len(engine.finished) == 1


class WholeAnswerEngine(ScriptedEngine):
    """Decodes the whole answer at once, like whisper: a final, no partials."""

    name = "whisper"


async def test_a_whole_answer_final_at_a_pause_is_confirmed_by_a_streaming_engines_partial(tmp_path):
    """Whisper's complete final has no partial of its own: the streaming engine's last one, which says
    the same digits, confirms it, and the turn ends at the pause (it waited for the silence timeout)."""
    answer = await speech("two seven three nine")
    end_s = 0.5 + len(answer) / RATE
    streaming = ScriptedEngine(
        partials=[(0.3, "it is"), (0.9, "it is seven three"), (end_s - 0.2, "it is seven three nine")],
        finals=[(0.0, "it is seven three nine")],
    )
    whole = WholeAnswerEngine(partials=[], finals=[(0.0, "2 7 3 9")])
    audio = np.concatenate([silence(500), answer, silence(1500)])
    session = await listen(tmp_path, [streaming, whole], audio)
    assert session.conversation.slots["account"] == "2739"
    turn = session.conversation.record.turns[0]
    assert turn.close == "pause" and turn.hypotheses and "whisper" in str(turn.arbiter_reason)
    assert abs(turn.timing["close_after_speech_ms"] - PAUSE_CHECK_MS) <= 100  # not the 700 ms timeout


async def test_a_final_that_invents_the_last_digit_at_a_pause_is_refused_and_listening_goes_on(tmp_path):
    first, second = await speech("four two seven"), await speech("one")
    audio = np.concatenate([silence(500), first, silence(400), second, silence(1500)])
    # seconds of the turn's audio (it starts 300 ms before the speech onset, at about 0.2 s)
    pause_s = 0.3 + len(first) / RATE
    engine = ScriptedEngine(
        partials=[(0.3, "four"), (0.8, "four two"), (pause_s - 0.1, "four two seven")],
        # at the pause the count-forced final repeats the last digit; with "one" heard it is right
        finals=[(0.0, "four two seven seven"), (pause_s + 0.4, "four two seven one")],
    )
    session = await listen(tmp_path, engine, audio)
    assert session.conversation.slots["account"] == "4271"
    turn = session.conversation.record.turns[0]
    assert turn.close is None and turn.t_early_close is None  # ended by the silence timeout
    # checked at both pauses (refused: the partials never ended in "one"), then the final; every
    # restarted session was fed the turn's audio from its start again
    assert len(engine.finished) == 3
    assert engine.finished[0] < pause_s + 0.4 < engine.finished[1] < engine.finished[2]
    assert engine.finished[2] >= pause_s + 0.4 + len(second) / RATE + 0.4  # and the silence after


TWO_ASKS = agent_yaml("carry-over-test", [ACCOUNT, ask("agree", "yes_no", "Shall I go ahead?")])


async def two_turns(tmp_path, audio: np.ndarray, answer_s: float, prompt_s: tuple[float, float] = (0.0, 0.0)):
    """The account turn, closed early on its partials (``answer_s``: how long the answer is; it starts
    0.5 s into ``audio``),
    then the yes/no turn heard as "yes"; the yes/no prompt plays over the seconds ``prompt_s`` of the
    caller's audio (fed at twice real time, so that the scripted partials come between frames)."""
    end_s = 0.3 + answer_s  # the turn's audio starts about 300 ms before the onset
    engine = ScriptedEngine(  # the same value in two partials: complete and stable, closed at the next pause
        partials=[
            (end_s - 0.3, "four two seven"),
            (end_s - 0.2, "four two seven one"),
            (end_s, "for two seven one"),
        ],
        finals=[(0.0, "four two seven one")],
    )
    app = VoiceAgent(
        load_agent_text(TWO_ASKS), engines=[engine], tts=CachedTts(FliteTts(), PromptCache(tmp_path))
    )
    call = stub_call()
    session = _CallSession(app, call)  # type: ignore[arg-type]
    first = next(a for a in session.conversation.start() if isinstance(a, Listen))

    async def caller() -> None:
        for i in range(0, len(audio) - FRAME_SAMPLES + 1, FRAME_SAMPLES):
            call.stream.playing = prompt_s[0] <= i / RATE < prompt_s[1]
            session.inbox.put_nowait(audio[i : i + FRAME_SAMPLES])
            await asyncio.sleep(0.01)

    feeding = asyncio.ensure_future(caller())
    try:
        second = next(a for a in await asyncio.wait_for(session._listen(first), 20) if isinstance(a, Listen))
        assert session.conversation.slots["account"] == "4271"
        assert session.conversation.record.turns[0].close == "partial"  # closed early, on the partials
        engine.partials, engine.finals = [], [(0.0, "yes")]
        await asyncio.wait_for(session._listen(second), 20)
    finally:
        feeding.cancel()
    return session, engine


async def test_the_rest_of_an_answer_closed_early_does_not_answer_the_next_question(tmp_path):
    """ "four two seven one, thank you": the account turn closes early at the comma (its answer is
    complete); the thanks go on into the next turn, where it neither answers the yes/no question
    nor barges in on it; the caller's "yes" after it does."""
    answer, rest = await speech("four two seven one"), await speech("thank you very much for that")
    yes = await speech("yes")
    audio = np.concatenate([silence(500), answer, silence(300), rest, silence(1500), yes, silence(1500)])
    session, engine = await two_turns(tmp_path, audio, len(answer) / RATE)
    assert session.conversation.slots["agree"] is True
    # the yes/no turn heard "yes" (from just before it to the silence after it), not the thanks
    assert engine.finished[1] < 0.3 + len(yes) / RATE + 0.9 < len(rest) / RATE + 0.7, engine.finished


async def test_an_answer_right_after_the_next_prompt_is_not_taken_for_the_rest_of_the_last(tmp_path):
    """After a turn closed early, the next prompt plays for 2 s and the caller says "yes" 300 ms after
    it ends: that is the answer (the endpointer's clock restarts while a prompt plays, so the start of
    speech is counted from the start of the turn)."""
    answer, yes = await speech("four two seven one"), await speech("yes")
    end = 0.5 + len(answer) / RATE
    audio = np.concatenate([silence(500), answer, silence(2600), yes, silence(1500)])
    session, _ = await two_turns(tmp_path, audio, len(answer) / RATE, prompt_s=(end + 0.3, end + 2.3))
    assert [t.result for t in session.conversation.record.turns] == ["accepted", "accepted"]
    assert session.conversation.slots["agree"] is True


YES_NO = agent_yaml("yes-test", [ask("agree", "yes_no", "Does that work for you?")])


async def test_a_yes_closed_early_reaches_every_engine_whole(tmp_path):
    """The real engines (the streaming decoders and whisper, in their decode processes): the partials
    say "yes" and close the turn early, and whisper still gets the whole word. Closed at the VAD's first
    silent frame, it got "ye" and wrote "No.", and the arbiter took that over the two "yes". (Whisper is
    asked here even when the streaming decoders are sure of their "yes".)"""
    priors = EnginePriors.shipped()
    priors.sure_confidence = 1.0  # never sure: whisper decodes every answer
    tts = CachedTts(FliteTts(), PromptCache(tmp_path))
    app = VoiceAgent(load_agent_text(YES_NO), tts=tts, priors=priors)
    await app.start()
    try:
        yes = await AnswerBook(load_tts("flite"), "slt").get("yes")  # as the load tester says it
        audio = np.concatenate([silence(500), g711.decode("PCMU", g711.encode("PCMU", yes)), silence(1500)])
        session = _CallSession(app, stub_call())  # type: ignore[arg-type]
        listen_action = next(a for a in session.conversation.start() if isinstance(a, Listen))

        async def caller() -> None:  # in real time, as RTP comes
            for i in range(0, len(audio) - FRAME_SAMPLES + 1, FRAME_SAMPLES):
                session.inbox.put_nowait(audio[i : i + FRAME_SAMPLES])
                await asyncio.sleep(0.02)

        feeding = asyncio.ensure_future(caller())
        try:
            await asyncio.wait_for(session._listen(listen_action), 30)
        finally:
            feeding.cancel()
    finally:
        await app.close()
    turn = session.conversation.record.turns[0]
    heard = {h["engine"]: h["text"]["value"] for h in turn.hypotheses}
    assert turn.close == "partial", turn.close  # closed early, on the partials
    assert heard.get("whisper", "").strip(".").lower() == "yes", heard
    assert session.conversation.slots["agree"] is True, heard
