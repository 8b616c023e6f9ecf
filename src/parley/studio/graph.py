"""An agent's flow drawn as a graph: server-side SVG, no script and no layout library.

An agent's steps run in file order unless a step jumps, so the layout is the file's: one box per step,
top to bottom, the fall-through to the following step a short arrow straight down, and every jump
(``next``, ``on_failure``, a branch's cases and default, a global intent's ``goto``) an arc on the
right, each in its own lane so none overlap. A general graph layout (Graphviz and the like) would
reorder the steps away from the file the editor is looking at, and adds a system dependency.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from html import escape

from parley.agent.loader import load_agent_text
from parley.agent.model import (
    Agent,
    AskStep,
    BranchStep,
    Condition,
    HangupStep,
    SayStep,
    TransferStep,
    WebhookStep,
)

BOX_W, BOX_H, GAP, LANE = 220, 38, 26, 16
LEFT, TOP = 10, 10
COLOURS = {
    "say": "#e8eef6",
    "ask": "#fff2cc",
    "branch": "#efe3f7",
    "webhook": "#e3f3f7",
    "transfer": "#fde2d2",
    "hangup": "#e4e4e4",
}


@dataclass(frozen=True, slots=True)
class Edge:
    source: int  # step index; -1 for a global intent
    target: int
    label: str


def edges(agent: Agent) -> tuple[list[Edge], list[Edge]]:
    """(fall-throughs to the following step, jumps) of the agent's flow."""
    index = {step.id: i for i, step in enumerate(agent.steps)}
    falls: list[Edge] = []
    jumps: list[Edge] = []

    def go(i: int, target: str | None, label: str) -> None:
        if target is None:
            if i + 1 < len(agent.steps):
                falls.append(Edge(i, i + 1, label))
        elif target in index:
            (falls if index[target] == i + 1 and not label else jumps).append(Edge(i, index[target], label))

    for i, step in enumerate(agent.steps):
        if isinstance(step, SayStep):
            go(i, step.next, "")
        elif isinstance(step, AskStep | WebhookStep):
            go(i, step.next, "")
            if step.on_failure is not None:
                go(i, step.on_failure, "failure")
        elif isinstance(step, BranchStep):
            for case in step.cases:
                go(i, case.next, _condition(case.when))
            go(i, step.default, "else" if step.default else "")
        # transfer and hangup end the call
    for name, action in agent.global_intents.items():
        if action.goto is not None and action.goto in index:
            jumps.append(Edge(-1, index[action.goto], f"“{name}” anywhere"))
    return falls, jumps


def flow_svg(agent: Agent) -> str:
    """The flow as an ``<svg>`` element (inline in the agent page)."""
    falls, jumps = edges(agent)
    n = len(agent.steps)

    def y(i: int) -> int:
        return TOP + i * (BOX_H + GAP)

    height = y(n) + TOP
    width = LEFT + BOX_W + 40 + LANE * (len(jumps) + 1) + 140
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="flow" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="flow of {escape(agent.name)}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#445"/></marker></defs>',
    ]
    for i, step in enumerate(agent.steps):
        detail = _detail(step)
        parts.append(
            f'<g class="step" id="step-{escape(step.id)}"><rect x="{LEFT}" y="{y(i)}" width="{BOX_W}" '
            f'height="{BOX_H}" rx="6" fill="{COLOURS.get(step.type, "#fff")}" stroke="#667"/>'
            f'<text x="{LEFT + 8}" y="{y(i) + 16}" font-size="13" font-weight="600">{escape(step.id)}</text>'
            f'<text x="{LEFT + 8}" y="{y(i) + 31}" font-size="11" fill="#445">{escape(detail)}</text></g>'
        )
    for edge in falls:
        x = LEFT + BOX_W // 2
        parts.append(
            f'<line x1="{x}" y1="{y(edge.source) + BOX_H}" x2="{x}" y2="{y(edge.target)}" stroke="#445" '
            'marker-end="url(#arrow)"/>'
        )
    right = LEFT + BOX_W
    labelled: dict[int, int] = {}  # labels so far per source step: each one a line lower
    for lane, edge in enumerate(jumps, 1):
        x = right + 20 + lane * LANE
        end = y(edge.target) + BOX_H // 2
        start = y(edge.source) + BOX_H // 2 if edge.source >= 0 else TOP
        colour = "#b03030" if edge.label == "failure" else "#3a5f9f" if edge.source >= 0 else "#7a4fa0"
        if edge.source >= 0:
            path = f"M{right},{start} H{x} V{end} H{right + 2}"
        else:  # a global intent: from the top margin, dashed
            path = f"M{x},{start} V{end} H{right + 2}"
        dash = ' stroke-dasharray="4 3"' if edge.source < 0 else ""
        parts.append(
            f'<path class="jump" d="{path}" fill="none" stroke="{colour}"{dash} marker-end="url(#arrow)"/>'
        )
        if edge.label:  # beside its lane, at the source's row (a global intent's: at its target's)
            k = labelled[edge.source] = labelled.get(edge.source, -1) + 1
            label_y = start - 3 + 11 * k if edge.source >= 0 else end - 4
            parts.append(
                f'<text x="{x + 3}" y="{label_y}" font-size="10" fill="{colour}" '
                f'stroke="#fff" stroke-width="3" paint-order="stroke">{escape(edge.label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


@functools.lru_cache(maxsize=64)
def flow_svg_of(text: str) -> str:
    """The flow of a saved version's YAML (versions never change: cached by their text)."""
    return flow_svg(load_agent_text(text))


def _condition(when: Condition) -> str:
    if when.intent is not None:
        return f"intent {when.intent}"
    if when.equals is not None:
        return f"if {when.slot} = {when.equals}"
    if when.greater_than is not None:
        return f"if {when.slot} > {when.greater_than:g}"
    if when.less_than is not None:
        return f"if {when.slot} < {when.less_than:g}"
    return f"if {when.slot} {'set' if when.present else 'unset'}"


def _detail(step: object) -> str:
    if isinstance(step, AskStep):
        return f"ask {step.slot} ({step.slot_type.value})"
    if isinstance(step, WebhookStep):
        return f"webhook {step.method}"
    if isinstance(step, TransferStep):
        return f"transfer → {step.to}"[:34]
    if isinstance(step, HangupStep):
        return "hang up"
    if isinstance(step, BranchStep):
        return f"branch ({len(step.cases)} cases)"
    return "say"
