"""The load test's summary: figures over all call records, time series for the report, threshold checks.

Input is the list of per-call records (one JSON object per call, the layout in the load tester's
contract: ``started``, ``sip_status``, ``setup_ms``, ``outcome``, ``duration_s``, ``turns``, ``rtp``,
``slots``...); times are seconds since the run started. Percentiles are numpy's (linear interpolation);
the time buckets and the concurrency sweep are a few lines of numpy (``searchsorted``, ``bincount``)
rather than a pandas dependency for the same.

Definitions:

- **failed** calls are those whose outcome is ``rejected``, ``no_answer`` or ``failed``; **answered**
  ones got a 2xx final response to their INVITE.
- A call occupies the target from ``started`` until ``started + setup_ms/1000 + duration_s``; a call
  that was never answered has no known end and takes no room in the concurrency figures.
- Turn latency percentiles are over turns that got a reply; turns without one are counted apart
  (``turns.no_reply``).
- Slot accuracy is over the slots the agent could be scored on: those of calls never answered, or
  whose agent never posted to a webhook (declined, transferred, failed earlier), are counted apart as
  **not reached** (``slots.not_reached``): they measure the failure rate, not understanding.
  ``slots.by_slot`` gives per slot name its right / wrong / not-reached counts and the first wrong
  values as expected-vs-heard pairs.
- RTP ``packets`` are the packets received, so a call's loss is ``lost / (packets + lost)``; the
  overall ``loss_pct`` weighs calls by their packets, and calls without any audio (all zeros) are
  left out of the jitter and per-call figures.
- A threshold whose figure could not be measured (no calls, no replies, no slots) is missed: a gate
  must not pass a run that measured nothing.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

OUTCOMES = ("completed", "transferred", "hung_up_early", "rejected", "no_answer", "failed", "aborted")
FAILED_OUTCOMES = frozenset({"rejected", "no_answer", "failed"})
PERCENTILES = (50, 95, 99)

Record = Mapping[str, Any]


class RecordError(ValueError):
    """A call record that does not follow the load tester's record layout."""


def summarize(records: Sequence[Record], duration_s: float) -> dict[str, Any]:
    """The run's figures as a plain JSON-able dict (see the module docstring for the definitions)."""
    if not isinstance(duration_s, int | float) or not math.isfinite(duration_s) or duration_s < 0:
        raise ValueError(f"duration_s must be a finite number of seconds >= 0, not {duration_s!r}")
    for position, record in enumerate(records):
        _check_record(position, record)

    attempted = len(records)
    outcomes = Counter({outcome: 0 for outcome in OUTCOMES})
    outcomes.update(record["outcome"] for record in records)
    failed = sum(outcomes[outcome] for outcome in FAILED_OUTCOMES)
    answered = sum(1 for record in records if _answered(record))
    sip_status = Counter(_status_key(record.get("sip_status")) for record in records)
    ended_by = Counter(str(record["ended_by"]) for record in records if record.get("ended_by"))

    turns = [turn for record in records for turn in record.get("turns") or ()]
    latencies = [turn["reply_latency_ms"] for turn in turns if turn.get("reply_latency_ms") is not None]

    return {
        "duration_s": float(duration_s),
        "attempted": attempted,
        "answered": answered,
        "failed": failed,
        "failed_pct": _pct(failed, attempted),
        "outcomes": dict(outcomes),
        "sip_status": dict(sorted(sip_status.items())),
        "ended_by": dict(sorted(ended_by.items())),
        "calls_per_s": attempted / duration_s if duration_s > 0 else 0.0,
        "peak_concurrency": peak_concurrency(records),
        "setup_ms": percentile_summary(
            [record["setup_ms"] for record in records if record.get("setup_ms") is not None]
        ),
        "reply_latency_ms": percentile_summary(latencies),
        "call_duration_s": percentile_summary(
            [record["duration_s"] for record in records if record.get("duration_s") is not None]
        ),
        "turns": {
            "total": len(turns),
            "replied": len(latencies),
            "no_reply": len(turns) - len(latencies),
            "prompt_timeouts": sum(1 for turn in turns if turn.get("prompt_timeout")),
        },
        "slots": _slot_accuracy(records),
        "rtp": _rtp_totals(records),
        "webhook_posts": sum(int(record.get("webhook_posts") or 0) for record in records),
    }


