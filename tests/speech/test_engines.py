"""The offline pocketsphinx engines on real synthetic speech (flite → 8 kHz → G.711 µ-law round trip)."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import time
from datetime import time as time_of_day

import numpy as np
import psutil
import pytest
from pocketsphinx import Decoder

from parley.loadtest.audio import AnswerBook
from parley.media import g711
from parley.nlu.reader import read_slot
from parley.speech.engines import available_engines, load_engines
from parley.speech.engines.grammar import DIGIT_WORDS, compile_question, default_dictionary
from parley.speech.engines.pool import DecodePool, DecoderLost
from parley.speech.engines.sphinx import (
    SphinxAgentLmEngine,
    SphinxGrammarEngine,
    SphinxLmEngine,
    build_arpa,
)
from parley.speech.tts import load_tts
from parley.speech.types import FRAME_SAMPLES, AsrEngine, AsrSession, Hypothesis, Question, SlotType


def read_digits(text: str) -> str | None:
    """The digits a transcript gives, as the arbiter and the dialogue read them."""
    reading = read_slot(Question(SlotType.DIGITS), text)
    return reading.value if reading else None


pytestmark = pytest.mark.skipif(
    shutil.which("flite") is None, reason="flite not installed (apt-get install flite)"
)

NAMES = ("Smith", "Johnson", "Williams", "Brown", "Garcia", "Siobhan", "Patel")


@pytest.fixture(scope="module")
def grammar_engine() -> SphinxGrammarEngine:
    return SphinxGrammarEngine()


@pytest.fixture(scope="module")
def lm_engine() -> SphinxLmEngine:
    return SphinxLmEngine()


def recognise(engine: AsrEngine, question: Question, pcm: np.ndarray) -> tuple[Hypothesis, list[Hypothesis]]:
    """Feed ``pcm`` in 20 ms frames; the final and the partials seen on the way."""
    session = engine.start(question)
    partials = [
        h for i in range(0, len(pcm), FRAME_SAMPLES) if (h := session.feed(pcm[i : i + FRAME_SAMPLES]))
    ]
    return session.finish(), partials


def test_engines_are_entry_point_plugins() -> None:
    assert {"sphinx-lm", "sphinx-grammar", "sphinx-agent-lm"} <= set(available_engines())
    engines = load_engines(["sphinx-grammar", "sphinx-lm"])
    assert [e.name for e in engines] == ["sphinx-grammar", "sphinx-lm"]
    assert all(isinstance(e, AsrEngine) for e in engines)
    assert isinstance(engines[0].start(Question(SlotType.YES_NO)), AsrSession)
    with pytest.raises(LookupError):
        load_engines(["no-such-engine"])


@pytest.mark.parametrize(
    ("text", "voice"),
    [
        ("four two seven one", "slt"),
        ("four two seven one", "kal16"),
        ("nine nine three zero five", "slt"),
        ("nine nine three zero five", "kal16"),
    ],
)
def test_grammar_engine_gets_digits_exactly(grammar_engine, speech, text, voice) -> None:
    question = Question(SlotType.DIGITS, digit_count=len(text.split()))
    final, _ = recognise(grammar_engine, question, speech(text, voice))
    assert final.text == text
    assert final.is_final and final.engine == "sphinx-grammar"


@pytest.mark.parametrize(
    "text", ["seven one three seven", "seven two nine three two one", "seven nine eight three eight eight"]
)
async def test_a_leading_seven_as_the_load_testers_caller_says_it(grammar_engine, text) -> None:
    """Trimmed speech after digital silence: the /s/ of "seven" is lost to the phone band and was
    heard as "yeah nine ..." (or dropped) before the grammar's alternate pronunciation."""
    pcm = await AnswerBook(load_tts("flite"), "slt", cache=False).get(text)
    silence = np.zeros(2400, np.int16)
    audio = g711.ulaw_decode(g711.ulaw_encode(np.concatenate([silence, pcm, silence])))
    final, _ = recognise(grammar_engine, Question(SlotType.DIGITS, digit_count=len(text.split())), audio)
    assert final.text == text


def test_general_lm_misreads_the_same_digits(lm_engine, grammar_engine, speech) -> None:
    """Why the arbiter exists: the open-vocabulary LM hears words where the grammar hears digits."""
    question = Question(SlotType.DIGITS, digit_count=4)
    for voice in ("slt", "kal16"):
        pcm = speech("four two seven one", voice)
        assert recognise(grammar_engine, question, pcm)[0].text == "four two seven one"
        assert recognise(lm_engine, question, pcm)[0].text != "four two seven one"
    assert recognise(lm_engine, question, speech("four two seven one", "slt"))[0].text == "flooded than one"


