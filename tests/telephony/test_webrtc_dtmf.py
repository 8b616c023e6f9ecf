"""Keys from a browser as a phone sends them: Chromium's ``RTCDTMFSender.insertDTMF()`` sends RFC 4733
telephone-events in the call's RTP, which the server's answer accepted (aiortc leaves them out of its
own); the agent gets them as keys. Chromium's microphone plays silence, so only the keys answer."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.voice_caller import AgentServer, WebhookSink, running_agent
from integration.harness import free_port
from parley.speech.corpus import write_wav

from .test_webrtc_browser import CHROMIUM, CHROMIUM_ARGS, record_of

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
    pytest.mark.timeout(180),
]

AGENT_YAML = """
name: browser-keys
voice: {{engine: flite, voice: slt}}
settings: {{silence_ms: 700, no_input_ms: 15000, max_turn_ms: 20000}}
steps:
  - id: account
    type: ask
    slot: account_number
    slot_type: digits
    digits: 6
    dtmf: true
    prompt: "Key in your account number."
    confirm: never
    on_failure: sorry
  - id: submit
    type: webhook
    url: {url}
    send: [account_number]
    retries: 0
    timeout_s: 5
    next: bye
    on_failure: sorry
  - id: bye
    type: hangup
    message: "Thank you."
  - id: sorry
    type: hangup
    message: "Sorry. Goodbye."
"""


@pytest.fixture(scope="module")
def keys_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentServer, WebhookSink, int]]:
    port = free_port()
    with WebhookSink({}) as sink:
        text = AGENT_YAML.format(url=sink.url("/accounts"))
        with running_agent(
            tmp_path_factory.mktemp("keys"), text, extra=["--webrtc-port", str(port)], startup_timeout=120
        ) as server:
            yield server, sink, port


def test_chromium_keys_reach_the_agent_as_rfc4733_events(keys_server, tmp_path) -> None:
    from playwright.sync_api import sync_playwright

    server, sink, port = keys_server
    silence = tmp_path / "silence.wav"
    write_wav(silence, np.zeros(48000 * 60, dtype=np.int16), 48000)
    args = [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={silence}"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.click("#call-button")
            page.wait_for_function("window.parleyCall.events.some(e => e.type === 'prompt')", timeout=30_000)
            for key in "427193":
                page.click(f"#keypad button:text-is('{key}')")
                time.sleep(0.05)
            page.wait_for_function("window.parleyCall.status === 'ended'", timeout=60_000)
            state = page.evaluate("window.parleyCall")
        finally:
            browser.close()
    log = server.log()
    # the page sent the keys as telephone-events (the answer accepted them), not over the data channel
    assert [k["via"] for k in state["keys"]] == ["rfc4733"] * 6, state["keys"]
    assert state["endedBy"] == "agent", (state, log)
    posts = [body for _, path, body in sink.requests if body.get("call_id") == state["callId"]]
    assert [p["slots"] for p in posts] == [{"account_number": "427193"}], (
        sink.requests,
        state["events"],
        log,
    )
    record = record_of(server, state["callId"])
    assert record["channel"] == "webrtc" and record["turns"][0]["input"] == "dtmf", json.dumps(record)[:2000]
