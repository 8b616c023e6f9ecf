"""Every example in docs/ is run: YAML blocks validate (agents and load-test scenarios), files named in
them match the repository's, `parley chat` sessions are replayed and must say what the page shows,
and the field tables of docs/agents.md list every field of the models with its real default."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from agent.http_backend import serve_http
from parley.agent import model
from parley.agent.loader import load_agent_text
from parley.cli import main
from parley.loadtest.scenario import load_scenario_text

ROOT = Path(__file__).resolve().parents[2]
# the agent pages; other pages (cluster, scaling, studio) are tested beside their own features
DOCS = [ROOT / "docs" / name for name in ("agents.md", "webhooks.md", "loadtest.md")]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    text: str

    @property
    def name(self) -> str | None:
        first = self.text.splitlines()[0] if self.text else ""
        return first.removeprefix("# file:").strip() if first.startswith("# file:") else None

    def __str__(self) -> str:
        return f"{self.page.name}:{self.line}"


def blocks(lang: str | None = None) -> list[Block]:
    out = []
    for page in DOCS:
        text = page.read_text()
        for match in FENCE.finditer(text):
            if lang is None or match.group(1) == lang:
                line = text.count("\n", 0, match.start()) + 1
                out.append(Block(page, line, match.group(1), match.group(2)))
    return out


def is_scenario(text: str) -> bool:
    return re.search(r"^scripts:", text, re.MULTILINE) is not None


def test_the_docs_exist() -> None:
    assert all(page.is_file() for page in DOCS)


@pytest.mark.parametrize("block", blocks("yaml"), ids=str)
def test_every_yaml_example_validates(block: Block) -> None:
    if is_scenario(block.text):
        load_scenario_text(block.text, str(block))
    else:
        load_agent_text(block.text, str(block))
    if block.name and (ROOT / block.name).exists():  # shown as a repository file: the same text
        shown = block.text.split("\n", 1)[1]  # without the "# file:" line
        assert shown == (ROOT / block.name).read_text(), f"{block} differs from {block.name}"


@pytest.mark.parametrize("block", [b for b in blocks("json") if b.text.startswith("{")], ids=str)
def test_every_json_example_parses(block: Block) -> None:
    json.loads(block.text)


def chat_sessions() -> list[Block]:
    return [b for b in blocks("text") if b.text.startswith("$ parley chat ")]


@pytest.mark.parametrize("block", chat_sessions(), ids=str)
def test_every_chat_session_says_what_the_page_shows(block: Block, tmp_path: Path) -> None:
    files = {b.name: b.text for b in blocks("yaml") if b.name and b.page == block.page}
    lines = block.text.splitlines()
    args = lines[0].removeprefix("$ parley chat ").split()
    if args[0] in files and not (ROOT / args[0]).exists():
        (tmp_path / args[0]).write_text(files[args[0]])
        args[0] = str(tmp_path / args[0])
    else:
        args[0] = str(ROOT / args[0])
    if "--today" not in args:
        args += ["--today", "2025-06-01"]
    said = [line.removeprefix("you> ") for line in lines[1:] if line.startswith("you> ")]
    result = CliRunner().invoke(main, ["chat", *args], input="\n".join(said) + "\n")
    assert result.exit_code == 0, result.output
    heard = [line.split("agent> ", 1)[1] for line in result.output.splitlines() if "agent> " in line]
    expected = [line.removeprefix("agent> ") for line in lines[1:] if line.startswith("agent> ")]
    position = 0
    for text in expected:  # in order; the page may leave lines out
        assert text in heard[position:], (
            f"{block}: {text!r} not said (in order); the agent said:\n" + "\n".join(heard)
        )
        position = heard.index(text, position) + 1


MODELS: dict[str, type[BaseModel]] = {
    cls.__name__: cls
    for cls in (
        model.Agent,
        model.Voice,
        model.Access,
        model.Settings,
        model.GlobalIntentAction,
        model.SayStep,
        model.AskStep,
        model.ValueRules,
        model.BranchStep,
        model.BranchCase,
        model.Condition,
        model.WebhookStep,
        model.SavedField,
        model.TransferStep,
        model.HangupStep,
    )
}


def default_text(field: object) -> str:
    info = field  # a pydantic FieldInfo
    if info.is_required():  # type: ignore[attr-defined]
        return "required"
    if info.default_factory is not None:  # type: ignore[attr-defined]
        value = info.default_factory()  # type: ignore[attr-defined]
        return "(defaults below)" if isinstance(value, BaseModel) else f"`{json.dumps(value)}`"
    value = info.default  # type: ignore[attr-defined]
    return f"`{json.dumps(getattr(value, 'value', value))}`"


def test_agents_md_lists_every_field_with_its_default() -> None:
    text = (ROOT / "docs" / "agents.md").read_text()
    reference = text.split("## Field reference", 1)[1]
    sections = dict(re.findall(r"^### (\w+)\n(.*?)(?=^### |^## |\Z)", reference, re.MULTILINE | re.DOTALL))
    assert set(sections) == set(MODELS), set(sections) ^ set(MODELS)
    for name, cls in MODELS.items():
        rows = dict(re.findall(r"^\| `(\w+)` \| (.*?) \|", sections[name], re.MULTILINE))
        assert list(rows) == list(cls.model_fields), (name, list(rows))
        for field, info in cls.model_fields.items():
            assert rows[field] == default_text(info), (name, field, rows[field], default_text(info))


def test_every_schema_field_has_a_description() -> None:
    result = CliRunner().invoke(main, ["schema"])
    schema = json.loads(result.output)
    missing = []
    for name, definition in {"Agent": schema, **schema.get("$defs", {})}.items():
        for field, spec in definition.get("properties", {}).items():
            if not spec.get("description"):
                missing.append(f"{name}.{field}")
    assert not missing, missing


# --- docs/webhooks.md ----------------------------------------------------------------------------------


def webhooks_page() -> str:
    return (ROOT / "docs" / "webhooks.md").read_text()


def format_rows() -> list[tuple[str, str, object]]:
    table = webhooks_page().split("| slot type | the caller says | JSON value |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| (\w+) \| (.+?) \| `(.+?)`", table, re.MULTILINE)
    return [(kind, said, json.loads(value)) for kind, said, value in rows]


@pytest.mark.parametrize(("kind", "said", "value"), format_rows(), ids=lambda x: str(x)[:20])
def test_value_formats_are_what_the_readers_send(kind: str, said: str, value: object) -> None:
    from datetime import date

    from parley.agent.records import jsonable
    from parley.agent.runtime import ParleyUnderstanding
    from parley.speech.types import Question

    agent = load_agent_text("name: formats\nsteps: [{id: bye, type: hangup}]")
    options = ("margherita", "pepperoni", "vegetarian", "hawaiian") if kind == "choice" else ()
    question = Question(slot_type=model.speech_slot_type(kind), prompt="", options=options)
    reading = (
        ParleyUnderstanding(agent)
        .turn(question, model.SlotKind(kind), today=date(2025, 6, 1))
        .final(said, 1.0)
    )
    assert reading is not None and jsonable(reading.value) == value


def test_every_slot_type_but_address_is_in_the_format_table() -> None:
    assert {kind for kind, _, _ in format_rows()} == {k.value for k in model.SlotKind} - {"address"}


def recording(body: bytes, got: list[tuple[dict[str, str], object]]) -> type[BaseHTTPRequestHandler]:
    """A handler answering ``body`` to every POST and recording (headers, JSON) in ``got``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            got.append((dict(self.headers), json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def test_the_demo_webhook_request_and_response(tmp_path: Path) -> None:
    page = webhooks_page()
    demo = next(b for b in blocks("yaml") if b.name == "webhook_demo.yaml").text
    request = json.loads(next(b.text for b in blocks("json") if '"call_id"' in b.text))
    response = next(b.text for b in blocks("json") if '"reference"' in b.text)
    got: list[tuple[dict[str, str], object]] = []
    (tmp_path / "demo.yaml").write_text(demo)
    with serve_http(recording(response.encode(), got)) as url:
        result = CliRunner().invoke(
            main,
            ["chat", str(tmp_path / "demo.yaml")],
            input="/dtmf 42712345\n",
            env={"CARDS_BACKEND": url, "CARDS_TOKEN": "t0ken-xyz"},
        )
    assert "Your card ending 4 3 2 1 is blocked. Your reference is B7431." in result.output, result.output
    assert "Your card ending 4 3 2 1 is blocked. Your reference is B7431." in page
    ((headers, body),) = got
    assert headers["Authorization"] == "Bearer t0ken-xyz" and "t0ken-xyz" not in result.output
    assert re.fullmatch(r"[0-9a-f-]{36}", headers["Idempotency-Key"])
    assert headers["Content-Type"] == "application/json"
    assert (
        set(body) == set(request) and body["slots"] == request["slots"] and body["agent"] == request["agent"]
    )


async def test_the_backend_example_places_an_order_once_per_key() -> None:
    from parley.agent.runtime import CallWebhook
    from parley.agent.webhook import perform_webhook

    code = next(b.text for b in blocks("python") if b.name == "orders_backend.py")
    namespace: dict[str, object] = {"__name__": "orders_backend"}
    exec(compile(code, "orders_backend.py", "exec"), namespace)
    payload = {"call_id": "c1", "agent": "pizza-order", "slots": {"pizza": "pepperoni"}}
    with serve_http(namespace["Orders"]) as base:  # type: ignore[arg-type]
        url = base + "/orders"
        first = await perform_webhook(CallWebhook(url, "POST", payload, 2.0, 0, "order", "key-1", True))
        again = await perform_webhook(CallWebhook(url, "POST", payload, 2.0, 0, "order", "key-1", True))
        other = await perform_webhook(CallWebhook(url, "POST", payload, 2.0, 0, "order", "key-2", True))
    assert first.body == again.body == {"order_id": "T0001", "minutes": 30}
    assert other.body == {"order_id": "T0002", "minutes": 30}
    assert namespace["orders"] == [{"pizza": "pepperoni"}, {"pizza": "pepperoni"}]


# --- docs/loadtest.md ----------------------------------------------------------------------------------


def test_the_filters_do_what_the_table_says() -> None:
    from parley.loadtest.scenario import FILTERS, render_template

    page = (ROOT / "docs" / "loadtest.md").read_text()
    table = page.split("| filter | value | becomes |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| `([^`]+)` \| `([^`]+)`", table, re.MULTILINE)
    assert {name for name, _, _ in rows} == set(FILTERS)
    for name, value, result in rows:
        assert render_template(f"{{v|{name}}}", {"v": value}) == result


def test_the_scenario_top_level_table_lists_every_field_with_its_default() -> None:
    from parley.loadtest.scenario import Scenario

    page = (ROOT / "docs" / "loadtest.md").read_text()
    table = page.split("| field | default | meaning |", 1)[1].split("\n\n", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.*?) \|", table, re.MULTILINE))
    assert list(rows) == list(Scenario.model_fields)
    for name, info in Scenario.model_fields.items():
        if info.is_required():
            assert rows[name] == "required", name
        elif info.default_factory is None and not isinstance(info.default, BaseModel | None):
            assert rows[name] == f"`{json.dumps(info.default)}`", name
