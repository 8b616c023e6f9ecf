"""The arbiter over real engines and real (flite) telephone audio: choice, failures, early close."""

from __future__ import annotations

import asyncio
import math
import shutil
import time

import numpy as np
import pytest

from parley.media import g711
from parley.nlu.reader import agreement, read_slot
from parley.speech.arbiter import Arbiter, EnginePriors, ranked, score
from parley.speech.endpoint import Endpointer, SpeechEnded
from parley.speech.engines import load_engines
from parley.speech.engines.pool import DecodePool
from parley.speech.tts import load_tts, render
from parley.speech.types import FRAME_SAMPLES, Hypothesis, Question, SlotType, TurnRecord
from parley.speech.vad import make_vad


def read_digits(text: str) -> str | None:
    """The digits a transcript gives, as the arbiter and the dialogue read them."""
    reading = read_slot(Question(SlotType.DIGITS), text)
    return reading.value if reading else None


pytestmark = pytest.mark.skipif(
    shutil.which("flite") is None, reason="flite (Debian) renders the test speech"
)

DIGITS = Question(SlotType.DIGITS, prompt="What is your account number?", digit_count=4)
YES_NO = Question(SlotType.YES_NO, prompt="Shall I go ahead?")


async def telephone_speech(text: str, voice: str = "slt") -> np.ndarray:
    """flite speech at 8 kHz through a G.711 µ-law round trip, with silence around it."""
    pcm = await render(load_tts("flite"), text, voice)
    pcm = g711.decode("PCMU", g711.encode("PCMU", pcm))
    silence = np.zeros(8000 // 2, dtype=np.int16)
    return np.concatenate([silence, pcm, silence, silence])


@pytest.fixture(scope="module")
def engines():
    return load_engines(["sphinx-lm", "sphinx-grammar"])


class ExplodingEngine:
    """A plugin whose decoder crashes on the first audio."""

    name = "exploding"

    def supports(self, question: Question) -> bool:
        return True

    def prepare(self, question: Question) -> None:
        pass

    def start(self, question: Question) -> ExplodingEngine:
        return self

    def feed(self, pcm: np.ndarray) -> Hypothesis | None:
        raise RuntimeError("decoder crashed")

    def finish(self) -> Hypothesis:
        raise RuntimeError("decoder crashed")


class HangingEngine(ExplodingEngine):
    """A plugin that accepts audio but never returns its final result in time."""

    name = "hanging"

    def feed(self, pcm: np.ndarray) -> Hypothesis | None:
        return Hypothesis(self.name, "one", 0.9, is_final=False)

    def finish(self) -> Hypothesis:
        time.sleep(3)
        return Hypothesis(self.name, "one", 0.9, is_final=True)


async def test_grammar_engine_beats_the_lm_on_digits_and_the_record_says_why(engines):
    audio = await telephone_speech("four two seven one")
    arbiter = Arbiter(engines, priors=EnginePriors(), deadline=10)  # equal priors: both finals awaited
    await arbiter.prepare(DIGITS)
    record = await arbiter.recognize(DIGITS, audio)
    finals = {h.engine: h for h in record.hypotheses if h.is_final}
    assert set(finals) == {"sphinx-lm", "sphinx-grammar"}
    assert read_digits(finals["sphinx-grammar"].text) == "4271"
    assert record.winner is finals["sphinx-grammar"]
    assert "valid digits" in record.reason and record.reason.startswith("sphinx-grammar final")
    assert record.scores["sphinx-grammar"] > record.scores["sphinx-lm"]
    assert any(not h.is_final for h in record.hypotheses), "partials are recorded while the caller speaks"


async def test_the_lm_alone_misreads_spoken_digits_where_the_grammar_does_not(engines):
    """Why the arbiter exists: across a few voices the general LM gets digit strings wrong."""
    arbiter_lm = Arbiter([e for e in engines if e.name == "sphinx-lm"], deadline=10)
    arbiter_grammar = Arbiter([e for e in engines if e.name == "sphinx-grammar"], deadline=10)
    question = Question(SlotType.DIGITS, digit_count=5)
    lm_right = grammar_right = 0
    for voice in ("slt", "kal16", "awb"):
        audio = await telephone_speech("nine nine three zero five", voice)
        lm = await arbiter_lm.recognize(question, audio)
        grammar = await arbiter_grammar.recognize(question, audio)
        lm_right += read_digits(lm.winner.text if lm.winner else "") == "99305"
        grammar_right += read_digits(grammar.winner.text if grammar.winner else "") == "99305"
    assert grammar_right > lm_right


async def test_the_arbiter_decodes_in_worker_processes_without_blocking_the_loop(engines):
    audio = await telephone_speech("four two seven one")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    async with DecodePool(["sphinx-lm", "sphinx-grammar"], workers=2) as pool:
        await pool.warm()
        arbiter = Arbiter(engines, pool=pool, priors=EnginePriors(), deadline=10)
        await arbiter.prepare(DIGITS)
        task = asyncio.ensure_future(ticker())
        started = time.monotonic()
        record = await arbiter.recognize(DIGITS, audio)
        elapsed = time.monotonic() - started
        task.cancel()
    assert record.winner is not None and read_digits(record.winner.text) == "4271"
    assert {h.engine for h in record.hypotheses if h.is_final} == {"sphinx-lm", "sphinx-grammar"}
    # The loop kept ticking while both engines decoded (a thread pool gets ~1 %: pocketsphinx holds the GIL).
    assert ticks >= 0.3 * elapsed / 0.005


async def test_a_crashing_engine_does_not_stop_the_turn(engines):
    audio = await telephone_speech("four two seven one")
    arbiter = Arbiter([*engines, ExplodingEngine()], deadline=10)
    record = await arbiter.recognize(DIGITS, audio)
    assert record.failed_engines["exploding"] == "RuntimeError: decoder crashed"
    assert record.winner is not None and record.winner.engine == "sphinx-grammar"


async def test_a_hung_engine_misses_the_deadline_and_the_best_available_result_wins(engines):
    audio = await telephone_speech("four two seven one")
    arbiter = Arbiter([*engines, HangingEngine()], deadline=1.0)
    turn = arbiter.start_turn(DIGITS)
    for start in range(0, len(audio), FRAME_SAMPLES):
        turn.feed(audio[start : start + FRAME_SAMPLES])
        await asyncio.sleep(0)
    record = await asyncio.wait_for(
        turn.finish(), timeout=2.5
    )  # bounded by the deadline, not by the 3 s hang
    assert record.failed_engines["hanging"] == "timeout"
    assert "hanging" in record.scores  # its latest partial was still considered
    assert record.winner is not None and read_digits(record.winner.text) == "4271"


async def test_finish_can_be_given_a_shorter_deadline_than_the_arbiters():
    arbiter = Arbiter([HangingEngine()], deadline=10)
    turn = arbiter.start_turn(DIGITS)
    turn.feed(np.zeros(FRAME_SAMPLES * 5, dtype=np.int16))
    started = time.perf_counter()
    record = await turn.finish(deadline=0.2)  # a pause check: no waiting 10 s for a hung engine
    assert time.perf_counter() - started < 1.0
    assert record.failed_engines["hanging"] == "timeout"
    assert record.winner is not None and not record.winner.is_final  # only its partial was there


class RevisingEngine(HangingEngine):
    """Catching up late: its partials go from complete ("4271") to incomplete, and its final never comes."""

    name = "revising"

    def start(self, question: Question) -> RevisingEngine:
        self.said = iter(["four two", "four two seven one", "four two seven"])
        return self

    def feed(self, pcm: np.ndarray) -> Hypothesis | None:
        text = next(self.said, None)
        return None if text is None else Hypothesis(self.name, text, 0.9, is_final=False)


async def test_a_late_final_falls_back_on_the_engines_best_partial_not_its_latest():
    turn = Arbiter([RevisingEngine()], deadline=10).start_turn(DIGITS)
    for _ in range(3 * 5):  # three chunks
        turn.feed(np.zeros(FRAME_SAMPLES, dtype=np.int16))
    await asyncio.sleep(0.1)
    record = await turn.finish(deadline=0.2)
    assert record.failed_engines["revising"] == "timeout"
    assert [h.text for h in record.hypotheses] == ["four two", "four two seven one", "four two seven"]
    assert record.winner is not None and record.winner.text == "four two seven one"
    assert "partial (engine missed the deadline)" in record.reason and "valid digits" in record.reason


class SlowEngine(ExplodingEngine):
    """Decodes 100 ms of audio in 50 ms: behind the caller while audio comes faster than that."""

    name = "slow"

    def feed(self, pcm: np.ndarray) -> Hypothesis | None:
        time.sleep(0.05)
        return None

    def finish(self) -> Hypothesis:
        return Hypothesis(self.name, "one", 0.9, is_final=True)


async def test_a_turn_tells_when_an_engine_lags_behind_the_audio():
    turn = Arbiter([SlowEngine()], deadline=10).start_turn(DIGITS)
    for _ in range(4 * 5):  # four chunks at once
        turn.feed(np.zeros(FRAME_SAMPLES, dtype=np.int16))
    await asyncio.sleep(0.01)
    assert turn.lagging
    await asyncio.sleep(0.4)
    assert not turn.lagging  # caught up
    await turn.finish()


async def test_the_chunk_just_sent_is_no_lag():
    turn = Arbiter([SlowEngine()], deadline=10).start_turn(DIGITS)
    for _ in range(5):  # one chunk, flushed by the fifth frame
        turn.feed(np.zeros(FRAME_SAMPLES, dtype=np.int16))
    assert not turn.lagging
    await turn.finish()


async def test_learned_priors_break_ties_between_equally_valid_answers(engines):
    question = Question(SlotType.YES_NO)
    priors = EnginePriors.learn(
        [("sphinx-grammar", "yes_no", True)] * 9 + [("sphinx-lm", "yes_no", False)] * 9
    )
    assert priors.get("sphinx-grammar", "yes_no") > 0.8 > 0.2 > priors.get("sphinx-lm", "yes_no")
    record = await Arbiter(engines, priors=priors, deadline=10).recognize(
        question, await telephone_speech("yes")
    )
    assert record.winner is not None and record.winner.engine == "sphinx-grammar"
    assert read_slot(question, record.winner.text).value is True


async def test_a_complete_slot_on_a_partial_closes_the_turn_before_the_silence_timeout(engines):
    """The early-close hook: the understanding layer sees a complete, valid slot in a partial."""
    audio = await telephone_speech("four two seven one")
    endpointer = Endpointer(make_vad(), silence_ms=1500)
    arbiter = Arbiter(engines, deadline=10)
    turn = arbiter.start_turn(DIGITS, on_partial=lambda h: complete.append(h) if _complete(h) else None)
    complete: list[Hypothesis] = []
    ended: SpeechEnded | None = None
    for start in range(0, len(audio), FRAME_SAMPLES):
        frame = audio[start : start + FRAME_SAMPLES]
        turn.feed(frame)
        await asyncio.sleep(0.005)  # let the decoders keep up, as in a live call
        if complete:
            endpointer.request_early_close()
        event = endpointer.feed(frame)
        if isinstance(event, SpeechEnded):
            ended = event
            break
    assert ended is not None and ended.reason == "early-close"
    assert ended.at_ms - ended.last_speech_ms < 1500  # well before the silence timeout would have
    record = await turn.finish()
    assert read_digits(record.winner.text) == "4271"
    assert start + FRAME_SAMPLES < len(audio)  # the turn ended before the audio did


def _complete(hypothesis: Hypothesis) -> bool:
    reading = read_slot(DIGITS, hypothesis.text)
    return reading is not None and reading.complete


def test_selection_narrows_the_engines_per_slot_type(engines):
    arbiter = Arbiter(engines, selection={SlotType.DIGITS: ("sphinx-grammar",)})
    assert [e.name for e in arbiter.engines_for(DIGITS)] == ["sphinx-grammar"]
    free = Question(SlotType.FREE)
    assert [e.name for e in arbiter.engines_for(free)] == ["sphinx-lm"]  # no policy: all that support it


async def test_the_turn_ends_as_soon_as_no_engine_still_decoding_could_win(engines):
    """The grammar's valid final, with a high prior, beats anything an engine with a low prior
    could still return: the turn does not wait for that engine (nor for the deadline)."""
    audio = await telephone_speech("four two seven one")
    priors = EnginePriors.learn(
        [("sphinx-grammar", "digits", True)] * 20 + [("hanging", "digits", False)] * 20
    )
    grammar = [e for e in engines if e.name == "sphinx-grammar"]
    arbiter = Arbiter([*grammar, HangingEngine()], priors=priors, deadline=30)
    record = await asyncio.wait_for(arbiter.recognize(DIGITS, audio), timeout=20)
    assert record.not_awaited == ["hanging"] and "hanging" not in record.failed_engines
    assert "hanging" not in record.scores  # a not-awaited engine's partial is not a candidate
    assert record.winner is not None and record.winner.engine == "sphinx-grammar"
    assert read_digits(record.winner.text) == "4271"


async def test_equal_priors_wait_for_every_engine(engines):
    """Without priors that settle it, a slower engine's final is awaited and recorded."""
    audio = await telephone_speech("four two seven one")
    record = await Arbiter(engines, priors=EnginePriors(), deadline=30).recognize(DIGITS, audio)
    assert record.not_awaited == [] and record.failed_engines == {}
    assert {h.engine for h in record.hypotheses if h.is_final} == {"sphinx-lm", "sphinx-grammar"}


def test_the_shipped_priors_are_the_default_and_calibrate_every_engine():
    """Learned on the training corpus (bench/asr_arbiter.py --ship): the agent LM's constant 1.00
    confidence means no more than its hit rate, so it no longer outranks the others by confidence."""
    shipped = EnginePriors.shipped()
    assert Arbiter([]).priors == shipped
    assert {"sphinx-grammar", "sphinx-agent-lm", "whisper", "whisper-tiny"} <= set(shipped.calibration)
    assert shipped.confidence("sphinx-agent-lm", 1.0) < 0.9
    assert shipped.get("whisper", "date") > shipped.get("sphinx-agent-lm", "date")


def test_a_reading_outside_the_questions_range_scores_below_one_inside_it():
    """whisper heard "twenty twenty seven" as 2020 with a higher prior than the grammar's right year:
    the agent's rules would refuse 2020, so the in-range reading wins."""
    priors = EnginePriors({"whisper": {"date": 0.9}, "sphinx-grammar": {"date": 0.5}}, 0.5)
    booking = Question(SlotType.DATE, lowest="2026-12-05", highest="2027-12-05")
    heard = Hypothesis("whisper", "The 17th of February, 2020.", 0.9, True)
    grammar = Hypothesis("sphinx-grammar", "the seventeenth of february twenty twenty seven", 0.9, True)
    (misheard, why), (right, _) = score(heard, booking, priors), score(grammar, booking, priors)
    assert right > misheard and "out-of-range date" in why
    unbounded = Question(SlotType.DATE)
    assert score(heard, unbounded, priors)[0] > score(grammar, unbounded, priors)[0]


def test_engines_that_read_the_same_value_outvote_a_likelier_one():
    """Both pocketsphinx engines heard 430777; whisper, with the higher prior, wrote "4307-07"."""
    priors = EnginePriors(
        {"whisper": {"digits": 0.5}, "sphinx-grammar": {"digits": 0.35}, "sphinx-agent-lm": {"digits": 0.35}},
        agreement_weight=0.1,
    )
    six = Question(SlotType.DIGITS, digit_count=6)
    heard = [
        Hypothesis("whisper", "4307-07", 0.6, True),
        Hypothesis("sphinx-grammar", "four three oh seven double seven", 0.9, True),
        Hypothesis("sphinx-agent-lm", "four three oh seven double seven", 0.9, True),
    ]
    (best, winner, why), *_ = ranked(heard, six, priors)
    support = 1 + agreement("digits", "430777", "430707")  # the agent LM's, and whisper's in part
    assert winner.engine == "sphinx-grammar" and f"agreement {support:.2f}" in why
    assert best == score(heard[1], six, priors, agreeing=support)[0]
    priors.agreement_weight = 0.0  # without agreement the likelier engine wins
    assert ranked(heard, six, priors)[0][1].engine == "whisper"


@pytest.mark.parametrize(
    ("texts", "agree"),
    [
        (("846 pounds", "eight hundred and forty six"), True),  # a currency said by one only
        (("846 pounds", "846 dollars"), False),
        (("Smith", "smith"), True),
        (("four two", "four two seven"), True),  # an incomplete string of digits agrees in part
        (("nine eight", "four two seven"), False),  # ... with what it shares
    ],
)
def test_what_counts_as_the_same_value(texts, agree):
    """For symbol strings (digits, phone numbers, spellings) a reading that shares most symbols
    agrees in part; other values agree only when they are the same."""
    kind = SlotType.AMOUNT if "846" in texts[0] else SlotType.NAME if "mith" in texts[0] else SlotType.DIGITS
    question = Question(kind, options=("smith",), digit_count=3 if kind is SlotType.DIGITS else None)
    priors = EnginePriors(agreement_weight=0.1)
    heard = [Hypothesis(engine, text, 0.5, True) for engine, text in zip(("a", "b"), texts, strict=True)]
    assert all(("agree" in why) is agree for _, h, why in ranked(heard, question, priors) if h.engine == "b")


def test_calibration_maps_confidence_to_hit_rate():
    priors = EnginePriors()
    samples = [("e", c / 10, c >= 5) for c in range(10) for _ in range(5)]
    samples += [("flat", 1.0, i % 4 == 0) for i in range(40)]
    priors.calibrate(samples)
    assert priors.confidence("e", 0.9) > 0.8 and priors.confidence("e", 0.1) < 0.2
    assert priors.confidence("flat", 1.0) == pytest.approx(11 / 42)  # its smoothed hit rate
    assert priors.confidence("unknown", 0.7) == 0.7  # uncalibrated: as given


def test_priors_round_trip_through_their_file(tmp_path):
    priors = EnginePriors({"e": {"digits": 0.7}}, 0.4, {"e": (3.0, -1.5)}, 0.3, 0.15)
    priors.save(tmp_path / "priors.json")
    assert EnginePriors.load(tmp_path / "priors.json") == priors


def test_two_engines_reading_the_same_digits_outweigh_two_near_readings():
    """Partial agreement is at most half an exact one: 811309828 heard by two engines beats
    811309888, which each of them nearly read too."""
    question = Question(SlotType.DIGITS, digit_count=9)
    priors = EnginePriors(agreement_weight=0.2)
    heard = [
        Hypothesis("grammar", "eight double one three zero nine eight two eight", 0.9, True),
        Hypothesis("whisper", "811309828", 0.5, True),
        Hypothesis("tiny", "eight double one three zero nine eight eight eight", 0.5, True),
        Hypothesis("lm", "8 1 1 3 0 9 8 8 2", 0.5, True),
    ]
    scores = {h.engine: (value, why) for value, h, why in ranked(heard, question, priors)}
    assert ranked(heard, question, priors)[0][1].engine in ("grammar", "whisper")
    assert scores["grammar"][0] > scores["tiny"][0]
    assert agreement("digits", "811309828", "811309888") == pytest.approx(0.5 * (2 * 8 / 9 - 1))
    assert agreement("digits", "811309828", "427193555") == 0.0
    assert agreement("date", "2026-01-09", "2026-01-19") == 0.0  # only symbol strings agree in part


class ScriptedEngine(ExplodingEngine):
    """A plugin whose final is ``said``, whatever it hears; it notes whether it was asked to decode."""

    def __init__(self, name: str, said: str) -> None:
        self.name = name
        self.said = said
        self.decoded = False

    def feed(self, pcm: np.ndarray) -> Hypothesis | None:
        return None

    def finish(self) -> Hypothesis:
        self.decoded = True
        return Hypothesis(self.name, self.said, 0.9, is_final=True)


async def _heard_with_second_opinion(
    engines: list,
    beside: str,
    second_says: str,
    priors: EnginePriors | None = None,
    question: Question = DIGITS,
    spoken: str = "four two seven one",
    tiers: tuple[tuple[str, ...], ...] = (("beside",), ("second",)),
) -> tuple[TurnRecord, ScriptedEngine]:
    """The grammar hears ``spoken`` beside an engine that says ``beside`` (by default the first second
    opinion); a second opinion after it that would say ``second_says`` is asked only if they disagree."""
    grammar = [e for e in engines if e.name == "sphinx-grammar"]
    second = ScriptedEngine("second", second_says)
    arbiter = Arbiter(
        [*grammar, ScriptedEngine("beside", beside), second],
        priors=priors or EnginePriors(),
        deadline=30,
        second_opinions=tiers,
    )
    return await arbiter.recognize(question, await telephone_speech(spoken)), second


async def test_a_second_opinion_is_not_asked_when_the_engines_before_it_agree(engines):
    record, second = await _heard_with_second_opinion(engines, beside="4271", second_says="9999")
    assert read_digits(record.winner.text) == "4271"
    assert not second.decoded and record.not_run == ["second"]
    assert "second" not in record.scores and "second" not in record.failed_engines
    assert record.agreed in ("sphinx-grammar and beside read the same answer",
                             "beside and sphinx-grammar read the same answer")  # fmt: skip
    assert "not asked: second" in record.reason


async def test_a_second_opinion_decides_when_the_engines_before_it_disagree(engines):
    record, second = await _heard_with_second_opinion(engines, beside="1234", second_says="4271")
    assert second.decoded and record.not_run == [] and "second" in record.answer_seconds
    assert read_digits(record.winner.text) == "4271"  # the grammar, with the second opinion's support


async def test_the_first_engines_close_a_turn_alone_only_when_one_of_them_is_sure(engines):
    """The first engines' agreement needs one of them at least ``sure_confidence`` confident
    (calibrated): here the grammar means P(right) 0.2 whatever it says, the other engine 0.3."""
    calibration = {"sphinx-grammar": (0.0, math.log(0.2 / 0.8)), "beside": (0.0, math.log(0.3 / 0.7))}
    for sure, asked in ((0.5, True), (0.25, False)):
        priors = EnginePriors(calibration=calibration, agreement_weight=0.1, sure_confidence=sure)
        record, second = await _heard_with_second_opinion(
            engines, "yes", "yes", priors, question=YES_NO, spoken="yes", tiers=(("second",),)
        )
        assert second.decoded is asked and record.not_run == ([] if asked else ["second"])
        assert record.winner.text.strip(".").lower() == "yes"
        if not asked:
            assert record.agreed.endswith("read the same answer, confidence 0.30")


async def test_the_first_engines_never_close_a_string_of_digits_alone(engines):
    """Both pocketsphinx decoders heard "nine nine nine one eight nine" as "...nine nine eight nine" at
    0.94: on digits, phone numbers and spellings their agreement always gets a second opinion."""
    priors = EnginePriors(agreement_weight=0.1, sure_confidence=0.0)
    record, second = await _heard_with_second_opinion(engines, "4271", "4271", priors, tiers=(("second",),))
    assert second.decoded and record.not_run == []
    assert read_digits(record.winner.text) == "4271"


def test_sure_confidence_is_saved_with_the_priors(tmp_path):
    priors = EnginePriors({"whisper": {"digits": 0.8}}, sure_confidence=0.36)
    priors.save(tmp_path / "priors.json")
    assert EnginePriors.load(tmp_path / "priors.json").sure_confidence == 0.36


def test_a_whole_answer_ranks_above_half_of_one_from_an_engine_with_a_higher_prior():
    """A half-heard date is a no-match to the dialogue: it must not hide another engine's whole one."""
    question = Question(SlotType.DATE, today="2026-12-05")
    priors = EnginePriors({"sure": {"date": 0.9}, "humble": {"date": 0.2}})
    half = Hypothesis("sure", "December, does January 2027.", 0.9, is_final=True)
    whole = Hypothesis("humble", "the third of january twenty twenty seven", 0.4, is_final=True)
    assert not read_slot(question, half.text).complete and read_slot(question, whole.text).complete
    assert score(half, question, priors)[0] > score(whole, question, priors)[0]  # on score alone
    assert [h.engine for _, h, _ in ranked([half, whole], question, priors)] == ["humble", "sure"]
