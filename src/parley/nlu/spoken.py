"""Spoken-form primitives shared by the ASR arbiter's slot readers and the NLU extractors.

ASR transcripts are lower-case words without punctuation you can trust: numbers come as words
("four two seven", "forty-two", "two hundred and fifty"), corrections come inline ("four two no,
four three"), and every partial transcript is a prefix of what the caller is still saying. The
helpers here turn such words into tokens with character spans, numbers into numerals, and find
the part of an answer after its last correction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DIGIT_WORDS = {
    "zero": "0", "oh": "0", "o": "0", "nought": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
MULTIPLIERS = {"double": 2, "triple": 3}
NUMBER_WORDS = {
    **{w: int(d) for w, d in DIGIT_WORDS.items() if w not in ("oh", "o", "nought")},
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
TENS = {w for w, n in NUMBER_WORDS.items() if n >= 20}
SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000, "grand": 1000}
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
FILLERS = {"um", "uh", "er", "erm", "ah", "hmm", "mm"}

# Cues after which the caller restates the answer: the value is what follows the last one.
CORRECTION_CUES: tuple[tuple[str, ...], ...] = (
    ("no", "wait"), ("no", "sorry"), ("sorry", "i", "mean"), ("i", "mean"), ("no", "no"), ("sorry",),
    ("actually",), ("wait",), ("scratch", "that"), ("let", "me", "start", "again"), ("no",),
)  # fmt: skip

CARRIER_PHRASES: tuple[tuple[str, ...], ...] = (
    ("my", "name", "is"), ("my", "name's"), ("my", "first", "name", "is"), ("my", "last", "name", "is"),
    ("my", "surname", "is"), ("my", "first", "name's"), ("my", "last", "name's"), ("my", "surname's"),
    ("the", "name", "is"), ("the", "name's"), ("first", "name"), ("last", "name"), ("surname",),
    ("it's",), ("it", "is"), ("its",), ("i'm",), ("i", "am"), ("this", "is"), ("that's",), ("that", "is"),
    ("call", "me"), ("they", "call", "me"), ("you", "can", "call", "me"),
    ("yeah",), ("yes",), ("sure",), ("ok",), ("okay",), ("so",), ("well",), ("right",), ("oh",),
    ("um",), ("uh",), ("er",), ("erm",),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Token:
    """A lower-cased word of a transcript and its character span in that transcript."""

    text: str
    start: int
    end: int


_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+", re.IGNORECASE)


def words(text: str) -> list[str]:
    """Lower-case words and digit runs; punctuation and hyphens separate words."""
    return re.findall(r"[a-z']+|\d+", text.lower())


def tokens(text: str) -> list[Token]:
    """Like :func:`words`, with character spans (apostrophes only inside a word)."""
    return [Token(m.group().lower(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


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


def read_year(tokens: list[str]) -> int | None:
    """'nineteen sixty five' -> 1965, 'two thousand and five' -> 2005, 'twenty twenty four' -> 2024."""
    if not tokens:
        return None
    if tokens[:2] == ["two", "thousand"]:
        return read_number(tokens)
    high = NUMBER_WORDS.get(tokens[0])
    if high is None or not 10 <= high <= 29:
        return None
    rest = tokens[1:]
    if rest == ["hundred"]:
        return high * 100
    if len(rest) == 2 and rest[0] in ("oh", "o") and rest[1] in DIGIT_WORDS:
        return high * 100 + int(DIGIT_WORDS[rest[1]])
    low = read_number(rest)
    return high * 100 + low if low is not None and 10 <= low < 100 else None


def strip_carrier(words: list[str], *, partial_tail: bool = False) -> list[str]:
    """Drop leading carrier phrases ("my name is", "it's", "um") from a short answer.

    With ``partial_tail``, words that are only the start of a carrier phrase ("my", "my last")
    are dropped too: on a partial transcript they are not yet an answer.
    """
    changed = True
    while changed and words:
        changed = False
        for phrase in CARRIER_PHRASES:
            if tuple(words[: len(phrase)]) == phrase:
                words = words[len(phrase) :]
                changed = True
                break
    if (
        partial_tail
        and words
        and any(
            len(words) < len(phrase) and tuple(words) == phrase[: len(words)] for phrase in CARRIER_PHRASES
        )
    ):
        return []
    return words


def last_correction(toks: list[Token], *, cues: tuple[tuple[str, ...], ...] = CORRECTION_CUES) -> int:
    """Index of the first token after the last correction cue (0 when there is none)."""
    texts = [t.text for t in toks]
    after = 0
    i = 0
    while i < len(texts):
        for cue in cues:
            if tuple(texts[i : i + len(cue)]) == cue:
                after = i + len(cue)
                i += len(cue) - 1
                break
        i += 1
    return after


def ends_with_cue(toks: list[Token], cues: tuple[tuple[str, ...], ...] = CORRECTION_CUES) -> bool:
    """Whether the transcript ends in a correction cue (the caller is about to restate)."""
    texts = tuple(t.text for t in toks)
    return any(len(texts) >= len(cue) and texts[-len(cue) :] == cue for cue in cues)


@dataclass(frozen=True, slots=True)
class NumberRun:
    """Consecutive number words read as one numeral string, with the tokens it spans."""

    digits: str  # "427", "42", "250", "1965"
    start: int  # token indices, end exclusive
    end: int
    chunks: tuple[int, ...]  # the spoken numbers in order: "four forty two" -> (4, 42)
    pending: bool  # ends in a dangling "double" / "triple": the digit it repeats is still to come


def _is_number_word(texts: list[str], i: int) -> bool:
    word = texts[i]
    if word.isdigit() or word in NUMBER_WORDS or word in ("zero", "nought"):
        return True
    if word in ("oh", "o"):  # zero only next to other numbers (across more ohs), else an interjection
        neighbours = []
        chain = 1  # "oh oh oh oh" is four zeros, a lone "oh" an interjection
        for step in (-1, 1):
            j = i + step
            while 0 <= j < len(texts) and texts[j] in ("oh", "o"):
                j += step
                chain += 1
            if 0 <= j < len(texts):
                neighbours.append(texts[j])
        numeric = (n.isdigit() or n in NUMBER_WORDS or n in MULTIPLIERS or n == "zero" for n in neighbours)
        return chain > 2 or any(numeric)
    return False


def number_runs(toks: list[Token], *, allow_fillers: bool = True) -> list[NumberRun]:
    """Every run of spoken numbers: 'four two double seven' -> '4277', 'forty two' -> '42'.

    A run is a sequence of chunks, each a cardinal ("forty two", "two hundred and fifty", "7");
    several chunks are read digit by digit and concatenated ("four forty two" -> "442",
    "nineteen sixty five" -> "1965"). "double"/"triple" repeat the next digit; fillers ("um")
    inside a run are skipped.
    """
    texts = [t.text for t in toks]
    runs: list[NumberRun] = []
    i = 0
    while i < len(texts):
        if not (_is_number_word(texts, i) or (texts[i] in MULTIPLIERS and i + 1 < len(texts))):
            if texts[i] == "a" and i + 1 < len(texts) and texts[i + 1] in ("hundred", "thousand", "grand"):
                pass  # "a hundred" is a number
            else:
                i += 1
                continue
        start = i
        chunks: list[str] = []
        values: list[int] = []
        pending = False
        while i < len(texts):
            word = texts[i]
            if word in MULTIPLIERS:
                if i + 1 < len(texts) and _is_number_word(texts, i + 1) and texts[i + 1] in DIGIT_WORDS:
                    chunks.append(DIGIT_WORDS[texts[i + 1]] * MULTIPLIERS[word])
                    values.append(int(chunks[-1]))
                    i += 2
                    continue
                if i + 1 < len(texts) and texts[i + 1].isdigit():  # "double 019": 0019
                    numeral = texts[i + 1]
                    chunks.append(numeral[0] * MULTIPLIERS[word] + numeral[1:])
                    values.append(int(chunks[-1]))
                    i += 2
                    continue
                pending = i + 1 == len(texts)
                i += 1 if pending else 0
                break
            if allow_fillers and word in FILLERS and chunks and i + 1 < len(texts):
                if _is_number_word(texts, i + 1) or texts[i + 1] in MULTIPLIERS:
                    i += 1
                    continue
                break
            if not (_is_number_word(texts, i) or word == "a"):
                break
            value, i = _cardinal(texts, i)
            if value is None:
                break
            chunks.append(value)
            values.append(int(value))
        if chunks:
            runs.append(NumberRun("".join(chunks), start, i, tuple(values), pending))
        else:
            i = max(i, start + 1)
    return runs


def _cardinal(texts: list[str], i: int) -> tuple[str | None, int]:
    """One spoken cardinal from ``texts[i]``: (numeral, next index)."""
    word = texts[i]
    if word.isdigit():
        return word, i + 1
    if word in ("oh", "o", "zero", "nought"):
        return "0", i + 1
    total = current = 0
    seen = False
    last = ""
    j = i
    if word == "a":
        if j + 1 < len(texts) and texts[j + 1] in ("hundred", "thousand", "grand"):
            current, seen, j = 1, True, j + 1
        else:
            return None, i
    while j < len(texts):
        w = texts[j]
        if w in NUMBER_WORDS:
            n = NUMBER_WORDS[w]
            if (
                not seen
                or last in ("hundred", "thousand", "grand", "million", "and")
                or (last in TENS and n < 10 and current % 10 == 0)
            ):
                current += n
            else:
                break  # a new chunk: "four two", "twenty twenty"
        elif w in SCALES and seen and last not in SCALES:
            if w == "hundred":
                if current >= 100 or current == 0:
                    break
                current *= 100
            else:
                total += current * SCALES[w]
                current = 0
        elif w == "and" and seen and last in SCALES and j + 1 < len(texts) and texts[j + 1] in NUMBER_WORDS:
            pass
        else:
            break
        seen, last = True, w
        j += 1
    if not seen:
        return None, i
    return str(total + current), j


def numerals(text: str) -> str:
    """The transcript with spoken numbers as numerals: 'twenty two acacia avenue' -> '22 acacia avenue'."""
    toks = tokens(text)
    runs = number_runs(toks, allow_fillers=False)
    out: list[str] = []
    i = 0
    for run in runs:
        out.extend(t.text for t in toks[i : run.start])
        out.append(run.digits)
        i = run.end
    out.extend(t.text for t in toks[i:])
    return " ".join(out)
