"""Webhooks that never act twice: idempotency keys, retries only where safe, the unknown outcome, the
hold prompt, declared response fields and secrets from the environment — against a real HTTP server
on 127.0.0.1 that is slow, fails, drops the connection after reading, or answers bad JSON."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from parley.agent.loader import load_agent_text
from parley.agent.runtime import Action, CallWebhook, Conversation, Hangup, Say, Transfer
from parley.agent.webhook import perform_webhook, run_webhook

from .http_backend import serve_http

SECRET = "s3cr3t-t0ken-4417"


class Backend(BaseHTTPRequestHandler):
    """A card backend that misbehaves on demand (see ``_handle``); records every request it read."""

    requests: list[dict[str, Any]] = []
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        with self.lock:
            self.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            hits = sum(r["path"] == self.path for r in self.requests)
        ok = json.dumps({"reference": "B7431", "last_four": "4321"}).encode()
        if self.path == "/ok":
            self._reply(200, ok)
        elif self.path == "/slow":  # acts, but answers after the caller's timeout
            time.sleep(2.0)
            self._reply(200, ok)
        elif self.path == "/drop":  # read the request, then hang up without an answer
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        elif self.path == "/fail":
            self._reply(500, b'{"error": "boom"}')
        elif self.path == "/flaky":
            self._reply(503 if hits == 1 else 200, ok)
        elif self.path == "/badjson":
            self._reply(200, b'{"reference": "B7431", ')
        elif self.path == "/lacking":
            self._reply(200, b'{"reference": "B7431"}')
        elif self.path == "/wrongtype":
            self._reply(200, b'{"reference": "B7431", "last_four": "43x1"}')
        else:
            self._reply(404, b"{}")

    do_POST = do_PUT = _handle


@pytest.fixture
def backend() -> Iterator[str]:
    Backend.requests = []
    with serve_http(Backend) as url:
        yield url


def hits(path: str) -> list[dict[str, Any]]:
    return [r for r in Backend.requests if r["path"] == path]


AGENT = """
name: card-hooks
steps:
  - id: account
    type: ask
    slot: account
    slot_type: digits
    digits: 4
    prompt: "What is your account number?"
    confirm: never
  - id: block
    type: webhook
    url: ${TEST_CARDS_BACKEND}/PATH
    headers: {Authorization: "Bearer ${TEST_CARDS_TOKEN}"}
    timeout_s: 1.0
    retries: 1
    IDEMPOTENT
    hold_after_s: 0.1
    save:
      reference: reference
      last_four: {slot: last_four, type: digits}
    say: "Your card ending {last_four} is blocked. Your reference is {reference}."
    next: bye
    on_failure: failed
    on_unknown: unknown
  - id: bye
    type: hangup
    message: "Goodbye."
  - id: failed
    type: hangup
    message: "I couldn't block your card."
  - id: unknown
    type: transfer
    to: "sip:check@127.0.0.1"
    message: "I couldn't confirm whether your card was blocked. A colleague will check it with you."
