"""Confirmation semantics (yes, no, correction, no-input, no-match) and value rules (date bounds
absolute and relative, number ranges, lengths, Luhn, regex), through the real NLU."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from functools import cache
from pathlib import Path

import pytest

from parley.agent.loader import load_agent, load_agent_text
from parley.agent.runtime import Action, CallWebhook, Conversation, Hangup, Listen, ParleyUnderstanding, Say
from parley.speech.types import SlotType

TODAY = date(2025, 6, 1)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

AGENT = """
name: rules
intents:
  operator: ["speak to an agent", "operator please"]
global_intents:
  operator: {goto: handover}
steps:
  - id: card
    type: ask
    slot: card
    slot_type: digits
    dtmf: true
    prompt: "What is your card number?"
    reprompts: ["Sorry, the long number on the front of your card?"]
    confirm: always
    no_match_limit: 2
    no_input_limit: 1
    rules: {checksum: luhn, min_length: 15, max_length: 16}
    on_failure: handover
  - id: birth
    type: ask
    slot: birth
    slot_type: date
    prompt: "What is your date of birth?"
    confirm: never
    rules:
      min: -120y
      max: -16y
      prompts: {max: "You need to be at least sixteen to use this line. What is your date of birth?"}
  - id: visit
    type: ask
    slot: visit
    slot_type: date
    prompt: "Which day would you like to come in?"
    confirm: never
    rules: {min: +1d, max: +90d}
  - id: hour
    type: ask
    slot: hour
    slot_type: time
    prompt: "At what time?"
    confirm: never
    rules: {min: "08:00", max: "18:00"}
  - id: amount
    type: ask
    slot: amount
    slot_type: amount
    prompt: "How many pounds?"
    confirm: never
    rules: {min: 1, max: 5000}
  - id: reference
    type: ask
    slot: reference
    slot_type: digits
    prompt: "What is your claim reference?"
    confirm: never
    rules: {pattern: "7[0-9]{5}", prompts: {pattern: "Claim references start with a seven. Your reference?"}}
  - id: bye
    type: hangup
    message: "Thank you."
  - id: handover
    type: transfer
    to: "sip:desk@127.0.0.1"
    message: "Let me put you through."