@pytest.mark.parametrize(
    ("text", "voice", "heard"),
    [
        ("yes", "slt", {"yes", "yep", "yeah"}),
        ("yes", "kal16", {"yes", "yep", "yeah"}),
        ("no", "slt", {"no", "nope"}),
        ("no", "kal16", {"no", "nope"}),
    ],
)
def test_yes_no_grammar(grammar_engine, speech, text, voice, heard) -> None:
    final, _ = recognise(grammar_engine, Question(SlotType.YES_NO), speech(text, voice))
    assert final.text in heard


@pytest.mark.parametrize(
    ("text", "voice", "heard"),
    [
        ("half past ten in the morning", "slt", time_of_day(10, 30)),
        ("quarter to three", "kal16", time_of_day(14, 45)),
        ("at nine fifteen", "slt", time_of_day(9, 15)),
        ("four o'clock in the afternoon", "kal16", time_of_day(16, 0)),
    ],
)
def test_times_of_day(grammar_engine, speech, text, voice, heard) -> None:
    """A time question has its own grammar (a time read as open speech came back as "you have past 10")."""
    final, _ = recognise(grammar_engine, Question(SlotType.TIME), speech(text, voice))
    reading = read_slot(Question(SlotType.TIME), final.text)
    assert reading is not None and reading.value == heard, final.text


@pytest.mark.parametrize(
    ("name", "voice"), [("patel", "kal16"), ("johnson", "slt"), ("garcia", "kal16"), ("siobhan", "slt")]
)
def test_names_from_the_agents_list(grammar_engine, speech, name, voice) -> None:
    final, _ = recognise(grammar_engine, Question(SlotType.NAME, options=NAMES), speech(name, voice))
    assert name in final.text.split()


def test_streaming_partials_then_final_with_timings(grammar_engine, speech) -> None:
    pcm = speech("nine nine three zero five", "slt")
    final, partials = recognise(grammar_engine, Question(SlotType.DIGITS, digit_count=5), pcm)
    assert len(partials) >= 2
    assert all(not p.is_final for p in partials)
    assert [p.audio_seconds for p in partials] == sorted(p.audio_seconds for p in partials)
    assert partials[-1].audio_seconds < len(pcm) / 8000  # partials came while audio was still arriving
    assert final.audio_seconds == pytest.approx(len(pcm) / 8000)
    assert 0.0 < final.confidence <= 1.0
    assert [w.word for w in final.words] == final.text.split()
    starts = [w.start for w in final.words]
    assert starts == sorted(starts)
    assert all(w.start < w.end <= final.audio_seconds + 0.05 and 0 <= w.confidence <= 1 for w in final.words)
    for before, after in zip(final.words, final.words[1:], strict=False):
        assert before.end <= after.start + 1e-9
    assert final.cpu_seconds > 0


def test_finish_without_audio_is_an_empty_final(grammar_engine, lm_engine) -> None:
    for engine in (grammar_engine, lm_engine):
        final = engine.start(Question(SlotType.YES_NO)).finish()
        assert (final.text, final.is_final, final.confidence) == ("", True, 0.0)


def test_silence_gives_a_final_not_a_crash(lm_engine) -> None:
    session = lm_engine.start(Question(SlotType.FREE))
    for _ in range(25):
        session.feed(np.zeros(FRAME_SAMPLES, dtype=np.int16))
    final = session.finish()
    assert final.is_final and 0.0 <= final.confidence <= 1.0


def test_grammar_compiles_every_closed_slot_type() -> None:
    decoder = Decoder(lm=None, loglevel="ERROR")
    questions = [
        Question(SlotType.DIGITS, digit_count=4),
        Question(SlotType.DIGITS, digit_count=16),
        Question(SlotType.DIGITS),
        Question(SlotType.PHONE),
        Question(SlotType.SPELLED),
        Question(SlotType.YES_NO),
        Question(SlotType.DATE),
        Question(SlotType.TIME),
        Question(SlotType.AMOUNT),
        Question(SlotType.NAME, options=("Okonkwo", "Siobhan", "Mary-Jane")),
        Question(SlotType.CHOICE, options=("Billing", "Option 2"), phrases=("I want to pay my bill",)),
    ]
    for q in questions:
        g = compile_question(q, default_dictionary())
        g.install(decoder)
        assert all(decoder.lookup_word(w) is not None for w in g.words), q
        assert bool(g.transitions) == (q.digit_count is not None), q  # counted digits: a direct FSG
    names = next(q for q in questions if q.slot_type is SlotType.NAME)
    okonkwo = compile_question(names, default_dictionary())
    if shutil.which("espeak-ng"):
        assert "okonkwo" in dict(okonkwo.pronunciations)  # not in cmudict: espeak-ng g2p
    assert not SphinxGrammarEngine().supports(Question(SlotType.FREE))
    assert not SphinxGrammarEngine().supports(Question(SlotType.NAME))


