"""Replay: recorded calls run again, turn by turn, through the speech and dialogue pipeline against
another version of their agent, to show what a change would do before it is published.

Each recorded caller turn is played back in order: its audio (kept with the call) through the same
recognisers and arbiter ``parley serve`` uses (partials to the NLU, so early close works as live), its
keypad digits as keys, its silence as no input; a spoken turn recorded without audio replays its
transcript as typed text (the dialogue is still tested, the recognisers are not). The version under
test asks whatever it asks; when it asks for more answers than the caller gave, the caller hangs up,
as they did. Webhooks are answered
with what the recorded call's backend gave (the slots it saved), sample values for anything else: a
replay never calls a backend.

The result, per call: the slots, outcome and path (steps with a caller turn) of the recording and of
the replay, and what differs. A replay set (a saved list of calls) is a regression suite: publishing
can require every call of it to end as it did (same outcome and slots).
"""

from __future__ import annotations

import asyncio
import io
import wave
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parley.agent.model import Agent, WebhookStep
from parley.agent.records import jsonable
from parley.agent.runtime import CallWebhook, Conversation, EarlyClose, Hangup, Listen, Transfer
from parley.agent.textchat import say_typed
from parley.agent.voice import LEAN_SELECTION
from parley.agent.webhook import sample_body
from parley.speech.arbiter import Arbiter
from parley.speech.types import FRAME_SAMPLES

MAX_ACTIONS = 500  # a flow that loops without asking anything is cut off


@dataclass
class Replayed:
    """One call replayed: what it was, what it is now, and the differences (empty: unchanged)."""

    call_id: str
    before: dict[str, Any]
    after: dict[str, Any]
    turns: list[dict[str, Any]] = field(default_factory=list)  # per replayed turn: step, heard

    @property
    def changes(self) -> list[str]:
        out = []
        if self.before["outcome"] != self.after["outcome"]:
            out.append(f"outcome {self.before['outcome']} → {self.after['outcome']}")
        for name in sorted(set(self.before["slots"]) | set(self.after["slots"])):
            old, new = self.before["slots"].get(name), self.after["slots"].get(name)
            if old != new:
                out.append(f"slot {name}: {old!r} → {new!r}")
        if self.before["path"] != self.after["path"]:
            out.append(f"path {' › '.join(self.before['path'])} → {' › '.join(self.after['path'])}")
        return out

    def view(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "before": self.before,
            "after": self.after,
            "turns": self.turns,
            "changes": self.changes,
            "same": not self.changes,
        }


def summary_of(record: dict[str, Any]) -> dict[str, Any]:
    """Outcome, slots (values) and path of an opened record."""
    slots = {
        name: env.get("value") if isinstance(env, dict) else env for name, env in record["slots"].items()
    }
    path = [turn["step"] for turn in record.get("turns") or [] if turn.get("input") != "hangup"]
    return {"outcome": record.get("outcome"), "slots": slots, "path": path}


def recorded_body(step: WebhookStep, slots: dict[str, Any]) -> dict[str, Any]:
    """A success body for a webhook step: the values the recorded call's backend gave for the fields
    the step saves, a sample value for the others."""
    body = sample_body(step)
    for path, declared in step.saved().items():
        if declared.slot in slots:
            *parents, leaf = path.split(".")
            node = body
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = slots[declared.slot]
    return body


def pcm_of(wav_bytes: bytes) -> np.ndarray:
    """The 16-bit mono samples of a turn's WAV."""
    with wave.open(io.BytesIO(wav_bytes)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


class Replayer:
    """Replays calls against agent versions with one set of recognisers (loaded once, in-process)."""

    def __init__(self, engines: list[Any] | None = None) -> None:
        from parley.speech.engines import load_engines

        self.engines = engines if engines is not None else load_engines()
        self.arbiter = Arbiter(self.engines, deadline=3.0, selection=LEAN_SELECTION)

    async def replay(self, agent: Agent, record: dict[str, Any], audio: dict[int, bytes]) -> Replayed:
        """Run ``record`` (opened: caller data in clear) with its turns' ``audio`` against ``agent``."""
        conversation = Conversation(agent, call_id=f"replay-{record['call_id']}")
        recorded = [t for t in record.get("turns") or [] if t.get("input") != "hangup"]
        indices = [i for i, t in enumerate(record.get("turns") or []) if t.get("input") != "hangup"]
        heard: list[dict[str, Any]] = []
        queue = list(conversation.start())
        steps = 0
        while queue and not conversation.finished and steps < MAX_ACTIONS:
            steps += 1
            action = queue.pop(0)
            if isinstance(action, Listen):
                if not recorded:  # the caller gave no more answers: they hung up
                    conversation.on_hangup()
                    break
                turn, index = recorded.pop(0), indices.pop(0)
                queue += await self._answer(conversation, action, turn, audio.get(index), heard)
            elif isinstance(action, CallWebhook):
                body = recorded_body(agent.step(action.step_id), summary_of(record)["slots"])  # type: ignore[arg-type]
                queue += conversation.on_webhook_result(200, body, None)
            elif isinstance(action, Transfer):
                queue += conversation.on_transfer_result(200)
            elif isinstance(action, Hangup):
                break
        if conversation.outcome is None:
            conversation.on_hangup()
        after = summary_of(conversation.record.to_dict())
        after["slots"] = {k: jsonable(v) for k, v in after["slots"].items()}
        return Replayed(record["call_id"], summary_of(record), after, heard)

    async def _answer(
        self,
        conversation: Conversation,
        listen: Listen,
        turn: dict[str, Any],
        wav: bytes | None,
        heard: list[dict[str, Any]],
    ) -> list[Any]:
        transcript = turn.get("transcript")
        said = transcript.get("value") if isinstance(transcript, dict) else transcript
        if turn.get("input") == "dtmf" and said:
            heard.append({"step": listen.step_id, "keys": said})
            return conversation.on_dtmf(str(said))
        if turn.get("input") == "speech" and wav is None and said:  # a record without audio: its transcript
            heard.append({"step": listen.step_id, "heard": said, "engine": "transcript"})
            return say_typed(
                conversation, str(said), float(turn.get("confidence") or 1.0), lambda _line: None
            )
        if turn.get("input") != "speech" or wav is None:
            heard.append({"step": listen.step_id, "heard": None})
            return conversation.on_no_input()
        await self.arbiter.prepare(listen.question)
        early: list[bool] = []

        def on_partial(hypothesis: Any) -> None:
            if any(isinstance(a, EarlyClose) for a in conversation.on_partial(hypothesis.text)):
                early.append(True)

        arbiter_turn = self.arbiter.start_turn(listen.question, on_partial=on_partial)
        pcm = pcm_of(wav)
        for start in range(0, len(pcm), FRAME_SAMPLES):
            frame = pcm[start : start + FRAME_SAMPLES]
            if len(frame) < FRAME_SAMPLES:
                frame = np.pad(frame, (0, FRAME_SAMPLES - len(frame)))
            arbiter_turn.feed(frame)
            await asyncio.sleep(0)  # let the engines' workers take the audio
        result = await arbiter_turn.finish()
        winner = result.winner
        text = winner.text if winner else ""
        heard.append({"step": listen.step_id, "heard": text, "engine": winner.engine if winner else None})
        return conversation.on_final(
            text,
            winner.confidence if winner else 0.0,
            hypotheses=[h for h in result.hypotheses if h.is_final],
            arbiter_reason=result.reason,
            winner=winner.engine if winner else None,
        )
