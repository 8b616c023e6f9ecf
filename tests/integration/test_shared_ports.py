"""PARLEY_TEST_PORTS: the tests' and benches' ports taken from one range on a shared machine."""

from __future__ import annotations

import pytest

from integration.harness import _port_bases, free_port, rtp_range, shared_ports


def test_ports_come_from_the_shared_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_TEST_PORTS", "17000-18999")
    assert shared_ports() == (17000, 18999)
    for _ in range(20):
        port = free_port(2)
        assert port >= 17000 and port + 1 < 17999 and port % 2 == 0
        first, last = rtp_range(40)
        assert first >= 17998 and last <= 18999 and first % 2 == 0 and last - first == 40
    with pytest.raises(ValueError, match="does not fit"):
        rtp_range(2000)


def test_unset_keeps_the_default_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARLEY_TEST_PORTS", raising=False)
    assert shared_ports() is None
    assert _port_bases() == range(41000, 59990, 2)


@pytest.mark.parametrize("value", ["17000", "a-b", "18999-17000", "80-2000", "17000-17100"])
def test_a_bad_range_is_refused_clearly(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("PARLEY_TEST_PORTS", value)
    with pytest.raises(ValueError, match="PARLEY_TEST_PORTS"):
        free_port()