"""
VISA = "4111111111111111"
VISA_WORDS = " ".join(["four"] + ["one"] * 15)
MASTERCARD = "5555555555554444"
MASTERCARD_WORDS = "five five five five five five five five five five five five four four four four"


@cache
def understanding(text: str) -> ParleyUnderstanding:
    return ParleyUnderstanding(load_agent_text(text))


def conversation(text: str = AGENT) -> Conversation:
    return Conversation(load_agent_text(text), understanding(text), call_id="c", today=TODAY)


def says(actions: list[Action]) -> list[str]:
    return [a.text for a in actions if isinstance(a, Say)]


def listening(actions: list[Action]) -> Listen:
    assert isinstance(actions[-1], Listen), actions
    return actions[-1]


READ_BACK = "I heard {}, is that right?"


def spaced(digits: str) -> str:
    return " ".join(digits)


# --- confirmation: every path -----------------------------------------------------------------------


def test_yes_accepts_the_read_back_value() -> None:
    c = conversation()
    c.start()
    assert says(c.on_final(VISA_WORDS, 0.95)) == [READ_BACK.format(spaced(VISA))]
    assert says(c.on_final("yes", 0.9)) == ["What is your date of birth?"]
    assert c.slots["card"] == VISA
    assert [t.result for t in c.record.turns] == ["to_confirm", "yes", None]


def test_no_asks_again_and_counts_as_a_no_match() -> None:
    c = conversation()
    c.start()
    c.on_final(VISA_WORDS, 0.95)
    actions = c.on_final("no", 0.9)
    assert says(actions) == ["What is your card number?"]
    assert listening(actions).question.slot_type is SlotType.DIGITS
    assert "card" not in c.slots


@pytest.mark.parametrize(
    "reply", [f"no it's {MASTERCARD_WORDS}", f"no, {MASTERCARD_WORDS}", MASTERCARD_WORDS]
)
def test_a_correction_replaces_the_value_and_is_confirmed_again(reply: str) -> None:
    c = conversation()
    c.start()
    c.on_final(VISA_WORDS, 0.95)
    actions = c.on_final(reply, 0.9)
    assert says(actions) == [READ_BACK.format(spaced(MASTERCARD))]
    assert listening(actions).question.slot_type is SlotType.YES_NO
    assert c.record.turns[-2].result == "correction"
    assert says(c.on_final("yes", 0.9)) == ["What is your date of birth?"]
    assert c.slots["card"] == MASTERCARD


def test_a_correction_does_not_close_early_on_its_no() -> None:
    c = conversation()
    c.start()
    c.on_final(VISA_WORDS, 0.95)
    for partial in ("no", "no", "no it's", "no it's five"):
        assert c.on_partial(partial) == []  # "no" may be followed by the right number
    c2 = conversation()
    c2.start()
    c2.on_final(VISA_WORDS, 0.95)
    c2.on_partial("yes")
    assert c2.on_partial("yes") != []  # a stable yes closes at once


def test_a_keyed_correction_and_keyed_yes() -> None:
    c = conversation()
    c.start()
    c.on_final(VISA_WORDS, 0.95)
    assert says(c.on_dtmf(MASTERCARD)) == [READ_BACK.format(spaced(MASTERCARD))]
    assert says(c.on_dtmf("1")) == ["What is your date of birth?"]
    assert c.slots["card"] == MASTERCARD


def test_the_read_back_of_a_keyable_slot_listens_for_a_keyed_correction() -> None:
    from parley.agent.voice import KeypadEntry

    c = conversation()
    c.start()
    listen = listening(c.on_final(VISA_WORDS, 0.95))
    assert (listen.dtmf_allowed, listen.dtmf_answer_keys, listen.dtmf_max_digits) == (True, "12", None)
    assert listen.dtmf_answer_wait_s == 1.0
    for key in "12":  # a whole answer, unless another key follows within dtmf_answer_wait_s
        keys = KeypadEntry(listen)
        assert not keys.press(key, 0.0) and keys.remaining(0.0) == 1.0
        assert KeypadEntry(replace(listen, dtmf_answer_wait_s=0.0)).press(key, 0.0)  # 0: at once
    keys = KeypadEntry(listen)
    assert [keys.press(k, 0.5) for k in "1800"] == [False] * 4  # keys after the 1: a value goes on
    assert keys.remaining(0.5) == listen.dtmf_interdigit_s
    keys = KeypadEntry(listen)
    assert [keys.press(k, 0.0) for k in "5555"] == [False] * 4  # another first key: a value goes on
    keys = KeypadEntry(listen)
    assert not keys.press("1", 0.0, after_words=True)  # "no" then keys: a value that begins with 1


CHECKS_OUT = "That number doesn't check out: one of the digits may be wrong."
LEADING_ONE = "1234567890123452"  # Luhn-valid, and begins with the key of a yes


@pytest.mark.parametrize(
    ("keys", "spoken", "result", "first_said"),
    [
        (MASTERCARD, "", "correction", READ_BACK.format(spaced(MASTERCARD))),  # read back again
        ("1", "", "yes", "What is your date of birth?"),
        ("2", "", "no", "What is your card number?"),
        (LEADING_ONE, "no", "correction", READ_BACK.format(spaced(LEADING_ONE))),  # "no" + keys
        (LEADING_ONE, "", "correction", READ_BACK.format(spaced(LEADING_ONE))),  # all keys at once
        ("1111111111111111", "", "invalid:checksum", CHECKS_OUT),  # 16 ones: a value, not a yes
        ("4222", "no", "invalid:length", "That is too short: I need at least 15 digits."),
        ("4*2", "no", "no", "What is your card number?"),  # "no" and keys that make no value: a no
        (VISA, "", "yes", "What is your date of birth?"),  # the same value keyed again confirms it
    ],
)
def test_keys_at_the_read_back(keys: str, spoken: str, result: str, first_said: str) -> None:
    c = conversation()
    c.start()
    c.on_final(VISA_WORDS, 0.95)
    actions = c.on_dtmf(keys, spoken=spoken)
    turn = c.record.turns[1]
    assert (turn.kind, turn.input, turn.result) == ("confirm", "speech+dtmf" if spoken else "dtmf", result)
    assert says(actions)[0] == first_said
    if result == "correction":
        assert says(c.on_dtmf("1")) == ["What is your date of birth?"]
        assert c.slots["card"] == keys


def test_a_correction_that_breaks_a_rule_is_re_asked() -> None:
    c = conversation()
    c.start()
    c.on_final(VISA_WORDS, 0.95)
    actions = c.on_final("no it's " + " ".join(["four"] + ["one"] * 14 + ["two"]), 0.9)  # Luhn fails
    assert says(actions) == [
        "That number doesn't check out: one of the digits may be wrong.",
        "Sorry, the long number on the front of your card?",
    ]
    assert listening(actions).question.slot_type is SlotType.DIGITS  # an answer again, not a read-back
    assert says(c.on_final(VISA_WORDS, 0.95)) == [READ_BACK.format(spaced(VISA))]


def test_no_input_and_no_match_at_the_read_back_ask_it_again_until_the_limits() -> None:
    c = conversation()
    c.start()
    c.on_final(VISA_WORDS, 0.95)
    assert says(c.on_no_input()) == [READ_BACK.format(spaced(VISA))]
    assert says(c.on_final("purple elephants", 0.9)) == [READ_BACK.format(spaced(VISA))]
    actions = c.on_no_input()  # the second no-input: over no_input_limit 1
    assert says(actions) == ["Let me put you through."]
    assert c.outcome == "transferred" and "no-input limit at card" in (c.record.outcome_reason or "")


def test_operator_at_the_read_back_is_a_global_intent() -> None:
    c = conversation()
    c.start()
    c.on_final(VISA_WORDS, 0.95)
    assert says(c.on_final("operator please", 0.9)) == ["Let me put you through."]


def card_block() -> Conversation:
    agent = load_agent(EXAMPLES / "card_block.yaml")
    return Conversation(agent, understanding((EXAMPLES / "card_block.yaml").read_text()), call_id="c")


def to_go_ahead(c: Conversation) -> None:
    c.start()
    c.on_dtmf("42712345")
    c.on_final("the third of may nineteen eighty five", 0.95)


def test_card_block_no_is_never_contradicted() -> None:
    """Issue 13 §4: "no" to "Shall I go ahead?" was read back as "you want me to block the card now?"."""
    c = card_block()
    to_go_ahead(c)
    actions = c.on_final("no", 0.95)
    assert not any("Just to be sure" in text for text in says(actions))
    assert "No problem, I haven't blocked your card." in says(actions)
    assert c.slots["confirm_block"] is False
    assert not any(isinstance(a, CallWebhook) for a in actions)


@pytest.mark.parametrize(
    ("reply", "blocks"), [("yes", True), ("no", False), ("/dtmf 1", True), ("/dtmf 2", False)]
)
def test_card_block_double_check_of_a_yes(reply: str, blocks: bool) -> None:
    c = card_block()
    to_go_ahead(c)
    assert says(c.on_final("yes", 0.95)) == ["Just to be sure: you want me to block the card now?"]
    actions = c.on_dtmf(reply.split()[1]) if reply.startswith("/dtmf") else c.on_final(reply, 0.95)
    assert any(isinstance(a, CallWebhook) for a in actions) is blocks
    assert c.slots["confirm_block"] is blocks
    if not blocks:
        assert "No problem, I haven't blocked your card." in says(actions)


# --- value rules --------------------------------------------------------------------------------------


def at_birth() -> Conversation:
    c = conversation()
    c.start()
    c.on_final(VISA_WORDS, 0.95)
    c.on_final("yes", 0.9)
    return c


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ("yesterday", "You need to be at least sixteen to use this line. What is your date of birth?"),
        ("the nineteenth of april twenty one fifteen", "You need to be at least sixteen"),
        ("the nineteenth of march twenty twenty seven", "You need to be at least sixteen"),
        ("the second of june two thousand and nine", "You need to be at least sixteen"),  # 15 y 364 d
        ("the first of may eighteen ninety", "That date is too early: it must be on or after"),
    ],
)
def test_impossible_birth_dates_are_re_asked(answer: str, said: str) -> None:
    c = at_birth()
    actions = c.on_final(answer, 0.95)
    assert says(actions)[0].startswith(said), says(actions)
    assert "birth" not in c.slots
    assert c.record.turns[-2].result.startswith("invalid:")


def test_the_recognisers_are_told_the_range_the_rules_allow_for_the_calls_day() -> None:
    c = at_birth()
    birth = c.listening
    assert birth is not None
    assert (birth.question.lowest, birth.question.highest) == ("1905-06-01", "2009-06-01")
    c.on_final("the third of may nineteen eighty five", 0.95)
    visit = c.listening
    assert visit is not None
    assert (visit.question.lowest, visit.question.highest) == ("2025-06-02", "2025-08-30")
    c.on_final("next tuesday", 0.95)
    hour = c.listening
    assert hour is not None and (hour.question.lowest, hour.question.highest) == ("08:00:00", "18:00:00")
    c.on_final("half past ten in the morning", 0.95)
    amount = c.listening
    assert amount is not None and (amount.question.lowest, amount.question.highest) == ("1", "5000")
    c.on_final("two hundred and fifty pounds", 0.95)
    reference = c.listening
    assert reference is not None and (reference.question.lowest, reference.question.highest) == ("", "")


def test_a_birth_date_sixteen_years_ago_today_is_accepted() -> None:
    c = at_birth()
    assert says(c.on_final("the first of june two thousand and nine", 0.95)) == [
        "Which day would you like to come in?"
    ]
    assert c.slots["birth"] == date(2009, 6, 1)


def at_visit() -> Conversation:
    c = at_birth()
    c.on_final("the third of may nineteen eighty five", 0.95)
    return c


def test_relative_appointment_window() -> None:
    c = at_visit()
    actions = c.on_final("today", 0.95)
    assert says(actions) == [
        "That date is too early: it must be on or after Monday the 2nd of June 2025.",
        "Which day would you like to come in?",
    ]
    actions = c.on_final("the third of may twenty one twenty", 0.95)
    assert (
        says(actions)[0] == "That date is too late: it must be on or before Saturday the 30th of August 2025."
    )
    assert says(c.on_final("next tuesday", 0.95)) == ["At what time?"]
    assert c.slots["visit"] == date(2025, 6, 3)


def test_time_and_amount_ranges_and_pattern() -> None:
    c = at_visit()
    c.on_final("next tuesday", 0.95)
    assert says(c.on_final("seven in the morning", 0.95))[0] == "That is too early: the earliest is 8 am."
    assert says(c.on_final("half past ten in the morning", 0.95)) == ["How many pounds?"]
    assert says(c.on_final("ten thousand pounds", 0.95))[0] == "That is too large: the maximum is 5000."
    assert says(c.on_final("two hundred and fifty pounds", 0.95)) == ["What is your claim reference?"]
    actions = c.on_final("one two three four five six", 0.95)
    assert says(actions) == ["Claim references start with a seven. Your reference?"]  # its own prompt only
    assert "reference" not in c.slots
    actions = c.on_final("seven one two three four five", 0.95)
    assert says(actions) == ["Thank you."] and isinstance(actions[-1], Hangup)
    assert c.slots["reference"] == "712345"


def test_rule_breaks_count_towards_the_no_match_limit() -> None:
    c = conversation()
    c.start()
    bad = " ".join(["four"] + ["one"] * 14 + ["two"])
    c.on_final(bad, 0.95)
    c.on_final(bad, 0.95)
    actions = c.on_final(bad, 0.95)  # the third: over no_match_limit 2
    assert says(actions) == ["Let me put you through."]
    assert c.record.outcome_reason == "no-match limit at card (checksum rule)"


def test_keyed_answers_are_checked_too() -> None:
    c = conversation()
    c.start()
    assert says(c.on_dtmf("4111111111111112"))[0].startswith("That number doesn't check out")
    assert says(c.on_dtmf("411111111111")) == [
        "That is too short: I need at least 15 digits.",
        "Sorry, the long number on the front of your card?",
    ]
    assert says(c.on_dtmf(VISA)) == [READ_BACK.format(spaced(VISA))]


# --- keypad entry ---------------------------------------------------------------------------------------


def test_keypad_deadline_runs_from_the_last_key_only() -> None:
    from parley.agent.voice import KeypadEntry

    c = conversation()
    listen = listening(c.start())
    assert (listen.dtmf_interdigit_s, listen.dtmf_terminator, listen.dtmf_max_digits) == (3.0, "#", None)
    keys = KeypadEntry(listen)
    assert keys.remaining(100.0) is None  # no key yet: wait for anything
    assert not keys.press("4", 100.0)
    assert keys.remaining(101.0) == 2.0  # audio frames meanwhile change nothing: the deadline is absolute
    assert keys.remaining(101.02) == pytest.approx(1.98)
    assert not keys.press("1", 102.5)
    assert keys.remaining(103.0) == 2.5  # a key restarts it
    assert keys.remaining(106.0) == 0.0
    assert keys.press("#", 104.0) and keys.digits == "41"  # the terminator ends it, and is not kept


def test_keypad_maximum_ends_the_answer() -> None:
    from parley.agent.voice import KeypadEntry

    text = AGENT.replace(
        "    rules: {checksum: luhn, min_length: 15, max_length: 16}\n", "    dtmf_max_digits: 3\n"
    )
    listen = listening(conversation(text).start())
    keys = KeypadEntry(listen)
    assert [keys.press(k, 0.0) for k in "123"] == [False, False, True]


def test_words_spoken_before_the_keys_begin_the_answer() -> None:
    c = conversation()
    c.start()
    actions = c.on_dtmf("1111111", spoken="four one one one one one one one one")
    assert says(actions) == [READ_BACK.format(spaced(VISA))]
    assert (c.record.turns[0].input, c.record.turns[0].transcript) == ("speech+dtmf", VISA)


def test_the_final_whose_digits_fit_the_keys_begins_the_answer() -> None:
    """A grammar that forces the digit count hears four digits in "four two": the final whose digits
    make a whole answer with the keys is taken, the arbiter's choice when none does."""
    text = AGENT.replace("    rules: {checksum: luhn, min_length: 15, max_length: 16}\n", "    digits: 4\n")
    c = conversation(text)
    c.start()
    c.on_dtmf("71", spoken=["four two eight one", "four two"])
    assert (c.record.turns[0].transcript, c.record.turns[0].result) == ("4271", "to_confirm")
    c = conversation(text)
    c.start()
    c.on_dtmf("71", spoken=["four two eight one", "four"])
    assert (c.record.turns[0].transcript, c.record.turns[0].result) == ("428171", "no_match")


def test_words_and_keys_are_complete_at_the_expected_length() -> None:
    """The keypad need not wait for "#" or the inter-digit timeout once the digits of some final of the
    words said before the keys, and the keys, make the expected length (here 4); nor at a read-back,
    nor for an answer of no fixed length."""
    text = AGENT.replace("    rules: {checksum: luhn, min_length: 15, max_length: 16}\n", "    digits: 4\n")
    c = conversation(text)
    c.start()
    assert c.listening is not None and c.listening.dtmf_max_digits == 4
    assert not c.keys_complete("7", ["four two eight one", "four two"])
    assert c.keys_complete("71", ["four two eight one", "four two"])  # 42 + 71
    assert not c.keys_complete("71", ["four two eight one"])  # 4281 + 71: too long
    assert not c.keys_complete("71", [])
    c.on_dtmf("71", spoken=["four two"])  # read back: keys there end as a read-back's do
    assert not c.keys_complete("4271", ["no"])
    c = conversation()  # 15 or 16 digits: no fixed length
    c.start()
    assert not c.keys_complete("11111111111111", ["four one"])