def percentile_summary(values: Sequence[float]) -> dict[str, Any]:
    """count, mean, p50/p95/p99 and max of ``values``; None for every figure when there are none."""
    if not values:
        return {"count": 0, "mean": None, **{f"p{p}": None for p in PERCENTILES}, "max": None}
    array = np.asarray(values, dtype=float)
    percentiles = np.percentile(array, PERCENTILES)
    return {
        "count": len(array),
        "mean": float(array.mean()),
        **{f"p{p}": float(value) for p, value in zip(PERCENTILES, percentiles, strict=True)},
        "max": float(array.max()),
    }


# --- time series for the report -------------------------------------------------------------------


def default_step_s(duration_s: float) -> float:
    """A bucket width that gives about 60 buckets over the run: 1, 2, 5, 10, 20, 30, 60... seconds."""
    for step in (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 1800, 3600):
        if duration_s / step <= 60:
            return float(step)
    return float(math.ceil(duration_s / 60 / 3600) * 3600)


def bucket_starts(end_s: float, step_s: float) -> np.ndarray:
    """Starts of the buckets ``[k*step, (k+1)*step)`` that cover ``[0, end_s)`` (at least one)."""
    if not step_s > 0:
        raise ValueError(f"step_s must be > 0, not {step_s!r}")
    count = max(1, math.ceil(max(end_s, 0.0) / step_s))
    return np.arange(count) * step_s


