"""The contract between the speech layer's parts: questions, hypotheses, engines and sessions.

Audio everywhere is mono int16 numpy arrays. Telephone audio is 8 kHz (``TELEPHONE_RATE``);
an engine that needs another rate says so in ``sample_rate`` and resamples inside its session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from parley.nlu.question import Question, SlotType

__all__ = [
    "FRAME_SAMPLES",
    "TELEPHONE_RATE",
    "AsrEngine",
    "AsrSession",
    "Hypothesis",
    "Question",
    "SlotType",
    "TurnRecord",
    "WordTiming",
]

TELEPHONE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz


@dataclass(frozen=True, slots=True)
class WordTiming:
    word: str
    start: float  # seconds from the start of the utterance
    end: float
    confidence: float = 1.0


@dataclass(frozen=True, slots=True)
class Hypothesis:
    """One engine's transcript of one utterance, partial or final."""

    engine: str
    text: str
    confidence: float  # 0..1, comparable across engines only after the arbiter's calibration
    is_final: bool
    words: tuple[WordTiming, ...] = ()
    audio_seconds: float = 0.0  # audio consumed when this hypothesis was produced
    cpu_seconds: float = 0.0  # decoding CPU spent on the utterance so far


@runtime_checkable
class AsrSession(Protocol):
    """One utterance being recognised. Not thread-safe: one feeder at a time.

    A session may also have ``close()``: called instead of ``finish()`` when the arbiter no longer
    needs the result (hang-up, the decision was already made), to give back what it holds.
    """

    def feed(self, pcm: np.ndarray) -> Hypothesis | None:
        """Add 8 kHz int16 audio; returns a new partial hypothesis when the transcript changed."""
        ...

    def finish(self) -> Hypothesis:
        """End of utterance: the final hypothesis (``is_final`` True, possibly empty text)."""
        ...


@runtime_checkable
class AsrEngine(Protocol):
    """A speech recogniser plugin (entry point group ``parley.asr_engines``)."""

    name: str

    def supports(self, question: Question) -> bool:
        """Whether this engine should listen for answers to ``question``."""
        ...

    def prepare(self, question: Question) -> None:
        """Compile/cache whatever the question needs (grammar, LM) before audio arrives."""
        ...

    def start(self, question: Question) -> AsrSession:
        """Open a session for one utterance answering ``question``."""
        ...


@dataclass(slots=True)
class TurnRecord:
    """Everything the arbiter saw and decided for one turn (shown in the studio later)."""

    question: Question
    hypotheses: list[Hypothesis] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    winner: Hypothesis | None = None
    reason: str = ""
    failed_engines: dict[str, str] = field(default_factory=dict)  # engine -> error / "timeout"
    not_awaited: list[str] = field(default_factory=list)  # still decoding, but could no longer win
    not_run: list[str] = field(default_factory=list)  # second opinions not asked: the first engines agreed
    agreed: str = ""  # which engines agreed, when second opinions were not asked
    finish_seconds: float = 0.0  # end of speech -> decision
    answer_seconds: dict[str, float] = field(default_factory=dict)  # end of speech -> each engine's final
