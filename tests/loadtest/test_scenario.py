"""Scenario files: validation with line/column errors, variables, templates, the traffic shape."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from parley.cli import main
from parley.loadtest.run import same_value
from parley.loadtest.runner import apply_overrides, schedule, start_time
from parley.loadtest.scenario import (
    ScenarioFileError,
    Traffic,
    choose_script,
    draw_values,
    load_scenario,
    load_scenario_text,
    render_template,
    spoken_date,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "loadtest").glob("*.yaml"))

GOOD = """\
name: unit
traffic: {calls: 10, rate: 2, concurrency: 5}
variables:
  account: {digits: {length: 8}}
  pin: {digits: {length: 4, alphabet: "1379"}}
  birthday: {date: {start: 1950-01-01, end: 2000-12-31}}
  first: {choice: [Alice, Bob, Carol]}
  amount: {number: {min: 100, max: 5000}}
scripts:
  - name: happy
    weight: 3
    steps:
      - wait_prompt
      - say: "{account|words}"
      - pause: 300
      - dtmf: "{pin}"
      - barge_in: {text: "operator please", after_ms: 400}
      - silence: 6000
      - expect_hangup: {timeout_s: 10}
    expect:
      account: {value: "{account}", type: digits}
      birthday: "{birthday}"
  - name: quitter
    steps:
      - wait_prompt: {timeout_s: 5}
      - hangup
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ScenarioFileError) as info:
        load_scenario_text(text, "s.yaml")
    return [str(e) for e in info.value.errors]


def test_a_good_scenario_loads_with_defaults() -> None:
    scenario = load_scenario_text(GOOD)
    assert scenario.transport == "udp" and scenario.codecs == ["PCMU", "PCMA"]
    assert scenario.caller.voice.engine == "flite" and scenario.caller.voice.voice == "slt"
    kinds = [step.kind for step in scenario.scripts[0].steps]
    assert kinds == ["wait_prompt", "say", "pause", "dtmf", "barge_in", "silence", "expect_hangup"]
    assert scenario.scripts[0].steps[2].args.ms == 300
    assert scenario.scripts[0].expect["birthday"].type == "text"
    assert scenario.thresholds_dict() == {}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_scenarios_load(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.scripts and scenario.thresholds_dict()


def test_examples_cover_every_example_agent() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"card_block", "insurance_claim", "appointment_reschedule", "claim_replay"} <= names


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("wait_prompt\n", "wait_promt\n"), "s.yaml:13:9: error: unknown step 'wait_promt'"),
        (GOOD.replace("rate: 2", "rat: 2"), "s.yaml:2:22: error: unknown field 'rat' (hint: did you mean"),
        (GOOD.replace("{account|words}", "{acount|words}"), "s.yaml:14:14: error: unknown variable 'acount'"),
        (GOOD.replace("{account|words}", "{account|wrds}"), "s.yaml:14:14: error: unknown filter 'wrds'"),
        (GOOD.replace("calls: 10, ", ""), "s.yaml:2:10: error: traffic: give either 'calls' or 'duration_s'"),
        (GOOD.replace("length: 8", "length: 0"), "s.yaml:4:30: error: variables.account.digits.length:"),
        (GOOD.replace("pause: 300", "pause: -5"), "s.yaml:15:16: error: scripts[0].steps[2].pause.ms:"),
        (GOOD + "transport: sctp\n", "s.yaml:27:12: error: transport: input should be"),
        (GOOD + "  - name: happy\n    steps: [hangup]\n", "s.yaml:27:11: error: duplicate script name"),
        ("name: x\ntraffic: {calls: 1\n", "s.yaml:3:1: error: invalid YAML"),
        ("", "s.yaml:1:1: error: the file is empty"),
    ],
)
def test_bad_scenarios_point_at_the_line(text: str, expected: str) -> None:
    errors = errors_of(text)
    assert any(e.startswith(expected) for e in errors), errors


def test_a_missing_wav_is_reported(tmp_path: Path) -> None:
    text = GOOD.replace('say: "{account|words}"', "say: {wav: answers/account.wav}")
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(ScenarioFileError) as info:
        load_scenario(tmp_path / "s.yaml")
    assert "14:20: error: no such WAV file: answers/account.wav" in str(info.value)


