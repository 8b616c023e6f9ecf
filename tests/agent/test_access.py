"""An agent's ``access`` rules over real SIP calls: the example of docs/agents.md ("Who may call"),
served by the call manager with the voice agent in this process, dialled by Parley's own UAC with
the caller's number in its From URI."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from integration.harness import HOST, free_port, rtp_range
from parley.agent.loader import AgentFileError, load_agent_text
from parley.agent.model import Access
from parley.agent.voice import VoiceAgent
from parley.speech.tts import CachedTts, FliteTts, PromptCache
from parley.telephony import metrics
from parley.telephony.manager import CallManager, DialError

from .e2e_fixtures import needs_flite

ROOT = Path(__file__).resolve().parents[2]
pytestmark = needs_flite


def docs_example() -> str:
    """The YAML block of docs/agents.md named branch-line.yaml."""
    page = (ROOT / "docs" / "agents.md").read_text()
    found = re.search(r"```yaml\n(# file: branch-line\.yaml\n.*?)```", page, re.DOTALL)
    assert found, "docs/agents.md has no branch-line.yaml example"
    return found.group(1)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[CallManager]:
    app = VoiceAgent(
        load_agent_text(docs_example()), engines=[], tts=CachedTts(FliteTts(), PromptCache(tmp_path))
    )
    await app.start()
    manager = CallManager(app, host=HOST, port=free_port(), rtp_ports=rtp_range(10), max_load=None)
    await manager.start()
    yield manager
    await asyncio.wait_for(manager.stop(), 5)
    await app.close()


async def ring(phone: CallManager, server: CallManager, caller: str, called: str) -> int:
    """Dial ``called`` at the server as ``caller``: 200 once the agent hung up, else the refusal."""
    phone.ua.user = caller
    try:
        call = await phone.dial(f"sip:{called}@{HOST}:{server.port}", timeout=10)
    except DialError as exc:
        return exc.status
    await asyncio.wait_for(call.ended.wait(), 20)  # the agent says goodbye and hangs up
    return 200


def refused_by_access() -> float:
    return metrics.CALLS_REFUSED.labels("access")._value.get()


async def test_the_docs_example_answers_allowed_callers_on_allowed_numbers(
    server: CallManager, caller_manager: CallManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="parley.telephony.manager")
    before = refused_by_access()
    assert await ring(caller_manager, server, "+442071234567", "0800123456") == 200
    assert await ring(caller_manager, server, "1001", "08005550000") == 200
    assert await ring(caller_manager, server, "+33142000000", "0800123456") == 403
    assert await ring(caller_manager, server, "1001", "0900123456") == 403
    assert (
        await ring(caller_manager, server, "10011", "0800123456") == 403
    )  # a pattern matches the whole number
    assert refused_by_access() - before == 3
    refusals = [r.getMessage() for r in caplog.records if "call refused" in r.getMessage()]
    assert refusals == [
        "call refused (403): agent branch-line: the caller is not in access.callers",
        "call refused (403): agent branch-line: the number dialled is not in access.called",
        "call refused (403): agent branch-line: the caller is not in access.callers",
    ]
    for number in ("+33142000000", "0900123456", "10011"):
        assert number not in caplog.text  # refusals never log caller data
    assert server.stats.answered == 2


def test_access_rules_refuse_in_order_and_allow_anyone_when_empty() -> None:
    rules = Access(callers=["+4420*", "1001"], called=["0800*"])
    assert rules.refusal("+442071234567", "0800123") is None
    assert rules.refusal("", "0800123") == "the caller is not in access.callers"  # no user part
    assert rules.refusal("+442071234567", "") == "the number dialled is not in access.called"
    assert Access().refusal("anyone", "anything") is None


@pytest.mark.parametrize("pattern", ["", "sip:1001@host", "10 01", "a" * 65])
def test_a_malformed_pattern_is_refused_with_its_place(pattern: str) -> None:
    text = f"name: bad\naccess: {{callers: ['{pattern}']}}\nsteps: [{{id: bye, type: hangup}}]\n"
    with pytest.raises(AgentFileError) as caught:
        load_agent_text(text, "bad.yaml")
    assert f"bad.yaml:2:20: error: {pattern!r} is not a number pattern" in str(caught.value)
