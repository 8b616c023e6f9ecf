"""Keypad answers on a real call: ``parley serve`` over SIP, RFC 4733 events while RTP audio flows.

The caller (Parley's own UAC, as the load tester uses it) sends RTP every 20 ms all through the call
(silence when it has nothing to say) and keys answers as RFC 4733 events. A variable-length answer
without the terminator must end by the inter-digit timeout from the *last key*: the audio frames
that keep arriving may not restart it (issue 13: the digits were dropped and the turn became a
no-input). Also: the terminator, the maximum number of keys, and a value rule on a keyed answer;
and on the same live call path, a slow webhook backend (a real HTTP server on 127.0.0.1): the hold
prompt is spoken while it works, and a timeout after sending takes the agent's unknown-outcome path.
A call that mixes speech and keys (flite speech through the real recognisers): words then keys in
one answer, corrections keyed at the read-back (one beginning with 1: the keys after it make it a
value, not a yes), "no" said then the corrected value keyed, a lone 1 as yes; then words and keys
that end the answer by its expected length (no terminator, no inter-digit timeout), and a spoken
answer to the next question.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from parley.nlu.question import Question, SlotType
from parley.nlu.reader import read_slot
from parley.telephony.manager import CallManager

from .e2e_agents import AGREE, agent_yaml, ask, webhook
from .e2e_fixtures import needs_flite
from .http_backend import serve_http
from .voice_caller import PROMPT_SILENCE_MS, AgentServer, AnswerBook, dial, record_of, running_agent, step

pytestmark = [
    needs_flite,
    pytest.mark.timeout(120),
]

INTERDIGIT_S = 1.5
LONG_INTERDIGIT_S = 6.0  # the account's: its answer must end by its length long before this
UNKNOWN_MESSAGE = "Sorry, I could not confirm that. A colleague will call you back."


def keypad_agent(url: str) -> str:
    """A phone number keyed without the terminator, a PIN (6 keys at most, 4 at least), and a webhook
    that holds the caller after 0.5 s and gives up after 2.5 s (its outcome is then unknown)."""
    phone = ask(
        "phone",
        "phone",
        "Please key in your phone number.",
        dtmf=True,
        dtmf_interdigit_s=INTERDIGIT_S,
        no_input_limit=0,
    )
    pin = ask(
        "pin",
        "digits",
        "Now key in your PIN, then the hash key.",
        dtmf=True,
        dtmf_max_digits=6,
        reprompts=["Please key in your PIN again."],
        rules={"min_length": 4},
    )
    submit = webhook(
        url,
        timeout_s=2.5,
        hold_after_s=0.5,
        hold_prompt="One moment please, I'm checking your details.",
        on_unknown="unknown",
    )
    unknown = {"id": "unknown", "type": "hangup", "message": UNKNOWN_MESSAGE}
    return agent_yaml("keypad-e2e", [phone, pin, submit, unknown], max_turn_ms=20000)


def mixed_agent(url: str) -> str:
    """A phone number said or keyed, read back (keys may answer it), an eight digit account number
    said or keyed (no terminator needed: its length ends it), then a spoken yes/no."""
    phone = ask(
        "phone",
        "phone",
        "Please say or key your phone number, then the hash key.",
        dtmf=True,
        confirm="always",
        confirm_prompt="I have {value}. Press 1 if that is right, 2 if not, or key the right number.",
    )
    account = ask(
        "account",
        "digits",
        "Now say or key your eight digit account number.",
        digits=8,
        dtmf=True,
        dtmf_interdigit_s=LONG_INTERDIGIT_S,
    )
    steps = [phone, account, AGREE, webhook(url)]
    return agent_yaml("mixed-e2e", steps, no_input_ms=8000, max_turn_ms=20000)


class Backend(BaseHTTPRequestHandler):
    """A real HTTP backend on loopback: records each POST; a PIN of 999999 makes it answer after 4 s
    (the agent's timeout is 2.5 s: the request was sent, its outcome is unknown)."""

    requests: list[tuple[str, str, dict[str, Any]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append((self.command, self.path, body))
        if body["slots"].get("pin") == "999999":
            time.sleep(4.0)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


@pytest.fixture(scope="module")
def sink() -> Iterator[str]:
    with serve_http(Backend) as url:
        yield url


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory: pytest.TempPathFactory, sink: str) -> Iterator[AgentServer]:
    with running_agent(tmp_path_factory.mktemp("keypad"), keypad_agent(sink + "/keypad")) as server:
        yield server


@pytest.fixture(scope="module")
def mixed_server(tmp_path_factory: pytest.TempPathFactory, sink: str) -> Iterator[AgentServer]:
    with running_agent(tmp_path_factory.mktemp("mixed"), mixed_agent(sink + "/mixed")) as server:
        yield server


async def test_variable_length_keypad_answer_ends_by_interdigit_timeout_while_rtp_flows(
    agent_server: AgentServer, sink: str, caller_manager: CallManager
) -> None:
    caller = await dial(caller_manager, agent_server)
    try:
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), "the phone prompt", agent_server)
        last_key = await caller.press("07700900123")  # no terminator
        await step(caller.wait_speech(), "the PIN prompt after the inter-digit timeout", agent_server)
        reply_after_s = time.monotonic() - last_key
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), "the end of the PIN prompt", agent_server)
        await caller.press("12#")  # too short: the rule re-asks
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), "the PIN reprompt", agent_server)
        await caller.press("12345678")  # the maximum (6 keys) ends it: 7 and 8 come too late
        await step(caller.wait_ended(), "the goodbye and BYE", agent_server, 30)
    finally:
        await caller.close()
    record = await record_of(agent_server, caller.call.call_id)
    turns = [(t["step"], t["input"], t["result"]) for t in record["turns"]]
    assert turns == [
        ("phone", "dtmf", "accepted"),
        ("pin", "dtmf", "invalid:length"),
        ("pin", "dtmf", "accepted"),
    ], record["turns"]
    posts = [body for _, path, body in Backend.requests if body.get("call_id") == record["call_id"]]
    assert [p["slots"] for p in posts] == [{"phone": "07700900123", "pin": "123456"}], posts
    assert record["outcome"] == "completed", record
    # ended by the timeout after the last key (not by the no-input timeout of 6 s)
    assert INTERDIGIT_S - 0.2 < reply_after_s < INTERDIGIT_S + 4.0, reply_after_s


