"""The pre-rendered apology (parley.agent.apology): the shipped WAV is what the project's TTS renders,
its pinned SHA-256 holds, and an altered or missing file is refused (logged), never played."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import pytest

from parley.agent.apology import APOLOGY_FILE, APOLOGY_SHA256, load_apology, render_apology


def test_the_shipped_apology_loads_as_8khz_speech() -> None:
    pcm = load_apology()
    assert pcm is not None and pcm.dtype.name == "int16"
    assert 3.0 < len(pcm) / 8000 < 6.0
    assert abs(pcm.astype(int)).max() > 3000  # speech, not silence


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite not installed (Debian package flite)")
async def test_the_shipped_apology_is_what_the_projects_tts_renders(tmp_path: Path) -> None:
    await render_apology(tmp_path / "apology.wav")
    data = (tmp_path / "apology.wav").read_bytes()
    assert hashlib.sha256(data).hexdigest() == APOLOGY_SHA256
    assert data == APOLOGY_FILE.read_bytes()


@pytest.mark.parametrize("damage", ["altered", "truncated", "missing"])
def test_a_damaged_apology_is_not_played(tmp_path: Path, caplog, damage: str) -> None:
    copy = tmp_path / "apology.wav"
    data = APOLOGY_FILE.read_bytes()
    if damage == "altered":
        copy.write_bytes(data[:1000] + bytes([data[1000] ^ 1]) + data[1001:])
    elif damage == "truncated":
        copy.write_bytes(data[: len(data) // 2])
    caplog.set_level(logging.ERROR, logger="parley.agent.apology")
    assert load_apology(copy) is None
    expected = "cannot be read" if damage == "missing" else "does not match its pinned SHA-256"
    assert expected in caplog.text
