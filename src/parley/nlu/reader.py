"""The one slot reader: what a transcript says as an answer to a question.

The arbiter (does a hypothesis read as a valid, complete answer?), the dialogue (the value a slot
takes, through :mod:`parley.nlu.partial`) and the benchmarks' scoring (:mod:`parley.speech.evaluation`)
all read transcripts here, through the extractors of :mod:`parley.nlu.extractors`, so they can never
disagree about what a transcript says. The extractors read spoken forms ("four two double seven",
"the third of May nineteen eighty") and written ones, as a neural recogniser writes them
("427-193", "$1,500.00", "March 3rd", "3/14", "S-M-I-T-H.", "O'Brien"), and follow corrections
("four two, no, four three").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from rapidfuzz.distance import Levenshtein

from parley.nlu.extractors import Money, extract
from parley.nlu.question import Question


@dataclass(frozen=True, slots=True)
class SlotReading:
    """A transcript read as a slot value (digits string, bool, date, :class:`Money`, option...)."""

    value: Any
    complete: bool  # e.g. the expected number of digits is there
    confidence: float = 1.0  # the extractor's, not the recogniser's


def read_slot(question: Question, text: str, reference: date | datetime | None = None) -> SlotReading | None:
    """Read ``text`` as an answer to ``question`` (relative dates from ``reference``, else the question's
    day); None when it holds no value of that kind."""
    if reference is None and question.today:
        reference = date.fromisoformat(question.today)
    extraction = extract(
        question.reading_kind,
        text,
        options=question.options,
        digits=question.digit_count,
        reference=reference,
    )
    if extraction is None:
        return None
    return SlotReading(extraction.value, extraction.complete, extraction.confidence)


def in_range(question: Question, value: Any) -> bool:
    """Whether a read ``value`` falls within the question's ``lowest``..``highest`` (True when the
    question has no bounds, or they do not apply to the value's kind)."""
    amount = value.amount if isinstance(value, Money) else value
    for bound, below in ((question.lowest, True), (question.highest, False)):
        limit = _bound_like(bound, amount) if bound else None
        if limit is not None and (amount < limit if below else amount > limit):
            return False
    return True


def _bound_like(bound: str, value: Any) -> Any:
    """``bound`` as a value comparable with ``value`` (None when it is not one)."""
    try:
        if isinstance(value, Decimal):
            return Decimal(bound)
        if isinstance(value, datetime):
            return datetime.fromisoformat(bound)
        if isinstance(value, date):
            return date.fromisoformat(bound)
        if isinstance(value, time):
            return time.fromisoformat(bound)
    except (ValueError, InvalidOperation):
        return None
    return None


def same_reading(value: Any, other: Any) -> bool:
    """Whether two values read from transcripts say the same (amounts: the same sum, in the same
    currency where both name one; text without case)."""
    if isinstance(value, Money) and isinstance(other, Money):
        currencies = {value.currency, other.currency} - {None}
        return value.amount == other.amount and len(currencies) <= 1
    if isinstance(value, str) and isinstance(other, str):
        return value.casefold() == other.casefold()
    return bool(value == other)


# Slot types whose values are strings of symbols, where two readings can agree in part ("811309828"
# and "11309828" heard by two engines support each other more than "811309888" does).
SYMBOL_STRING_KINDS = frozenset({"digits", "phone", "spelled"})
# The most a reading that differs in part can support another: half an exact agreement, so that two
# engines reading the same value outweigh two that each read something close to it (the value chosen
# on the ASR benchmark's training corpus, bench/asr_arbiter.py: 78.4 % against 78.1 % at 1.0).
PARTIAL_AGREEMENT = 0.5


def agreement(kind: str, value: Any, other: Any) -> float:
    """How far a reading ``other`` supports ``value`` (0..1): 1 when they say the same; for symbol
    strings (:data:`SYMBOL_STRING_KINDS`), partial credit by edit distance, rising from 0 at half the
    symbols different to :data:`PARTIAL_AGREEMENT` as they near equality. An amount that names no
    currency says less than the same sum in pounds: it is supported by that reading only in part, and
    supports it fully, so of two engines that agree the one that heard the currency wins."""
    if same_reading(value, other):
        if isinstance(value, Money) and value.currency is None and other.currency is not None:
            return PARTIAL_AGREEMENT
        return 1.0
    if kind not in SYMBOL_STRING_KINDS or not isinstance(value, str) or not isinstance(other, str):
        return 0.0
    similarity = Levenshtein.normalized_similarity(value.casefold(), other.casefold())
    return PARTIAL_AGREEMENT * max(0.0, 2 * similarity - 1)


def same_value(value: Any, expected: Any) -> bool:
    """Whether a read ``value`` is the labelled ``expected`` one (labels are JSON: dates and times in
    ISO 8601, amounts as ``{"value": 12.5, "currency": "GBP"}``, text compared without case)."""
    if isinstance(value, Money):
        if not isinstance(expected, dict):
            return False
        currency = expected.get("currency")
        close = abs(value.amount - Decimal(str(expected["value"]))) < Decimal("0.005")
        return close and (currency is None or value.currency == currency)
    if isinstance(value, date | time):
        return value.isoformat() == str(expected)
    if isinstance(value, str) and isinstance(expected, str):
        return value.casefold() == expected.casefold()
    return bool(value == expected)
