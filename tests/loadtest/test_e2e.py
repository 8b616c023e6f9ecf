"""The load tester end to end over real SIP/RTP on loopback.

Against ``parley serve`` with a small voice agent (pocketsphinx, flite prompts): a 3-call run whose
counts, per-slot accuracy (the agent's webhook posts vs what each caller said) and output files are
checked; a target answering 503 (``parley serve echo --max-calls 0``) is reported as ``rejected``;
a port that never answers as ``no_answer`` within the setup timeout; SIGINT mid-run still writes
``calls.jsonl``, the summary and the report, and exits 130.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.e2e_agents import account_agent
from agent.voice_caller import AgentServer, running_agent
from integration.harness import HOST, free_port, rtp_range, start_server
from parley.loadtest.run import RunOptions, run_loadtest
from parley.loadtest.scenario import choose_script, draw_values, load_scenario

from .conftest import needs_flite, write

pytestmark = [needs_flite, pytest.mark.timeout(180)]

SCENARIO = """
name: e2e-small
transport: udp
traffic: {{calls: {calls}, rate: 2, concurrency: 3, setup_timeout_s: {setup_timeout}, max_call_s: 60}}
caller:
  prompt: {{silence_ms: 1200, min_speech_ms: 300, timeout_s: 20}}
webhook:
  port: {sink_port}
  responses:
    /requests: {{status: 200, body: {{reference: R42}}}}
thresholds: {{max_failed_pct: 0, min_slot_accuracy_pct: 50}}
variables:
  account: {{choice: ["4271", "1237", "7913"]}}
scripts:
  - name: happy_path
    steps:
      - wait_prompt
      - say: "{{account|words}}"
      - wait_prompt
      - say: "yes"
      - expect_hangup: {{timeout_s: 30}}
    expect:
      account: {{value: "{{account}}", type: digits}}
      agree: {{value: true, type: yes_no}}
"""

SLOW_SCENARIO = """
name: e2e-slow
traffic: {calls: 20, rate: 5, concurrency: 20, setup_timeout_s: 5, max_call_s: 60}
webhook: {port: 0}
scripts:
  - name: long_call
    steps:
      - say: "hello there"
      - pause: 30000
"""


def options(tmp_path: Path, scenario: Path, *targets: str, **kw: object) -> RunOptions:
    return RunOptions(
        scenario_path=scenario,
        targets=targets,
        out=tmp_path / "out",
        rtp_ports=rtp_range(40),
        sip_port=free_port(),
        **kw,  # type: ignore[arg-type]
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def agent_records(server: AgentServer, call_ids: set[str], timeout: float = 10.0) -> dict[str, dict]:
    """The agent's own records of ``call_ids`` (appended to its JSONL file as calls end)."""
    path: Path = server.records  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    found: dict[str, dict] = {}
    while time.monotonic() < deadline:
        if path.exists():
            found = {r["call_id"]: r for r in read_jsonl(path) if r["call_id"] in call_ids}
            if len(found) == len(call_ids):
                break
        time.sleep(0.1)
    return found


def test_small_run_against_an_agent(tmp_path: Path, agent_server: AgentServer, sink_port: int) -> None:
    scenario = write(
        tmp_path / "scenario.yaml", SCENARIO.format(calls=3, setup_timeout=10, sink_port=sink_port)
    )
    result = run_loadtest(options(tmp_path, scenario, agent_server.uri, seed=7))
    out = tmp_path / "out"
    records = read_jsonl(out / "calls.jsonl")
    log = agent_server.log()
    assert sorted(r["index"] for r in records) == [0, 1, 2], records
    theirs = agent_records(agent_server, {r["call_id"] for r in records})
    assert len(theirs) == 3, (records, log)
    for record in records:
        agent = theirs[record["call_id"]]  # matched by SIP Call-ID
        assert record["outcome"] == "completed", (record, log)
        assert record["sip_status"] == 200 and record["setup_ms"] > 0, record
        assert record["ended_by"] == "agent", record  # the agent's BYE after its goodbye
        assert [t["action"] for t in record["turns"]] == ["say", "say"], record
        assert all(t["reply_latency_ms"] is not None and t["reply_latency_ms"] > 0 for t in record["turns"])
        assert record["rtp"]["packets"] > 100 and record["rtp"]["lost"] == 0, record["rtp"]
        # What the load tester scored is what the agent understood and posted for this call.
        posted = agent["outcome"] == "completed"
        assert record["webhook_posts"] == (1 if posted else 0), (record, agent)
        understood = {name: env["value"] for name, env in agent["slots"].items()} if posted else {}
        slots = {s["name"]: s for s in record["slots"]}
        assert slots["account"]["expected"] in ("4271", "1237", "7913"), slots
        assert slots["agree"]["expected"] is True, slots
        for name, slot in slots.items():
            assert slot["got"] == understood.get(name), (slot, agent)
            assert slot["correct"] == (str(slot["got"]).lower() == str(slot["expected"]).lower()), slot
    # The recognisers are real (pocketsphinx) and slow on a loaded machine: at least one call
    # must have gone through the whole flow, or this run proved nothing about slot scoring.
    assert any(r["webhook_posts"] for r in records), (records, log)
    # The values drawn for each call depend only on the seed and the call's index.
    parsed = load_scenario(scenario)
    expected = []
    for index in range(3):
        rng = random.Random(f"7:{index}")
        choose_script(parsed, rng)  # the script is drawn first, then the variables
        expected.append(draw_values(parsed, rng)["account"])
    assert [r["slots"][0]["expected"] for r in sorted(records, key=lambda r: r["index"])] == expected
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert summary["attempted"] == 3 and summary["answered"] == 3, summary
    for kind, name in (("digits", "account"), ("yes_no", "agree")):
        right = sum(s["correct"] for r in records for s in r["slots"] if s["name"] == name)
        assert summary["slots"]["by_type"][kind]["correct"] == right, summary["slots"]
        assert summary["slots"]["by_type"][kind]["total"] == 3, summary["slots"]
    assert (out / "report.html").stat().st_size > 1000
    accuracy = summary["slots"]["pct"]
    assert result.exit_code == (0 if accuracy >= 50 else 1), (result.failures, accuracy)


