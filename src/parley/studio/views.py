"""A stored call as people read it: caller data masked or revealed, and its turns as a timeline.

Masking replaces each piece of caller data by the name of the slot it belongs to, so a viewer reads
"my account number is ‹account_number›": a slot's value is looked for in the text (digits also when
spoken apart, "1 2 3"); a prompt rendered with slot values is shown as its template from the agent
file (``{account_number}`` → ``‹account_number›``); text that cannot be attributed is replaced whole
by the slot of the step it was said at (never shown in clear). The values are opened on the server
only to find them; a masked page carries no caller data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from parley.agent.sealing import Keyring, is_sealed


def _value_pattern(value: Any) -> re.Pattern[str] | None:
    text = str(value).strip()
    if not text or isinstance(value, bool):
        return None
    if text.replace(" ", "").isdigit():  # digits, also when spoken apart or grouped
        return re.compile(r"\W*".join(re.escape(c) for c in text if not c.isspace()))
    return re.compile(re.escape(text), re.IGNORECASE)


@dataclass
class Masker:
    """Masks one call's caller data: ``values`` are its slot values, ``templates`` each step's prompts."""

    values: dict[str, Any]
    step_slots: dict[str, str]
    templates: dict[str, list[str]] = field(default_factory=dict)

    def text(self, text: str, step: str | None) -> str:
        out = text
        for name, value in self.values.items():
            pattern = _value_pattern(value)
            if pattern is not None:
                out = pattern.sub(f"‹{name}›", out)
        if out != text:
            return out
        return f"‹{self.step_slots.get(step or '', 'caller data')}›"

    def prompt(self, text: str, step: str | None) -> str:
        for template in self.templates.get(step or "", []):
            pattern = "^" + re.sub(r"\\\{\w+\\\}", "(.+?)", re.escape(template.strip())) + "$"
            if re.match(pattern, text.strip(), re.DOTALL):
                return re.sub(r"\{(\w+)\}", r"‹\1›", template.strip())
        return self.text(text, step)


def step_templates(agent_yaml: str | None) -> dict[str, list[str]]:
    """Every step's prompt templates that take slot values, from the agent file's YAML."""
    if not agent_yaml:
        return {}
    try:
        data = yaml.safe_load(agent_yaml)
    except yaml.YAMLError:
        return {}
    out: dict[str, list[str]] = {}
    for step in (data or {}).get("steps") or []:
        if not isinstance(step, dict):
            continue
        texts: list[str] = []
        for key in ("text", "prompt", "confirm_prompt", "no_input_prompt", "message"):
            if isinstance(step.get(key), str):
                texts.append(step[key])
        texts += [t for t in step.get("reprompts") or [] if isinstance(t, str)]
        out[str(step.get("id"))] = [" ".join(t.split()) for t in texts if "{" in t]
    return out


def present(
    record: dict[str, Any],
    keyring: Keyring,
    *,
    reveal: bool,
    step_slots: dict[str, str],
    agent_yaml: str | None = None,
) -> dict[str, Any]:
    """The record with every sealed value opened (``reveal``) or masked: plain values either way."""
    opened = keyring.unseal(record)
    if reveal:
        return _plain(opened, lambda value, _where: value)
    values = {name: _value(env) for name, env in (opened.get("slots") or {}).items()}
    masker = Masker(values, step_slots, step_templates(agent_yaml))

    def mask(value: Any, where: tuple[str, str | None]) -> Any:
        kind, step = where
        if kind == "slot":
            return f"‹{step}›"
        if kind == "prompt" and isinstance(value, str):
            return masker.prompt(value, step)
        if isinstance(value, str):
            return masker.text(value, step)
        return f"‹{step_slots.get(step or '', 'caller data')}›"

    return _plain(opened, mask)


def _value(envelope: Any) -> Any:
    return envelope.get("value") if isinstance(envelope, dict) else envelope


def _plain(record: dict[str, Any], show: Any) -> dict[str, Any]:
    """``record`` with each envelope replaced by ``show(value, (kind, step))``."""

    def walk(node: Any, where: tuple[str, str | None]) -> Any:
        if isinstance(node, dict):
            if node.get("sensitive") is True:
                if is_sealed(node) or "value" not in node:
                    return "‹sealed›"
                return show(node["value"], where)
            return {k: walk(v, where) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, where) for v in node]
        return node

    out = dict(record)
    out["prompts"] = [walk(p, ("prompt", p.get("step"))) for p in record.get("prompts") or []]
    out["turns"] = [walk(t, ("turn", t.get("step"))) for t in record.get("turns") or []]
    out["slots"] = {name: walk(env, ("slot", name)) for name, env in (record.get("slots") or {}).items()}
    rest = {k: v for k, v in record.items() if k not in ("prompts", "turns", "slots")}
    out.update({k: walk(v, ("other", None)) for k, v in rest.items()})
    return out


def timeline(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The call's turns in order, each with the prompts played since the turn before it, the
    hypotheses (the arbiter's choice marked), NLU, its listening time and its reply's timing bars."""
    prompts = sorted(record.get("prompts") or [], key=lambda p: p.get("t") or 0.0)
    out = []
    previous_end = -1.0
    for index, turn in enumerate(record.get("turns") or []):
        start = turn.get("t_listen") or 0.0
        said = [p for p in prompts if previous_end < (p.get("t") or 0.0) <= start]
        end = turn.get("t_end")
        out.append(
            {
                "index": index,
                "turn": turn,
                "prompts": said,
                "listened_s": None if end is None else round(end - start, 2),
                "bars": reply_bars(turn.get("timing") or {}),
                "closed_early": turn.get("t_early_close") is not None,
            }
        )
        previous_end = start if end is None else end
    return out


def reply_bars(timing: dict[str, Any]) -> list[dict[str, Any]]:
    """A turn's reply as phases on one axis from the moment the caller stopped (end of speech, or the
    last key), in ms: the endpointer closing the turn, the recognisers' final ("ASR final"), the
    dialogue's decision, the reply's first audio out. Each bar: label, start and end (ms), left offset
    and width (%)."""

    def ms(key: str) -> float | None:
        value = timing.get(key)
        return float(value) if isinstance(value, int | float) else None

    closed, finish = ms("close_after_speech_ms"), ms("asr_finish_ms")
    final = None if closed is None or finish is None else closed + finish
    marks = [("close after speech", closed), ("ASR final", final)]
    marks += [("decision", ms("decision_ms")), ("first audio out", ms("first_audio_ms"))]
    bars = []
    previous = 0.0
    for label, at in marks:
        if at is None:
            continue
        bars.append({"label": label, "start": round(previous, 1), "end": round(at, 1)})
        previous = max(previous, at)
    total = max((bar["end"] for bar in bars), default=0.0) or 1.0
    for bar in bars:
        bar["left"] = round(100 * bar["start"] / total, 1)
        bar["width"] = max(0.5, round(100 * (bar["end"] - bar["start"]) / total, 1))
    return bars
