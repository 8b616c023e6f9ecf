"""End-to-end voice-agent calls over real SIP and RTP on loopback.

``parley serve AGENT.yaml`` runs as a subprocess (VAD, pocketsphinx engines in worker processes, the
arbiter, NLU, the dialogue runtime, flite prompts). Parley's own UAC dials it; the caller waits for
each prompt to end (speech, then 700 ms of silence, on the received audio), speaks its answer
rendered by flite, and at the end waits for the agent's BYE. Asserted: the JSON the agent POSTed to
a local webhook sink, the call record the server appended (outcome, turns with ASR hypotheses and
the arbiter's choice, slot values in sensitive envelopes), the REFER target on a transfer, and the
no-input path when the caller says nothing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from integration.harness import HOST, free_port, rtp_range
from parley.speech.tts import load_tts, render
from parley.telephony.call import Call
from parley.telephony.manager import CallManager

from .voice_caller import (
    SLOW_CPU_ASR_DEADLINE,
    AgentServer,
    AnswerBook,
    ScriptedCaller,
    WebhookSink,
    record_of,
    running_agent,
    speech_ms,
    step,
)

pytestmark = [
    pytest.mark.skipif(shutil.which("flite") is None, reason="flite not installed (Debian package flite)"),
    pytest.mark.timeout(120),
]

TRANSFER_TARGET = "sip:operator@127.0.0.1:5999"
CLAIM_ID = "C123"
PROMPT_SILENCE_MS = 700  # the agent's prompt has ended after this much silence
NO_INPUT_MS = 4000
# PARLEY_E2E_UVLOOP=0 runs the server on asyncio's loop instead (to tell uvloop-only faults apart).
UVLOOP = os.environ.get("PARLEY_E2E_UVLOOP", "1") != "0"

AGENT_YAML = """
name: e2e-test
description: A short flow for end-to-end call tests.
language: en-US
voice: {{engine: flite, voice: slt, rate: 1.0}}
settings: {{silence_ms: 700, no_input_ms: {no_input_ms}, max_turn_ms: 10000, barge_in: true}}
intents:
  operator:
    ["I want to speak to an agent", "speak to an agent", "can I talk to a real person", "operator please"]
  repeat: ["can you repeat that", "say that again", "pardon"]
  goodbye: ["goodbye", "that's all thanks", "bye"]
global_intents:
  operator: {{goto: handover}}
  repeat: {{action: repeat}}
  goodbye: {{goto: bye}}
steps:
  - id: greet
    type: say
    text: "Hello, this is the Parley test line."
  - id: account
    type: ask
    slot: account
    slot_type: digits
    digits: 4
    prompt: "Please say your four digit account number."
    no_input_prompt: "I didn't hear anything. Please say your four digit account number."
    no_input_limit: 1
    confirm: never
    on_failure: sorry
  - id: agree
    type: ask
    slot: agree
    slot_type: yes_no
    prompt: "Shall I send your request now?"
    confirm: never
    on_failure: sorry
  - id: submit
    type: webhook
    url: {url}
    method: POST
    send: [account, agree]
    timeout_s: 3
    retries: 0
    save: {{claim_id: claim_id}}
    say: "Done. Your reference is {{claim_id}}."
    next: bye
    on_failure: sorry
  - id: bye
    type: hangup
    message: "Thank you, goodbye."
  - id: sorry
    type: hangup
    message: "Sorry, I could not help you. Goodbye."
  - id: handover
    type: transfer
    to: "{transfer}"
    message: "Please hold while I transfer you."
