"""Call records on a disk that refuses them: a real full file system (a tiny tmpfs) and /dev/full."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.harness import fill_disk, small_disk
from parley.agent import records as records_module
from parley.agent.records import FREE_MARGIN, CallRecord, RecordFile


def record(number: int, padding: int = 0) -> CallRecord:
    call = CallRecord(f"call-{number}", "disk-test", "2026-12-05T00:00:00+00:00", outcome="completed")
    if padding:
        call.audio[0] = "A" * padding  # a turn's audio: a large record
    return call


def call_ids(path: Path) -> list[str]:
    return [json.loads(line)["call_id"] for line in path.read_text().splitlines() if line.startswith("{")]


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk") as mount:
        yield mount


def test_a_full_disk_keeps_records_in_memory_until_it_has_room(disk: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="parley.agent.records")
    path = disk / "calls.jsonl"
    records = RecordFile(path)
    assert records.append(record(1))
    filler = fill_disk(disk)
    assert [records.append(record(n)) for n in (2, 3, 4)] == [False] * 3
    assert len(records.held) == 3 and records.lost == 0 and records.refusals == 3
    assert call_ids(path) == ["call-1"]
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and "ENOSPC" in refused[0], refused  # once, not per record
    filler.unlink()
    assert records.append(record(5))
    assert call_ids(path) == ["call-1", "call-2", "call-3", "call-4", "call-5"]  # in order
    assert not records.held
    assert "3 waiting written" in caplog.text


def test_records_beyond_the_memory_bound_are_counted_lost(disk: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="parley.agent.records")
    path = disk / "calls.jsonl"
    size = len(record(1, 2000).to_json()) + 1
    records = RecordFile(path, held_bytes=3 * size)
    filler = fill_disk(disk)
    for n in range(1, 8):
        assert not records.append(record(n, 2000))
    assert records.lost == 4 and len(records.held) == 3
    lost = [r for r in caplog.records if "lost so far" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelname == "ERROR"  # the first loss; then every 100th
    filler.unlink()
    assert records.append(record(8, 2000))
    assert call_ids(path) == ["call-5", "call-6", "call-7", "call-8"]  # the newest kept


def test_a_write_cut_short_loses_one_line_not_the_file(disk: Path, monkeypatch) -> None:
    """A disk that fills between the free-space check and the write (another writer): the line cut
    short is ended, counted lost, and the lines after it are written whole later."""
    path = disk / "calls.jsonl"
    records = RecordFile(path)
    filler = fill_disk(disk)
    filler.write_bytes(filler.read_bytes()[: -2 * 4096])  # two pages free
    monkeypatch.setattr(RecordFile, "_room_for", lambda self, size: None)  # the race: it looked free
    assert not records.append(record(1, 3 * 4096))  # larger than what is left
    assert records.lost == 1 and not records.held
    filler.unlink()
    assert records.append(record(2))
    cut, whole = path.read_text().splitlines()  # the cut line, ended; then a whole one
    assert cut.startswith('{"record"') and len(cut) == 2 * 4096
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut)
    assert json.loads(whole)["call_id"] == "call-2"


def test_dev_full_refuses_every_write(caplog) -> None:
    """/dev/full fails each write with ENOSPC although its file system reports free space."""
    caplog.set_level(logging.WARNING, logger="parley.agent.records")
    records = RecordFile("/dev/full", held_bytes=10_000)
    assert not records.append(record(1))
    assert not records.append(record(2))
    assert len(records.held) == 2 and records.refusals == 2
    assert "ENOSPC: No space left on device" in caplog.text


def test_the_free_space_margin_is_kept() -> None:
    assert records_module.FREE_MARGIN == FREE_MARGIN >= 4096
