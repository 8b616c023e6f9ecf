"""The per-call record: what was said, heard, understood and done, as one JSON line per call.

Caller data is marked **sensitive with an envelope**: anywhere in the record, a value that came from
the caller (slot values, transcripts, ASR hypotheses' text, extracted values, prompts rendered with
slot values, webhook response fields saved into slots) is written as::

    {"sensitive": true, "value": ...}

and nothing else in the record uses a ``"sensitive"`` key, so a later step (encryption at rest) can
walk the JSON and replace every envelope's ``value`` without knowing the layout. :meth:`CallRecord.
redacted` is the view for logs: every envelope becomes ``{"sensitive": true, "redacted": true}``.

Layout of a record (``to_dict``)::

    {"record": "parley.call/1", "call_id", "agent", "agent_version" (the studio's version number, or
     null for an agent file), "started_at" (ISO 8601 UTC), "duration_s",
     "outcome": "completed" | "transferred" | "abandoned" | "failed", "outcome_reason", "end_step",
     "channel": "sip" | "webrtc" | null, "end_reason" (how the connection ended: "remote-bye",
     "local-bye", "remote-hangup", "local-hangup", "ice-failed" (a browser vanished), ... or null),
     "prompts": [{"t", "step", "text", "interruptible"}],
     "turns": [{"step", "kind": "answer" | "confirm", "t_listen", "t_end", "input": "speech" | "dtmf" |
                "no_input" | "hangup", "transcript", "confidence", "hypotheses": [{"engine", "text",
                "confidence", "chosen"}], "arbiter_reason", "partials", "t_early_close",
                "close": "partial" | "pause" | null (what closed it early), "timing",
                "nlu": {"intent", "intent_confidence", "value", "value_confidence", "complete"},
                "result"}],
     "slots": {name: envelope},
     "webhooks": [{"step", "url", "method", "t", "status", "latency_ms", "error", "attempts",
                   "outcome": "ok" | "failed" | "unknown" (sent, no answer: the backend may have acted),
                   "idempotency_key", "held" (the hold prompt was said)}],
     "audio": {turn index: envelope of the caller's audio of that turn, a base64 WAV} (when recorded)}

With a :class:`~parley.agent.sealing.Keyring`, ``to_json`` and ``write_jsonl`` seal every envelope
(AES-GCM, key id per value): caller data is then encrypted at rest in the JSONL file too.

Times ``t`` are seconds since the call started, from the conversation's (monotonic) clock.

A live agent appends records through :class:`RecordFile`: when the disk refuses (full, read-only,
I/O errors) calls go on, the records wait in memory up to a bound and are written first when the
disk takes writes again; records dropped beyond the bound are counted and logged.
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import json
import logging
import os
from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parley.agent import metrics

if TYPE_CHECKING:
    from parley.agent.sealing import Keyring

log = logging.getLogger(__name__)

RECORD_FORMAT = "parley.call/1"
OUTCOMES = ("completed", "transferred", "abandoned", "failed")


def sensitive(value: Any) -> dict[str, Any]:
    """Wrap caller data in the sensitive envelope."""
    return {"sensitive": True, "value": value}


def is_sensitive(node: Any) -> bool:
    """Whether ``node`` is a sensitive envelope."""
    return (
        isinstance(node, dict)
        and node.get("sensitive") is True
        and ("value" in node or "redacted" in node or "sealed" in node)
    )


def redact(node: Any) -> Any:
    """A copy of ``node`` with every sensitive envelope's value removed."""
    if is_sensitive(node):
        return {"sensitive": True, "redacted": True}
    if isinstance(node, dict):
        return {key: redact(value) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [redact(value) for value in node]
    return node


def jsonable(value: Any) -> Any:
    """JSON form of slot values and NLU results: dates ISO 8601, Decimals as strings, enums by value."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


@dataclass(slots=True)
class Turn:
    """One caller turn: a Listen and what ended it."""

    step: str
    kind: str  # "answer" (the ask's question) or "confirm" (the read-back yes/no)
    t_listen: float
    t_end: float | None = None
    input: str | None = None  # speech | dtmf | no_input | hangup
    transcript: str | None = None
    confidence: float | None = None
    hypotheses: list[dict[str, Any]] = field(default_factory=list)
    arbiter_reason: str | None = None
    partials: int = 0
    t_early_close: float | None = None
    close: str | None = None  # what closed it early: "partial" (complete partial), "pause" (final at a pause)
    timing: dict[str, float] = field(default_factory=dict)  # where the turn's reply time went (ms)
    nlu: dict[str, Any] = field(default_factory=dict)
    result: str | None = None  # accepted | no_match | no_input | intent:NAME | global:NAME | yes | no ...

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "kind": self.kind,
            "t_listen": _round(self.t_listen),
            "t_end": _round(self.t_end),
            "input": self.input,
            "transcript": None if self.transcript is None else sensitive(self.transcript),
            "confidence": self.confidence,
            "hypotheses": self.hypotheses,
            "arbiter_reason": self.arbiter_reason,
            "partials": self.partials,
            "t_early_close": _round(self.t_early_close),
            "close": self.close,
            "timing": self.timing,
            "nlu": self.nlu,
            "result": self.result,
        }


@dataclass(slots=True)
class WebhookCall:
    """One webhook step's call as the I/O side reported it."""

    step: str
    url: str
    method: str
    t: float
    status: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    attempts: int | None = None
    outcome: str | None = None  # ok | failed | unknown (sent, but no answer: the backend may have acted)
    idempotency_key: str | None = None
    held: bool = False  # the hold prompt was said while waiting

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["t"] = _round(self.t)
        out["latency_ms"] = None if self.latency_ms is None else round(self.latency_ms, 1)
        return out


def _round(t: float | None) -> float | None:
    return None if t is None else round(t, 3)


@dataclass(slots=True)
class CallRecord:
    """Everything one call did; filled in by :class:`parley.agent.runtime.Conversation`."""

    call_id: str
    agent: str
    started_at: str  # ISO 8601, UTC
    agent_version: int | None = None  # the studio version the call ran (None: an agent file)
    duration_s: float | None = None
    outcome: str | None = None  # one of OUTCOMES once the call ended
    outcome_reason: str | None = None
    end_step: str | None = None
    prompts: list[dict[str, Any]] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    slots: dict[str, Any] = field(default_factory=dict)  # raw values; enveloped in to_dict()
    webhooks: list[WebhookCall] = field(default_factory=list)
    audio: dict[int, str] = field(default_factory=dict)  # turn index -> the caller's audio, base64 WAV
    channel: str | None = None  # how the caller came: "sip" or "webrtc" (a browser); None: a text chat
    end_reason: str | None = None  # how the call's connection ended (e.g. remote-bye, ice-failed)

    def add_prompt(self, t: float, step: str, text: str, *, personal: bool, interruptible: bool) -> None:
        """Record a spoken prompt; ``personal`` when it was rendered with slot values (then sensitive)."""
        self.prompts.append(
            {
                "t": _round(t),
                "step": step,
                "text": sensitive(text) if personal else text,
                "interruptible": interruptible,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data, caller data in sensitive envelopes."""
        return {
            "record": RECORD_FORMAT,
            "call_id": self.call_id,
            "agent": self.agent,
            "agent_version": self.agent_version,
            "started_at": self.started_at,
            "duration_s": _round(self.duration_s),
            "outcome": self.outcome,
            "outcome_reason": self.outcome_reason,
            "end_step": self.end_step,
            "channel": self.channel,
            "end_reason": self.end_reason,
            "prompts": copy.deepcopy(self.prompts),
            "turns": [turn.to_dict() for turn in self.turns],
            "slots": {name: sensitive(jsonable(value)) for name, value in self.slots.items()},
            "webhooks": [call.to_dict() for call in self.webhooks],
        } | ({"audio": {str(i): sensitive(wav) for i, wav in self.audio.items()}} if self.audio else {})

    def to_json(self, keyring: Keyring | None = None) -> str:
        """One line of JSON (no newline inside); caller data sealed with ``keyring`` if given."""
        data = self.to_dict() if keyring is None else keyring.seal(self.to_dict())
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=jsonable)

    def write_jsonl(self, path: str | Path, keyring: Keyring | None = None) -> None:
        """Append this record as one line to ``path`` (created if missing), in one ``write``: the
        workers of a node (``parley serve --workers N``) append to the same file without interleaving."""
        with Path(path).open("ab", buffering=0) as out:
            out.write((self.to_json(keyring) + "\n").encode("utf-8"))

    def redacted(self) -> dict[str, Any]:
        """The record without caller data, safe for logs."""
        return redact(self.to_dict())

    def summary(self, *, show_values: bool = False) -> str:
        """A few human lines (``parley chat``); slot values only with ``show_values``."""
        lines = [
            f"call {self.call_id} · agent {self.agent} · outcome {self.outcome or 'in progress'}"
            + (f" ({self.outcome_reason})" if self.outcome_reason else "")
            + (f" at step {self.end_step}" if self.end_step else ""),
            f"{len(self.turns)} turns, {len(self.prompts)} prompts, {len(self.webhooks)} webhook calls"
            + (f", {self.duration_s:.1f} s" if self.duration_s is not None else ""),
        ]
        for name, value in self.slots.items():
            lines.append(f"  {name} = {jsonable(value)!r}" if show_values else f"  {name} = <sensitive>")
        for call in self.webhooks:
            latency = f"{call.latency_ms:.0f} ms" if call.latency_ms is not None else "?"
            lines.append(
                f"  webhook {call.method} {call.url} → {call.status} in {latency}"
                + (f" ({call.error})" if call.error else "")
            )
        return "\n".join(lines)


HELD_BYTES = 32 * 1024 * 1024  # records kept in memory while the disk refuses them, at most
FREE_MARGIN = 64 * 1024  # a write that would leave less free than this waits (no half-written line)


class RecordFile:
    """Appends call records (one JSON line each) to ``path``, and survives a disk that refuses them.

    Each record is sealed with ``keyring`` (if given) as it is appended, so what waits in memory is
    what the file would hold. A write is not tried when the file system has less free space than the
    line plus :data:`FREE_MARGIN` (a half-written line would break the readers); a write that fails
    all the same (ENOSPC, EIO, EROFS, ...) keeps the line too. Waiting lines are written first, in
    order, at the next append the disk takes, in one ``write`` (workers sharing the file never
    interleave). Beyond ``held_bytes`` the oldest waiting records are dropped and counted in
    :attr:`lost`. The log says when the disk starts refusing (with the error, never caller data),
    when records are dropped (the first time, then every 100), and when the waiting ones are written.
    """

    def __init__(
        self, path: str | Path, keyring: Keyring | None = None, held_bytes: int = HELD_BYTES
    ) -> None:
        self.path = Path(path)
        self.keyring = keyring
        self.held_bytes = held_bytes
        self.held: deque[bytes] = deque()
        self._held_size = 0
        self.lost = 0  # records dropped: the disk refused them and memory's bound was reached
        self.refusals = 0  # appends the disk refused
        self._cut = False  # the file ends in a line cut short by a full disk, not yet ended

    def append(self, record: CallRecord) -> bool:
        """Write ``record`` (after any waiting ones); False when it waits in memory (or was dropped)."""
        self.held.append((record.to_json(self.keyring) + "\n").encode("utf-8"))
        self._held_size += len(self.held[-1])
        waiting = len(self.held)
        data = (b"\n" if self._cut else b"") + b"".join(self.held)
        reason = self._room_for(len(data))
        if reason is None:
            reason = self._write(data)
        if reason is None:
            if waiting > 1:
                log.warning("call records: the disk takes writes again; %d waiting written", waiting - 1)
            self.held.clear()
            self._held_size = 0
            metrics.RECORDS_HELD.set(0)
            return True
        self._refused(reason, first=waiting == 1)
        return False

    def _room_for(self, size: int) -> str | None:
        """None if ``size`` bytes fit with the margin to spare; else why not."""
        try:
            stats = os.statvfs(self.path.parent)
        except OSError as exc:
            return _describe(exc)
        if stats.f_bavail * stats.f_frsize < size + FREE_MARGIN:
            return f"ENOSPC: less than {(size + FREE_MARGIN) // 1024} KiB free"
        return None

    def _write(self, data: bytes) -> str | None:
        """Append ``data``; None when all of it was written, else why not. After a short write (the
        disk filled up meanwhile) the lines written whole are taken off :attr:`held`, the one cut
        short is ended with a newline (the readers skip one bad line, not two) and counted lost."""
        try:
            with self.path.open("ab", buffering=0) as out:
                written = out.write(data) or 0
        except OSError as exc:
            return _describe(exc)
        if written and self._cut:  # the newline that ends an earlier cut line went first
            self._cut = False
            written -= 1
        if written == self._held_size:
            return None
        while self.held and len(self.held[0]) <= written:
            written -= len(self.held[0])
            self._held_size -= len(self.held.popleft())
        if written and self.held:
            try:
                with self.path.open("ab", buffering=0) as out:
                    self._cut = not out.write(b"\n")
            except OSError:
                self._cut = True  # ended by the next write that goes through
            self._held_size -= len(self.held.popleft())
            self._lose(1)
        return f"ENOSPC: a short write ({len(data)} bytes)"

    def _refused(self, reason: str, *, first: bool) -> None:
        self.refusals += 1
        if first:
            log.warning("call records: %s refused a record (%s); keeping them in memory", self.path, reason)
        while self._held_size > self.held_bytes and self.held:
            self._held_size -= len(self.held.popleft())
            self._lose(1)
        metrics.RECORDS_HELD.set(len(self.held))

    def _lose(self, count: int) -> None:
        self.lost += count
        metrics.RECORDS_LOST.inc(count)
        if self.lost == count or self.lost // 100 != (self.lost - count) // 100:
            log.error(
                "call records: %d lost so far (the disk refuses them and %d KiB are held in memory)",
                self.lost,
                self.held_bytes // 1024,
            )


def _describe(exc: OSError) -> str:
    """An OS error without its file name: the code and the message."""
    code = errno.errorcode.get(exc.errno or 0, "error")
    return f"{code}: {exc.strerror or exc}"
