"""The one slot reader (arbiter, dialogue and scoring alike), on spoken and written transcripts."""

import calendar
from datetime import date, time
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.nlu.extractors import COMMON_SURNAME_RANK, Money, _without_restart_letters, nearest_surname
from parley.nlu.namelists import common_last_names
from parley.nlu.question import Question, SlotType
from parley.nlu.reader import in_range, read_slot, same_value
from parley.speech.corpus import number_words, ordinal_words, speak_digits, year_words
from parley.speech.evaluation import is_correct, word_error_rate

REFERENCE = date(2025, 3, 12)  # a Wednesday
MONTH_NAMES = list(calendar.month_name)[1:]


def value(slot: SlotType, text: str, **question) -> object:
    reading = read_slot(Question(slot, **question), text, REFERENCE)
    return reading.value if reading else None


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("four two seven one", "4271"),
        ("yeah it's nine eight two five nine seven nine", "9825979"),
        ("double seven triple one", "77111"),
        ("4 2 seven", "427"),
        ("My account number is 427193.", "427193"),
        ("427-193", "427193"),
        ("4 2 7", "427"),
        ("my account number is", None),
    ],
)
def test_digits_spoken_and_written(text, digits):
    assert value(SlotType.DIGITS, text) == digits


def test_digit_count_decides_completeness():
    question = Question(SlotType.DIGITS, digit_count=5)
    assert read_slot(question, "nine nine three zero five").complete
    assert not read_slot(question, "nine nine three").complete
    assert read_slot(question, "the weather is nice") is None


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("four two, no, four three one one", "4311"),
        ("4-2, no sorry, 4-3-1-1.", "4311"),
        ("it's four two seven... sorry, four two eight one", "4281"),
    ],
)
def test_corrections_keep_what_follows(text, digits):
    assert value(SlotType.DIGITS, text, digit_count=4) == digits


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("two hundred and fifty pounds", Money(Decimal(250), "GBP")),
        ("it's seven hundred and fifty euros", Money(Decimal(750), "EUR")),
        ("fifty five dollars and twenty cents", Money(Decimal("55.20"), "USD")),
        ("$1,500.00", Money(Decimal("1500.00"), "USD")),
        ("It was forty dollars.", Money(Decimal(40), "USD")),
        ("£75", Money(Decimal(75), "GBP")),
        ("It's 500 and 5 pounds.", Money(Decimal(505), "GBP")),  # "five hundred and five"
        ("6,200 and 45 euros", Money(Decimal(6245), "EUR")),
        ("300 and 500 pounds", Money(Decimal(500), "GBP")),  # not one number: the one before the currency
        ("lots of money", None),
    ],
)
def test_amounts_spoken_and_written(text, amount):
    assert value(SlotType.AMOUNT, text) == amount


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("the sixth of June nineteen sixty five", date(1965, 6, 6)),
        ("the twenty first of may two thousand and five", date(2005, 5, 21)),
        ("It was on the 3rd of March 1980.", date(1980, 3, 3)),
        ("3 March 1980", date(1980, 3, 3)),
        ("the 21st of June", date(2025, 6, 21)),
        ("3/14", date(2025, 3, 14)),
        ("next tuesday", date(2025, 3, 18)),
        ("tomorrow please", date(2025, 3, 13)),
        ("sometime soon", None),
    ],
)
def test_dates_spoken_and_written(text, day):
    assert value(SlotType.DATE, text) == day


@pytest.mark.parametrize(
    ("slot", "text", "options", "expected"),
    [
        (SlotType.YES_NO, "yeah that's right", (), True),
        (SlotType.YES_NO, "Yes.", (), True),
        (SlotType.YES_NO, "That's not right.", (), False),
        (SlotType.YES_NO, "not really", (), False),
        (SlotType.SPELLED, "Clark, C L A R K", (), "CLARK"),
        (SlotType.SPELLED, "S-M-I-T-H.", (), "SMITH"),
        (SlotType.NAME, "it is smith", ("Smith", "Jones"), "Smith"),
        (SlotType.NAME, "O'Brien", (), "O'Brien"),
        (SlotType.CHOICE, "the second one", ("morning", "afternoon"), "afternoon"),
        (SlotType.CHOICE, "option one", ("billing", "sales"), "billing"),
        (SlotType.CHOICE, "By bank transfer, please.", ("card", "bank transfer"), "bank transfer"),
    ],
)
def test_other_slot_values(slot, text, options, expected):
    assert value(slot, text, options=options) == expected


