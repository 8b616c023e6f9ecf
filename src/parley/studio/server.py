"""Opening the studio: its keyring, its database (migrated), and serving it with uvicorn."""

from __future__ import annotations

import os
from pathlib import Path

from parley.agent.sealing import Keyring
from parley.studio.store import Store

DEFAULT_DATABASE = "parley-studio.db"
DEFAULT_KEY_FILE = Path("parley-studio.keys")


def open_keyring(key_file: Path | None, *, create: bool = True) -> Keyring:
    """The keyring from ``key_file``, else ``$PARLEY_KEYS``, else the default key file, which is
    created (one fresh key, readable by its owner only) so a fresh studio just works."""
    keyring = Keyring.load(key_file)
    if keyring is not None:
        return keyring
    if not DEFAULT_KEY_FILE.exists() and create:
        fd = os.open(DEFAULT_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("# Parley studio keys: KID:BASE64 (AES-256), the last one seals new values\n")
            out.write(Keyring.new_key_line("k1") + "\n")
    keyring = Keyring.load(DEFAULT_KEY_FILE)
    assert keyring is not None
    return keyring


def open_store(database: str, key_file: Path | None) -> Store:
    """The studio's store, schema migrated to the newest version."""
    store = Store(database, open_keyring(key_file))
    store.migrate()
    return store


def serve_studio(store: Store, host: str, port: int, *, secure_cookies: bool = False) -> None:
    """Serve the studio until interrupted."""
    import uvicorn

    from parley.studio.app import create_app

    uvicorn.run(create_app(store, secure_cookies=secure_cookies), host=host, port=port, log_level="warning")
