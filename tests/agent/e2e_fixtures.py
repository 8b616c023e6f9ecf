"""Pytest fixtures of the end-to-end call tests: the webhook sink, the caller's UAC, flite answers.

``tests/agent/conftest.py`` offers them to the tests here; tests elsewhere import the ones they use.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator

import pytest

from parley.speech.tts import load_tts
from parley.telephony.manager import CallManager

from .e2e_agents import REFERENCE
from .voice_caller import AnswerBook, WebhookSink, caller_manager_on_loopback

needs_flite = pytest.mark.skipif(
    shutil.which("flite") is None, reason="flite not installed (Debian package flite)"
)


@pytest.fixture(scope="module")
def sink() -> Iterator[WebhookSink]:
    """A webhook sink for the module; every request is answered ``{"reference": REFERENCE}``."""
    with WebhookSink({"reference": REFERENCE}) as server:
        yield server


@pytest.fixture(scope="module")
def answers() -> AnswerBook:
    """The caller's answers, spoken by flite's slt voice (rendered once each)."""
    return AnswerBook(load_tts("flite"), "slt")


@pytest.fixture
async def caller_manager() -> AsyncIterator[CallManager]:
    """The caller's UAC on loopback; ``.refers`` lists the REFER targets it was sent."""
    async with caller_manager_on_loopback() as manager:
        yield manager
