"""Understanding on every partial: early close on the first stable complete value, not on corrections."""

from datetime import date, datetime

import pytest

from parley.nlu.intents import IntentClassifier
from parley.nlu.partial import PartialUnderstanding

REFERENCE = datetime(2025, 3, 12, 9, 0)


def closes(understanding, partials):
    """The index of the partial that signalled complete_and_stable (None if none did), and all results."""
    results = [understanding.update(p) for p in partials]
    first = next((i for i, r in enumerate(results) if r.complete_and_stable), None)
    return first, results


def test_name_closes_on_the_first_stable_complete_value_not_before():
    partials = [
        "My",
        "My last",
        "My last name",
        "My last name is",
        "My last name is Smith",
        "My last name is Smith",
    ]
    first, results = closes(PartialUnderstanding("name"), partials)
    assert first == 5
    assert [r.extraction.value if r.extraction else None for r in results][:4] == [None] * 4
    assert results[5].extraction.value == "Smith"


def test_one_partial_is_not_stable_enough():
    first, _ = closes(PartialUnderstanding("name"), ["My name is", "My name is John"])
    assert first is None
    first, _ = closes(PartialUnderstanding("name", stable_partials=1), ["My name is", "My name is John"])
    assert first == 1


def test_digit_count_is_respected():
    partials = ["four", "four two", "four two", "four two seven", "four two seven", "four two seven one"]
    understanding = PartialUnderstanding("digits", digits=5)
    first, results = closes(understanding, partials)
    assert first is None  # never five digits
    assert not any(r.extraction.complete for r in results)
    first, _ = closes(understanding, ["four two seven one one", "four two seven one one"])
    assert first == 1 and understanding.closed_on.value == "42711"


def test_correction_never_closes_on_the_wrong_value():
    partials = [
        "four",
        "four two",
        "four two no",
        "four two no four",
        "four two no four three",
        "four two no four three",
    ]
    understanding = PartialUnderstanding("digits", digits=2)
    first, results = closes(understanding, partials)
    assert first == 5
    assert understanding.closed_on.value == "43"
    assert all(not r.complete_and_stable for r in results[:5])
    assert understanding.final("four two no four three").extraction.value == "43"


@pytest.mark.parametrize(
    "partials",
    [
        ["four two", "four two sorry", "four two sorry four three", "four two sorry four three"],
        ["four two", "four two I mean", "four two I mean four three", "four two I mean four three"],
        ["four two", "four two actually", "four two actually four three", "four two actually four three"],
        ["four two", "four two no wait", "four two no wait four three", "four two no wait four three"],
    ],
)
def test_every_correction_cue_holds_the_turn_open(partials):
    understanding = PartialUnderstanding("digits", digits=2)
    first, results = closes(understanding, partials)
    assert not results[1].complete_and_stable  # ends in the cue
    assert first == 3 and understanding.closed_on.value == "43"


@pytest.mark.parametrize(
    ("slot", "kw", "partials"),
    [
        ("digits", {"digits": 5}, ["four two double", "four two double"]),  # "double" what?
        ("digits", {"digits": 3}, ["four two oh", "four two oh"]),  # "oh" may start "oh sorry"
        ("digits", {}, ["four forty", "four forty"]),  # "forty two" may follow
        ("digits", {"digits": 2}, ["four two and", "four two and"]),
        ("spelled", {}, ["S M I T H as in", "S M I T H as in"]),
        ("date", {"reference": REFERENCE}, ["the third of", "the third of"]),
        ("time", {"reference": REFERENCE}, ["at three at", "at three at"]),
        ("amount", {}, ["fifty pounds and", "fifty pounds and"]),
        ("email", {}, ["john at example dot co", "john at example dot co"]),
        ("name", {}, ["Smith sorry", "Smith sorry"]),
    ],
)
def test_trailing_connectives_and_pending_words_hold_the_turn_open(slot, kw, partials):
    first, _ = closes(PartialUnderstanding(slot, **kw), partials)
    assert first is None


def test_early_close_requires_confidence():
    # "Okonkwo" is not in the names list: a value, but not confident enough to cut the caller off.
    first, results = closes(PartialUnderstanding("name"), ["it's Okonkwo", "it's Okonkwo"])
    assert first is None and results[-1].extraction.value == "Okonkwo"


def test_value_changes_restart_the_count():
    partials = ["next tuesday", "next tuesday no wednesday", "next tuesday no wednesday"]
    understanding = PartialUnderstanding("date", reference=REFERENCE)
    first, _ = closes(understanding, partials)
    assert first == 2 and understanding.closed_on.value == date(2025, 3, 19)