# --- property tests: a value rendered as a caller says it and as a recogniser writes it reads back ---

digit_strings = st.text("0123456789", min_size=4, max_size=10)


@settings(max_examples=150, deadline=None)
@given(
    digit_strings,
    st.sampled_from(["{}", "my account number is {}", "it's {}", "yes it's {} thanks"]),
    st.randoms(use_true_random=False),
)
def test_digits_read_back_spoken_and_written(digits, carrier, rng):
    count = len(digits)
    written = [digits, " ".join(digits), "-".join(digits), f"{digits[:3]}-{digits[3:]}"]
    renderings = [speak_digits(digits, rng), *(w + "." for w in written)]
    for rendering in renderings:
        text = carrier.format(rendering)
        assert value(SlotType.DIGITS, text, digit_count=count) == digits, text


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 9999),
    st.sampled_from([0, 0, 5, 20, 50, 99]),
    st.sampled_from(
        [("GBP", "£", "pounds", "pence"), ("USD", "$", "dollars", "cents"), ("EUR", "€", "euros", "cents")]
    ),
)
def test_amounts_read_back_spoken_and_written(units, cents, currency):
    code, symbol, many, minor = currency
    expected = {"value": units + cents / 100, "currency": code}
    spoken = f"{number_words(units)} {many}" + (f" and {number_words(cents)} {minor}" if cents else "")
    written = f"{symbol}{units:,}" + (f".{cents:02d}" if cents else "")
    for text in (spoken, f"it's {spoken}", written, f"It was {written}.", f"{written}."):
        reading = read_slot(Question(SlotType.AMOUNT), text, REFERENCE)
        assert reading is not None and same_value(reading.value, expected), text


@settings(max_examples=150, deadline=None)
@given(st.dates(date(1930, 1, 1), date(2024, 12, 31)))
def test_dates_read_back_spoken_and_written(day):
    month = MONTH_NAMES[day.month - 1]
    spoken = [
        f"the {ordinal_words(day.day)} of {month} {year_words(day.year)}",
        f"{month} {ordinal_words(day.day)} {year_words(day.year)}",
    ]
    suffix = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd", 31: "st"}.get(day.day, "th")
    written = [
        f"{month} {day.day}{suffix}, {day.year}.",
        f"The {day.day}{suffix} of {month} {day.year}.",
        f"{day.day} {month} {day.year}",
        f"{day.month}/{day.day}/{day.year}",
        f"{month} {day.day}, {day.year}.",
    ]
    for text in spoken + written:
        assert value(SlotType.DATE, text) == day, text


@settings(max_examples=150, deadline=None)
@given(st.integers(8, 17), st.integers(0, 59))
def test_times_read_back_spoken_and_written(hour, minute):
    """Office hours said without am/pm, as callers say them and as a neural recogniser writes them."""
    said = time(hour, minute)
    twelve = hour % 12 or 12
    minutes = number_words(minute) if minute >= 10 else f"oh {number_words(minute)}"
    spoken = [f"{number_words(twelve)} {minutes}" if minute else f"{number_words(twelve)} o'clock"]
    if minute == 30:
        spoken += [f"half past {number_words(twelve)}", f"have past {twelve}", f"half {number_words(twelve)}"]
    if minute == 45:
        spoken.append(f"quarter to {number_words(twelve % 12 + 1)}")
    marker = "a.m." if hour < 12 else "p.m."
    written = [f"{twelve}:{minute:02d}", f"At {twelve}:{minute:02d} {marker}", f"{hour}:{minute:02d}"]
    written += [f"At {twelve}{minute:02d}.", f"{twelve}{minute:02d} {marker}"]  # "845 am", run together
    for text in spoken + written:
        assert value(SlotType.TIME, text) == said, text


