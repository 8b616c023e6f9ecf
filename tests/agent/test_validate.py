"""Agent file validation: every error located by line and column, with a hint; the CLI commands."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from parley.agent import AgentError, AgentFileError, load_agent, validate_file
from parley.cli import main

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))

VALID = """\
name: test-agent
intents:
  operator: ["an agent please"]
  repeat: ["say that again"]
global_intents:
  operator: {goto: handover}
  repeat: {action: repeat}
steps:
  - id: greet
    type: say
    text: "Hello."
  - id: first_name
    type: ask
    slot: first_name
    slot_type: name
    prompt: "What is your first name?"
    on_failure: handover
  - id: submit
    type: webhook
    url: http://127.0.0.1:8080/claims
    save: {claim_id: claim_id}
    say: "Thanks {first_name}, your claim is {claim_id}."
    on_failure: handover
  - id: bye
    type: hangup
    message: "Goodbye."
  - id: handover
    type: transfer
    to: "sip:operator@127.0.0.1:5070"
"""


def _write(tmp_path: Path, text: str, name: str = "agent.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _pos(text: str, needle: str, nth: int = 0) -> tuple[int, int]:
    """1-based line and column of the nth occurrence of ``needle`` in ``text``."""
    index = -1
    for _ in range(nth + 1):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _errors(tmp_path: Path, text: str) -> list[AgentError]:
    path = _write(tmp_path, text)
    with pytest.raises(AgentFileError) as info:
        load_agent(path)
    assert info.value.errors, "an invalid file must report errors"
    assert all(e.file == str(path) for e in info.value.errors)
    return info.value.errors


def _one(tmp_path: Path, text: str, needle: str, message: str, hint: str | None, nth: int = 0) -> AgentError:
    """Check ``text`` has exactly one error, at ``needle``, whose message and hint contain the given parts."""
    errors = _errors(tmp_path, text)
    assert len(errors) == 1, [str(e) for e in errors]
    error = errors[0]
    assert (error.line, error.column) == _pos(text, needle, nth), str(error)
    assert message in error.message, str(error)
    if hint is not None:
        assert error.hint is not None and hint in error.hint, str(error)
    return error


def test_valid_base_file(tmp_path: Path) -> None:
    agent = load_agent(_write(tmp_path, VALID))
    assert agent.name == "test-agent"
    assert validate_file(_write(tmp_path, VALID)) == []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_validate(path: Path) -> None:
    assert validate_file(path) == []


# --- structural errors (pydantic) ---------------------------------------------------------------------


def test_unknown_step_type(tmp_path: Path) -> None:
    text = VALID.replace("type: say", "type: sya")
    error = _one(tmp_path, text, "sya", "unknown step type 'sya'", "did you mean 'say'?")
    assert "say, ask, branch, webhook, transfer, hangup" in (error.hint or "")


def test_unknown_step_type_without_close_match_lists_types(tmp_path: Path) -> None:
    text = VALID.replace("type: say", "type: playback")
    _one(tmp_path, text, "playback", "unknown step type 'playback'", "step types: say, ask, branch")


def test_step_without_type(tmp_path: Path) -> None:
    text = VALID.replace("    type: say\n", "")
    _one(tmp_path, text, "id: greet", "step has no 'type'", "add type: one of say, ask")


def test_missing_slot_type(tmp_path: Path) -> None:
    text = VALID.replace("    slot_type: name\n", "")
    _one(tmp_path, text, "id: first_name", "missing required field 'slot_type'", "digits, phone, name")


def test_invalid_slot_type(tmp_path: Path) -> None:
    text = VALID.replace("slot_type: name", "slot_type: nmae")
    error = _one(tmp_path, text, "nmae", "'nmae' is not a valid slot_type", "did you mean 'name'?")
    assert "yes_no" in (error.hint or "")


def test_unknown_field_points_at_key(tmp_path: Path) -> None:
    text = VALID.replace("    on_failure: handover\n", "    on_falure: handover\n", 1)
    _one(tmp_path, text, "on_falure", "unknown field 'on_falure'", "did you mean 'on_failure'?")


def test_unknown_top_level_field(tmp_path: Path) -> None:
    text = VALID + "setings: {silence_ms: 500}\n"
    _one(tmp_path, text, "setings", "unknown field 'setings'", "did you mean 'settings'?")


def test_invalid_voice_engine(tmp_path: Path) -> None:
    text = VALID + "voice: {engine: espeak}\n"
    _one(tmp_path, text, "espeak}", "'espeak' is not a valid engine", "did you mean 'espeak-ng'?")


def test_name_must_be_a_slug(tmp_path: Path) -> None:
    text = VALID.replace("name: test-agent", "name: Test Agent")
    _one(tmp_path, text, "Test Agent", "not a slug", "'test-agent'")


def test_step_id_must_be_an_identifier(tmp_path: Path) -> None:
    text = VALID.replace("id: bye", "id: good bye")
    _one(tmp_path, text, "good bye", "'good bye' is not an identifier", "'good_bye'")


def test_wrong_value_type(tmp_path: Path) -> None:
    text = VALID.replace(
        'prompt: "What is your first name?"', 'prompt: "What is your first name?"\n    digits: many'
    )
    _one(tmp_path, text, "many", "integer", None)


def test_type_errors_name_the_path(tmp_path: Path) -> None:
    text = VALID.replace("settings", "x") + "settings: {silence_ms: 10}\n"
    _one(tmp_path, text, "10}", "settings.silence_ms: input should be greater than or equal to 100", None)
    error = _one(tmp_path, "name: a\nsteps: {a: 1}\n", "{a: 1}", "steps: input should be a valid list", None)
    assert "- id:" in (error.hint or "")


def test_union_value_reported_once(tmp_path: Path) -> None:
    text = VALID.replace(
        "  - id: bye\n",
        "  - id: route\n    type: branch\n    cases:\n      - when: {slot: first_name, equals: [Ann]}\n"
        "        next: bye\n  - id: bye\n",
    )
    error = _one(
        tmp_path, text, "[Ann]", "steps[3].cases[0].when.equals: input should be a valid string", None
    )
    assert "or boolean" in error.message


def test_global_intent_must_be_a_mapping(tmp_path: Path) -> None:
    text = VALID.replace("{goto: handover}", "handover")
    _one(tmp_path, text, "handover\n", "global_intents.operator", "{goto: step_id}")


def test_global_intent_needs_goto_or_action(tmp_path: Path) -> None:
    text = VALID.replace("repeat: {action: repeat}", "repeat: {goto: greet, action: repeat}")
    _one(tmp_path, text, "{goto: greet, action", "exactly one of 'goto'", None)


def test_bad_condition(tmp_path: Path) -> None:
    text = VALID.replace(
        "  - id: bye\n",
        "  - id: route\n    type: branch\n    cases:\n      - when: {slot: first_name}\n        next: bye\n"
        "  - id: bye\n",
    )
    _one(tmp_path, text, "{slot: first_name}", "exactly one of equals, greater_than", None)


def test_no_steps(tmp_path: Path) -> None:
    _one(tmp_path, "name: x\nsteps: []\n", "[]", "the agent has no steps", "add at least one step")


def test_missing_steps_and_name(tmp_path: Path) -> None:
    errors = _errors(tmp_path, "description: nothing here\n")
    assert {e.message for e in errors} == {"missing required field 'name'", "missing required field 'steps'"}
    assert all((e.line, e.column) == (1, 1) for e in errors)


# --- YAML-level errors -------------------------------------------------------------------------------


def test_yaml_syntax_error(tmp_path: Path) -> None:
    text = VALID.replace('    text: "Hello."', '    text: "Hello.\n   bad: [')
    errors = _errors(tmp_path, text)
    assert len(errors) == 1
    assert errors[0].message.startswith("invalid YAML")
    assert errors[0].line >= _pos(text, '"Hello.')[0]


def test_control_character_is_located_not_a_crash(tmp_path: Path) -> None:
    text = VALID.replace('    text: "Hello."', '    text: "Hel\x1flo."')
    errors = _errors(tmp_path, text)
    assert [(e.line, e.column, e.message) for e in errors] == [
        (*_pos(text, "\x1f"), "invalid YAML: character #x001f is not allowed")
    ]


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    text = VALID.replace('    text: "Hello."\n', '    text: "Hello."\n    text: "Hi."\n')
    _one(tmp_path, text, 'text: "Hi."', "duplicate key 'text'", "remove one")


def test_empty_file_and_not_a_mapping(tmp_path: Path) -> None:
    assert "empty" in _errors(tmp_path, "# nothing\n")[0].message
    error = _errors(tmp_path, "- id: a\n")[0]
    assert "must be a mapping" in error.message
    assert (error.line, error.column) == (1, 1)


def test_unreadable_file(tmp_path: Path) -> None:
    errors = validate_file(tmp_path / "missing.yaml")
    assert len(errors) == 1
    assert "cannot read file" in errors[0].message


# --- semantic errors ---------------------------------------------------------------------------------


def test_next_to_unknown_step(tmp_path: Path) -> None:
    text = VALID.replace('    text: "Hello."\n', '    text: "Hello."\n    next: handvoer\n')
    _one(tmp_path, text, "handvoer", "no step has the id 'handvoer'", "did you mean 'handover'?")


def test_goto_to_unknown_step(tmp_path: Path) -> None:
    text = VALID.replace("{goto: handover}", "{goto: hand_over}")
    _one(tmp_path, text, "hand_over", "no step has the id 'hand_over'", "did you mean 'handover'?")


def test_on_failure_to_unknown_step(tmp_path: Path) -> None:
    text = VALID.replace("    on_failure: handover\n", "    on_failure: operator\n", 1)
    _one(tmp_path, text, "operator\n", "no step has the id 'operator'", "step ids are:")


def test_start_unknown(tmp_path: Path) -> None:
    text = VALID.replace("steps:\n", "start: gret\nsteps:\n")
    _one(tmp_path, text, "gret", "no step has the id 'gret'", "did you mean 'greet'?")


def test_branch_case_and_default_to_unknown_steps(tmp_path: Path) -> None:
    text = VALID.replace(
        "  - id: bye\n",
        "  - id: route\n    type: branch\n    cases:\n      - when: {slot: first_name, present: true}\n"
        "        next: by\n    default: handoveer\n  - id: bye\n",
    )
    errors = _errors(tmp_path, text)
    assert [(e.line, e.column, e.hint) for e in errors] == [
        (*_pos(text, "by\n"), "did you mean 'bye'?"),
        (*_pos(text, "handoveer"), "did you mean 'handover'?"),
    ]


def test_branch_on_slot_never_collected(tmp_path: Path) -> None:
    text = VALID.replace(
        "  - id: bye\n",
        "  - id: route\n    type: branch\n    cases:\n      - when: {slot: frist_name, equals: Ann}\n"
        "        next: bye\n  - id: bye\n",
    )
    _one(tmp_path, text, "frist_name", "branch on slot 'frist_name'", "did you mean 'first_name'?")


def test_branch_on_undefined_intent(tmp_path: Path) -> None:
    text = VALID.replace(
        "  - id: bye\n",
        "  - id: route\n    type: branch\n    cases:\n      - when: {intent: operater}\n"
        "        next: bye\n  - id: bye\n",
    )
    _one(tmp_path, text, "operater", "intent 'operater' is not defined", "did you mean 'operator'?")


def test_unreachable_step(tmp_path: Path) -> None:
    text = VALID.replace("    on_failure: handover\n", "    next: bye\n    on_failure: handover\n", 1)
    error = _one(tmp_path, text, "submit", "step 'submit' is unreachable", "link it or remove it")
    assert "'greet'" in (error.hint or "")


def test_step_reached_only_by_global_intent_is_reachable(tmp_path: Path) -> None:
    text = VALID.replace("    on_failure: handover\n", "", 2)
    assert validate_file(_write(tmp_path, text)) == []


def test_duplicate_step_ids(tmp_path: Path) -> None:
    text = VALID.replace("id: bye", "id: greet")
    errors = _errors(tmp_path, text)
    assert len(errors) == 1
    assert errors[0].message == "duplicate step id 'greet'"
    assert (errors[0].line, errors[0].column) == _pos(text, "greet", 1)
    assert "rename" in (errors[0].hint or "")


def test_webhook_url_not_http(tmp_path: Path) -> None:
    text = VALID.replace("url: http://127.0.0.1:8080/claims", "url: ftp://127.0.0.1/claims")
    _one(tmp_path, text, "ftp://", "is not an http(s) URL", "http://host")


def test_webhook_url_without_host(tmp_path: Path) -> None:
    text = VALID.replace("url: http://127.0.0.1:8080/claims", "url: http:/claims")
    _one(tmp_path, text, "http:/claims", "is not an http(s) URL", None)


def test_transfer_target_not_sip(tmp_path: Path) -> None:
    text = VALID.replace('to: "sip:operator@127.0.0.1:5070"', 'to: "operator@127.0.0.1:5070"')
    _one(tmp_path, text, '"operator@', "is not a sip:, sips: or tel: URI", "tel:+")


def test_choice_without_options(tmp_path: Path) -> None:
    text = VALID.replace("slot_type: name", "slot_type: choice")
    _one(tmp_path, text, "choice", "a 'choice' question needs 'options'", "add options:")


def test_digits_on_non_digit_slot(tmp_path: Path) -> None:
    text = VALID.replace("    slot_type: name\n", "    slot_type: name\n    digits: 4\n")
    _one(tmp_path, text, "digits: 4", "'digits' applies only to slot_type digits", None)


def test_placeholder_names_uncollected_slot(tmp_path: Path) -> None:
    text = VALID.replace('text: "Hello."', 'text: "Hello {frist_name}."')
    error = _one(tmp_path, text, "{frist_name}", "placeholder {frist_name}", "did you mean 'first_name'?")
    assert "never collected" in error.message


def test_a_read_back_may_name_the_value_it_reads_back(tmp_path: Path) -> None:
    read_back = '    prompt: "What is your first name?"\n    confirm_prompt: "I have {value}, right?"\n'
    text = VALID.replace('    prompt: "What is your first name?"\n', read_back)
    assert validate_file(_write(tmp_path, text)) == []
    elsewhere = text.replace('message: "Goodbye."', 'message: "Goodbye {value}."')
    _one(tmp_path, elsewhere, "{value}", "placeholder {value} names a slot that is never", None, nth=1)


def test_placeholder_in_multiline_text_points_at_the_value(tmp_path: Path) -> None:
    text = VALID.replace('text: "Hello."', "text: >-\n      Hello\n      {caller}.")
    _one(tmp_path, text, ">-", "placeholder {caller}", "collected slots are: claim_id, first_name")


def test_malformed_placeholder(tmp_path: Path) -> None:
    text = VALID.replace('message: "Goodbye."', 'message: "Goodbye {first_name."')
    _one(tmp_path, text, '"Goodbye {', "bad placeholder", None)


def test_global_intent_undefined(tmp_path: Path) -> None:
    text = VALID.replace("  repeat: {action: repeat}", "  repeat: {action: repeat}\n  goodbye: {goto: bye}")
    error = _one(tmp_path, text, "goodbye:", "global intent 'goodbye' is not defined", "under 'intents'")
    assert "operator, repeat" in (error.hint or "")


def test_ask_intent_undefined(tmp_path: Path) -> None:
    text = VALID.replace("    slot_type: name\n", "    slot_type: name\n    intents: [repeat, operatr]\n")
    _one(tmp_path, text, "operatr", "intent 'operatr' is not defined", "did you mean 'operator'?")


def test_all_errors_reported_in_file_order(tmp_path: Path) -> None:
    text = (
        VALID.replace("{goto: handover}", "{goto: nowhere}")
        .replace("url: http://", "url: gopher://")
        .replace('to: "sip:', 'to: "mailto:')
    )
    errors = _errors(tmp_path, text)
    assert [e.line for e in errors] == sorted(e.line for e in errors)
    assert len(errors) == 3


# --- the CLI -----------------------------------------------------------------------------------------

LINE = re.compile(
    r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>.+?)(?: \(hint: (?P<hint>.+)\))?$"
)


def test_cli_validate_ok() -> None:
    result = CliRunner().invoke(main, ["validate", *map(str, EXAMPLES)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"{p}: ok" for p in EXAMPLES]


def test_cli_validate_errors(tmp_path: Path) -> None:
    good = _write(tmp_path, VALID, "good.yaml")
    bad = _write(
        tmp_path,
        VALID.replace("type: say", "type: sya").replace("slot_type: name", "slot_type: x"),
        "bad.yaml",
    )
    result = CliRunner().invoke(main, ["validate", str(good), str(bad)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == f"{good}: ok"
    parsed = [LINE.match(line) for line in lines[1:]]
    assert all(parsed), lines
    assert [(m["file"], int(m["line"]), int(m["col"])) for m in parsed if m] == [
        (str(bad), 10, 11),
        (str(bad), 15, 16),
    ]
    first = parsed[0]
    assert first is not None
    assert first["msg"] == "unknown step type 'sya'"
    assert "did you mean 'say'?" in first["hint"]


def test_cli_validate_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "cannot read file" in result.output


def test_cli_validate_needs_a_file() -> None:
    assert CliRunner().invoke(main, ["validate"]).exit_code == 2


def test_cli_schema_is_a_json_schema_the_examples_satisfy(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    assert schema["title"] == "Agent"
    assert {"name", "steps"} <= set(schema["required"])
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in EXAMPLES:
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert errors == [], (path, errors)
    bad = yaml.safe_load(VALID.replace("type: say", "type: sya"))
    assert list(validator.iter_errors(bad))


def test_cli_schema_out(tmp_path: Path) -> None:
    out = tmp_path / "agent.schema.json"
    result = CliRunner().invoke(main, ["schema", "--out", str(out)])
    assert result.exit_code == 0, result.output
    schema = json.loads(out.read_text())
    assert set(schema["$defs"]) >= {
        "SayStep",
        "AskStep",
        "BranchStep",
        "WebhookStep",
        "TransferStep",
        "HangupStep",
    }
    slot_kinds = schema["$defs"]["SlotKind"]["enum"]
    assert len(slot_kinds) == 12


# --- issue 13: the validation fixes, one test each --------------------------------------------------


def test_top_level_step_type_key_is_named(tmp_path: Path) -> None:
    text = VALID + "webhook: {url: 'http://127.0.0.1:8080/x'}\n"
    _one(tmp_path, text, "webhook:", "unknown field 'webhook'", "webhook is a step type")


def test_say_inside_an_ask_is_named(tmp_path: Path) -> None:
    text = VALID.replace('    prompt: "What is your first name?"\n', '    prompt: "Name?"\n    say: "Hi."\n')
    _one(tmp_path, text, "say:", "unknown field 'say'", "say is a step type")


def test_unclosed_quote_is_reported_where_it_opened(tmp_path: Path) -> None:
    text = VALID.replace('text: "Hello."', 'text: "Hello.')
    _one(tmp_path, text, '"Hello.', "quoted text runs on to the next lines", "closing quote")


def test_unclosed_quote_at_the_end_is_reported_where_it_opened(tmp_path: Path) -> None:
    text = VALID.replace('to: "sip:operator@127.0.0.1:5070"', 'to: "sip:operator@127.0.0.1:5070')
    _one(tmp_path, text, '"sip:operator', "this quote is never closed", "closing quote")


def test_duplicate_step_id_in_the_middle_reports_no_false_unreachable(tmp_path: Path) -> None:
    text = VALID.replace("id: submit", "id: first_name")
    errors = _errors(tmp_path, text)
    assert [e.message for e in errors] == ["duplicate step id 'first_name'"], [str(e) for e in errors]


def test_branch_on_a_value_not_among_the_options(tmp_path: Path) -> None:
    text = VALID.replace(
        "  - id: submit\n",
        "  - id: size\n    type: ask\n    slot: size\n    slot_type: choice\n    options: [small, large]\n"
        '    prompt: "Small or large?"\n  - id: route\n    type: branch\n    cases:\n'
        "      - when: {slot: size, equals: medium}\n        next: bye\n"
        "      - when: {slot: size, equals: Large}\n        next: bye\n  - id: submit\n",
    )
    _one(tmp_path, text, "medium", "slot 'size' never equals 'medium'", "the options are: small, large")


def test_branch_on_a_yes_no_slot_with_a_word(tmp_path: Path) -> None:
    text = VALID.replace(
        "  - id: submit\n",
        '  - id: ok\n    type: ask\n    slot: ok\n    slot_type: yes_no\n    prompt: "OK?"\n'
        "  - id: route\n    type: branch\n    cases:\n"
        "      - when: {slot: ok, equals: 'yes'}\n        next: bye\n  - id: submit\n",
    )
    _one(tmp_path, text, "'yes'", "yes/no slot 'ok' is true or false", "equals: true")


def test_prompt_using_a_slot_unset_on_some_path(tmp_path: Path) -> None:
    text = VALID.replace('    message: "Goodbye."', '    message: "Goodbye {first_name}."').replace(
        "  operator: {goto: handover}", "  operator: {goto: bye}"
    )
    _one(tmp_path, text, "{first_name}.", "placeholder {first_name} may be unset here", "on every path")


def test_prompt_after_a_presence_branch_is_fine(tmp_path: Path) -> None:
    text = VALID.replace('    say: "Thanks {first_name}, your claim is {claim_id}."\n', "").replace(
        '    message: "Goodbye."', '    message: "Your claim is {claim_id}."'
    )
    errors = _errors(
        tmp_path, text.replace("    on_failure: handover\n  - id: bye", "    on_failure: bye\n  - id: bye")
    )
    assert [e.message for e in errors] == [
        "placeholder {claim_id} may be unset here: some path to step 'bye' does not collect it"
    ]
    guarded = text.replace(
        "  - id: bye\n",
        "  - id: check\n    type: branch\n    cases:\n"
        "      - when: {slot: claim_id, present: true}\n        next: bye\n"
        "    default: handover\n  - id: bye\n",
    )
    assert validate_file(_write(tmp_path, guarded)) == []


def test_optional_saved_field_may_be_unset(tmp_path: Path) -> None:
    text = VALID.replace("save: {claim_id: claim_id}", "save: {claim_id: {slot: claim_id, required: false}}")
    _one(tmp_path, text, "{claim_id}", "placeholder {claim_id} may be unset here", None)


@pytest.mark.parametrize(
    ("rules", "needle", "message"),
    [
        ("{checksum: luhn}", "checksum", "a checksum applies to digits slots, not name"),
        ("{min: 3}", "min", "'min' applies to date, time, amount and digits slots, not name"),
        ("{pattern: '[a-'}", "'[a-'", "pattern is not a valid regular expression"),
        ("{min_length: 5, max_length: 2}", "5", "min_length is above max_length"),
    ],
)
def test_value_rules_are_checked(tmp_path: Path, rules: str, needle: str, message: str) -> None:
    text = VALID.replace("    slot_type: name\n", f"    slot_type: name\n    rules: {rules}\n")
    _one(tmp_path, text, needle, message, None)


@pytest.mark.parametrize(
    ("bounds", "needle", "message"),
    [
        ("{min: -16q}", "-16q", "is not a date bound"),
        ("{min: -16y, max: -120y}", "-16y", "min is above max"),
    ],
)
def test_date_bounds_are_checked(tmp_path: Path, bounds: str, needle: str, message: str) -> None:
    text = VALID.replace("    slot_type: name\n", f"    slot_type: date\n    rules: {bounds}\n")
    _one(tmp_path, text, needle, message, None)


SCENARIOS = sorted((Path(__file__).parents[2] / "examples" / "loadtest").glob("*.yaml"))


def test_cli_schema_scenario_is_a_json_schema_the_example_scenarios_satisfy() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    result = CliRunner().invoke(main, ["schema", "--scenario"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    assert schema["title"] == "Parley load-test scenario"
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in SCENARIOS:
        data = json.loads(
            json.dumps(yaml.safe_load(path.read_text()), default=str)
        )  # dates as editors see them
        errors = [e.message for e in validator.iter_errors(data)]
        assert errors == [], (path, errors)
    for name, definition in {"Scenario": schema, **schema["$defs"]}.items():
        definition = definition.get("anyOf", [definition])[0]  # short forms beside the full one
        for field, spec in definition.get("properties", {}).items():
            assert spec.get("description"), f"{name}.{field} has no description"


def test_cli_validate_recognises_scenario_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", *map(str, SCENARIOS), *map(str, EXAMPLES)])
    assert result.exit_code == 0, result.output
    assert result.output.count(": ok") == len(SCENARIOS) + len(EXAMPLES)
    plain = next(path for path in SCENARIOS if "\nagent:" not in path.read_text())  # no agent file beside it
    text = plain.read_text().replace("wait_prompt", "wait_promt", 1)
    bad = _write(tmp_path, text, "scenario.yaml")
    result = CliRunner().invoke(main, ["validate", str(bad)])
    assert result.exit_code == 1
    line, column = _pos(text, "wait_promt")
    assert result.output.startswith(f"{bad}:{line}:{column}: error: unknown step 'wait_promt'"), result.output
    assert "did you mean 'wait_prompt'?" in result.output


def test_the_acknowledgement_takes_no_placeholder(tmp_path: Path) -> None:
    text = VALID + 'settings: {acknowledgement: "Thanks {name}."}\n'
    (error,) = _errors(tmp_path, text)
    assert "acknowledgement is said before the answer is known" in error.message, error
    accepted = VALID + 'settings: {acknowledgement: "Okay.", acknowledge_after_ms: 0}\n'
    settings = load_agent(_write(tmp_path, accepted)).settings
    assert (settings.acknowledgement, settings.acknowledge_after_ms) == ("Okay.", 0)
