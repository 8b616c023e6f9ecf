"""Understanding over a real call: a caller says a date and an amount, the webhook gets exactly them.

``parley serve`` runs every default engine (the pocketsphinx streaming decoders and whisper, in decode
processes) behind the arbiter; the caller is Parley's own UAC playing answers rendered by the
project's TTS in a voice the agent does not speak with, over G.711. The values the agent POSTs are
read by the one slot reader from whichever engine the arbiter chose.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from .test_calls_e2e import (
    UVLOOP,
    caller_manager,  # noqa: F401  (a fixture)
    dial,
    record_of,
    step,
)
from .voice_caller import SLOW_CPU_ASR_DEADLINE, AgentServer, AnswerBook, WebhookSink, running_agent

pytestmark = [
    pytest.mark.skipif(shutil.which("flite") is None, reason="flite not installed (Debian package flite)"),
    pytest.mark.timeout(180),
]

PROMPT_SILENCE_MS = 700
AGENT_YAML = """
name: understanding-e2e
language: en-US
voice: {{engine: flite, voice: slt, rate: 1.0}}
settings: {{silence_ms: 700, no_input_ms: 6000, max_turn_ms: 10000, barge_in: true}}
steps:
  - id: birth
    type: ask
    slot: birth_date
    slot_type: date
    prompt: "What is your date of birth?"
    confirm: never
    on_failure: sorry
  - id: payment
    type: ask
    slot: amount
    slot_type: amount
    prompt: "How much would you like to pay?"
    confirm: never
    on_failure: sorry
  - id: submit
    type: webhook
    url: {url}
    method: POST
    send: [birth_date, amount]
    timeout_s: 5
    retries: 0
    next: bye
    on_failure: sorry
  - id: bye
    type: hangup
    message: "Thank you, goodbye."
  - id: sorry
    type: hangup
    message: "Sorry, I could not help you. Goodbye."
"""


@pytest.fixture(scope="module")
def sink() -> Iterator[WebhookSink]:
    with WebhookSink({}) as server:
        yield server


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory: pytest.TempPathFactory, sink: WebhookSink) -> Iterator[AgentServer]:
    text = AGENT_YAML.format(url=sink.url("/payments"))
    with running_agent(
        tmp_path_factory.mktemp("understanding"),
        text,
        startup_timeout=120,
        uvloop=UVLOOP,
        env=SLOW_CPU_ASR_DEADLINE,
    ) as server:
        yield server


async def test_date_and_amount_reach_the_webhook_exactly(agent_server, sink, caller_manager) -> None:  # noqa: F811
    answers = AnswerBook(__import__("parley.speech.tts", fromlist=["load_tts"]).load_tts("flite"), "awb")
    birth = await answers.get("it's the third of march nineteen eighty")
    amount = await answers.get("two hundred and fifty pounds")
    caller = await dial(caller_manager, agent_server)
    try:
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), "the date of birth prompt", agent_server)
        await step(caller.say(birth), "the date answer to play", agent_server)
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), "the amount prompt", agent_server)
        await step(caller.say(amount), "the amount answer to play", agent_server)
        await step(caller.wait_ended(), "the agent's BYE", agent_server, 30)
    finally:
        await caller.close()
    record = await record_of(agent_server, caller.call.call_id)
    posts = [
        body
        for _, path, body in sink.requests
        if path == "/payments" and body["call_id"] == record["call_id"]
    ]
    assert len(posts) == 1, (sink.requests, record["turns"])
    assert posts[0]["slots"] == {
        "birth_date": "1980-03-03",
        "amount": {"amount": "250", "currency": "GBP"},
    }, (posts[0], record["turns"])
    assert record["outcome"] == "completed", record
    for turn in (t for t in record["turns"] if t["input"] == "speech"):
        engines = {h["engine"] for h in turn["hypotheses"]}
        assert "whisper" in engines, turn  # the neural engine heard every answer
        assert turn["arbiter_reason"], turn
