"""Synthetic labelled telephone callers for every slot type (``parley corpus``).

Why synthetic: no labelled English telephone corpus ships in a package here, and the arbiter's
per-slot priors and the benchmarks need thousands of answers whose truth is known exactly. Each
utterance is an answer a caller might give (account numbers read digit by digit with "oh" and
"double", phone numbers in groups, names, spelled names, yes/no variants, dates, amounts, menu
choices, reasons for calling). Synthetic speech flatters every engine, so the corpus makes it hard:

* **Voices and rates**: Debian's flite (slt, kal16, awb, rms, kal) and festival (kal_diphone,
  ked_diphone, the slt HTS voice) voices, and espeak-ng (en-us, en-gb-x-rp+f3) as a robotic hard
  case drawn half as often; rates 0.8–1.25 and three pitches. (mbrola voices are not packaged.)
* **Disfluent callers** (about a quarter, :data:`DISFLUENCY_SHARES`): *hesitations* ("um, ...",
  "let me see, ...", "four two seven, uh, one nine three"), *restarts* ("it's four two, it's four
  two seven one") and *corrections* ("four two, no sorry, four three ..."; "Jones, no sorry,
  Taylor"; "the third, sorry I mean, the fourth of May"). Each piece is rendered on its own with
  a real pause after it. The label's ``value`` is the FINAL intended value; for free speech it is
  the words said (restarts included) without the filler sounds uh/um/er/erm. ``disfluency``
  names the kind (null for a plain answer), ``text`` is everything said, ``answer_text`` the
  plain answer.

Then every utterance goes down a simulated phone line:

1. the TTS plugin resamples to 8 kHz with soxr (``parley.speech.tts``);
2. silence is padded around the speech and noise is mixed in at a set SNR: white, pink, *street*
   (traffic rumble, hiss, horns and bangs) or *babble* (five TTS talkers summed, rendered once per
   corpus from a fixed text list), see ``parley.speech.noise``. The SNR is measured after the
   resample, in the band the line carries, against the speech frames only;
3. a G.711 round trip, µ-law (PCMU) or A-law (PCMA) (``parley.media.g711``);
4. packet loss: 20 ms frames are dropped, independently or in bursts (Gilbert model, mean burst 3
   frames), and concealed like the receiver does (``parley.media.jitter.conceal``).

The label records all of it: voice, rate, pitch, ``noise`` kind and ``snr_db``, ``codec``,
``loss_rate``, ``loss_burst`` and ``lost_frames``, and the ``question`` (slot type, digit count,
options, prompt, reference date) the engines are biased with.

**Splits.** ``split="train"`` (the priors' corpus) leaves out :data:`HELD_OUT_VOICES` (festival's
ked_diphone and espeak-ng's en-gb-x-rp+f3) and :data:`HELD_OUT_NOISES` (street), so an
evaluation rendered with ``split="eval"`` has voices and a noise the priors never heard (about a
quarter of its utterances are in a held-out voice). And short answers would otherwise meet the
same voice in both ("yes" by slt): a stable hash of each (voice, text) pair gives it to one split
only (:func:`pair_allowed`), so train and eval never share one. ``split="all"`` (the default) has
no such limits.

Everything random comes from the seed: the plan (texts, disfluencies, voices, rates, line
conditions) from one ``random.Random(seed)``, and each utterance's noise and losses from
``numpy.random.default_rng([seed, index])``, so rendering order and parallelism cannot change a
byte of the output.

Cost here (2 cores shared with other work, load 4–6, all ten default voices, 2 workers), side by
side in one run of ``generate_corpus(out, seed=2, per_type=34)`` (what ``parley corpus --per-type
34 --seed 2`` does): 306 utterances, 1,099 s of audio in 77.6 s, against 957 s in 59.5 s for the
former plain corpus (7 voices, fluent answers, white/pink noise): 1.3× the time. Festival's
start-up (one process per clause and per disfluent piece) is most of it; the babble bed costs
about 2 s once.
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import json
import random
import re
import wave
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from parley.media import g711
from parley.media.jitter import conceal
from parley.speech.noise import BABBLE_TALKERS, BABBLE_TEXTS, make_noise, mix_babble
from parley.speech.tts import SubprocessTts, TtsEngine, load_tts, render
from parley.speech.types import FRAME_SAMPLES, TELEPHONE_RATE, Question, SlotType

LABELS_FILE = "labels.jsonl"
DEFAULT_VOICES = (
    "flite:slt",
    "flite:kal16",
    "flite:awb",
    "flite:rms",
    "flite:kal",
    "festival:kal_diphone",
    "festival:ked_diphone",
    "festival:cmu_us_slt_arctic_hts",
    "espeak-ng:en-us",
    "espeak-ng:en-gb-x-rp+f3",
)
# Never in the training split: the evaluation has voices and a noise the priors never heard.
HELD_OUT_VOICES = frozenset({"festival:ked_diphone", "espeak-ng:en-gb-x-rp+f3"})
HELD_OUT_NOISES = frozenset({"street"})
SPLITS = ("all", "train", "eval")
VOICE_WEIGHTS = {"espeak-ng": 0.5}  # robotic: a hard case, not half the corpus
RATES = (0.8, 0.9, 1.0, 1.1, 1.25)
PITCHES = (0.9, 1.0, 1.12)
SNRS: tuple[float | None, ...] = (None, None, 25.0, 18.0, 12.0, 8.0)  # None: no added noise
NOISES = ("white", "pink", "babble", "babble", "street", "street")  # a draw, so weights by repeats
CODECS = ("PCMU", "PCMA")
LOSS_RATES = (0.0, 0.0, 0.02, 0.05)
LOSS_BURSTS = (1.0, 1.0, 3.0)  # mean lost frames per loss event (1: independent losses)
REFERENCE_DATE = date(2025, 3, 12)  # "today" for relative dates (a Wednesday)

# Common English names, all in pocketsphinx's en-us dictionary.
# fmt: off
FIRST_NAMES = (
    "oliver", "george", "harry", "jack", "noah", "charlie", "jacob", "thomas", "oscar", "william",
    "james", "henry", "david", "michael", "daniel", "peter", "paul", "andrew", "mark", "richard",
    "robert", "john", "emily", "olivia", "amelia", "isla", "ava", "jessica", "sophie", "grace", "lily",
    "chloe", "ella", "mia", "ruby", "lucy", "sarah", "hannah", "emma", "laura", "rachel", "rebecca",
    "mary", "susan", "karen", "helen", "claire"
)
LAST_NAMES = (
    "smith", "jones", "taylor", "brown", "williams", "wilson", "johnson", "davies", "robinson",
    "wright", "thompson", "evans", "walker", "white", "roberts", "green", "hall", "wood", "jackson",
    "clarke", "patel", "harris", "lewis", "young", "turner", "king", "baker", "hughes", "edwards",
    "cooper", "morris", "ward", "martin", "hill", "moore", "clark", "allen", "scott"
)
_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"
)
_TENS = (
    "_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"
)
_ORDINAL_ONES = (
    "_", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
    "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
    "eighteenth", "nineteenth"
)
# fmt: on
_ORDINAL_TENS = {20: "twentieth", 30: "thirtieth"}
# fmt: off
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")  # date.weekday()
# fmt: on


def number_words(n: int) -> str:
    """British English cardinal: 250 → "two hundred and fifty" (0 ≤ n < 1,000,000)."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"{n} out of range")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" and {number_words(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    words = f"{number_words(thousands)} thousand"
    if rest:
        words += f" and {number_words(rest)}" if rest < 100 else f" {number_words(rest)}"
    return words


def ordinal_words(n: int) -> str:
    """Ordinal 1..39: 21 → "twenty first"."""
    if n < 20:
        return _ORDINAL_ONES[n]
    tens, ones = divmod(n, 10)
    return _ORDINAL_TENS[n] if not ones else f"{_TENS[tens]} {_ORDINAL_ONES[ones]}"


def year_words(year: int) -> str:
    """1987 → "nineteen eighty seven", 2005 → "two thousand and five", 2024 → "twenty twenty four"."""
    if 2000 <= year < 2010:
        return number_words(year)
    high, low = divmod(year, 100)
    if low == 0:
        return f"{number_words(high)} hundred"
    return f"{number_words(high)} " + (f"oh {_ONES[low]}" if low < 10 else number_words(low))


def speak_digits(
    digits: str, rng: random.Random, zero: str | None = None, doubles: bool | None = None
) -> str:
    """Digits read one by one, zero as "zero" or "oh", a pair as "double X" (per caller habit)."""
    zero = zero or rng.choice(("zero", "oh"))
    doubles = rng.random() < 0.6 if doubles is None else doubles
    words = []
    i = 0
    while i < len(digits):
        word = zero if digits[i] == "0" else _ONES[int(digits[i])]
        pair = i + 1 < len(digits) and digits[i + 1] == digits[i]
        if doubles and pair and (i + 2 >= len(digits) or digits[i + 2] != digits[i]):
            words.append(f"double {word}")
            i += 2
        else:
            words.append(word)
            i += 1
    return " ".join(words)


def normalise_text(text: str) -> str:
    """Lower case, punctuation removed, single spaces (how free answers are compared)."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


@dataclass(frozen=True, slots=True)
class Answer:
    """One planned answer: what is said, what it means, and the question it answers."""

    slot_type: SlotType
    text: str
    value: Any
    prompt: str
    digit_count: int | None = None
    options: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    # the range the asking agent's rules allow (``Question.lowest``/``highest``), as an agent declares
    # it: a birth date 16 to 120 years back, a booking from today to a year ahead, office hours
    lowest: str = ""
    highest: str = ""


def _digits_answer(rng: random.Random) -> Answer:
    count = rng.randint(6, 10)
    digits = [str(rng.randint(0, 9)) for _ in range(count)]
    for _ in range(rng.randint(0, 2)):  # callers' numbers have pairs and zeros more than chance
        at = rng.randrange(count - 1)
        digits[at + 1] = digits[at] if rng.random() < 0.7 else "0"
    value = "".join(digits)
    carrier = rng.choice(("{}", "{}", "it's {}", "my account number is {}", "yeah it's {}"))
    return Answer(
        SlotType.DIGITS,
        carrier.format(speak_digits(value, rng)),
        value,
        "What is your account number?",
        count,
    )


def _phone_answer(rng: random.Random) -> Answer:
    kind = rng.choice(("mobile", "london", "geographic"))
    if kind == "mobile":
        digits = "07" + "".join(str(rng.randint(0, 9)) for _ in range(9))
        groups = (digits[:5], digits[5:])
    elif kind == "london":
        digits = "020" + rng.choice("378") + "".join(str(rng.randint(0, 9)) for _ in range(7))
        groups = (digits[:3], digits[3:7], digits[7:])
    else:
        digits = "01" + "".join(str(rng.randint(0, 9)) for _ in range(9))
        groups = (digits[:5], digits[5:])
    zero = rng.choice(("oh", "oh", "zero"))
    doubles = rng.random() < 0.6
    spoken = ", ".join(speak_digits(group, rng, zero, doubles) for group in groups)
    carrier = rng.choice(("{}", "{}", "it's {}", "my number is {}"))
    return Answer(
        SlotType.PHONE, carrier.format(spoken), digits, "What is the best number to call you on?", 11
    )


def _name_answer(rng: random.Random) -> Answer:
    part = rng.choice(("first", "last", "full"))
    first, last = rng.choice(FIRST_NAMES).title(), rng.choice(LAST_NAMES).title()
    if part == "first":
        name, pool, prompt = first, FIRST_NAMES, "What is your first name?"
    elif part == "last":
        name, pool, prompt = last, LAST_NAMES, "What is your surname?"
    else:
        name, pool, prompt = f"{first} {last}", (), "Can I take your full name?"
    carrier = rng.choice(("{}", "{}", "it's {}", "my name is {}", "{} speaking"))
    if part == "full":
        options = {
            name,
            *(f"{rng.choice(FIRST_NAMES).title()} {rng.choice(LAST_NAMES).title()}" for _ in range(9)),
        }
    else:
        options = {name, *(candidate.title() for candidate in rng.sample(pool, 9))}
    return Answer(
        SlotType.NAME,
        carrier.format(name),
        name,
        prompt,
        options=tuple(sorted(options)),
        extra={"name_part": part},
    )


def _spelled_answer(rng: random.Random) -> Answer:
    name = rng.choice([n for n in LAST_NAMES if len(n) <= 8]).upper()
    letters = " ".join(name)
    form = rng.choice(("{l}", "{l}", "{n}, {l}", "that's {l}", "it's {n}, spelt {l}"))
    return Answer(
        SlotType.SPELLED, form.format(l=letters, n=name.title()), name, "Could you spell your surname for me?"
    )


_YES = ("yes", "yeah", "yes please", "that's right", "correct", "yep", "sure", "yes it is", "absolutely")
_NO = ("no", "nope", "no thanks", "no it isn't", "not really", "no that's wrong", "no thank you")


def _yes_no_answer(rng: random.Random) -> Answer:
    agree = rng.random() < 0.5
    return Answer(SlotType.YES_NO, rng.choice(_YES if agree else _NO), agree, "Is that correct?")


def _date_answer(rng: random.Random) -> Answer:
    form = rng.choice(("day_of_month", "month_day", "birthday", "next_weekday", "tomorrow"))
    prompt = "What date would you like?"
    if form == "next_weekday":
        weekday = rng.randrange(7)
        ahead = (weekday - REFERENCE_DATE.weekday() - 1) % 7 + 1  # the first one after today
        value = REFERENCE_DATE + timedelta(days=ahead)
        text = f"next {_WEEKDAYS[weekday]}"
    elif form == "tomorrow":
        value = REFERENCE_DATE + timedelta(days=1)
        text = rng.choice(("tomorrow", "tomorrow please"))
    else:
        year = rng.randint(1950, 2005) if form == "birthday" else REFERENCE_DATE.year
        month = rng.randint(1, 12)
        day = rng.randint(1, calendar.monthrange(year, month)[1])
        value = date(year, month, day)
        if form != "birthday" and value < REFERENCE_DATE:  # no year said: the next such day, as read
            value = value.replace(year=year + 1)
        ordinal, month_name = ordinal_words(day), _MONTHS[month - 1]
        text = f"{month_name} {ordinal}" if form == "month_day" else f"the {ordinal} of {month_name}"
        if form == "birthday":
            text += f" {year_words(year)}"
            prompt = "What is your date of birth?"
    if form == "birthday":
        lowest, highest = REFERENCE_DATE.replace(year=REFERENCE_DATE.year - 120), REFERENCE_DATE.replace(
            year=REFERENCE_DATE.year - 16
        )
    else:
        lowest, highest = REFERENCE_DATE, REFERENCE_DATE.replace(year=REFERENCE_DATE.year + 1)
    return Answer(
        SlotType.DATE,
        text,
        value.isoformat(),
        prompt,
        extra={"reference_date": REFERENCE_DATE.isoformat()},
        lowest=lowest.isoformat(),
        highest=highest.isoformat(),
    )


def _clock_words(hour24: int, minute: int, rng: random.Random) -> str:
    """A time of day as callers say it: "half past ten", "quarter to three", "nine oh five"."""
    hour = hour24 % 12 or 12
    following = hour % 12 + 1
    forms = [f"{number_words(hour)} {number_words(minute) if minute >= 10 else f'oh {number_words(minute)}'}"]
    if minute == 0:
        forms = [f"{number_words(hour)} o'clock", number_words(hour)]
    elif minute == 30:
        forms += [f"half past {number_words(hour)}", f"half past {number_words(hour)}"]
    elif minute == 15:
        forms.append(f"quarter past {number_words(hour)}")
    elif minute == 45:
        forms.append(f"quarter to {number_words(following)}")
    elif minute < 30 and minute % 5 == 0:
        forms.append(f"{number_words(minute)} past {number_words(hour)}")
    text = rng.choice(forms)
    if rng.random() < 0.35:
        part = "in the morning" if hour24 < 12 else "in the afternoon" if hour24 < 18 else "in the evening"
        text += " " + rng.choice((part, part, "a m" if hour24 < 12 else "p m"))
    return text


def _time_answer(rng: random.Random) -> Answer:
    # Office hours, where a time said without "am"/"pm" means what the slot reader takes it to mean
    # (7 to 11 the morning, 12 to 6 the afternoon).
    hour24 = rng.randint(8, 17)
    minute = rng.choice((0, 0, 15, 30, 30, 45, rng.randrange(5, 60, 5)))
    text = rng.choice(("{}", "{}", "at {}", "can we say {}", "{} please", "about {}")).format(
        _clock_words(hour24, minute, rng)
    )
    return Answer(
        SlotType.TIME,
        text,
        time(hour24, minute).isoformat(),
        "What time would suit you?",
        lowest="08:00:00",
        highest="18:00:00",
    )


_CURRENCIES = (
    ("GBP", "pound", "pounds", "pence"),
    ("USD", "dollar", "dollars", "cents"),
    ("EUR", "euro", "euros", "cents"),
)


def _amount_answer(rng: random.Random) -> Answer:
    code, one, many, minor = _CURRENCIES[0] if rng.random() < 0.75 else rng.choice(_CURRENCIES[1:])
    scale = rng.choice(("small", "hundreds", "thousands"))
    if scale == "small":
        units = rng.randint(1, 99)
    elif scale == "hundreds":
        units = rng.randint(1, 9) * 100 + rng.choice((0, 0, 5, 10, 20, 25, 50, 75, rng.randint(1, 99)))
    else:
        units = rng.randint(1, 9) * 1000 + rng.choice((0, 0, 250, 500, rng.randint(1, 999)))
    cents = rng.choice((5, 10, 20, 25, 50, 75, 99)) if scale == "small" and rng.random() < 0.4 else 0
    words = f"{number_words(units)} {one if units == 1 else many}"
    if cents:
        words += rng.choice((f" {number_words(cents)}", f" and {number_words(cents)} {minor}"))
    text = rng.choice(("{}", "{}", "about {}", "it's {}")).format(words)
    value: int | float = units if not cents else round(units + cents / 100, 2)
    return Answer(
        SlotType.AMOUNT,
        text,
        {"value": value, "currency": code},
        "How much would you like to pay?",
        lowest="1",
        highest="100000",
    )


_MENUS = (
    (
        "Which do you need: billing, technical support, sales or cancellations?",
        ("billing", "technical support", "sales", "cancellations"),
    ),
    ("Is this about a card, a loan, a mortgage or savings?", ("card", "loan", "mortgage", "savings")),
    (
        "Would you like a call back in the morning, the afternoon or the evening?",
        ("morning", "afternoon", "evening"),
    ),
    ("Would you like to pay by card or by bank transfer?", ("card", "bank transfer")),
)


def _choice_answer(rng: random.Random) -> Answer:
    prompt, options = rng.choice(_MENUS)
    index = rng.randrange(len(options))
    option = options[index]
    form = rng.choice(("{o}", "{o}", "{o} please", "I'd like {o}", "option {n}", "the {ord} one"))
    text = form.format(o=option, n=number_words(index + 1), ord=ordinal_words(index + 1))
    return Answer(SlotType.CHOICE, text, option, prompt, options=options)


_REASONS = (
    ("I'd like to check the balance on my account", "balance"),
    ("I lost my card yesterday and I need a new one", "lost_card"),
    ("my card was declined at the shop this morning", "card_declined"),
    ("I want to change the address on my account", "change_address"),
    ("I need to make a payment on my credit card", "payment"),
    ("there's a payment on my statement I don't know anything about", "dispute"),
    ("I want to cancel my policy", "cancel"),
    ("can I speak to someone about my mortgage please", "mortgage"),
    ("I haven't received my statement this month", "statement"),
    ("my internet connection keeps dropping out", "tech_support"),
    ("I'm calling to book an appointment for next week", "appointment"),
    ("I'd like to talk to someone about a refund", "refund"),
)


def _free_answer(rng: random.Random) -> Answer:
    sentence, intent = rng.choice(_REASONS)
    text = rng.choice(("{}", "{}", "hi {}", "yes hello {}")).format(sentence)
    return Answer(
        SlotType.FREE, text, normalise_text(text), "How can I help you today?", extra={"intent": intent}
    )


ANSWER_MAKERS: dict[SlotType, Callable[[random.Random], Answer]] = {
    SlotType.DIGITS: _digits_answer,
    SlotType.PHONE: _phone_answer,
    SlotType.NAME: _name_answer,
    SlotType.SPELLED: _spelled_answer,
    SlotType.YES_NO: _yes_no_answer,
    SlotType.DATE: _date_answer,
    SlotType.TIME: _time_answer,
    SlotType.AMOUNT: _amount_answer,
    SlotType.CHOICE: _choice_answer,
    SlotType.FREE: _free_answer,
}


# --- disfluent callers -----------------------------------------------------------------------

DISFLUENCY_SHARES = {"hesitation": 0.10, "restart": 0.07, "correction": 0.08}  # ~25 % disfluent
FILLERS = (
    "uh", "um", "er", "erm", "let me see", "hang on", "hang on a second", "just a moment",
    "let me think", "oh what is it",
)  # fmt: skip
SHORT_FILLERS = ("uh", "um", "er")
FILLER_WORDS = frozenset({"uh", "um", "er", "erm", "hmm"})  # not part of a free answer's transcript
CORRECTION_MARKERS = ("no sorry", "no wait", "sorry I mean", "no no", "actually", "oh sorry")


@dataclass(frozen=True, slots=True)
class Piece:
    """One stretch of speech rendered on its own, and the silence the caller leaves after it."""

    text: str
    pause_s: float = 0.0


def _pause(rng: random.Random, low: float = 0.15, high: float = 0.7) -> float:
    return round(rng.uniform(low, high), 2)


def _cut_points(words: list[str]) -> list[int]:
    """Word boundaries a caller can stop at (not straight after "double")."""
    return [i for i in range(1, len(words)) if words[i - 1].rstrip(",") != "double"]


def _hesitation(answer: Answer, rng: random.Random) -> list[Piece]:
    """ "um, it's four two seven" or "four two seven, uh, one nine three"."""
    words = answer.text.split()
    cuts = _cut_points(words)
    if len(words) >= 4 and cuts and rng.random() < 0.35:
        cut = rng.choice(cuts)
        return [
            Piece(" ".join(words[:cut]).rstrip(","), _pause(rng)),
            Piece(rng.choice(SHORT_FILLERS), _pause(rng)),
            Piece(" ".join(words[cut:])),
        ]
    return [Piece(rng.choice(FILLERS), _pause(rng, 0.3, 0.9)), Piece(answer.text)]


def _restart(answer: Answer, rng: random.Random) -> list[Piece]:
    """ "it's four two... it's four two seven one": a false start, then the whole answer."""
    words = answer.text.split()
    target = len(words) * rng.uniform(0.3, 0.6)
    cut = min(_cut_points(words) or [len(words)], key=lambda i: abs(i - target))
    return [Piece(" ".join(words[:cut]).rstrip(","), _pause(rng)), Piece(answer.text)]


def _other(options: Iterable[str], value: str, rng: random.Random) -> str | None:
    others = sorted(set(options) - {value})
    return rng.choice(others) if others else None


def _wrong_start(answer: Answer, rng: random.Random) -> str | None:
    """What a caller says before correcting themselves to ``answer`` (None: no correction fits)."""
    value = answer.value
    if answer.slot_type in (SlotType.DIGITS, SlotType.PHONE):
        digits = list(value[: rng.randint(2, min(5, len(value) - 1))])
        digits[-1] = rng.choice([d for d in "0123456789" if d != digits[-1]])
        return speak_digits("".join(digits), rng)
    if answer.slot_type in (SlotType.NAME, SlotType.CHOICE):
        return _other(answer.options, value, rng)
    if answer.slot_type is SlotType.SPELLED:
        letters = list(value[: rng.randint(2, len(value) - 1)])
        letters[-1] = rng.choice([c for c in "ABCDEFGHIJKLMNOPRSTUVWY" if c != letters[-1]])
        return " ".join(letters)
    if answer.slot_type is SlotType.YES_NO:
        return "no" if value else "yes"
    if answer.slot_type is SlotType.DATE:
        day = date.fromisoformat(value)
        if answer.text.startswith("next "):
            return f"next {_WEEKDAYS[(day.weekday() + rng.choice((1, 2, 5, 6))) % 7]}"
        if "tomorrow" in answer.text:
            return "today"
        ordinal = ordinal_words(day.day)
        wrong = min(28, max(1, day.day + rng.choice((-2, -1, 1, 2))))
        wrong = wrong if wrong != day.day else day.day % 28 + 1
        return answer.text[: answer.text.index(ordinal)] + ordinal_words(wrong)  # "the fourth"
    if answer.slot_type is SlotType.TIME:
        said = time.fromisoformat(value)
        wrong = (said.hour - 8 + rng.choice((1, 2, 3, 5))) % 10 + 8  # another office hour
        return _clock_words(wrong, said.minute, rng)
    if answer.slot_type is SlotType.AMOUNT:
        units = int(value["value"])
        many = next(words[2] for words in _CURRENCIES if words[0] == value["currency"])
        wrong = units + rng.choice((-10, -5, -1, 1, 5, 10, 100))
        wrong = wrong if wrong > 0 and wrong != units else units + 10
        return f"{number_words(wrong)} {many}"
    return None  # free speech: nothing to correct


def _correction(answer: Answer, rng: random.Random) -> list[Piece] | None:
    """ "four two, no sorry, four three ...": a wrong start, a repair marker, the right answer."""
    wrong = _wrong_start(answer, rng)
    if wrong is None:
        return None
    marker = rng.choice(CORRECTION_MARKERS)
    return [Piece(wrong, _pause(rng, 0.05, 0.4)), Piece(marker, _pause(rng, 0.05, 0.3)), Piece(answer.text)]


def disfluent(answer: Answer, rng: random.Random) -> tuple[str | None, tuple[Piece, ...]]:
    """(disfluency kind or None, the pieces the caller says) for ``answer``: about 25 % of
    callers hesitate, restart or correct themselves (see :data:`DISFLUENCY_SHARES`)."""
    draw, kind = rng.random(), None
    for candidate, share in DISFLUENCY_SHARES.items():
        if draw < share:
            kind = candidate
            break
        draw -= share
    if kind is None:
        return None, (Piece(answer.text),)
    pieces = None
    if kind == "correction":
        pieces = _correction(answer, rng)
        if pieces is None:
            kind = "hesitation"
    if kind == "restart":
        pieces = _restart(answer, rng)
    elif pieces is None:
        pieces = _hesitation(answer, rng)
    return kind, tuple(pieces)


def spoken_text(pieces: Iterable[Piece]) -> str:
    """What the caller said, pieces joined by commas (where they paused)."""
    return ", ".join(piece.text for piece in pieces)


def transcript_value(answer: Answer, pieces: Iterable[Piece]) -> Any:
    """The label's value: the final intended value; for free speech, the words said (fillers out)."""
    if answer.slot_type is not SlotType.FREE:
        return answer.value
    return " ".join(w for w in normalise_text(spoken_text(pieces)).split() if w not in FILLER_WORDS)


# --- telephone line --------------------------------------------------------------------------


def speech_power(pcm: np.ndarray, frame: int = FRAME_SAMPLES) -> float:
    """Mean power of the frames within 30 dB of the loudest (silence does not dilute the SNR)."""
    usable = len(pcm) - len(pcm) % frame
    if usable == 0:
        return float(np.mean(pcm.astype(np.float64) ** 2)) if len(pcm) else 0.0
    powers = np.mean(pcm[:usable].astype(np.float64).reshape(-1, frame) ** 2, axis=1)
    loud = powers[powers >= powers.max() * 1e-3]
    return float(loud.mean())


@dataclass(frozen=True, slots=True)
class Line:
    """The simulated phone line one utterance goes through."""

    snr_db: float | None = None
    noise: str = "white"
    loss_rate: float = 0.0
    lead_s: float = 0.3
    tail_s: float = 0.5
    codec: str = "PCMU"
    loss_burst: float = 1.0  # mean frames lost per loss event (Gilbert model; 1: independent)


def lost_frames(frames: int, rate: float, burst: float, rng: np.random.Generator) -> np.ndarray:
    """Which of ``frames`` packets are lost: independently at ``rate``, or in bursts of mean length
    ``burst`` with the same long-run rate (two-state Gilbert model)."""
    if rate <= 0:
        return np.zeros(frames, dtype=bool)
    if burst <= 1.0:
        return rng.random(frames) < rate
    leave = 1.0 / burst  # P(bad -> good)
    enter = min(1.0, rate * leave / (1.0 - rate))  # P(good -> bad), so that loss = rate
    draws = rng.random(frames)
    lost = np.empty(frames, dtype=bool)
    bad = False
    for index, draw in enumerate(draws):
        bad = draw >= leave if bad else draw < enter
        lost[index] = bad
    return lost


def degrade(
    pcm: np.ndarray, line: Line, rng: np.random.Generator, babble: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """Send 8 kHz int16 ``pcm`` down ``line``: (received int16 audio, frames lost and concealed).

    ``babble`` is the babble bed (:func:`parley.speech.noise.mix_babble`) for babble lines.
    """
    lead = round(line.lead_s * TELEPHONE_RATE)
    total = lead + len(pcm) + round(line.tail_s * TELEPHONE_RATE)
    total += -total % FRAME_SAMPLES
    signal = np.zeros(total, dtype=np.float64)
    signal[lead : lead + len(pcm)] = pcm
    if line.snr_db is not None:
        noise_power = speech_power(pcm) / 10 ** (line.snr_db / 10)
        signal += make_noise(line.noise, total, rng, babble) * np.sqrt(noise_power)
    received = g711.decode(line.codec, g711.encode(line.codec, signal))  # rounds, clips to int16 first
    lost = 0
    if line.loss_rate > 0:
        drops = lost_frames(total // FRAME_SAMPLES, line.loss_rate, line.loss_burst, rng)
        frames = received.reshape(-1, FRAME_SAMPLES).copy()
        last_good: np.ndarray | None = None
        run = 0
        for index, dropped in enumerate(drops):
            if dropped:
                run += 1
                frames[index] = conceal(last_good, run, FRAME_SAMPLES)
                lost += 1
            else:
                run = 0
                last_good = frames[index]
        received = frames.reshape(-1)
    return received, lost


def write_wav(path: Path, pcm: np.ndarray, rate: int = TELEPHONE_RATE) -> None:
    """Write mono 16-bit PCM (byte-reproducible: no timestamps in WAV headers)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.astype("<i2").tobytes())


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(int16 samples, sample rate) of a mono 16-bit WAV."""
    with wave.open(str(path), "rb") as source:
        if source.getnchannels() != 1 or source.getsampwidth() != 2:
            raise ValueError(f"{path}: not mono 16-bit")
        return np.frombuffer(source.readframes(source.getnframes()), dtype="<i2").astype(
            np.int16
        ), source.getframerate()


# --- planning and rendering ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Utterance:
    """One planned corpus item."""

    index: int
    id: str
    answer: Answer
    engine: str
    voice: str
    rate: float
    pitch: float
    line: Line
    disfluency: str | None = None  # "hesitation", "restart", "correction" or None (fluent)
    pieces: tuple[Piece, ...] = ()  # what is said, in order (empty: just the answer)

    @property
    def said(self) -> tuple[Piece, ...]:
        """The pieces the caller says (the plain answer if none were planned)."""
        return self.pieces or (Piece(self.answer.text),)

    @property
    def text(self) -> str:
        """Everything the caller says."""
        return spoken_text(self.said)


def parse_voices(voices: Iterable[str]) -> list[tuple[str, str]]:
    """``["flite:slt", "espeak-ng:en-us,festival:kal_diphone"]`` → [(engine, voice), ...]."""
    parsed = []
    for item in voices:
        for spec in filter(None, (part.strip() for part in item.split(","))):
            engine, sep, voice = spec.partition(":")
            if not sep or not engine or not voice:
                raise ValueError(f"voice {spec!r} is not ENGINE:VOICE (e.g. flite:slt)")
            parsed.append((engine, voice))
    return parsed


def available_voices(voices: Iterable[str] = DEFAULT_VOICES) -> list[tuple[str, str]]:
    """The (engine, voice) pairs of ``voices`` installed on this machine."""
    found = []
    for engine_name, voice in parse_voices(voices):
        try:
            engine = load_tts(engine_name)
        except LookupError:
            continue
        if voice.partition("+")[0] in engine.voices():
            found.append((engine_name, voice))
    return found


def voice_spec(engine: str, voice: str) -> str:
    """``("flite", "slt")`` → ``"flite:slt"``."""
    return f"{engine}:{voice}"


def pair_allowed(split: str, engine: str, voice: str, text: str) -> bool:
    """Whether ``split`` may have ``voice`` say ``text``.

    Training and evaluation corpora must not share a (voice, text) pair, which short answers
    ("yes", "card") would by chance: a stable hash of each pair assigns it to one split. Held-out
    voices are evaluation-only, so they may say anything there.
    """
    if split == "all":
        return True
    spec = voice_spec(engine, voice)
    if spec in HELD_OUT_VOICES:
        return split == "eval"
    bucket = hashlib.sha256(f"{spec}|{normalise_text(text)}".encode()).digest()[0] & 1
    return bucket == (0 if split == "train" else 1)


def plan_corpus(
    seed: int,
    per_type: int,
    voices: list[tuple[str, str]],
    pitch_support: Callable[[str, str], bool] = lambda engine, voice: True,
    slot_types: Iterable[SlotType] = SlotType,
    split: str = "all",
) -> list[Utterance]:
    """Decide every utterance (text, disfluency, voice, rate, pitch, line) from ``seed`` alone.

    ``split`` "train" leaves out :data:`HELD_OUT_VOICES` and :data:`HELD_OUT_NOISES`; "train" and
    "eval" never give the same (voice, text) pair (:func:`pair_allowed`); "all" has no limits.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    if split == "train":
        voices = [v for v in voices if voice_spec(*v) not in HELD_OUT_VOICES]
    if not voices:
        raise ValueError(
            "no voices to render with" + (" (all are held out of training)" * (split == "train"))
        )
    noises = [n for n in NOISES if split != "train" or n not in HELD_OUT_NOISES]
    rng = random.Random(seed)
    plan = []
    for slot_type in slot_types:
        for k in range(per_type):
            while True:  # a few answers have no (voice, text) pair left in this split: draw again
                answer = ANSWER_MAKERS[slot_type](rng)
                disfluency, pieces = disfluent(answer, rng)
                text = spoken_text(pieces)
                allowed = [v for v in voices if pair_allowed(split, *v, text)]
                if allowed:
                    break
            weights = [VOICE_WEIGHTS.get(engine, 1.0) for engine, _ in allowed]
            engine, voice = rng.choices(allowed, weights)[0]
            rate = rng.choice(RATES)
            pitch = rng.choice(PITCHES) if pitch_support(engine, voice) else 1.0
            line = Line(
                snr_db=rng.choice(SNRS),
                noise=rng.choice(noises),
                loss_rate=rng.choice(LOSS_RATES),
                lead_s=round(rng.uniform(0.2, 0.5), 2),
                tail_s=round(rng.uniform(0.4, 0.8), 2),
                codec=rng.choice(CODECS),
                loss_burst=rng.choice(LOSS_BURSTS),
            )
            index = len(plan)
            plan.append(
                Utterance(
                    index,
                    f"{slot_type.value}-{k:04d}",
                    answer,
                    engine,
                    voice,
                    rate,
                    pitch,
                    line,
                    disfluency,
                    pieces,
                )
            )
    return plan


def label(
    utterance: Utterance, seed: int, lost_frames: int, samples: int, split: str = "all"
) -> dict[str, Any]:
    """The labels.jsonl record of one rendered utterance."""
    answer = utterance.answer
    line = utterance.line
    question: dict[str, Any] = {
        "prompt": answer.prompt,
        "digit_count": answer.digit_count,
        "options": list(answer.options),
    }
    if "reference_date" in answer.extra:
        question["reference_date"] = answer.extra["reference_date"]
    if answer.lowest or answer.highest:
        question.update(lowest=answer.lowest, highest=answer.highest)
    record: dict[str, Any] = {
        "id": utterance.id,
        "file": f"{utterance.id}.wav",
        "slot_type": answer.slot_type.value,
        "text": utterance.text,
        "value": transcript_value(answer, utterance.said),
        "answer_text": answer.text,
        "disfluency": utterance.disfluency,
        "voice": voice_spec(utterance.engine, utterance.voice),
        "held_out_voice": voice_spec(utterance.engine, utterance.voice) in HELD_OUT_VOICES,
        "rate": utterance.rate,
        "pitch": utterance.pitch,
        "snr_db": line.snr_db,
        "noise": line.noise if line.snr_db is not None else None,
        "codec": line.codec,
        "loss_rate": line.loss_rate,
        "loss_burst": line.loss_burst if line.loss_rate > 0 else None,
        "lost_frames": lost_frames,
        "seed": seed,
        "split": split,
        "question": question,
        "duration_s": round(samples / TELEPHONE_RATE, 3),
        "speech_start_s": line.lead_s,
    }
    record.update({key: value for key, value in answer.extra.items() if key != "reference_date"})
    return record


def question_for(record: dict[str, Any]) -> Question:
    """The :class:`Question` a labelled utterance answers (for engines and the arbiter)."""
    question = record["question"]
    return Question(
        slot_type=SlotType(record["slot_type"]),
        prompt=question.get("prompt", ""),
        digit_count=question.get("digit_count"),
        options=tuple(question.get("options", ())),
        lowest=question.get("lowest", ""),
        highest=question.get("highest", ""),
        today=question.get("reference_date", ""),
    )


def read_labels(directory: Path) -> list[dict[str, Any]]:
    """The records of ``directory/labels.jsonl``."""
    with (Path(directory) / LABELS_FILE).open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def babble_talkers(
    voices: list[tuple[str, str]], pitch_support: Callable[[str, str], bool]
) -> list[tuple[str, str, float, float]]:
    """The babble bed's talkers (engine, voice, rate, pitch): the corpus's voices in turn, the
    quick non-festival ones if there are any (flite before espeak-ng), each at its own pitch and rate."""
    quick = [v for v in voices if v[0] != "festival"] or list(voices)
    quick.sort(key=lambda v: (VOICE_WEIGHTS.get(v[0], 1.0) < 1, v))  # down-weighted (robotic) voices last
    pitches, rates = (1.0, 1.12, 0.9, 1.06, 0.94), (1.0, 1.1, 0.92, 1.05, 0.96)
    talkers = []
    for i in range(BABBLE_TALKERS):
        engine, voice = quick[i % len(quick)]
        pitch = pitches[i % len(pitches)] if pitch_support(engine, voice) else 1.0
        talkers.append((engine, voice, rates[i % len(rates)], pitch))
    return talkers


_BABBLE_BEDS: dict[tuple[tuple[str, str, float, float], ...], np.ndarray] = {}


async def babble_bed(
    engines: dict[str, TtsEngine], talkers: list[tuple[str, str, float, float]]
) -> np.ndarray:
    """Render and mix the babble bed of ``talkers`` (each reads :data:`BABBLE_TEXTS` from its own
    starting sentence); cached per talker list for the life of the process."""
    key = tuple(talkers)
    if key not in _BABBLE_BEDS:
        tracks = []
        for i, (engine, voice, rate, pitch) in enumerate(talkers):
            start = i * 2 % len(BABBLE_TEXTS)
            text = " ".join(BABBLE_TEXTS[start:] + BABBLE_TEXTS[:start])
            tracks.append(await render(engines[engine], text, voice, rate, pitch))
        _BABBLE_BEDS[key] = mix_babble(tracks)
    return _BABBLE_BEDS[key]


async def speak(engine: TtsEngine, utterance: Utterance) -> np.ndarray:
    """The caller's speech (8 kHz int16): each piece rendered, the planned pauses between them."""
    parts = []
    for piece in utterance.said:
        parts.append(await render(engine, piece.text, utterance.voice, utterance.rate, utterance.pitch))
        if piece.pause_s:
            parts.append(np.zeros(round(piece.pause_s * TELEPHONE_RATE), dtype=np.int16))
    return np.concatenate(parts)


async def generate_corpus(
    out: Path,
    seed: int = 0,
    per_type: int = 20,
    voices: Iterable[str] | None = None,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
    split: str = "all",
) -> list[dict[str, Any]]:
    """Render the corpus for ``seed`` into ``out`` (WAVs + labels.jsonl); returns the labels.

    ``voices`` are ENGINE:VOICE specs (default: every installed one of :data:`DEFAULT_VOICES`).
    At most ``workers`` utterances render at once. ``split`` is "train", "eval" or "all" (see
    :func:`plan_corpus`): render the priors' training corpus with "train" and the benchmark's with
    "eval", so the evaluation has voices and noise the training never had.
    """
    chosen = parse_voices(voices) if voices else available_voices()
    engines: dict[str, TtsEngine] = {}
    for engine_name, voice in chosen:
        if engine_name not in engines:
            try:
                engines[engine_name] = load_tts(engine_name)
            except LookupError as exc:
                raise ValueError(str(exc)) from exc
        if voice.partition("+")[0] not in engines[engine_name].voices():
            raise ValueError(
                f"{engine_name} has no voice {voice!r} here (have {engines[engine_name].voices()})"
            )

    def pitch_support(engine_name: str, voice: str) -> bool:
        engine = engines[engine_name]
        return engine.supports_pitch(voice) if isinstance(engine, SubprocessTts) else True

    plan = plan_corpus(seed, per_type, chosen, pitch_support, split=split)
    babble = None
    if any(u.line.noise == "babble" and u.line.snr_db is not None for u in plan):
        in_split = [v for v in chosen if split != "train" or voice_spec(*v) not in HELD_OUT_VOICES]
        babble = await babble_bed(engines, babble_talkers(in_split, pitch_support))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gate = asyncio.Semaphore(max(1, workers))
    done = 0

    def finish(utterance: Utterance, pcm: np.ndarray) -> dict[str, Any]:
        rng = np.random.default_rng([seed, utterance.index])
        received, lost = degrade(pcm, utterance.line, rng, babble)
        write_wav(out / f"{utterance.id}.wav", received)
        return label(utterance, seed, lost, len(received), split)

    async def one(utterance: Utterance) -> dict[str, Any]:
        nonlocal done
        async with gate:
            pcm = await speak(engines[utterance.engine], utterance)
            record = await asyncio.to_thread(finish, utterance, pcm)
        done += 1
        if progress is not None:
            progress(done, len(plan))
        return record

    async with asyncio.TaskGroup() as group:  # one failure cancels the rest
        tasks = [group.create_task(one(utterance)) for utterance in plan]
    records = [task.result() for task in tasks]
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    tmp = out / f".{LABELS_FILE}.tmp"
    tmp.write_text(text)
    tmp.replace(out / LABELS_FILE)
    return records
