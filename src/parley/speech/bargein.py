"""Barge-in: caller speech during the agent's prompt stops the prompt.

:class:`BargeIn` watches the caller's frames while the agent is playing. ``onset_frames``
consecutive speech frames (default 2 = 40 ms, so a click or one noisy frame does not cut a prompt)
count as an onset, and the playback is stopped in the same media tick: the check runs in the
call's audio callback, which the media clock calls before it picks the frame to send, so the frame
sent at that tick is already silence. With the default WebRTC VAD the stop lands 40 ms after the
frame in which the caller's speech arrives (``tests/speech/test_bargein.py``, over real RTP).

The VAD hears every frame, prompt or not, so its noise model follows the line; with WebRTC that
costs 3 µs a frame. A fresh WebRTC model calls the first frames of any noise speech (one frame
plus its hangover), so nothing fires during the first ``warmup_frames`` (200 ms) — the greeting
starts with the call, and so does the line noise. For the same reason, noise that appears
suddenly after true digital silence (a muted phone, silence suppression) can read as speech to
WebRTC for a few frames; Silero has no such transient, at its cost in CPU and onset delay (see
:mod:`parley.speech.vad`).

Some prompts (legal notices) must be heard in full: set :attr:`BargeIn.enabled` to False for them,
or play them with ``await barge_in.play(call, pcm, interruptible=False)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from parley.speech.vad import Vad

if TYPE_CHECKING:
    from parley.telephony.call import Call

FRAME_MS = 20


class BargeIn:
    """Stops the agent's playback when the caller starts speaking over it."""

    def __init__(
        self,
        vad: Vad,
        *,
        onset_frames: int = 2,
        enabled: bool = True,
        threshold: float = 0.5,
        warmup_frames: int = 10,
        on_barge_in: Callable[[BargeIn], None] | None = None,
    ) -> None:
        if onset_frames < 1:
            raise ValueError("onset_frames must be at least 1")
        self.vad = vad
        self.onset_frames = onset_frames
        self.enabled = enabled
        self.threshold = threshold
        self.warmup_frames = warmup_frames
        self.on_barge_in = on_barge_in  # e.g. to cancel a streaming TTS producer as well
        self.frames = 0  # frames fed since creation (the time base of onset_ms / stopped_ms)
        self.count = 0  # barge-ins so far
        self.onset_frame: int | None = None  # first speech frame of the last barge-in
        self.stopped_frame: int | None = None  # the frame at which it fired
        self._fired = False
        self._run = 0
        self._call: Call | None = None
        self._previous: Callable[[np.ndarray], None] | None = None

    @property
    def onset_ms(self) -> int | None:
        """Start of the last barge-in's first speech frame."""
        return None if self.onset_frame is None else self.onset_frame * FRAME_MS

    @property
    def stopped_ms(self) -> int | None:
        """End of the frame at which the last barge-in stopped the playback."""
        return None if self.stopped_frame is None else (self.stopped_frame + 1) * FRAME_MS

    def feed(self, frame: np.ndarray, playing: bool = True) -> bool:
        """One caller frame; True when it completes an onset during an interruptible prompt.

        ``playing`` says whether the agent is playing now. Fires once per prompt: after firing it
        waits until ``playing`` has been False (the next prompt) before listening again.
        """
        index = self.frames
        self.frames += 1
        speech = self.vad.speech_probability(frame) >= self.threshold
        if not (playing and self.enabled):
            self._run = 0
            self._fired = False
            return False
        self._run = self._run + 1 if speech else 0
        if self._fired or self._run < self.onset_frames or index < self.warmup_frames:
            return False
        self.onset_frame = index - self._run + 1
        self.stopped_frame = index
        self.count += 1
        self._fired = True
        return True

    # -- on a Call -------------------------------------------------------------------------------
    def attach(self, call: Call) -> None:
        """Watch ``call``'s audio; frames still reach the consumer that was there before.

        That is the previous ``call.on_audio`` callback, or the ``call.incoming()`` queue when
        there was none. Set other callbacks before attaching, or chain them through this one.
        """
        if self._call is not None:
            raise RuntimeError("already attached to a call")
        stream = call.stream
        downstream = stream.on_audio  # the on_audio callback, or the Call's incoming() queue
        self._call = call
        self._previous = call.on_audio

        def on_audio(frame: np.ndarray) -> None:
            if self.feed(frame, stream.playing):
                call.stop_playback()
                if self.on_barge_in is not None:
                    self.on_barge_in(self)
            if downstream is not None:
                downstream(frame)

        call.on_audio = on_audio

    def detach(self) -> None:
        """Give the call's audio back to the consumer it had before :meth:`attach`."""
        if self._call is not None:
            self._call.on_audio = self._previous
            self._call = None
            self._previous = None

    async def play(self, call: Call, pcm: np.ndarray, *, interruptible: bool = True) -> bool:
        """Play one prompt with barge-in on or off for its duration; True when it played to the end."""
        enabled = self.enabled
        self.enabled = interruptible
        try:
            return await call.wait_played(call.play(pcm))
        finally:
            self.enabled = enabled
