"""Load agent files: YAML with positions, pydantic validation, errors located by line and column.

Values may use ``${VAR}`` (or ``${VAR:-default}``) to take text from the environment, e.g. a webhook's
URL or an ``Authorization`` header's secret; ``$${`` writes a literal ``${``. A variable that is unset
(and has no default) is an error naming it, at the value that uses it.

Every problem — a YAML syntax error, a duplicate key, a structural error from the pydantic models or a
semantic one from :meth:`parley.agent.model.Agent.problems` — becomes an :class:`AgentError` pointing at
the offending key or value, with a hint where one helps (``did you mean 'handover'?``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from parley.agent.model import (
    IDENTIFIER,
    STEP_TYPES,
    TTS_ENGINES,
    Access,
    Agent,
    AskStep,
    BranchCase,
    BranchStep,
    Condition,
    ConfirmPolicy,
    GlobalIntentAction,
    HangupStep,
    Loc,
    SayStep,
    Settings,
    SlotKind,
    TransferStep,
    Voice,
    WebhookStep,
    did_you_mean,
)

_STEP_MODELS: dict[str, type[BaseModel]] = {
    "say": SayStep,
    "ask": AskStep,
    "branch": BranchStep,
    "webhook": WebhookStep,
    "transfer": TransferStep,
    "hangup": HangupStep,
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "slot_type": tuple(k.value for k in SlotKind),
    "confirm": tuple(c.value for c in ConfirmPolicy),
    "engine": TTS_ENGINES,
    "method": ("POST", "PUT"),
    "action": ("repeat", "hangup"),
    "type": STEP_TYPES,
}
_IDENTIFIER_FIELDS = {"id", "slot", "next", "on_failure", "default", "goto", "start", "intent"}


@dataclass(frozen=True, slots=True)
class AgentError:
    """One problem in an agent file; ``line`` and ``column`` are 1-based."""

    file: str
    line: int
    column: int
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"{self.file}:{self.line}:{self.column}: error: {self.message}{hint}"


class AgentFileError(Exception):
    """An agent file that cannot be loaded; ``errors`` lists every problem found."""

    def __init__(self, file: str, errors: list[AgentError]) -> None:
        self.file = file
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


def read_source(path: Path, error: type[AgentFileError]) -> str:
    """The text of an agent or scenario file; ``error`` (with a located message) if it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(str(path), [AgentError(str(path), 1, 1, f"cannot read file: {exc}")]) from exc


def load_agent(path: str | Path) -> Agent:
    """Load and validate an agent file (raises :class:`AgentFileError`)."""
    path = Path(path)
    return load_agent_text(read_source(path, AgentFileError), str(path))


def validate_file(path: str | Path) -> list[AgentError]:
    """Every problem in an agent file (empty when it is valid)."""
    try:
        load_agent(path)
    except AgentFileError as exc:
        return exc.errors
    return []


