"""The agent server's Prometheus metrics, scraped while ``parley loadtest`` runs against it and checked
against the load tester's own counts and the agent's call records (``parley serve --admin-port``)."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from agent.voice_caller import AgentServer
from parley.loadtest.run import run_loadtest

from .conftest import needs_flite, write
from .test_e2e import SCENARIO, agent_records, options, read_jsonl

pytestmark = [needs_flite, pytest.mark.timeout(180)]


def scrape(url: str) -> dict[str, float]:
    """Every sample of the exposition, keyed by name and labels as written."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {m[1]: float(m[2]) for m in re.finditer(r"(?m)^([a-z_]+(?:\{[^}]*\})?) (\S+)$", text)}


def delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_during_a_load_test_agree_with_the_load_tester(
    tmp_path: Path, agent_server: AgentServer, sink_port: int
) -> None:
    url: str = agent_server.metrics_url  # type: ignore[attr-defined]
    before = scrape(url)  # the server is shared by the session's tests: compare differences
    text = SCENARIO.format(calls=3, setup_timeout=10, sink_port=sink_port)
    scenario = write(tmp_path / "scenario.yaml", text)
    peak: list[float] = [0.0]
    running = threading.Event()

    def watch() -> None:
        while not running.is_set():
            peak[0] = max(peak[0], scrape(url).get("parley_calls_active", 0.0))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        run_loadtest(options(tmp_path, scenario, agent_server.uri, seed=11))
    finally:
        running.set()
        watcher.join(timeout=5)
    records = read_jsonl(tmp_path / "out" / "calls.jsonl")
    theirs = agent_records(agent_server, {r["call_id"] for r in records})
    assert len(theirs) == 3, records
    time.sleep(0.5)  # the last call's end is counted just after its BYE is answered
    after = scrape(url)

    answered = sum(1 for r in records if r["sip_status"] == 200)
    assert answered == 3
    assert peak[0] >= 1, "no call was seen in progress while the load test ran"
    assert delta(after, before, "parley_calls_admitted_total") == answered
    assert delta(after, before, "parley_call_setup_seconds_count") == answered
    ended = sum(delta(after, before, k) for k in after if k.startswith("parley_calls_ended_total"))
    assert ended == answered
    assert after["parley_calls_active"] == 0
    # One webhook call per call that reached the webhook step, as the load tester's sink counted.
    posts = sum(r["webhook_posts"] for r in records)
    assert posts >= 1, "no call reached the webhook step: the webhook metrics were not exercised"
    assert delta(after, before, "parley_webhook_seconds_count") == posts
    # One turn latency per spoken answer the agent closed on the caller's silence (its records).
    spoken = sum(
        1
        for record in theirs.values()
        for turn in record["turns"]
        if turn["input"] == "speech" and "close_after_speech_ms" in (turn.get("timing") or {})
    )
    assert spoken >= 1
    assert delta(after, before, "parley_turn_latency_seconds_count") == spoken
    # RTP from the load tester's callers: what they sent is what the agent expected, none lost.
    sent = sum(r["rtp"]["packets"] for r in records)
    assert delta(after, before, "parley_rtp_packets_lost_total") == 0
    assert delta(after, before, "parley_rtp_packets_expected_total") > 0.9 * sent > 0
