"""The agent model: examples, navigation, prompts/phrases, slot types and semantic checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from parley.agent import (
    Agent,
    AskStep,
    BranchStep,
    ConfirmPolicy,
    GlobalIntentAction,
    HangupStep,
    SlotKind,
    TransferStep,
    WebhookStep,
    load_agent,
    speech_slot_type,
)
from parley.agent.model import placeholders
from parley.speech.types import SlotType

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


def _agent(steps: list[dict], semantic: bool = True, **extra: object) -> Agent:
    data = {"name": "test-agent", "steps": steps, **extra}
    return Agent.model_validate(data, context={"semantic": semantic})


def test_three_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"insurance_claim.yaml", "card_block.yaml", "appointment_reschedule.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_load(path: Path) -> None:
    agent = load_agent(path)
    assert agent.problems() == []
    assert agent.steps[0].id == agent.start_id
    assert {"operator", "repeat", "goodbye"} <= set(agent.global_intents)
    assert any(isinstance(s, WebhookStep) for s in agent.steps)
    assert any(isinstance(s, TransferStep) for s in agent.steps)
    assert any(isinstance(s, HangupStep) for s in agent.steps)


def test_insurance_claim_flow() -> None:
    agent = load_agent(EXAMPLES[[p.name for p in EXAMPLES].index("insurance_claim.yaml")])
    slots = agent.slots()
    assert list(slots) == ["reason", "first_name", "last_name", "policy_number", "claim_amount", "satisfied"]
    assert slots["policy_number"].slot_type is SlotKind.DIGITS
    assert slots["policy_number"].digits == 8
    assert slots["policy_number"].dtmf_enabled
    assert slots["reason"].intents == ["new_claim", "claim_status", "policy_question"]
    assert slots["last_name"].confirm is ConfirmPolicy.ALWAYS
    assert agent.global_intents["operator"].goto == "handover"
    assert agent.global_intents["repeat"].action == "repeat"
    submit = agent.step("submit")
    assert isinstance(submit, WebhookStep)
    assert submit.save == {"claim_id": "claim_id"}
    assert agent.next_of(submit) == "satisfaction"
    assert submit.on_failure == "apology"


def test_next_of_defaults() -> None:
    agent = _agent(
        [
            {"id": "a", "type": "say", "text": "hello"},
            {"id": "b", "type": "branch", "cases": [{"when": {"slot": "x", "present": True}, "next": "d"}]},
            {"id": "c", "type": "ask", "slot": "x", "slot_type": "free", "prompt": "?", "next": "a"},
            {"id": "d", "type": "transfer", "to": "tel:+441234"},
            {"id": "e", "type": "say", "text": "bye", "next": "c"},
            {"id": "f", "type": "hangup"},
        ],
        semantic=False,
        start="e",
    )
    assert [p.message for p in agent.problems()] == ["step 'f' is unreachable"]
    assert agent.start_id == "e"
    assert agent.next_of(agent.step("a")) == "b"
    assert agent.next_of(agent.step("b")) == "c"  # branch without default: the following step
    assert agent.next_of(agent.step("c")) == "a"
    assert agent.next_of(agent.step("d")) is None
    assert agent.next_of(agent.step("f")) is None
    with pytest.raises(KeyError):
        agent.step("nope")


def test_next_of_last_step_is_none() -> None:
    agent = _agent([{"id": "a", "type": "say", "text": "hi"}])
    assert agent.next_of(agent.step("a")) is None


def test_prompts_and_phrases() -> None:
    agent = _agent(
        [
            {"id": "hi", "type": "say", "text": "Hello."},
            {
                "id": "pay",
                "type": "ask",
                "slot": "method",
                "slot_type": "choice",
                "prompt": "Card or bank transfer?",
                "reprompts": ["Sorry, card or bank transfer?", "Hello."],
                "options": ["card", "bank transfer"],
                "confirm_prompt": "You said {method}?",
            },
            {"id": "bye", "type": "hangup", "message": "Goodbye."},
        ],
        intents={"operator": ["an agent please"]},
    )
    assert agent.prompts() == [
        "Hello.",
        "Card or bank transfer?",
        "You said {method}?",
        "Sorry, card or bank transfer?",
        "Goodbye.",
    ]
    phrases = agent.phrases()
    assert phrases[: len(agent.prompts())] == agent.prompts()
    assert {"an agent please", "card", "bank transfer"} <= set(phrases)


def test_speech_slot_type_mapping() -> None:
    assert {k: speech_slot_type(k) for k in SlotKind} == {
        SlotKind.DIGITS: SlotType.DIGITS,
        SlotKind.PHONE: SlotType.PHONE,
        SlotKind.NAME: SlotType.NAME,
        SlotKind.SPELLED: SlotType.SPELLED,
        SlotKind.YES_NO: SlotType.YES_NO,
        SlotKind.DATE: SlotType.DATE,
        SlotKind.TIME: SlotType.TIME,
        SlotKind.AMOUNT: SlotType.AMOUNT,
        SlotKind.EMAIL: SlotType.FREE,
        SlotKind.ADDRESS: SlotType.FREE,
        SlotKind.CHOICE: SlotType.CHOICE,
        SlotKind.FREE: SlotType.FREE,
    }
    assert speech_slot_type("yes_no") is SlotType.YES_NO
    assert len(SlotKind) == 12


def test_ask_defaults_and_dtmf() -> None:
    agent = _agent(
        [
            {"id": "a", "type": "ask", "slot": "acc", "slot_type": "digits", "prompt": "Account?"},
            {"id": "b", "type": "ask", "slot": "ok", "slot_type": "yes_no", "prompt": "OK?"},
            {"id": "c", "type": "ask", "slot": "ok2", "slot_type": "yes_no", "prompt": "OK?", "dtmf": True},
            {"id": "d", "type": "ask", "slot": "n", "slot_type": "digits", "prompt": "N?", "dtmf": False},
        ]
    )
    a, b, c, d = (agent.step(x) for x in "abcd")
    assert isinstance(a, AskStep)
    assert (a.no_input_limit, a.no_match_limit, a.confirm) == (2, 2, ConfirmPolicy.LOW_CONFIDENCE)
    assert a.speech_slot_type is SlotType.DIGITS
    assert [s.dtmf_enabled for s in (a, b, c, d)] == [True, False, True, False]


def test_semantic_problems_raise_on_direct_construction() -> None:
    steps = [{"id": "a", "type": "say", "text": "hi", "next": "missing"}]
    with pytest.raises(ValidationError, match="no step has the id 'missing'"):
        _agent(steps)
    agent = Agent.model_validate({"name": "x", "steps": steps}, context={"semantic": False})
    assert [p.message for p in agent.problems()] == ["no step has the id 'missing'"]
    assert agent.problems()[0].loc == ("steps", 0, "next")


def test_reachability_through_global_goto_and_failure_paths() -> None:
    agent = _agent(
        [
            {
                "id": "q",
                "type": "ask",
                "slot": "x",
                "slot_type": "free",
                "prompt": "?",
                "on_failure": "sorry",
            },
            {"id": "send", "type": "webhook", "url": "https://example.com/x", "on_failure": "oops"},
            {"id": "done", "type": "hangup"},
            {"id": "sorry", "type": "hangup"},
            {"id": "oops", "type": "hangup"},
            {"id": "human", "type": "transfer", "to": "sips:desk@example.com"},
        ],
        intents={"operator": ["agent"]},
        global_intents={"operator": {"goto": "human"}},
    )
    assert agent.problems() == []


def test_placeholders_from_webhook_save_are_collected() -> None:
    agent = _agent(
        [
            {
                "id": "send",
                "type": "webhook",
                "url": "http://h/x",
                "save": {"id": "ref"},
                "say": "Ref {ref}.",
            },
            {"id": "bye", "type": "hangup", "message": "Bye, reference {ref}."},
        ]
    )
    assert agent.collected_slots() == {"ref"}


def test_placeholders() -> None:
    assert placeholders("Thanks {first_name}, and {last_name}.") == ["first_name", "last_name"]
    assert placeholders("Braces {{like this}}") == []
    with pytest.raises(ValueError):
        placeholders("broken {name")
    with pytest.raises(ValueError):
        placeholders("index {0}")


def test_global_intent_action_needs_exactly_one() -> None:
    assert GlobalIntentAction(goto="x").goto == "x"
    with pytest.raises(ValidationError):
        GlobalIntentAction(goto="x", action="repeat")
    with pytest.raises(ValidationError):
        GlobalIntentAction()


def test_branch_step_models() -> None:
    agent = _agent(
        [
            {"id": "q", "type": "ask", "slot": "amount", "slot_type": "amount", "prompt": "How much?"},
            {
                "id": "r",
                "type": "branch",
                "cases": [{"when": {"slot": "amount", "greater_than": 1000}, "next": "big"}],
                "default": "small",
            },
            {"id": "big", "type": "transfer", "to": "tel:+44123"},
            {"id": "small", "type": "hangup"},
        ]
    )
    r = agent.step("r")
    assert isinstance(r, BranchStep)
    assert r.cases[0].when.greater_than == 1000
    assert agent.next_of(r) == "small"


def test_steps_are_a_discriminated_union() -> None:
    schema = Agent.model_json_schema()
    items = schema["properties"]["steps"]["items"]
    assert items["discriminator"]["propertyName"] == "type"
    assert set(items["discriminator"]["mapping"]) == {"say", "ask", "branch", "webhook", "transfer", "hangup"}
