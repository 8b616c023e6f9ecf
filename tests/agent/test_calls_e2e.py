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

from collections.abc import Iterator
from typing import Any

import pytest

from parley.speech.tts import load_tts, render
from parley.telephony.manager import CallManager

from .e2e_agents import ACCOUNT, AGREE, OPERATOR, REFERENCE, account_agent, agent_yaml, webhook
from .e2e_fixtures import needs_flite
from .voice_caller import (
    PROMPT_SILENCE_MS,
    SLOW_CPU_ASR_DEADLINE,
    UVLOOP,
    AgentServer,
    AnswerBook,
    WebhookSink,
    answer_prompts,
    dial,
    record_of,
    running_agent,
    speech_ms,
    step,
)

pytestmark = [
    needs_flite,
    pytest.mark.timeout(120),
]


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory: pytest.TempPathFactory, sink: WebhookSink) -> Iterator[AgentServer]:
    """One ``parley serve`` for the module (its warm-up is the slow part); stopped at teardown."""
    text = account_agent(sink.url("/claims"), name="e2e-test")
    with running_agent(
        tmp_path_factory.mktemp("e2e"), text, uvloop=UVLOOP, env=SLOW_CPU_ASR_DEADLINE
    ) as server:
        yield server


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
        said = await answer_prompts(caller, agent_server, ("the greeting and account prompt", account))
        await answer_prompts(caller, agent_server, ("the yes/no prompt", yes))
        heard = caller.first_reply_after(said)  # the yes/no prompt's first loud packet
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
    assert value(record["slots"]["reference"]) == REFERENCE
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
        # each engine's answer time after the end of speech: the streaming decoders', and whisper's unless
        # the arbiter did not ask it (the streaming decoders read the same answer and one was sure)
        not_asked = turn["arbiter_reason"].partition("not asked: ")[2].split(" (")[0].split(", ")
        assert {"asr_sphinx-grammar_ms", "asr_sphinx-agent-lm_ms"} <= set(timing), turn
        assert ("asr_whisper_ms" in timing) is ("whisper" not in not_asked), turn
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
    reference = speech_ms(await render(tts, f"Done. Your reference is {REFERENCE}.", "slt"))
    goodbye = speech_ms(await render(tts, "Thank you, goodbye.", "slt"))
    assert heard_ms < reference + 1.5 * goodbye, (heard_ms, reference, goodbye)


async def test_operator_request_transfers_with_refer(
    agent_server: AgentServer, answers: AnswerBook, caller_manager: CallManager
) -> None:
    request = await answers.get("I want to speak to an agent")
    caller = await dial(caller_manager, agent_server)
    try:
        await answer_prompts(caller, agent_server, ("the account prompt", request))
        reason = await step(caller.wait_ended(), "the call to end after the transfer", agent_server, 30)
    finally:
        await caller.close()
    record = await record_of(agent_server, caller.call.call_id)
    assert caller_manager.refers == [OPERATOR], (reason, record)  # type: ignore[attr-defined]
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


@pytest.fixture(scope="module")
def acknowledging_server(
    tmp_path_factory: pytest.TempPathFactory, sink: WebhookSink
) -> Iterator[AgentServer]:
    """The account agent, saying "Okay." as soon as the caller stops (``acknowledge_after_ms: 0``)."""
    steps = [ACCOUNT, AGREE, webhook(sink.url("/acknowledged"), send=["account", "agree"])]
    text = agent_yaml("acknowledging", steps, acknowledgement="Okay.", acknowledge_after_ms=0)
    with running_agent(
        tmp_path_factory.mktemp("ack"), text, uvloop=UVLOOP, env=SLOW_CPU_ASR_DEADLINE
    ) as server:
        yield server


async def test_the_acknowledgement_is_heard_before_the_reply_and_changes_nothing_else(
    acknowledging_server: AgentServer, sink: WebhookSink, answers: AnswerBook, caller_manager: CallManager
) -> None:
    account, yes = await answers.get("four two seven one"), await answers.get("yes")
    caller = await dial(caller_manager, acknowledging_server)
    try:
        await answer_prompts(caller, acknowledging_server, ("the account prompt", account))
        await answer_prompts(caller, acknowledging_server, ("Okay and the yes/no prompt", yes))
        reason = await step(caller.wait_ended(), "the agent's BYE", acknowledging_server, 30)
    finally:
        await caller.close()
    assert reason == "remote-bye", reason
    record = await record_of(acknowledging_server, caller.call.call_id)
    call_id = record["call_id"]
    posts = [b for _, path, b in sink.requests if path == "/acknowledged" and b["call_id"] == call_id]
    assert [p["slots"] for p in posts] == [{"account": "4271", "agree": True}], record["turns"]
    turns = {t["step"]: t["timing"] for t in record["turns"] if t["input"] == "speech"}
    assert "acknowledgement_ms" in turns["agree"], turns  # a digits answer may close at a pause: decided
    for timing in turns.values():
        if "acknowledgement_ms" in timing:  # "Okay." left first, then the reply, queued after it
            assert 0 <= timing["acknowledgement_ms"] < timing["first_audio_ms"], timing
            assert timing["acknowledgement_ms"] < timing["decision_ms"] + 60, timing  # not after the decision
