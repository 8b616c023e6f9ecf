"""Fixtures for the load-tester tests: a small voice agent served by ``parley serve`` on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.e2e_agents import account_agent
from agent.e2e_fixtures import needs_flite
from agent.voice_caller import AgentServer, running_agent
from integration.harness import HOST, free_port, rtp_range


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
    """One ``parley serve`` of the account agent (tests/agent/e2e_agents.py) for the session, posting
    to the load tester's sink (its warm-up is the slow part)."""
    text = account_agent(f"http://{HOST}:{sink_port}/requests", name="loadtest-e2e")
    admin_port = free_port()  # its Prometheus metrics (test_metrics.py)
    extra = ["--max-load", "0", "--admin-port", str(admin_port)]
    directory = tmp_path_factory.mktemp("loadtest-agent")
    with running_agent(
        directory, text, rtp_ports=rtp_range(40), extra=extra, cache_dir=fresh_prompt_cache
    ) as server:
        server.metrics_url = f"http://{HOST}:{admin_port}/metrics"  # type: ignore[attr-defined]
        yield server


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


__all__ = ["HOST", "needs_flite", "write"]
