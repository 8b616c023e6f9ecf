"""docs/loadtest.md's scenario runs: ``parley serve examples/pizza_order.yaml`` (real SIP, RTP,
pocketsphinx, flite) and three of the page's calls placed by the load tester, their slots scored
against what the agent posted to the load tester's sink (the agent pointed at it by $PIZZA_BACKEND).
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.voice_caller import AgentServer, start_agent_server, stop_agent_server
from integration.harness import free_port, rtp_range
from parley.loadtest.run import RunOptions, run_loadtest
from parley.loadtest.scenario import choose_script, load_scenario_text

pytestmark = [
    pytest.mark.skipif(shutil.which("flite") is None, reason="flite not installed (Debian package flite)"),
    pytest.mark.timeout(240),
]

ROOT = Path(__file__).resolve().parents[2]
CALLS = 3


def page_scenario() -> str:
    page = (ROOT / "docs" / "loadtest.md").read_text()
    block = page.split("```yaml\n# file: examples/loadtest/pizza_order.yaml\n", 1)[1].split("```", 1)[0]
    return block


def seed_of_ordering_calls(text: str) -> int:
    """A seed whose first calls all run the 'order' script (the one that reaches the webhook)."""
    scenario = load_scenario_text(text)
    return next(
        seed
        for seed in range(1000)
        if all(choose_script(scenario, random.Random(f"{seed}:{i}")).name == "order" for i in range(CALLS))
    )


@pytest.fixture(scope="module")
def sink_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def pizza_server(tmp_path_factory: pytest.TempPathFactory, sink_port: int) -> Iterator[AgentServer]:
    directory = tmp_path_factory.mktemp("pizza")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIZZA_BACKEND", f"http://127.0.0.1:{sink_port}")  # inherited by the server
        try:
            server = start_agent_server(
                ROOT / "examples" / "pizza_order.yaml",
                port=free_port(),
                rtp_ports=rtp_range(20),
                records=directory / "calls.jsonl",
                extra=["--max-load", "0", "--workers", "1"],
                startup_timeout=90,
                cache_dir=directory / "cache",
            )
        except RuntimeError as exc:
            pytest.fail(str(exc))
    yield server
    stop_agent_server(server)


def test_the_pages_scenario_runs_against_the_pizza_agent(
    tmp_path: Path, pizza_server: AgentServer, sink_port: int
) -> None:
    text = page_scenario()
    scenario = tmp_path / "pizza_order.yaml"
    scenario.write_text(text)
    options = RunOptions(
        scenario_path=scenario,
        targets=(pizza_server.uri,),
        out=tmp_path / "out",
        seed=seed_of_ordering_calls(text),
        sip_port=free_port(),
        rtp_ports=rtp_range(40),
        webhook_port=sink_port,
        overrides={"calls": CALLS, "rate": 2.0, "concurrency": CALLS},
    )
    run_loadtest(options)
    out = tmp_path / "out"
    records = [json.loads(line) for line in (out / "calls.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert len(records) == CALLS and (out / "report.html").is_file()
    assert all(r["script"] == "order" and r["sip_status"] == 200 for r in records), records
    by_slot = summary["summary"]["slots"]["by_slot"]
    assert set(by_slot) == {"pizza", "size", "quantity", "phone"}, by_slot
    # real recognisers on a shared machine: at least one whole order went through, every slot right
    whole = [
        r for r in records if r["outcome"] == "completed" and all(s["status"] == "right" for s in r["slots"])
    ]
    assert whole, (records, pizza_server.log())
    page = (out / "report.html").read_text()
    assert '<div id="slots">' in page and "<td>phone</td><td>phone</td>" in page
