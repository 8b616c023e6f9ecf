"""The studio in a real browser (Debian's Chromium driven by Playwright): log in, edit an agent and see
the validation error at its line, fix it, diff it, publish, roll back, open a call's timeline and play
a turn's audio. Screenshots of each step are kept in ``test-artifacts/studio/`` (or
``$PARLEY_TEST_ARTIFACTS/studio``)."""

import base64
import os
import re
from pathlib import Path

import pytest
from tests.studio.conftest import PASSWORD, add_account, agent_yaml, card_block_call
from tests.studio.test_calls import wav_of

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("PARLEY_TEST_ARTIFACTS", REPO / "test-artifacts"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
    pytest.mark.parametrize("store", ["sqlite"], indirect=True),
    pytest.mark.timeout(180),
]


def test_main_flow_in_chromium(store, studio_server) -> None:
    studio_url = studio_server.url
    from playwright.sync_api import expect, sync_playwright

    shots = ARTIFACTS / "studio"
    shots.mkdir(parents=True, exist_ok=True)
    editor = add_account(store, "eve", "editor")
    store.create_agent("card-block", agent_yaml(), editor.principal)
    store.publish("card-block", 1, editor.principal)
    record = card_block_call("call-browser", account="24681357")
    record["audio"] = {"0": {"sensitive": True, "value": base64.b64encode(wav_of(1.0)).decode()}}
    store.ingest([record])
    broken = agent_yaml().replace("slot_type: date", "slot_type: birthday")
    bad_line = broken.splitlines().index("    slot_type: birthday") + 1

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(studio_url + "/agents/card-block")
            expect(page).to_have_url(re.compile(r"/login\?next=/agents/card-block$"))
            page.fill("input[name=name]", "eve")
            page.fill("input[name=password]", PASSWORD)
            page.click("#login")
            expect(page.locator("h1")).to_have_text("card-block")
            page.screenshot(path=shots / "1-agent.png")

            page.fill("#yaml", broken)
            page.click("#save")
            problem = page.locator("#problems li").first
            expect(problem).to_contain_text(f"card-block.yaml:{bad_line}:16: error:")
            expect(page.locator(f"#L{bad_line}")).to_have_class("bad")
            page.screenshot(path=shots / "2-validation-error.png")

            page.fill("#yaml", agent_yaml().replace("Welcome to Northbank", "Hello from Northbank"))
            page.click("#save")
            expect(page.locator("#save")).to_have_text("Save as v3")
            expect(page.locator("#live-diff")).to_contain_text('+    text: "Hello from Northbank')
            page.check("#versions input[name=old][value='1']")
            page.check("#versions input[name=new][value='2']")
            page.click("#diff")
            expect(page.locator("#diff-view .add")).to_contain_text(["Hello from Northbank"])
            page.screenshot(path=shots / "3-diff.png")

            page.go_back()
            page.click("#publish")
            expect(page.locator("#live-version")).to_have_text("live: v2")
            page.screenshot(path=shots / "4-published.png")
            page.click("#rollback")
            expect(page.locator("#live-version")).to_have_text("live: v1")

            page.click("text=Calls")
            page.click("a[href='/calls/call-browser']")
            expect(page.locator("#timeline .turn")).to_have_count(len(record["turns"]))
            expect(page.locator("#turn-0")).to_contain_text("‹account_number›")
            page.click("#turn-0 .transcript")
            page.wait_for_function(
                "() => document.querySelector('#turn-0 audio').currentTime > 0.1", timeout=10_000
            )
            expect(page.locator("#turn-0")).to_have_class(re.compile("playing"))
            page.screenshot(path=shots / "5-timeline.png", full_page=True)
        finally:
            browser.close()
    actions = [(e["action"], e["user"]) for e in store.audit_log()]
    assert ("publish", "eve") in actions and ("rollback", "eve") in actions
    assert ("reveal", "eve") in actions  # hearing the caller's audio is a reveal
