"""The studio's call page in Chromium: an editor picks a draft version, presses Call, hears the agent
(energy of the remote track in the page), sees its prompt in the transcript, hangs up from the page;
the call's record lands in the studio's store as a browser call that the caller ended."""

import time
from pathlib import Path

import numpy as np
import pytest
from tests.studio.conftest import PASSWORD, add_account
from tests.studio.test_browser import CHROMIUM, CHROMIUM_ARGS

from parley.speech.corpus import write_wav

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
    pytest.mark.parametrize("store", ["sqlite"], indirect=True),
    pytest.mark.timeout(180),
]

AGENT = """
name: greeter
language: en-US
voice: {engine: flite, voice: slt, rate: 1.0}
settings: {silence_ms: 700, no_input_ms: 30000, max_turn_ms: 10000, barge_in: true}
steps:
  - id: account
    type: ask
    slot: account_number
    slot_type: digits
    digits: 6
    prompt: "Hello. What is your account number?"
    confirm: never
    on_failure: bye
  - id: bye
    type: hangup
    message: "Goodbye."
"""


def test_an_editor_calls_a_draft_from_the_studio_and_hangs_up(store, studio_server, tmp_path) -> None:
    from playwright.sync_api import expect, sync_playwright

    editor = add_account(store, "eve", "editor")
    store.create_agent("greeter", AGENT, editor.principal)
    store.publish("greeter", 1, editor.principal)
    store.save_version("greeter", AGENT.replace("Hello.", "Hi there."), 1, editor.principal)
    quiet = tmp_path / "quiet.wav"
    write_wav(quiet, np.zeros(48000 * 60, dtype=np.int16), 48000)
    args = [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={quiet}"]  # fmt: skip
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page()
            page.goto(studio_server.url + "/agents/greeter/call")
            page.fill("input[name=name]", "eve")
            page.fill("input[name=password]", PASSWORD)
            page.click("#login")
            expect(page.locator("#version")).to_have_value("2")  # the draft, by default
            assert page.locator("#version option").all_inner_texts() == ["v2 (draft)", "v1 (live)"]
            page.click("#call-button")
            prompt = "Agent: Hi there. What is your account number?"
            expect(page.locator("#transcript")).to_contain_text(prompt, timeout=90_000)
            page.wait_for_function("window.parleyCall.loudFrames >= 10", timeout=20_000)
            page.click("#hangup-button")
            page.wait_for_function("window.parleyCall.status === 'ended'", timeout=10_000)
            state = page.evaluate("window.parleyCall")
        finally:
            browser.close()
    assert state["endedBy"] == "caller", state
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        _, calls = store.calls(agent="greeter")
        if calls:
            break
        time.sleep(0.2)
    assert [c["call_id"] for c in calls] == [state["callId"]], calls
    record = store.call(state["callId"])["record"]
    assert record["agent_version"] == 2, record
    assert (record["channel"], record["end_reason"]) == ("webrtc", "remote-hangup"), record
    assert record["outcome"] == "abandoned", record
