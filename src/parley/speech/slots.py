"""Does a transcript parse as a valid answer to the question? (the arbiter's strongest signal)

These are deliberately small, strict readers of *spoken* forms ("four two seven", "double
seven", "oh"), used to judge hypotheses; the understanding layer (:mod:`parley.nlu`) has the full
extractors and owns the shared spoken-form primitives (:mod:`parley.nlu.spoken`) imported here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from parley.nlu.spoken import (
    DIGIT_WORDS,
    MONTHS,
    MULTIPLIERS,
    NUMBER_WORDS,
    ORDINALS,
    WEEKDAYS,
    read_number,
    read_year,
    strip_carrier,
    words,
)
from parley.speech.types import Question, SlotType

__all__ = [
    "DIGIT_WORDS",
    "MONTHS",
    "MULTIPLIERS",
    "NUMBER_WORDS",
    "ORDINALS",
    "WEEKDAYS",
    "SlotReading",
    "read_amount",
    "read_date",
    "read_digits",
    "read_number",
    "read_slot",
    "read_year",
    "words",
]

YES = {"yes", "yeah", "yep", "yup", "correct", "right", "sure", "absolutely", "affirmative", "indeed"}
NO = {"no", "nope", "nah", "not", "incorrect", "wrong", "negative"}
CURRENCIES = {
    "pound": "GBP",
    "pounds": "GBP",
    "dollar": "USD",
    "dollars": "USD",
    "euro": "EUR",
    "euros": "EUR",
}


@dataclass(frozen=True, slots=True)
class SlotReading:
    """A transcript read as a slot value; ``value`` is normalised (digits string, bool, ...)."""

    value: object
    complete: bool  # e.g. the expected number of digits is there


def read_digits(text: str) -> str | None:
    """'yeah it's four two double seven oh' -> '42770': the longest run of digit words.

    Words around the run (carrier phrases) are ignored; None when no digit is said.
    """
    best: list[str] = []
    run: list[str] = []
    repeat = 1
    for word in [*words(text), ""]:
        if word.isdigit():
            run.append(word * repeat)
            repeat = 1
        elif word in MULTIPLIERS:
            repeat = MULTIPLIERS[word]
        elif word in DIGIT_WORDS:
            run.append(DIGIT_WORDS[word] * repeat)
            repeat = 1
        else:
            if len("".join(run)) > len("".join(best)):
                best = run
            run, repeat = [], 1
    return "".join(best) or None


def read_amount(text: str) -> tuple[float, str | None] | None:
    """'fifty five dollars and twenty cents' -> (55.2, 'USD')."""
    tokens = words(text)
    currency = next((CURRENCIES[t] for t in tokens if t in CURRENCIES), None)
    at = next((i for i, t in enumerate(tokens) if t in CURRENCIES), None)
    if at is not None and 0 < at < len(tokens) - 1:  # "seventeen pounds seventy five"
        main, minor = read_number(_strip_carrier(tokens[:at])), read_number(tokens[at + 1 :])
        if main is not None and minor is not None and minor < 100:
            return main + minor / 100, currency
    tokens = _strip_carrier([t for t in tokens if t not in CURRENCIES and t not in ("a", "about")])
    cents = 0
    if tokens and tokens[-1] in ("cents", "cent", "pence", "p"):
        body = tokens[:-1]
        if "and" not in body:
            only = read_number(body)
            return (only / 100, currency) if only is not None and only < 100 else None
        cut = len(body) - 1 - body[::-1].index("and")
        tokens, cent_value = body[:cut], read_number(body[cut + 1 :])
        if cent_value is None or cent_value >= 100:
            return None
        cents = cent_value
    number = read_number(tokens)
    return (number + cents / 100, currency) if number is not None else None


def read_date(text: str, reference: date | None = None) -> date | None:
    """A spoken date ('the third of May', 'May twenty first nineteen eighty', 'next Tuesday',
    'tomorrow') resolved against ``reference`` (default: today); None when it is not a date."""
    reference = reference or date.today()
    tokens = words(text)
    relative = {"today": 0, "tomorrow": 1, "yesterday": -1}
    for token in tokens:
        if token in relative:
            return reference + timedelta(days=relative[token])
    for token in tokens:
        if token in WEEKDAYS:
            ahead = (WEEKDAYS.index(token) - reference.weekday() - 1) % 7 + 1  # the next one after today
            return reference + timedelta(days=ahead)
    month_at = next((i for i, t in enumerate(tokens) if t in MONTHS), None)
    day_at = next((i for i, t in enumerate(tokens) if t in ORDINALS), None)
    if month_at is None or day_at is None:
        return None
    day = ORDINALS[tokens[day_at]]
    if day < 10 and day_at and tokens[day_at - 1] in ("twenty", "thirty"):
        day += NUMBER_WORDS[tokens[day_at - 1]]
    year = read_year(tokens[max(month_at, day_at) + 1 :]) or reference.year
    try:
        return date(year, MONTHS.index(tokens[month_at]) + 1, day)
    except ValueError:
        return None


def read_slot(question: Question, text: str, reference: date | None = None) -> SlotReading | None:
    """Read ``text`` as an answer to ``question``; None when it is not a valid answer."""
    kind = question.slot_type
    tokens = words(text)
    if not tokens:
        return None
    if kind in (SlotType.DIGITS, SlotType.PHONE):
        digits = read_digits(text)
        if digits is None:
            return None
        wanted = question.digit_count
        return SlotReading(digits, wanted is None or len(digits) == wanted)
    if kind == SlotType.YES_NO:
        yes, no = any(t in YES for t in tokens), any(t in NO for t in tokens)
        return SlotReading(yes, True) if yes != no else None
    if kind == SlotType.SPELLED:
        letters = _longest_run(tokens, lambda t: len(t) == 1 and t.isalpha())
        return SlotReading("".join(letters).upper(), len(letters) >= 2) if letters else None
    if kind == SlotType.CHOICE and question.options:
        position = _position(tokens)
        if position is not None and position <= len(question.options):
            return SlotReading(question.options[position - 1], True)  # "option two", "the first one"
    if kind in (SlotType.NAME, SlotType.CHOICE):
        options = {o.lower(): o for o in question.options}
        joined = " ".join(tokens)
        if options:
            match = next((options[o] for o in options if re.search(rf"\b{re.escape(o)}\b", joined)), None)
            return SlotReading(match, True) if match else None
        name = _strip_carrier(tokens)
        return (
            SlotReading(" ".join(name).title(), True)
            if kind == SlotType.NAME and 0 < len(name) <= 3
            else None
        )
    if kind == SlotType.AMOUNT:
        amount = read_amount(text)
        return SlotReading(amount, True) if amount else None
    if kind == SlotType.DATE:
        spoken = read_date(text, reference)
        return SlotReading(spoken.isoformat(), True) if spoken else None
    return SlotReading(" ".join(tokens), True)  # FREE: any speech is an answer


def _strip_carrier(tokens: list[str]) -> list[str]:
    return strip_carrier(tokens)


def _longest_run(tokens: list[str], keep: Callable[[str], bool]) -> list[str]:
    best: list[str] = []
    run: list[str] = []
    for token in [*tokens, ""]:
        if token and keep(token):
            run.append(token)
        else:
            best = run if len(run) > len(best) else best
            run = []
    return best


def _position(tokens: list[str]) -> int | None:
    """'option two' / 'number 2' / 'the second one' -> 2."""
    for i, token in enumerate(tokens):
        if token in ("option", "number", "press") and i + 1 < len(tokens):
            following = tokens[i + 1]
            value = int(following) if following.isdigit() else NUMBER_WORDS.get(following)
            if value:
                return value
        if token in ORDINALS and i + 1 < len(tokens) and tokens[i + 1] in ("one", "option"):
            return ORDINALS[token]
    return None
