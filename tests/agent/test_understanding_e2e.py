"""Understanding over a real call: a caller says a date and an amount, the webhook gets exactly them.

``parley serve`` runs every default engine (the pocketsphinx streaming decoders and whisper, in decode
processes) behind the arbiter; the caller is Parley's own UAC playing answers rendered by the
project's TTS in a voice the agent does not speak with, over G.711. The values the agent POSTs are
read by the one slot reader from whichever engine the arbiter chose.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from parley.agent.voice import WHOLE_ANSWER_ENGINES
from parley.speech.tts import load_tts
from parley.telephony.manager import CallManager

from .e2e_agents import agent_yaml, ask, webhook
from .e2e_fixtures import needs_flite
from .voice_caller import (
    SLOW_CPU_ASR_DEADLINE,
    UVLOOP,
    AgentServer,
    AnswerBook,
    WebhookSink,
    answer_prompts,
    dial,
    record_of,
    running_agent,
    step,
)

pytestmark = [
    needs_flite,
    pytest.mark.timeout(180),
]


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory: pytest.TempPathFactory, sink: WebhookSink) -> Iterator[AgentServer]:
    steps = [
        ask("birth", "date", "What is your date of birth?", slot="birth_date"),
        ask("payment", "amount", "How much would you like to pay?", slot="amount"),
        webhook(sink.url("/payments"), send=["birth_date", "amount"]),
    ]
    text = agent_yaml("understanding-e2e", steps)
    directory = tmp_path_factory.mktemp("understanding")
    with running_agent(
        directory, text, startup_timeout=120, uvloop=UVLOOP, env=SLOW_CPU_ASR_DEADLINE
    ) as server:
        yield server


async def test_date_and_amount_reach_the_webhook_exactly(
    agent_server: AgentServer, sink: WebhookSink, caller_manager: CallManager
) -> None:
    answers = AnswerBook(load_tts("flite"), "awb")
    birth = await answers.get("it's the third of march nineteen eighty")
    amount = await answers.get("two hundred and fifty pounds")
    caller = await dial(caller_manager, agent_server)
    try:
        prompts = [("the date of birth prompt", birth), ("the amount prompt", amount)]
        await answer_prompts(caller, agent_server, *prompts)
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
        # a neural engine heard every answer (the turn closes once the others cannot change the winner)
        assert engines & set(WHOLE_ANSWER_ENGINES), turn
        assert turn["arbiter_reason"], turn
