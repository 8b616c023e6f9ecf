"""Compile a ``Question`` into a JSGF grammar for pocketsphinx's grammar (FSG) search.

A closed question has a small answer language (digits, yes/no, a list of names, dates,
amounts); recognising against that language instead of a general LM is what makes the grammar
engine both accurate and cheap. Every word must be in the acoustic model's pronunciation
dictionary: words that are not get a pronunciation from espeak-ng (``g2p``), converted from IPA
to the CMU phone set, or are skipped and reported in ``Grammar.skipped``.

pocketsphinx expands every JSGF rule reference inline when it builds the FSG, so a JSGF grammar
for "exactly N digits where 'double X' counts as two" grows like the tribonacci numbers (measured:
N=8 compiles in 0.05 s, N=10 in 0.18 s, N=12 in 0.8 s, N=16 in 10 s) and an 11-digit phone number
could not allow "double". A question with an expected digit count is therefore compiled straight
into a finite-state grammar (``Grammar.transitions``, installed with ``Decoder.create_fsg``): one
state per digit consumed, "double"/"triple" jump two/three states, so it stays linear in N and
callers may say "double seven" in numbers of any length.
"""

from __future__ import annotations

import functools
import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parley.speech.types import Question, SlotType

MAX_DOUBLES_DIGITS = 8
# Extra dictionary alternates (pocketsphinx "word(n)"), used by every grammar. Telephone audio keeps
# nothing of /s/ above 4 kHz, and after the silence before an answer the decoder files a leading
# "seven"'s /s/ under that silence: the rest, "EH V AH N", then read as "yeah nine" or "nine" (flite
# slt over G.711, 240 bench answers: 46 of the 48 starting with "seven" wrong; 6 with this and no bare
# "yeah" carrier below, 3 with the grammar engine's silprob at 0.05 too).
ALT_PRONUNCIATIONS = (("seven(2)", "EH V AH N"),)
CARRIER_ODDS = 20  # an answer without a carrier ("it's", "my name is") is this much likelier

