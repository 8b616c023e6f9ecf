"""The dialogue runtime (sans-I/O), call records and the webhook helper against a real HTTP server."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from datetime import time as dt_time
from decimal import Decimal
from functools import cache
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from parley.agent.loader import load_agent_text
from parley.agent.model import SlotKind
from parley.agent.records import redact, sensitive
from parley.agent.runtime import (
    Action,
    CallWebhook,
    Conversation,
    EarlyClose,
    Hangup,
    Listen,
    ParleyUnderstanding,
    Say,
    Transfer,
    spoken,
)
from parley.agent.webhook import perform_webhook
from parley.nlu.extractors import Money
from parley.speech.types import Hypothesis, SlotType

from .http_backend import serve_http

TODAY = date(2025, 6, 1)  # a Sunday: "next tuesday" is the 3rd of June
# A fixed call start: the wall clock's time stamp sometimes held a caller "secret" ("…:50…").
STARTED = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)

AGENT = """
name: test-bank
settings: {confirm_threshold: 0.6}
intents:
  operator: ["speak to an agent", "operator please", "can I talk to a real person"]
  repeat: ["can you repeat that", "say that again", "pardon"]
  goodbye: ["goodbye", "bye bye", "that's all thanks"]
  complaint: ["I want to make a complaint", "I'm not happy with the service", "I want to complain"]
global_intents:
  operator: {goto: handover}
  repeat: {action: repeat}
  goodbye: {goto: farewell}
steps:
  - id: hello
    type: say
    text: "Hello, this is the test bank."
  - id: first_name
    type: ask
    slot: first_name
    slot_type: name
    prompt: "What is your first name?"
    reprompts: ["Sorry, what is your first name?", "Just your first name, please."]
    no_input_prompt: "I didn't hear you. What is your first name?"
    confirm: never
  - id: account
    type: ask
    slot: account
    slot_type: digits
    digits: 4
    dtmf: true
    prompt: "Thanks {first_name}. What is your four digit account number?"
    reprompts: ["Sorry, the four digits of your account number?"]
    confirm: low_confidence
    on_failure: handover
  - id: amount
    type: ask
    slot: amount
    slot_type: amount
    prompt: "How many pounds would you like to send?"
    confirm: never
  - id: when
    type: ask
    slot: when
    slot_type: date
    prompt: "On which day?"
    confirm: never
  - id: summary
    type: say
    text: "So {amount} on {when} from account {account}."
  - id: bye
    type: hangup
    message: "Goodbye {first_name}."
  - id: handover
    type: transfer
    to: "sip:operator@example.com"
    message: "Transferring you to a colleague."
  - id: farewell
    type: hangup
    message: "Goodbye."
"""


@cache
def understanding(yaml_text: str) -> ParleyUnderstanding:
    """One trained NLU per agent text, shared by the tests (as ``parley serve`` shares it per agent)."""
    return ParleyUnderstanding(load_agent_text(yaml_text))


class Clock:
    """A manual monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds


def conversation(yaml_text: str = AGENT, clock: Clock | None = None) -> Conversation:
    agent = load_agent_text(yaml_text)
    return Conversation(
        agent,
        understanding(yaml_text),
        call_id="call-1",
        clock=clock or Clock(),
        today=TODAY,
        started_at=STARTED,
    )


def says(actions: list[Action]) -> list[str]:
    return [a.text for a in actions if isinstance(a, Say)]


def listen(actions: list[Action]) -> Listen:
    found = [a for a in actions if isinstance(a, Listen)]
    assert len(found) == 1, actions
    assert actions[-1] is found[0], "Listen comes last"
    return found[0]


def only(actions: list[Action], kind: type) -> Any:
    found = [a for a in actions if isinstance(a, kind)]
    assert len(found) == 1, actions
    return found[0]


def to_account(c: Conversation) -> list[Action]:
    c.start()
    return c.on_final("my name is john", 0.95)


# --- happy path and placeholders ------------------------------------------------------------------------


def test_happy_path_collects_slots_and_renders_spoken_values() -> None:
    clock = Clock()
    c = conversation(clock=clock)
    actions = c.start()
    assert says(actions) == ["Hello, this is the test bank.", "What is your first name?"]
    question = listen(actions)
    assert question.step_id == "first_name"
    assert question.question.slot_type is SlotType.NAME
    assert not question.dtmf_allowed
    assert "operator please" in question.question.phrases  # global intents bias the recognisers

    assert [a.personal for a in actions if isinstance(a, Say)] == [False, False]

    clock.tick()
    actions = c.on_final("my name is john", 0.95)
    assert says(actions) == ["Thanks John. What is your four digit account number?"]
    assert only(actions, Say).personal  # made from the caller's data: kept out of the prompt cache
    question = listen(actions)
    assert question.question.digit_count == 4 and question.dtmf_allowed

    actions = c.on_final("four two seven one", 0.9)
    assert says(actions) == ["How many pounds would you like to send?"]
    actions = c.on_final("two hundred and fifty pounds", 0.9)
    assert says(actions) == ["On which day?"]
    actions = c.on_final("next tuesday", 0.9)
    assert says(actions) == [
        "So £250.00 on Tuesday the 3rd of June from account 4 2 7 1.",
        "Goodbye John.",
    ]
    assert isinstance(actions[-1], Hangup)
    assert c.finished and c.outcome == "completed"
    assert c.slots["first_name"] == "John"
    assert c.slots["account"] == "4271"
    assert c.slots["amount"] == Money(Decimal("250"), "GBP")
    assert c.slots["when"] == date(2025, 6, 3)
    assert c.on_final("anything") == []  # the call is over


