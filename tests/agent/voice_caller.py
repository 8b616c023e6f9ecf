"""A scripted caller for end-to-end voice-agent calls: Parley's own UAC, flite answers, prompt detection.

Shared by ``tests/agent/test_calls_e2e.py``, ``bench/turn_latency.py`` and the load-tester tests.
The caller itself lives in :mod:`parley.loadtest` (re-exported here):

* :class:`WebhookSink` — a local HTTP server (thread) that records every JSON body POSTed/PUT to it.
* :class:`ScriptedCaller` — wraps a dialled :class:`~parley.telephony.call.Call`: a tap on the RTP
  socket time-stamps every arriving packet and tests it for speech energy (``wait_prompt_end``:
  speech, then ≥ ``silence_ms`` of silence; reply latency at packet arrival, before the caller's own
  jitter buffer). ``say(pcm)`` plays an answer and returns the time its last frame was sent.
* :class:`AnswerBook` — answers rendered once (flite, prompt cache), trimmed of silence.

Defined here: :func:`start_agent_server` — ``parley serve AGENT.yaml`` as a subprocess, ready once it
prints "answering calls"; :func:`stop_agent_server` stops it with SIGTERM (kill after a bound);
:func:`running_agent` does both around a block. On the caller's side: :func:`caller_manager_on_loopback`
(the UAC), :func:`dial`, :func:`answer_prompts` (wait for each prompt, answer it) and :func:`record_of`
(the server's record of a call; :func:`wait_record` blocks, for tests without an event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from integration.harness import free_port, rtp_range, spawn_until_ready
from parley.loadtest.audio import FRAME_MS, LOUD, TRIM_LEVEL, AnswerBook, speech_ms, trim
from parley.loadtest.caller import CallEnded, ScriptedCaller
from parley.loadtest.sink import WebhookSink
from parley.telephony.call import Call
from parley.telephony.manager import CallManager

__all__ = [
    "FRAME_MS",
    "LOUD",
    "TRIM_LEVEL",
    "AgentServer",
    "AnswerBook",
    "CallEnded",
    "ScriptedCaller",
    "WebhookSink",
    "answer_prompts",
    "caller_manager_on_loopback",
    "dial",
    "find_record",
    "record_of",
    "running_agent",
    "speech_ms",
    "start_agent_server",
    "step",
    "stop_agent_server",
    "trim",
    "wait_record",
]

HOST = "127.0.0.1"
PROMPT_SILENCE_MS = 700  # the agent's prompt has ended after this much silence
# PARLEY_E2E_UVLOOP=0: the end-to-end tests run their servers on asyncio's loop (uvloop-only faults).
UVLOOP = os.environ.get("PARLEY_E2E_UVLOOP", "1") != "0"
NO_UVLOOP = "import sys; sys.modules['uvloop'] = None; from parley.cli import main; main(prog_name='parley')"


# -- awaiting the server's side of a call (tests) -------------------------------------------------
async def step(awaitable: Any, what: str, server: AgentServer, seconds: float = 20.0) -> Any:
    """``awaitable`` within ``seconds``; else the test fails naming ``what``, with the server's log."""
    import pytest

    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        pytest.fail(f"timed out after {seconds} s waiting for {what}\nserver log:\n{server.log()}")
    except CallEnded as exc:
        pytest.fail(f"the call ended ({exc}) while waiting for {what}\nserver log:\n{server.log()}")


def find_record(server: AgentServer, call_id: str) -> dict[str, Any] | None:
    """The server's record of ``call_id`` (appended to its JSONL file when the call ends), if written."""
    path = server.records
    assert path is not None
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["call_id"] == call_id:
                return record
    return None


