"""Entity extractors per slot type, with the spoken forms callers really use."""

from datetime import date, datetime, time
from decimal import Decimal

import pytest

from parley.nlu.extractors import SLOT_TYPES, Address, Money, extract, extract_name

REFERENCE = datetime(2025, 3, 12, 9, 0)  # a Wednesday morning


def value(slot_type, text, **kw):
    found = extract(slot_type, text, reference=REFERENCE, **kw)
    return found.value if found else None


@pytest.mark.parametrize(
    ("text", "digits", "expected"),
    [
        ("four two seven", None, "427"),
        ("four two double seven", None, "4277"),
        ("double seven triple one", None, "77111"),
        ("oh two oh, three oh two seven", None, "0203027"),
        ("forty two", None, "42"),
        ("forty-two", None, "42"),
        ("four forty two", None, "442"),
        ("4 2 7", None, "427"),
        ("my account number is four 2 seven one", 4, "4271"),
        ("nine eight um two five", None, "9825"),
        ("one hundred and five", None, "105"),
        ("it's four two seven and then one", 4, "4271"),  # two runs adding up to the expected count
        ("my policy is nine nine and my pin is one two three four", 4, "1234"),  # the run of the right length
        ("four two no four three", 2, "43"),  # the value after the correction
        ("four two sorry I mean four three", None, "43"),
        ("nought one", None, "01"),
        ("my account number is", None, None),
        ("oh I see", None, None),  # "oh" alone is not a zero
    ],
)
def test_digits(text, digits, expected):
    assert value("digits", text, digits=digits) == expected


def test_digit_count_decides_completeness():
    assert extract("digits", "nine nine three zero five", digits=5).complete
    assert not extract("digits", "nine nine three", digits=5).complete
    assert not extract("digits", "nine nine three zero five one", digits=5).complete  # too many
    dangling = extract("digits", "four two double")
    assert dangling.value == "42" and not dangling.complete  # "double" what?
    ended_in_cue = extract("digits", "four two seven one sorry", digits=4)
    assert ended_in_cue.value == "4271" and not ended_in_cue.complete and ended_in_cue.confidence < 0.5


def test_digits_confidence_and_span():
    spoken = "yeah it's four two seven"
    found = extract("digits", spoken)
    assert spoken[found.span[0] : found.span[1]] == "four two seven"
    assert extract("digits", "forty two").confidence < extract("digits", "four two").confidence


@pytest.mark.parametrize(
    ("text", "expected", "complete"),
    [
        ("oh seven seven double oh nine oh oh nine eight three", "07700900983", True),
        ("plus four four seven seven double oh nine oh oh nine eight three", "+447700900983", True),
        ("two oh two five five five oh one two three", "2025550123", True),
        ("my number is oh one six three two", "01632", False),
        ("five five five one two three four", "5551234", False),
    ],
)
def test_phone(text, expected, complete):
    found = extract("phone", text)
    assert (found.value, found.complete) == (expected, complete)


@pytest.mark.parametrize(
    ("text", "options", "expected"),
    [
        ("My last name is Smith", (), "Smith"),
        ("my name is John", (), "John"),
        ("this is Mary Jane", (), "Mary Jane"),
        ("Smith, S M I T H", (), "Smith"),
        ("Smyth, that's S M Y T H", (), "Smyth"),
        ("S as in Sam, M as in Mike, I, T, H", (), "Smith"),
        ("sierra mike india tango hotel", (), "Smith"),
        ("it's Smyth no Smith", (), "Smith"),
        ("it is smith please", ("Smith", "Jones"), "Smith"),
        ("it is smyth", ("Smith", "Jones"), "Smith"),  # fuzzy to the agent's list
        ("uh jones", ("Smith", "Jones"), "Jones"),
        ("it is brown", ("Smith", "Jones"), None),
        ("My", (), None),
        ("My last name", (), None),  # the start of a carrier phrase is not a name
        ("um", (), None),
        ("James. James.", (), "James"),  # said twice: one name
        ("Mary Jane", (), "Mary Jane"),
        ("M. M", (), None),  # two letters that are no name (whisper-tiny, for "Emma")
        ("M.", (), None),  # nor is one (whisper base, for "Emma")
        ("E-D.", (), "Ed"),  # two letters that are one
    ],
)
def test_names(text, options, expected):
    assert value("name", text, options=options) == expected


def test_unknown_names_are_kept_with_low_confidence():
    known, unknown = extract("name", "it's Smith"), extract("name", "it's Okonkwo")
    assert unknown.value == "Okonkwo" and unknown.confidence < 0.6 <= known.confidence