def test_the_cli_refuses_a_malformed_scenario_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("rate: 2", "rate: fast"))
    result = CliRunner().invoke(main, ["loadtest", str(path), "--target", "sip:a@127.0.0.1:5060"])
    assert result.exit_code == 2, result.output
    assert f"{path}:2:28: error: traffic.rate: input should be a valid number" in result.output
    missing = str(tmp_path / "none.yaml")
    result = CliRunner().invoke(main, ["loadtest", missing, "--target", "sip:a@127.0.0.1"])
    assert result.exit_code == 2 and "cannot read file" in result.output, result.output


def test_the_cli_needs_a_target(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(GOOD)
    result = CliRunner().invoke(main, ["loadtest", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "no target" in result.output, result.output


def test_the_cli_refuses_a_target_that_is_not_a_sip_uri(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(GOOD)
    targets = ["--target", "sip:a@127.0.0.1:5060", "--target", "127.0.0.1:5062"]
    result = CliRunner().invoke(main, ["loadtest", str(path), *targets, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "expected sip:HOST:PORT, not '127.0.0.1:5062'" in result.output
    assert not (tmp_path / "out").exists()


def test_variables_are_deterministic_per_seed_and_index() -> None:
    scenario = load_scenario_text(GOOD)

    def draw(seed: int, index: int) -> tuple[str, dict[str, str]]:
        rng = random.Random(f"{seed}:{index}")
        return choose_script(scenario, rng).name, draw_values(scenario, rng)

    assert draw(1, 5) == draw(1, 5)
    assert draw(1, 5) != draw(2, 5) or draw(1, 6) != draw(2, 6)
    draws = [draw(3, i)[1] for i in range(200)]
    assert all(len(d["account"]) == 8 and d["account"].isdigit() for d in draws)
    assert all(set(d["pin"]) <= set("1379") and len(d["pin"]) == 4 for d in draws)
    assert all("1950-01-01" <= d["birthday"] <= "2000-12-31" for d in draws)
    assert {d["first"] for d in draws} == {"Alice", "Bob", "Carol"}
    assert all(100 <= int(d["amount"]) <= 5000 for d in draws)
    scripts = [draw(3, i)[0] for i in range(400)]
    assert 0.65 < scripts.count("happy") / len(scripts) < 0.85  # weights 3:1


def test_templates_and_filters() -> None:
    values = {"account": "40271", "name": "Smith", "day": "1985-05-03"}
    assert render_template("{account|words}", values) == "four zero two seven one"
    assert render_template("{name|spell}", values) == "S M I T H"
    assert render_template("born {day|spoken}", values) == "born the third of May nineteen eighty five"
    assert render_template("{name|upper} {{literal}}", values) == "SMITH {literal}"
    assert spoken_date("2004-12-21") == "the twenty first of December two thousand and four"
    assert spoken_date("1990-01-30") == "the thirtieth of January nineteen ninety"
    assert spoken_date("1905-02-02") == "the second of February nineteen oh five"


def test_expected_values_compare_loosely_typed() -> None:
    assert same_value(True, True) and same_value("yes", True) and same_value("true", True)
    assert not same_value(True, False)
    assert same_value("4271", "4271") and not same_value("4271", "4721")
    assert same_value(1200, 1200.0) and same_value("John", "john")


def test_traffic_shape() -> None:
    flat = Traffic(calls=10, rate=2)
    assert [start_time(flat, i) for i in range(3)] == [0.0, 0.5, 1.0]
    assert start_time(flat, 10) is None
    ramped = Traffic(calls=100, rate=10, ramp_up_s=4, ramp_down_s=4)
    times = [t for _, t in schedule(ramped)]
    assert len(times) == 100 and times == sorted(times)
    assert times[20] == pytest.approx(4.0)  # the ramp-up places rate * ramp_up / 2 calls
    assert times[1] - times[0] > times[30] - times[29]  # sparse while ramping up
    assert times[-1] - times[-2] > times[50] - times[49]  # and while ramping down
    timed = Traffic(duration_s=10, rate=5)
    assert len(list(schedule(timed))) == 50
    worker1 = [i for i, _ in schedule(flat, worker=1, workers=3)]
    assert worker1 == [1, 4, 7]


def test_command_line_overrides_replace_the_traffic_bound() -> None:
    scenario = load_scenario_text(GOOD)
    changed = apply_overrides(scenario, {"duration_s": 30.0, "rate": 5.0, "calls": None})
    assert changed.traffic.calls is None and changed.traffic.duration_s == 30.0 and changed.traffic.rate == 5
    assert apply_overrides(scenario, {"calls": 3}).traffic.calls == 3