async def record_of(server: AgentServer, call_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The server's record of ``call_id``, waiting up to ``timeout`` for it; else the test fails."""
    import pytest

    deadline = time.monotonic() + timeout
    while (record := find_record(server, call_id)) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    if record is None:
        pytest.fail(f"no record of call {call_id} in {server.records}\nserver log:\n{server.log()}")
    return record


def wait_record(server: AgentServer, call_id: str, timeout: float = 15.0) -> dict[str, Any]:
    """:func:`record_of` for a test without an event loop (it blocks)."""
    import pytest

    deadline = time.monotonic() + timeout
    while (record := find_record(server, call_id)) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if record is None:
        pytest.fail(f"no record of call {call_id} in {server.records}\nserver log:\n{server.log()}")
    return record


# -- the caller's side ---------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def caller_manager_on_loopback() -> AsyncIterator[CallManager]:
    """A UAC on a free loopback port that accepts every REFER and lists its target in ``.refers``."""
    refers: list[str] = []

    async def on_refer(call: Call, target: str) -> int:
        refers.append(target)
        return 200

    manager = CallManager(
        None, host=HOST, port=free_port(), rtp_ports=rtp_range(20), on_refer=on_refer, max_load=None
    )
    manager.refers = refers  # type: ignore[attr-defined]
    await manager.start()
    try:
        yield manager
    finally:
        await asyncio.wait_for(manager.stop(), 5)


async def dial(manager: CallManager, server: AgentServer) -> ScriptedCaller:
    """Call the agent; the caller once it answered."""
    return ScriptedCaller(manager, await manager.dial(server.uri, timeout=10))


async def answer_prompts(
    caller: ScriptedCaller, server: AgentServer, *answers: tuple[str, np.ndarray]
) -> float:
    """For each ``(prompt, answer)``: wait for the agent's prompt to end, then say the answer.
    Returns when the last answer's last frame was sent; ``prompt`` names the wait in a failure."""
    said = 0.0
    for prompt, pcm in answers:
        await step(caller.wait_prompt_end(PROMPT_SILENCE_MS), prompt, server)
        said = await step(caller.say(pcm), f"the answer to {prompt} to play", server)
    return said


# -- the server under test ---------------------------------------------------------------------
@dataclass
class AgentServer:
    proc: subprocess.Popen
    port: int
    lines: list[str] = field(default_factory=list)
    records: Path | None = None  # the JSON-lines call records it appends to

    @property
    def uri(self) -> str:
        return f"sip:agent@{HOST}:{self.port}"

    def log(self, tail: int = 80) -> str:
        return "".join(self.lines[-tail:])


# For tests that assert what whisper heard: wait for it, as an operator would on a CPU where one of its
# decodes takes longer than the arbiter's default deadline (1.6 CPU-s on some machines of this kind).
SLOW_CPU_ASR_DEADLINE = {"PARLEY_ASR_DEADLINE_S": "8"}


def start_agent_server(
    agent_file: Path,
    *,
    port: int,
    rtp_ports: tuple[int, int],
    records: Path | None = None,
    extra: list[str] | None = None,
    startup_timeout: float = 60.0,
    cwd: Path | None = None,
    prefix: list[str] | None = None,
    uvloop: bool = True,
    cache_dir: Path | None = None,
    env: dict[str, str] | None = None,
) -> AgentServer:
    """``parley serve AGENT --transport udp`` as a subprocess; returns once it answers calls.

    ``uvloop=False`` runs the same CLI on asyncio's own loop (to tell uvloop-only faults apart).
    ``cache_dir`` becomes ``PARLEY_CACHE_DIR``: a fresh one makes the server really synthesise its
    prompts instead of reading what an earlier run left in the shared prompt cache. ``env`` adds to
    (or overrides) the server's environment.

    Raises RuntimeError (with its log) when it exits or is not ready within ``startup_timeout``.
    """
    launcher = ["-m", "parley"] if uvloop else ["-c", NO_UVLOOP]
    cmd = [*(prefix or []), sys.executable, *launcher, "-v", "serve", str(agent_file)]
    cmd += ["--workers", "1", "--host", HOST, "--port", str(port), "--transport", "udp"]
    cmd += ["--rtp-ports", f"{rtp_ports[0]}-{rtp_ports[1]}"]
    if records is not None:
        cmd += ["--records", str(records)]
    cmd += extra or []
    lines: list[str] = []
    cache = {"PARLEY_CACHE_DIR": str(cache_dir)} if cache_dir is not None else {}
    environment = {**os.environ, **cache, **(env or {})} if cache or env else None
    proc = spawn_until_ready(cmd, lines, cwd=cwd, env=environment, startup_timeout=startup_timeout)
    return AgentServer(proc, port, lines, records)


@contextlib.contextmanager
def running_agent(
    directory: Path, agent_yaml: str, records: Path | None = None, **options: Any
) -> Iterator[AgentServer]:
    """``parley serve`` on ``agent_yaml`` (written to ``directory``) on a free port, with its call
    records (in ``directory`` unless ``records`` names the file) and a fresh prompt cache in
    ``directory`` (unless ``cache_dir`` names one); ``options`` go to :func:`start_agent_server`.
    Stopped at exit, which must be clean (exit 0). Raises RuntimeError (with its log) when it does
    not start."""
    agent_file = directory / "agent.yaml"
    agent_file.write_text(agent_yaml)
    defaults = {
        "port": free_port(),
        "rtp_ports": rtp_range(20),
        "cache_dir": directory / "cache",
        "startup_timeout": 90,
    }
    server = start_agent_server(
        agent_file, records=records or directory / "calls.jsonl", **{**defaults, **options}
    )
    try:
        yield server
    finally:
        code = stop_agent_server(server)
    assert code == 0, f"parley serve exited {code} after SIGTERM\n{server.log()}"


def stop_agent_server(server: AgentServer, timeout: float = 10.0) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
    proc = server.proc
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: the decoder workers too
            proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # leftover pool workers, if any
    return proc.returncode