def bucket_index(times: np.ndarray, step_s: float, buckets: np.ndarray) -> np.ndarray:
    """The bucket of each time; a time at the very end falls in the last bucket."""
    return np.minimum((times // step_s).astype(int), len(buckets) - 1)


def call_intervals(records: Iterable[Record]) -> tuple[np.ndarray, np.ndarray]:
    """Start and end times (s) of every answered call, as two arrays sorted by start."""
    spans = [
        (record["started"], record["started"] + record["setup_ms"] / 1000 + record["duration_s"])
        for record in records
        if record.get("setup_ms") is not None and record.get("duration_s") is not None
    ]
    spans.sort()
    starts = np.array([start for start, _ in spans], dtype=float)
    ends = np.array([end for _, end in spans], dtype=float)
    return starts, ends


def _concurrency_at(times: np.ndarray, starts: np.ndarray, sorted_ends: np.ndarray) -> np.ndarray:
    """Calls in progress at each time; a call occupies ``[start, end)``."""
    started = np.searchsorted(starts, times, side="right")
    ended = np.searchsorted(sorted_ends, times, side="right")
    return started - ended


def peak_concurrency(records: Iterable[Record]) -> int:
    """The most calls in progress at once."""
    starts, ends = call_intervals(records)
    if not len(starts):
        return 0
    return int(_concurrency_at(starts, starts, np.sort(ends)).max())


def concurrency_series(records: Sequence[Record], step_s: float, end_s: float = 0.0) -> dict[str, list]:
    """Peak calls in progress in each time bucket: ``{"t": bucket starts, "calls": peaks}``."""
    starts, ends = call_intervals(records)
    end_s = max([end_s, *ends]) if len(ends) else end_s
    buckets = bucket_starts(end_s, step_s)
    sorted_ends = np.sort(ends)
    # The level only rises at a call's start, so a bucket's peak is at its start or at a start inside it.
    peaks = _concurrency_at(buckets, starts, sorted_ends)
    if len(starts):
        at_starts = _concurrency_at(starts, starts, sorted_ends)
        np.maximum.at(peaks, bucket_index(starts, step_s, buckets), at_starts)
    return {"t": buckets.tolist(), "calls": peaks.astype(int).tolist()}


def calls_per_s_series(records: Sequence[Record], step_s: float, end_s: float = 0.0) -> dict[str, list]:
    """Calls started per second in each bucket, all and failed: ``{"t", "attempted", "failed"}``.

    The last bucket's rate is over the part of it before the run's end.
    """
    started = np.array([record["started"] for record in records], dtype=float)
    failed = np.array([record["outcome"] in FAILED_OUTCOMES for record in records], dtype=bool)
    end_s = max([end_s, *started])
    buckets = bucket_starts(end_s, step_s)
    widths = np.full(len(buckets), step_s)
    if end_s - buckets[-1] > 0:
        widths[-1] = min(step_s, end_s - buckets[-1])
    index = bucket_index(started, step_s, buckets)
    attempted_counts = np.bincount(index, minlength=len(buckets))
    failed_counts = np.bincount(index[failed], minlength=len(buckets))
    return {
        "t": buckets.tolist(),
        "attempted": (attempted_counts / widths).tolist(),
        "failed": (failed_counts / widths).tolist(),
    }


def percentile_series(
    times: Sequence[float], values: Sequence[float], step_s: float, end_s: float = 0.0
) -> dict[str, list]:
    """p50 and p95 of ``values`` per bucket of their ``times``: ``{"t", "p50", "p95", "count"}``.

    A bucket without values has None percentiles.
    """
    if len(times) != len(values):
        raise ValueError(f"{len(times)} times for {len(values)} values")
    time_array = np.asarray(times, dtype=float)
    value_array = np.asarray(values, dtype=float)
    buckets = bucket_starts(max([end_s, *time_array]), step_s)
    index = bucket_index(time_array, step_s, buckets)
    p50: list[float | None] = []
    p95: list[float | None] = []
    counts = np.bincount(index, minlength=len(buckets))
    for bucket in range(len(buckets)):
        in_bucket = value_array[index == bucket]
        if len(in_bucket):
            low, high = np.percentile(in_bucket, (50, 95))
            p50.append(float(low))
            p95.append(float(high))
        else:
            p50.append(None)
            p95.append(None)
    return {"t": buckets.tolist(), "p50": p50, "p95": p95, "count": counts.tolist()}


def turn_latency_series(records: Sequence[Record], step_s: float, end_s: float = 0.0) -> dict[str, list]:
    """Turn latency p50/p95 per bucket of the caller's end of speech."""
    replied = [
        turn
        for record in records
        for turn in record.get("turns") or ()
        if turn.get("reply_latency_ms") is not None and turn.get("speech_end") is not None
    ]
    times = [turn["speech_end"] for turn in replied]
    return percentile_series(times, [turn["reply_latency_ms"] for turn in replied], step_s, end_s)


def setup_time_series(records: Sequence[Record], step_s: float, end_s: float = 0.0) -> dict[str, list]:
    """Setup time p50/p95 per bucket of the call's start."""
    answered = [record for record in records if record.get("setup_ms") is not None]
    return percentile_series(
        [record["started"] for record in answered], [record["setup_ms"] for record in answered], step_s, end_s
    )


def rtp_loss_series(records: Sequence[Record], step_s: float, end_s: float = 0.0) -> dict[str, list]:
    """Received-audio loss % per bucket of the call's start (None where no packets were expected)."""
    with_rtp = [record for record in records if record.get("rtp")]
    started = np.array([record["started"] for record in with_rtp], dtype=float)
    lost = np.array([record["rtp"].get("lost") or 0 for record in with_rtp], dtype=float)
    received = np.array([record["rtp"].get("packets") or 0 for record in with_rtp], dtype=float)
    buckets = bucket_starts(max([end_s, *started]), step_s)
    index = bucket_index(started, step_s, buckets)
    lost_sums = np.bincount(index, weights=lost, minlength=len(buckets))
    expected_sums = lost_sums + np.bincount(index, weights=received, minlength=len(buckets))
    loss = [_pct(lost_sum, expected) for lost_sum, expected in zip(lost_sums, expected_sums, strict=True)]
    return {"t": buckets.tolist(), "loss_pct": loss}


# --- thresholds -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """One threshold checked against the summary; ``value`` is None when the figure was not measured."""

    key: str
    limit: float
    value: float | None
    met: bool
    sentence: str


def _percent_verdict(
    key: str, limit: float, label: str, value: float | None, detail: str, unmeasured: str, decimals: int
) -> Verdict:
    """A percentage against a ``max_`` (at most) or ``min_`` (at least) threshold ``key``."""
    if value is None:
        return Verdict(key, limit, None, False, f"{label}: {unmeasured}")
    at_least = key.startswith("min_")
    met = value >= limit if at_least else value <= limit
    comparison = (">=" if met else "<") if at_least else ("<=" if met else ">")
    bound = "min" if at_least else "max"
    sentence = f"{label} {value:.{decimals}f} % {comparison} {bound} {limit:g} % ({detail})"
    return Verdict(key, limit, value, met, sentence)


def _percent_figure(summary: Mapping[str, Any], key: str) -> tuple[str, float | None, str, str, int]:
    """What a percentage threshold checks: label, value, detail, why it may be unmeasured, decimals."""
    if key == "max_failed_pct":
        detail = f"{summary['failed']} of {summary['attempted']} calls rejected, not answered or failed"
        return "failed calls", summary["failed_pct"], detail, "no calls were attempted", 2
    if key == "min_slot_accuracy_pct":
        slots = summary["slots"]
        detail = f"{slots['correct']} of {slots['total']} slots right"
        return "slot accuracy", slots["pct"], detail, "no slots were checked", 1
    rtp = summary["rtp"]
    detail = f"{rtp['lost']} of {rtp['expected']} packets lost"
    return "RTP loss", rtp["loss_pct"], detail, "no audio was received", 2


def _p95_verdict(key: str, what: str, figures: Mapping[str, Any], limit: float, none_reason: str) -> Verdict:
    value = figures["p95"]
    if value is None:
        return Verdict(key, limit, None, False, f"p95 {what}: {none_reason} (max {limit:g} ms)")
    met = value <= limit
    comparison = "<=" if met else ">"
    sentence = f"p95 {what} {value:.1f} ms {comparison} max {limit:g} ms ({figures['count']} measured)"
    return Verdict(key, limit, value, met, sentence)


THRESHOLD_KEYS = (
    "max_failed_pct",
    "max_p95_turn_latency_ms",
    "max_p95_setup_ms",
    "min_slot_accuracy_pct",
    "max_rtp_loss_pct",
)


def threshold_verdicts(summary: Mapping[str, Any], thresholds: Mapping[str, float | None]) -> list[Verdict]:
    """A verdict for every threshold that is set (None = not checked), in ``THRESHOLD_KEYS`` order."""
    unknown = sorted(set(thresholds) - set(THRESHOLD_KEYS))
    if unknown:
        raise ValueError(f"unknown threshold(s) {', '.join(unknown)}; known: {', '.join(THRESHOLD_KEYS)}")
    verdicts = []
    for key in THRESHOLD_KEYS:
        limit = thresholds.get(key)
        if limit is None:
            continue
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not math.isfinite(limit):
            raise ValueError(f"threshold {key} must be a finite number, not {limit!r}")
        if limit < 0:
            raise ValueError(f"threshold {key} must be >= 0, not {limit!r}")
        if key == "max_p95_turn_latency_ms":
            latency = summary["reply_latency_ms"]
            verdicts.append(_p95_verdict(key, "turn latency", latency, limit, "no agent reply was measured"))
        elif key == "max_p95_setup_ms":
            setup = summary["setup_ms"]
            verdicts.append(_p95_verdict(key, "setup time", setup, limit, "no call was answered"))
        else:
            verdicts.append(_percent_verdict(key, limit, *_percent_figure(summary, key)))
    return verdicts


def check_thresholds(summary: Mapping[str, Any], thresholds: Mapping[str, float | None]) -> list[str]:
    """One human sentence per missed threshold; empty when every threshold that is set was met."""
    return [verdict.sentence for verdict in threshold_verdicts(summary, thresholds) if not verdict.met]


# --- reading records ------------------------------------------------------------------------------


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The call records of a ``calls.jsonl`` file (blank lines skipped)."""
    records = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise RecordError(f"{path}:{number}: not JSON: {error.msg}") from None
            try:
                _check_record(len(records), record)
            except RecordError as error:
                raise RecordError(f"{path}:{number}: {error}") from None
            records.append(record)
    return records


# --- helpers --------------------------------------------------------------------------------------


def _check_record(position: int, record: Any) -> None:
    if not isinstance(record, Mapping):
        raise RecordError(f"record {position} is a {type(record).__name__}, not an object")
    name = f"record {position} (index {record.get('index', '?')})"
    started = record.get("started")
    if isinstance(started, bool) or not isinstance(started, int | float) or not math.isfinite(started):
        raise RecordError(f"{name}: 'started' must be a number of seconds, not {started!r}")
    if started < 0:
        raise RecordError(f"{name}: 'started' must be >= 0, not {started!r}")
    if record.get("outcome") not in OUTCOMES:
        known = ", ".join(OUTCOMES)
        raise RecordError(f"{name}: 'outcome' must be one of {known}, not {record.get('outcome')!r}")
    for key in ("setup_ms", "duration_s"):
        if not _null_or_non_negative(record.get(key)):
            raise RecordError(f"{name}: {key!r} must be null or a number >= 0, not {record.get(key)!r}")
    turns = record.get("turns") or []
    if not isinstance(turns, list) or not all(isinstance(turn, Mapping) for turn in turns):
        raise RecordError(f"{name}: 'turns' must be a list of objects")
    for turn in turns:
        for key in ("speech_end", "reply_latency_ms"):
            if not _null_or_non_negative(turn.get(key)):
                raise RecordError(
                    f"{name}, turn {turn.get('index', '?')}: {key!r} must be null or a number >= 0, "
                    f"not {turn.get(key)!r}"
                )


def _null_or_non_negative(value: Any) -> bool:
    if value is None:
        return True
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return is_number and math.isfinite(value) and value >= 0


def _answered(record: Record) -> bool:
    status = record.get("sip_status")
    return isinstance(status, int) and 200 <= status < 300


def _status_key(status: Any) -> str:
    return "none" if status is None else str(status)


def _pct(part: float, whole: float) -> float | None:
    return 100.0 * float(part) / float(whole) if whole else None


MAX_MISMATCHES = 20  # expected-vs-heard pairs kept per slot


def slot_status(record: Record, slot: Mapping[str, Any]) -> str:
    """``right``, ``wrong``, or ``not_reached``: the call was not answered, or its agent never posted
    to a webhook (the caller declined, was transferred, or the call failed before): a failure earlier
    in the call, not this slot's."""
    if not _answered(record):
        return "not_reached"
    if slot.get("correct"):
        return "right"
    if not record.get("webhook_posts", 1):
        return "not_reached"
    return "wrong"


def _slot_accuracy(records: Iterable[Record]) -> dict[str, Any]:
    correct: Counter[str] = Counter()
    total: Counter[str] = Counter()
    not_reached = 0
    by_slot: dict[str, dict[str, Any]] = {}
    for record in records:
        for slot in record.get("slots") or ():
            status = slot_status(record, slot)
            name = str(slot.get("name") or "?")
            figures = by_slot.setdefault(
                name,
                {"type": str(slot.get("type") or "unknown"), "right": 0, "wrong": 0, "not_reached": 0,
                 "mismatches": []},
            )  # fmt: skip
            figures[status] += 1
            if status == "not_reached":
                not_reached += 1
                continue
            slot_type = str(slot.get("type") or "unknown")
            total[slot_type] += 1
            correct[slot_type] += status == "right"
            if status == "wrong" and len(figures["mismatches"]) < MAX_MISMATCHES:
                figures["mismatches"].append(
                    {"expected": slot.get("expected"), "heard": slot.get("got"), "call": record.get("index")}
                )
    for figures in by_slot.values():
        figures["pct"] = _pct(figures["right"], figures["right"] + figures["wrong"])
    by_type = {
        slot_type: {"correct": correct[slot_type], "total": count, "pct": _pct(correct[slot_type], count)}
        for slot_type, count in sorted(total.items())
    }
    all_correct, all_total = sum(correct.values()), sum(total.values())
    overall = {"correct": all_correct, "total": all_total, "pct": _pct(all_correct, all_total)}
    return {
        **overall,
        "by_type": by_type,
        "not_reached": not_reached,
        "by_slot": dict(sorted(by_slot.items())),
    }


def _rtp_totals(records: Iterable[Record]) -> dict[str, Any]:
    received_any = [record.get("rtp") or {} for record in records]
    stats = [rtp for rtp in received_any if rtp.get("packets") or rtp.get("lost")]
    received = sum(int(rtp.get("packets") or 0) for rtp in stats)
    lost = sum(int(rtp.get("lost") or 0) for rtp in stats)
    jitters = [rtp["jitter_ms"] for rtp in stats if rtp.get("jitter_ms") is not None]
    return {
        "calls": len(stats),
        "packets": received,
        "lost": lost,
        "expected": received + lost,
        "loss_pct": _pct(lost, received + lost),
        "mean_jitter_ms": float(np.mean(jitters)) if jitters else None,
        "max_jitter_ms": float(np.max(jitters)) if jitters else None,
        "gaps": sum(int(rtp.get("gaps") or 0) for rtp in stats),
        "calls_with_gaps": sum(1 for rtp in stats if rtp.get("gaps")),
    }
