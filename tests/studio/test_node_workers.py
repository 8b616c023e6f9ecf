"""The studio's whole flow against a node of two workers (`parley serve --workers 2 --studio URL
AGENT`), its calls placed by `parley loadtest`, the studio driven in Debian's Chromium.

Log in; edit the agent and see a validation error at its line; fix it; read the changes against
live; publish while `parley loadtest` has a call in progress on each worker: both workers take the
new version within 5 s, the calls in progress finish on the old one and the next calls get the new
one; every call's record, from whichever worker took it, reaches the studio (each worker ships its
own records file) naming its version; read the calls in the browser: the list, a call's timeline
with its reply timing bars (end of speech → first audio out), a turn's audio played; roll back in
one action, which reaches both workers too. The studio token reaches the workers through their
environment, never their command lines.
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright.async_api import async_playwright
from tests.agent.e2e_agents import account_agent
from tests.agent.voice_caller import AgentServer, WebhookSink, stop_agent_server
from tests.integration.harness import HOST, free_port, rtp_range, spawn_until_ready
from tests.studio.conftest import PASSWORD, StudioServer, add_account
from tests.studio.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.studio.test_node import wait_until

from parley.cluster.node import NODE_READY_LINE

pytestmark = [
    pytest.mark.parametrize("store", ["sqlite"], indirect=True),
    pytest.mark.skipif(shutil.which("flite") is None, reason="flite not installed (Debian package flite)"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]

WORKERS = 2
CALLS_PER_WORKER = 2
SCENARIO = """
name: studio-node
transport: udp
traffic: {calls: CALLS, rate: 1, concurrency: 1, setup_timeout_s: 20, max_call_s: 90}
caller:
  prompt: {silence_ms: 700, min_speech_ms: 300, timeout_s: 30}
webhook: {port: 0}
variables:
  account: {choice: ["4271", "1237", "7913"]}
scripts:
  - name: happy_path
    steps:
      - wait_prompt
      - say: "{account|words}"
      - wait_prompt
      - say: "yes"
      - expect_hangup: {timeout_s: 40}
