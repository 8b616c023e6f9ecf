"""Faults that a call survives, over real SIP and RTP calls to ``parley serve AGENT.yaml``.

Whisper's decode process is killed (SIGKILL) or stopped (SIGSTOP: hung) while the caller speaks:
the turn finishes on the streaming engines of the other process (the pool's own tests kill and stop
the shared process too, in tests/speech/test_engines.py), the call goes on to its end, the pool replaces the
lost process (its log says so and names the new pid), and the next call is understood as before.
The agent's TTS engine fails (its binary exits 1): the fallback voice speaks every prompt, and the
call goes on to its end. The call records' disk is full (a tiny tmpfs, filled): calls go on, their
records wait in memory and are written when the disk has room again.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from integration.harness import fill_disk, small_disk
from parley.telephony.manager import CallManager

from .e2e_agents import ACCOUNT, AGREE, agent_yaml
from .e2e_fixtures import needs_flite
from .voice_caller import (
    PROMPT_SILENCE_MS,
    AgentServer,
    AnswerBook,
    answer_prompts,
    dial,
    record_of,
    running_agent,
    step,
)

pytestmark = [
    needs_flite,
    pytest.mark.timeout(240),
]

HANG_S = 2.0  # the server's --decode-hang-s: a stopped process is replaced this long after it stalls
STREAMING = ("sphinx-grammar", "sphinx-agent-lm")  # the shared decode process (--decode-processes 1)
AGENT_YAML = agent_yaml("faults-test", [ACCOUNT, AGREE], barge_in=False)


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    extra = ["--decode-processes", "1", "--decode-hang-s", str(HANG_S)]
    directory = tmp_path_factory.mktemp("faults")
    with running_agent(directory, AGENT_YAML, extra=extra) as server:
        yield server


def decode_pids(server: AgentServer) -> dict[str, int]:
    """Each engine's decode process, as the server's log names them (replacements last)."""
    pids: dict[str, int] = {}
    for line in server.lines:
        found = re.search(r"decode process (\d+) runs ([\w, -]+?)(?: \(a replacement\))?$", line.strip())
        if found:
            for engine in found.group(2).split(", "):
                pids[engine] = int(found.group(1))
    return pids


async def wait_for_log(server: AgentServer, pattern: str, seconds: float = 30.0) -> str:
    for _ in range(int(seconds * 10)):
        for line in server.lines:
            if re.search(pattern, line):
                return line
        await asyncio.sleep(0.1)
    pytest.fail(f"no log line matching {pattern!r}\n{server.log()}")


async def faulted_call(
    server: AgentServer, manager: CallManager, answers: AnswerBook, pid: int, sig: signal.Signals
) -> dict:
    """A whole call; ``sig`` goes to ``pid`` 0.6 s into the caller's account number."""
    account, yes = await answers.get("four two seven one"), await answers.get("yes")
    caller = await dial(manager, server)
    try:
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), "the account prompt", server)
        speaking = asyncio.ensure_future(caller.say(account))
        await asyncio.sleep(0.6)
        os.kill(pid, sig)
        await step(speaking, "the account answer to play", server)
        await answer_prompts(caller, server, ("the yes/no prompt after the fault", yes))
        reason = await step(caller.wait_ended(), "the agent's BYE", server, 30)
    finally:
        await caller.close()
    assert reason == "remote-bye", reason
    return await record_of(server, caller.call.call_id)


async def clean_call(
    server: AgentServer, manager: CallManager, answers: AnswerBook, *, record: bool = True
) -> Any:
    """A whole call, answered as asked; its record (its Call-ID with ``record=False``)."""
    account, yes = await answers.get("nine nine three zero"), await answers.get("yes")
    caller = await dial(manager, server)
    try:
        await answer_prompts(caller, server, ("the account prompt", account), ("the yes/no prompt", yes))
        reason = await step(caller.wait_ended(), "the agent's BYE", server, 30)
    finally:
        await caller.close()
    assert reason == "remote-bye", reason
    return await record_of(server, caller.call.call_id) if record else caller.call.call_id


def answered_by(record: dict) -> list[set[str]]:
    """Per turn, the engines whose final the turn got."""
    return [{h["engine"] for h in turn["hypotheses"]} for turn in record["turns"]]


