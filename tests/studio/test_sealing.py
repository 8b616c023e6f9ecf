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