"""


def card_agent(
    monkeypatch: pytest.MonkeyPatch, backend: str, path: str, *, idempotent: bool = False, hold_s: float = 0.1
) -> Conversation:
    monkeypatch.setenv("TEST_CARDS_BACKEND", backend)
    monkeypatch.setenv("TEST_CARDS_TOKEN", SECRET)
    text = (
        AGENT.replace("PATH", path.lstrip("/"))
        .replace("IDEMPOTENT", f"idempotent: {'true' if idempotent else 'false'}")
        .replace("hold_after_s: 0.1", f"hold_after_s: {hold_s}")
    )
    return Conversation(load_agent_text(text), call_id="call-7", today=None)


async def run_block(c: Conversation) -> tuple[list[str], list[Action], CallWebhook]:
    """Answer the account question, perform the webhook as ``parley serve`` does; what was said after."""
    c.start()
    action = next(a for a in c.on_dtmf("1234") if isinstance(a, CallWebhook))
    said: list[str] = []
    _, actions = await run_webhook(c, action, lambda says: said.extend(a.text for a in says), backoff_s=0.01)
    said += [a.text for a in actions if isinstance(a, Say)]
    return said, actions, action


# (backend path, idempotent) → POSTs the backend read, what the caller hears last, the record's outcome
CASES = [
    ("/ok", False, 1, "Goodbye.", "ok"),
    ("/slow", False, 1, "I couldn't confirm whether", "unknown"),  # was: POSTed twice, then "couldn't"
    ("/slow", True, 2, "I couldn't confirm whether", "unknown"),
    ("/drop", False, 1, "I couldn't confirm whether", "unknown"),
    ("/drop", True, 2, "I couldn't confirm whether", "unknown"),
    ("/fail", False, 1, "I couldn't block your card.", "failed"),
    ("/fail", True, 2, "I couldn't block your card.", "failed"),
    ("/flaky", False, 1, "I couldn't block your card.", "failed"),
    ("/flaky", True, 2, "Goodbye.", "ok"),
    ("/badjson", False, 1, "I couldn't block your card.", "failed"),
    ("/lacking", False, 1, "I couldn't block your card.", "failed"),
    ("/wrongtype", False, 1, "I couldn't block your card.", "failed"),
]


@pytest.mark.parametrize(("path", "idempotent", "posts", "last", "outcome"), CASES)
async def test_webhook_outcomes(
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    path: str,
    idempotent: bool,
    posts: int,
    last: str,
    outcome: str,
) -> None:
    c = card_agent(monkeypatch, backend, path, idempotent=idempotent)
    said, actions, action = await run_block(c)
    requests = hits(path)
    assert len(requests) == posts, requests
    keys = {r["headers"]["Idempotency-Key"] for r in requests}
    assert keys == {action.idempotency_key}, keys  # the same key on every attempt
    assert all(r["headers"]["Authorization"] == f"Bearer {SECRET}" for r in requests)
    assert requests[0]["body"] == {"call_id": "call-7", "agent": "card-hooks", "slots": {"account": "1234"}}
    assert said[-1].startswith(last), said
    call = c.record.webhooks[0]
    assert call.outcome == outcome and call.attempts == posts, call
    assert call.idempotency_key == action.idempotency_key
    if outcome == "ok":
        assert "Your card ending 4 3 2 1 is blocked. Your reference is B7431." in said
        assert isinstance(actions[-1], Hangup) and c.outcome == "completed"
    else:
        assert not any("card ending" in text for text in said), said  # never blanks in a sentence
        assert "reference" not in c.slots and "last_four" not in c.slots
    if outcome == "unknown":
        assert isinstance(actions[-1], Transfer)
        assert c.record.outcome_reason == "webhook block outcome unknown"
        assert c.record.to_dict()["webhooks"][0]["outcome"] == "unknown"
    if path == "/slow":
        assert said[0] == "One moment, please." and call.held  # the hold prompt, once
        assert said.count("One moment, please.") == 1


async def test_bad_responses_are_named_in_the_record(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    errors = {}
    for path in ("/badjson", "/lacking", "/wrongtype"):
        c = card_agent(monkeypatch, backend, path)
        await run_block(c)
        errors[path] = c.record.webhooks[0].error
    assert errors == {
        "/badjson": "response is not JSON",
        "/lacking": "response lacks field 'last_four'",
        "/wrongtype": "response field 'last_four' is not digits",
    }


async def test_fast_backend_gets_no_hold_prompt(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    c = card_agent(monkeypatch, backend, "/ok", hold_s=5)  # a bound no loaded machine reaches
    said, _, _ = await run_block(c)
    assert "One moment, please." not in said and not c.record.webhooks[0].held


async def test_connection_refused_is_retried_even_when_not_idempotent() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    payload = {"call_id": "c", "agent": "a", "slots": {}}
    action = CallWebhook(f"http://127.0.0.1:{port}/x", "POST", payload, 0.5, 2, "s", "k", False)
    result = await perform_webhook(action, backoff_s=0.01)
    assert result.attempts == 3 and not result.unknown and result.status is None
    assert result.error is not None and "ConnectError" in result.error


async def test_each_visit_of_a_step_has_its_own_key_and_calls_their_own(
    monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    first = card_agent(monkeypatch, backend, "/ok")
    again = card_agent(monkeypatch, backend, "/ok")
    other = Conversation(first.agent, call_id="call-8")
    keys = []
    for c in (first, again, other):
        c.start()
        keys.append(next(a for a in c.on_dtmf("1234") if isinstance(a, CallWebhook)).idempotency_key)
    assert keys[0] == keys[1] != keys[2]  # derived from the call and the step: stable, unique per call


async def test_secrets_never_reach_logs_records_or_reprs(
    monkeypatch: pytest.MonkeyPatch, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for path in ("/ok", "/slow", "/fail"):
        c = card_agent(monkeypatch, backend, path)
        _, _, action = await run_block(c)
        assert SECRET not in c.record.to_json()
        assert SECRET not in repr(action) and SECRET not in repr(c.agent)
    assert hits("/ok")[0]["headers"]["Authorization"] == f"Bearer {SECRET}"  # it was sent
    assert caplog.records and SECRET not in caplog.text


def test_unset_environment_variable_is_a_validation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from parley.agent.loader import AgentFileError

    monkeypatch.delenv("TEST_CARDS_BACKEND", raising=False)
    monkeypatch.setenv("TEST_CARDS_TOKEN", SECRET)
    with pytest.raises(AgentFileError) as info:
        load_agent_text(AGENT.replace("IDEMPOTENT", ""), "agent.yaml")
    error = info.value.errors[0]
    assert (error.line, error.message) == (13, "environment variable TEST_CARDS_BACKEND is not set")
    assert "TEST_CARDS_BACKEND" in (error.hint or "")
    text = AGENT.replace("IDEMPOTENT", "").replace(
        "${TEST_CARDS_BACKEND}", "${TEST_CARDS_BACKEND:-http://h:1}"
    )
    assert load_agent_text(text).step("block").url == "http://h:1/PATH"