def test_spoken_values() -> None:
    assert spoken("4271", SlotKind.DIGITS) == "4 2 7 1"
    assert spoken(date(2025, 6, 3), SlotKind.DATE) == "Tuesday the 3rd of June"
    assert spoken("2025-05-21", SlotKind.DATE) == "Wednesday the 21st of May"
    assert spoken(date(2025, 5, 12), None) == "Monday the 12th of May"
    assert spoken(Money(Decimal("250"), None), SlotKind.AMOUNT) == "£250.00"
    assert spoken(Money(Decimal("1200.5"), "USD"), SlotKind.AMOUNT) == "$1,200.50"
    assert spoken(Money(Decimal("3"), "EUR"), SlotKind.AMOUNT) == "€3.00"
    assert spoken(dt_time(15, 0), SlotKind.TIME) == "3 pm"
    assert spoken(dt_time(10, 30), SlotKind.TIME) == "10:30 am"
    assert spoken(True, SlotKind.YES_NO) == "yes"
    assert spoken("SMITH", SlotKind.SPELLED) == "Smith"
    assert spoken("SMITH", SlotKind.SPELLED, spell=True) == "S M I T H"
    assert spoken("jo@example.com", SlotKind.EMAIL) == "jo at example dot com"
    assert spoken(None, SlotKind.NAME) == ""


def test_currency_follows_the_question() -> None:
    yaml_text = AGENT.replace("How many pounds", "How many dollars")
    c = conversation(yaml_text)
    to_account(c)
    c.on_final("four two seven one", 0.9)
    c.on_final("fifty", 0.9)
    actions = c.on_final("tomorrow", 0.9)
    assert says(actions)[0] == "So $50.00 on Monday the 2nd of June from account 4 2 7 1."


# --- reprompts, no-input, failure -----------------------------------------------------------------------


def test_no_match_reprompts_in_order_then_default_failure_hangs_up() -> None:
    c = conversation()
    c.start()
    assert says(c.on_final("um well", 0.9)) == ["Sorry, what is your first name?"]
    actions = c.on_final("er", 0.9)
    assert says(actions) == ["Just your first name, please."]
    assert listen(actions).step_id == "first_name"
    actions = c.on_final("uh", 0.9)  # third no-match: limit 2 exceeded, no on_failure
    assert says(actions) == ["Sorry, I wasn't able to help you this time. Goodbye."]
    assert isinstance(actions[-1], Hangup)
    assert c.outcome == "failed"
    assert c.record.outcome_reason == "no-match limit at first_name"
    assert [t.result for t in c.record.turns] == ["no_match", "no_match", "no_match"]


def test_no_match_limit_goes_to_on_failure() -> None:
    c = conversation()
    to_account(c)
    assert says(c.on_final("i don't have it", 0.9)) == ["Sorry, the four digits of your account number?"]
    # the reprompt list is used up: its last entry is repeated
    assert says(c.on_final("no idea", 0.9)) == ["Sorry, the four digits of your account number?"]
    actions = c.on_final("still no idea", 0.9)
    assert says(actions) == ["Transferring you to a colleague."]
    assert only(actions, Transfer).to == "sip:operator@example.com"
    assert c.outcome == "transferred"
    assert c.record.outcome_reason == "no-match limit at account"


def test_no_input_uses_no_input_prompt_up_to_the_limit() -> None:
    c = conversation()
    c.start()
    actions = c.on_no_input()
    assert says(actions) == ["I didn't hear you. What is your first name?"]
    assert listen(actions).step_id == "first_name"
    assert says(c.on_no_input()) == ["I didn't hear you. What is your first name?"]
    actions = c.on_no_input()
    assert isinstance(actions[-1], Hangup)
    assert c.outcome == "failed"
    assert c.record.outcome_reason == "no-input limit at first_name"
    assert [t.input for t in c.record.turns] == ["no_input"] * 3


def test_no_input_and_no_match_have_separate_limits() -> None:
    c = conversation()
    c.start()
    c.on_no_input()
    c.on_final("um", 0.9)
    c.on_no_input()
    actions = c.on_final("er", 0.9)
    assert listen(actions).step_id == "first_name"  # 2 of each: still asking
    assert says(c.on_final("john", 0.9))[0].startswith("Thanks John")


def test_empty_final_counts_as_no_input() -> None:
    c = conversation()
    c.start()
    assert says(c.on_final("  ", 0.0)) == ["I didn't hear you. What is your first name?"]