@pytest.mark.parametrize(
    ("text", "letters"),
    [
        ("It's Jones, or spell J-O-N-S.", "JONES"),  # the word said first, a letter short in the spelling
        ("Allen, A-L-E-N.", "ALLEN"),  # a doubled letter heard once
        ("K-W-L-C-Z-Y-K.", "KWLCZYK"),  # no word said, no surname near: the letters as heard
        ("Smith, S-M-Y-T-H.", "SMYTH"),  # a different letter is a different name
        ("Brown, B-R-O-W-N.", "BROWN"),
        ("Clark, B-L-A-R-K.", "CLARK"),  # B for C: their names rhyme
        ("Roberts, R-O-B-D-R-P-S.", "ROBERTS"),  # two rhyming letters in a longer name
        ("Gray, G-R-E-Y.", "GREY"),  # A and E do not rhyme: the spelling says which name
        ("Reid, R-E-E-D.", "REED"),
        ("Clark, B-L-A-R-T.", "BLART"),  # two letters off in a short name: the letters as heard
    ],
)
def test_a_spelling_that_sounds_like_the_word_said_before_it_is_that_word(text, letters):
    assert value(SlotType.SPELLED, text) == letters


@pytest.mark.parametrize(
    ("text", "letters"),
    [
        ("R-O-B-R-O-B-I-N-S-O-N.", "ROBINSON"),  # began again after R-O-B
        ("R-O-B, R-O-B-I-N-S-O-N", "ROBINSON"),  # docs/agents.md
        ("R-O-B-A-R-O-B-A-N-S-O-N", "ROBINSON"),  # the restart out, then a letter from ROBINSON
        ("L L O Y D", "LLOYD"),  # a doubled letter is no restart
        ("A B A B C D E F", "ABABCDEF"),  # nor is a repeated pair
    ],
)
def test_a_restarted_spelling_is_read_once(text, letters):
    assert value(SlotType.SPELLED, text) == letters


def _spellings_of(letters: str) -> tuple[str, ...]:
    return " ".join(letters), "-".join(letters) + ".", f"it's {' '.join(letters)}"


@settings(max_examples=100, deadline=None)
@given(st.text("ABCDEFGHIJKLMNOPRSTUVWY", min_size=3, max_size=9))
def test_spelling_read_back_spoken_and_written(letters):
    heard = letters
    if letters.lower() not in common_last_names(COMMON_SURNAME_RANK):
        heard = _without_restart_letters(letters)  # "ABCABCD": began again (above)
    near = nearest_surname(heard)  # letters a letter from a common surname read as it (below)
    for text in _spellings_of(letters):
        assert value(SlotType.SPELLED, text) == (near or heard), text


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(common_last_names(2000))), st.data())
def test_a_common_surname_misheard_in_one_letter_reads_as_it(surname, data):
    """One letter dropped, added or changed; kept when the letters spell another common surname, or lie
    a letter from several as common (then nothing says which one the caller meant)."""
    i = data.draw(st.integers(0, len(surname) - 1))
    letter = data.draw(st.sampled_from("abcdefghijklmnoprstuvwy"))
    heard = data.draw(
        st.sampled_from([surname[:i] + surname[i + 1 :], surname[:i] + letter + surname[i:],
                         surname[:i] + letter + surname[i + 1 :]])
    )  # fmt: skip
    for text in _spellings_of(heard.upper()):
        read = value(SlotType.SPELLED, text)
        assert read in (surname.upper(), heard.upper(), nearest_surname(heard.upper())), text
        if len(heard) >= 4 and heard not in common_last_names(COMMON_SURNAME_RANK):
            assert read == (nearest_surname(heard.upper()) or heard.upper()), text


@pytest.mark.parametrize(
    ("text", "read"),
    [
        ("T-A-Y-T. No, sorry. That's T-A-Y-L-L-R.", "TAYLOR"),  # whisper on a noisy line
        ("J-O-N-Y-S", "JONES"),  # JONAS is as near, but JONES far more common
        ("B R L W N", "BROWN"),
        ("S M Y T H", "SMYTH"),  # a surname of its own: kept
        ("It's Lewis.", "LEWIS"),  # named, not spelled: the name
        ("It's never.", None),  # a word that is no surname
        ("Please do not know my head.", None),  # a sentence is not a name
    ],
)
def test_spelled_names_read_as_the_common_surname_they_are_near(text, read):
    assert value(SlotType.SPELLED, text) == read


def test_word_error_rate_and_free_speech_scoring():
    assert word_error_rate("i lost my card", "i lost my card") == 0.0
    assert word_error_rate("i lost my card", "i lost a card") == 0.25
    assert word_error_rate("", "") == 0.0
    question = Question(SlotType.FREE)
    assert is_correct(question, "I lost my card yesterday.", "i lost my card yesterday")
    assert not is_correct(question, "eye last mike are", "I lost my card")


