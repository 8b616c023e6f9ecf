"""`parley studio` (serve), `parley studio adduser` and `parley keys rotate` as a user runs them."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import sqlalchemy as sa
from click.testing import CliRunner
from tests.integration.harness import free_port
from tests.studio.conftest import card_block_call

from parley.agent.sealing import Keyring
from parley.cli import main

PARLEY = str(Path(sys.executable).parent / "parley")


def test_adduser_then_rotate_keys(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PARLEY_KEYS", raising=False)
    runner = CliRunner()
    r = runner.invoke(main, ["studio", "adduser", "ada", "--password", "s3cret-pass"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "parley-studio.keys").stat().st_mode & 0o777 == 0o600  # made on first use
    r = runner.invoke(main, ["studio", "adduser", "ada", "--password", "s3cret-pass"])
    assert r.exit_code == 1 and "exists" in r.output
    r = runner.invoke(main, ["studio", "adduser", "bob", "--password", "short"])
    assert r.exit_code == 1 and "at least 8" in r.output

    from parley.studio.server import open_store

    store = open_store("parley-studio.db", None)
    store.ingest([card_block_call("cli-1", account="31415926")])
    store.close()
    r = runner.invoke(main, ["keys", "rotate"])
    assert r.exit_code == 0, r.output
    assert "re-sealed with key k2" in r.output
    ring = Keyring.load(tmp_path / "parley-studio.keys")
    assert list(ring.keys) == ["k1", "k2"]
    engine = sa.create_engine("sqlite:///parley-studio.db")
    with engine.connect() as db:
        record = json.loads(db.execute(sa.text("SELECT record FROM calls")).scalar())
    engine.dispose()
    assert record["slots"]["account_number"]["kid"] == "k2"
    assert ring.unseal(record)["slots"]["account_number"]["value"] == "31415926"


def test_parley_studio_serves(tmp_path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PARLEY_KEYS"}
    server = subprocess.Popen(
        [PARLEY, "studio", "--port", str(port), "--database", str(tmp_path / "s.db")],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/login", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read()
                assert time.monotonic() < deadline, "the studio did not start"
                time.sleep(0.2)
        assert r.status_code == 200 and "Log in" in r.text
        assert httpx.get(f"http://127.0.0.1:{port}/api/agents").status_code == 401
    finally:
        server.terminate()
        server.wait(10)


def test_import_agent_files(tmp_path, monkeypatch) -> None:
    from tests.studio.conftest import EXAMPLES

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    example = EXAMPLES / "card_block.yaml"
    r = runner.invoke(main, ["studio", "import", str(example), "--publish"])
    assert r.exit_code == 0 and "agent card-block v1 (live)" in r.output
    same = runner.invoke(main, ["studio", "import", str(example)])
    assert same.output.endswith("card-block v1\n")  # the same text: no new version
    changed = tmp_path / "card_block.yaml"
    changed.write_text(example.read_text().replace("Welcome", "Hello"))
    assert "card-block v2" in runner.invoke(main, ["studio", "import", str(changed)]).output
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nsteps: []\n")
    r = runner.invoke(main, ["studio", "import", str(broken)])
    assert r.exit_code == 1 and "broken.yaml:" in r.output

    from parley.studio.server import open_store

    store = open_store("parley-studio.db", None)
    assert store.agent("card-block") == {"name": "card-block", "head": 2, "live": 1, "retention_days": None}
    store.close()