DIGIT_WORDS = ("zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_NUM_WORDS = {str(i): w for i, w in enumerate(DIGIT_WORDS[:1] + DIGIT_WORDS[2:])}
YES_WORDS = (
    "yes", "yeah", "yep", "yup", "yes please", "yes it is", "yes that's right", "that's right",
    "that is right", "correct", "that's correct", "right", "sure", "of course", "absolutely",
    "okay", "uh-huh", "it is", "i do", "definitely",
)  # fmt: skip
NO_WORDS = (
    "no", "nope", "nah", "no thanks", "no thank you", "not really", "no it isn't", "no it's not",
    "that's wrong", "that's not right", "incorrect", "wrong", "i don't", "it isn't", "not at all",
)  # fmt: skip
TEENS = (
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)  # fmt: skip
TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
UNITS = DIGIT_WORDS[2:]
MONTHS = (
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
)  # fmt: skip
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
ORDINAL_UNITS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth")
ORDINAL_TEENS = (
    "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth",
    "seventeenth", "eighteenth", "nineteenth",
)  # fmt: skip
CURRENCIES = ("pounds", "pound", "dollars", "dollar", "euros", "euro", "quid", "bucks")
SUBUNITS = ("cents", "cent", "pence", "p")
LETTERS = tuple("abcdefghijklmnopqrstuvwxyz")
NATO = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "x-ray", "yankee", "zulu",
)  # fmt: skip
_AS_IN_EXTRA = (
    "apple", "boy", "cat", "dog", "edward", "frank", "george", "harry", "ice", "jack", "king",
    "london", "mary", "nancy", "orange", "peter", "queen", "robert", "sam", "tom", "uncle",
    "victoria", "william", "yellow", "zebra",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Grammar:
    """A compiled question: JSGF text, its search name, and pronunciations to add first."""

    name: str  # stable search name derived from the JSGF text
    jsgf: str
    words: tuple[str, ...]  # every word the grammar uses
    pronunciations: tuple[tuple[str, str], ...] = ()  # (word, CMU phones) missing from the dictionary
    skipped: tuple[str, ...] = ()  # option words dropped: not in the dictionary, no g2p
    # A finite-state grammar instead of ``jsgf`` (which is then ""): (from, to, probability, word or
    # None for an empty move) from state 0 to ``final_state``.
    transitions: tuple[tuple[int, int, float, str | None], ...] = ()
    final_state: int = 0

    def install(self, decoder: Any) -> None:
        """Add this grammar as search ``name`` to a pocketsphinx ``Decoder`` (words first)."""
        # Alternates first, by every grammar: an FSG takes a word's alternates when it is built, so a
        # decoder's searches must not depend on which grammar it happened to install first.
        for word, phones in (*ALT_PRONUNCIATIONS, *self.pronunciations):
            if decoder.lookup_word(word) is None:
                decoder.add_word(word, phones, False)
        if self.transitions:
            arcs = [arc if arc[3] is not None else arc[:3] for arc in self.transitions]
            decoder.add_fsg(self.name, decoder.create_fsg(self.name, 0, self.final_state, arcs))
        else:
            decoder.add_jsgf_string(self.name, self.jsgf)


@functools.cache
def dictionary_words(path: str) -> frozenset[str]:
    """The words of a pocketsphinx dictionary file (alternates like ``word(2)`` folded)."""
    words: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            head = line.split(" ", 1)[0]
            words.add(head.split("(", 1)[0])
    return frozenset(words)


def normalise(text: str) -> list[str]:
    """Lower-case dictionary-style tokens: punctuation dropped, digits spelled, '&' as 'and'."""
    text = text.lower().replace("&", " and ").replace("-", " ")
    text = re.sub(r"(\d)", r" \1 ", text)
    tokens = re.findall(r"[a-z0-9']+", text)
    return [_NUM_WORDS.get(t, t).strip("'") for t in tokens if t.strip("'")]


# IPA (as printed by ``espeak-ng --ipa -v en-us``) → CMU phones; longest match first.
_IPA_TO_CMU = {
    "aɪə": "AY ER", "aɪ": "AY", "aʊ": "AW", "eɪ": "EY", "oʊ": "OW", "ɔɪ": "OY", "əʊ": "OW", "ɪə": "IH R",
    "eə": "EH R", "ʊə": "UH R", "ɜː": "ER", "ɝ": "ER", "ɚ": "ER", "iː": "IY", "uː": "UW", "ɑː": "AA",
    "ɔː": "AO", "tʃ": "CH", "dʒ": "JH", "i": "IY", "ɪ": "IH", "e": "EH", "ɛ": "EH", "æ": "AE",
    "a": "AE", "ɐ": "AH", "ʌ": "AH", "ə": "AH", "ᵻ": "IH", "ɑ": "AA", "ɒ": "AA", "ɔ": "AO", "o": "OW",
    "u": "UW", "ʊ": "UH", "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "ɡ": "G", "g": "G",
    "f": "F", "v": "V", "θ": "TH", "ð": "DH", "s": "S", "z": "Z", "ʃ": "SH", "ʒ": "ZH", "h": "HH",
    "m": "M", "n": "N", "ŋ": "NG", "l": "L", "ɹ": "R", "r": "R", "ɾ": "T", "j": "Y", "w": "W",
    "x": "K", "ʔ": "",
}  # fmt: skip
_IPA_KEYS = sorted(_IPA_TO_CMU, key=len, reverse=True)


@functools.cache
def g2p(word: str) -> str | None:
    """CMU phones for ``word`` via espeak-ng's IPA (None when espeak-ng is missing or fails)."""
    exe = shutil.which("espeak-ng")
    if exe is None or not re.fullmatch(r"[a-z']+", word):
        return None
    try:
        out = subprocess.run(
            [exe, "-q", "--ipa", "-v", "en-us", word], capture_output=True, text=True, timeout=5, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    ipa = re.sub(r"[ˈˌ\s_‿.\-]", "", out.strip())
    phones: list[str] = []
    i = 0
    while i < len(ipa):
        for key in _IPA_KEYS:
            if ipa.startswith(key, i):
                if _IPA_TO_CMU[key]:
                    phones.extend(_IPA_TO_CMU[key].split())
                i += len(key)
                break
        else:
            i += 1  # unknown symbol (length marks etc.)
    return " ".join(phones) or None


def _alt(items: list[str] | tuple[str, ...]) -> str:
    return "(" + " | ".join(dict.fromkeys(items)) + ")"


# No bare "yeah": "Y AE" matched the start of a leading "seven" better than the digit did
# ("seven two three eight" -> "yeah nine two three eight"); "yeah it's ..." is still a carrier, and a
# "yeah seven ..." decodes as "yeah it's seven ...", whose digits are right.
_C_DIGITS = "it's | it is | yeah it's | my number is | the number is | my account number is"
_C_PHONE = "it's | my number is"
_C_ITS = "it's | that's"
_C_DATE = "it's | it was | on"
_C_AMOUNT = "it's | about | around"
_C_TIME = "at | about | around | can i do | can we say | shall we say | let's say | how about"
HOURS = (*UNITS, "ten", "eleven", "twelve")  # a clock's hours, one to twelve
DAY_PARTS = ("in the morning", "in the afternoon", "in the evening", "at night", "a.m.", "p.m.")
_C_NAME = "my name is | it's | this is | i'm | the name is"
_C_CHOICE = "i'd like | i want | i need | can i have"


def _opt(items: str) -> str:
    """An optional carrier phrase, weighted so that silence and noise don't turn into carriers."""
    return f"(/{CARRIER_ODDS}/ <NULL> | /1/ ({items}))"


def _digits_rules(count: int | None) -> tuple[list[str], str]:
    rules = [f"<digit> = {_alt(DIGIT_WORDS)};", "<dtok> = <digit> | double <digit> | triple <digit>;"]
    if count is None or count <= 0:
        return rules, "<dtok>+"
    if count > MAX_DOUBLES_DIGITS:
        return rules, " ".join(["<digit>"] * count)
    rules.append("<d1> = <digit>;")
    if count >= 2:
        rules.append("<d2> = <digit> <d1> | double <digit>;")
    if count >= 3:
        rules.append("<d3> = <digit> <d2> | double <digit> <d1> | triple <digit>;")
    for n in range(4, count + 1):
        rules.append(f"<d{n}> = <digit> <d{n - 1}> | double <digit> <d{n - 2}> | triple <digit> <d{n - 3}>;")
    return rules, f"<d{count}>"


DOUBLE_ODDS = 0.08  # share of "double X" among the next words of a digit string
TRIPLE_ODDS = 0.02
_DIGIT_MOVES = (
    (1, 1 - DOUBLE_ODDS - TRIPLE_ODDS, None),
    (2, DOUBLE_ODDS, "double"),
    (3, TRIPLE_ODDS, "triple"),
)  # (digits consumed, odds, word)


def _carrier_phrases(carriers: str) -> list[list[str]]:
    return [c.split() for c in carriers.split(" | ")]


def counted_digits_fsg(
    count: int, carriers: str, allow_plus: bool = False, phrases: tuple[str, ...] = ()
) -> tuple[tuple[tuple[int, int, float, str | None], ...], int]:
    """Transitions of "[carrier] [plus] exactly ``count`` digits" ("double"/"triple" included), or
    one of ``phrases`` (the agent's other expected answers, as alternatives in the JSGF path).

    States: 0 start; the carrier chains; then ``first + i`` = i digits said; each "double"/"triple"
    goes through its own state to the digit it repeats. Probabilities leaving a state sum to 1.
    """
    arcs: list[tuple[int, int, float, str | None]] = []
    states = 1

    def new() -> int:
        nonlocal states
        states += 1
        return states - 1

    def chain(start: int, end: int, words: list[str], probability: float) -> None:
        at = start
        for k, word in enumerate(words):
            to = end if k == len(words) - 1 else new()
            arcs.append((at, to, probability if k == 0 else 1.0, word))
            at = to

    body = new() if phrases else 0
    if phrases:
        arcs.append((0, body, 1 / (1 + len(phrases)), None))  # JSGF alternatives weigh the same
    after_carrier = new()
    carrier_phrases = _carrier_phrases(carriers)
    arcs.append((body, after_carrier, CARRIER_ODDS / (CARRIER_ODDS + 1), None))
    for phrase in carrier_phrases:
        at = body
        for k, word in enumerate(phrase):
            to = after_carrier if k == len(phrase) - 1 else new()
            arcs.append((at, to, 1 / ((CARRIER_ODDS + 1) * len(carrier_phrases)) if k == 0 else 1.0, word))
            at = to
    first = new()
    arcs.append((after_carrier, first, 0.9 if allow_plus else 1.0, None))
    if allow_plus:
        arcs.append((after_carrier, first, 0.1, "plus"))
    digit_state = [first] + [new() for _ in range(count)]
    for i in range(count):
        moves = [m for m in _DIGIT_MOVES if i + m[0] <= count]
        total = sum(m[1] for m in moves)
        for step, odds, multiplier in moves:
            share = odds / total
            if multiplier is None:
                each = share / len(DIGIT_WORDS)
                arcs.extend((digit_state[i], digit_state[i + 1], each, w) for w in DIGIT_WORDS)
            else:
                middle = new()
                arcs.append((digit_state[i], middle, share, multiplier))
                arcs.extend((middle, digit_state[i + step], 1 / len(DIGIT_WORDS), w) for w in DIGIT_WORDS)
    final = digit_state[count]
    for phrase in phrases:
        chain(0, final, phrase.split(), 1 / (1 + len(phrases)))
    return tuple(arcs), final


def _number_rules() -> list[str]:
    """0..999,999 in words, British or American ("two hundred and fifty", "two hundred fifty").

    Kept small on purpose: every rule reference is copied into the FSG, and a fully nested number
    grammar (with "point" decimals and thousands on both sides) cost 0.7 s CPU per audio second.
    """
    return [
        f"<unit> = {_alt(UNITS)};",
        f"<n99> = <unit> | {_alt(TEENS)} | {_alt(TENS)} [<unit>];",
        "<n999> = (a | <unit>) hundred [[and] <n99>] | <n99>;",
        "<number> = zero | <n999> [thousand [[and] <n999>]];",
    ]


def _answer(question: Question) -> tuple[list[str], str]:
    """(helper rules, body of the public rule) for the question's slot type."""
    st = question.slot_type
    if st is SlotType.DIGITS:
        rules, body = _digits_rules(question.digit_count)
        return rules, f"{_opt(_C_DIGITS)} {body}"
    if st is SlotType.PHONE:
        rules, body = _digits_rules(question.digit_count)
        return rules, f"{_opt(_C_PHONE)} [plus] {body}"
    if st is SlotType.YES_NO:
        return [], f"{_alt(YES_WORDS + NO_WORDS)} {_opt('please | thanks | thank you')}"
    if st is SlotType.SPELLED:
        as_in = _alt(NATO + _AS_IN_EXTRA)
        rules = [f"<letter> = {_alt(LETTERS)};", f"<spelt> = <letter> [as in {as_in}] | double <letter>;"]
        return rules, f"{_opt(_C_ITS)} <spelt>+"
    if st is SlotType.DATE:
        ordinal = _alt(
            [*ORDINAL_UNITS, *ORDINAL_TEENS, "twentieth", "thirtieth"]
            + [f"{t} {u}" for t in ("twenty", "thirty") for u in ORDINAL_UNITS[: (9 if t == "twenty" else 1)]]
        )
        rules = [
            f"<month> = {_alt(MONTHS)};",
            f"<weekday> = {_alt(WEEKDAYS)};",
            f"<ordinal> = {ordinal};",
            f"<year> = (nineteen | twenty) ({_alt(TENS)} [{_alt(UNITS)}] | {_alt(TEENS)} | oh {_alt(UNITS)})"
            " | two thousand [and] [" + _alt(UNITS + TEENS) + "];",
            "<day> = [the] <ordinal> [of] <month> | <month> [the] <ordinal> | [on] [the] <ordinal>;",
        ]
        body = (
            f"{_opt(_C_DATE)} (<day> [<year>] | today | tomorrow | yesterday | the day after tomorrow"
            " | [next | this | last] <weekday> | [on] <weekday> [the <ordinal>])"
        )
        return rules, body
    if st is SlotType.TIME:
        rules = [
            f"<hour> = {_alt(HOURS)};",
            f"<minutes> = oh {_alt(UNITS)} | {_alt(TEENS)} | {_alt(TENS[:4])} [{_alt(UNITS)}];",
            "<clock> = <hour> [o'clock | <minutes>] | (half | [a] quarter) (past | to) <hour>"
            " | <minutes> [minutes] (past | to) <hour> | noon | midday | midnight;",
        ]
        return rules, f"{_opt(_C_TIME)} <clock> {_opt(_alt(DAY_PARTS))} {_opt('please')}"
    if st is SlotType.AMOUNT:
        cur = _alt(CURRENCIES)
        sub = _alt(SUBUNITS)
        rules = _number_rules()
        body = f"{_opt(_C_AMOUNT)} (<number> [{cur}] [[and] <n99> [{sub}]] | <n99> {sub})"
        return rules, body
    if st in (SlotType.NAME, SlotType.CHOICE):
        return [], ""
    raise ValueError(f"no grammar for slot type {st}")


def compile_question(question: Question, dictionary: str) -> Grammar:
    """Compile ``question`` to JSGF; options/phrases are normalised and checked against ``dictionary``."""
    known = dictionary_words(dictionary)
    extra: dict[str, str] = {}
    skipped: list[str] = []

    def usable(tokens: list[str]) -> list[str]:
        kept: list[str] = []
        for tok in tokens:
            if tok in known or tok in extra:
                kept.append(tok)
            elif (phones := g2p(tok)) is not None:
                extra[tok] = phones
                kept.append(tok)
            else:
                skipped.append(tok)
        return kept

    options = [" ".join(t) for o in question.options if (t := usable(normalise(o)))]
    phrases = [" ".join(t) for p in question.phrases if (t := normalise(p)) and len(usable(t)) == len(t)]
    count = question.digit_count or 0
    if question.slot_type in (SlotType.DIGITS, SlotType.PHONE) and count > 0:
        is_phone = question.slot_type is SlotType.PHONE
        arcs, final = counted_digits_fsg(count, _C_PHONE if is_phone else _C_DIGITS, is_phone, tuple(phrases))
        name = "f" + hashlib.sha1(repr(arcs).encode()).hexdigest()[:12]
        used = tuple(sorted({w for *_, w in arcs if w is not None}))
        return Grammar(
            name=name,
            jsgf="",
            words=used,
            pronunciations=tuple(sorted(extra.items())),
            transitions=arcs,
            final_state=final,
        )
    rules, body = _answer(question)
    alternatives: list[str] = []
    if question.slot_type is SlotType.NAME:
        if options:
            rules.append(f"<name> = {_alt(options)};")
            alternatives.append(f"{_opt(_C_NAME)} <name> {_opt('please')}")
    elif question.slot_type is SlotType.CHOICE:
        if options:
            rules.append(f"<option> = {_alt(options)};")
            alternatives.append(f"{_opt(_C_CHOICE)} {_opt('the')} <option> {_opt('please')}")
    elif body:
        alternatives.append(body)
    alternatives.extend(phrases)
    if not alternatives:
        raise ValueError(f"question {question.prompt!r} has no usable answer words for a grammar")
    lines = ["#JSGF V1.0;", "grammar answer;", *rules, f"public <answer> = {_alt(alternatives)};"]
    jsgf = "\n".join(lines) + "\n"
    words = tuple(sorted(set(re.findall(r"(?<![<#\w])[a-z][a-z'\-]*(?![\w>])", "\n".join(lines[2:])))))
    name = "g" + hashlib.sha1(jsgf.encode()).hexdigest()[:12]
    return Grammar(
        name=name,
        jsgf=jsgf,
        words=words,
        pronunciations=tuple(sorted(extra.items())),
        skipped=tuple(dict.fromkeys(skipped)),
    )


def default_dictionary() -> str:
    """Path of the pocketsphinx wheel's en-us pronunciation dictionary."""
    import pocketsphinx

    return str(Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict")
