"""Browser calls end to end: Debian's Chromium (Playwright) calls an agent through ``parley serve
--webrtc-port``'s page, speaking from a WAV rendered by the project's TTS.

Chromium's fake microphone plays ``caller.wav`` from the moment the page asks for it, and loops it: the
file is an account number and a date with silence around them (the agent's prompts are
interruptible, so an answer heard while a prompt still plays is taken too), then enough silence that
the call has ended before the loop comes round. The date has no year (the next third of March): with
one, the agent may close the turn on "the third of march" (a complete date) before the year is heard.
The same server (``--max-calls 1``) also takes the fault cases: a browser that vanishes (an aiortc
peer in a process that is killed) and a call beyond admission, which the page refuses with the
server's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soxr
from tests.studio.test_browser import CHROMIUM, CHROMIUM_ARGS

from agent import e2e_fixtures
from agent.e2e_agents import agent_yaml, ask, webhook
from agent.voice_caller import AgentServer, AnswerBook, WebhookSink, running_agent, wait_record
from integration.harness import free_port
from parley.speech.corpus import write_wav
from parley.speech.tts import load_tts

HERE = Path(__file__).resolve().parent
FAKE_MEDIA = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]

pytestmark = [
    e2e_fixtures.needs_flite,
    pytest.mark.timeout(240),
]

sink = e2e_fixtures.sink  # the webhook sink fixture


@pytest.fixture(scope="module")
def webrtc_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def agent_server(
    tmp_path_factory: pytest.TempPathFactory, sink: WebhookSink, webrtc_port: int
) -> Iterator[AgentServer]:
    steps = [
        ask("account", "digits", "What is your account number?", slot="account_number", digits=6, dtmf=True),
        ask("visit", "date", "And the date of your visit?", slot="visit_date"),
        webhook(sink.url("/accounts"), send=["account_number", "visit_date"]),
    ]
    text = agent_yaml("browser-e2e", steps, no_input_ms=8000)
    extra = ["--webrtc-port", str(webrtc_port), "--max-calls", "1", "--webrtc-consent-timeout", "10"]
    with running_agent(tmp_path_factory.mktemp("webrtc"), text, extra=extra, startup_timeout=120) as server:
        yield server


@pytest.fixture(scope="module")
def caller_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The caller: silence, an account number, silence, a date, long silence (48 kHz)."""

    async def render() -> list[np.ndarray]:
        book = AnswerBook(load_tts("flite"), "awb")
        return [
            await book.get("four two seven one nine three"),
            await book.get("the third of march"),
        ]

    account, birth = asyncio.run(render())
    silence = lambda seconds: np.zeros(int(8000 * seconds), dtype=np.int16)  # noqa: E731
    pcm = np.concatenate((silence(2.5), account, silence(4.0), birth, silence(40.0)))
    path = tmp_path_factory.mktemp("caller") / "caller.wav"
    write_wav(path, soxr.resample(pcm, 8000, 48000).astype(np.int16), 48000)
    return path


