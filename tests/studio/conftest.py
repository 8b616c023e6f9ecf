"""Studio fixtures: a store on SQLite and on a real PostgreSQL server (a fresh database per test),
the web app over it, and users of each role with API tokens."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from parley.agent.sealing import Keyring
from parley.studio.app import create_app
from parley.studio.store import Principal, Store

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
POSTGRES = os.environ.get("PARLEY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
PASSWORD = "correct horse battery"
# Real argon2id, with cheap parameters: the default ones cost ~0.3 s of CPU per hash on this machine.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def _reachable(url: str) -> bool:
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.OperationalError:
        return False
    return True


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server: the one at $PARLEY_TEST_POSTGRES (default 127.0.0.1:5432, database test)
    where it runs, else one started here from Debian's `postgresql` binaries (./run installs them) on a
    free port, in a temporary directory, for this test session."""
    if _reachable(POSTGRES):
        yield POSTGRES
        return
    import glob
    import shutil
    import subprocess
    import time

    from tests.integration.harness import free_port

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail(f"no PostgreSQL at {POSTGRES}, and Debian's postgresql is not installed to start one")
    bin_dir = Path(found[-1]).parent
    import tempfile

    data = Path(tempfile.mkdtemp(prefix="parley-postgres-"))  # not under pytest's root-only directory
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(data, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    made = subprocess.run(
        [*as_postgres, str(bin_dir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "postgres"],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.fail(f"initdb failed: {made.stderr}")
    port = free_port()
    options = ["-D", str(data / "db"), "-p", str(port), "-h", "127.0.0.1", "-k", str(data)]
    server = subprocess.Popen(
        [*as_postgres, str(bin_dir / "postgres"), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    deadline = time.monotonic() + 30
    while not _reachable(url):
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"could not start PostgreSQL: {server.stderr.read().decode(errors='replace')}")
        time.sleep(0.2)
    try:
        yield url
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(data, ignore_errors=True)


def postgres_database(server: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the test server; dropped afterwards."""
    import psycopg

    name = f"parley_studio_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True, connect_timeout=3) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield server.rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def keyring() -> Keyring:
    return Keyring([("k1", bytes(range(32)))])


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path, keyring) -> Iterator[Store]:
    if request.param == "sqlite":
        urls: Iterator[str] = iter([str(tmp_path / "studio.db")])
    else:
        urls = postgres_database(request.getfixturevalue("postgres_server"))
    url = next(urls)
    store = Store(url, keyring, hasher=FAST_HASHER)
    store.migrate()
    try:
        yield store
    finally:
        store.close()
        for _ in urls:  # runs the PostgreSQL clean-up
            pass


@pytest.fixture
def sqlite_store(tmp_path, keyring) -> Iterator[Store]:
    store = Store(str(tmp_path / "studio.db"), keyring, hasher=FAST_HASHER)
    store.migrate()
    yield store
    store.close()


@dataclass
class Account:
    name: str
    role: str
    token: str
    principal: Principal

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def add_account(store: Store, name: str, role: str) -> Account:
    store.add_user(name, PASSWORD, role)
    principal = store.check_password(name, PASSWORD)
    assert principal is not None
    return Account(name, role, store.add_token(name, "tests", principal), principal)


@pytest.fixture
def accounts(store) -> dict[str, Account]:
    return {role: add_account(store, role + "1", role) for role in ("admin", "editor", "viewer")}


@pytest.fixture
def client(store) -> Iterator[TestClient]:
    with TestClient(create_app(store)) as client:
        yield client


class StudioServer:
    """The studio app served by uvicorn from a thread on a loopback port (stop and start again: same port)."""

    def __init__(self, store: Store, port: int | None = None) -> None:
        from tests.integration.harness import free_port

        self.store = store
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = None
        self.thread = None

    def start(self) -> StudioServer:
        import threading
        import time

        import uvicorn

        config = uvicorn.Config(create_app(self.store), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the studio did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            self.thread.join(10)
            self.server = None


@pytest.fixture
def studio_server(store) -> Iterator[StudioServer]:
    server = StudioServer(store).start()
    yield server
    server.stop()


def login(client: TestClient, name: str, password: str = PASSWORD) -> str:
    """Log the test client in through the form; its CSRF token (read off a page)."""
    response = client.post("/login", data={"name": name, "password": password})
    assert response.status_code == 200, response.text  # followed the redirect to the agents page
    return re.search(r'name="csrf_token" value="([^"]+)"', response.text).group(1)


def agent_yaml(name: str = "card_block") -> str:
    return (EXAMPLES / f"{name}.yaml").read_text()


def card_block_call(
    call_id: str,
    *,
    account: str = "12345678",
    version: int | None = 1,
    operator: bool = False,
    hang_up_early: bool = False,
    started_at: str | None = None,
) -> dict:
    """A real call record of the card-block example: the dialogue runtime fed typed answers, as
    `parley chat` does, with two engines' hypotheses on the first turn (the webhook succeeds)."""
    from datetime import datetime

    from parley.agent.runtime import CallWebhook, Conversation
    from parley.speech.types import Hypothesis

    agent = _card_block_agent(agent_yaml())
    started = datetime.fromisoformat(started_at) if started_at else None
    conversation = Conversation(agent, call_id=call_id, started_at=started)
    conversation.record.agent_version = version
    conversation.start()
    spoken = " ".join(account)
    conversation.on_partial(spoken)
    if hang_up_early:  # one answer not understood, then the caller hangs up
        conversation.on_final("banana", 0.9)
    elif operator:
        conversation.on_final("operator please", 0.9)
    else:
        conversation.on_final(
            spoken,
            0.95,
            hypotheses=[
                Hypothesis("sphinx-grammar", spoken, 0.95, True),
                Hypothesis("sphinx-agent-lm", spoken[:-2], 0.6, True),
            ],
            arbiter_reason="grammar parse of a complete answer",
            winner="sphinx-grammar",
            # the speech layer's parts, and (as the voice layer adds them) the decision and first audio out
            timing={
                "close_after_speech_ms": 180.0,
                "asr_finish_ms": 40.0,
                "decision_ms": 225.0,
                "first_audio_ms": 310.0,
            },
        )
        conversation.on_final("the third of may nineteen eighty five", 0.9)
        actions = conversation.on_final("yes", 0.9)
        actions += conversation.on_final("yes", 0.9)
        if any(isinstance(a, CallWebhook) for a in actions):
            conversation.on_webhook_result(200, {"reference": "AB12", "last_four": account[-4:]}, None)
        conversation.on_hangup()
    if conversation.outcome is None:
        conversation.on_hangup()
    return conversation.record.to_dict()


_AGENTS: dict = {}


def _card_block_agent(text: str):
    from parley.agent.loader import load_agent_text

    if text not in _AGENTS:
        _AGENTS[text] = load_agent_text(text)
    return _AGENTS[text]
