"""``parley chat``: the dialogue in a terminal, driven through click's CliRunner."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from parley.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def chat(*args: str, input: str) -> Any:
    result = CliRunner().invoke(main, ["chat", *args, "--today", "2025-06-01"], input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def test_card_block_example_end_to_end(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    lines = [
        "/dtmf 4271 2345",  # keypad account number (spaces ignored)
        "the third of may nineteen eighty five",
        "yes",  # shall I go ahead?
        "yes",  # confirm: always
        "no thanks",  # anything else?
    ]
    result = chat(
        str(EXAMPLES / "card_block.yaml"),
        "--no-webhooks",
        "--record",
        str(record),
        input="\n".join(lines) + "\n",
    )
    out = result.output
    assert result.exit_code == 0, out
    assert "agent> Welcome to Northbank card services." in out
    assert "[keypad accepted: /dtmf DIGITS]" in out
    assert "on account 4 2 7 1 2 3 4 5. A new card" in out
    assert "agent> Just to be sure: you want me to block the card now?" in out
    assert "[webhook POST http://127.0.0.1:8080/cards/block: simulated 200 {" in out
    assert "Your card ending 1 2 3 4 is now blocked." in out  # made-up values, never blanks
    assert "[early close]" in out
    assert "agent> Thank you for calling Northbank. Goodbye." in out
    assert "[agent hung up: end of chat]" in out
    assert "outcome completed" in out
    assert "account_number = '42712345'" in out
    data = json.loads(record.read_text())
    assert data["outcome"] == "completed"
    assert data["slots"]["account_number"] == {"sensitive": True, "value": "42712345"}
    assert data["slots"]["date_of_birth"] == {"sensitive": True, "value": "1985-05-03"}
    assert data["turns"][0]["input"] == "dtmf"
    assert any(turn["t_early_close"] is not None for turn in data["turns"])


def test_operator_request_transfers_and_ends_the_chat() -> None:
    result = chat(str(EXAMPLES / "insurance_claim.yaml"), input="I want to make a claim\noperator please\n")
    out = result.output
    assert "agent> I can help you with a new claim. First, what is your first name?" in out
    assert "agent> Please hold while I transfer you to a claims adviser." in out
    assert "[transfer to sip:operator@127.0.0.1:5070: end of chat]" in out
    assert "outcome transferred" in out
    assert "reason = 'new_claim'" in out


def test_silence_reprompts_then_fails_over_and_quit_abandons() -> None:
    result = chat(str(EXAMPLES / "appointment_reschedule.yaml"), input="/silence\n\n/silence\n")
    out = result.output
    assert out.count("agent> Sorry, is the appointment in your name?") == 2
    assert "[transfer to sip:reception@127.0.0.1:5070: end of chat]" in out
    assert "no-input limit at identity" in out

    result = chat(str(EXAMPLES / "appointment_reschedule.yaml"), input="yes\n/quit\n")
    assert "agent> What is the date of the appointment you'd like to move?" in result.output
    assert "[caller hung up]" in result.output
    assert "outcome abandoned" in result.output


def test_end_of_input_is_a_hangup_and_unknown_commands_are_explained() -> None:
    result = chat(str(EXAMPLES / "appointment_reschedule.yaml"), input="/help\n")
    assert "[commands: /dtmf DIGITS, /silence, /quit]" in result.output
    assert "outcome abandoned" in result.output


def test_the_logging_level_is_given_back_after_the_chat() -> None:
    """Chat logs only errors while it runs; the process's level is restored after (it leaked into
    later tests' log captures)."""
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.WARNING)
    try:
        chat(str(EXAMPLES / "insurance_claim.yaml"), input="operator please\n")
        assert root.level == logging.WARNING
    finally:
        root.setLevel(before)


def test_dtmf_where_not_accepted() -> None:
    result = chat(str(EXAMPLES / "insurance_claim.yaml"), input="/dtmf 12\n/quit\n")
    assert "[keypad input not accepted here]" in result.output


def test_low_confidence_typing_asks_for_confirmation() -> None:
    result = chat(
        str(EXAMPLES / "insurance_claim.yaml"),
        "--confidence",
        "0.4",
        input="I want to make a claim\njohn\nyes\n/quit\n",
    )
    out = result.output
    assert "agent> I heard John. Is that right?" in out
    assert "agent> Thanks John. Could you spell your last name" in out


def test_early_close_drops_words_after_the_close() -> None:
    # "yes" closes the yes/no turn early once stable: the words typed after it were not heard
    result = chat(
        str(EXAMPLES / "appointment_reschedule.yaml"),
        input="yes yes it is my own appointment\n/quit\n",
    )
    assert "[early close] (not heard: 'it is my own appointment')" in result.output
    assert "is_patient = True" in result.output


def test_invalid_agent_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsteps:\n  - id: a\n    type: shout\n")
    result = CliRunner().invoke(main, ["chat", str(bad)], input="")
    assert result.exit_code == 1
    assert "bad.yaml:4" in result.output


class Backend(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    status = 200

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append(json.loads(body))
        reply = json.dumps({"claim_id": "CLM-0042"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


@pytest.fixture
def backend() -> Iterator[str]:
    Backend.received = []
    Backend.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/claims"
    server.shutdown()
    server.server_close()


INSURANCE_ANSWERS = [
    "I'd like to report an accident",
    "my name is john",
    "S M I T H",
    "yes",
    "four two seven one two three four five",
    "yes",
    "two hundred and fifty pounds",
    "yes",  # happy with the help
]


def test_real_webhook_call(tmp_path: Path, backend: str) -> None:
    agent = tmp_path / "claim.yaml"
    agent.write_text(
        (EXAMPLES / "insurance_claim.yaml")
        .read_text()
        .replace("${CLAIMS_BACKEND:-http://127.0.0.1:8080}/claims", backend)
    )
    result = chat(str(agent), input="\n".join(INSURANCE_ANSWERS) + "\n")
    out = result.output
    assert f"[webhook POST {backend} → 200 in" in out
    assert "agent> Thank you John. Your claim has been registered. Your claim number is CLM-0042." in out
    assert "outcome completed" in out
    slots = Backend.received[0]["slots"]
    assert slots == {
        "reason": "new_claim",
        "first_name": "John",
        "last_name": "SMITH",
        "policy_number": "42712345",
        "claim_amount": {"amount": "250", "currency": "GBP"},
    }


def test_real_webhook_failure_takes_the_agents_failure_path(tmp_path: Path, backend: str) -> None:
    Backend.status = 500
    agent = tmp_path / "claim.yaml"
    text = (
        (EXAMPLES / "insurance_claim.yaml")
        .read_text()
        .replace("${CLAIMS_BACKEND:-http://127.0.0.1:8080}/claims", backend)
    )
    agent.write_text(text.replace("retries: 1", "retries: 0"))
    result = chat(str(agent), input="\n".join(INSURANCE_ANSWERS) + "\n")
    out = result.output
    assert f"[webhook POST {backend} → 500, HTTP 500 in" in out
    assert "agent> I'm sorry, I couldn't register your claim just now." in out
    assert "[transfer to sip:operator@127.0.0.1:5070: end of chat]" in out
    assert "outcome transferred (webhook submit failed)" in out
