"""Every path of every example agent, as a table of cases: yes, no, a correction, no-input, no-match,
operator, a slow webhook (hold prompt, then success), a failed one and one whose outcome is unknown.

Each case is the caller's side of a call (typed like `parley chat`: a line of speech, `/dtmf KEYS`,
`/silence`; "text @0.5" for a low recognition confidence) played through the real dialogue runtime
and NLU; webhooks go to a real HTTP server on 127.0.0.1 that answers, answers slowly, fails (500)
or reads the request and hangs up (unknown).
Asserted: what the agent said (in order), how the call ended and where, and what it posted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from parley.agent.loader import load_agent
from parley.agent.runtime import CallWebhook, Conversation, ParleyUnderstanding, Say, Transfer
from parley.agent.webhook import run_webhook

from .http_backend import serve_http

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BACKEND_VARIABLE = {
    "card_block": "CARDS_BACKEND",
    "insurance_claim": "CLAIMS_BACKEND",
    "appointment_reschedule": "CLINIC_BACKEND",
    "pizza_order": "PIZZA_BACKEND",
}
ANSWERS = {  # what the backend answers per agent (the fields each one saves)
    "card_block": {"reference": "B7431", "last_four": "4321"},
    "insurance_claim": {"claim_id": "C20931"},
    "appointment_reschedule": {"confirmation": "A5521", "slot": "half past ten"},
    "pizza_order": {"order_id": "T0042", "minutes": 30},
}


class Backend(BaseHTTPRequestHandler):
    """``/ok/...`` answers, ``/slow/...`` answers after 1.8 s, ``/fail/...`` 500, ``/drop/...`` hangs up."""

    posts: list[tuple[str, dict[str, Any]]] = []
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.posts.append((self.path, body))
        mode = self.path.split("/")[1]
        if mode == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if mode == "slow":
            time.sleep(1.8)
        answer = json.dumps(ANSWERS[self.path.split("/")[2]]).encode()
        self.send_response(500 if mode == "fail" else 200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_POST = do_PUT = _handle


@pytest.fixture(scope="module")
def backend() -> Iterator[str]:
    with serve_http(Backend) as url:
        yield url


@cache
def understanding(name: str) -> ParleyUnderstanding:
    return ParleyUnderstanding(load_agent(EXAMPLES / f"{name}.yaml"))


@dataclass
class Case:
    agent: str
    path: str
    caller: list[str]
    says: list[str]  # said by the agent, in this order (other lines may come between)
    outcome: str
    end_step: str
    webhook: str = "ok"  # ok | slow | fail | drop
    posted: dict[str, Any] | None = field(default=None)  # slots posted (None: no post)
    slots: dict[str, Any] = field(default_factory=dict)  # slot values at the end

    @property
    def id(self) -> str:
        return f"{self.agent}-{self.path}"


ACCOUNT = "/dtmf 42712345"
BIRTH = "the third of may nineteen eighty five"
CARD_POSTED = {"account_number": "42712345", "date_of_birth": "1985-05-03"}
CARDS = [
    Case(
        "card_block",
        "yes",
        [ACCOUNT, BIRTH, "yes", "yes", "no thanks"],
        [
            "Just to be sure: you want me to block the card now?",
            "One moment please, I'm blocking your card.",
            "Done. Your card ending 4 3 2 1 is now blocked. Your reference is B7431.",
            "Thank you for calling Northbank. Goodbye.",
        ],
        "completed",
        "bye",
        webhook="slow",
        posted=CARD_POSTED,
    ),
    Case(
        "card_block",
        "no",
        [ACCOUNT, BIRTH, "no"],
        ["No problem, I haven't blocked your card.", "Thank you for calling Northbank. Goodbye."],
        "completed",
        "bye",
        slots={"confirm_block": False},
    ),
    Case(
        "card_block",
        "no-at-the-double-check",
        [ACCOUNT, BIRTH, "yes", "no"],
        ["Just to be sure: you want me to block the card now?", "No problem, I haven't blocked your card."],
        "completed",
        "bye",
        slots={"confirm_block": False},
    ),
    Case(
        "card_block",
        "correction",
        [
            "four two seven one two three four five @0.5",
            "no it's four two seven one two three four six",
            "yes",
            BIRTH,
            "no",
        ],
        [
            "That's account number 4 2 7 1 2 3 4 6. Is that right?",
            "Thank you. And what is your date of birth?",
        ],
        "completed",
        "bye",
        slots={"account_number": "42712346"},
    ),
    Case(
        "card_block",
        "no-input",
        ["/silence", "/silence", "/silence"],
        [
            "I didn't hear anything. Please say or key in your eight digit account number.",
            "Please hold while I transfer you to a member of our card services team.",
        ],
        "transferred",
        "handover",
    ),
    Case(
        "card_block",
        "no-match",
        [ACCOUNT, "purple", "the colour blue", "green"],
        [
            "Sorry, please tell me your date of birth, for example the third of May nineteen eighty five.",
            "Please hold while I transfer you to a member of our card services team.",
        ],
        "transferred",
        "handover",
    ),
    Case(
        "card_block",
        "too-young",
        [ACCOUNT, "yesterday", BIRTH, "no"],
        [
            "Sorry, card holders are at least sixteen. Please tell me your date of birth again.",
            "No problem, I haven't blocked your card.",
        ],
        "completed",
        "bye",
    ),
    Case(
        "card_block",
        "operator",
        [ACCOUNT, "can I talk to a real person"],
        ["Please hold while I transfer you to a member of our card services team."],
        "transferred",
        "handover",
    ),
    Case(
        "card_block",
        "webhook-failed",
        [ACCOUNT, BIRTH, "yes", "yes"],
        ["I'm sorry, I couldn't block your card automatically. I'll put you through to a colleague who can."],
        "transferred",
        "handover",
        webhook="fail",
        posted=CARD_POSTED,
    ),
    Case(
        "card_block",
        "webhook-unknown",
        [ACCOUNT, BIRTH, "yes", "yes"],
        ["I'm sorry, I couldn't confirm whether your card was blocked."],
        "transferred",
        "handover",
        webhook="drop",
        posted=CARD_POSTED,
    ),
]

CLAIM = [
    "I want to make a claim",
    "my name is john",
    "s m i t h",
    "yes",
    "/dtmf 12345678",
    "yes",
    "about twelve hundred pounds",
]
CLAIM_POSTED = {
    "reason": "new_claim",
    "first_name": "John",
    "last_name": "SMITH",
    "policy_number": "12345678",
    "claim_amount": {"amount": "1200", "currency": "GBP"},
}
CLAIMS = [
    Case(
        "insurance_claim",
        "yes",
        [*CLAIM, "yes"],
        [
            "Thank you John. Your claim has been registered. Your claim number is C20931.",
            "A claims handler will be in touch within two working days. Goodbye.",
        ],
        "completed",
        "bye",
        posted=CLAIM_POSTED,
        slots={"satisfied": True},
    ),
    Case(
        "insurance_claim",
        "no",
        [*CLAIM, "no"],
        [
            "Before you go, were you happy with the help you received today?",
            "Thank you for calling Acme Insurance.",
        ],
        "completed",
        "bye",
        posted=CLAIM_POSTED,
        slots={"satisfied": False},
    ),
    Case(
        "insurance_claim",
        "correction",
        [*CLAIM[:5], "no it's one two three four five six seven nine", "yes", CLAIM[6], "yes"],
        [
            "I have policy number 1 2 3 4 5 6 7 9. Is that right?",
            "Roughly how much do you expect the claim to be, in pounds?",
        ],
        "completed",
        "bye",
        posted={**CLAIM_POSTED, "policy_number": "12345679"},
    ),
    Case(
        "insurance_claim",
        "no-input",
        ["/silence", "/silence", "/silence"],
        [
            "Sorry, I didn't hear anything. How can I help you today?",
            "Please hold while I transfer you to a claims adviser.",
        ],
        "transferred",
        "handover",
    ),
    Case(
        "insurance_claim",
        "no-match",
        [*CLAIM[:6], "purple", "banana", "orange"],
        [
            "Sorry, roughly how much is the claim for? For example, twelve hundred pounds.",
            "Please hold while I transfer you to a claims adviser.",
        ],
        "transferred",
        "handover",
    ),
    Case(
        "insurance_claim",
        "operator",
        ["I want to make a claim", "operator please"],
        ["Please hold while I transfer you to a claims adviser."],
        "transferred",
        "handover",
    ),
    Case(
        "insurance_claim",
        "webhook-slow",
        [*CLAIM, "yes"],
        ["One moment, please.", "Your claim number is C20931."],
        "completed",
        "bye",
        webhook="slow",
        posted=CLAIM_POSTED,
    ),
    Case(
        "insurance_claim",
        "webhook-failed",
        CLAIM,
        ["I'm sorry, I couldn't register your claim just now. Let me put you through to a colleague."],
        "transferred",
        "handover",
        webhook="fail",
        posted=CLAIM_POSTED,
    ),
    Case(
        "insurance_claim",
        "webhook-unknown",
        CLAIM,
        ["I'm sorry, I couldn't confirm that your claim was registered."],
        "transferred",
        "handover",
        webhook="drop",
        posted=CLAIM_POSTED,
    ),
]

MOVE = ["yes", "the third of june", "the tenth of june", "half past ten in the morning"]
MOVE_POSTED = {"current_date": "2025-06-03", "new_date": "2025-06-10", "new_time": "10:30:00"}
CLINIC = [
    Case(
        "appointment_reschedule",
        "yes",
        [*MOVE, "yes"],
        [
            "to Tuesday the 10th of June at half past ten. Your reference is A5521.",
            "Thank you. We look forward to seeing you. Goodbye.",
        ],
        "completed",
        "bye",
        posted=MOVE_POSTED,
    ),
    Case(
        "appointment_reschedule",
        "no",
        ["no"],
        ["For appointments in someone else's name, our receptionist will need to help you."],
        "transferred",
        "reception",
    ),
    Case(
        "appointment_reschedule",
        "too-far-and-too-late",
        [
            "yes",
            "the third of june",
            "the tenth of december",
            "the tenth of june",
            "nine in the evening",
            MOVE[3],
            "yes",
        ],
        [
            "We book up to ninety days ahead. Which day would suit you better?",
            "The last appointment is at half past five. What time would you like?",
            "Goodbye.",
        ],
        "completed",
        "bye",
        posted=MOVE_POSTED,
    ),
    Case(
        "appointment_reschedule",
        "no-input",
        ["/silence", "/silence", "/silence"],
        ["Sorry, is the appointment in your name?", "Please hold while I put you through to reception."],
        "transferred",
        "reception",
    ),
    Case(
        "appointment_reschedule",
        "operator",
        ["yes", "operator please"],
        ["Please hold while I put you through to reception."],
        "transferred",
        "reception",
    ),
    Case(
        "appointment_reschedule",
        "webhook-failed",
        MOVE,
        ["I'm sorry, I couldn't book that time. Let me put you through to the receptionist."],
        "transferred",
        "reception",
        webhook="fail",
        posted=MOVE_POSTED,
    ),
    Case(
        "appointment_reschedule",
        "webhook-unknown",
        MOVE,  # idempotent: retried once, then unknown
        ["I'm sorry, I couldn't book that time."],
        "transferred",
        "reception",
        webhook="drop",
        posted=MOVE_POSTED,
    ),
]

ORDER = ["a large pepperoni please", "large", "/dtmf 2", "/dtmf 07700900123#", "yes"]
ORDER_POSTED = {"pizza": "pepperoni", "size": "large", "quantity": "2", "phone": "07700900123"}
PIZZA = [
    Case(
        "pizza_order",
        "yes",
        [*ORDER, "yes"],
        [
            "So that's 2 large pepperoni, and the driver will call 0 7 7 0 0 9 0 0 1 2 3.",
            "Your order number is T0042. It will be with you in about 30 minutes.",
            "Thank you for calling Tony's Pizza. Goodbye.",
        ],
        "completed",
        "bye",
        posted=ORDER_POSTED,
    ),
    Case(
        "pizza_order",
        "no",
        [*ORDER, "no"],
        ["No problem, I haven't placed an order."],
        "completed",
        "bye",
        slots={"go_ahead": False},
    ),
    Case(
        "pizza_order",
        "correction",
        [*ORDER[:4], "no it's oh seven seven oh oh nine oh oh one two four", "yes", "yes"],
        ["That's 0 7 7 0 0 9 0 0 1 2 4. Is that right?", "Your order number is T0042."],
        "completed",
        "bye",
        posted={**ORDER_POSTED, "phone": "07700900124"},
    ),
    Case(
        "pizza_order",
        "keyed-no-at-read-back",
        [*ORDER[:4], "/dtmf 2", "/dtmf 07700900999#", "/dtmf 1", "/dtmf 1"],
        ["What phone number should the driver call?", "That's 0 7 7 0 0 9 0 0 9 9 9. Is that right?"],
        "completed",
        "bye",
        posted={**ORDER_POSTED, "phone": "07700900999"},
    ),
    Case(
        "pizza_order",
        "no-input",
        ["/silence", "/silence", "/silence"],
        [
            "Sorry, which pizza? Margherita, pepperoni, vegetarian or hawaiian.",
            "Please hold while I put you through to the shop.",
        ],
        "transferred",
        "staff",
    ),
    Case(
        "pizza_order",
        "no-match",
        ["pepperoni", "large", "/dtmf 0", "/dtmf 0", "/dtmf 0"],
        [
            "We need at least one pizza. How many would you like?",
            "Please hold while I put you through to the shop.",
        ],
        "transferred",
        "staff",
    ),
    Case(
        "pizza_order",
        "operator",
        ["can I talk to someone"],
        ["Please hold while I put you through to the shop."],
        "transferred",
        "staff",
    ),
    Case(
        "pizza_order",
        "webhook-slow",
        [*ORDER, "yes"],
        ["One moment, please.", "Your order number is T0042."],
        "completed",
        "bye",
        webhook="slow",
        posted=ORDER_POSTED,
    ),
    Case(
        "pizza_order",
        "webhook-failed",
        [*ORDER, "yes"],
        ["Sorry, our order system isn't working right now. Let me put you through to the shop."],
        "transferred",
        "staff",
        webhook="fail",
        posted=ORDER_POSTED,
    ),
    Case(
        "pizza_order",
        "webhook-unknown",
        [*ORDER, "yes"],
        ["Sorry, I couldn't confirm your order went through. Let me put you through to the shop to check."],
        "transferred",
        "staff",
        webhook="drop",
        posted=ORDER_POSTED,
    ),
]

CASES = [*CARDS, *CLAIMS, *CLINIC, *PIZZA]


async def play(case: Case, backend: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Conversation, list[str]]:
    """The call, as ``parley serve`` runs it (webhooks with the hold prompt), from the caller's lines."""
    from datetime import date

    monkeypatch.setenv(BACKEND_VARIABLE[case.agent], f"{backend}/{case.webhook}/{case.agent}")
    agent = load_agent(EXAMPLES / f"{case.agent}.yaml")
    c = Conversation(agent, understanding(case.agent), call_id=f"paths-{case.id}", today=date(2025, 6, 1))
    said: list[str] = []
    pending = c.start()
    lines = iter(case.caller)
    while pending or not c.finished:
        queue, pending = pending, []
        for action in queue:
            if isinstance(action, Say):
                said.append(action.text)
            elif isinstance(action, CallWebhook):
                _, after = await run_webhook(
                    c, action, lambda says: said.extend(a.text for a in says), backoff_s=0.01
                )
                pending += after
            elif isinstance(action, Transfer):
                c.on_transfer_result(200)
        if c.finished or pending:
            continue
        line = next(lines, None)
        assert line is not None, "the caller ran out of lines; the agent said:\n" + "\n".join(said)
        if line == "/silence":
            pending = c.on_no_input()
        elif line.startswith("/dtmf "):
            pending = c.on_dtmf(line.removeprefix("/dtmf "))
        else:  # "text @0.5": recognised with that confidence (default 0.95)
            text, _, confidence = line.partition(" @")
            pending = c.on_final(text, float(confidence or 0.95))
        assert pending, f"{line!r} was not taken; the agent said:\n" + "\n".join(said)
    assert next(lines, None) is None, "the call ended before the caller's last line"
    return c, said


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_every_path(case: Case, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    before = len(Backend.posts)
    c, said = await play(case, backend, monkeypatch)
    transcript = "\n".join(said)
    position = 0
    for text in case.says:
        found = next((i for i in range(position, len(said)) if text in said[i]), None)
        assert found is not None, f"{text!r} not said (in order) in:\n{transcript}"
        position = found + 1
    assert not any("  " in text or " ." in text or " ," in text for text in said), transcript  # no blanks
    assert (c.outcome, c.record.end_step) == (case.outcome, case.end_step), (
        c.record.outcome_reason,
        transcript,
    )
    posts = [body["slots"] for path, body in Backend.posts[before:] if path.startswith(f"/{case.webhook}/")]
    if case.posted is None:
        assert posts == [], posts
    else:
        assert posts and all(p == case.posted for p in posts), posts
        outcome = c.record.webhooks[-1].outcome
        assert outcome == {"ok": "ok", "slow": "ok", "fail": "failed", "drop": "unknown"}[case.webhook]
    for name, value in case.slots.items():
        assert c.slots.get(name) == value, (name, c.slots.get(name))


def test_every_example_agent_and_every_kind_of_path_is_covered() -> None:
    kinds = ("yes", "no", "correction", "no-input", "no-match", "operator", "slow", "failed", "unknown")
    agents = {path.stem for path in EXAMPLES.glob("*.yaml")}
    assert agents == set(BACKEND_VARIABLE)
    covered = {
        (case.agent, kind) for case in CASES for kind in kinds if kind in case.path or case.webhook == kind
    }
    covered |= {(case.agent, "slow") for case in CASES if case.webhook == "slow"}
    missing = {(agent, kind) for agent in agents for kind in kinds} - covered
    # the clinic agent asks nothing it reads back, and its dates are checked by rules (no free no-match)
    assert missing <= {("appointment_reschedule", "correction"), ("appointment_reschedule", "no-match"),
                       ("appointment_reschedule", "slow")}, sorted(missing)  # fmt: skip