def test_is_correct_compares_normalised_values():
    assert is_correct(Question(SlotType.AMOUNT), "forty one pounds", {"value": 41, "currency": "GBP"})
    assert not is_correct(Question(SlotType.AMOUNT), "forty one euros", {"value": 41, "currency": "GBP"})
    assert is_correct(Question(SlotType.DATE), "next tuesday", "2025-03-18", REFERENCE)
    assert is_correct(Question(SlotType.DIGITS, digit_count=4), "four two seven one", "4271")
    assert not is_correct(Question(SlotType.DIGITS, digit_count=4), "four two seven", "427")


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("Hang on a second. Next Saturday.", date(2025, 3, 15)),  # "a second" is not the 2nd
        ("Next, next Sunday.", date(2025, 3, 16)),  # restarts are said once
        ("The 11th, the 11th of July.", date(2025, 7, 11)),
        ("January, January twelfth", date(2026, 1, 12)),
        ("the second of May", date(2025, 5, 2)),
        ("Dessert, does March 19, 1961.", date(1961, 3, 19)),  # a day numeral then a year
    ],
)
def test_dates_after_hesitations_and_restarts(text, day):
    assert value(SlotType.DATE, text) == day


@pytest.mark.parametrize(
    ("text", "digits"),
    [("6 W 6 4 W 4", "666444"), ("8 5 1 8 W 2", "851822"), ("W 6", "66"), ("It's W6279W46.", "66279446")],
)
def test_whisper_writes_double_as_w(text, digits):
    assert value(SlotType.DIGITS, text) == digits


@pytest.mark.parametrize(
    ("text", "count", "digits"),
    [
        ("0 to 0, 8, 6, 9, 7, 1 to 7, 8.", 11, "02086971278"),  # "two" written as "to"
        ("It's a 1 8 4 1 4 5 1 4 0 6", 11, "01841451406"),  # a leading "oh" written as "a"
        ("Go 1534930965.", 11, "01534930965"),
        ("5 1 4 double 019.", 7, "5140019"),
        ("It's a 1 8 4 1 4 5 1 4 0 6", 10, "1841451406"),  # no digit missing: "a" is a word
        ("I want to go to 3 shops", None, "3"),  # "to" next to one numeral only is a word
        ("four double zero double to one", 6, "400221"),  # "to" after "double"
        ("double for seven", 3, "447"),
    ],
)
def test_how_a_neural_recogniser_writes_half_heard_digits(text, count, digits):
    assert value(SlotType.PHONE if count == 11 else SlotType.DIGITS, text, digit_count=count) == digits


def test_a_date_naming_two_days_is_not_a_complete_answer():
    reading = read_slot(Question(SlotType.DATE), "the seventh of march monday twentieth that an", REFERENCE)
    assert reading is not None and not reading.complete


@pytest.mark.parametrize(
    ("slot", "text", "lowest", "highest", "inside"),
    [
        (SlotType.DATE, "the third of may nineteen eighty", "1905-03-12", "2009-03-12", True),
        (SlotType.DATE, "tomorrow", "1905-03-12", "2009-03-12", False),
        (SlotType.DATE, "March 3rd, 2020", "2025-03-12", "", False),
        (SlotType.DATE, "next friday", "2025-03-12", "", True),
        (SlotType.TIME, "half past seven in the morning", "08:00:00", "17:30:00", False),
        (SlotType.TIME, "5:30 pm", "08:00:00", "17:30:00", True),
        (SlotType.TIME, "quarter to six in the evening", "08:00:00", "17:30:00", False),
        (SlotType.AMOUNT, "£250,000.01", "1", "250000", False),
        (SlotType.AMOUNT, "two hundred and fifty dollars", "1", "250000", True),
        (SlotType.AMOUNT, "fifty pence", "1", "", False),
        (SlotType.DATE, "March 3rd, 2020", "", "", True),  # unbounded
        (SlotType.DATE, "March 3rd, 2020", "not a date", "", True),  # a bound of the wrong kind
    ],
)
def test_in_range_compares_the_value_read_with_the_questions_bounds(
    slot: SlotType, text: str, lowest: str, highest: str, inside: bool
) -> None:
    question = Question(slot, lowest=lowest, highest=highest)
    reading = read_slot(question, text, REFERENCE)
    assert reading is not None and reading.complete, text
    assert in_range(question, reading.value) is inside
