"""`parley serve --studio URL --token T AGENT_NAME` against a real studio, over real SIP and RTP, the
studio driven in Debian's Chromium (Playwright) where a person would use it.

One node, one studio (uvicorn on loopback, SQLite): the node serves the live version; an edit
published in the browser while a call is in progress reaches the node within 5 s, the call in
progress finishes on its version and the next call gets the new one, each record naming its version;
records reach the studio with each turn's audio; while the studio is down, the node keeps serving and
keeps its records on disk, and they arrive once it is back; a recorded call is replayed against other
versions (and a required replay set refuses a publish that changes it); the call's timeline plays a
turn's audio in the browser; the browser's one-action rollback is followed too. The record shipper's
own rules (offset, rejected lines) are tested without a node below.
"""

import asyncio
import json
import re
import shutil
import time

import httpx
import pytest
from playwright.async_api import async_playwright
from tests.agent.e2e_agents import account_agent
from tests.agent.voice_caller import (
    PROMPT_SILENCE_MS,
    AnswerBook,
    WebhookSink,
    start_agent_server,
    stop_agent_server,
)
from tests.integration.harness import HOST, free_port, rtp_range
from tests.studio.conftest import PASSWORD, StudioServer, add_account, card_block_call
from tests.studio.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

from parley.loadtest.caller import ScriptedCaller
from parley.nlu.question import Question, SlotType
from parley.nlu.reader import read_slot
from parley.speech.tts import load_tts
from parley.studio.node import RecordShipper, StudioLink, StudioUnavailable
from parley.telephony.manager import CallManager

pytestmark = pytest.mark.parametrize("store", ["sqlite"], indirect=True)