async def test_a_decode_process_killed_mid_turn(
    agent_server: AgentServer, caller_manager: CallManager, answers: AnswerBook
) -> None:
    """SIGKILL to whisper's process while the caller speaks: the streaming engines (another process)
    finish the turn; the pool starts a new whisper process, and the next call goes as before."""
    pid = decode_pids(agent_server)["whisper"]
    record = await faulted_call(agent_server, caller_manager, answers, pid, signal.SIGKILL)
    assert record["outcome"] == "completed", (record, agent_server.log(150))
    assert re.fullmatch(r"\d{4}", record["slots"]["account"]["value"])  # understood (4271, or misheard)
    assert "whisper" not in answered_by(record)[0]  # the lost engine gave no final for that turn
    assert set(STREAMING) & answered_by(record)[0]
    await wait_for_log(agent_server, rf"decode process \[{pid}\] \(whisper\) replaced: it died")
    await wait_for_log(agent_server, r"decode process \d+ runs whisper \(a replacement\)", 60)
    new = decode_pids(agent_server)["whisper"]
    assert new != pid and psutil.pid_exists(new)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    after = await clean_call(agent_server, caller_manager, answers)
    assert after["outcome"] == "completed" and re.fullmatch(r"\d{4}", after["slots"]["account"]["value"])


async def test_a_decode_process_hung_mid_turn(
    agent_server: AgentServer, caller_manager: CallManager, answers: AnswerBook
) -> None:
    """SIGSTOP to whisper's process while the caller speaks: the turn closes on the streaming engines
    by the arbiter's deadline instead of waiting, and --decode-hang-s later the stopped process is
    killed and a new one started."""
    pid = decode_pids(agent_server)["whisper"]
    hung = psutil.Process(pid)
    try:
        record = await faulted_call(agent_server, caller_manager, answers, pid, signal.SIGSTOP)
    finally:
        if hung.is_running() and hung.status() == psutil.STATUS_STOPPED:
            os.kill(pid, signal.SIGCONT)
    assert record["outcome"] == "completed", (record, agent_server.log(150))
    assert re.fullmatch(r"\d{4}", record["slots"]["account"]["value"])  # understood (4271, or misheard)
    first = record["turns"][0]
    assert "whisper" not in answered_by(record)[0]
    assert first["timing"]["asr_finish_ms"] < 2000  # the arbiter's deadline (1.5 s), not the hang
    await wait_for_log(agent_server, rf"decode process \[{pid}\] \(whisper\) replaced: .*\(hung\)")
    hung.wait(10)  # killed, not left stopped
    await wait_for_log(agent_server, r"decode process \d+ runs whisper \(a replacement\)", 60)
    after = await clean_call(agent_server, caller_manager, answers)
    assert after["outcome"] == "completed" and re.fullmatch(r"\d{4}", after["slots"]["account"]["value"])


def test_decode_pids_reads_the_servers_log() -> None:
    server = AgentServer(
        proc=None,
        port=0,
        lines=[  # type: ignore[arg-type]
            "INFO parley.agent.voice: decode process 11 runs sphinx-grammar, sphinx-agent-lm\n",
            "INFO parley.agent.voice: decode process 12 runs whisper\n",
            "INFO parley.speech.engines.pool: decode process 13 runs whisper (a replacement)\n",
        ],
    )
    assert decode_pids(server) == {"sphinx-grammar": 11, "sphinx-agent-lm": 11, "whisper": 13}


@pytest.fixture(scope="module")
def broken_tts_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    """The agent speaks flite (the default fallback list tries flite:kal16, then espeak-ng), and the
    server's ``flite`` is a script that fails."""
    directory = tmp_path_factory.mktemp("broken-tts")
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "flite"
    fake.write_text("#!/bin/sh\necho 'flite: cannot open audio output' >&2\nexit 1\n")
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    with running_agent(directory, AGENT_YAML, env=env) as server:
        yield server


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (Debian espeak-ng)")
async def test_a_failing_tts_engine_speaks_with_the_fallback_voice(
    broken_tts_server: AgentServer, caller_manager: CallManager, answers: AnswerBook
) -> None:
    server = broken_tts_server
    account, yes = await answers.get("four two seven one"), await answers.get("yes")
    caller = await dial(caller_manager, server)
    try:
        prompt = caller.wait_prompt_end(PROMPT_SILENCE_MS, min_speech_ms=1000)
        await step(prompt, "the account prompt (in the fallback voice)", server)
        await step(caller.say(account), "the account answer to play", server)
        await answer_prompts(caller, server, ("the yes/no prompt", yes))
        caller.mark()
        reason = await step(caller.wait_ended(), "the agent's BYE", server, 30)
        goodbye_ms = caller.speech_frames * 20
    finally:
        await caller.close()
    assert reason == "remote-bye", reason
    assert goodbye_ms >= 500  # "Thank you, goodbye." was heard
    record = await record_of(server, caller.call.call_id)
    assert record["outcome"] == "completed", (record, server.log(150))
    log = server.log(400)
    assert "TTS flite:slt failed (TtsError" in log and "speaking with espeak-ng:en-us" in log, log
    assert "four digit account" not in log  # the failures are logged without the prompt's text