def test_reprompt_without_reprompts_repeats_the_prompt() -> None:
    c = conversation()
    to_account(c)
    c.on_final("one two three four", 1.0)
    assert says(c.on_final("a lot", 0.9)) == ["How many pounds would you like to send?"]


# --- confirmation ---------------------------------------------------------------------------------------


def test_low_confidence_answer_is_confirmed_yes() -> None:
    c = conversation()
    to_account(c)
    actions = c.on_final("four two seven one", 0.4)
    assert says(actions) == ["I heard 4 2 7 1, is that right?"]
    assert listen(actions).question.slot_type is SlotType.YES_NO
    assert "account" not in c.slots
    actions = c.on_final("yes that's right", 0.9)
    assert says(actions) == ["How many pounds would you like to send?"]
    assert c.slots["account"] == "4271"
    assert [t.kind for t in c.record.turns[-3:-1]] == ["answer", "confirm"]
    assert [t.result for t in c.record.turns[-3:-1]] == ["to_confirm", "yes"]


def test_prompts_made_from_caller_data_are_not_told_to_the_recognisers() -> None:
    """A question per caller made the decode process keep a grammar, an agent-LM sentence and a
    search in every decoder for each call (issue 15's agent soak: ~1.3 MB a call)."""
    c = conversation()
    c.start()
    actions = c.on_final("john", 0.9)
    assert says(actions) == ["Thanks John. What is your four digit account number?"]
    assert listen(actions).question.prompt == ""
    actions = c.on_final("four two seven one", 0.4)
    assert says(actions) == ["I heard 4 2 7 1, is that right?"]
    assert listen(actions).question.prompt == ""
    actions = c.on_final("yes", 0.9)
    assert listen(actions).question.prompt == "How many pounds would you like to send?"


def test_low_confidence_answer_confirmed_no_asks_again() -> None:
    c = conversation()
    to_account(c)
    c.on_final("four two seven one", 0.4)
    actions = c.on_final("no", 0.9)
    assert says(actions) == ["Thanks John. What is your four digit account number?"]
    assert listen(actions).question.slot_type is SlotType.DIGITS
    assert "account" not in c.slots
    actions = c.on_final("four three seven one", 0.95)  # confident now: no read-back
    assert says(actions) == ["How many pounds would you like to send?"]
    assert c.slots["account"] == "4371"


def test_confident_answer_is_not_confirmed_and_never_policy_skips_low_confidence() -> None:
    c = conversation()
    c.start()
    assert says(c.on_final("john", 0.3))[0].startswith("Thanks John")  # confirm: never
    assert says(c.on_final("four two seven one", 0.95)) == ["How many pounds would you like to send?"]


def test_always_confirm_with_default_prompt_and_unclear_reply() -> None:
    yaml_text = AGENT.replace("    confirm: low_confidence\n", "    confirm: always\n")
    c = conversation(yaml_text)
    to_account(c)
    assert says(c.on_final("four two seven one", 1.0)) == ["I heard 4 2 7 1, is that right?"]
    actions = c.on_final("purple", 0.9)  # neither yes nor no: the read-back is asked again
    assert says(actions) == ["I heard 4 2 7 1, is that right?"]
    assert listen(actions).question.slot_type is SlotType.YES_NO
    assert says(c.on_dtmf("1")) == ["How many pounds would you like to send?"]  # keypad 1 = yes


def test_spelled_value_read_back_letter_by_letter() -> None:
    yaml_text = """
name: spell
steps:
  - id: last
    type: ask
    slot: last_name
    slot_type: spelled
    prompt: "Spell your last name."
    confirm: always
    confirm_prompt: "That's {last_name}. Is that correct?"
  - id: bye
    type: hangup
    message: "Bye {last_name}."
"""
    c = conversation(yaml_text)
    c.start()
    assert says(c.on_final("s m i t h", 0.9)) == ["That's S M I T H. Is that correct?"]
    assert says(c.on_final("yes", 0.9)) == ["Bye Smith."]


# --- branches -------------------------------------------------------------------------------------------

BRANCHY = """
name: branchy
intents:
  complaint: ["I want to make a complaint", "I'm not happy with the service", "I want to complain"]
  balance: ["what's my balance", "how much money do I have", "check my balance"]
steps:
  - id: reason
    type: ask
    slot: reason
    slot_type: free
    prompt: "How can I help?"
    intents: [complaint, balance]
    confirm: never
  - id: route
    type: branch
    cases:
      - when: {intent: complaint}
        next: complaints
      - when: {slot: reason, equals: balance}
        next: amount
    default: other
  - id: amount
    type: ask
    slot: amount
    slot_type: amount
    prompt: "How much do you expect?"
    confirm: never
  - id: big
    type: branch
    cases:
      - when: {slot: amount, greater_than: 1000}
        next: rich
      - when: {slot: reason, present: true}
        next: modest
  - id: rich
    type: hangup
    message: "Big money."
  - id: modest
    type: hangup
    message: "Modest money."
  - id: complaints
    type: hangup
    message: "Complaints."
  - id: other
    type: hangup
    message: "Other."
"""


