"""Caller data encrypted at rest: AES-GCM over each sensitive envelope of a call record.

A call record marks every piece of caller data as ``{"sensitive": true, "value": V}``
(:mod:`parley.agent.records`). Sealing replaces the value by its ciphertext and the id of the key
that made it::

    {"sensitive": true, "kid": "k2", "sealed": "<base64 of 12-byte nonce + AES-GCM ciphertext>"}

so records can be stored in a JSONL file or a database without caller data in clear, and keys can be
rotated value by value (:meth:`Keyring.reseal`): every key a value may still carry stays in the
keyring, new values use the newest. The key id is bound to the ciphertext as associated data, so a
value cannot be passed off under another key's id.

Keys come from a key file (one ``KID:BASE64KEY`` a line, the last line is the active key; ``#``
comments) or the environment (``PARLEY_KEYS="k1:...,k2:..."``, the last one active). The AES-GCM
itself is the ``cryptography`` package's; only the envelope walk is ours.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEYS_ENV = "PARLEY_KEYS"
NONCE_BYTES = 12
_KID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class KeyringError(ValueError):
    """A key file or key variable that cannot be used, or a value sealed with an unknown key."""


class Keyring:
    """AES-256-GCM keys by id; the last one added seals new values."""

    def __init__(self, keys: list[tuple[str, bytes]], *, path: Path | None = None) -> None:
        self.path = path  # the key file, read again when a value names a key not seen yet (rotation)
        self._use(keys)

    def _use(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise KeyringError("a keyring needs at least one key")
        found: dict[str, AESGCM] = {}
        for kid, key in keys:
            if not _KID.match(kid):
                raise KeyringError(f"bad key id {kid!r}: letters, digits, '_', '.', '-' (at most 32)")
            if kid in found:
                raise KeyringError(f"key id {kid!r} appears twice")
            if len(key) != 32:
                raise KeyringError(f"key {kid!r} must be 32 bytes (AES-256), not {len(key)}")
            found[kid] = AESGCM(key)
        self.keys, self.active = found, keys[-1][0]

    def reload(self) -> bool:
        """Read the key file again (a rotation added a key): True when it brought a key id not known
        before, which then also seals new values. A running studio thus reads the values that
        ``parley keys rotate`` re-sealed, without a restart."""
        if self.path is None:
            return False
        try:
            keys = self.parse(self.path.read_text(encoding="utf-8"), str(self.path))
        except (OSError, KeyringError):  # e.g. a line being written: the next value tries again
            return False
        if {kid for kid, _ in keys} <= set(self.keys):
            return False
        self._use(keys)
        return True

    # -- loading --------------------------------------------------------------------------------
    @staticmethod
    def parse(text: str, origin: str) -> list[tuple[str, bytes]]:
        """``KID:BASE64`` entries, one a line or separated by commas; ``#`` starts a comment line."""
        keys = []
        lines = [line.strip() for line in text.splitlines()]
        entries = [e.strip() for line in lines if line and not line.startswith("#") for e in line.split(",")]
        for number, entry in enumerate(entries, 1):
            if not entry:
                continue
            kid, sep, b64 = entry.partition(":")
            if not sep:
                raise KeyringError(f"{origin}: entry {number}: expected KID:BASE64KEY")
            try:
                key = base64.b64decode(b64.strip(), validate=True)
            except ValueError as exc:
                raise KeyringError(f"{origin}: key {kid!r} is not base64") from exc
            keys.append((kid.strip(), key))
        return keys

    @classmethod
    def load(cls, key_file: str | Path | None = None, *, env: dict[str, str] | None = None) -> Keyring | None:
        """The keyring from ``key_file``, else from ``$PARLEY_KEYS``; None when neither is given."""
        if key_file is not None:
            path = Path(key_file)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise KeyringError(f"cannot read key file {path}: {exc}") from exc
            return cls(cls.parse(text, str(path)), path=path)
        text = (os.environ if env is None else env).get(KEYS_ENV)
        if text:
            return cls(cls.parse(text, f"${KEYS_ENV}"))
        return None

    @staticmethod
    def new_key_line(kid: str) -> str:
        """A fresh random key as a key-file line."""
        return f"{kid}:{base64.b64encode(secrets.token_bytes(32)).decode()}"

    # -- values ---------------------------------------------------------------------------------
    def encrypt(self, value: Any) -> dict[str, Any]:
        """A sealed envelope holding ``value`` (any JSON value), under the active key."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        plain = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        sealed = nonce + self.keys[self.active].encrypt(nonce, plain, self.active.encode())
        return {"sensitive": True, "kid": self.active, "sealed": base64.b64encode(sealed).decode()}

    def decrypt(self, envelope: dict[str, Any]) -> Any:
        """The value inside a sealed envelope (:class:`KeyringError` for an unknown key id or an altered
        or misattributed value)."""
        kid = envelope.get("kid")
        aead = self.keys.get(kid)  # type: ignore[arg-type]
        if aead is None and self.reload():
            aead = self.keys.get(kid)  # type: ignore[arg-type]
        if aead is None:
            raise KeyringError(f"value sealed with key {kid!r}, which is not in the keyring")
        try:
            raw = base64.b64decode(envelope["sealed"])
            return json.loads(aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], kid.encode()))
        except (InvalidTag, ValueError) as exc:
            raise KeyringError(
                f"a value sealed with key {kid!r} does not open: altered, or not that key"
            ) from exc

    def seal(self, node: Any) -> Any:
        """A copy of ``node`` with every clear sensitive envelope sealed (sealed ones kept)."""
        return _walk(node, lambda env: self.encrypt(env["value"]) if "value" in env else env)

    def unseal(self, node: Any) -> Any:
        """A copy of ``node`` with every sealed envelope opened to ``{"sensitive": true, "value": V}``."""
        return _walk(
            node, lambda env: {"sensitive": True, "value": self.decrypt(env)} if is_sealed(env) else env
        )

    def reseal(self, node: Any) -> tuple[Any, int]:
        """``node`` with every value sealed under another key re-sealed under the active one; and
        how many were."""
        count = 0

        def again(env: dict[str, Any]) -> dict[str, Any]:
            nonlocal count
            if is_sealed(env) and env["kid"] != self.active:
                count += 1
                return self.encrypt(self.decrypt(env))
            if "value" in env:
                count += 1
                return self.encrypt(env["value"])
            return env

        return _walk(node, again), count


def is_sealed(node: Any) -> bool:
    """Whether ``node`` is a sealed sensitive envelope."""
    return isinstance(node, dict) and node.get("sensitive") is True and "sealed" in node and "kid" in node


def _walk(node: Any, change: Callable[[dict[str, Any]], Any]) -> Any:
    if isinstance(node, dict):
        if node.get("sensitive") is True:
            return change(node)
        return {key: _walk(value, change) for key, value in node.items()}
    if isinstance(node, list):
        return [_walk(value, change) for value in node]
    return node