def test_counted_digits_grammar_grows_linearly_and_allows_doubles_at_any_length() -> None:
    """A JSGF grammar for "exactly N digits with double/triple" grew like the tribonacci numbers."""
    sizes = {}
    for count in (4, 11, 16, 32):
        g = compile_question(Question(SlotType.PHONE, digit_count=count), default_dictionary())
        assert {"double", "triple", "oh", "plus"} <= set(g.words) and g.jsgf == ""
        sizes[count] = len(g.transitions)
        leaving: dict[int, float] = {}
        for source, _, probability, _ in g.transitions:
            leaving[source] = leaving.get(source, 0.0) + probability
        assert all(abs(total - 1.0) < 1e-9 for total in leaving.values())  # a proper distribution
        assert g.final_state not in leaving  # nothing after the last digit
    per_digit = (sizes[32] - sizes[16]) / 16
    assert sizes[16] - sizes[11] == pytest.approx(5 * per_digit)  # linear in the digit count


def test_a_counted_digits_question_still_hears_the_agents_phrases(grammar_engine, speech) -> None:
    question = Question(SlotType.DIGITS, digit_count=8, phrases=("I want to speak to an agent",))
    assert grammar_engine.grammar(question).transitions  # still the linear FSG, phrases included
    final, _ = recognise(grammar_engine, question, speech("I want to speak to an agent", "slt"))
    assert final.text == "i want to speak to an agent"
    digits = speech("nine nine three zero five two one eight", "kal16")
    with_phrases, _ = recognise(grammar_engine, question, digits)
    without, _ = recognise(grammar_engine, Question(SlotType.DIGITS, digit_count=8), digits)
    assert with_phrases.text == without.text and len(read_digits(without.text) or "") == 8


@pytest.mark.parametrize("voice", ["slt", "kal16"])
def test_an_eleven_digit_number_with_doubles(grammar_engine, speech, voice) -> None:
    question = Question(SlotType.PHONE, digit_count=11)
    text = "zero two zero seven double one four three nine two one"
    final, _ = recognise(grammar_engine, question, speech(text, voice))
    assert final.text == text


def test_a_grammar_path_that_never_ends_keeps_its_best_words(grammar_engine, speech) -> None:
    """Two digits said where eight are expected: no path reaches the grammar's end, and the final
    keeps the best partial path (with no confidence) instead of an empty transcript."""
    question = Question(SlotType.DIGITS, digit_count=8)
    final, _ = recognise(grammar_engine, question, speech("four two", "slt"))
    assert final.is_final and final.confidence == 0.0
    assert final.text and set(final.text.split()) <= set(DIGIT_WORDS) | {"double", "triple"}
    assert len(final.text.split()) < 8


def test_agent_lm_recognises_the_agents_phrases(speech) -> None:
    arpa = build_arpa(["I want to pay my bill", "my internet is not working"])
    assert "\\data\\" in arpa and "\\3-grams:" in arpa and "internet is not" in arpa
    engine = SphinxAgentLmEngine(phrases=["I want to pay my bill", "I'd like to cancel my account"])
    question = Question(
        SlotType.FREE, prompt="How can I help you today?", phrases=("my internet is not working",)
    )
    engine.prepare(question)
    final, _ = recognise(engine, question, speech("my internet is not working", "slt"))
    assert final.text == "my internet is not working"
    assert final.engine == "sphinx-agent-lm" and 0.0 < final.confidence <= 1.0


async def test_process_pool_keeps_the_event_loop_ticking(speech) -> None:
    """A 10 s decode in the worker process while a 5 ms asyncio ticker keeps running."""
    long = np.concatenate([speech(t) for t in ("four two seven one", "nine nine three zero five")] * 3)
    pool = DecodePool(["sphinx-lm"], workers=1, kind="process", hang_s=120)  # one call of seconds
    try:
        session = await pool.start("sphinx-lm", Question(SlotType.FREE))
        await session.feed(long[:FRAME_SAMPLES])  # decoder created in the worker
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                await asyncio.sleep(0.005)
                ticks += 1

        task = asyncio.create_task(ticker())
        loop = asyncio.get_running_loop()
        started = loop.time()
        await session.feed(long)  # one big chunk: a single long process_raw call
        final = await session.finish()
        elapsed = loop.time() - started
        done.set()
        await task
        assert final.is_final and final.text
        assert elapsed > 0.5
        assert ticks >= 0.5 * elapsed / 0.005
    finally:
        pool.close()