def test_branch_on_intent() -> None:
    c = conversation(BRANCHY)
    c.start()
    actions = c.on_final("I want to complain about the service", 0.9)
    assert says(actions) == ["Complaints."]
    assert c.slots["reason"] == "complaint"  # an ask intent fills the slot with its name
    assert c.record.turns[0].result == "intent:complaint"


def test_branch_on_slot_equals_greater_than_and_present() -> None:
    c = conversation(BRANCHY)
    c.start()
    assert says(c.on_final("can you check my balance", 0.9)) == ["How much do you expect?"]
    assert says(c.on_final("two thousand pounds", 0.9)) == ["Big money."]

    c = conversation(BRANCHY)
    c.start()
    c.on_final("check my balance", 0.9)
    assert says(c.on_final("twenty pounds", 0.9)) == ["Modest money."]


def test_branch_default() -> None:
    c = conversation(BRANCHY)
    c.start()
    assert says(c.on_final("I lost my dog in the park", 0.9)) == ["Other."]
    assert c.slots["reason"] == "I lost my dog in the park"


# --- global intents -------------------------------------------------------------------------------------


def test_operator_at_any_ask_transfers() -> None:
    c = conversation()
    to_account(c)
    actions = c.on_final("can I talk to a real person", 0.9)
    assert says(actions) == ["Transferring you to a colleague."]
    transfer = only(actions, Transfer)
    assert transfer == Transfer("sip:operator@example.com", "Transferring you to a colleague.")
    assert c.outcome == "transferred"
    assert c.record.turns[-1].result == "global:operator"
    assert c.on_transfer_result(200) == []
    assert c.outcome == "transferred"


def test_operator_during_a_confirmation() -> None:
    c = conversation()
    to_account(c)
    c.on_final("four two seven one", 0.3)
    assert isinstance(c.on_final("operator please", 0.9)[-1], Transfer)


def test_repeat_says_the_last_prompt_again_without_counting() -> None:
    c = conversation()
    actions = to_account(c)
    again = c.on_final("sorry can you repeat that", 0.9)
    assert says(again) == says(actions) == ["Thanks John. What is your four digit account number?"]
    assert listen(again).step_id == "account"
    for _ in range(4):  # repeats never exhaust the no-match limit
        c.on_final("say that again", 0.9)
    assert says(c.on_final("four two seven one", 0.95)) == ["How many pounds would you like to send?"]


def test_repeat_during_confirmation_repeats_the_read_back() -> None:
    c = conversation()
    to_account(c)
    c.on_final("four two seven one", 0.3)
    actions = c.on_final("pardon", 0.9)
    assert says(actions) == ["I heard 4 2 7 1, is that right?"]
    assert listen(actions).question.slot_type is SlotType.YES_NO


def test_goodbye_goes_to_its_step() -> None:
    c = conversation()
    to_account(c)
    actions = c.on_final("goodbye", 0.9)
    assert says(actions) == ["Goodbye."]  # not "Goodbye {first_name}": unset on the way from the first ask
    assert isinstance(actions[-1], Hangup)
    assert c.outcome == "completed"


def test_a_plain_answer_beats_a_vague_global_intent() -> None:
    yaml_text = """
name: yn
intents:
  goodbye: ["goodbye", "that's all thanks", "no that's everything", "no thanks"]
  operator: ["speak to an agent", "operator please"]
global_intents:
  goodbye: {goto: bye}
steps:
  - id: more
    type: ask
    slot: more
    slot_type: yes_no
    prompt: "Anything else?"
    confirm: never
  - id: check
    type: branch
    cases:
      - when: {slot: more, equals: false}
        next: fine
    default: bye
  - id: fine
    type: hangup
    message: "Fine."
  - id: bye
    type: hangup
    message: "Bye."
"""
    c = conversation(yaml_text)
    c.start()
    assert says(c.on_final("no", 0.9)) == ["Fine."]
    c = conversation(yaml_text)
    c.start()
    assert says(c.on_final("goodbye", 0.9)) == ["Bye."]


# --- webhooks -------------------------------------------------------------------------------------------

WEBHOOK_AGENT = """
name: hooks
steps:
  - id: policy
    type: ask
    slot: policy
    slot_type: digits
    digits: 4
    dtmf: true
    prompt: "Policy number?"
    confirm: never
  - id: submit
    type: webhook
    url: http://127.0.0.1:9/claims
    send: [policy]
    timeout_s: 2
    retries: 2
    save: {claim_id: claim_id, "customer.first": first_name}
    say: "Thanks {first_name}, your claim number is {claim_id}."
    on_failure: sorry
  - id: more
    type: ask
    slot: more
    slot_type: yes_no
    prompt: "Anything else, {first_name}?"
    confirm: never
  - id: bye
    type: hangup
    message: "Bye."
  - id: sorry
    type: transfer
    to: "tel:+441234567890"
    message: "Sorry, let me transfer you."
"""