""".replace("CALLS", str(CALLS_PER_WORKER))


def serving(node: AgentServer, version: int) -> int:
    """How many workers have logged that they serve ``version``."""
    return sum(f"now serving version {version} " in line for line in node.lines)


def command_lines(root: int) -> list[str]:
    """The command lines of ``root`` and every process below it (the node, its workers, decoders)."""
    processes: dict[int, tuple[int, str]] = {}  # pid -> (parent, command line)
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])  # state ppid ...
            processes[int(entry.name)] = (
                parent,
                (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(),
            )
        except (OSError, ValueError, IndexError):
            continue  # not a process, or it exited meanwhile
    family, found = {root}, True
    while found:
        below = {pid for pid, (parent, _) in processes.items() if parent in family} - family
        found = bool(below)
        family |= below
    return [processes[pid][1] for pid in family if pid in processes]


def start_loadtest(scenario: Path, port: int, out: Path) -> subprocess.Popen:
    first, last = rtp_range(20)
    cmd = [sys.executable, "-m", "parley", "loadtest", str(scenario), "--target", f"sip:agent@{HOST}:{port}"]
    cmd += ["--out", str(out), "--sip-port", str(free_port()), "--rtp-ports", f"{first}-{last}"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.timeout(420)
async def test_two_workers_follow_the_studio_and_their_loadtest_calls_reach_it(store, tmp_path) -> None:
    studio = StudioServer(store).start()
    editor = add_account(store, "ops", "editor")
    shots = ARTIFACTS / "studio"
    shots.mkdir(parents=True, exist_ok=True)
    with WebhookSink({"reference": "C7"}) as sink:
        text = account_agent(sink.url("/claims"), name="e2e-test", no_input_ms=8000)
        store.create_agent("e2e-test", text, editor.principal)
        store.publish("e2e-test", 1, editor.principal)
        records = tmp_path / "calls.jsonl"
        port = free_port(block=WORKERS)
        first, last = rtp_range(40 * WORKERS)
        cmd = [sys.executable, "-m", "parley", "-v", "serve", "e2e-test", "--studio", studio.url]
        cmd += ["--workers", str(WORKERS), "--host", HOST, "--port", str(port), "--transport", "udp"]
        cmd += ["--rtp-ports", f"{first}-{last}", "--records", str(records)]
        env = {**os.environ, "PARLEY_STUDIO_TOKEN": editor.token, "PARLEY_CACHE_DIR": str(tmp_path / "cache")}
        lines: list[str] = []
        proc = spawn_until_ready(
            cmd, lines, cwd=tmp_path, env=env, startup_timeout=180, ready_line=NODE_READY_LINE
        )
        node = AgentServer(proc, port, lines, records)
        playwright = await async_playwright().start()
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            commands = command_lines(proc.pid)
            assert len(commands) > WORKERS and sum(" serve e2e-test " in c for c in commands) == 1 + WORKERS
            assert not any(editor.token in c for c in commands), commands  # `ps` shows no secret

            # In the browser: log in, edit the agent and see a validation error at its line, fix it
            # (version 2), and read its changes against live.
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            await page.goto(f"{studio.url}/agents/e2e-test")
            await page.fill("input[name=name]", "ops")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("#login")
            broken = text.replace("    slot_type: yes_no", "    slot_type: maybe")
            bad_line = broken.splitlines().index("    slot_type: maybe") + 1
            await page.fill("#yaml", broken)
            await page.click("#save")
            problem = await page.locator("#problems li").first.inner_text()
            assert f"e2e-test.yaml:{bad_line}:16: error:" in problem, problem
            await page.screenshot(path=shots / "node-workers-1-validation-error.png")
            await page.fill("#yaml", text.replace("Parley test line.", "Parley test line, version two."))
            await page.click("#save")
            await page.wait_for_selector("#live-diff .add:has-text('version two')")
            await page.screenshot(path=shots / "node-workers-2-changes-since-live.png")

            # `parley loadtest` calls each worker at its own port, one call at a time; version 2 is
            # published while each worker's first call is in progress: both workers take it within
            # 5 s, those calls finish on version 1, and the next ones get version 2.
            scenario = tmp_path / "scenario.yaml"
            scenario.write_text(SCENARIO)
            outs = [tmp_path / f"loadtest-{i}" for i in range(WORKERS)]
            runs = [start_loadtest(scenario, port + i, outs[i]) for i in range(WORKERS)]
            in_progress = lambda: sum(": agent e2e-test starts at" in line for line in lines) >= WORKERS  # noqa: E731
            await asyncio.to_thread(wait_until, in_progress, "a call in progress on each worker", 60, node)
            await page.click("#publish")
            published = time.monotonic()
            await page.wait_for_selector("#live-version:has-text('live: v2')")
            await page.screenshot(path=shots / "node-workers-3-published.png")
            both = lambda: serving(node, 2) == WORKERS  # noqa: E731
            await asyncio.to_thread(wait_until, both, "both workers to take v2", 5, node)
            pickup_s = time.monotonic() - published
            for run in runs:
                output, _ = await asyncio.to_thread(run.communicate, timeout=240)
                assert run.returncode in (0, 1), output  # 1: a threshold missed (none is set here)
            placed = [[json.loads(ln) for ln in (o / "calls.jsonl").read_text().splitlines()] for o in outs]
            for calls in placed:
                assert [c["sip_status"] for c in calls] == [200] * CALLS_PER_WORKER, calls
                assert [c["ended_by"] for c in calls] == ["agent"] * CALLS_PER_WORKER, calls  # none dropped
            by_worker = [{c["call_id"] for c in calls} for calls in placed]

            # Every call reached the studio, from the worker that took it, naming the version it ran.
            def arrived() -> bool:
                ids = {c["call_id"] for c in store.calls(agent="e2e-test", limit=100)[1]}
                return set().union(*by_worker) <= ids

            await asyncio.to_thread(wait_until, arrived, "every loadtest call in the studio", 20, node)
            for i, ids in enumerate(by_worker):
                shipped = Path(f"{records}.w{i}").read_text()
                assert all(call_id in shipped for call_id in ids), (i, ids)
            for calls in placed:
                versions = [
                    store.call(c["call_id"])["version"] for c in sorted(calls, key=lambda c: c["index"])
                ]
                assert versions == [1] + [2] * (CALLS_PER_WORKER - 1), versions
            stored = [store.call(call_id) for call_id in set().union(*by_worker)]
            opened = [store.keyring.unseal(c["record"]) for c in stored]
            for call, record in zip(stored, opened, strict=True):
                assert ("version two" in record["prompts"][0]["text"]) == (call["version"] == 2), record
            spoken = [(c, r) for c, r in zip(stored, opened, strict=True) if c["audio_turns"]]
            assert spoken, [r["turns"] for r in opened]
            call, record = spoken[0]
            turn = call["audio_turns"][0]
            reply = record["turns"][turn]["timing"]
            assert 0 < reply["decision_ms"] <= reply["first_audio_ms"], reply

            # In the browser: the call list, the call's timeline and its reply bars, a turn played.
            await page.goto(f"{studio.url}/calls?agent=e2e-test")
            for call_id in set().union(*by_worker):
                await page.wait_for_selector(f"a[href='/calls/{call_id}']")
            await page.click(f"a[href='/calls/{call['call_id']}']")
            bars = page.locator(f"#turn-{turn} .bars .bar")
            phases = await bars.evaluate_all("bars => bars.map(b => b.dataset.phase)")
            assert phases[-2:] == ["decision", "first audio out"], phases
            shown = await page.locator(f"#turn-{turn} .bar[data-phase='first audio out'] .ms").inner_text()
            assert shown == f"{reply['first_audio_ms']:.0f} ms", shown
            await page.click(f"#turn-{turn} .caller strong")
            await page.wait_for_function(
                f"() => document.querySelector('#turn-{turn} audio').currentTime > 0.1", timeout=10_000
            )
            await page.screenshot(path=shots / "node-workers-4-call-timeline.png", full_page=True)

            # The one-action rollback reaches both workers too.
            await page.goto(f"{studio.url}/agents/e2e-test")
            await page.click("#rollback")
            await page.wait_for_selector("#live-version:has-text('live: v1')")
            rolled_back = lambda: serving(node, 1) == WORKERS  # noqa: E731
            await asyncio.to_thread(wait_until, rolled_back, "both workers to roll back to v1", 5, node)
        finally:
            await browser.close()
            await playwright.stop()
            code = stop_agent_server(node, timeout=30)
            studio.stop()
        assert code == 0, node.log()
    assert pickup_s < 5
    print(f"publish reached both workers in {pickup_s:.2f} s")