async def test_thread_pool_runs_sessions_with_the_same_results(speech) -> None:
    pool = DecodePool([SphinxGrammarEngine], workers=2, kind="thread")
    try:
        question = Question(SlotType.DIGITS, digit_count=4)
        await pool.prepare("sphinx-grammar", question)
        sessions = [await pool.start("sphinx-grammar", question) for _ in range(2)]
        pcm = speech("four two seven one", "kal16")
        for i in range(0, len(pcm), FRAME_SAMPLES * 10):
            await asyncio.gather(*(s.feed(pcm[i : i + FRAME_SAMPLES * 10]) for s in sessions))
        finals = await asyncio.gather(*(s.finish() for s in sessions))
        assert [f.text for f in finals] == ["four two seven one"] * 2
    finally:
        pool.close()


async def test_an_abandoned_session_gives_its_decoder_back(speech) -> None:
    """The arbiter drops the sessions it no longer waits for: their decoders must serve the next turn
    (a new decoder costs 0.1-0.5 s of CPU, paid by the next caller's answer)."""
    from parley.speech.engines import pool as pool_module

    pool = DecodePool([SphinxGrammarEngine], workers=1, kind="thread")
    try:
        question = Question(SlotType.DIGITS, digit_count=4)
        await pool.prepare("sphinx-grammar", question)
        decoders = pool_module._ENGINES["sphinx-grammar"].pool
        pcm = speech("four two seven one", "slt")
        for _ in range(3):
            session = await pool.start("sphinx-grammar", question)
            await session.feed(pcm[: len(pcm) // 2])  # mid-utterance: the decoder is in use
            await session.abandon()
        session = await pool.start("sphinx-grammar", question)
        await session.feed(pcm)
        assert (await session.finish()).text == "four two seven one"  # the reused decoder starts clean
        assert decoders.created == 0  # every session ran on a decoder warmed at start and given back
    finally:
        pool.close()


async def test_a_dedicated_engine_decodes_in_processes_of_its_own():
    """Whisper-like engines get their own process: never queued behind the streaming decoders."""
    async with DecodePool(
        ["sphinx-grammar", "sphinx-agent-lm"], workers=1, dedicated=["sphinx-agent-lm"]
    ) as pool:
        pids = await pool.warm()
        assert len(set(pids)) == 2
        question = Question(SlotType.YES_NO)
        shared = await pool.start("sphinx-grammar", question)
        alone = await pool.start("sphinx-agent-lm", question)
        assert (shared._worker, alone._worker) == (0, 1)
        await shared.abandon()
        await alone.abandon()
        with pytest.raises(LookupError, match="sphinx-lm"):
            await pool.start("sphinx-lm", question)


async def _decode(pool: DecodePool, question: Question, pcm: np.ndarray) -> str:
    session = await pool.start("sphinx-grammar", question)
    await session.feed(pcm)
    return (await session.finish()).text


async def test_a_killed_decode_process_is_replaced(speech) -> None:
    """SIGKILL mid-utterance: the session's next call fails with DecoderLost (the arbiter then counts
    the engine as failed for that turn), and a new process decodes the next session."""
    question = Question(SlotType.DIGITS, digit_count=4)
    pcm = speech("four two seven one", "slt")
    async with DecodePool(["sphinx-grammar"], workers=1) as pool:
        [pid] = await pool.warm()
        await pool.prepare("sphinx-grammar", question)
        session = await pool.start("sphinx-grammar", question)
        await session.feed(pcm[: len(pcm) // 2])
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(DecoderLost):
            await session.feed(pcm[len(pcm) // 2 :])
        with pytest.raises(DecoderLost):  # its process is gone: it never reaches the new one
            await session.finish()
        assert pool.replaced == 1
        assert await asyncio.wait_for(_decode(pool, question, pcm), 60) == "four two seven one"
        assert pool.pids() and pool.pids() != [pid]
        assert pool._load == [0]  # the lost session does not count against the new process


async def test_a_warm_pool_answers_warm_up_and_prepared_questions_at_once() -> None:
    """A new agent version warming up on a pool in use: warm() and a question prepared already queue
    nothing behind the process's work (here, a process stopped mid-way: anything sent would wait)."""
    question = Question(SlotType.DIGITS, digit_count=4)
    async with DecodePool(["sphinx-grammar"], workers=1, hang_s=120) as pool:
        [pid] = await pool.warm()
        await pool.prepare("sphinx-grammar", question)
        os.kill(pid, signal.SIGSTOP)
        try:
            assert await asyncio.wait_for(pool.warm(), 1) == [pid]
            await asyncio.wait_for(pool.prepare("sphinx-grammar", question), 1)
            other = Question(SlotType.DIGITS, digit_count=5)
            with pytest.raises(TimeoutError):  # a new question does go to the process
                await asyncio.wait_for(asyncio.shield(pool.prepare("sphinx-grammar", other)), 1)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert pool.replaced == 0


async def test_a_hung_decode_process_is_killed_and_replaced(speech) -> None:
    """A stopped process (SIGSTOP: as hung as a process can be) is told from a busy one by the time
    since it last finished a call; it is killed, and the calls waiting on it fail, not stall."""
    question = Question(SlotType.DIGITS, digit_count=4)
    pcm = speech("four two seven one", "slt")
    async with DecodePool(["sphinx-grammar"], workers=1, hang_s=2.0) as pool:
        [pid] = await pool.warm()
        await pool.prepare("sphinx-grammar", question)
        assert await _decode(pool, question, pcm) == "four two seven one"
        hung = psutil.Process(pid)
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(DecoderLost):
            await asyncio.wait_for(_decode(pool, question, pcm), 10)
        assert time.monotonic() - started < 5.0  # hang_s, and a little
        hung.wait(5)  # killed, not left stopped
        assert pool.replaced == 1
        assert await asyncio.wait_for(_decode(pool, question, pcm), 60) == "four two seven one"


async def test_a_busy_decode_process_is_not_taken_for_hung(speech) -> None:
    """Calls queued behind one another for longer than hang_s are not a hang: each of them finishes
    well within it. hang_s is set from one decode's time here (the machine may be loaded)."""
    question = Question(SlotType.DIGITS, digit_count=4)
    pcm = speech("four two seven one", "slt")
    async with DecodePool(["sphinx-grammar"], workers=1, hang_s=60) as pool:
        await pool.warm()
        await pool.prepare("sphinx-grammar", question)

        async def timed() -> tuple[str, float]:
            started = time.monotonic()
            text = await _decode(pool, question, pcm)
            return text, time.monotonic() - started

        single = max([(await timed())[1] for _ in range(3)])
        pool.hang_s = max(0.5, 4 * single)
        queued = max(16, math.ceil(3 * pool.hang_s / single))  # a queue longer than hang_s on a fast CPU too
        await asyncio.gather(*(timed() for _ in range(queued)))  # the decoders made: none made below
        results = [r for _ in range(2) for r in await asyncio.gather(*(timed() for _ in range(queued)))]
        assert max(wait for _, wait in results) > pool.hang_s  # the last ones queued longer than hang_s
        assert [text for text, _ in results] == ["four two seven one"] * 2 * queued
        assert pool.replaced == 0


async def test_work_abandoned_by_its_caller_still_counts_as_progress(speech) -> None:
    """The arbiter gives up on late engines: their calls still run in the process, and each one
    that ends is progress. A call queued behind more abandoned work than hang_s is not a hang."""
    question = Question(SlotType.DIGITS, digit_count=4)
    pcm = speech("four two seven one", "slt")
    async with DecodePool(["sphinx-grammar"], workers=1, hang_s=60) as pool:
        await pool.warm()
        await pool.prepare("sphinx-grammar", question)
        sessions = [await pool.start("sphinx-grammar", question) for _ in range(10)]
        started = time.monotonic()
        await sessions[0].feed(pcm)  # makes a decoder: the others are made below, as a backlog
        single = time.monotonic() - started
        pool.hang_s = max(0.5, 3 * single)
        feeds = [asyncio.ensure_future(session.feed(pcm)) for session in sessions[1:]]
        await asyncio.sleep(0.05)
        for feed in feeds:
            feed.cancel()  # given up on, as the arbiter does at its deadline
        started = time.monotonic()
        assert await _decode(pool, question, pcm) == "four two seven one"
        assert time.monotonic() - started > pool.hang_s  # it waited behind the abandoned work
        assert pool.replaced == 0