def test_webhook_success_saves_fields_for_the_next_prompts() -> None:
    clock = Clock()
    c = conversation(WEBHOOK_AGENT, clock)
    c.start()
    actions = c.on_final("one two three four", 0.9)
    hook = only(actions, CallWebhook)
    assert hook == CallWebhook(
        "http://127.0.0.1:9/claims",
        "POST",
        {"call_id": "call-1", "agent": "hooks", "slots": {"policy": "1234"}},
        2.0,
        2,
        "submit",
        idempotency_key=c.record.webhooks[0].idempotency_key,
        hold_after_s=1.0,
    )
    assert hook.idempotency_key and not hook.idempotent
    assert c.on_final("hello") == []  # nobody is listening while the webhook runs
    clock.tick(0.25)
    actions = c.on_webhook_result(200, {"claim_id": "C-77", "customer": {"first": "Ann"}}, None, attempts=1)
    assert says(actions) == ["Thanks Ann, your claim number is C-77.", "Anything else, Ann?"]
    assert listen(actions).step_id == "more"
    assert c.slots["claim_id"] == "C-77" and c.slots["first_name"] == "Ann"
    call = c.record.webhooks[0]
    assert (call.step, call.status, call.error, call.attempts) == ("submit", 200, None, 1)
    assert call.latency_ms == pytest.approx(250)


@pytest.mark.parametrize(("status", "error"), [(500, "HTTP 500"), (None, "timeout")])
def test_webhook_failure_takes_the_failure_path(status: int | None, error: str) -> None:
    c = conversation(WEBHOOK_AGENT)
    c.start()
    c.on_final("one two three four", 0.9)
    actions = c.on_webhook_result(status, None, error, latency_s=6.0, attempts=3)
    assert says(actions) == ["Sorry, let me transfer you."]
    assert only(actions, Transfer).to == "tel:+441234567890"
    assert c.outcome == "transferred"
    assert c.record.webhooks[0].error == error
    assert c.record.webhooks[0].latency_ms == 6000


def test_webhook_failure_without_on_failure_hangs_up_failed() -> None:
    c = conversation(WEBHOOK_AGENT.replace("    on_failure: sorry\n", "").split("  - id: sorry")[0])
    c.start()
    c.on_final("one two three four", 0.9)
    actions = c.on_webhook_result(503, {"detail": "down"}, "HTTP 503")
    assert says(actions) == ["Sorry, I wasn't able to help you this time. Goodbye."]
    assert isinstance(actions[-1], Hangup)
    assert c.outcome == "failed" and c.record.outcome_reason == "webhook submit failed"


def test_failed_path_ending_in_hangup_is_a_failed_outcome() -> None:
    c = conversation(WEBHOOK_AGENT.replace("on_failure: sorry", "on_failure: bye").split("  - id: sorry")[0])
    c.start()
    c.on_final("one two three four", 0.9)
    actions = c.on_webhook_result(None, None, "timeout")
    assert says(actions) == ["Bye."]
    assert c.outcome == "failed"


def test_transfer_failure_apologises_and_hangs_up() -> None:
    c = conversation()
    to_account(c)
    c.on_final("operator please", 0.9)
    actions = c.on_transfer_result(486)
    assert isinstance(actions[-1], Hangup)
    assert c.outcome == "failed" and c.record.outcome_reason == "transfer failed (486)"


# --- DTMF -----------------------------------------------------------------------------------------------


def test_dtmf_answers_a_digits_question() -> None:
    c = conversation(WEBHOOK_AGENT)
    c.start()
    actions = c.on_dtmf("4271#")
    assert only(actions, CallWebhook).payload["slots"] == {"policy": "4271"}
    assert c.record.turns[0].input == "dtmf"


def test_dtmf_wrong_length_is_a_no_match_and_dtmf_ignored_where_not_allowed() -> None:
    c = conversation()
    c.start()
    assert c.on_dtmf("1234") == []  # first_name takes no keypad input
    c.on_final("john", 0.9)
    actions = c.on_dtmf("12")
    assert says(actions) == ["Sorry, the four digits of your account number?"]
    assert says(c.on_dtmf("9876")) == ["How many pounds would you like to send?"]
    assert c.slots["account"] == "9876"


def test_dtmf_yes_no_and_choice() -> None:
    yaml_text = """
name: keys
steps:
  - id: ok
    type: ask
    slot: ok
    slot_type: yes_no
    dtmf: true
    prompt: "Press 1 for yes, 2 for no."
    confirm: never
  - id: pay
    type: ask
    slot: pay
    slot_type: choice
    options: [card, bank transfer, cheque]
    dtmf: true
    prompt: "Card, bank transfer or cheque?"
    confirm: never
  - id: bye
    type: hangup
"""
    c = conversation(yaml_text)
    c.start()
    assert says(c.on_dtmf("3")) == ["Press 1 for yes, 2 for no."]  # neither: reprompt (the prompt)
    assert says(c.on_dtmf("2")) == ["Card, bank transfer or cheque?"]
    assert c.slots["ok"] is False
    assert c.on_dtmf("4") != [] and "pay" not in c.slots
    actions = c.on_dtmf("2")
    assert actions == [Hangup(None)]
    assert c.slots["pay"] == "bank transfer"
    assert c.outcome == "completed"


