"""The studio's store: users, agents and their versions, calls, the audit log, on SQLAlchemy 2.

SQLite is the embedded default; PostgreSQL with ``postgresql://...`` (driven by psycopg 3). The schema
is made and upgraded by Alembic (:func:`migrate`). Every method is one transaction; the web layer maps
the exceptions below to HTTP statuses (404, 409, 422, 403).

Caller data never reaches the database in clear: call records are stored with every sensitive
envelope sealed by the :class:`~parley.agent.sealing.Keyring` (AES-GCM, key id per value).
"""

from __future__ import annotations

import base64
import difflib
import functools
import hashlib
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session, sessionmaker

from parley.agent.loader import AgentError, AgentFileError, load_agent_text
from parley.agent.model import Agent as AgentModel
from parley.agent.model import AskStep
from parley.agent.records import RECORD_FORMAT
from parley.agent.sealing import Keyring, KeyringError, is_sealed
from parley.studio.models import (
    ROLES,
    Agent,
    AgentVersion,
    ApiToken,
    AuditEntry,
    Call,
    CallSlot,
    Deployment,
    LoginSession,
    ReplaySet,
    TurnAudio,
    User,
)

MIGRATIONS = Path(__file__).parent / "migrations"
SESSION_TTL = timedelta(hours=12)
COUNT_CAP = 1_000  # the call list counts matches up to this (then "more than"): a count scans its matches
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class NotFound(LookupError):
    """No such agent, version, call or user."""


class Conflict(Exception):
    """The thing changed since the caller read it (optimistic locking), or already exists."""


