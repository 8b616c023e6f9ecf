"""Fixtures for the load-tester tests: a small voice agent served by ``parley serve`` on loopback."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.voice_caller import AgentServer, start_agent_server, stop_agent_server
from integration.harness import HOST, free_port, rtp_range

# A short flow: a 4-digit account and a yes/no, posted to the load tester's sink, then goodbye.
AGENT_YAML = """
name: loadtest-e2e
description: A short flow for the load tester's end-to-end tests.
language: en-US
voice: {{engine: flite, voice: slt, rate: 1.0}}
settings: {{silence_ms: 700, no_input_ms: 4000, max_turn_ms: 10000, barge_in: true}}
intents:
  operator: ["I want to speak to an agent", "speak to an agent", "operator please"]
  goodbye: ["goodbye", "that's all thanks", "bye"]
global_intents:
  operator: {{goto: handover}}
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
    url: http://127.0.0.1:{sink_port}/requests
    method: POST
    send: [account, agree]
    timeout_s: 3
    retries: 0
    save: {{reference: reference}}
    say: "Done. Your reference is {{reference}}."
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
    to: "sip:operator@127.0.0.1:5999"
    message: "Please hold while I transfer you."
"""

needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite not installed (Debian flite)")


@pytest.fixture(scope="session", autouse=True)
def fresh_prompt_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private TTS cache for the agent and the load tester: renders by other (work-in-progress)
    code left in the shared cache must not change what these tests hear or say."""
    directory = tmp_path_factory.mktemp("tts-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARLEY_CACHE_DIR", str(directory))
        yield directory


@pytest.fixture(scope="session")
def sink_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def agent_server(
    tmp_path_factory: pytest.TempPathFactory, sink_port: int, fresh_prompt_cache: Path
) -> Iterator[AgentServer]:
    """One ``parley serve`` of the small agent for the session (its warm-up is the slow part)."""
    directory = tmp_path_factory.mktemp("loadtest-agent")
    agent_file = directory / "agent.yaml"
    agent_file.write_text(AGENT_YAML.format(sink_port=sink_port))
    admin_port = free_port()  # its Prometheus metrics (test_metrics.py)
    try:
        server = start_agent_server(
            agent_file,
            port=free_port(),
            rtp_ports=rtp_range(40),
            records=directory / "calls.jsonl",
            extra=["--max-load", "0", "--admin-port", str(admin_port)],
            startup_timeout=90,
            cache_dir=fresh_prompt_cache,
        )
    except RuntimeError as exc:
        pytest.fail(str(exc))
    server.records = directory / "calls.jsonl"  # type: ignore[attr-defined]
    server.metrics_url = f"http://{HOST}:{admin_port}/metrics"  # type: ignore[attr-defined]
    yield server
    stop_agent_server(server)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


__all__ = ["HOST", "needs_flite", "write"]