# --- partials and early close ---------------------------------------------------------------------------


def feed(c: Conversation, partials: list[str]) -> list[int]:
    """Indexes of the partials that answered EarlyClose."""
    return [i for i, p in enumerate(partials) if any(isinstance(a, EarlyClose) for a in c.on_partial(p))]


def test_early_close_only_when_complete_and_stable() -> None:
    c = conversation()
    to_account(c)
    partials = ["four", "four two", "four two seven", "four two seven one", "four two seven one"]
    assert feed(c, partials) == [4]
    assert c.on_partial("four two seven one") == []  # once per turn
    assert c.record.turns[-1].t_early_close is not None
    c.on_final("four two seven one", 0.9)
    assert c.slots["account"] == "4271"


def test_no_early_close_on_a_corrected_partial() -> None:
    c = conversation()
    to_account(c)
    partials = [
        "four",
        "four two",
        "four two seven",
        "four two seven one",
        "four two seven one no",
        "four two seven one no sorry",
        "four two seven one no sorry four",
        "four two seven one no sorry four three",
        "four two seven one no sorry four three seven",
        "four two seven one no sorry four three seven one",
        "four two seven one no sorry four three seven one",
    ]
    closes = feed(c, partials)
    assert closes == [10]  # not on "...one no": only once the corrected value is complete and stable
    c.on_final(partials[-1], 0.9)
    assert c.slots["account"] == "4371"


def test_early_close_state_resets_per_turn_and_partials_outside_a_turn_are_ignored() -> None:
    c = conversation(WEBHOOK_AGENT)
    assert c.on_partial("one two") == []  # not started
    c.start()
    assert feed(c, ["one two three four", "one two three four"]) == [1]
    c.on_final("one two three four", 0.9)
    assert c.on_partial("one two three four") == []  # waiting for the webhook
    c.on_webhook_result(200, {"claim_id": "C1", "customer": {"first": "Ann"}}, None)
    assert feed(c, ["yes", "yes please"]) == [1]


def test_a_complete_final_at_a_pause_closes_the_turn_when_the_partials_end_the_same_way() -> None:
    c = conversation()
    to_account(c)
    # "two" taken for the carrier "it is" in every partial; the count-forced final has all four digits
    assert feed(c, ["it is", "it is seven", "it is seven three nine"]) == []
    assert c.on_pause("two seven three nine", 0.9, heard="it is seven three nine") == [EarlyClose()]
    turn = c.record.turns[-1]
    assert turn.t_early_close is not None and turn.close == "pause"
    assert c.on_pause("two seven three nine", 0.9, heard="it is seven three nine") == []  # once per turn
    assert c.on_partial("two seven three nine") == []
    c.on_final("two seven three nine", 0.9)
    assert c.slots["account"] == "2739"
    assert c.record.to_dict()["turns"][1]["close"] == "pause"


@pytest.mark.parametrize(
    ("final", "heard"),
    [
        ("four two seven seven", "four two seven"),  # a digit invented at the end: maybe still to be said
        ("four two seven", "four two seven"),  # incomplete
        ("four two seven one", ""),  # no partial to agree with
        ("four two seven double", "four two seven"),  # announces more
        ("can I talk to a real person", "can I talk to a real person"),  # no digits
    ],
)
def test_no_close_at_a_pause_unless_the_final_completes_what_was_heard(final: str, heard: str) -> None:
    c = conversation()
    to_account(c)
    assert c.on_pause(final, 0.9, heard=heard) == []
    assert c.record.turns[-1].t_early_close is None and c.record.turns[-1].close is None
    assert feed(c, ["four two seven one", "four two seven one"]) == [1]  # partials still close it
    assert c.record.turns[-1].close == "partial"


def test_pauses_outside_an_answer_are_ignored() -> None:
    c = conversation()
    assert c.on_pause("four two seven one", 0.9, heard="four two seven one") == []  # not started
    to_account(c)
    c.on_final("four two seven one", 0.4)  # low confidence: read back for a yes/no
    assert c.listening is not None and c.listening.question.slot_type is SlotType.YES_NO
    assert c.on_pause("yes", 0.9, heard="yes") == []  # a read-back is left to the partials


# --- the call record ------------------------------------------------------------------------------------


def full_call() -> Conversation:
    clock = Clock()
    c = conversation(clock=clock)
    c.start()
    clock.tick(2)
    c.on_partial("my name")
    c.on_final(
        "my name is john",
        0.8,
        hypotheses=[
            Hypothesis("sphinx-grammar", "my name is john", 0.8, True),
            Hypothesis("sphinx-lm", "my name is jon", 0.5, True),
        ],
        arbiter_reason="grammar parse",
        winner="sphinx-grammar",
    )
    clock.tick(3)
    c.on_final("four two seven one", 0.4)
    c.on_final("yes", 0.9)
    c.on_final("fifty pounds", 0.9)
    c.on_final("next tuesday", 0.9)
    return c


SECRETS = ["john", "4271", "4 2 7 1", "four two", "2025-06-03", "tuesday", "fifty", "50"]