@pytest.mark.parametrize(
    ("text", "expected", "complete"),
    [
        ("S M I T H", "SMITH", True),
        ("Clark, C L A R K", "CLARK", True),
        ("S as in Sam, M as in Mike", "SM", True),
        ("S for Sugar M for Mother", "SM", True),
        ("double S E", "SSE", True),
        ("x ray yankee zulu", "XYZ", True),
        ("alpha bravo charlie", "ABC", True),
        ("bee ee ess tee", None, None),  # letter names alone are too ambiguous
        ("S as in Sam, M as in", "SM", False),  # the example word is still to come
        ("see you", None, None),
    ],
)
def test_spelled(text, expected, complete):
    found = extract("spelled", text)
    assert (found.value if found else None) == expected
    if found:
        assert found.complete == complete


@pytest.mark.parametrize(
    ("text", "expected", "confident"),
    [
        ("yes", True, True),
        ("yeah sure", True, True),
        ("that's right", True, True),
        ("I think so", True, False),
        ("probably", True, False),
        ("no", False, True),
        ("no thanks", False, True),
        ("that's not right", False, True),
        ("not really", False, False),
        ("I don't think so", False, False),
        ("I'm not sure", None, None),
        ("maybe", None, None),
        ("yes no", None, None),  # contradictory
        ("yes sorry I mean no", False, True),
        ("no actually yes", True, True),
        ("I", None, None),
    ],
)
def test_yes_no_with_hedges(text, expected, confident):
    found = extract("yes_no", text)
    assert (found.value if found else None) == expected
    if found:
        assert (found.confidence >= 0.9) == confident


@pytest.mark.parametrize(
    ("text", "expected", "complete"),
    [
        ("next Tuesday", date(2025, 3, 18), True),
        ("can we do next Tuesday please", date(2025, 3, 18), True),
        ("this coming friday", date(2025, 3, 14), True),
        ("the 3rd of May", date(2025, 5, 3), True),
        ("the third of may", date(2025, 5, 3), True),
        ("August twenty sixth", date(2025, 8, 26), True),
        ("the twenty first of may nineteen eighty", date(1980, 5, 21), True),
        ("the sixth of June nineteen sixty five", date(1965, 6, 6), True),
        ("tomorrow at half past two", date(2025, 3, 13), True),
        ("the day after tomorrow", date(2025, 3, 14), True),
        ("in two weeks", date(2025, 3, 26), True),
        ("the third", date(2025, 4, 3), True),  # the next 3rd of a month
        ("the third of", date(2025, 4, 3), False),  # a month may follow
        ("tuesday no wednesday", date(2025, 3, 19), True),
        ("may", date(2025, 5, 12), False),  # a month is not a day
        ("the thirty first of february", None, None),
        ("sometime soon", None, None),
    ],
)
def test_dates_relative_to_reference(text, expected, complete):
    found = extract("date", text, reference=REFERENCE)
    assert (found.value if found else None) == expected
    if found:
        assert found.complete == complete


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 pm", time(15, 0)),
        ("ten a m", time(10, 0)),
        ("half past two", time(14, 30)),  # no am/pm: contact-centre hours
        ("quarter to three", time(14, 45)),
        ("at ten thirty", time(10, 30)),
        ("tomorrow at half past two", time(14, 30)),
        ("two o'clock in the afternoon", time(14, 0)),
        ("at nine in the morning", time(9, 0)),
        ("at seven in the evening", time(19, 0)),
        ("noon", time(12, 0)),
        ("at three no at four", time(16, 0)),
        ("half past", None),
        ("next week", None),
    ],
)
def test_times(text, expected):
    assert value("time", text) == expected


def test_time_pending_words_are_not_complete():
    assert not extract("time", "tomorrow at three at").complete
    assert extract("time", "at three").confidence < extract("time", "at 3 pm").confidence


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("two hundred and fifty pounds", Money(Decimal(250), "GBP")),
        ("£250", Money(Decimal(250), "GBP")),
        ("it was $1,250.50", Money(Decimal("1250.50"), "USD")),
        ("fifty five dollars and twenty cents", Money(Decimal("55.20"), "USD")),
        ("seventeen pounds seventy five", Money(Decimal("17.75"), "GBP")),
        ("thirty pence", Money(Decimal("0.30"), "GBP")),
        ("about a hundred quid", Money(Decimal(100), "GBP")),
        ("one thousand two hundred euros", Money(Decimal(1200), "EUR")),
        ("three hundred point five pounds", Money(Decimal("300.5"), "GBP")),
        ("five grand", Money(Decimal(5000), None)),
        ("fifty pounds no sixty pounds", Money(Decimal(60), "GBP")),
        ("lots of money", None),
    ],
)
def test_amounts(text, expected):
    assert value("amount", text) == expected