async def test_a_full_disk_for_call_records(
    tmp_path: Path, caller_manager: CallManager, answers: AnswerBook
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        records = disk / "calls.jsonl"
        with running_agent(tmp_path, AGENT_YAML, records=records) as server:
            filler = fill_disk(disk)
            first = await clean_call(server, caller_manager, answers, record=False)
            line = await wait_for_log(server, r"call records: .* refused a record \(ENOSPC")
            assert str(records) in line
            assert not records.exists() or first not in records.read_text()
            filler.unlink()
            second = await clean_call(server, caller_manager, answers, record=False)
            for call_id in (first, second):  # the waiting record first, then the new one
                assert (await record_of(server, call_id))["outcome"] == "completed"
            written = [json.loads(line)["call_id"] for line in records.read_text().splitlines()]
            assert written == [first, second]
            await wait_for_log(server, r"call records: the disk takes writes again; 1 waiting written")
            assert "Traceback" not in server.log(1000)


APOLOGY_AGENT_YAML = """
name: apology-test
language: en-US
voice: {engine: flite, voice: slt, rate: 1.0}
steps:
  - id: account
    type: ask
    slot: account
    slot_type: digits
    digits: 4
    prompt: "Please say your four digit account number."
    on_failure: handover
  - id: bye
    type: hangup
    message: "Thank you, goodbye."
  - id: handover
    type: transfer
    to: "sip:desk@127.0.0.1"
    message: "Let me put you through to a colleague."
"""


# The same agent without a transfer step: its failure path hangs up.
APOLOGY_HANGUP_YAML = APOLOGY_AGENT_YAML.split("  - id: handover")[0].replace("handover", "bye")


def speechless(tmp_path_factory: pytest.TempPathFactory, agent: str) -> Iterator[AgentServer]:
    """``parley serve`` on ``agent`` whose voice (flite) and every fallback (flite:kal16, espeak-ng)
    fail: both binaries are scripts that exit 1."""
    directory = tmp_path_factory.mktemp("speechless")
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    for name in ("flite", "espeak-ng"):
        (bin_dir / name).write_text(f"#!/bin/sh\necho '{name}: cannot open audio output' >&2\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    with running_agent(directory, agent, env=env) as server:
        yield server


@pytest.fixture(scope="module")
def speechless_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    yield from speechless(tmp_path_factory, APOLOGY_AGENT_YAML)


@pytest.fixture(scope="module")
def speechless_hangup_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    yield from speechless(tmp_path_factory, APOLOGY_HANGUP_YAML)


async def test_every_voice_failing_plays_the_apology_then_transfers(
    speechless_server: AgentServer, caller_manager: CallManager
) -> None:
    """No voice can speak the first prompt: the caller hears the pre-rendered apology (4.6 s of
    speech), then a REFER to the agent's transfer target (its message, which needs a voice, is not
    said), then the agent's BYE; the record says why, and nothing was logged as a traceback."""
    from parley.agent.apology import load_apology

    server = speechless_server
    targets: list[str] = []

    async def on_refer(call: object, target: str) -> int:
        targets.append(target)
        caller.transferred(target)
        return 200

    caller_manager.on_refer = on_refer
    caller = await dial(caller_manager, server)
    try:
        target = await step(caller.wait_transfer(), "the REFER after the apology", server, 30)
        apology_ms = caller.speech_frames * 20
        reason = await step(caller.wait_ended(), "the agent's BYE", server, 10)
    finally:
        await caller.close()
    assert target == "sip:desk@127.0.0.1" and targets == [target]
    assert reason == "remote-bye", reason
    apology = load_apology()
    assert apology is not None
    assert 0.7 * len(apology) / 8 <= apology_ms <= len(apology) / 8 + 500, apology_ms  # all of it, once
    record = await record_of(server, caller.call.call_id)
    assert (record["outcome"], record["outcome_reason"]) == ("transferred", "every TTS voice failed"), record
    log = server.log(400)
    assert "no voice can speak (TtsError)" in log and "Traceback" not in log, log
    assert "four digit account" not in log  # the failures are logged without the prompt's text


async def test_every_voice_failing_plays_the_apology_then_hangs_up_without_a_transfer_step(
    speechless_hangup_server: AgentServer, caller_manager: CallManager
) -> None:
    """An agent with nowhere to transfer to: the apology, then its BYE; the record says it failed."""
    server = speechless_hangup_server
    caller = await dial(caller_manager, server)
    try:
        reason = await step(caller.wait_ended(), "the agent's BYE after the apology", server, 30)
        apology_ms = caller.speech_frames * 20
    finally:
        await caller.close()
    assert reason == "remote-bye" and caller.transfer_to is None, reason
    assert apology_ms >= 3000, apology_ms
    record = await record_of(server, caller.call.call_id)
    assert (record["outcome"], record["outcome_reason"]) == ("failed", "every TTS voice failed"), record
    assert "Traceback" not in server.log(400)
