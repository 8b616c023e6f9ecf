"""Understanding on every partial transcript, and when to close the caller's turn early.

The ASR sends a partial transcript each time its best guess changes ("My" -> "My last" -> "My
last name is Smith"). :class:`PartialUnderstanding` runs the slot's extractor (and the agent's
intent classifier) on each, and says ``complete_and_stable`` — the cue for the speech layer's
early-close hook (``Endpointer.request_early_close``) — only when all of these hold:

* the slot value is complete and valid (all the digits, a named day, an email with its domain)
  and confident enough (``min_confidence``);
* the same value came out of ``stable_partials`` consecutive partials;
* the transcript does not end in a correction cue ("no", "sorry", "I mean", "actually") or in a
  word that announces more ("and", "double", a trailing "oh" or "forty" for digits, "as in" for
  spelling, "of"/"at"/"half past" for dates and times).

Corrections ("four two... no, four three") therefore never close on the corrected value: the
extractors read what follows the last cue, and the value must settle again before the turn closes.
Free speech closes early only on a stable, confident intent. A spelling never closes early: its
length is unknown, and a caller pausing between letters ("C L A ... R K") gives the same stable
partial as a caller who has finished (load tests heard CLARK as "CLA" and BROWN as "WN"), so it ends
with the end of speech.

At a short pause the speech layer may also ask :meth:`PartialUnderstanding.settled` whether the
recognisers' *final* of the answer so far closes the turn (semantic endpointing). A grammar that
knows the digit count forces its final to that many digits, inventing the missing ones where they
fit best, so a final alone is no proof: the last partial of the engine that won must hold all its
digits but at most the first ("it is seven three nine" for "two seven three nine": the first word
taken for a carrier). Digits missing at the end or several missing may be still to be said.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime

from parley.nlu.extractors import YES_NO_CUES, Extraction, extract
from parley.nlu.intents import IntentClassifier, IntentResult
from parley.nlu.spoken import CORRECTION_CUES, TENS, ends_with_cue, tokens

CONNECTIVES = frozenset(
    {"and", "but", "or", "plus", "then", "with", "um", "uh", "er", "erm", "hmm", "the", "a", "of", "to"}
)
LETTER_SLOTS = frozenset({"spelled", "name", "email", "address"})
DIGIT_SLOTS = frozenset({"digits", "phone"})
FORCED_DIGITS_MAX = 1  # digits a final at a pause may hold beyond its partial (in front: see settled)
PENDING_WORDS: dict[str, frozenset[str]] = {
    "digits": frozenset({"double", "triple", "oh", "o", "hundred", "thousand", *TENS}),
    "phone": frozenset({"double", "triple", "oh", "o", "plus", *TENS}),
    "amount": frozenset({"point", "hundred", "thousand", "million", "a", *TENS}),
    "spelled": frozenset({"as", "in", "for", "like", "double", "triple"}),
    "name": frozenset({"as", "in", "for", "like", "double", "triple", "is", "name"}),
    "date": frozenset({"next", "this", "last", "on", "at", "in", "half", "quarter", "past", *TENS}),
    "time": frozenset({"at", "half", "quarter", "past", "about", "around", *TENS}),
    "email": frozenset({"at", "dot", "underscore", "dash", "hyphen"}),
    "address": frozenset({"flat", "apartment", "unit", *TENS}),
}


@dataclass(frozen=True, slots=True)
class PartialResult:
    """What one (partial or final) transcript means for the question being asked."""

    extraction: Extraction | None
    intent: IntentResult | None
    complete_and_stable: bool  # close the turn now (partials); a complete value (final)


class PartialUnderstanding:
    """Feed every partial transcript of one answer to :meth:`update`, then the final to :meth:`final`."""

    def __init__(
        self,
        slot_type: str,
        *,
        options: tuple[str, ...] | list[str] = (),
        digits: int | None = None,
        intents: IntentClassifier | None = None,
        stable_partials: int = 2,
        min_confidence: float = 0.6,
        reference: datetime | date | None = None,
    ) -> None:
        self.slot_type = str(
            getattr(slot_type, "value", slot_type)
        )  # a name, SlotType or the agent's SlotKind
        self.options = tuple(options)
        self.digits = digits
        self.intents = intents
        self.stable_partials = max(1, stable_partials)
        self.min_confidence = min_confidence
        self.reference = reference
        self._value: object = _NOTHING
        self._intent: str | None = None
        self._streak = 0
        self._intent_streak = 0
        self.closed_on: Extraction | None = None  # the value the first early close was signalled on

    def update(self, partial_text: str) -> PartialResult:
        """Understand one partial transcript; ``complete_and_stable`` means close the turn now."""
        extraction = self._extract(partial_text)
        intent = self.intents.classify(partial_text) if self.intents is not None else None
        if extraction is not None and extraction.complete and extraction.value == self._value:
            self._streak += 1
        elif extraction is not None and extraction.complete:
            self._value, self._streak = extraction.value, 1
        else:
            self._value, self._streak = _NOTHING, 0
        name = intent.name if intent is not None else None
        self._intent_streak = (
            self._intent_streak + 1 if name is not None and name == self._intent else int(bool(name))
        )
        self._intent = name
        open_ended = self._open_ended(partial_text)
        if self.slot_type == "free":
            close = self._intent_streak >= self.stable_partials and not open_ended
        elif self.slot_type == "spelled":
            close = False  # no known length: see the module docstring
        else:
            close = (
                extraction is not None
                and self._streak >= self.stable_partials
                and extraction.confidence >= self.min_confidence
                and not open_ended
            )
        if close and self.closed_on is None:
            self.closed_on = extraction
        return PartialResult(extraction, intent, close)

    def final(self, text: str, confidence: float = 1.0) -> PartialResult:
        """Understand the final transcript; the extraction's confidence is scaled by the ASR's."""
        extraction = self._extract(text)
        if extraction is not None:
            extraction = replace(extraction, confidence=extraction.confidence * confidence)
        intent = self.intents.classify(text) if self.intents is not None else None
        return PartialResult(extraction, intent, extraction is not None and extraction.complete)

    def settled(self, final_text: str, confidence: float = 1.0, heard: str = "") -> bool:
        """At a pause: whether ``final_text`` (the recognisers' final of the answer so far, ASR
        ``confidence``) closes the turn. ``heard`` is the last partial of the engine whose final it is.

        The value must be complete, valid and confident, the final must not end open (a correction
        cue, "double"...), and the partial must agree: the same value, or for digits the final's
        digits being the partial's with at most one more in front (module docstring).
        """
        extraction = self.final(final_text, confidence).extraction
        if extraction is None or not extraction.complete or extraction.value is None:
            return False
        if extraction.confidence < self.min_confidence or self._open_ended(final_text):
            return False
        if self.slot_type in DIGIT_SLOTS:
            partial = extract(self.slot_type, heard, reference=self.reference)  # no count: nothing forced
            said = _digits(partial.value) if partial is not None else ""
            value = _digits(extraction.value)
            return bool(said) and value.endswith(said) and len(value) - len(said) <= FORCED_DIGITS_MAX
        partial = self._extract(heard)
        return partial is not None and partial.complete and partial.value == extraction.value

    def _extract(self, text: str) -> Extraction | None:
        return extract(
            self.slot_type, text, options=self.options, digits=self.digits, reference=self.reference
        )

    def _open_ended(self, text: str) -> bool:
        """Whether the transcript ends where the caller is evidently not finished."""
        toks = tokens(text)
        if not toks:
            return True
        cues = YES_NO_CUES if self.slot_type == "yes_no" else CORRECTION_CUES
        last = toks[-1].text
        connectives = CONNECTIVES - {"a"} if self.slot_type in LETTER_SLOTS else CONNECTIVES  # "a": a letter
        return (
            ends_with_cue(toks, cues)
            or last in connectives
            or last in PENDING_WORDS.get(self.slot_type, frozenset())
        )


def _digits(value: object) -> str:
    return "".join(ch for ch in str(value) if ch.isdigit())


_NOTHING = object()
