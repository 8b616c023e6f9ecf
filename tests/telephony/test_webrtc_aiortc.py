"""What the browser channel relies on in aiortc and aioice beyond their public API (listed in
:func:`parley.telephony.webrtc.check_aiortc`): present in the installed versions, inside the range
``pyproject.toml`` pins, and refused clearly when it is gone. An upgrade that changes any of it fails
here by name, before the channel tests fail on silence."""

from __future__ import annotations

import inspect
import re
from importlib.metadata import version
from pathlib import Path

import aioice.ice
import pytest
from aiortc import RTCRtpReceiver
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpsender import RTCRtpSender
from packaging.requirements import Requirement

from parley.telephony.webrtc import check_aiortc

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_installed_aiortc_and_aioice_are_in_the_pinned_range_and_have_what_the_channel_uses() -> None:
    pins = {Requirement(r).name: Requirement(r) for r in re.findall(r'"((?:aiortc|aioice)[<>=][^"]*)"',
                                                                     PYPROJECT.read_text())}  # fmt: skip
    assert set(pins) == {"aiortc", "aioice"}, pins
    for name, requirement in pins.items():
        assert requirement.specifier.contains(version(name)), (name, version(name), str(requirement))
        assert "<" in str(requirement.specifier), f"{name} must have an upper bound: {requirement}"
    check_aiortc()
    # the DTLS transport hands each decrypted RTP packet to its receiver's method (the one replaced)
    route = inspect.getsource(RTCDtlsTransport._handle_rtp_data)
    assert "receiver._handle_rtp_packet(packet, arrival_time_ms=arrival_time_ms)" in route, route
    # aioice reads the consent constants on each check (so setting them takes effect)
    consent = inspect.getsource(aioice.ice.Connection.query_consent)
    assert "CONSENT_INTERVAL" in consent and "CONSENT_FAILURES" in consent, consent
    # a track's encoded packets are sent as they are (no encoder of aiortc's in between)
    assert ".pack(data)" in inspect.getsource(RTCRtpSender._next_encoded_frame)


def test_a_changed_aiortc_is_refused_with_what_is_missing(monkeypatch) -> None:
    async def renamed(self, packet, arrival_time) -> None:  # an upgrade that renamed a parameter
        pass

    monkeypatch.setattr(RTCRtpReceiver, "_handle_rtp_packet", renamed)
    monkeypatch.delattr(aioice.ice, "CONSENT_FAILURES")
    with pytest.raises(RuntimeError) as refused:
        check_aiortc()
    message = str(refused.value)
    assert "_handle_rtp_packet" in message and "CONSENT_FAILURES" in message, message
    assert version("aiortc") in message, message
