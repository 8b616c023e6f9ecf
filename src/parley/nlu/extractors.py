"""Entity extractors per slot type, run on every partial transcript and on the final one.

Each extractor reads the value a caller gives for one slot type out of a transcript:
``extract(text, *, options=(), digits=None, reference=None) -> Extraction | None``. An
:class:`Extraction` says whether the value is ``complete`` (the expected number of digits is there,
a date names a day, an email has a domain...) — the understanding layer closes the turn early only
on complete values — with a confidence and the character span it was read from.

Callers correct themselves ("four two... no, four three"), so every extractor reads only what
follows the last correction cue (:data:`parley.nlu.spoken.CORRECTION_CUES`); a transcript that
ends in a cue yields the earlier value, incomplete and at half confidence.

Libraries: ``dateparser`` resolves dates (``PREFER_DATES_FROM='future'`` and ``RELATIVE_BASE`` the
call's reference time) once spoken numbers and times are numerals ("the twenty first of may at half
past two" -> "the 21st of may at 2:30"; a time alone needs no calendar and is read directly from
that normalisation); ``rapidfuzz`` matches names and choices to an agent's options;
``usaddress`` (a CRF tagger) labels street addresses; the ``names`` package gives first/last name
lists (:mod:`parley.nlu.namelists`). Spoken numbers, letters and emails are small rule readers.

Latency (timeit, uncached, 2-core build machine): 25-150 µs per partial for yes/no, choices, digits,
names, spelling, amounts, times and emails, ~0.3 ms for addresses (usaddress), and 1-2 ms for a
new date phrase (dateparser; cached per normalised phrase, so "next tuesday" -> "next tuesday
please" costs ~0.2 ms). Results are cached per (slot type, text, options, digits, reference).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache

import dateparser.date
import usaddress
from rapidfuzz import fuzz, process
from rapidfuzz.distance import Levenshtein

from parley.nlu import namelists
from parley.nlu.spoken import (
    CORRECTION_CUES,
    FILLERS,
    MONTHS,
    MULTIPLIERS,
    NUMBER_WORDS,
    ORDINALS,
    SCALES,
    WEEKDAYS,
    NumberRun,
    Token,
    ends_with_cue,
    last_correction,
    number_runs,
    strip_carrier,
    tokens,
)


@dataclass(frozen=True, slots=True)
class Extraction:
    """A slot value read from a transcript."""

    value: object
    complete: bool  # a whole, valid value (all digits there, a day named...): early close may follow
    confidence: float  # 0..1
    span: tuple[int, int]  # characters of the transcript the value was read from


@dataclass(frozen=True, slots=True)
class Money:
    amount: Decimal
    currency: str | None  # ISO 4217 ("GBP"), None when not said


@dataclass(frozen=True, slots=True)
class Address:
    flat: str | None = None  # "Flat 3", "Apartment 2B"
    number: str | None = None  # house number ("221", "12a")
    street: str | None = None  # "Baker Street"
    town: str | None = None
    postcode: str | None = None  # UK ("NW1 6XE")
    state: str | None = None  # US
    zip: str | None = None  # US

    def __str__(self) -> str:
        parts = [self.flat, " ".join(p for p in (self.number, self.street) if p), self.town, self.state]
        return ", ".join(p for p in [*parts, self.postcode or self.zip] if p)


Extractor = Callable[..., Extraction | None]
YES_NO_CUES = tuple(cue for cue in CORRECTION_CUES if cue[0] != "no")  # "no" is an answer here


def _answer(
    text: str, cues: tuple[tuple[str, ...], ...] = CORRECTION_CUES
) -> tuple[list[Token], list[Token]]:
    """(tokens after the last correction cue, tokens before it)."""
    toks = tokens(text)
    cut = last_correction(toks, cues=cues)
    if cut == 0:
        return toks, []
    before = toks[:cut]
    while before and ends_with_cue(before, cues):  # drop the cue itself
        for cue in cues:
            if tuple(t.text for t in before[-len(cue) :]) == cue:
                before = before[: -len(cue)]
                break
    return toks[cut:], before


def _corrected(
    read: Callable[[list[Token]], Extraction | None], text: str, cues: tuple[tuple[str, ...], ...]
) -> Extraction | None:
    """Read the answer after the last correction; the earlier value (incomplete) if nothing follows."""
    after, before = _answer(text, cues)
    if after or not before:
        return read(after)
    earlier = read(before)
    if earlier is None:
        return None
    return Extraction(earlier.value, False, earlier.confidence / 2, earlier.span)


def _span(toks: list[Token]) -> tuple[int, int]:
    return (toks[0].start, toks[-1].end) if toks else (0, 0)


# --- digits and phone numbers -------------------------------------------------------------------


def _pick_run(runs: list[NumberRun], digits: int | None) -> NumberRun | None:
    if not runs:
        return None
    if digits is not None:
        exact = [r for r in runs if len(r.digits) == digits]
        if exact:
            return exact[-1]
    return max(reversed(runs), key=lambda r: len(r.digits))  # longest; the last of equals


# How a neural recogniser writes digit words it half heard, between numerals ("0 to 0, 8" for "oh two
# oh eight") and before a number whose first digit is a zero ("It's a 1 8 4 1..." for "it's oh one
# eight four one"): read as the digits they stand for, only where the answer needs that digit.
HOMOPHONE_DIGITS = {"to": "2", "too": "2", "for": "4"}
LEADING_ZERO_WORDS = {"a", "o", "oh", "so", "go", "over", "all", "the"}


def _homophones(toks: list[Token]) -> list[Token]:
    """'to'/'too'/'for' between two digits written as numerals, or after "double"/"triple" ("four
    double zero double to one"), read as the digit they sound like. Whisper writes a spoken "double"
    as the letter it sounds like, W ("double-u"): in a digits answer a W right before a numeral is
    that "double" ("6 W 6" and "W6279W46" for "six double six", "double six two seven nine...")."""
    out = list(toks)
    for i in range(len(toks)):
        following = i + 1 < len(toks) and toks[i + 1].text.isdigit()
        if toks[i].text == "w" and following:
            out[i] = Token("double", toks[i].start, toks[i].end)
            continue
        digit = HOMOPHONE_DIGITS.get(toks[i].text)
        if not digit or i == 0:
            continue
        if (toks[i - 1].text.isdigit() and following) or toks[i - 1].text in ("double", "triple"):
            out[i] = Token(digit, toks[i].start, toks[i].end)
    return out


def _without_restart(value: str, digits: int) -> str | None:
    """``value`` with a restarted beginning taken out, when that makes it ``digits`` long: "0703207032
    549356" (the caller said "oh seven oh three two" twice) is "07032549356". A group of three digits
    or more: a digit said twice is more often a double in the number than a restart."""
    extra = len(value) - digits
    if 3 <= extra <= digits and value[:extra] == value[extra : 2 * extra]:
        return value[extra:]
    return None


def _read_digits(toks: list[Token], digits: int | None) -> Extraction | None:
    toks = _homophones(toks)
    runs = number_runs(toks)
    run = _pick_run(runs, digits)
    if run is None:
        return None
    value, span = run.digits, _span(toks[run.start : run.end])
    if (
        digits is not None
        and len(value) == digits - 1
        and run.start > 0
        and toks[run.start - 1].text in LEADING_ZERO_WORDS
        and toks[run.start].text.isdigit()
    ):  # a leading "oh" written as a word
        value, span = "0" + value, _span(toks[run.start - 1 : run.end])
    compound = any(
        t.text in SCALES or NUMBER_WORDS.get(t.text, 0) >= 10 for t in toks[run.start : run.end]
    )  # "forty two" (42 or 402?) is vaguer than "four two"
    confidence = 0.8 if compound else 0.9
    if digits is not None and len(value) < digits and len(runs) > 1:
        joined = "".join(r.digits for r in runs)  # "four two seven and then one"
        if len(joined) == digits:
            value, span, confidence = joined, _span(toks[runs[0].start : runs[-1].end]), 0.7
    if digits is not None and (restarted := _without_restart(value, digits)) is not None:
        value, confidence = restarted, 0.7
    complete = not run.pending and (digits is None or len(value) == digits)
    if digits is not None and len(value) > digits:
        confidence *= 0.5
    return Extraction(value, complete, confidence, span)


def extract_digits(
    text: str,
    *,
    options: tuple[str, ...] = (),
    digits: int | None = None,
    reference: datetime | date | None = None,
) -> Extraction | None:
    """Account / policy / card numbers: 'four two double seven oh' -> '42770', 'forty two' -> '42'."""
    return _cached("digits", text, options, digits, reference)


def _digits(
    text: str, options: tuple[str, ...], digits: int | None, reference: datetime | None
) -> Extraction | None:
    return _corrected(lambda toks: _read_digits(toks, digits), text, CORRECTION_CUES)


def _phone(
    text: str, options: tuple[str, ...], digits: int | None, reference: datetime | None
) -> Extraction | None:
    def read(toks: list[Token]) -> Extraction | None:
        found = _read_digits(toks, digits)
        if found is None:
            return None
        number = str(found.value)
        start = next(i for i, t in enumerate(toks) if t.start >= found.span[0])
        plus = start > 0 and toks[start - 1].text == "plus"
        if plus:
            number = "+" + number
        count = len(number.lstrip("+"))
        if digits is not None:
            complete = found.complete
        elif plus:
            complete = 11 <= count <= 13
        else:
            complete = count in (10, 11)  # UK national (0...) and US numbers
        span = (toks[start - 1].start if plus else found.span[0], found.span[1])
        return Extraction(number, complete and found.complete, found.confidence, span)

    return _corrected(read, text, CORRECTION_CUES)


def extract_phone(
    text: str,
    *,
    options: tuple[str, ...] = (),
    digits: int | None = None,
    reference: datetime | date | None = None,
) -> Extraction | None:
    """Phone numbers: 'oh seven seven double oh nine...' -> '07700900...', 'plus four four...' -> '+44...'."""
    return _cached("phone", text, options, digits, reference)


# --- spelled words and names --------------------------------------------------------------------

NATO = {
    "alpha": "A", "alfa": "A", "bravo": "B", "charlie": "C", "delta": "D", "echo": "E", "foxtrot": "F",
    "golf": "G", "hotel": "H", "india": "I", "juliet": "J", "juliett": "J", "kilo": "K", "lima": "L",
    "mike": "M", "november": "N", "oscar": "O", "papa": "P", "quebec": "Q", "romeo": "R", "sierra": "S",
    "tango": "T", "uniform": "U", "victor": "V", "whiskey": "W", "whisky": "W", "xray": "X", "yankee": "Y",
    "zulu": "Z",
}  # fmt: skip
LETTER_NAMES = {
    "bee": "B", "cee": "C", "see": "C", "sea": "C", "dee": "D", "ee": "E", "ef": "F", "eff": "F",
    "gee": "G", "aitch": "H", "haitch": "H", "jay": "J", "kay": "K", "el": "L", "ell": "L", "em": "M",
    "en": "N", "pee": "P", "cue": "Q", "queue": "Q", "ar": "R", "are": "R", "ess": "S", "tee": "T",
    "tea": "T", "you": "U", "yu": "U", "vee": "V", "ex": "X", "why": "Y", "wye": "Y", "zed": "Z", "zee": "Z",
}  # fmt: skip
COMMON_WORDS = {"see", "sea", "are", "you", "why", "tea", "queue", "ex"}  # never at a run's edge
AS_IN = (("as", "in"), ("for",), ("like",), ("as",))


@dataclass(frozen=True, slots=True)
class _Spelling:
    letters: str
    start: int  # token indices, end exclusive
    end: int
    pending: bool  # ends in "double" or "S as in" / "S for": the next word belongs to it
    confirmed: bool  # every letter is a NATO word or came with "as in"


def _letter(toks: list[Token], i: int) -> tuple[str, bool, bool] | None:
    """(letter, unambiguous, nato) for the token at ``i``."""
    word = toks[i].text
    if word == "x" and i + 1 < len(toks) and toks[i + 1].text == "ray":
        return "X", True, True
    if len(word) == 1 and word.isalpha():
        return word.upper(), True, False
    if word in NATO:
        return NATO[word], True, True
    if word in LETTER_NAMES:
        return LETTER_NAMES[word], False, False
    return None


def _spellings(toks: list[Token]) -> list[_Spelling]:
    runs: list[_Spelling] = []
    i = 0
    while i < len(toks):
        letters: list[tuple[str, bool, bool, int]] = []  # letter, unambiguous, confirmed, token index
        start, pending = i, False
        while i < len(toks):
            word = toks[i].text
            repeat = 1
            if word == "double" and i + 1 < len(toks) and toks[i + 1].text in ("you", "u"):
                letters.append(("W", True, False, i))
                i += 2
                continue
            if word in MULTIPLIERS:
                if i + 1 == len(toks):
                    pending = True
                    i += 1
                    break
                repeat, i = MULTIPLIERS[word], i + 1
            found = _letter(toks, i)
            if found is None:
                break
            letter, unambiguous, nato = found
            i += 2 if toks[i].text == "x" and nato else 1
            confirmed = nato
            for phrase in AS_IN:  # "S as in Sam", "M for Mike"
                if tuple(t.text for t in toks[i : i + len(phrase)]) == phrase:
                    if i + len(phrase) == len(toks):
                        pending, i = True, i + len(phrase)
                    else:
                        example = toks[i + len(phrase)].text
                        confirmed = example[:1].upper() == letter
                        i += len(phrase) + 1
                        unambiguous = unambiguous or confirmed
                    break
            letters.extend([(letter, unambiguous, confirmed, i - 1)] * repeat)
            if pending:
                break
        while letters and not letters[0][1] and toks[letters[0][3]].text in COMMON_WORDS:
            letters.pop(0)
        while letters and not letters[-1][1] and toks[letters[-1][3]].text in COMMON_WORDS and not pending:
            letters.pop()
        if sum(u for _, u, _, _ in letters) >= 2 or (pending and letters):
            runs.append(
                _Spelling(
                    "".join(letter for letter, *_ in letters),
                    start,
                    max(i, start + 1),
                    pending,
                    all(c for _, _, c, _ in letters),
                )
            )
        i = max(i, start + 1)
    return runs


# Letters whose names rhyme, which recognisers confuse on a telephone line: the "E-set" (bee, cee, dee,
# ee, gee, pee, tee, vee, zee), the "A-set" (ay, aitch, jay, kay) and the "EH-set" (ef, el, em, en, ess,
# ex). Two spellings that differ only within these sets sound alike; I and Y, or A and E, do not (SMITH
# and SMYTH, GRAY and GREY are different names).
RHYMING_LETTERS = ("BCDEGPTVZ", "AHJK", "FLMNSX")
_RHYME = {letter: i for i, group in enumerate(RHYMING_LETTERS) for letter in group}


def _sounds_like(letters: str, word: str) -> bool:
    """Whether ``letters`` are how a recogniser may hear ``word`` spelled: one letter left out ("JONS"
    of "JONES", most often a doubled one), or letters swapped for ones that rhyme with them ("BLARK" of
    "CLARK"; two in a word of six letters or more)."""
    if len(word) == len(letters) + 1:
        return any(word[:i] + word[i + 1 :] == letters for i in range(len(word)))
    if len(word) != len(letters) or len(word) < 4:
        return False
    swapped = [(a, b) for a, b in zip(letters, word, strict=True) if a != b]
    return 0 < len(swapped) <= (2 if len(word) >= 6 else 1) and all(
        a in _RHYME and _RHYME.get(b) == _RHYME[a] for a, b in swapped
    )


def _said_before(toks: list[Token], run: _Spelling) -> str | None:
    """The word the caller said before spelling it, when the spelling sounds like that word (a letter
    short, or with letters that rhyme: :func:`_sounds_like`): "Jones, J-O-N-S", "Clark, B-L-A-R-K"."""
    for tok in reversed(toks[: run.start]):
        word = tok.text.upper()
        if len(word) >= 3 and word.isalpha() and _sounds_like(run.letters, word):
            return word
    return None


def _without_restart_letters(letters: str) -> str:
    """``letters`` with a restarted beginning taken out: "ROBROBINSON" (the caller began again after
    R-O-B) is "ROBINSON". Three letters or more repeated: a doubled letter or pair is part of a name."""
    for length in range(len(letters) // 2, 2, -1):
        if letters[:length] == letters[length : 2 * length]:
            return letters[length:]
    return letters


# Spelled names the letters are snapped to when they spell no known name: surnames this common
# (1990 US Census rank; the first 10,000 cover about 80 % of people).
COMMON_SURNAME_RANK = 10_000


def nearest_surname(letters: str) -> str | None:
    """The common surname a letter away from ``letters`` ("TAYLLR" -> TAYLOR), when ``letters``
    themselves spell no common one; of several that near, the most common when it is ten times as
    common as the next (JONES, not JONAS, for "JONYS"); else None."""
    common = namelists.common_last_names(COMMON_SURNAME_RANK)
    heard = letters.lower()
    if len(heard) < 4 or heard in common:
        return None
    found = process.extract(heard, common.keys(), scorer=Levenshtein.distance, score_cutoff=1, limit=None)
    near = sorted((common[name], name) for name, _, _ in found)
    if len(near) == 1 or (len(near) > 1 and near[0][0] * 10 < near[1][0]):
        return near[0][1].upper()
    return None


def _named_without_spelling(toks: list[Token]) -> Extraction | None:
    """An answer that names a common surname without spelling it ("It's Lewis."): the name, less
    sure."""
    rest = strip_carrier([t.text for t in toks])
    if len(rest) == 1 and rest[0] in namelists.common_last_names(COMMON_SURNAME_RANK):
        return Extraction(rest[0].upper(), True, 0.6, _span(toks[-1:]))
    return None


def _read_spelled(toks: list[Token]) -> Extraction | None:
    runs = _spellings(toks)
    if not runs:
        return None
    run = max(reversed(runs), key=lambda r: len(r.letters))
    if run.letters.lower() not in namelists.common_last_names(COMMON_SURNAME_RANK):
        run = replace(run, letters=_without_restart_letters(run.letters))
    complete = len(run.letters) >= 2 and not run.pending
    span = _span(toks[run.start : run.end])
    if complete and (word := _said_before(toks, run)) is not None:
        return Extraction(word, True, 0.8, span)
    if complete and not run.confirmed and (name := nearest_surname(run.letters)) is not None:
        return Extraction(name, True, 0.6, span)
    return Extraction(run.letters, complete, 0.95 if run.confirmed else 0.85, span)


def _spelled(
    text: str, options: tuple[str, ...], digits: int | None, reference: datetime | None
) -> Extraction | None:
    def read(toks: list[Token]) -> Extraction | None:
        return _read_spelled(toks) or _named_without_spelling(toks)

    return _corrected(read, text, CORRECTION_CUES)


def extract_spelled(
    text: str,
    *,
    options: tuple[str, ...] = (),
    digits: int | None = None,
    reference: datetime | date | None = None,
) -> Extraction | None:
    """Spelled words: 'S M I T H', 'S as in Sam, M as in Mike', 'sierra mike india...', 'double S'."""
    return _cached("spelled", text, options, digits, reference)


def _match_option(candidate: str, options: tuple[str, ...], cutoff: float = 80) -> tuple[str, float] | None:
    """The option closest to ``candidate`` as a whole (plain edit ratio: a partial-match scorer took
    "me" of "let me take your full name" for "James Cooper")."""
    match = process.extractOne(
        candidate, options, scorer=fuzz.ratio, processor=str.lower, score_cutoff=cutoff
    )
    return (match[0], match[1] / 100) if match else None


def _best_window(
    body: list[tuple[int, str]], options: tuple[str, ...], cutoff: float = 80
) -> tuple[str, float, int, int] | None:
    """The option best matching some run of words: (option, score 0..1, first and last token index)."""
    longest = max(len(tokens(o)) for o in options) + 1
    best: tuple[str, float, int, int] | None = None
    for size in range(1, longest + 1):  # "it is smith please" -> "Smith"
        for k in range(len(body) - size + 1):
            chunk = body[k : k + size]
            match = _match_option(" ".join(w for _, w in chunk), options, cutoff)
            if match and (best is None or match[1] > best[1]):
                best = (match[0], match[1], chunk[0][0], chunk[-1][0])
    return best


def _read_name(toks: list[Token], options: tuple[str, ...]) -> Extraction | None:
    spelled = _read_spelled(toks)
    if spelled is not None and len(str(spelled.value)) >= 2:
        name = str(spelled.value).title()
        if len(name) < 3 and not options and not namelists.is_name(name):
            return None  # "M. M" (whisper, for "Emma"): two letters that are no name say none
        if options:
            match = _match_option(name, options, cutoff=85)
            if match is None:
                return None
            name = match[0]
        return Extraction(name, spelled.complete, spelled.confidence, spelled.span)
    texts = [t.text for t in toks]
    rest = strip_carrier(texts, partial_tail=True)
    offset = len(texts) - len(rest)
    body = [
        (i + offset, w)
        for i, w in enumerate(rest)
        if w not in FILLERS and w not in ("please", "thanks", "thank", "you") and not w.isdigit()
    ]
    if not body:
        return None
    if options:
        best = _best_window(body, options)
        if best is None:
            return None
        return Extraction(best[0], True, best[1] * 0.95, (toks[best[2]].start, toks[best[3]].end))
    candidates = [(i, w) for i, w in body if w not in namelists.NOT_NAMES]
    if not candidates or len(candidates) > 3 or len(candidates) < len(body):
        return None  # other words around them: a sentence ("the weather is nice"), not a name
    if all(len(w) == 1 for _, w in candidates):
        return None  # initials alone ("M.", whisper for "Emma") name nobody
    # a name said twice is said once ("James. James."): the repeat is no second name
    candidates = [c for k, c in enumerate(candidates) if k == 0 or c[1] != candidates[k - 1][1]]
    known = sum(namelists.is_name(w) for _, w in candidates)
    value = " ".join(w.title() if "'" not in w else w.title().replace("'S", "'s") for _, w in candidates)
    confidence = 0.9 if known == len(candidates) else 0.65 if known else 0.45
    return Extraction(value, True, confidence, (toks[candidates[0][0]].start, toks[candidates[-1][0]].end))


def _name(
    text: str, options: tuple[str, ...], digits: int | None, reference: datetime | None
) -> Extraction | None:
    return _corrected(lambda toks: _read_name(toks, options), text, CORRECTION_CUES)


def extract_name(
    text: str,
    *,
    options: tuple[str, ...] = (),
    digits: int | None = None,
    reference: datetime | date | None = None,
) -> Extraction | None:
    """A first or last name: 'my last name is Smith', 'Smith, S M I T H', or the closest of ``options``.

    Without options, words of the names list score 0.9 and unknown words 0.45 (still a value: the
    list is US Census names, callers' names are wider).
    """
    return _cached("name", text, options, digits, reference)


# --- yes / no -----------------------------------------------------------------------------------

YES_NO_PHRASES: dict[tuple[str, ...], tuple[bool | None, float]] = {
    phrase: answer
    for answers, answer in (
        ("i'm not sure|i am not sure|not sure|i don't know|i do not know|dunno|no idea|maybe|perhaps|"
         "possibly|i can't remember|i cannot remember|can't remember|i'm not certain|not certain|"
         "it depends|depends", (None, 0.0)),
        ("yes|yeah|yep|yup|yea|aye|correct|right|that's right|that is right|sure|absolutely|definitely|"
         "certainly|of course|indeed|affirmative|exactly|please do|go ahead|ok|okay|alright|all right|"
         "that's it|that's correct|that is correct|yes please|sounds good|true|uh huh", (True, 0.95)),
        ("i think so|i guess so|i guess|i believe so|probably|i suppose so|i suppose|kind of|sort of|"
         "more or less|mostly|i think that's right|should be|i hope so", (True, 0.6)),
        ("no|nope|nah|no thanks|no thank you|incorrect|wrong|negative|not at all|never|don't|do not|"
         "that's wrong|that is wrong|that's not right|that is not right|not right|not correct|"
         "that's not correct|absolutely not|definitely not|certainly not|of course not|not that",
         (False, 0.95)),
        ("not really|i don't think so|i do not think so|probably not|not exactly|i guess not|i hope not|"
         "i don't believe so|not quite|yeah no|not sure that's right", (False, 0.65)),
    )
    for phrase in (tuple(p.split()) for p in answers.split("|"))
}  # fmt: skip
_LONGEST_YES_NO = max(len(p) for p in YES_NO_PHRASES)


def _read_yes_no(toks: list[Token]) -> Extraction | None:
    texts = [t.text for t in toks]
    found: list[tuple[bool | None, float, int, int]] = []
    i = 0
    while i < len(texts):
        for size in range(min(_LONGEST_YES_NO, len(texts) - i), 0, -1):
            answer = YES_NO_PHRASES.get(tuple(texts[i : i + size]))
            if answer is not None:
                found.append((*answer, i, i + size))
                i += size
                break
        else:
            i += 1
    if not found or any(value is None for value, *_ in found):
        return None  # nothing said, or "I'm not sure": not an answer
    values = {value for value, *_ in found}
    if len(values) > 1:
        return None  # "yes no": contradictory
    confidence = min(c for _, c, _, _ in found)
    if len(found) > 1:
        confidence = min(0.99, confidence + 0.05)  # "yeah sure", "no no"
    return Extraction(found[0][0], True, confidence, (toks[found[0][2]].start, toks[found[-1][3] - 1].end))


def _yes_no(
    text: str, options: tuple[str, ...], digits: int | None, reference: datetime | None
) -> Extraction | None:
    return _corrected(_read_yes_no, text, YES_NO_CUES)


def extract_yes_no(
    text: str,
    *,
    options: tuple[str, ...] = (),
    digits: int | None = None,
    reference: datetime | date | None = None,
) -> Extraction | None:
    """True/False with hedges: 'yeah sure' (0.99), 'I think so' (0.6), 'not really' (False, 0.65);
    'I'm not sure' and contradictions give None."""
    return _cached("yes_no", text, options, digits, reference)


# --- dates and times ----------------------------------------------------------------------------

ORDINAL_SUFFIX = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd", 31: "st"}
RELATIVE_DAYS = {"today", "tomorrow", "yesterday", "tonight"}
DATE_WORDS = {
    *MONTHS, *WEEKDAYS, *RELATIVE_DAYS, "next", "this", "last", "the", "of", "on", "at", "in", "day", "days",
    "week", "weeks", "month", "months", "year", "years", "after", "before", "ago", "from", "now", "am",
    "pm", "a", "and", "fortnight",
}  # fmt: skip
DAY_PERIODS = {"morning": "am", "afternoon": "pm", "evening": "pm", "night": "pm"}
PENDING_DATE_WORDS = {"next", "this", "last", "the", "of", "on", "at", "in", "half", "quarter", "past", "to"}
_NUMERAL = re.compile(r"^\d+$")
_ORDINAL = re.compile(r"^(\d{1,2})(st|nd|rd|th)$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")
_COMPACT_CLOCK = re.compile(r"^(1?\d|2[0-3])([0-5]\d)$")  # "845", "1030": hours and minutes run together

_Word = tuple[str, int, int]  # a normalised word and the first and last source token it came from


def _ordinal(n: int) -> str:
    return f"{n}{ORDINAL_SUFFIX.get(n, 'th')}"


def _clock_words(items: list[_Word]) -> list[_Word]:
    """Times as clock numerals: 'half past 2' -> '2:30', 'quarter to 3' -> '2:45', 'half ten' -> '10:30',
    'noon' -> '12:00'."""
    out: list[_Word] = []
    i = 0
    while i < len(items):
        word, first, last = items[i]
        nxt = items[i + 1][0] if i + 1 < len(items) else ""
        after = items[i + 2][0] if i + 2 < len(items) else ""
        # "have past": how a recogniser often writes a quick "half past".
        minutes = {"half": 30, "quarter": 15, "have": 30 if nxt == "past" else None}.get(word)
        if minutes is None and _NUMERAL.match(word) and int(word) < 60:
            minutes = int(word)
        if word == "half" and _NUMERAL.match(nxt) and 0 < int(nxt) <= 12:  # British "half ten" = 10:30
            out.append((f"{int(nxt)}:30", first, items[i + 1][2]))
            i += 2
        elif minutes is not None and nxt in ("past", "to") and _NUMERAL.match(after) and 0 < int(after) <= 24:
            hour = int(after)
            clock = (
                f"{hour}:{minutes:02d}" if nxt == "past" else f"{(hour - 1) % 24 or 12}:{60 - minutes:02d}"
            )
            out.append((clock, first, items[i + 2][2]))
            i += 3
        elif _NUMERAL.match(word) and nxt in ("o'clock", "oclock"):
            out.append((f"{int(word)}:00", first, items[i + 1][2]))
            i += 2
        else:
            out.append(
                ({"noon": "12:00", "midday": "12:00", "midnight": "0:00"}.get(word, word), first, last)
            )
            i += 1
    return out


AM_PM = ("am", "pm", "a", "p")


def _normalise_dates(toks: list[Token], clock: bool = False) -> list[_Word]:
    """Spoken date/time words in dateparser's forms, each with the source tokens it came from.

    'the twenty first of may nineteen eighty at half past two' -> the 21st of may 1980 at 2:30.
    ``clock``: the answer is a time of day, so an hour and minutes ("two fifty", "2:50", "nine oh
    five") are a clock time without "at" before them.
    """
    out: list[_Word] = []
    runs = {r.start: r for r in number_runs(toks, allow_fillers=False)}
    texts = [t.text for t in toks]
    i = 0
    while i < len(toks):
        word = texts[i]
        nxt = texts[i + 1] if i + 1 < len(texts) else ""
        if word in ("twenty", "thirty") and nxt in ORDINALS and ORDINALS[nxt] < 10:  # "twenty first"
            out.append((_ordinal(NUMBER_WORDS[word] + ORDINALS[nxt]), i, i + 1))
            i += 2
        elif word.isdigit() and int(word) <= 31 and len(nxt) == 4 and nxt.isdigit():
            out.append((word, i, i))  # written "March 19, 1961": a day, then a year (not "191961")
            i += 1
        elif word in ORDINALS and not (word == "second" and i and texts[i - 1] in ("a", "one", "just")):
            out.append((_ordinal(ORDINALS[word]), i, i))  # ("hang on a second": not the 2nd)
            i += 1
        elif i in runs:
            run = runs[i]
            chunks, prev = run.chunks, texts[i - 1] if i else ""
            following = texts[run.end] if run.end < len(texts) else ""
            if len(chunks) == 1 and following in ("st", "nd", "rd", "th") and chunks[0] <= 31:  # "3rd"
                out.append((_ordinal(chunks[0]), i, run.end))
                i = run.end + 1
                continue
            if (
                len(chunks) == 2
                and chunks[0] <= 12
                and 10 <= chunks[1] < 60
                and (clock or prev == "at" or following in AM_PM or chunks[1] in (15, 30, 45))
            ):
                out.append((f"{chunks[0]}:{chunks[1]:02d}", i, run.end - 1))  # "three thirty"
            elif clock and len(chunks) == 2 and chunks[0] <= 23 and len(texts[i + 1]) == 2 and chunks[1] < 60:
                out.append((f"{chunks[0]}:{chunks[1]:02d}", i, run.end - 1))  # written "14:00", "2:05"
            elif (
                len(chunks) == 3
                and chunks[0] <= 12
                and texts[i + 1] in ("oh", "o", "0")
                and (clock or prev == "at")
            ):
                out.append((f"{chunks[0]}:0{chunks[2]}", i, run.end - 1))  # "at nine oh five"
            else:
                out.append((run.digits, i, run.end - 1))
            i = run.end
        elif word in ("a", "p") and nxt == "m":
            out.append((word + "m", i, i + 1))
            i += 2
        elif word in ("in", "at") and nxt == "the" and i + 2 < len(texts) and texts[i + 2] in DAY_PERIODS:
            out.append((DAY_PERIODS[texts[i + 2]], i, i + 2))
            i += 3
        elif word in ("coming", "um", "uh", "er", "erm"):
            i += 1
        else:
            out.append((word, i, i))
            i += 1
    return _clock_words(out)


def _is_anchor(word: str) -> bool:
    return (
        word in MONTHS
        or word in WEEKDAYS
        or word in RELATIVE_DAYS
        or word in ("am", "pm", "fortnight")
        or bool(_ORDINAL.match(word) or _CLOCK.match(word))
    )


def _date_phrase(toks: list[Token]) -> tuple[list[str], tuple[int, int]] | None:
    """The last run of date/time words in a transcript (a phrase for dateparser), with its span."""
    best: list[_Word] = []
    run: list[_Word] = []
    for item in [*_normalise_dates(toks), ("", -1, -1)]:
        word = item[0]
        if word and (word in DATE_WORDS or _NUMERAL.match(word) or _is_anchor(word)):
            run.append(item)
            continue
        while run and run[-1][0] in (
            "the",
            "of",
            "on",
            "at",
            "in",
            "a",
            "and",
            "this",
            "next",
            "last",
            "from",
        ):
            run.pop()
        while len(run) > 1 and run[0][0] in ("and", "a", "from", "at"):
            run.pop(0)
        if any(_is_anchor(w) for w, _, _ in run) or (
            len(run) >= 3 and run[0][0] == "in" and run[-1][0] in ("days", "weeks", "day", "week")
        ):
            best = run  # the last date phrase: a correction or a refinement comes later
        run = []
    if not best:
        return None
    return [w for w, _, _ in best], (toks[best[0][1]].start, toks[best[-1][2]].end)


@lru_cache(maxsize=64)
def _date_parser(reference: datetime) -> dateparser.date.DateDataParser:
    return dateparser.date.DateDataParser(
        languages=["en"],
        settings={"PREFER_DATES_FROM": "future", "RELATIVE_BASE": reference, "RETURN_TIME_AS_PERIOD": True},
    )


def _reference(reference: datetime | date | None) -> datetime:
    if reference is None:
        return datetime.now().replace(second=0, microsecond=0)
    if isinstance(reference, datetime):
        return reference
    return datetime.combine(reference, time(9, 0))


@lru_cache(maxsize=1024)
def _parse(phrase: str, reference: datetime) -> datetime | None:
    """dateparser on a normalised phrase (cached: successive partials often share their date phrase)."""
    return _date_parser(reference).get_date_data(phrase).date_obj


def _without_restarts(words_: list[str]) -> list[str]:
    """A date phrase with a caller's restarts taken out: 'next next sunday' -> 'next sunday', 'the 11th
    the 11th of july' -> 'the 11th of july' (an immediate repeat of up to four words is said once)."""
    out = list(words_)
    size = 1
    while size <= 4:
        for i in range(len(out) - 2 * size + 1):
            if out[i : i + size] == out[i + size : i + 2 * size]:
                del out[i : i + size]
                break
        else:
            size += 1
    return out


def _read_date(toks: list[Token], reference: datetime) -> Extraction | None:
    found = _date_phrase(toks)
    if found is None:
        return None
    words_, span = found
    words_ = _without_restarts(words_)
    pending = toks[-1].text in PENDING_DATE_WORDS  # "the third of", "next": more is coming
    day_only = [w for w in words_ if w not in ("the", "on")]
    if len(day_only) == 1 and _ORDINAL.match(day_only[0]):  # "the 3rd": the next 3rd of a month
        day = int(day_only[0][:-2])
        candidate = reference.date()
        for _ in range(62):
            candidate += timedelta(days=1)
            if candidate.day == day:
                return Extraction(candidate, not pending, 0.7, span)
        return None
    moment = _parse(" ".join(words_), reference)
    if moment is None:
        return None
    has_day = (
        any(w in WEEKDAYS or w in RELATIVE_DAYS or _ORDINAL.match(w) for w in words_)
        or (any(w in MONTHS for w in words_) and any(_NUMERAL.match(w) and int(w) <= 31 for w in words_))
        or (words_[0] == "in" and words_[-1] in ("day", "days", "week", "weeks", "fortnight"))
    )
    relative = any(w in WEEKDAYS or w in RELATIVE_DAYS or w in ("next", "in") for w in words_)
    days = {w for w in words_ if _ORDINAL.match(w)}
    if len(days) > 1:  # "the seventh of march monday twentieth": two days named, neither is sure
        return Extraction(moment.date(), False, 0.3, span)
    return Extraction(moment.date(), has_day and not pending, 0.8 if relative else 0.9, span)


_NUMERIC_DATE = re.compile(r"\b(\d{1,2})/(\d{1,2})(?:/(\d{4}|\d{2}))?\b|\b(\d{4})-(\d{2})-(\d{2})\b")


def _numeric_date(text: str, reference: datetime) -> Extraction | None:
    """The last written numeric date, as a recogniser writes them: '3/14' (US month first, unless
    the first number cannot be a month), '3/14/1980', '2025-03-14'. Without a year: the next one."""
    found = list(_NUMERIC_DATE.finditer(text))
    if not found:
        return None
    match = found[-1]
    if match.group(4):
        year, month, day = int(match.group(4)), int(match.group(5)), int(match.group(6))
    else:
        month, day = int(match.group(1)), int(match.group(2))
        if month > 12 >= day:
            month, day = day, month
        written = match.group(3)
        if written is None:
            year = reference.year
            with contextlib.suppress(ValueError):
                year += date(year, month, day) < reference.date()
        else:
            year = int(written)
            if len(written) == 2:  # '3/14/80': the latest such year not in the future
                year += 2000 if 2000 + year <= reference.year else 1900
    try:
        return Extraction(date(year, month, day), True, 0.9, match.span())
    except ValueError:
        return None


def _date(
    text: str, options: tuple[str, ...], digits: int | None, reference: datetime | None
) -> Extraction | None:
    moment = _reference(reference)
    spoken = _corrected(lambda toks: _read_date(toks, moment), text, CORRECTION_CUES)
    numeric = _numeric_date(text, moment)
    if numeric is None or (spoken is not None and spoken.span[0] > numeric.span[0]):
        return spoken
    return numeric


def extract_date(
    text: str,
    *,
    options: tuple[str, ...] = (),
    digits: int | None = None,
    reference: datetime | date | None = None,
) -> Extraction | None:
    """A calendar date (``datetime.date``): 'next Tuesday', 'the 3rd of May', 'the twenty first of
    may nineteen eighty', 'tomorrow at half past two'; complete when a day is named."""
    return _cached("date", text, options, digits, _reference(reference))


def _read_time(toks: list[Token], reference: datetime) -> Extraction | None:
    """The last clock time said; the words around it are normalised as for dates (no date needed)."""
    normalised = _normalise_dates(toks, clock=True)
    words_ = [w for w, _, _ in normalised]
    alone = sum(bool(_NUMERAL.match(w) or _CLOCK.match(w)) for w in words_) == 1  # "can we say four"
    at = None
    for k, word in enumerate(words_):
        marked = words_[k + 1 : k + 2] in (["am"], ["pm"])
        plain = _NUMERAL.match(word) and (int(word) <= 24 or _COMPACT_CLOCK.match(word))
        if _CLOCK.match(word) or (
            plain and (marked or alone or (k and words_[k - 1] in ("at", "around", "about", "by")))
        ):
            at = k  # the last time said wins
    if at is None:
        return None
    clock = words_[at]
    compact = _COMPACT_CLOCK.match(clock)
    if compact:  # "845 am", "at 1030": a neural recogniser's "eight forty five"
        clock = f"{compact.group(1)}:{compact.group(2)}"
    hour, minute = (int(x) for x in clock.split(":")) if ":" in clock else (int(clock), 0)
    if hour > 24 or minute > 59:
        return None
    end = at + 1 if at + 1 < len(words_) and words_[at + 1] in ("am", "pm") else at
    marker = words_[end] if end > at else None
    confidence = 0.9
    if marker is None and hour == 12:
        marker = "pm"  # "twelve", "noon"
    elif marker is None and 1 <= hour < 12:
        # No am/pm: contact-centre hours — 1 to 6 means the afternoon, 7 to 11 the morning.
        marker, confidence = ("pm" if hour <= 6 else "am"), 0.7
    if marker is not None and hour <= 12:
        hour = hour % 12 + (12 if marker == "pm" else 0)
    pending = toks[-1].text in PENDING_DATE_WORDS
    span = (toks[normalised[at][1]].start, toks[normalised[end][2]].end)
    return Extraction(time(hour % 24, minute), not pending, confidence, span)


def _time(
    text: str, options: tuple[str, ...], digits: int | None, reference: datetime | None
) -> Extraction | None:
    return _corrected(lambda toks: _read_time(toks, _reference(reference)), text, CORRECTION_CUES)


def extract_time(
    text: str,
    *,
    options: tuple[str, ...] = (),
    digits: int | None = None,
    reference: datetime | date | None = None,
) -> Extraction | None:
    """A time of day (``datetime.time``): '3 pm', 'half past two', 'at ten thirty', 'noon'."""
    return _cached("time", text, options, digits, _reference(reference))


# --- amounts ------------------------------------------------------------------------------------

CURRENCY_WORDS = {
    "pound": "GBP", "pounds": "GBP", "quid": "GBP", "sterling": "GBP", "dollar": "USD", "dollars": "USD",
    "bucks": "USD", "buck": "USD", "euro": "EUR", "euros": "EUR",
}  # fmt: skip
MINOR_WORDS = {"cent": "USD", "cents": "USD", "pence": "GBP", "penny": "GBP", "p": "GBP"}
SYMBOLS = {"£": "GBP", "$": "USD", "€": "EUR"}
_WRITTEN_AMOUNT = re.compile(r"([£$€])\s?(\d[\d,]*(?:\.\d{1,2})?)|(\d[\d,]*\.\d{1,2})")


@dataclass(frozen=True, slots=True)
class _Number:
    value: Decimal
    start: int  # token indices, end exclusive
    end: int
    cardinal: bool  # one spoken number ("two hundred and fifty"), not digit by digit ("two five oh")


def _numbers(toks: list[Token]) -> list[_Number]:
    """Number runs with decimals joined: 'three hundred point five' -> 300.5."""
    texts = [t.text for t in toks]
    out: list[_Number] = []
    for run in number_runs(toks, allow_fillers=False):
        cardinal = len(run.chunks) == 1
        if out and run.start == out[-1].end + 1 and texts[out[-1].end] == "point":
            whole = out.pop()
            out.append(
                _Number(Decimal(f"{int(whole.value)}.{run.digits}"), whole.start, run.end, whole.cardinal)
            )
        else:
            out.append(_Number(Decimal(run.digits), run.start, run.end, cardinal))
    return out


def _written_amount(toks: list[Token], text: str) -> Extraction | None:
    """'£250', '$1,250.50', '42.50 pounds' as the ASR may write them."""
    before = max((t.end for t in tokens(text) if t.end <= toks[0].start), default=0)
    segment = text[before : toks[-1].end]
    written = list(_WRITTEN_AMOUNT.finditer(segment))
    if not written:
        return None
    match = written[-1]
    number = (match.group(2) or match.group(3)).replace(",", "")
    currency = SYMBOLS.get(match.group(1) or "")
    if currency is None:
        following = [t.text for t in toks if t.start >= before + match.end()][:1]
        currency = CURRENCY_WORDS.get(following[0]) if following else None
    span = (before + match.start(), before + match.end())
    return Extraction(Money(Decimal(number), currency), True, 0.95, span)


def _read_amount(toks: list[Token], text: str) -> Extraction | None:
    if not toks:
        return None
    written = _written_amount(toks, text)
    if written is not None:
        return written
    texts = [t.text for t in toks]
    numbers = _numbers(toks)
    if not numbers:
        return None

    def word_at(i: int) -> str:
        return texts[i] if i < len(texts) else ""

    # The main number: the one before a currency word ("fifty five dollars"), else the last one said.
    main = next((n for n in numbers if word_at(n.end) in CURRENCY_WORDS), None)
    currency = CURRENCY_WORDS[word_at(main.end)] if main else None
    if main is None:
        main = numbers[-1]
    amount, start, end = main.value, main.start, main.end + (1 if currency else 0)
    whole = _round_number_before(numbers, main, texts)
    if whole is not None:  # "500 and 5 pounds", as a neural recogniser writes "five hundred and five"
        amount, start = whole.value + main.value, whole.start
    if currency is None and word_at(main.end) in MINOR_WORDS:  # "thirty pence"
        if main.value >= 100:
            return None
        amount, currency, end = main.value / 100, MINOR_WORDS[word_at(main.end)], main.end + 1
    elif currency is not None:  # "... pounds seventy five", "... dollars and twenty cents"
        at = end + (1 if word_at(end) == "and" else 0)
        minor = next((n for n in numbers if n.start == at), None)
        if minor is not None and minor.value < 100 and minor.value == int(minor.value):
            amount += minor.value / 100
            end = minor.end + (1 if word_at(minor.end) in MINOR_WORDS else 0)
    confidence = 0.9 if main.cardinal else 0.6  # "twelve fifty": 12.50 or 1250?
    pending = texts[-1] in ("and", "point") or (texts[-1] in MULTIPLIERS)
    return Extraction(Money(amount, currency), not pending, confidence, _span(toks[start:end]))


def _round_number_before(numbers: list[_Number], number: _Number, texts: list[str]) -> _Number | None:
    """The round hundreds or thousands just before ``number``, joined to it by "and" ("500 and 5"),
    when ``number`` is less than that round unit; else None."""
    before = next((n for n in numbers if n.end + 1 == number.start and texts[n.end] == "and"), None)
    if before is None or before.value < 100 or before.value != int(before.value):
        return None
    unit = 1000 if before.value % 1000 == 0 else 100 if before.value % 100 == 0 else None
    return before if unit is not None and number.value < unit else None


def _amount(
    text: str, options: tuple[str, ...], digits: int | None, reference: datetime | None
) -> Extraction | None:
    return _corrected(lambda toks: _read_amount(toks, text), text, CORRECTION_CUES)


def extract_amount(
    text: str,
    *,
    options: tuple[str, ...] = (),
    digits: int | None = None,
    reference: datetime | date | None = None,
) -> Extraction | None:
    """Money (:class:`Money`): 'two hundred and fifty pounds', '£250', 'fifty five dollars and twenty
    cents'."""
    return _cached("amount", text, options, digits, reference)


# --- email addresses ----------------------------------------------------------------------------

EMAIL_SYMBOLS = {
    "dot": ".", "point": ".", "period": ".", "underscore": "_", "dash": "-", "hyphen": "-", "minus": "-",
    "plus": "+",
}  # fmt: skip
TLDS = {
    "com", "net", "org", "uk", "us", "io", "edu", "gov", "de", "fr", "ie", "info", "biz", "me", "ca", "au",
    "nl", "es", "it", "eu", "ai", "app", "dev", "nz", "in", "ch", "be", "se", "no", "dk", "at", "pl",
}  # fmt: skip
EMAIL_CARRIER = (
    ("my", "email", "address", "is"), ("my", "email", "is"), ("my", "e", "mail", "is"), ("email", "address"),
    ("it's",), ("it", "is"), ("its",), ("yeah",), ("yes",), ("sure",), ("so",), ("um",), ("uh",),
)  # fmt: skip
_EMAIL = re.compile(r"[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}", re.IGNORECASE)


def _read_email(toks: list[Token], text: str) -> Extraction | None:
    if toks:
        segment = text[toks[0].start : toks[-1].end]
        written = list(_EMAIL.finditer(segment))
        if written:
            match = written[-1]
            value = match.group().lower()
            base = toks[0].start
            return Extraction(
                value, value.rsplit(".", 1)[1] in TLDS, 0.95, (base + match.start(), base + match.end())
            )
    texts = [t.text for t in toks]
    start = 0
    changed = True
    while changed:
        changed = False
        for phrase in EMAIL_CARRIER:
            if tuple(texts[start : start + len(phrase)]) == phrase:
                start += len(phrase)
                changed = True
    ats = [i for i, w in enumerate(texts) if w == "at" and i > start]
    if not ats:
        return None
    at = next(
        (i for i in reversed(ats) if any(w in ("dot", "point", "period") for w in texts[i + 1 :])), ats[-1]
    )
    local = _email_part(texts[start:at])
    domain = _email_part(texts[at + 1 :])
    if not local:
        return None
    value = f"{local}@{domain}"
    complete = bool(re.fullmatch(r"[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}", value)) and (
        domain.rsplit(".", 1)[-1] in TLDS
    )
    return Extraction(value, complete, 0.85, _span(toks[start:]))


def _email_part(texts: list[str]) -> str:
    """Spoken words of an email's local part or domain joined: 'j smith seventy seven' -> 'jsmith77'."""
    toks = [Token(w, 0, 0) for w in texts]
    runs = {r.start: r for r in number_runs(toks, allow_fillers=False)}
    out: list[str] = []
    i = 0
    while i < len(texts):
        word = texts[i]
        if i in runs and word not in ("o", "a"):
            out.append(runs[i].digits)
            i = runs[i].end
            continue
        if word in EMAIL_SYMBOLS:
            out.append(EMAIL_SYMBOLS[word])
        elif word in MULTIPLIERS and i + 1 < len(texts) and len(texts[i + 1]) == 1:
            out.append(texts[i + 1] * MULTIPLIERS[word])
            i += 1
        elif word in NATO:
            out.append(NATO[word].lower())
        elif word not in FILLERS:
            out.append(word.replace("'", ""))
        i += 1
    return "".join(out).strip(".")


def _email(
    text: str, options: tuple[str, ...], digits: int | None, reference: datetime | None
) -> Extraction | None:
    return _corrected(lambda toks: _read_email(toks, text), text, CORRECTION_CUES)


def extract_email(
    text: str,
    *,
    options: tuple[str, ...] = (),
    digits: int | None = None,
    reference: datetime | date | None = None,
) -> Extraction | None:
    """Spoken email addresses: 'john dot smith at example dot com' -> 'john.smith@example.com'."""
    return _cached("email", text, options, digits, reference)


# --- postal addresses ---------------------------------------------------------------------------

_UK_POSTCODE = re.compile(r"([A-Z]{1,2}[0-9][A-Z0-9]?)([0-9][A-Z]{2})$")
_US_ZIP = re.compile(r"^\d{5}$")
ADDRESS_CARRIER = (
    ("my", "address", "is"), ("the", "address", "is"), ("i", "live", "at"), ("we", "live", "at"),
    ("it's", "at"), ("it's",), ("it", "is"), ("its",), ("yeah",), ("yes",), ("so",), ("um",), ("uh",),
)  # fmt: skip
FLAT_WORDS = {"flat", "apartment", "apt", "unit", "suite"}
STREET_TYPES = {
    "street", "st", "road", "rd", "avenue", "ave", "lane", "ln", "drive", "dr", "close", "way", "crescent",
    "place", "court", "gardens", "grove", "terrace", "boulevard", "blvd", "square", "hill", "row", "mews",
    "walk", "parkway", "circle", "highway", "park", "green", "view", "rise", "vale",
}  # fmt: skip


def _postcode(texts: list[str]) -> tuple[str | None, int] | None:
    """A UK postcode spoken at the end ('n w one six x e'): (postcode, index where it starts).

    A postcode still being spoken ('... london s w one') gives (None, its start): not complete yet.
    """
    chars: list[str] = []
    best: tuple[str | None, int] | None = None
    for k in range(len(texts) - 1, max(-1, len(texts) - 10), -1):
        word = texts[k]
        piece = NATO.get(word) or _DIGIT_OR_NONE.get(word)
        if piece is None and len(word) <= 4 and word.isalnum():
            piece = word.upper()
        if not piece:
            break
        chars.insert(0, piece)
        match = _UK_POSTCODE.fullmatch("".join(chars))
        if match:
            best = f"{match.group(1)} {match.group(2)}", k  # the longest: "n w one..." is NW1, not W1
        elif (
            best is None
            and k > 0
            and len(word) == 1
            and k + len(chars) == len(texts)
            and _UK_POSTCODE_START.fullmatch("".join(chars))
            and len(texts[k - 1]) > 1
            and texts[k - 1] not in _DIGIT_OR_NONE
        ):
            best = None, k  # single letters/digits after the town: a postcode on its way
    return best


_UK_POSTCODE_START = re.compile(r"[A-Z]{1,2}([0-9][A-Z0-9]?([0-9][A-Z]{0,2})?)?")
_DIGIT_OR_NONE = {
    "zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip


def _read_address(toks: list[Token]) -> Extraction | None:
    texts = [t.text for t in toks]
    start = 0
    changed = True
    while changed:
        changed = False
        for phrase in ADDRESS_CARRIER:
            if tuple(texts[start : start + len(phrase)]) == phrase:
                start += len(phrase)
                changed = True
    body = texts[start:]
    flat = None
    if len(body) > 2 and body[0] in FLAT_WORDS:  # "flat three, ten downing street": not "310"
        runs = number_runs([Token(w, 0, 0) for w in body[1:2]])
        flat = f"{body[0].title()} {runs[0].digits if runs else body[1].upper()}"
        body = body[2:]
    if not body:
        return None
    postcode = _postcode(body)
    if postcode:
        body = body[: postcode[1]]
    # Numbers as numerals: "twenty two" -> "22", "two two one" -> "221" (house numbers).
    words_: list[str] = []
    runs = {r.start: r for r in number_runs([Token(w, 0, 0) for w in body], allow_fillers=False)}
    i = 0
    while i < len(body):
        if i in runs:
            words_.append(runs[i].digits)
            i = runs[i].end
        else:
            words_.append(body[i])
            i += 1
    merged: list[str] = []
    for word in words_:  # "d c" -> "dc": a spelled US state
        if len(word) == 1 and word.isalpha() and merged and len(merged[-1]) == 1 and merged[-1].isalpha():
            merged[-1] += word
        else:
            merged.append(word)
    address = _tag_address(merged)
    zip_pending = bool(address.town and address.town.split()[-1].isdigit())  # "... dc two oh five"
    if zip_pending:
        address = replace(address, town=" ".join(address.town.split()[:-1]) or None)  # type: ignore[union-attr]
    if postcode or flat:
        address = replace(address, flat=flat, postcode=postcode[0] if postcode else address.postcode)
    postcode_pending = postcode is not None and postcode[0] is None
    if not address.street:
        return None
    has_type = any(w in STREET_TYPES for w in (address.street or "").lower().split())
    complete = bool(address.number and has_type and (address.town or address.postcode or address.zip))
    complete = complete and not postcode_pending and not zip_pending
    confidence = 0.85 if address.number and has_type else 0.5
    return Extraction(address, complete, confidence, _span(toks[start:]))


def _tag_address(words_: list[str]) -> Address:
    """House number, street, town, state and ZIP from ``usaddress``'s labels."""
    try:
        labelled = usaddress.parse(" ".join(words_))
    except Exception:  # the CRF tagger rejects odd input: no structured address
        return Address(street=" ".join(words_).title() or None)
    number: list[str] = []
    street: list[str] = []
    town: list[str] = []
    state = zip_code = None
    seen_type = False
    for word, label in labelled:
        word = word.strip(",")
        if label in ("AddressNumber", "AddressNumberSuffix") and not street:
            number.append(word)
        elif label.startswith("StreetName") and not seen_type and not town:
            street.append(word)
            seen_type = label == "StreetNamePostType"
        elif label == "StateName":
            state = word.upper() if len(word) == 2 else word.title()
        elif label == "ZipCode" and _US_ZIP.match(word):
            zip_code = word
        elif street and label not in ("Recipient", "AddressNumber"):
            if not seen_type and word in STREET_TYPES:
                street.append(word)
                seen_type = True
            else:
                town.append(word)  # PlaceName, or what it mistook for a flat ("london")
    if not street and number:  # "12 high" with no type: take the words after the number
        street = words_[len(number) : len(number) + 3]
    return Address(
        number="".join(number) or None,
        street=" ".join(street).title() or None,
        town=" ".join(town).title() or None,
        state=state,
        zip=zip_code,
    )


def _address(
    text: str, options: tuple[str, ...], digits: int | None, reference: datetime | None
) -> Extraction | None:
    return _corrected(_read_address, text, CORRECTION_CUES)


def extract_address(
    text: str,
    *,
    options: tuple[str, ...] = (),
    digits: int | None = None,
    reference: datetime | date | None = None,
) -> Extraction | None:
    """A postal address (:class:`Address`): '221 Baker Street London N W one six X E', '1600
    Pennsylvania Avenue Washington DC 20500'; complete with a number, a street and a town/postcode."""
    return _cached("address", text, options, digits, reference)


# --- choices and free speech ---------------------------------------------------------------------


def _position(texts: list[str]) -> int | None:
    """'option two' / 'number 2' / 'the second one' -> 2."""
    for i, word in enumerate(texts):
        following = texts[i + 1] if i + 1 < len(texts) else ""
        if word in ("option", "number", "press") and following:
            runs = number_runs([Token(following, 0, 0)])
            if runs and len(runs[0].chunks) == 1:
                return runs[0].chunks[0]
        if word in ORDINALS and following in ("one", "option", ""):
            return ORDINALS[word]
    return None


def _read_choice(toks: list[Token], options: tuple[str, ...]) -> Extraction | None:
    if not options or not toks:
        return None
    texts = [t.text for t in toks]
    joined = " ".join(texts)
    exact = [
        (m.start(), option)
        for option in options
        for m in re.finditer(rf"\b{re.escape(' '.join(t.text for t in tokens(option)))}\b", joined)
    ]
    if exact:
        at, option = max(exact)  # the last one named
        first = len(joined[:at].split())
        return Extraction(option, True, 0.95, _span(toks[first : first + len(tokens(option))]))
    position = _position(texts)
    if position is not None and 1 <= position <= len(options):
        return Extraction(options[position - 1], True, 0.9, _span(toks))
    body = [(i, w) for i, w in enumerate(texts) if w not in FILLERS and w not in namelists.NOT_NAMES]
    best = _best_window(body, options) if body else None
    if best is None:
        return None
    return Extraction(best[0], True, best[1] * 0.9, (toks[best[2]].start, toks[best[3]].end))


def _choice(
    text: str, options: tuple[str, ...], digits: int | None, reference: datetime | None
) -> Extraction | None:
    return _corrected(lambda toks: _read_choice(toks, options), text, CORRECTION_CUES)


def extract_choice(
    text: str,
    *,
    options: tuple[str, ...] = (),
    digits: int | None = None,
    reference: datetime | date | None = None,
) -> Extraction | None:
    """One of ``options``: named ('by bank transfer'), by position ('the second one'), or fuzzily."""
    return _cached("choice", text, options, digits, reference)


def extract_free(
    text: str,
    *,
    options: tuple[str, ...] = (),
    digits: int | None = None,
    reference: datetime | date | None = None,
) -> Extraction | None:
    """Open speech: the transcript itself (complete when anything was said)."""
    stripped = text.strip()
    if not stripped:
        return None
    start = text.index(stripped[0])
    return Extraction(stripped, True, 1.0, (start, start + len(stripped)))


# --- dispatch and caching -------------------------------------------------------------------------

_READERS: dict[str, Callable[[str, tuple[str, ...], int | None, datetime | None], Extraction | None]] = {
    "digits": _digits,
    "phone": _phone,
    "name": _name,
    "spelled": _spelled,
    "yes_no": _yes_no,
    "date": _date,
    "time": _time,
    "amount": _amount,
    "email": _email,
    "address": _address,
    "choice": _choice,
}


@lru_cache(maxsize=4096)
def _cached(
    kind: str, text: str, options: tuple[str, ...], digits: int | None, reference: datetime | None
) -> Extraction | None:
    return _READERS[kind](text, options, digits, reference)


EXTRACTORS: dict[str, Extractor] = {
    "digits": extract_digits,
    "phone": extract_phone,
    "name": extract_name,
    "spelled": extract_spelled,
    "yes_no": extract_yes_no,
    "date": extract_date,
    "time": extract_time,
    "amount": extract_amount,
    "email": extract_email,
    "address": extract_address,
    "choice": extract_choice,
    "free": extract_free,
}
SLOT_TYPES = tuple(EXTRACTORS)


def extract(
    slot_type: str,
    text: str,
    *,
    options: tuple[str, ...] | list[str] = (),
    digits: int | None = None,
    reference: datetime | date | None = None,
) -> Extraction | None:
    """Read ``text`` as a value of ``slot_type`` (a :data:`SLOT_TYPES` name or a ``SlotType``)."""
    extractor = EXTRACTORS.get(str(getattr(slot_type, "value", slot_type)))
    if extractor is None:
        raise ValueError(f"unknown slot type {slot_type!r}; expected one of {', '.join(SLOT_TYPES)}")
    return extractor(text, options=tuple(options), digits=digits, reference=reference)
