"""Value rules of an ``ask`` step: checks on the value understood from an answer (sans-I/O, pure).

An answer whose value breaks a rule (a birth date in the future, an amount over the limit, a card
number failing its Luhn checksum, a reference that does not match its pattern) is not accepted: the
runtime re-asks with the rule's own prompt. The rules are checked on the *extracted* value, after the
NLU readers, so they apply alike to speech, keypad and corrections.

Bounds of dates are absolute (``2025-01-01``) or relative to the call's day: ``today``, or an offset
such as ``-16y``, ``+90d``, ``-6m``, ``+2w`` (years, months, weeks, days; ``dateutil.relativedelta``
does the calendar arithmetic, Luhn is ``stdnum.luhn``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as dt_time
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from dateutil.relativedelta import relativedelta
from stdnum import luhn

if TYPE_CHECKING:
    from parley.agent.model import SlotKind, ValueRules

RULE_NAMES = ("min", "max", "length", "pattern", "checksum")
RELATIVE_DATE = re.compile(r"^(?:today|([+-])(\d{1,4})([dwmy]))$")
_UNITS = {"d": "days", "w": "weeks", "m": "months", "y": "years"}

# slot kinds each rule applies to (by SlotKind value)
BOUNDED_KINDS = ("date", "time", "amount", "digits")
TEXT_KINDS = ("digits", "phone", "name", "spelled", "email", "address", "free")
CHECKSUM_KINDS = ("digits",)


@dataclass(frozen=True, slots=True)
class Violation:
    """A rule the value breaks: its name (one of ``RULE_NAMES``) and the spoken explanation."""

    rule: str
    message: str


def resolve_date(bound: Any, today: date) -> date:
    """A date bound as a date: ISO text or a date as is, ``today``, or an offset from ``today``."""
    if isinstance(bound, datetime):
        return bound.date()
    if isinstance(bound, date):
        return bound
    text = str(bound).strip().lower()
    match = RELATIVE_DATE.match(text)
    if match:
        if text == "today":
            return today
        sign, count, unit = match.groups()
        amount = int(count) * (1 if sign == "+" else -1)
        return today + relativedelta(**{_UNITS[unit]: amount})
    return date.fromisoformat(text)


def resolve_time(bound: Any) -> dt_time:
    """A time bound: ``HH:MM`` text (or a time as is)."""
    if isinstance(bound, dt_time):
        return bound
    if isinstance(bound, int):  # YAML reads 09:30 unquoted as sexagesimal minutes
        return dt_time(bound // 60, bound % 60)
    return dt_time.fromisoformat(str(bound).strip())


def bound_problem(bound: Any, kind: str) -> str | None:
    """Why ``bound`` is no valid min/max for a slot of ``kind`` (None when it is)."""
    try:
        if kind == "date":
            resolve_date(bound, date(2000, 1, 1))
        elif kind == "time":
            resolve_time(bound)
        else:
            _decimal(bound, strict=True)
    except (ValueError, TypeError, InvalidOperation):
        if kind == "date":
            return f"{bound!r} is not a date bound: write an ISO date (2025-01-31), today, or -16y / +90d"
        if kind == "time":
            return f"{bound!r} is not a time bound: write HH:MM in quotes, e.g. '09:00'"
        return f"{bound!r} is not a number"
    return None


def _decimal(value: Any, *, strict: bool = False) -> Decimal:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if hasattr(value, "amount"):  # parley.nlu.extractors.Money
        value = value.amount
    elif isinstance(value, dict) and "amount" in value:
        value = value["amount"]
    if strict and not isinstance(value, int | float | Decimal):
        value = str(value)
        if not re.fullmatch(r"[+-]?\d+(\.\d+)?", value.strip()):
            raise ValueError(value)
    return Decimal(str(value))


def _text(value: Any, kind: str) -> str:
    text = str(value)
    if kind in ("digits", "phone"):
        return "".join(ch for ch in text if ch.isdigit())
    return text


def _spoken_number(value: Decimal) -> str:
    return f"{value.normalize():f}"


def value_range(rules: ValueRules | None, kind: SlotKind | str, today: date) -> tuple[str, str]:
    """The (lowest, highest) values ``rules`` allow a slot of ``kind``, as ISO text (dates, times) or
    decimal text (amounts), "" where unbounded: what the recognisers are told (``Question.lowest``)."""
    kind = str(getattr(kind, "value", kind))
    if rules is None or kind not in ("date", "time", "amount"):
        return "", ""
    resolve: dict[str, Any] = {
        "date": lambda bound: resolve_date(bound, today).isoformat(),
        "time": lambda bound: resolve_time(bound).isoformat(),
        "amount": lambda bound: _spoken_number(_decimal(bound)),
    }
    low, high = (resolve[kind](b) if b is not None else "" for b in (rules.min, rules.max))
    return low, high


# What the agent says when a value breaks a rule that has no prompt of its own (then the reprompt).
MESSAGES = {
    "date_min": "That date is too early: it must be on or after {bound}.",
    "date_max": "That date is too late: it must be on or before {bound}.",
    "time_min": "That is too early: the earliest is {bound}.",
    "time_max": "That is too late: the latest is {bound}.",
    "number_min": "That is too small: the minimum is {bound}.",
    "number_max": "That is too large: the maximum is {bound}.",
    "too_short": "That is too short: I need at least {bound} {unit}.",
    "too_long": "That is too long: I need at most {bound} {unit}.",
    "pattern": "That doesn't look like a valid answer.",
    "checksum": "That number doesn't check out: one of the digits may be wrong.",
}


def check_value(rules: ValueRules, kind: SlotKind | str, value: Any, today: date) -> Violation | None:
    """The first rule ``value`` breaks (min, max, length, pattern, checksum), or None."""
    kind = str(getattr(kind, "value", kind))
    found = _first_violation(rules, kind, value, today)
    if found is None:
        return None
    rule, default = found
    return Violation(rule, rules.prompts.get(rule, default))


def _first_violation(rules: ValueRules, kind: str, value: Any, today: date) -> tuple[str, str] | None:
    from parley.agent.runtime import spoken_date, spoken_time

    if (rules.min is not None or rules.max is not None) and kind in BOUNDED_KINDS:
        if kind == "date":
            day = value.date() if isinstance(value, datetime) else value
            if isinstance(day, str):
                day = date.fromisoformat(day)
            if rules.min is not None and day < (low := resolve_date(rules.min, today)):
                return "min", MESSAGES["date_min"].format(bound=spoken_date(low, year=True))
            if rules.max is not None and day > (high := resolve_date(rules.max, today)):
                return "max", MESSAGES["date_max"].format(bound=spoken_date(high, year=True))
        elif kind == "time":
            moment = value if isinstance(value, dt_time) else dt_time.fromisoformat(str(value))
            if rules.min is not None and moment < (low := resolve_time(rules.min)):
                return "min", MESSAGES["time_min"].format(bound=spoken_time(low))
            if rules.max is not None and moment > (high := resolve_time(rules.max)):
                return "max", MESSAGES["time_max"].format(bound=spoken_time(high))
        else:
            number = _decimal(value)
            if rules.min is not None and number < (low := _decimal(rules.min)):
                return "min", MESSAGES["number_min"].format(bound=_spoken_number(low))
            if rules.max is not None and number > (high := _decimal(rules.max)):
                return "max", MESSAGES["number_max"].format(bound=_spoken_number(high))
    text = _text(value, kind)
    unit = "digits" if kind in ("digits", "phone") else "characters"
    if rules.min_length is not None and len(text) < rules.min_length:
        return "length", MESSAGES["too_short"].format(bound=rules.min_length, unit=unit)
    if rules.max_length is not None and len(text) > rules.max_length:
        return "length", MESSAGES["too_long"].format(bound=rules.max_length, unit=unit)
    if rules.pattern is not None and not re.fullmatch(rules.pattern, text):
        return "pattern", MESSAGES["pattern"]
    if rules.checksum == "luhn" and not (text.isdigit() and luhn.is_valid(text)):
        return "checksum", MESSAGES["checksum"]
    return None
