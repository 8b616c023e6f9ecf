"""Slot readers (the arbiter's validity signal) and slot-level scoring."""

from datetime import date

import pytest

from parley.speech.evaluation import is_correct, word_error_rate
from parley.speech.slots import read_amount, read_date, read_digits, read_slot
from parley.speech.types import Question, SlotType

REFERENCE = date(2025, 3, 12)  # a Wednesday


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("four two seven one", "4271"),
        ("yeah it's nine eight two five nine seven nine", "9825979"),
        ("oh two oh, three oh two seven, three four six four", "02030273464"),
        ("double seven triple one", "77111"),
        ("4 2 seven", "427"),
        ("for to seven", "7"),  # the LM's classic mishearing: only one digit word survives
        ("my account number is", None),
    ],
)
def test_read_digits(text, digits):
    assert read_digits(text) == digits


def test_digit_count_decides_completeness():
    question = Question(SlotType.DIGITS, digit_count=5)
    assert read_slot(question, "nine nine three zero five").complete
    assert not read_slot(question, "nine nine three").complete
    assert read_slot(question, "the weather is nice") is None


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("two hundred and fifty pounds", (250.0, "GBP")),
        ("it's seven hundred and fifty euros", (750.0, "EUR")),
        ("fifty five dollars and twenty cents", (55.2, "USD")),
        ("seventeen pounds seventy five", (17.75, "GBP")),
        ("thirty pence", (0.3, None)),
        ("one thousand two hundred", (1200.0, None)),
        ("lots of money", None),
    ],
)
def test_read_amount(text, amount):
    assert read_amount(text) == amount


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("the sixth of June nineteen sixty five", date(1965, 6, 6)),
        ("August twenty sixth", date(2025, 8, 26)),
        ("the twenty first of may two thousand and five", date(2005, 5, 21)),
        ("may third twenty twenty four", date(2024, 5, 3)),
        ("next tuesday", date(2025, 3, 18)),
        ("wednesday", date(2025, 3, 19)),  # the next one after today, never today
        ("tomorrow please", date(2025, 3, 13)),
        ("the thirty first of february", None),
        ("sometime soon", None),
    ],
)
def test_read_date(text, day):
    assert read_date(text, REFERENCE) == day


@pytest.mark.parametrize(
    ("slot", "text", "options", "value"),
    [
        (SlotType.YES_NO, "yeah that's right", (), True),
        (SlotType.YES_NO, "not really", (), False),
        (SlotType.YES_NO, "yes no", (), None),  # contradictory: not a valid answer
        (SlotType.SPELLED, "Clark, C L A R K", (), "CLARK"),
        (SlotType.NAME, "my name is George", (), "George"),
        (SlotType.NAME, "it is smith", ("Smith", "Jones"), "Smith"),
        (SlotType.NAME, "it is brown", ("Smith", "Jones"), None),
        (SlotType.CHOICE, "the second one", ("morning", "afternoon"), "afternoon"),
        (SlotType.CHOICE, "option one", ("billing", "sales"), "billing"),
        (SlotType.CHOICE, "by bank transfer please", ("card", "bank transfer"), "bank transfer"),
    ],
)
def test_read_slot_values(slot, text, options, value):
    reading = read_slot(Question(slot, options=options), text)
    assert (reading.value if reading else None) == value


def test_word_error_rate_and_free_speech_scoring():
    assert word_error_rate("i lost my card", "i lost my card") == 0.0
    assert word_error_rate("i lost my card", "i lost a card") == 0.25
    assert word_error_rate("", "") == 0.0
    question = Question(SlotType.FREE)
    assert is_correct(question, "i lost my card yesterday", "I lost my card yesterday")
    assert not is_correct(question, "eye last mike are", "I lost my card")


def test_is_correct_compares_normalised_values():
    assert is_correct(Question(SlotType.AMOUNT), "forty one pounds", {"value": 41, "currency": "GBP"})
    assert not is_correct(Question(SlotType.AMOUNT), "forty one euros", {"value": 41, "currency": "GBP"})
    assert is_correct(Question(SlotType.DATE), "next tuesday", "2025-03-18", REFERENCE)
    assert is_correct(Question(SlotType.DIGITS, digit_count=4), "four two seven one", "4271")
    assert not is_correct(Question(SlotType.DIGITS, digit_count=4), "four two seven", "427")