def test_record_json_line_marks_caller_data_sensitive() -> None:
    c = full_call()
    line = c.record.to_json()
    assert "\n" not in line
    data = json.loads(line)
    assert data["record"] == "parley.call/1"
    assert data["call_id"] == "call-1" and data["agent"] == "test-bank"
    assert data["outcome"] == "completed" and data["end_step"] == "bye"
    assert data["slots"]["first_name"] == {"sensitive": True, "value": "John"}
    assert data["slots"]["account"] == {"sensitive": True, "value": "4271"}
    assert data["slots"]["amount"] == {"sensitive": True, "value": {"amount": "50", "currency": "GBP"}}
    assert data["slots"]["when"] == {"sensitive": True, "value": "2025-06-03"}
    first = data["turns"][0]
    assert first["t_listen"] == 0.0 and first["t_end"] == 2.0
    assert first["transcript"] == {"sensitive": True, "value": "my name is john"}
    assert first["partials"] == 1
    assert first["arbiter_reason"] == "grammar parse"
    assert first["hypotheses"] == [
        {"engine": "sphinx-grammar", "text": sensitive("my name is john"), "confidence": 0.8, "chosen": True},
        {"engine": "sphinx-lm", "text": sensitive("my name is jon"), "confidence": 0.5, "chosen": False},
    ]
    assert first["nlu"]["value"] == {"sensitive": True, "value": "John"}
    assert first["nlu"]["intent"] is None
    assert [t["kind"] for t in data["turns"]] == ["answer", "answer", "confirm", "answer", "answer"]
    prompts = data["prompts"]
    assert prompts[0] == {
        "t": 0.0,
        "step": "hello",
        "text": "Hello, this is the test bank.",
        "interruptible": True,
    }
    personal = [p for p in prompts if isinstance(p["text"], dict)]
    assert {p["step"] for p in personal} == {"account", "summary", "bye"}  # rendered with slot values
    assert data["duration_s"] == 5.0


def test_redacted_view_hides_every_sensitive_value() -> None:
    c = full_call()
    redacted = json.dumps(c.record.redacted()).lower()
    for secret in SECRETS:
        assert secret not in redacted, secret
    assert '"redacted": true' in redacted
    assert c.record.redacted()["slots"]["account"] == {"sensitive": True, "redacted": True}
    assert redact({"a": [{"sensitive": True, "value": 1}], "b": 2}) == {
        "a": [{"sensitive": True, "redacted": True}],
        "b": 2,
    }