def test_a_target_answering_503_is_reported_as_rejected(tmp_path: Path) -> None:
    server = start_server(tmp_path, transport="udp", max_calls=0)
    try:
        scenario = write(tmp_path / "s.yaml", SCENARIO.format(calls=2, setup_timeout=5, sink_port=0))
        result = run_loadtest(options(tmp_path, scenario, server.uri))
    finally:
        server.stop()
    records = read_jsonl(tmp_path / "out" / "calls.jsonl")
    assert [(r["outcome"], r["sip_status"], r["setup_ms"]) for r in records] == [("rejected", 503, None)] * 2
    assert all(r["call_id"] for r in records), records
    assert result.exit_code == 1 and result.failures, result  # max_failed_pct: 0 is missed


def test_a_target_that_never_answers_is_no_answer(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((HOST, 0))  # receives the INVITEs, answers nothing
        port = silent.getsockname()[1]
        scenario = write(tmp_path / "s.yaml", SCENARIO.format(calls=2, setup_timeout=1.5, sink_port=0))
        started = time.monotonic()
        result = run_loadtest(options(tmp_path, scenario, f"sip:agent@{HOST}:{port}"))
        took = time.monotonic() - started
        silent.settimeout(0)
        invites = 0
        while True:
            try:
                data = silent.recv(65536)
            except BlockingIOError:
                break
            invites += data.startswith(b"INVITE ")
    records = read_jsonl(tmp_path / "out" / "calls.jsonl")
    assert [(r["outcome"], r["sip_status"]) for r in records] == [("no_answer", None)] * 2, records
    assert invites >= 2  # the INVITEs did go out (and were retransmitted)
    assert took < 15, took
    assert result.exit_code == 1


def test_sigint_mid_run_still_writes_the_report(tmp_path: Path) -> None:
    server = start_server(tmp_path, transport="udp")
    try:
        scenario = write(tmp_path / "slow.yaml", SLOW_SCENARIO)
        out = tmp_path / "out"
        cmd = [sys.executable, "-m", "parley", "loadtest", str(scenario), "--target", server.uri]
        first, last = rtp_range(60)
        cmd += ["--out", str(out), "--sip-port", str(free_port()), "--rtp-ports", f"{first}-{last}"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (out / "calls.jsonl").exists():
            time.sleep(0.1)
        time.sleep(2.0)  # a few calls are up, in their 30 s pause
        proc.send_signal(signal.SIGINT)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            pytest.fail(f"the load tester did not stop after SIGINT:\n{output}")
    finally:
        server.stop()
    assert proc.returncode == 130, output
    records = read_jsonl(out / "calls.jsonl")
    assert 1 <= len(records) < 20, output
    assert {r["outcome"] for r in records} == {"aborted"}, records
    assert all(r["sip_status"] == 200 and r["duration_s"] is not None for r in records), records
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGINT" and summary["summary"]["attempted"] == len(records)
    assert (out / "report.html").exists()
    assert os.path.getsize(out / "report.html") > 1000


ECHO_SCENARIO = """
name: echo-workers
traffic: {calls: 6, rate: 6, concurrency: 6, setup_timeout_s: 5, max_call_s: 30}
webhook: {port: 0}
caller:
  prompt: {silence_ms: 500, min_speech_ms: 200, timeout_s: 10}
variables:
  word: {choice: ["one two three", "seven eight nine"]}
scripts:
  - name: echo_talk
    steps:
      - say: "{word}"
      - wait_prompt                      # the echo of what was said
      - dtmf: "12"
      - hangup
"""


def test_workers_share_the_calls_and_their_records_merge(tmp_path: Path) -> None:
    server = start_server(tmp_path, transport="udp")
    try:
        scenario = write(tmp_path / "echo.yaml", ECHO_SCENARIO)
        result = run_loadtest(options(tmp_path, scenario, server.uri, workers=2, seed=3))
    finally:
        server.stop()
    records = read_jsonl(tmp_path / "out" / "calls.jsonl")
    assert sorted(r["index"] for r in records) == list(range(6)), records
    assert {r["index"] % 2: r["worker"] for r in records} == {0: 0, 1: 1}
    for record in records:
        assert record["outcome"] == "hung_up_early" and record["ended_by"] == "caller", record
        assert [t["action"] for t in record["turns"]] == ["say", "dtmf"], record
        assert record["turns"][1]["text"] == "12", record
        assert not record["turns"][0]["prompt_timeout"], record
        assert record["rtp"]["packets"] > 20 and record["rtp"]["loss_pct"] == 0.0, record["rtp"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["workers"] == 2 and [w["placed"] for w in summary["worker_stats"]] == [3, 3]
    assert summary["summary"]["attempted"] == 6 and result.exit_code == 0


def test_several_targets_take_the_calls_round_robin(tmp_path: Path) -> None:
    answering = start_server(tmp_path, transport="udp")
    refusing = start_server(tmp_path, transport="udp", max_calls=0)  # answers every INVITE 503
    try:
        scenario = write(tmp_path / "echo.yaml", ECHO_SCENARIO)
        result = run_loadtest(options(tmp_path, scenario, answering.uri, refusing.uri, seed=3))
    finally:
        answering.stop()
        refusing.stop()
    records = read_jsonl(tmp_path / "out" / "calls.jsonl")
    outcomes = {r["index"]: (r["outcome"], r["sip_status"]) for r in records}
    assert outcomes == {i: ("hung_up_early", 200) if i % 2 == 0 else ("rejected", 503) for i in range(6)}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["targets"] == [answering.uri, refusing.uri] and summary["target"] == answering.uri
    assert result.exit_code == 0  # ECHO_SCENARIO has no thresholds


FOLLOWING_SCENARIO = """
name: e2e-follow
transport: udp
agent: agent.yaml
traffic: {{calls: 2, rate: 1, concurrency: 2, setup_timeout_s: 10, max_call_s: 90}}
caller:
  prompt: {{silence_ms: 900, min_speech_ms: 300, timeout_s: 20}}
webhook: {{port: {sink_port}}}
variables:
  account: {{choice: ["4271", "1237"]}}
scripts:
  - name: read_back_unplanned
    steps:
      - wait_prompt: account
      - say: "{{account|words}}"
      - wait_prompt: agree              # the account is read back first: the caller says yes to it
      - say: "yes"
      - expect_hangup: {{timeout_s: 30}}
    expect:
      account: {{value: "{{account}}", type: digits}}
      agree: {{value: true, type: yes_no}}
"""


def test_a_caller_follows_a_read_back_its_script_does_not_plan(tmp_path: Path) -> None:
    """The account agent reads the account number back (``confirm: always``); the script waits for the
    yes/no question instead: the caller recognises the read-back among the agent's prompts, says
    "yes, that's right" to it, and the call goes on to the agent's goodbye."""
    sink_port = free_port()
    agent = account_agent(f"http://{HOST}:{sink_port}/requests", name="follow-e2e")
    agent = agent.replace("confirm: never", "confirm: always", 1)  # the account's
    write(tmp_path / "agent.yaml", agent)
    scenario = write(tmp_path / "scenario.yaml", FOLLOWING_SCENARIO.format(sink_port=sink_port))
    (tmp_path / "served").mkdir()
    with running_agent(tmp_path / "served", agent, extra=["--max-load", "0"]) as server:
        run_loadtest(options(tmp_path, scenario, server.uri, webhook_port=sink_port))
        records = read_jsonl(tmp_path / "out" / "calls.jsonl")
        theirs = agent_records(server, {r["call_id"] for r in records})
    assert len(records) == 2 and len(theirs) == 2, (records, theirs)
    for record in records:
        agent_record = theirs[record["call_id"]]
        kinds = [(t["step"], t["kind"]) for t in agent_record["turns"]]
        assert kinds[:2] == [("account", "answer"), ("account", "confirm")], agent_record["turns"]
        assert record["outcome"] == "completed", (record, agent_record["turns"])
        assert [d["heard"] for d in record["detours"]] == ["the read-back of account"], record["detours"]
        assert [d["action"] for d in record["detours"]] == ["yes"], record["detours"]
        assert [t["text"] for t in record["turns"]][1] == "yes, that's right", record["turns"]
