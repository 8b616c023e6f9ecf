"""Analytics of one agent version from its call records: outcomes, drop-off per step, no-match rate per
slot, turn-latency percentiles and each ASR engine's win rate per slot type.

Turn latency is counted from the moment the caller stopped (end of speech, or the last key) to the
reply's first audio out (``first_audio_ms`` of each turn's timing); the decision's latency, to the
dialogue's decision (``decision_ms``; for records older than that field, the endpointer's close plus
the recognisers' final).

Only the records' structure is read (outcomes, steps, turn results, timings, which engine the arbiter
chose): no caller data is opened, so viewers may see these figures.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from parley.agent.loader import load_agent_text
from parley.agent.model import AskStep


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile (``share`` in 0..1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


def summarise(records: Iterable[dict[str, Any]], agent_yaml: str | None) -> dict[str, Any]:
    """The figures of one version over ``records`` (its calls)."""
    asks: dict[str, AskStep] = {}
    if agent_yaml:
        agent = load_agent_text(agent_yaml)
        asks = {step.id: step for step in agent.steps if isinstance(step, AskStep)}
    calls = 0
    outcomes: Counter[str] = Counter()
    ended_at: Counter[str] = Counter()  # abandoned calls: the step the caller left at
    reached: Counter[str] = Counter()  # calls that had a turn at each step
    answers: Counter[str] = Counter()
    no_match: Counter[str] = Counter()
    latency: list[float] = []  # caller stopped -> first audio out
    decision: list[float] = []  # caller stopped -> the dialogue's decision
    wins: dict[str, Counter[str]] = defaultdict(Counter)
    for record in records:
        calls += 1
        outcome = record.get("outcome") or "in progress"
        outcomes[outcome] += 1
        if outcome == "abandoned" and record.get("end_step"):
            ended_at[record["end_step"]] += 1
        steps_seen = set()
        for turn in record.get("turns") or []:
            step = turn.get("step")
            steps_seen.add(step)
            if turn.get("kind") == "answer" and turn.get("input") in ("speech", "dtmf"):
                answers[step] += 1
                if turn.get("result") == "no_match":
                    no_match[step] += 1
            timing = turn.get("timing") or {}
            if "first_audio_ms" in timing:
                latency.append(float(timing["first_audio_ms"]))
            if "decision_ms" in timing:
                decision.append(float(timing["decision_ms"]))
            elif "close_after_speech_ms" in timing and "asr_finish_ms" in timing:
                decision.append(float(timing["close_after_speech_ms"]) + float(timing["asr_finish_ms"]))
            chosen = [h.get("engine") for h in turn.get("hypotheses") or [] if h.get("chosen")]
            if chosen and step in asks:
                wins[asks[step].slot_type.value][chosen[0]] += 1
        reached.update(steps_seen)
    return {
        "calls": calls,
        "outcomes": {k: {"calls": v, "share": _rate(v, calls)} for k, v in sorted(outcomes.items())},
        "completion_rate": _rate(outcomes["completed"], calls),
        "transfer_rate": _rate(outcomes["transferred"], calls),
        "drop_off": [
            {"step": step, "abandoned": count, "reached": reached[step], "rate": _rate(count, reached[step])}
            for step, count in ended_at.most_common()
        ],
        "no_match": [
            {
                "step": step,
                "slot": asks[step].slot if step in asks else None,
                "answers": answers[step],
                "no_match": no_match[step],
                "rate": _rate(no_match[step], answers[step]),
            }
            for step in answers
        ],
        "turn_latency_ms": _percentiles(latency),
        "decision_latency_ms": _percentiles(decision),
        "engine_wins": {
            slot_type: {
                engine: {"wins": count, "share": _rate(count, sum(engines.values()))}
                for engine, count in engines.most_common()
            }
            for slot_type, engines in sorted(wins.items())
        },
    }


def _percentiles(values: list[float]) -> dict[str, Any]:
    return {
        "turns": len(values),
        "p50": percentile(values, 0.5),
        "p90": percentile(values, 0.9),
        "p95": percentile(values, 0.95),
    }


def _rate(part: int, whole: int) -> float | None:
    return None if not whole else round(part / whole, 4)