ENV_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(root: yaml.Node, file: str, environ: Mapping[str, str] | None = None) -> list[AgentError]:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every scalar value under ``root`` (keys are left
    alone) from ``environ`` (default ``os.environ``); an error for each unset variable."""
    env = os.environ if environ is None else environ
    errors: list[AgentError] = []

    def replace(node: yaml.ScalarNode) -> None:
        def one(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            errors.append(
                _at_node(
                    file,
                    node,
                    f"environment variable {name} is not set",
                    f"export {name}=... before running, or write ${{{name}:-default}}",
                )
            )
            return ""

        node.value = ENV_REFERENCE.sub(one, node.value)

    def walk(node: yaml.Node) -> None:
        if isinstance(node, yaml.ScalarNode):
            if "$" in node.value:
                replace(node)
        elif isinstance(node, yaml.MappingNode):
            for _, value in node.value:
                walk(value)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item)

    walk(root)
    return errors


def read_yaml_mapping(
    text: str, file: str, error: type[AgentFileError], *, kind: str, examples: str, first_line: str
) -> tuple[yaml.Node, dict[str, Any], list[AgentError]]:
    """Parse one YAML mapping keeping its nodes (for line/column errors): the root node, the data
    and the duplicate keys found. Raises ``error`` for an empty file, invalid YAML or a non-mapping."""
    try:
        loader = yaml.SafeLoader(text)  # its reader checks every character first
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        message = f"invalid YAML: character #x{exc.character:04x} is not allowed"
        raise error(file, [AgentError(file, line, column, message, "remove control characters")]) from exc
    try:
        root = loader.get_single_node()
        if root is None:
            raise error(file, [AgentError(file, 1, 1, "the file is empty", f"see {examples}")])
        errors = [_at_node(file, k, f"duplicate key {k.value!r}", "remove one of them") for k in _dupes(root)]
        errors += substitute_env(root, file)
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        raise error(file, [_yaml_error(file, text, exc)]) from exc
    except yaml.YAMLError as exc:
        raise error(file, [AgentError(file, 1, 1, f"invalid YAML: {exc}")]) from exc
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        errors.append(_at_node(file, root, f"{kind} must be a mapping", f"start with '{first_line}'"))
        raise error(file, errors)
    return root, data, errors


def _yaml_error(file: str, text: str, exc: yaml.MarkedYAMLError) -> AgentError:
    """A YAML syntax error, located where the fault most likely is: an unclosed quote where it
    opened (the parser only gives up lines later), else where the parser gave up."""
    if exc.context == "while scanning a quoted scalar" and exc.context_mark is not None:
        mark = exc.context_mark
        return AgentError(
            file,
            mark.line + 1,
            mark.column + 1,
            "invalid YAML: this quote is never closed",
            "add the closing quote",
        )
    problem = exc.problem_mark
    opened = _runaway_quote(text, problem.index if problem is not None else len(text))
    if opened is not None:
        return AgentError(
            file,
            opened.line + 1,
            opened.column + 1,
            "invalid YAML: this quoted text runs on to the next lines (unclosed quote?)",
            f"add the closing quote; the parser gave up at line {problem.line + 1 if problem else '?'}",
        )
    mark = problem or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    return AgentError(
        file, line, col, f"invalid YAML: {exc.problem or exc.context}", "check indentation and quoting"
    )


def _runaway_quote(text: str, before: int) -> yaml.Mark | None:
    """The start of the last quoted scalar before ``before`` that swallowed the start of a later line
    ending in ``key:`` or ``- `` (the mark of an unclosed quote; legal multi-line strings rarely do)."""
    found: yaml.Mark | None = None
    try:
        for token in yaml.scan(text):
            if token.start_mark.index >= before:
                break
            if isinstance(token, yaml.ScalarToken) and token.style in ('"', "'"):
                inside = text[token.start_mark.index : token.end_mark.index]
                if re.search(r"\n\s*(?:- |[A-Za-z_][\w-]*:\s)", inside):
                    found = token.start_mark
    except yaml.YAMLError:
        pass
    return found


def load_agent_text(text: str, file: str = "<agent>") -> Agent:
    """Load and validate an agent from YAML text; ``file`` names it in errors."""
    root, data, errors = read_yaml_mapping(
        text,
        file,
        AgentFileError,
        kind="an agent file",
        examples="examples/*.yaml",
        first_line="name: my-agent",
    )
    try:
        agent = Agent.model_validate(data, context={"semantic": False})
    except ValidationError as exc:
        errors.extend(_merge_unions([_pydantic_error(file, root, err) for err in exc.errors()]))
        raise AgentFileError(file, _sorted(errors)) from None
    lines = text.splitlines()
    for p in agent.problems():
        key, value = _resolve(root, p.loc)
        error = _at_node(file, key if p.key and key is not None else value, p.message, p.hint)
        errors.append(_inside(error, value, p.fragment, lines) if p.fragment else error)
    if errors:
        raise AgentFileError(file, _sorted(errors))
    return agent


def _sorted(errors: list[AgentError]) -> list[AgentError]:
    return sorted(dict.fromkeys(errors), key=lambda e: (e.line, e.column))


def _at_node(file: str, node: yaml.Node, message: str, hint: str | None = None) -> AgentError:
    return AgentError(file, node.start_mark.line + 1, node.start_mark.column + 1, message, hint)


def _inside(error: AgentError, node: yaml.Node, fragment: str, lines: list[str]) -> AgentError:
    """Move ``error`` onto ``fragment`` when it appears in the one-line source text of ``node``."""
    start, end = node.start_mark, node.end_mark
    if start.line != end.line or start.line >= len(lines):
        return error
    col = lines[start.line].find(fragment, start.column, end.column)
    if col < 0:
        return error
    return AgentError(error.file, error.line, col + 1, error.message, error.hint)


def _dupes(node: yaml.Node) -> list[yaml.Node]:
    out: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value != "<<":
                if k.value in seen:
                    out.append(k)
                seen.add(k.value)
            out.extend(_dupes(v))
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            out.extend(_dupes(v))
    return out


def _resolve(root: yaml.Node, loc: Loc) -> tuple[yaml.Node | None, yaml.Node]:
    """The (key node, value node) ``loc`` points at; stops at the deepest node that exists."""
    key: yaml.Node | None = None
    node = root
    for part in loc:
        if part == "[key]":
            return key, key or node
        if isinstance(node, yaml.MappingNode):
            found = next(
                ((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)),
                None,
            )
            if found is not None:
                key, node = found
            # otherwise: a union tag or a missing key; stay at this mapping
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            key, node = None, node.value[part]
    return key, node


_TYPE_HINTS: dict[tuple[str, str], str] = {
    ("GlobalIntentAction", "model_type"): "write {goto: step_id} or {action: repeat} / {action: hangup}",
}


def _where(loc: Loc) -> str:
    """A readable path for a loc: ``steps[2].cases[0].next`` (union member tags left out)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _STEP_MODELS or part in ("str", "int", "float", "bool", "[key]") or "[" in part:
            continue
        else:
            out += f".{part}" if out else part
    return out