def test_write_jsonl_appends_one_line_per_call(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    full_call().record.write_jsonl(path)
    c = conversation()
    c.start()
    c.on_hangup()
    c.record.write_jsonl(path)
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert [json.loads(line)["outcome"] for line in lines] == ["completed", "abandoned"]


def test_caller_hangup_is_abandoned() -> None:
    c = conversation()
    to_account(c)
    assert c.on_hangup() == []
    assert c.outcome == "abandoned" and c.finished
    assert c.record.turns[-1].input == "hangup"
    assert c.on_final("four two seven one") == []
    assert c.on_hangup() == [] and c.outcome == "abandoned"


def test_logs_never_carry_slot_values_or_transcripts(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="parley"):
        full_call()
        c = conversation(WEBHOOK_AGENT)
        c.start()
        c.on_dtmf("4271")
        c.on_webhook_result(200, {"claim_id": "C-SECRET-9", "customer": {"first": "Zebedee"}}, None)
        c.on_final("no", 0.9)
    text = "\n".join(r.getMessage() for r in caplog.records).lower()
    assert "slot first_name filled" in text  # the runtime does log
    for secret in [*SECRETS, "c-secret-9", "zebedee", "my name is"]:
        assert secret not in text, secret


def test_step_loop_is_stopped() -> None:
    yaml_text = """
name: loop
steps:
  - id: a
    type: say
    text: "A."
    next: b
  - id: b
    type: say
    text: "B."
    next: a
"""
    c = conversation(yaml_text)
    actions = c.start()
    assert isinstance(actions[-1], Hangup)
    assert c.outcome == "failed" and c.record.outcome_reason == "step loop"


def test_end_of_steps_hangs_up_completed() -> None:
    yaml_text = """
name: short
steps:
  - id: hi
    type: say
    text: "Hi."
"""
    c = conversation(yaml_text)
    assert c.start() == [Say("Hi."), Hangup(None)]
    assert c.outcome == "completed"
    assert c.start() == []


# --- the webhook helper against a real HTTP server ------------------------------------------------------


class Backend(BaseHTTPRequestHandler):
    """/ok → JSON, /fail → 500, /flaky → 500 then 200, /slow → sleeps, /text → not JSON, /missing → 404."""

    received: list[tuple[str, str, dict[str, Any]]] = []
    hits: dict[str, int] = {}

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        payload = json.loads(self.rfile.read(length) or b"{}")
        self.received.append((self.command, self.path, payload))
        hits = self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path == "/ok":
            self._reply(200, json.dumps({"claim_id": "C-1", "echo": payload["slots"]}).encode())
        elif self.path == "/fail":
            self._reply(500, b'{"error": "boom"}')
        elif self.path == "/flaky":
            self._reply(500 if hits == 1 else 200, b'{"claim_id": "C-2"}')
        elif self.path == "/slow":
            time.sleep(1.0)
            self._reply(200, b"{}")
        elif self.path == "/text":
            self._reply(200, b"<html>hi</html>", "text/html")
        elif self.path == "/empty":
            self._reply(204, b"")
        else:
            self._reply(404, b"{}")

    do_POST = do_PUT = _handle


@pytest.fixture
def backend() -> Iterator[str]:
    Backend.received = []
    Backend.hits = {}
    with serve_http(Backend) as url:
        yield url


def hook(
    url: str, *, method: str = "POST", timeout_s: float = 2.0, retries: int = 0, idempotent: bool = False
) -> CallWebhook:
    payload = {"call_id": "c1", "agent": "hooks", "slots": {"policy": "1234"}}
    return CallWebhook(url, method, payload, timeout_s, retries, "submit", "key-1", idempotent)


async def test_webhook_posts_json_and_returns_the_body(backend: str) -> None:
    result = await perform_webhook(hook(backend + "/ok"))
    assert (result.status, result.error, result.attempts) == (200, None, 1)
    assert result.body == {"claim_id": "C-1", "echo": {"policy": "1234"}}
    assert result.ok and result.latency_s > 0
    assert Backend.received == [
        ("POST", "/ok", {"call_id": "c1", "agent": "hooks", "slots": {"policy": "1234"}})
    ]


async def test_webhook_put_and_empty_body(backend: str) -> None:
    result = await perform_webhook(hook(backend + "/empty", method="PUT"))
    assert (result.status, result.body, result.error) == (204, {}, None)
    assert Backend.received[0][0] == "PUT"


async def test_webhook_500_is_retried_then_fails(backend: str) -> None:
    result = await perform_webhook(hook(backend + "/fail", retries=2, idempotent=True), backoff_s=0.01)
    assert (result.status, result.body, result.error, result.attempts) == (500, None, "HTTP 500", 3)
    assert Backend.hits["/fail"] == 3


async def test_webhook_retry_recovers(backend: str) -> None:
    result = await perform_webhook(hook(backend + "/flaky", retries=1, idempotent=True), backoff_s=0.01)
    assert (result.status, result.body, result.error, result.attempts) == (200, {"claim_id": "C-2"}, None, 2)


async def test_webhook_4xx_and_non_json_are_not_retried(backend: str) -> None:
    result = await perform_webhook(hook(backend + "/missing", retries=2), backoff_s=0.01)
    assert (result.status, result.error, result.attempts) == (404, "HTTP 404", 1)
    result = await perform_webhook(hook(backend + "/text", retries=2), backoff_s=0.01)
    assert (result.status, result.error, result.attempts) == (200, "response is not JSON", 1)


async def test_webhook_timeout(backend: str) -> None:
    started = time.monotonic()
    action = hook(backend + "/slow", timeout_s=0.2, retries=1, idempotent=True)
    result = await perform_webhook(action, backoff_s=0.01)
    assert (result.status, result.body, result.error, result.attempts) == (None, None, "timeout", 2)
    assert time.monotonic() - started < 0.9


async def test_webhook_connection_refused() -> None:
    result = await perform_webhook(hook("http://127.0.0.1:9/nothing", retries=1), backoff_s=0.01)
    assert result.status is None and result.error is not None and "Connect" in result.error


async def test_conversation_with_real_webhook_failure_path(backend: str) -> None:
    c = conversation(
        WEBHOOK_AGENT.replace("http://127.0.0.1:9/claims", backend + "/fail").replace(
            "retries: 2", "retries: 2\n    idempotent: true"
        )
    )
    c.start()
    action = only(c.on_final("one two three four", 0.9), CallWebhook)
    result = await perform_webhook(action, backoff_s=0.01)
    actions = c.on_webhook_result(result.status, result.body, result.error, latency_s=result.latency_s,
                                  attempts=result.attempts)  # fmt: skip
    assert isinstance(actions[-1], Transfer)
    assert Backend.hits["/fail"] == 3  # retries: 2
    call = c.record.webhooks[0]
    assert (call.status, call.error, call.attempts) == (500, "HTTP 500", 3)


async def test_conversation_with_real_webhook_success(backend: str) -> None:
    c = conversation(WEBHOOK_AGENT.replace("http://127.0.0.1:9/claims", backend + "/ok"))
    c.start()
    action = only(c.on_final("one two three four", 0.9), CallWebhook)
    result = await perform_webhook(action)
    actions = c.on_webhook_result(result.status, result.body, result.error)
    # customer.first is missing: the failure path, never "Thanks , your claim number is C-1."
    assert says(actions) == ["Sorry, let me transfer you."]
    assert c.record.webhooks[0].error == "response lacks field 'customer.first'"
    assert c.record.webhooks[0].outcome == "failed" and "claim_id" not in c.slots
    assert Backend.received[0][2] == {"call_id": "call-1", "agent": "hooks", "slots": {"policy": "1234"}}
