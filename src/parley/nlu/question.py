"""What the dialogue asks: the question every engine, reader and scorer is given.

Kept on the lowest floor (beside the readers) because the speech layer (engines, arbiter) and the
understanding layer both need it, and the understanding layer may not import the speech layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SlotType(StrEnum):
    """What kind of answer a question expects; engines and the arbiter specialise on it."""

    DIGITS = "digits"  # account / policy / card numbers, PINs
    PHONE = "phone"
    NAME = "name"  # first or last name, possibly from a known list
    SPELLED = "spelled"  # "S M I T H"
    YES_NO = "yes_no"
    DATE = "date"
    TIME = "time"  # a time of day: "half past ten", "2:15 pm"
    AMOUNT = "amount"  # money
    CHOICE = "choice"  # one of the question's options
    FREE = "free"  # open speech ("what is the reason for your call?")


@dataclass(frozen=True, slots=True)
class Question:
    """What the dialogue is asking; given to engines before the caller answers (``prepare``)."""

    slot_type: SlotType
    prompt: str = ""
    digit_count: int | None = None  # exact number of digits expected, when known
    options: tuple[str, ...] = ()  # names list, menu choices
    phrases: tuple[str, ...] = ()  # example answers / agent texts to bias language models
    language: str = "en-US"
    # The agent's slot kind when it is finer than ``slot_type`` (email and address are FREE
    # speech to the recognisers, but read by their own extractor): see :func:`parley.nlu.reader.read_slot`.
    kind: str = ""
    # The range a valid answer falls in, when the agent's rules bound it (dates, times, amounts), as
    # ISO 8601 text or a decimal number, resolved for the call's day; "" is unbounded. Recognisers
    # prefer an in-range reading (a year heard as "2020" when the beam also holds "2027").
    lowest: str = ""
    highest: str = ""
    # The call's day (ISO 8601) that relative answers are read from ("next Sunday", "March 3rd" of
    # which year); "" is the day the answer is read.
    today: str = ""

    @property
    def reading_kind(self) -> str:
        """The extractor that reads answers to this question."""
        return self.kind or self.slot_type.value
