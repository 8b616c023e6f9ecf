"""Is a transcript the right answer? Slot-level scoring against labelled utterances.

Used by the ASR benchmark (engine priors, per-slot accuracy). Closed questions are right when the
transcript reads, through the one slot reader the arbiter and the dialogue use
(:func:`parley.nlu.reader.read_slot`), as exactly the labelled value; free speech when its word
error rate is at most :data:`FREE_SPEECH_MAX_WER`.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from parley.nlu.question import Question, SlotType
from parley.nlu.reader import read_slot, same_value
from parley.nlu.spoken import words

FREE_SPEECH_MAX_WER = 0.25


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over words, divided by the reference length."""
    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / len(ref)


def is_correct(question: Question, text: str, expected: Any, reference: date | None = None) -> bool:
    """Whether ``text`` gives the labelled ``expected`` value for ``question``."""
    if question.slot_type == SlotType.FREE:
        return word_error_rate(str(expected), text) <= FREE_SPEECH_MAX_WER
    reading = read_slot(question, text, reference)
    return reading is not None and reading.complete and same_value(reading.value, expected)
