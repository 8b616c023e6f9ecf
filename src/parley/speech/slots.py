"""Does a transcript parse as a valid answer to the question? (the arbiter's strongest signal)

These are deliberately small, strict readers of *spoken* forms ("four two seven", "double
seven", "oh"), used to judge hypotheses; the understanding layer has the full extractors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from parley.speech.types import Question, SlotType

DIGIT_WORDS = {
    "zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
MULTIPLIERS = {"double": 2, "triple": 3}
YES = {"yes", "yeah", "yep", "yup", "correct", "right", "sure", "absolutely", "affirmative", "indeed"}
NO = {"no", "nope", "nah", "incorrect", "wrong", "negative"}
NUMBER_WORDS = {
    **{w: int(d) for w, d in DIGIT_WORDS.items() if w not in ("oh", "o")},
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14,
    "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19,
    "twentieth": 20, "thirtieth": 30,
}  # fmt: skip
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
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


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+|\d+", text.lower())


def read_digits(text: str) -> str | None:
    """'four two double seven oh' -> '42770'; None if anything but digit words is said."""
    out: list[str] = []
    repeat = 1
    for word in words(text):
        if word.isdigit():
            out.append(word * repeat)
            repeat = 1
        elif word in MULTIPLIERS:
            repeat = MULTIPLIERS[word]
        elif word in DIGIT_WORDS:
            out.append(DIGIT_WORDS[word] * repeat)
            repeat = 1
        else:
            return None
    return "".join(out) or None


def read_number(tokens: list[str]) -> int | None:
    """'two hundred and fifty' -> 250 (up to the millions); None when not a number."""
    total = current = 0
    seen = False
    for word in tokens:
        if word == "and" and seen:
            continue
        if word.isdigit():
            current += int(word)
        elif word in NUMBER_WORDS:
            current += NUMBER_WORDS[word]
        elif word == "hundred" and seen:
            current *= 100
        elif word in ("thousand", "million") and seen:
            total += current * (1000 if word == "thousand" else 1_000_000)
            current = 0
        else:
            return None
        seen = True
    return total + current if seen else None


def read_amount(text: str) -> tuple[float, str | None] | None:
    """'fifty five dollars and twenty cents' -> (55.2, 'USD')."""
    tokens = words(text)
    currency = next((CURRENCIES[t] for t in tokens if t in CURRENCIES), None)
    tokens = [t for t in tokens if t not in CURRENCIES and t not in ("a", "about")]
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


def read_date(text: str) -> str | None:
    """A spoken date in a few common forms -> a canonical string ('05-03', 'next tuesday')."""
    tokens = words(text)
    if any(t in ("today", "tomorrow", "yesterday") for t in tokens):
        return next(t for t in tokens if t in ("today", "tomorrow", "yesterday"))
    for i, t in enumerate(tokens):
        if t in WEEKDAYS:
            prefix = tokens[i - 1] if i and tokens[i - 1] in ("next", "this", "last") else ""
            return f"{prefix} {t}".strip()
    month = next((MONTHS.index(t) + 1 for t in tokens if t in MONTHS), None)
    day = next((ORDINALS[t] for t in tokens if t in ORDINALS), None)
    if day is not None and "twenty" in tokens and day < 10:
        day += 20
    if month and day:
        return f"{month:02d}-{day:02d}"
    return None


def read_slot(question: Question, text: str) -> SlotReading | None:
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
        if all(len(t) == 1 for t in tokens):
            return SlotReading("".join(tokens).upper(), len(tokens) >= 2)
        return None
    if kind in (SlotType.NAME, SlotType.CHOICE):
        options = {o.lower(): o for o in question.options}
        joined = " ".join(tokens)
        if options:
            match = next((options[o] for o in options if re.search(rf"\b{re.escape(o)}\b", joined)), None)
            return SlotReading(match, True) if match else None
        return SlotReading(joined.title(), True) if kind == SlotType.NAME and len(tokens) <= 3 else None
    if kind == SlotType.AMOUNT:
        amount = read_amount(text)
        return SlotReading(amount, True) if amount else None
    if kind == SlotType.DATE:
        date = read_date(text)
        return SlotReading(date, True) if date else None
    return SlotReading(" ".join(tokens), True)  # FREE: any speech is an answer