def test_yes_no_treats_no_as_an_answer_not_a_correction():
    first, results = closes(PartialUnderstanding("yes_no"), ["no", "no"])
    assert first == 1 and results[1].extraction.value is False
    first, results = closes(
        PartialUnderstanding("yes_no"), ["yes", "yes no", "yes no wait", "yes no wait no"]
    )
    assert first is None  # contradiction, then a cue, then the new value once
    first, results = closes(PartialUnderstanding("yes_no"), ["I", "I think", "I think so", "I think so"])
    assert first == 3 and results[3].extraction.value is True


@pytest.mark.parametrize(
    ("slot", "kw", "text", "expected", "closes_at"),
    [
        ("phone", {}, "oh seven seven double oh nine oh oh nine eight three", "07700900983", 11),
        ("email", {}, "john dot smith at example dot com", "john.smith@example.com", 7),
        ("address", {}, "ten downing street london s w one a two a a", None, 11),
        # the value settles before the caller finishes: "the afternoon" -> "the afternoon please"
        ("choice", {"options": ("morning", "afternoon")}, "the afternoon please", "afternoon", 2),
    ],
)
def test_other_slot_types_close_early(slot, kw, text, expected, closes_at):
    words = text.split()
    partials = [" ".join(words[: n + 1]) for n in range(len(words))] + [text]  # word by word, then a repeat
    understanding = PartialUnderstanding(slot, **kw)
    first, _ = closes(understanding, partials)
    assert first == closes_at
    if expected is not None:
        assert understanding.closed_on.value == expected


def test_a_spelling_never_closes_early_on_a_stable_partial():
    """A caller pausing between letters gives the same partial twice: "C L A" is no whole name."""
    understanding = PartialUnderstanding("spelled")
    first, results = closes(understanding, ["C", "C L", "C L A", "C L A", "C L A", "C L A R K", "C L A R K"])
    assert first is None and results[-1].extraction.value == "CLARK"
    assert understanding.final("C L A R K").extraction.value == "CLARK"


def test_amount_closes_once_the_currency_settles():
    partials = ["two hundred", "two hundred and", "two hundred and fifty", "two hundred and fifty pounds"]
    understanding = PartialUnderstanding("amount")
    first, _ = closes(understanding, [*partials, partials[-1]])
    assert first == 4 and str(understanding.closed_on.value.amount) == "250"


def test_intents_run_on_every_partial_and_free_speech_closes_on_a_stable_intent():
    intents = IntentClassifier(
        {
            "new_claim": ["I want to make a claim", "report an accident", "file a claim"],
            "operator": ["speak to an agent", "operator", "a real person please"],
        }
    )
    understanding = PartialUnderstanding("free", intents=intents)
    partials = ["I", "I want", "I want to", "I want to make a claim", "I want to make a claim"]
    first, results = closes(understanding, partials)
    assert [r.intent.name for r in results] == [None, None, None, "new_claim", "new_claim"]
    assert first == 4
    digits = PartialUnderstanding("digits", digits=4, intents=intents)
    assert digits.update("can I speak to an agent").intent.name == "operator"


def test_final_scales_confidence_and_reports_completeness():
    understanding = PartialUnderstanding("digits", digits=4)
    final = understanding.final("four two seven one", confidence=0.5)
    assert final.extraction.value == "4271" and final.complete_and_stable
    assert final.extraction.confidence == pytest.approx(0.45)
    assert not understanding.final("four two seven", confidence=0.9).complete_and_stable
    assert understanding.final("", confidence=0.9).extraction is None


@pytest.mark.parametrize(
    ("final", "heard", "settled"),
    [
        ("two seven three nine", "it is seven three nine", True),  # the first digit taken for a carrier
        ("yeah nine nine one three", "yeah nine one three", True),
        ("four two seven one", "four two seven one", True),
        ("one seven eight eight", "one seven eight", False),  # the last digit invented: maybe unsaid
        ("five oh one nine", "five one", False),
        ("zero oh oh nine", "zero nine", False),  # two digits invented in front: a pause after "zero nine"?
        ("four two seven one", "", False),
        ("four two seven", "four two seven", False),  # not complete
        ("four two seven double", "four two seven", False),  # open-ended
        ("four two no four three seven one", "four two no four three seven one", True),  # corrected
    ],
)
def test_a_final_at_a_pause_settles_only_when_the_partials_end_the_same_way(final, heard, settled):
    understanding = PartialUnderstanding("digits", digits=4)
    assert understanding.settled(final, 0.9, heard) is settled


def test_settled_needs_confidence_and_agreement_for_other_slot_types():
    digits = PartialUnderstanding("digits", digits=4)
    assert not digits.settled("four two seven one", 0.3, "four two seven one")  # below min_confidence
    yes_no = PartialUnderstanding("yes_no")
    assert yes_no.settled("yes", 0.9, "yes please")
    assert not yes_no.settled("yes", 0.9, "no")
    assert not yes_no.settled("yes", 0.9, "")