def wait_until(predicate, what: str, timeout: float, server=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    log = server.log() if server is not None else ""
    pytest.fail(f"timed out after {timeout} s waiting for {what}\n{log}")


def served(server, version: int) -> bool:
    return any(f"now serving version {version} " in line for line in server.lines)


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite not installed (Debian package flite)")
@pytest.mark.timeout(240)
async def test_node_follows_publishes_and_keeps_records_while_the_studio_is_down(store, tmp_path) -> None:
    studio = StudioServer(store).start()
    editor = add_account(store, "ci", "editor")
    with WebhookSink({"reference": "C9"}) as sink:
        # the browser takes its time
        text = account_agent(sink.url("/claims"), name="e2e-test", no_input_ms=15000)
        store.create_agent("e2e-test", text, editor.principal)
        store.publish("e2e-test", 1, editor.principal)
        records = tmp_path / "calls.jsonl"
        node = start_agent_server(
            "e2e-test",
            port=free_port(),
            rtp_ports=rtp_range(20),
            records=records,
            extra=["--studio", studio.url, "--token", editor.token],
            startup_timeout=90,
            cache_dir=tmp_path / "cache",
        )
        answers = AnswerBook(load_tts("flite"), "slt")
        playwright = await async_playwright().start()
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        shots = ARTIFACTS / "studio"
        shots.mkdir(parents=True, exist_ok=True)
        manager = CallManager(None, host=HOST, port=free_port(), rtp_ports=rtp_range(20), max_load=None)
        await manager.start()
        try:
            account, yes = await answers.get("four two seven one"), await answers.get("yes")
            # Call A starts on version 1; version 2 is published while it is in progress.
            first = ScriptedCaller(manager, await manager.dial(f"sip:agent@{HOST}:{node.port}", timeout=10))
            await asyncio.wait_for(first.wait_prompt_end(PROMPT_SILENCE_MS), 30)
            # the edit and the publish are made in the browser
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            await page.goto(f"{studio.url}/agents/e2e-test")
            await page.fill("input[name=name]", "ci")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("#login")
            changed = text.replace("Parley test line.", "Parley test line, version two.")
            await page.fill("#yaml", changed)
            await page.click("#save")
            await page.click("#publish")
            published = time.monotonic()
            await page.wait_for_selector("#live-version:has-text('live: v2')")
            await asyncio.to_thread(wait_until, lambda: served(node, 2), "the node to take v2", 5, node)
            pickup_s = time.monotonic() - published
            await asyncio.wait_for(first.say(account), 20)
            await asyncio.wait_for(first.wait_prompt_end(PROMPT_SILENCE_MS), 30)
            await asyncio.wait_for(first.say(yes), 20)
            assert await asyncio.wait_for(first.wait_ended(), 30) == "remote-bye"
            await first.close()
            # Call B: the new version (the caller hangs up after the first prompt).
            second = ScriptedCaller(manager, await manager.dial(f"sip:agent@{HOST}:{node.port}", timeout=10))
            await asyncio.wait_for(second.wait_prompt_end(PROMPT_SILENCE_MS), 30)
            second.call.hangup()
            await second.close()

            def stored(call_id: str):
                try:
                    return store.call(call_id)
                except LookupError:
                    return None

            a = await asyncio.to_thread(
                wait_until, lambda: stored(first.call.call_id), "call A in the studio", 10, node
            )
            b = await asyncio.to_thread(wait_until, lambda: stored(second.call.call_id), "call B", 10, node)
            assert (a["version"], a["outcome"]) == (1, "completed")
            assert b["version"] == 2
            opened_b = store.keyring.unseal(b["record"])
            assert "version two" in opened_b["prompts"][0]["text"]
            opened_a = store.keyring.unseal(a["record"])
            spoken = [i for i, turn in enumerate(opened_a["turns"]) if turn["input"] == "speech"]
            assert len(spoken) == 2 and a["audio_turns"] == spoken  # each spoken turn's audio
            assert store.turn_audio(first.call.call_id, spoken[0])[:4] == b"RIFF"

            # Replay: call A's recorded audio through the recognisers again, against other versions.
            api = httpx.AsyncClient(base_url=studio.url, headers=editor.headers, timeout=120)
            replay = (
                await api.post("/api/agents/e2e-test/replay", json={"version": 2, "calls": [a["call_id"]]})
            ).json()
            assert replay["passed"], replay  # v2 only changed the greeting
            heard = [t["heard"] for t in replay["results"][0]["turns"] if t["heard"] is not None]
            digits, yes = (Question(SlotType.DIGITS, digit_count=4), Question(SlotType.YES_NO))
            assert [read_slot(q, h).value for q, h in zip((digits, yes), heard, strict=True)] == [
                "4271",
                True,
            ]
            five = text.replace("digits: 4", "digits: 5")
            store.save_version("e2e-test", five, 2, editor.principal)
            replay = (await api.post("/api/agents/e2e-test/replay", json={"calls": [a["call_id"]]})).json()
            assert replay["version"] == 3 and not replay["passed"]
            assert any(c.startswith("slot account: '4271' → ") for c in replay["results"][0]["changes"]), (
                replay
            )
            made = await api.post(
                "/api/agents/e2e-test/replay-sets",
                json={"name": "smoke", "calls": [a["call_id"]], "required": True},
            )
            assert made.status_code == 201, made.text
            refused = await api.post("/api/agents/e2e-test/publish", json={"version": 3})
            assert refused.status_code == 409 and "slot account" in refused.json()["errors"][0]["text"]
            assert store.agent("e2e-test")["live"] == 2
            await api.aclose()

            # The studio goes down: the node keeps serving, its records wait on disk.
            studio.stop()
            third = ScriptedCaller(manager, await manager.dial(f"sip:agent@{HOST}:{node.port}", timeout=10))
            await asyncio.wait_for(third.wait_prompt_end(PROMPT_SILENCE_MS), 30)
            third.call.hangup()
            await third.close()
            line = await asyncio.to_thread(
                wait_until,
                lambda: third.call.call_id in records.read_text(),
                "call C's record on disk",
                10,
                node,
            )
            assert line
            await asyncio.sleep(1.5)  # the shipper tried and failed meanwhile
            assert stored(third.call.call_id) is None
            studio.start()
            c = await asyncio.to_thread(
                wait_until, lambda: stored(third.call.call_id), "call C after the outage", 15, node
            )
            assert c["version"] == 2

            # In the browser: call A's timeline, a spoken turn's audio plays; then the one-action
            # rollback, which reaches the node as well.
            await page.goto(f"{studio.url}/calls/{a['call_id']}")
            await page.click(f"#turn-{spoken[0]} .caller strong")
            await page.wait_for_function(
                f"() => document.querySelector('#turn-{spoken[0]} audio').currentTime > 0.1", timeout=10_000
            )
            await page.screenshot(path=shots / "node-call-timeline.png", full_page=True)
            await page.goto(f"{studio.url}/agents/e2e-test")
            await page.click("#rollback")
            await page.wait_for_selector("#live-version:has-text('live: v1')")
            rolled_back = lambda: served(node, 1)  # noqa: E731
            await asyncio.to_thread(wait_until, rolled_back, "the node to roll back to v1", 5, node)
        finally:
            await browser.close()
            await playwright.stop()
            await asyncio.wait_for(manager.stop(), 5)
            code = stop_agent_server(node)
            studio.stop()
        assert code == 0, node.log()
    assert pickup_s < 5
    print(f"publish reached the node in {pickup_s:.2f} s")


async def test_shipper_keeps_records_until_delivered_and_sets_refused_ones_aside(store, tmp_path) -> None:
    port = free_port()
    editor = add_account(store, "shipper", "editor")
    records = tmp_path / "calls.jsonl"
    good = [card_block_call(f"ship-{i}") for i in range(3)]
    lines = [
        json.dumps(good[0]),
        json.dumps({"record": "parley.call/1", "call_id": "broken"}),
        json.dumps(good[1]),
    ]
    records.write_text(
        "\n".join(lines) + "\n" + json.dumps(good[2])[:40]
    )  # the last line is still being written
    link = StudioLink(f"http://127.0.0.1:{port}", editor.token, timeout=2)
    shipper = RecordShipper(link, records)
    try:
        with pytest.raises(StudioUnavailable):
            await shipper.ship_once()  # nothing listens yet
        assert shipper.pending()[0] == 0
        studio = await asyncio.to_thread(lambda: StudioServer(store, port).start())
        try:
            assert await shipper.ship_once() == 3
            assert [c["call_id"] for c in store.calls()[1]] == ["ship-1", "ship-0"] or len(
                store.calls()[1]
            ) == 2
            assert json.loads((tmp_path / "calls.jsonl.rejected").read_text())["call_id"] == "broken"
            assert await shipper.ship_once() == 0  # the partial line waits
            with records.open("a") as out:
                out.write(json.dumps(good[2])[40:] + "\n")
            assert await shipper.ship_once() == 1
            records.write_text("")  # a new file: the offset starts again
            assert shipper.pending() == (0, [])
            assert store.calls()[0] == 3
        finally:
            await asyncio.to_thread(studio.stop)
    finally:
        await link.close()
    assert re.fullmatch(r"\d+", (tmp_path / "calls.jsonl.sent").read_text())
