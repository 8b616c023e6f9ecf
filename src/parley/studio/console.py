"""The studio's test console: chat with any saved version of an agent in the browser, as `parley chat`
does in a terminal (the same text driver, :mod:`parley.agent.textchat`). Webhooks are simulated with
a sample answer: the studio never calls the URLs an agent file names (they may point anywhere inside
the network it runs in).

Sessions live in the studio process's memory, belong to the user who opened them, and expire.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from parley.agent.loader import load_agent_text
from parley.agent.runtime import Conversation
from parley.agent.textchat import perform, say_typed

SESSION_TTL_S = 30 * 60
MAX_SESSIONS = 200
MAX_LINE = 500


@dataclass
class ConsoleSession:
    id: str
    agent: str
    version: int
    user_id: int
    conversation: Conversation
    lines: list[str] = field(default_factory=list)
    ended: bool = False
    touched: float = field(default_factory=time.monotonic)

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "agent": self.agent,
            "version": self.version,
            "lines": list(self.lines),
            "ended": self.ended,
        }
        if self.ended:
            out["summary"] = self.conversation.record.summary(show_values=True)
        return out


class Consoles:
    """Open console sessions (thread-safe: the web app runs handlers in threads)."""

    def __init__(self) -> None:
        self.sessions: dict[str, ConsoleSession] = {}
        self.lock = threading.Lock()

    def open(self, agent: str, version: int, text: str, user_id: int) -> ConsoleSession:
        session = ConsoleSession(
            secrets.token_urlsafe(12),
            agent,
            version,
            user_id,
            Conversation(load_agent_text(text, f"{agent}.yaml"), call_id=f"console-{secrets.token_hex(6)}"),
        )
        session.conversation.record.agent_version = version
        with self.lock:
            self._expire()
            if len(self.sessions) >= MAX_SESSIONS:
                oldest = min(self.sessions.values(), key=lambda s: s.touched)
                del self.sessions[oldest.id]
            self.sessions[session.id] = session
        self._run(session, session.conversation.start())
        return session

    def get(self, session_id: str, user_id: int) -> ConsoleSession:
        with self.lock:
            self._expire()
            session = self.sessions.get(session_id)
        if session is None or session.user_id != user_id:
            raise LookupError(f"no console session {session_id!r} (they expire after 30 minutes)")
        session.touched = time.monotonic()
        return session

    def turn(
        self,
        session: ConsoleSession,
        *,
        text: str | None = None,
        dtmf: str | None = None,
        hangup: bool = False,
    ) -> ConsoleSession:
        """The caller's next move: a typed answer, keypad digits, silence (neither), or hanging up."""
        conversation = session.conversation
        if session.ended:
            return session
        if hangup:
            conversation.on_hangup()
            session.lines.append("[caller hung up]")
            session.ended = True
            return session
        if dtmf:
            digits = "".join(c for c in dtmf if c in "0123456789*#")[:MAX_LINE]
            session.lines.append(f"you> [keys {digits}]")
            actions = conversation.on_dtmf(digits)
            if not actions:
                session.lines.append("[keypad input not accepted here]")
        elif text and text.strip():
            line = text.strip()[:MAX_LINE]
            session.lines.append(f"you> {line}")
            actions = say_typed(conversation, line, 1.0, session.lines.append)
        else:
            session.lines.append("you> [silence]")
            actions = conversation.on_no_input()
        self._run(session, actions)
        return session

    def _run(self, session: ConsoleSession, actions: list[Any]) -> None:
        with self.lock:  # one move of one session at a time
            if perform(session.conversation, actions, True, session.lines.append):
                session.ended = True

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self.sessions.items() if now - s.touched > SESSION_TTL_S]:
            del self.sessions[key]