def _merge_unions(errors: list[AgentError]) -> list[AgentError]:
    """One error for a value that matches none of a union's types (pydantic reports one per type)."""
    prefix = "should be a valid "
    out: list[AgentError] = []
    for e in errors:
        last = out[-1] if out else None
        if (
            last is not None
            and (last.line, last.column) == (e.line, e.column)
            and prefix in last.message
            and prefix in e.message
        ):
            head, _, kinds = last.message.rpartition(prefix)
            kind = e.message.rpartition(prefix)[2]
            out[-1] = AgentError(e.file, e.line, e.column, f"{head}{prefix}{kinds} or {kind}", last.hint)
        else:
            out.append(e)
    return out


def _model_for(loc: Loc) -> type[BaseModel]:
    """The model whose fields the mapping at ``loc`` holds (for unknown-field hints)."""
    if not loc:
        return Agent
    if loc[0] == "voice":
        return Voice
    if loc[0] == "access":
        return Access
    if loc[0] == "settings":
        return Settings
    if loc[0] == "global_intents":
        return GlobalIntentAction
    if loc[0] == "steps":
        if "when" in loc:
            return Condition
        if "cases" in loc:
            return BranchCase
        if len(loc) > 2 and isinstance(loc[2], str) and loc[2] in _STEP_MODELS:
            return _STEP_MODELS[loc[2]]
    return Agent


def _untagged(loc: Loc) -> Loc:
    """``loc`` without the step union's tag (``steps, 2, 'ask', 'say'`` → ``steps, 2, 'say'``): only
    that position holds a tag, so a field named like a step type (``webhook``, ``say``) stays."""
    if len(loc) > 2 and loc[0] == "steps" and isinstance(loc[2], str) and loc[2] in _STEP_MODELS:
        return (*loc[:2], *loc[3:])
    return loc