"""


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sink() -> Iterator[WebhookSink]:
    with WebhookSink({"claim_id": CLAIM_ID}) as server:
        yield server


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory: pytest.TempPathFactory, sink: WebhookSink) -> Iterator[AgentServer]:
    """One ``parley serve`` for the module (its warm-up is the slow part); stopped at teardown."""
    text = AGENT_YAML.format(url=sink.url("/claims"), transfer=TRANSFER_TARGET, no_input_ms=NO_INPUT_MS)
    with running_agent(
        tmp_path_factory.mktemp("e2e"), text, startup_timeout=90, uvloop=UVLOOP, env=SLOW_CPU_ASR_DEADLINE
    ) as server:
        yield server


@pytest.fixture(scope="module")
def answers() -> AnswerBook:
    return AnswerBook(load_tts("flite"), "slt")


@pytest.fixture
async def caller_manager() -> AsyncIterator[CallManager]:
    refers: list[str] = []

    async def on_refer(call: Call, target: str) -> int:
        refers.append(target)
        return 200

    manager = CallManager(
        None, host=HOST, port=free_port(), rtp_ports=rtp_range(20), on_refer=on_refer, max_load=None
    )
    manager.refers = refers  # type: ignore[attr-defined]
    await manager.start()
    yield manager
    await asyncio.wait_for(manager.stop(), 5)


# -- helpers ---------------------------------------------------------------------------------
async def dial(manager: CallManager, server: AgentServer) -> ScriptedCaller:
    call = await manager.dial(server.uri, timeout=10)
    return ScriptedCaller(manager, call)


def value(envelope: Any) -> Any:
    assert isinstance(envelope, dict) and envelope.get("sensitive") is True, envelope
    return envelope["value"]


# -- tests -----------------------------------------------------------------------------------
async def test_completed_call_posts_spoken_slots(
    agent_server: AgentServer, sink: WebhookSink, answers: AnswerBook, caller_manager: CallManager
) -> None:
    account, yes = await answers.get("four two seven one"), await answers.get("yes")
    caller = await dial(caller_manager, agent_server)
    try:
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), "the greeting and account prompt", agent_server)
        said = await step(caller.say(account), "the account answer to play", agent_server)
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), "the yes/no prompt", agent_server)
        heard = caller.first_reply_after(said)  # the yes/no prompt's first loud packet
        await step(caller.say(yes), "the yes answer to play", agent_server)
        caller.mark()
        reason = await step(caller.wait_ended(), "the agent's BYE", agent_server, 30)
        heard_ms = caller.speech_frames * 20
    finally:
        await caller.close()
    assert reason == "remote-bye", reason  # the agent hung up
    record = await record_of(agent_server, caller.call.call_id)
    posts = [
        body for _, path, body in sink.requests if path == "/claims" and body["call_id"] == record["call_id"]
    ]
    assert len(posts) == 1, (sink.requests, record)
    assert posts[0]["slots"] == {"account": "4271", "agree": True}, (posts[0], record["turns"])
    assert record["outcome"] == "completed", record
    assert record["end_step"] == "bye", record
    assert value(record["slots"]["account"]) == "4271"
    assert value(record["slots"]["agree"]) is True
    assert value(record["slots"]["claim_id"]) == CLAIM_ID
    turns = [t for t in record["turns"] if t["input"] == "speech"]
    assert [t["step"] for t in turns] == ["account", "agree"], record["turns"]
    for turn in turns:
        assert turn["hypotheses"], turn
        assert sum(h["chosen"] for h in turn["hypotheses"]) == 1, turn  # the arbiter's choice
        assert all(isinstance(h["text"], dict) and h["text"]["sensitive"] for h in turn["hypotheses"])
        assert turn["arbiter_reason"], turn
        assert turn["result"] == "accepted", turn
        value(turn["transcript"])
        timing = turn["timing"]  # where the reply time went, for the latency benchmark
        assert {"close_after_speech_ms", "asr_finish_ms"} <= set(timing) and min(timing.values()) >= 0, turn
        assert "asr_whisper_ms" in timing, turn  # each engine's answer time after the end of speech
        # from the caller's end of speech: the turn closed, the final, the decision, the reply's first audio
        decided = timing["close_after_speech_ms"] + timing["asr_finish_ms"]
        assert decided <= timing["decision_ms"] <= timing["first_audio_ms"] < 10_000, turn
    # The node's first audio out is the reply the caller heard: the caller's own reply latency (from
    # its last frame sent to the first loud packet) differs by the node's jitter buffer and where the
    # VAD put the end of speech, not by more.
    assert heard is not None
    caller_ms, node_ms = (heard - said) * 1000, turns[0]["timing"]["first_audio_ms"]
    assert caller_ms - 400 < node_ms < caller_ms + 100, (caller_ms, turns[0]["timing"])
    assert record["webhooks"][0]["status"] == 200, record["webhooks"]
    # After the last answer: the reference, then the goodbye once (not twice), then BYE.
    tts = load_tts("flite")
    reference = speech_ms(await render(tts, f"Done. Your reference is {CLAIM_ID}.", "slt"))
    goodbye = speech_ms(await render(tts, "Thank you, goodbye.", "slt"))
    assert heard_ms < reference + 1.5 * goodbye, (heard_ms, reference, goodbye)


async def test_operator_request_transfers_with_refer(
    agent_server: AgentServer, answers: AnswerBook, caller_manager: CallManager
) -> None:
    request = await answers.get("I want to speak to an agent")
    caller = await dial(caller_manager, agent_server)
    try:
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), "the account prompt", agent_server)
        await step(caller.say(request), "the operator request to play", agent_server)
        reason = await step(caller.wait_ended(), "the call to end after the transfer", agent_server, 30)
    finally:
        await caller.close()
    record = await record_of(agent_server, caller.call.call_id)
    assert caller_manager.refers == [TRANSFER_TARGET], (reason, record)  # type: ignore[attr-defined]
    assert record["outcome"] == "transferred", record
    assert record["end_step"] == "handover", record
    assert record["turns"][0]["result"] == "global:operator", record["turns"]


async def test_silent_caller_is_reprompted_then_fails(
    agent_server: AgentServer, caller_manager: CallManager
) -> None:
    caller = await dial(caller_manager, agent_server)
    try:
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), "the account prompt", agent_server)
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), "the no-input reprompt", agent_server)
        await step(caller.wait_ended(), "the failure goodbye and BYE", agent_server, 30)
    finally:
        await caller.close()
    record = await record_of(agent_server, caller.call.call_id)
    assert record["outcome"] == "failed", record
    assert record["end_step"] == "sorry", record
    assert "no-input" in (record["outcome_reason"] or ""), record
    turns = record["turns"]
    assert [(t["step"], t["input"], t["result"]) for t in turns] == [
        ("account", "no_input", "no_input"),
        ("account", "no_input", "no_input"),
    ], turns
    texts = [p["text"] for p in record["prompts"]]
    assert texts.index("I didn't hear anything. Please say your four digit account number.") > texts.index(
        "Please say your four digit account number."
    ), texts
    assert texts[-1] == "Sorry, I could not help you. Goodbye.", texts
    assert record["slots"] == {}, record