class Invalid(ValueError):
    """Input that cannot be stored; ``errors`` are located agent-file errors where there are any."""

    def __init__(self, message: str, errors: list[AgentError] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is acting: a logged-in user or an API token's user."""

    user_id: int
    name: str
    role: str
    csrf: str | None = None  # the login session's CSRF token (None for API tokens)

    @property
    def can_edit(self) -> bool:
        return self.role in ("admin", "editor")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def database_url(url: str) -> str:
    """SQLAlchemy's URL for ``url``: PostgreSQL through psycopg 3; a bare path is an SQLite file."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if "://" not in url:
        return f"sqlite:///{url}"
    return url


def _now() -> datetime:
    return datetime.now(UTC)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes: they were stored in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Store:
    """One database; thread-safe (a session per call)."""

    def __init__(self, url: str, keyring: Keyring, *, hasher: PasswordHasher | None = None) -> None:
        self.url = database_url(url)
        self.keyring = keyring
        self.hasher = hasher or PasswordHasher()  # argon2id, RFC 9106's low-memory profile
        self._step_slots_cache: dict[tuple[str, int], dict[str, str]] = {}
        options: dict[str, Any] = {}
        if self.url.startswith("sqlite"):
            options["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine = sa.create_engine(self.url, **options)
        if self.url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest migration."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # -- users, logins, tokens ----------------------------------------------------------------
    def add_user(self, name: str, password: str, role: str) -> None:
        if role not in ROLES:
            raise Invalid(f"role must be one of {', '.join(ROLES)}")
        if not name or len(name) > 64:
            raise Invalid("a user name has 1 to 64 characters")
        if len(password) < 8:
            raise Invalid("a password has at least 8 characters")
        with self.session() as s:
            if s.scalar(sa.select(User).where(User.name == name)) is not None:
                raise Conflict(f"user {name!r} exists")
            s.add(User(name=name, role=role, password_hash=self.hasher.hash(password), created_at=_now()))

    def users(self) -> list[dict[str, Any]]:
        with self.session() as s:
            return [{"name": u.name, "role": u.role} for u in s.scalars(sa.select(User).order_by(User.name))]

    def check_password(self, name: str, password: str) -> Principal | None:
        """The user if ``password`` is theirs (argon2; the hash is upgraded when parameters changed)."""
        with self.session() as s:
            user = s.scalar(sa.select(User).where(User.name == name))
            if user is None:
                self.hasher.hash(password)  # the same work either way: no timing hint of which names exist
                return None
            try:
                self.hasher.verify(user.password_hash, password)
            except (VerificationError, InvalidHashError):
                return None
            if self.hasher.check_needs_rehash(user.password_hash):
                user.password_hash = self.hasher.hash(password)
            return Principal(user.id, user.name, user.role)

    def open_session(self, principal: Principal) -> tuple[str, str]:
        """A new login session: (cookie token, CSRF token)."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self.session() as s:
            s.execute(sa.delete(LoginSession).where(LoginSession.expires_at < _now()))
            s.add(
                LoginSession(
                    token_hash=_digest(token),
                    user_id=principal.user_id,
                    csrf=csrf,
                    expires_at=_now() + SESSION_TTL,
                )
            )
        return token, csrf

    def session_principal(self, token: str) -> Principal | None:
        with self.session() as s:
            row = s.execute(
                sa.select(LoginSession, User)
                .join(User, User.id == LoginSession.user_id)
                .where(LoginSession.token_hash == _digest(token))
            ).first()
            if row is None or _aware(row[0].expires_at) < _now():
                return None
            login, user = row
            return Principal(user.id, user.name, user.role, csrf=login.csrf)

    def close_session(self, token: str) -> None:
        with self.session() as s:
            s.execute(sa.delete(LoginSession).where(LoginSession.token_hash == _digest(token)))

    def add_token(self, user: str, label: str, actor: Principal) -> str:
        """A new API token for ``user`` (admins for anyone, others for themselves); shown once."""
        if user != actor.name and not actor.is_admin:
            raise PermissionError("only admins make tokens for other users")
        token = "pst_" + secrets.token_urlsafe(32)
        with self.session() as s:
            owner = s.scalar(sa.select(User).where(User.name == user))
            if owner is None:
                raise NotFound(f"no user {user!r}")
            s.add(ApiToken(token_hash=_digest(token), user_id=owner.id, label=label[:100], created_at=_now()))
            self._audit(s, actor, "token", user, label[:100])
        return token

    def token_principal(self, token: str) -> Principal | None:
        with self.session() as s:
            user = s.scalar(
                sa.select(User)
                .join(ApiToken, ApiToken.user_id == User.id)
                .where(ApiToken.token_hash == _digest(token))
            )
            return None if user is None else Principal(user.id, user.name, user.role)

    # -- agents and versions ------------------------------------------------------------------
    def create_agent(self, name: str, text: str, actor: Principal) -> int:
        """A new agent with ``text`` as version 1 (validated first)."""
        if not re.match(NAME_PATTERN, name):
            raise Invalid("an agent name is lower-case letters, digits, '-' and '_' (at most 64)")
        _validated(text, name)
        with self.session() as s:
            if s.scalar(sa.select(Agent).where(Agent.name == name)) is not None:
                raise Conflict(f"agent {name!r} exists")
            agent = Agent(name=name, head=0, created_at=_now())
            s.add(agent)
            s.flush()
            return self._add_version(s, agent, text, actor, "created")

    def save_version(self, name: str, text: str, base: int, actor: Principal, note: str = "") -> int:
        """Save ``text`` as the agent's next version. ``base`` is the version the editor started from:
        if another save came in since, :class:`Conflict` (nothing is overwritten)."""
        _validated(text, name)
        with self.session() as s:
            agent = self._agent(s, name, lock=True)
            if base != agent.head:
                raise Conflict(
                    f"agent {name!r} is at version {agent.head} now, but this edit started from version "
                    f"{base}: reload, merge your change and save again"
                )
            # The guarded update is the lock that also holds on databases without SELECT ... FOR UPDATE.
            updated = s.execute(
                sa.update(Agent).where(Agent.id == agent.id, Agent.head == base).values(head=base + 1)
            ).rowcount
            if updated != 1:
                raise Conflict(f"agent {name!r} changed while saving: reload and save again")
            agent.head = base  # _add_version bumps it
            return self._add_version(s, agent, text, actor, note)

    def _add_version(self, s: Session, agent: Agent, text: str, actor: Principal, note: str) -> int:
        number = agent.head + 1
        self._step_slots_cache.clear()  # a version named by records before it existed exists now
        s.add(
            AgentVersion(
                agent_id=agent.id,
                number=number,
                yaml=text,
                author=actor.name,
                note=note[:200],
                created_at=_now(),
            )
        )
        agent.head = number
        return number

    def agents(self) -> list[dict[str, Any]]:
        with self.session() as s:
            return [_agent_dict(a) for a in s.scalars(sa.select(Agent).order_by(Agent.name))]

    def agent(self, name: str) -> dict[str, Any]:
        with self.session() as s:
            return _agent_dict(self._agent(s, name))

    def versions(self, name: str) -> list[dict[str, Any]]:
        with self.session() as s:
            agent = self._agent(s, name)
            rows = s.scalars(
                sa.select(AgentVersion)
                .where(AgentVersion.agent_id == agent.id)
                .order_by(AgentVersion.number.desc())
            )
            return [_version_dict(v, agent, with_text=False) for v in rows]

    def version(self, name: str, number: int | None = None) -> dict[str, Any]:
        """One version with its YAML (the newest when ``number`` is None)."""
        with self.session() as s:
            agent = self._agent(s, name)
            version = self._version(s, agent, agent.head if number is None else number)
            return _version_dict(version, agent, with_text=True)

    def live(self, name: str) -> dict[str, Any]:
        """The live version with its YAML (what serving nodes run)."""
        with self.session() as s:
            agent = self._agent(s, name)
            if agent.live is None:
                raise NotFound(f"agent {name!r} has no live version yet: publish one")
            return _version_dict(self._version(s, agent, agent.live), agent, with_text=True)

    def diff(self, name: str, old: int, new: int) -> list[str]:
        """Unified diff lines from version ``old`` to version ``new``."""
        a, b = self.version(name, old), self.version(name, new)
        return list(
            difflib.unified_diff(
                a["yaml"].splitlines(),
                b["yaml"].splitlines(),
                f"{name} v{old}",
                f"{name} v{new}",
                lineterm="",
            )
        )

    def publish(self, name: str, number: int, actor: Principal, *, action: str = "publish") -> dict[str, Any]:
        """Make version ``number`` live (``action`` "rollback" when it is an earlier one); audited."""
        with self.session() as s:
            agent = self._agent(s, name, lock=True)
            self._version(s, agent, number)
            previous = agent.live
            agent.live = number
            s.add(Deployment(agent_id=agent.id, number=number, action=action, user=actor.name, at=_now()))
            self._audit(
                s, actor, action, name, f"live v{previous} -> v{number}" if previous else f"live v{number}"
            )
            return _agent_dict(agent)

    def deployments(self, name: str) -> list[dict[str, Any]]:
        """Every publish and rollback of the agent, newest first."""
        with self.session() as s:
            agent = self._agent(s, name)
            rows = s.scalars(
                sa.select(Deployment).where(Deployment.agent_id == agent.id).order_by(Deployment.id.desc())
            )
            return [
                {"number": d.number, "action": d.action, "user": d.user, "at": _aware(d.at).isoformat()}
                for d in rows
            ]

    def rollback(self, name: str, actor: Principal, number: int | None = None) -> dict[str, Any]:
        """Back to ``number``, or to the version that was live before the current one, in one action."""
        if number is None:
            number = self._previous_live(name)
        return self.publish(name, number, actor, action="rollback")

    def _previous_live(self, name: str) -> int:
        """The version that was live before the current live version went live."""
        history = self.deployments(name)
        if not history:
            raise Conflict(f"agent {name!r} was never published")
        current = history[0]["number"]
        for entry in history[1:]:
            if entry["number"] != current:
                return entry["number"]
        raise Conflict(f"agent {name!r} has no earlier live version to roll back to")

    def set_retention(self, name: str, days: int | None, actor: Principal) -> None:
        with self.session() as s:
            agent = self._agent(s, name)
            agent.retention_days = days
            self._audit(s, actor, "retention", name, f"{days} days" if days else "kept")

    def _agent(self, s: Session, name: str, *, lock: bool = False) -> Agent:
        query = sa.select(Agent).where(Agent.name == name)
        if lock:
            query = query.with_for_update()
        agent = s.scalar(query)
        if agent is None:
            raise NotFound(f"no agent {name!r}")
        return agent

    def _version(self, s: Session, agent: Agent, number: int) -> AgentVersion:
        version = s.scalar(
            sa.select(AgentVersion).where(AgentVersion.agent_id == agent.id, AgentVersion.number == number)
        )
        if version is None:
            raise NotFound(f"agent {agent.name!r} has no version {number}")
        return version

    # -- calls ----------------------------------------------------------------------------------
    def ingest(self, records: list[dict[str, Any]]) -> int:
        """Store call records (``parley.call/1``), caller data sealed; a record's ``audio`` (turn index →
        sensitive envelope of a base64 WAV) goes to its own table. A call already stored is kept as it
        was (nodes resend after an outage): returns how many were new. All or nothing."""
        rows = [self._call_row(record) for record in records]
        with self.session() as s:
            ids = [row["call_id"] for row, _, _ in rows]
            known = set(s.scalars(sa.select(Call.call_id).where(Call.call_id.in_(ids))))
            fresh = []
            for row, slots, audio in rows:
                if row["call_id"] not in known:
                    known.add(row["call_id"])
                    fresh.append((row, slots, audio))
            if not fresh:
                return 0
            # one INSERT ... RETURNING for the batch (SQLAlchemy's insertmanyvalues), then its children
            inserted = s.execute(
                sa.insert(Call).returning(Call.id, Call.call_id), [row for row, _, _ in fresh]
            )
            pk = {call_id: id_ for id_, call_id in inserted}
            slot_rows = [
                {"call_id": pk[row["call_id"]], "name": name, "status": status}
                for row, slots, _ in fresh
                for name, status in slots.items()
            ]
            audio_rows = [
                {
                    "call_id": pk[row["call_id"]],
                    "turn": turn,
                    "kid": env["kid"],
                    "data": env["sealed"].encode(),
                }
                for row, _, audio in fresh
                for turn, env in audio.items()
            ]
            if slot_rows:
                s.execute(sa.insert(CallSlot), slot_rows)
            if audio_rows:
                s.execute(sa.insert(TurnAudio), audio_rows)
        return len(fresh)

    def _call_row(
        self, record: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, str], dict[int, dict[str, Any]]]:
        """A record's ``calls`` row (its caller data sealed), its slots' statuses and its turns' audio."""
        if not isinstance(record, dict) or record.get("record") != RECORD_FORMAT:
            raise Invalid(f'not a call record: expected "record": "{RECORD_FORMAT}"')
        call_id, agent = record.get("call_id"), record.get("agent")
        if not isinstance(call_id, str) or not call_id or len(call_id) > 128:
            raise Invalid("a call record needs a call_id (1 to 128 characters)")
        if not isinstance(agent, str) or not agent or len(agent) > 64:
            raise Invalid("a call record needs its agent's name")
        try:
            started = datetime.fromisoformat(str(record.get("started_at")))
        except ValueError as exc:
            raise Invalid("started_at must be an ISO 8601 time") from exc
        version = record.get("agent_version")
        duration = record.get("duration_s")
        turns = record.get("turns") or []
        if not isinstance(turns, list) or not isinstance(record.get("slots", {}), dict):
            raise Invalid("turns must be a list and slots a mapping")
        audio = record.get("audio") or {}
        if not isinstance(audio, dict) or not all(str(k).isdigit() for k in audio):
            raise Invalid("audio must map turn numbers to sensitive envelopes")
        try:
            audio_free = {k: v for k, v in record.items() if k != "audio"}
            sealed, _ = self.keyring.reseal(self.keyring.unseal(audio_free))
            sealed_audio = {int(k): self.keyring.reseal(self.keyring.unseal(v))[0] for k, v in audio.items()}
        except (KeyringError, ValueError, TypeError) as exc:
            raise Invalid(f"cannot read the record's caller data: {exc}") from exc
        if not all(is_sealed(env) for env in sealed_audio.values()):
            raise Invalid("each turn's audio must be a sensitive envelope")
        slots = {name: "filled" for name in record.get("slots") or {}}
        asked = self._asked_slots(agent, version if isinstance(version, int) else None, turns)
        for name in asked:
            slots.setdefault(name, "missing")
        row = {
            "call_id": call_id,
            "agent": agent,
            "version": version if isinstance(version, int) else None,
            "started_at": _aware(started),
            "duration_s": float(duration) if isinstance(duration, int | float) else None,
            "outcome": record.get("outcome") if isinstance(record.get("outcome"), str) else None,
            "transferred": record.get("outcome") == "transferred",
            "turns": len(turns),
            "record": sealed,
        }
        return row, slots, sealed_audio

    def _asked_slots(self, agent: str, version: int | None, turns: list[Any]) -> list[str]:
        steps = self.step_slots(agent, version)
        return list(
            dict.fromkeys(steps[t["step"]] for t in turns if isinstance(t, dict) and t.get("step") in steps)
        )

    def step_slots(self, agent: str, version: int | None) -> dict[str, str]:
        """Ask step id → its slot, for an agent version stored here (empty when unknown)."""
        if version is None:
            return {}
        known = self._step_slots_cache.get((agent, version))
        if known is not None:  # versions never change once saved (a save clears the misses)
            return known
        try:
            found = _step_slots(self.version(agent, version)["yaml"])
        except NotFound:
            found = {}
        if len(self._step_slots_cache) > 1024:
            self._step_slots_cache.clear()
        self._step_slots_cache[(agent, version)] = found
        return found

    def calls(
        self,
        *,
        agent: str | None = None,
        version: int | None = None,
        outcome: str | None = None,
        transferred: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        min_duration: float | None = None,
        max_duration: float | None = None,
        slot: str | None = None,
        slot_status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Calls matching every filter given, newest first: (how many match, at most ``COUNT_CAP + 1``
        meaning "more than COUNT_CAP"; one page of them)."""
        query = sa.select(Call)
        if agent is not None:
            query = query.where(Call.agent == agent)
        if version is not None:
            query = query.where(Call.version == version)
        if outcome is not None:
            query = query.where(Call.outcome == outcome)
        if transferred is not None:
            query = query.where(Call.transferred == transferred)
        if since is not None:
            query = query.where(Call.started_at >= since)
        if until is not None:
            query = query.where(Call.started_at < until)
        if min_duration is not None:
            query = query.where(Call.duration_s >= min_duration)
        if max_duration is not None:
            query = query.where(Call.duration_s <= max_duration)
        if slot is not None:
            status_filter = CallSlot.status == (slot_status or "filled")
            query = query.where(
                sa.exists().where(CallSlot.call_id == Call.id, CallSlot.name == slot, status_filter)
            )
        with self.session() as s:
            # counted up to COUNT_CAP + 1 only: past that the list says "more than COUNT_CAP" (an exact
            # count of a broad filter over a large table costs more than the page itself)
            capped = query.with_only_columns(Call.id).limit(COUNT_CAP + 1).subquery()
            total = s.scalar(sa.select(sa.func.count()).select_from(capped)) or 0
            page = s.scalars(
                query.order_by(Call.started_at.desc(), Call.id.desc()).limit(limit).offset(offset)
            )
            return total, [_call_summary(c) for c in page]

    def version_records(self, agent: str, version: int, limit: int = 5000) -> list[dict[str, Any]]:
        """The newest ``limit`` call records of one agent version (caller data still sealed)."""
        with self.session() as s:
            rows = s.scalars(
                sa.select(Call.record)
                .where(Call.agent == agent, Call.version == version)
                .order_by(Call.started_at.desc())
                .limit(limit)
            )
            return list(rows)

    def call(self, call_id: str) -> dict[str, Any]:
        """One call: its summary and its record, caller data still sealed."""
        with self.session() as s:
            row = s.scalar(sa.select(Call).where(Call.call_id == call_id))
            if row is None:
                raise NotFound(f"no call {call_id!r}")
            audio = s.scalars(sa.select(TurnAudio.turn).where(TurnAudio.call_id == row.id)).all()
            return {**_call_summary(row), "record": row.record, "audio_turns": sorted(audio)}

    def turn_audio(self, call_id: str, turn: int) -> bytes:
        """A turn's caller audio (opened)."""
        with self.session() as s:
            row = s.execute(
                sa.select(TurnAudio)
                .join(Call, Call.id == TurnAudio.call_id)
                .where(Call.call_id == call_id, TurnAudio.turn == turn)
            ).scalar()
            if row is None:
                raise NotFound(f"no audio for turn {turn} of call {call_id!r}")
            return base64.b64decode(self.keyring.decrypt({"kid": row.kid, "sealed": row.data.decode()}))

    def purge(self, now: datetime | None = None) -> int:
        """Delete calls (and their audio) older than their agent's retention period; how many."""
        now = now or _now()
        removed = 0
        with self.session() as s:
            for agent in s.scalars(sa.select(Agent).where(Agent.retention_days.is_not(None))):
                cutoff = now - timedelta(days=agent.retention_days or 0)
                old = sa.select(Call.id).where(Call.agent == agent.name, Call.started_at < cutoff)
                s.execute(sa.delete(CallSlot).where(CallSlot.call_id.in_(old)))
                s.execute(sa.delete(TurnAudio).where(TurnAudio.call_id.in_(old)))
                removed += s.execute(
                    sa.delete(Call).where(Call.agent == agent.name, Call.started_at < cutoff)
                ).rowcount
        return removed

    def optimize(self) -> None:
        """Refresh the query planner's statistics (the running studio does it hourly): SQLite never
        gathers them by itself, and PostgreSQL's autovacuum may not have yet after a burst of ingest."""
        with self.engine.connect() as db:
            if self.engine.dialect.name == "sqlite":
                db.exec_driver_sql("PRAGMA optimize=0x10002")  # analyse what needs it, tables included
            else:
                db.exec_driver_sql("ANALYZE")
            db.commit()

    def rotate(self, batch: int = 500) -> int:
        """Re-seal every stored value under the keyring's active key, a batch per transaction (the
        studio keeps serving meanwhile: old keys stay readable). Returns how many values changed."""
        changed = 0
        last = 0
        while True:
            with self.session() as s:
                rows = s.scalars(sa.select(Call).where(Call.id > last).order_by(Call.id).limit(batch)).all()
                if not rows:
                    break
                for row in rows:
                    resealed, count = self.keyring.reseal(row.record)
                    if count and _stale(row.record, self.keyring.active):
                        row.record = resealed
                        changed += count
                    last = row.id
        while True:
            with self.session() as s:
                audio = s.scalars(
                    sa.select(TurnAudio).where(TurnAudio.kid != self.keyring.active).limit(batch)
                ).all()
                if not audio:
                    break
                for item in audio:
                    value = self.keyring.decrypt({"kid": item.kid, "sealed": item.data.decode()})
                    sealed = self.keyring.encrypt(value)
                    item.kid, item.data = sealed["kid"], sealed["sealed"].encode()
                    changed += 1
        return changed

    # -- replay sets ----------------------------------------------------------------------------
    def add_replay_set(
        self, agent: str, name: str, call_ids: list[str], required: bool, actor: Principal
    ) -> None:
        """Save calls of ``agent`` as a named replay set (a regression suite when ``required``)."""
        if not call_ids:
            raise Invalid("a replay set needs at least one call")
        with self.session() as s:
            row = self._agent(s, agent)
            found = set(
                s.scalars(sa.select(Call.call_id).where(Call.call_id.in_(call_ids), Call.agent == agent))
            )
            missing = [c for c in call_ids if c not in found]
            if missing:
                raise NotFound(f"no call {missing[0]!r} of agent {agent!r}")
            if s.scalar(sa.select(ReplaySet).where(ReplaySet.agent_id == row.id, ReplaySet.name == name)):
                raise Conflict(f"agent {agent!r} has a replay set {name!r}")
            s.add(
                ReplaySet(
                    agent_id=row.id,
                    name=name,
                    call_ids=list(dict.fromkeys(call_ids)),
                    required=required,
                    author=actor.name,
                    created_at=_now(),
                )
            )
            self._audit(
                s,
                actor,
                "replay-set",
                agent,
                f"{name}: {len(call_ids)} calls" + (", required" if required else ""),
            )

    def replay_sets(self, agent: str) -> list[dict[str, Any]]:
        with self.session() as s:
            row = self._agent(s, agent)
            sets = s.scalars(
                sa.select(ReplaySet).where(ReplaySet.agent_id == row.id).order_by(ReplaySet.name)
            )
            return [
                {"name": r.name, "calls": list(r.call_ids), "required": r.required, "author": r.author}
                for r in sets
            ]

    # -- audit ----------------------------------------------------------------------------------
    def audit(self, actor: Principal, action: str, target: str, detail: str = "") -> None:
        with self.session() as s:
            self._audit(s, actor, action, target, detail)

    def _audit(self, s: Session, actor: Principal, action: str, target: str, detail: str) -> None:
        s.add(AuditEntry(at=_now(), user=actor.name, action=action, target=target[:200], detail=detail[:500]))

    def audit_log(self, limit: int = 200) -> list[dict[str, Any]]:
        with self.session() as s:
            rows = s.scalars(sa.select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit))
            return [
                {
                    "at": _aware(e.at).isoformat(),
                    "user": e.user,
                    "action": e.action,
                    "target": e.target,
                    "detail": e.detail,
                }
                for e in rows
            ]