async def test_slow_backend_gets_the_hold_prompt_and_an_unknown_outcome_on_a_live_call(
    agent_server: AgentServer, sink: str, caller_manager: CallManager
) -> None:
    caller = await dial(caller_manager, agent_server)
    try:
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), "the phone prompt", agent_server)
        await caller.press("07700900123#")
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), "the PIN prompt", agent_server)
        await caller.press("999999")
        await step(caller.wait_ended(), "the unknown-outcome message and BYE", agent_server, 40)
    finally:
        await caller.close()
    record = await record_of(agent_server, caller.call.call_id)
    (webhook,) = record["webhooks"]
    assert (webhook["outcome"], webhook["held"], webhook["attempts"]) == ("unknown", True, 1), webhook
    texts = [p["text"] for p in record["prompts"]]
    held = texts.index("One moment please, I'm checking your details.")
    assert texts[held + 1 :] == [UNKNOWN_MESSAGE], texts
    assert (record["end_step"], record["outcome_reason"]) == ("unknown", "webhook submit outcome unknown")
    posts = [body for _, _, body in Backend.requests if body.get("call_id") == record["call_id"]]
    assert len(posts) == 1, posts  # sent once: never repeated by accident


async def test_a_call_mixing_speech_and_keys_with_keyed_corrections_at_the_read_back(
    mixed_server: AgentServer, sink: str, caller_manager: CallManager, answers: AnswerBook
) -> None:
    texts = ("zero seven seven", "no", "four two", "yes")
    zero_seven_seven, no, four_two, yes = [await answers.get(text) for text in texts]
    server = mixed_server
    caller = await dial(caller_manager, server)
    try:
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), "the phone prompt", server)
        await caller.say(zero_seven_seven)
        await caller.press("00900123#")  # words, then keys: one answer, read back
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), "the first read-back", server)
        await caller.press("07700900456#")  # a keyed correction (its first key is neither 1 nor 2)
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), "the second read-back", server)
        await caller.press("1800123456#")  # a keyed correction that begins with 1: more keys follow the 1
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), "the third read-back", server)
        await caller.say(no)
        await caller.press("2800123456#")  # "no", then the right number keyed
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), "the fourth read-back", server)
        await caller.press("1")  # yes: alone, it answers
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), "the account question", server)
        await caller.say(four_two)
        last_key = await caller.press("719300")  # no terminator: the words' digits and the keys make 8
        replied = await step(caller.wait_speech(), "the yes/no question", server)
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), "the end of the yes/no question", server)
        await caller.say(yes)
        await step(caller.wait_ended(), "the goodbye and BYE", server, 30)
    finally:
        await caller.close()
    record = await record_of(server, caller.call.call_id)
    turns = [(t["step"], t["kind"], t["input"], t["result"]) for t in record["turns"]]
    assert turns == [
        ("phone", "answer", "speech+dtmf", "to_confirm"),
        ("phone", "confirm", "dtmf", "correction"),
        ("phone", "confirm", "dtmf", "correction"),
        ("phone", "confirm", "speech+dtmf", "correction"),
        ("phone", "confirm", "dtmf", "yes"),
        ("account", "answer", "speech+dtmf", "accepted"),
        ("agree", "answer", "speech", "accepted"),
    ], (record["turns"], server.log())
    # the words' digits as the arbiter's choice heard them ("zero seven seven" unless misheard), then keys
    chosen = next(h["text"]["value"] for h in record["turns"][0]["hypotheses"] if h["chosen"])
    reading = read_slot(Question(SlotType.PHONE), chosen)
    heard = "".join(ch for ch in str(reading.value) if ch.isdigit())
    assert heard, chosen
    read_backs = [p["text"]["value"] for p in record["prompts"] if isinstance(p["text"], dict)]
    assert [text.split(".")[0] for text in read_backs] == [
        "I have " + " ".join(heard + "00900123"),
        "I have " + " ".join("07700900456"),
        "I have " + " ".join("1800123456"),
        "I have " + " ".join("2800123456"),
    ], read_backs
    posts = [body for _, path, body in Backend.requests if body.get("call_id") == record["call_id"]]
    assert [p["slots"] for p in posts] == [{"phone": "2800123456", "account": "42719300", "agree": True}], (
        posts
    )
    assert record["outcome"] == "completed", record
    # the account's answer ended with its eighth digit, not by the inter-digit timeout (6 s)
    assert replied - last_key < LONG_INTERDIGIT_S - 2, replied - last_key
    # the lone 1 answered after dtmf_answer_wait_s (1 s by default), not at once and not 3 s later
    yes_turn = record["turns"][4]
    assert 900 <= yes_turn["timing"]["decision_ms"] <= 2500, yes_turn["timing"]
    for turn in record["turns"]:  # keyed turns too: from the last key to the decision and first audio out
        timing = turn["timing"]
        assert 0 <= timing["decision_ms"] <= timing["first_audio_ms"] < 10_000, turn