def _pydantic_error(file: str, root: yaml.Node, err: ErrorDetails) -> AgentError:
    loc: Loc = tuple(err["loc"])
    kind: str = err["type"]
    field = next((p for p in reversed(_untagged(loc)) if isinstance(p, str) and p != "[key]"), "")
    message: str = err["msg"].removeprefix("Value error, ")
    hint: str | None = None
    key_wanted = False
    value = err.get("input")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        loc = (*loc, "type")
        if kind == "union_tag_invalid":
            tag = str(err.get("ctx", {}).get("tag", value))
            message = f"unknown step type {tag!r}"
            close = did_you_mean(tag, STEP_TYPES)
            types = ", ".join(STEP_TYPES)
            hint = (
                f"{close} (step types: {types})"
                if close and close.startswith("did")
                else f"step types: {types}"
            )
        else:
            message = "step has no 'type'"
            hint = "add type: one of " + ", ".join(STEP_TYPES)
    elif kind == "missing":
        message = f"missing required field {field!r}"
        if field in _CHOICES:
            hint = f"add {field}: one of " + ", ".join(_CHOICES[field])
        elif field == "name":
            hint = "add name: a slug such as my-agent"
        elif field == "steps":
            hint = "add steps: a list of say/ask/branch/webhook/transfer/hangup steps"
        else:
            hint = f"add {field}: ..."
    elif kind == "extra_forbidden":
        key_wanted = True
        model = _model_for(loc[:-1])
        message = f"unknown field {field!r}"
        hint = did_you_mean(str(field), list(model.model_fields), "allowed fields")
        if field in _STEP_MODELS and not (hint or "").startswith("did"):
            hint = f"{field} is a step type: write it as a step of its own under 'steps' (type: {field})"
    elif kind in ("enum", "literal_error") and field in _CHOICES:
        message = f"{value!r} is not a valid {field}"
        close = did_you_mean(str(value), _CHOICES[field])
        allowed = ", ".join(_CHOICES[field])
        hint = f"{close} (one of: {allowed})" if close and close.startswith("did") else f"one of: {allowed}"
    elif kind == "string_pattern_mismatch":
        text = str(value)
        if loc[0] == "access":
            message = f"{text!r} is not a number pattern"
            hint = "1 to 64 of: letters, digits, + # . _ - and the wildcards * ? [ ] !, e.g. '+4420*'"
        elif field == "name" and len(loc) == 1:
            message = f"name {text!r} is not a slug"
            slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
            hint = f"use lowercase letters, digits and dashes, e.g. {slug!r}"
        else:
            what = field if field in _IDENTIFIER_FIELDS else "name"
            message = f"{what} {text!r} is not an identifier"
            ident = re.sub(r"\W+", "_", text).strip("_") or "x"
            if not re.match(IDENTIFIER, ident):
                ident = "_" + ident
            hint = f"use letters, digits and underscores, e.g. {ident!r}"
            key_wanted = "[key]" in loc
    elif kind == "too_short" and field == "steps":
        message = "the agent has no steps"
        hint = "add at least one step, e.g. {id: bye, type: hangup}"
    else:
        where = _where(loc)
        message = f"{where}: {message[:1].lower()}{message[1:]}" if where else message
        hint = _TYPE_HINTS.get((_model_for(loc).__name__, kind))
        if kind == "list_type":
            hint = "a list of steps, each starting '- id: ...'" if loc == ("steps",) else "a list: [a, b]"
        if kind == "model_attributes_type" and len(loc) == 2 and loc[0] == "steps":
            hint = "each step is a mapping such as {id: bye, type: hangup}"
    key, node = _resolve(root, loc)
    target = key if key_wanted and key is not None else node
    if kind in ("missing", "union_tag_not_found") and isinstance(node, yaml.ScalarNode):
        target = node
    return _at_node(file, target, message, hint)
