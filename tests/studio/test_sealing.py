"""Caller data sealed with AES-GCM: round trips, key ids, tampering, rotation, key files."""

import base64
import json

import pytest
from tests.studio.conftest import card_block_call

from parley.agent.records import redact
from parley.agent.sealing import Keyring, KeyringError, is_sealed


def keys(*kids: str) -> list[tuple[str, bytes]]:
    return [(kid, bytes([i]) * 32) for i, kid in enumerate(kids, 1)]


def test_every_envelope_of_a_record_is_sealed_and_opens_again() -> None:
    ring = Keyring(keys("k1"))
    record = card_block_call("seal-1", account="87654321")
    sealed = ring.seal(record)
    text = json.dumps(sealed)
    assert "87654321" not in text and "8 7 6 5" not in text and "nineteen eighty" not in text
    assert sealed["slots"]["account_number"]["kid"] == "k1"
    assert is_sealed(sealed["turns"][0]["transcript"])
    assert sealed["prompts"][0] == record["prompts"][0]  # prompts without caller data stay readable
    assert ring.unseal(sealed) == record
    assert redact(sealed)["slots"]["account_number"] == {"sensitive": True, "redacted": True}


def test_a_value_under_an_unknown_key_or_altered_does_not_open() -> None:
    ring = Keyring(keys("k1"))
    envelope = ring.encrypt("12345678")
    with pytest.raises(KeyringError, match="'k9'"):
        ring.decrypt({**envelope, "kid": "k9"})
    raw = bytearray(base64.b64decode(envelope["sealed"]))
    raw[-1] ^= 1
    with pytest.raises(KeyringError, match="does not open"):
        ring.decrypt({**envelope, "sealed": base64.b64encode(bytes(raw)).decode()})
    # the key id is bound to the ciphertext: the same key under another id is refused
    twin = Keyring([("k1", bytes([1]) * 32), ("k2", bytes([1]) * 32)])
    with pytest.raises(KeyringError, match="does not open"):
        twin.decrypt({**envelope, "kid": "k2"})


def test_reseal_moves_values_to_the_newest_key_only() -> None:
    old = Keyring(keys("k1"))
    sealed = old.seal(card_block_call("seal-2"))
    new = Keyring(keys("k1", "k2"))
    resealed, count = new.reseal(sealed)
    assert count > 5
    assert resealed["slots"]["account_number"]["kid"] == "k2"
    assert new.unseal(resealed) == old.unseal(sealed)
    assert new.reseal(resealed)[1] == 0  # nothing left under an old key


def test_key_file_and_environment(tmp_path) -> None:
    path = tmp_path / "keys"
    path.write_text("# keys\n" + Keyring.new_key_line("a") + "\n" + Keyring.new_key_line("b") + "\n")
    assert Keyring.load(path).active == "b"
    assert Keyring.load(None, env={"PARLEY_KEYS": Keyring.new_key_line("e1")}).active == "e1"
    assert Keyring.load(None, env={}) is None
    path.write_text("a:not-base64!\n")
    with pytest.raises(KeyringError, match="not base64"):
        Keyring.load(path)
    path.write_text("a:" + base64.b64encode(b"short").decode())
    with pytest.raises(KeyringError, match="32 bytes"):
        Keyring.load(path)
    with pytest.raises(KeyringError, match="cannot read"):
        Keyring.load(tmp_path / "missing")


def test_records_file_is_sealed_when_the_node_has_keys(tmp_path) -> None:
    from parley.agent.records import CallRecord

    ring = Keyring(keys("k1"))
    record = CallRecord("call-x", "card-block", "2026-01-01T00:00:00+00:00", agent_version=3)
    record.slots["account_number"] = "55512345"
    record.audio[0] = base64.b64encode(b"RIFF....").decode()
    path = tmp_path / "calls.jsonl"
    record.write_jsonl(path, ring)
    line = path.read_text()
    assert "55512345" not in line and "RIFF" not in base64.b64decode(
        json.loads(line)["audio"]["0"]["sealed"]
    ).decode("latin-1")
    stored = json.loads(line)
    assert stored["agent_version"] == 3 and stored["audio"]["0"]["kid"] == "k1"
    assert ring.unseal(stored)["slots"]["account_number"]["value"] == "55512345"


def test_cluster_workers_get_the_studio_options_and_a_records_file_each() -> None:
    from pathlib import Path

    from parley.cluster.node import worker_command
    from parley.cluster.supervisor import WorkerPlan

    options = {
        "agent": "card-block",
        "host": "127.0.0.1",
        "transport": "udp",
        "max_load": 0.85,
        "media_timeout": 30.0,
        "drain": 0.0,
        "records": Path("calls.jsonl"),
        "decode_processes": 1,
        "max_calls": None,
        "studio": "http://127.0.0.1:8700",
        "token": "pst_x",
        "key_file": Path("keys"),
    }
    cmd = worker_command(options, {"verbose": 0})(WorkerPlan(1, 5062, (20000, 30000)), Path("stats.json"))
    assert cmd[cmd.index("--studio") + 1] == "http://127.0.0.1:8700"
    assert "--token" not in cmd and "pst_x" not in cmd  # a secret goes in the environment (serve_node)
    assert cmd[cmd.index("--records") + 1] == "calls.jsonl.w1"
    assert cmd[cmd.index("--key-file") + 1] == "keys"


def test_a_running_store_picks_up_a_rotated_key_file(tmp_path) -> None:
    from argon2 import PasswordHasher

    from parley.studio.store import Store

    path = tmp_path / "keys"
    path.write_text(Keyring.new_key_line("k1") + "\n")
    running = Store(
        str(tmp_path / "s.db"), Keyring.load(path), hasher=PasswordHasher(time_cost=1, memory_cost=1024)
    )
    running.migrate()
    running.ingest([card_block_call("live-1", account="13572468")])
    with path.open("a") as out:  # `parley keys rotate` in another process
        out.write(Keyring.new_key_line("k2") + "\n")
    rotator = Store(str(tmp_path / "s.db"), Keyring.load(path))
    assert rotator.rotate() > 0
    record = running.call("live-1")["record"]
    assert record["slots"]["account_number"]["kid"] == "k2"
    assert running.keyring.unseal(record)["slots"]["account_number"]["value"] == "13572468"
    assert running.keyring.active == "k2"  # new values now use the new key
    rotator.close()
    running.close()