def _stale(node: Any, active: str) -> bool:
    """Whether any sealed value in ``node`` is under another key than ``active``."""
    if is_sealed(node):
        return node["kid"] != active
    if isinstance(node, dict):
        return any(_stale(v, active) for v in node.values())
    if isinstance(node, list):
        return any(_stale(v, active) for v in node)
    return False


def validate_text(text: str, name: str) -> list[AgentError]:
    """Every problem in agent YAML ``text`` (the messages of ``parley validate``, file ``NAME.yaml``)."""
    try:
        _validated(text, name)
    except Invalid as exc:
        return exc.errors
    return []


def _validated(text: str, name: str) -> AgentModel:
    try:
        return load_agent_text(text, f"{name}.yaml")
    except AgentFileError as exc:
        raise Invalid(f"{len(exc.errors)} error(s) in the agent", exc.errors) from None


@functools.lru_cache(maxsize=256)
def _step_slots(text: str) -> dict[str, str]:
    try:
        agent = load_agent_text(text)
    except AgentFileError:
        return {}
    return {step.id: step.slot for step in agent.steps if isinstance(step, AskStep)}


def _agent_dict(agent: Agent) -> dict[str, Any]:
    return {
        "name": agent.name,
        "head": agent.head,
        "live": agent.live,
        "retention_days": agent.retention_days,
    }


def _version_dict(version: AgentVersion, agent: Agent, *, with_text: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "agent": agent.name,
        "number": version.number,
        "author": version.author,
        "note": version.note,
        "created_at": _aware(version.created_at).isoformat(),
        "live": version.number == agent.live,
    }
    if with_text:
        out["yaml"] = version.yaml
    return out


def _call_summary(call: Call) -> dict[str, Any]:
    return {
        "call_id": call.call_id,
        "agent": call.agent,
        "version": call.version,
        "started_at": _aware(call.started_at).isoformat(),
        "duration_s": call.duration_s,
        "outcome": call.outcome,
        "transferred": call.transferred,
        "turns": call.turns,
    }


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