def test_amount_completeness_and_ambiguity():
    assert not extract("amount", "two hundred and").complete
    assert not extract("amount", "two hundred point").complete
    assert extract("amount", "twelve fifty").confidence < 0.7  # 12.50 or 1250?


@pytest.mark.parametrize(
    ("text", "expected", "complete"),
    [
        ("john dot smith at example dot com", "john.smith@example.com", True),
        ("my email is j smith seventy seven at gmail dot com", "jsmith77@gmail.com", True),
        ("john underscore doe at mail dot example dot org", "john_doe@mail.example.org", True),
        ("john at example dot co dot uk", "john@example.co.uk", True),
        ("john at example dot co", "john@example.co", False),  # ".uk" may follow
        ("it's john.smith@example.com", "john.smith@example.com", True),
        ("j o h n at example dot com", "john@example.com", True),
        ("anna dash marie at example dot net", "anna-marie@example.net", True),
        ("john at", "john@", False),
        ("I don't have one", None, None),
    ],
)
def test_emails(text, expected, complete):
    found = extract("email", text)
    assert (found.value if found else None) == expected
    if found:
        assert found.complete == complete


@pytest.mark.parametrize(
    ("text", "expected", "complete"),
    [
        (
            "221 baker street london n w one six x e",
            Address(number="221", street="Baker Street", town="London", postcode="NW1 6XE"),
            True,
        ),
        (
            "my address is twenty two acacia avenue leeds",
            Address(number="22", street="Acacia Avenue", town="Leeds"),
            True,
        ),
        (
            "flat three, ten downing street, london, s w one a two a a",
            Address(flat="Flat 3", number="10", street="Downing Street", town="London", postcode="SW1A 2AA"),
            True,
        ),
        (
            "1600 pennsylvania avenue washington dc 20500",
            Address(number="1600", street="Pennsylvania Avenue", town="Washington", state="DC", zip="20500"),
            True,
        ),
        (
            "I live at 42 elm road springfield illinois 62704",
            Address(number="42", street="Elm Road", town="Springfield", state="Illinois", zip="62704"),
            True,
        ),
        ("twelve high street", Address(number="12", street="High Street"), False),  # no town or postcode yet
        (
            "two two one baker street london",
            Address(number="221", street="Baker Street", town="London"),
            True,
        ),
        ("nowhere really", None, None),
    ],
)
def test_addresses(text, expected, complete):
    found = extract("address", text)
    assert (found.value if found else None) == expected
    if found:
        assert found.complete == complete


def test_address_formats_for_prompts():
    found = extract("address", "221 baker street london n w one six x e")
    assert str(found.value) == "221 Baker Street, London, NW1 6XE"


@pytest.mark.parametrize(
    ("text", "options", "expected"),
    [
        ("the second one", ("morning", "afternoon"), "afternoon"),
        ("option one", ("billing", "sales"), "billing"),
        ("by bank transfer please", ("card", "bank transfer"), "bank transfer"),
        ("card no bank transfer", ("card", "bank transfer"), "bank transfer"),
        ("the mornin", ("morning", "afternoon"), "morning"),
        ("pizza", ("morning", "afternoon"), None),
    ],
)
def test_choices(text, options, expected):
    assert value("choice", text, options=options) == expected


def test_free_speech_and_dispatch():
    assert extract("free", "  I lost my card ").value == "I lost my card"
    assert extract("free", "") is None
    assert set(SLOT_TYPES) == {
        "digits", "phone", "name", "spelled", "yes_no", "date", "time", "amount", "email", "address",
        "choice", "free",
    }  # fmt: skip
    with pytest.raises(ValueError, match="unknown slot type"):
        extract("colour", "red")


def test_slot_type_enum_values_dispatch():
    from parley.speech.types import SlotType

    assert extract(SlotType.DIGITS, "four two").value == "42"
    assert extract(SlotType.YES_NO, "yep").value is True


@pytest.mark.parametrize(
    ("text", "expected", "complete"),
    [
        ("1600 pennsylvania avenue washington d c 20500", ("Washington", "DC", "20500"), True),
        (
            "1600 pennsylvania avenue washington dc two oh five",
            ("Washington", "DC", None),
            False,
        ),  # ZIP on its way
        ("ten downing street london s w one", ("London", None, None), False),  # postcode on its way
        ("twelve high street bath b a one one a a", ("Bath", None, None), True),
    ],
)
def test_address_parts_still_being_spoken(text, expected, complete):
    found = extract("address", text)
    assert (found.value.town, found.value.state, found.value.zip) == expected
    assert found.complete == complete


@pytest.mark.parametrize(
    "sentence", ["the weather is nice", "hmm let me think", "I would like to pay my bill"]
)
def test_a_sentence_is_not_a_name(sentence):
    assert extract_name(sentence) is None