@contextlib.contextmanager
def call_page(webrtc_port: int, caller_wav: Path) -> Iterator[Any]:
    """The server's call page in Chromium, whose fake microphone plays ``caller_wav``."""
    from playwright.sync_api import sync_playwright

    args = [*CHROMIUM_ARGS, *FAKE_MEDIA, f"--use-file-for-fake-audio-capture={caller_wav}"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{webrtc_port}/")
            yield page
        finally:
            browser.close()


def next_third_of_march() -> datetime.date:
    """What a caller means by "the third of March": the next one."""
    today = datetime.date.today()
    this_year = datetime.date(today.year, 3, 3)
    return this_year if this_year >= today else datetime.date(today.year + 1, 3, 3)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_chromium_calls_the_agent_and_the_webhook_gets_the_values(
    agent_server, sink, caller_wav, webrtc_port
):
    with call_page(webrtc_port, caller_wav) as page:
        assert "cdn" not in page.content().lower()
        page.click("#call-button")
        page.wait_for_function("window.parleyCall.status === 'ended'", timeout=90_000)
        state = page.evaluate("window.parleyCall")
        transcript = page.inner_text("#transcript")
        slots = page.inner_text("#slots")
    log = agent_server.log()
    assert state["endedBy"] == "agent", (state, log)
    call_id = state["callId"]
    posts = [body for _, path, body in sink.requests if path == "/accounts" and body["call_id"] == call_id]
    assert len(posts) == 1, (sink.requests, state["events"], log)
    expected = {"account_number": "427193", "visit_date": next_third_of_march().isoformat()}
    assert posts[0]["slots"] == expected, state["events"]
    # the page showed what the agent said and heard, the slots, and the turn latency
    assert "Agent: What is your account number?" in transcript, transcript
    assert "You: " in transcript and "turn latency" in transcript, transcript
    assert "427193" in slots and expected["visit_date"] in slots, slots
    assert any(e["type"] == "partial" for e in state["events"]), state["events"]
    # the agent's voice reached the browser: the remote track had speech energy for a while
    assert state["maxLevel"] > 0.02 and state["loudFrames"] >= 20, state
    record = wait_record(agent_server, call_id)
    assert (record["channel"], record["outcome"], record["end_reason"]) == (
        "webrtc",
        "completed",
        "local-hangup",
    )


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_chromium_keys_reach_the_agent_as_rfc4733_events(agent_server, webrtc_port, tmp_path):
    """The page's keypad sends ``RTCDTMFSender.insertDTMF()``: telephone-events in the call's RTP, which
    the answer accepted (aiortc leaves them out of its own). The microphone plays silence."""
    silence = tmp_path / "silence.wav"
    write_wav(silence, np.zeros(48000 * 30, dtype=np.int16), 48000)
    with call_page(webrtc_port, silence) as page:
        page.click("#call-button")
        page.wait_for_function("window.parleyCall.events.some(e => e.type === 'prompt')", timeout=30_000)
        for key in "427193":
            page.click(f"#keypad button:text-is('{key}')")
        page.wait_for_function("window.parleyCall.events.some(e => e.type === 'turn')", timeout=30_000)
        page.click("#hangup-button")
        page.wait_for_function("window.parleyCall.status === 'ended'", timeout=10_000)
        state = page.evaluate("window.parleyCall")
    # sent as telephone-events, not over the data channel
    assert [k["via"] for k in state["keys"]] == ["rfc4733"] * 6, state["keys"]
    turn = next(e for e in state["events"] if e["type"] == "turn")
    assert (turn["input"], turn["transcript"]) == ("dtmf", "427193"), state["events"]
    record = wait_record(agent_server, state["callId"])
    assert record["turns"][0]["input"] == "dtmf" and record["end_reason"] == "remote-hangup", record


def test_malformed_offers_get_a_clear_400(agent_server, webrtc_port):
    url = f"http://127.0.0.1:{webrtc_port}/offer"
    cases = [
        (b"not json", "not JSON"),
        (json.dumps({"type": "answer", "sdp": "v=0"}).encode(), '"type": "offer"'),
        (json.dumps({"type": "offer"}).encode(), 'no "sdp"'),
        (json.dumps({"type": "offer", "sdp": "hello world"}).encode(), "v=0"),
        (
            json.dumps(
                {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"}
            ).encode(),
            "m=audio",
        ),
        (json.dumps({"type": "offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"}).encode(), "ICE"),
    ]
    for body, says in cases:
        response = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=10)
        assert response.status_code == 400, (body, response.text)
        assert says in response.json()["error"], (body, response.json())
    # the server is fine afterwards: the page still loads
    assert httpx.get(f"http://127.0.0.1:{webrtc_port}/", timeout=10).status_code == 200


def _start_peer(url: str) -> tuple[subprocess.Popen, str]:
    """A browser (aiortc) in its own process, connected; returns it and its call id."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "webrtc_peer.py"), url],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    assert line.startswith("connected "), line
    return proc, line.split()[1]


def test_a_browser_that_vanishes_ends_the_call_and_the_record_says_so(agent_server, webrtc_port):
    proc, call_id = _start_peer(f"http://127.0.0.1:{webrtc_port}/offer")
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)  # no hang-up, no DTLS close: gone
    proc.wait(timeout=5)
    record = wait_record(agent_server, call_id, timeout=60)  # consent (10 s here) runs out, then ICE fails
    assert record["channel"] == "webrtc", record
    assert record["end_reason"] == "ice-failed", record
    assert record["outcome"] == "abandoned" and "ICE consent" in record["outcome_reason"], record


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_a_call_beyond_admission_is_refused_on_the_page(agent_server, webrtc_port, caller_wav):
    proc, _ = _start_peer(f"http://127.0.0.1:{webrtc_port}/offer")  # takes the one line (--max-calls 1)
    try:
        with call_page(webrtc_port, caller_wav) as page:
            page.click("#call-button")
            page.wait_for_function("window.parleyCall.status === 'ended'", timeout=30_000)
            error = page.inner_text("#error")
            status = page.inner_text("#status")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    assert "All lines are busy" in error, (error, status)
    assert status == "Call refused.", status
