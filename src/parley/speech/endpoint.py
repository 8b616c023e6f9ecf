"""End-of-turn detection: a pure state machine over VAD decisions, one 20 ms frame at a time.

No clocks: time is the number of frames fed × 20 ms, so the same audio always gives the same
events (tests assert frame-exact timings). One :class:`Endpointer` follows one caller turn:

* ``SpeechStarted`` once ``min_speech_ms`` of consecutive speech frames were heard (clicks and
  short noise bursts never start a turn); ``at_ms`` is where that run began. The VAD's hangover
  (below) lengthens every run, so it is added to the run needed.
* ``SpeechEnded(reason="silence")`` after ``silence_ms`` of trailing non-speech. Any speech frame
  resets the count, which is the hangover that keeps pauses inside a sentence (300 ms is common)
  from ending the turn. The count is of the caller's silence: a VAD that keeps saying "speech"
  for a while after speech stops declares it (``hangover_ms``, WebRTC's mode 2: 80 ms) and the
  endpointer needs that much less non-speech from it.
* ``SpeechEnded(reason="early-close")``: the understanding layer calls :meth:`request_early_close`
  when a partial transcript already holds a complete, valid slot value. The turn then ends as
  soon as ``early_close_ms`` (default 40 ms, two frames) of non-speech have been heard — at once
  when the caller has already paused that long (the call returns the event), otherwise at the
  first such pause. Not immediately on a speech frame: a partial hypothesis can be complete while
  the caller is still mid-word ("four two seven" before "…-teen"), and ASR partials usually arrive
  some hundred milliseconds after the words, by which time the pause is already there. One
  frame of silence alone is not trusted (a stop consonant's closure can read as one); with the
  VAD's hangover subtracted, at least one frame the VAD calls non-speech is always required.
* ``Paused`` (only with ``pause_check_ms``), once per pause: the caller has been silent that long
  (less than ``silence_ms``) and no early close was requested. The I/O side may take the
  recognisers' final of the answer so far and, when the understanding layer finds it complete,
  end the turn with :meth:`end_on_pause` (``SpeechEnded(reason="pause")``, semantic endpointing);
  otherwise the turn goes on to the silence timeout or the next pause.
* ``SpeechEnded(reason="max-speech")`` after ``max_speech_ms`` since the start of speech.
* ``NoInput`` when no speech started within ``no_input_ms`` (deferred while a run of speech frames
  that may still become a start is in progress).

After an end event the endpointer ignores frames until :meth:`reset` starts the next turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np

from parley.speech.vad import Vad

FRAME_MS = 20

EndReason = Literal["silence", "early-close", "pause", "max-speech"]


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    at_ms: int  # start of the first frame of the speech run that started the turn


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    at_ms: int  # when the turn was declared over (end of the deciding frame)
    reason: EndReason
    last_speech_ms: int = 0  # end of the last frame the VAD called speech (its hangover included)


@dataclass(frozen=True, slots=True)
class Paused:
    at_ms: int  # end of the frame that made the pause ``pause_check_ms`` long
    last_speech_ms: int  # end of the last frame the VAD called speech (its hangover included)


@dataclass(frozen=True, slots=True)
class NoInput:
    at_ms: int


EndpointEvent = SpeechStarted | SpeechEnded | Paused | NoInput


class TurnState(StrEnum):
    WAITING = "waiting"  # listening, no speech yet
    SPEAKING = "speaking"  # speech started, turn open
    ENDED = "ended"  # an end event was emitted; reset() for the next turn


def _frames(ms: int) -> int:
    return max(1, -(-ms // FRAME_MS))  # ceil: a limit is never shorter than asked


class Endpointer:
    """Turns a frame stream into turn events; see the module docstring for the rules."""

    def __init__(
        self,
        vad: Vad,
        *,
        silence_ms: int = 700,
        min_speech_ms: int = 100,
        max_speech_ms: int = 15000,
        no_input_ms: int = 5000,
        threshold: float = 0.5,
        early_close_ms: int = 40,
        pause_check_ms: int | None = None,
    ) -> None:
        self.vad = vad
        hangover = getattr(vad, "hangover_ms", 0) // FRAME_MS  # the VAD's own "speech" after speech
        self.silence_frames = max(1, _frames(silence_ms) - hangover)
        self.min_speech_frames = _frames(min_speech_ms) + hangover
        self.max_speech_frames = _frames(max_speech_ms)
        self.no_input_frames = _frames(no_input_ms)
        self.early_close_frames = max(1, _frames(early_close_ms) - hangover)
        # None (no Paused events) when unset or not shorter than the silence timeout
        self.pause_check_frames = (
            max(1, _frames(pause_check_ms) - hangover) if pause_check_ms is not None else None
        )
        if self.pause_check_frames is not None and self.pause_check_frames >= self.silence_frames:
            self.pause_check_frames = None
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        """Start a new turn: frame clock at zero, VAD state cleared."""
        self.vad.reset()
        self.state = TurnState.WAITING
        self.frames = 0  # frames fed this turn
        self.probability = 0.0  # the VAD's last output
        self.run = 0  # consecutive speech frames up to the last frame
        self.silence = 0  # consecutive non-speech frames up to the last frame
        self.start_frame: int | None = None  # first frame of the turn's speech
        self.last_speech_frame: int | None = None
        self.early_close_requested = False

    def hold_no_input(self) -> None:
        """The prompt is still playing: the no-input clock starts when it ends (call per frame).

        Speech onset (barge-in) is still detected meanwhile.
        """
        if self.state is TurnState.WAITING and self.run == 0:
            self.frames = 0

    def feed(self, frame: np.ndarray) -> EndpointEvent | None:
        """Add one 20 ms frame; returns the event it caused, if any."""
        if self.state is TurnState.ENDED:
            return None
        index = self.frames
        self.frames += 1
        self.probability = probability = self.vad.speech_probability(frame)
        if probability >= self.threshold:
            self.run += 1
            self.silence = 0
            self.last_speech_frame = index
        else:
            self.run = 0
            self.silence += 1

        if self.state is TurnState.WAITING:
            if self.run >= self.min_speech_frames:
                self.state = TurnState.SPEAKING
                self.start_frame = index - self.run + 1
                return SpeechStarted(self.start_frame * FRAME_MS)
            if self.frames >= self.no_input_frames and self.run == 0:
                self.state = TurnState.ENDED
                return NoInput(self.frames * FRAME_MS)
            return None

        assert self.start_frame is not None
        if self.early_close_requested and self.silence >= self.early_close_frames:
            return self._ended("early-close")
        if self.silence >= self.silence_frames:
            return self._ended("silence")
        if self.frames - self.start_frame >= self.max_speech_frames:
            return self._ended("max-speech")
        if self.silence == self.pause_check_frames and not self.early_close_requested:
            return Paused(self.frames * FRAME_MS, self._last_speech_ms())
        return None

    def request_early_close(self) -> SpeechEnded | None:
        """The slot is complete and valid: end the turn at the next short pause (see module docstring).

        Returns the end event when the caller is already pausing long enough; otherwise a later
        :meth:`feed` returns it. Does nothing before speech started or after the turn ended.
        """
        if self.state is not TurnState.SPEAKING:
            return None
        self.early_close_requested = True
        if self.silence >= self.early_close_frames:
            return self._ended("early-close")
        return None

    def end_on_pause(self) -> SpeechEnded | None:
        """The answer heard up to this pause is complete: end the turn now (``reason="pause"``).

        Only while the caller is still pausing (no speech frame since the last ``Paused``); otherwise
        None, and the turn goes on.
        """
        if self.state is not TurnState.SPEAKING or self.pause_check_frames is None:
            return None
        if self.silence < self.pause_check_frames:
            return None
        return self._ended("pause")

    @property
    def elapsed_ms(self) -> int:
        return self.frames * FRAME_MS

    def _last_speech_ms(self) -> int:
        last = self.last_speech_frame
        return (last + 1) * FRAME_MS if last is not None else 0

    def _ended(self, reason: EndReason) -> SpeechEnded:
        self.state = TurnState.ENDED
        return SpeechEnded(self.frames * FRAME_MS, reason, self._last_speech_ms())
