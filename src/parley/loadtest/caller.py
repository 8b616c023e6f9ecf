"""One call's scripted caller: hears the agent on arriving RTP, speaks answers, presses keys.

:class:`ScriptedCaller` taps the call's RTP socket (a compiled
:class:`~parley.loadtest.listen.PacketTap`): every arriving packet, with its kernel arrival time,
is tested for speech energy on its encoded bytes and counted in the stream's reception figures,
and is never decoded (the caller needs no audio of its own), so

* prompt-end detection (:meth:`ScriptedCaller.wait_prompt_end`: at least ``min_speech_ms`` of loud
  packets, then ``silence_ms`` without one — the silence is the hang-over that bridges pauses
  between words) runs Python only for loud packets and one timer per wait, no task per call;
* reply latency is measured at packet arrival: the first loud packet after the caller's end of
  speech (:meth:`ScriptedCaller.say` returns the time its last frame was sent);
* inter-arrival gaps (> 60 ms) are counted for the audio-quality figures.

Waits end early with :class:`CallEnded` when the call ends (``Call.on_ended``), so no per-call
reader task or polling is needed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from parley.loadtest.audio import FRAME_MS, QUIET
from parley.loadtest.listen import PacketTap
from parley.media import g711

if TYPE_CHECKING:
    from parley.telephony.call import Call
    from parley.telephony.manager import CallManager

GAP_S = 0.060  # an inter-arrival interval longer than this is a gap
PLAIN_FRAME = 12 + g711.FRAME_SAMPLES  # a 20 ms G.711 frame behind a plain RTP header (listen.py's)


class CallEnded(Exception):
    """The call ended while the caller was waiting for something."""


@dataclass(slots=True)
class PendingReply:
    """A caller turn waiting for the agent's first loud packet after ``speech_end``."""

    speech_end: float
    reply_at: float | None = None


class ScriptedCaller:
    """Listens to one call's incoming audio and speaks prerecorded answers."""

    def __init__(self, manager: CallManager, call: Call) -> None:
        self.call = call
        self.speech_frames = 0  # loud packets since the last mark
        self.last_loud: float | None = None  # monotonic arrival of the last loud packet
        self.loud_packets: deque[float] = deque(maxlen=3000)  # arrival times of loud packets (60 s)
        self.transfer_to: str | None = None
        self._pending: list[PendingReply] = []
        self._waiters: set[asyncio.Future[None]] = set()
        self._speech_needed = 0  # wake the speech waiter once speech_frames reaches this
        self._speech_waiter: asyncio.Future[None] | None = None
        self._transfer_waiter: asyncio.Future[None] | None = None
        self._recorder: _Recorder | None = None  # while record() keeps the agent's audio
        self._loop = asyncio.get_running_loop()
        call.on_ended = self._on_ended
        stream = call.stream
        stream.on_audio = None  # decoded frames are not needed (all is done on arrival): never delivered
        self.tap = PacketTap(stream, QUIET[stream.codec], self._loud, GAP_S)
        leg = manager._legs.get(id(call.session))
        self._endpoint = leg.endpoint if leg is not None else None
        if self._endpoint is not None:
            self._endpoint.on_rtp(self.tap)

    @property
    def packets(self) -> int:
        """Packets of the call's audio payload type received so far."""
        return self.tap.packets

    @property
    def gaps(self) -> int:
        """Inter-arrival intervals longer than :data:`GAP_S` so far."""
        return self.tap.gaps

    # -- loud packets (the tap calls this for each; the rest of the per-packet work is compiled) ------
    def _loud(self, now: float) -> None:
        self.speech_frames += 1
        self.last_loud = now
        self.loud_packets.append(now)
        if self._pending:
            for pending in self._pending:
                if now > pending.speech_end:
                    pending.reply_at = now
            self._pending = [p for p in self._pending if p.reply_at is None]
        waiter = self._speech_waiter
        if waiter is not None and self.speech_frames >= self._speech_needed and not waiter.done():
            waiter.set_result(None)

    def _on_ended(self, reason: str) -> None:
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_result(None)

    # -- waiting --------------------------------------------------------------------------------------
    def _check(self) -> None:
        if self.call.ended.is_set():
            raise CallEnded(self.call.end_reason)

    async def _wait(self, seconds: float | None, speech_frames: int | None = None) -> None:
        """Sleep ``seconds`` (None: no limit), or until ``speech_frames`` loud packets, or the call ends."""
        self._check()
        future: asyncio.Future[None] = self._loop.create_future()
        handle = None if seconds is None else self._loop.call_later(max(seconds, 0.0), _resolve, future)
        if speech_frames is not None:
            self._speech_needed, self._speech_waiter = speech_frames, future
        self._waiters.add(future)
        try:
            await future
        finally:
            self._waiters.discard(future)
            if handle is not None:
                handle.cancel()
            if self._speech_waiter is future:
                self._speech_waiter = None
        self._check()

    # -- recording what the agent says (to tell which prompt it was) --------------------------------
    def record(self) -> None:
        """Keep the agent's audio from now on, until :meth:`recorded` (the tap decodes nothing: while
        recording, each plain frame's payload is kept on its way to the tap, in arrival order)."""
        self._recorder = _Recorder(self.tap)
        if self._endpoint is not None:
            self._endpoint.on_rtp(self._recorder)

    def recorded(self) -> np.ndarray:
        """The audio kept since :meth:`record` (8 kHz int16), and stop keeping it."""
        if self._endpoint is not None:
            self._endpoint.on_rtp(self.tap)
        recorder, self._recorder = self._recorder, None
        payload = b"".join(recorder.payloads) if recorder is not None else b""
        return g711.decode(self.call.stream.codec, payload) if payload else np.zeros(0, dtype=np.int16)

    def mark(self) -> None:
        """Forget speech heard so far: the next ``wait_prompt_end`` waits for new speech."""
        self.speech_frames = 0

    async def wait_prompt_end(self, silence_ms: int = 700, min_speech_ms: int = 300) -> None:
        """Wait for the agent's next prompt: ≥ ``min_speech_ms`` of speech, then ``silence_ms`` of silence.

        Speech heard since the last :meth:`mark` counts; the caller is marked again on return.
        Raises :class:`CallEnded` when the call ends first (wrap in ``asyncio.wait_for`` to bound it).
        """
        needed = -(-min_speech_ms // FRAME_MS)
        silence = silence_ms / 1000
        while True:
            if self.speech_frames < needed:
                await self._wait(None, needed)
                continue
            assert self.last_loud is not None
            remaining = self.last_loud + silence - time.monotonic()
            if remaining <= 0:
                break
            await self._wait(remaining)
        self.mark()

    async def wait_speech(self) -> float:
        """Wait for the agent's next loud packet (after the last mark); returns its arrival time."""
        self.mark()
        while self.speech_frames < 1:
            await self._wait(None, 1)
        assert self.last_loud is not None
        return self.last_loud

    async def wait_silence(self, seconds: float) -> None:
        """Stay silent for ``seconds`` (raises CallEnded early if the call ends)."""
        await self._wait(seconds)

    pause = wait_silence

    async def wait_transfer(self) -> str:
        """Wait until the agent sends a REFER; returns its target."""
        while self.transfer_to is None:
            self._transfer_waiter = self._loop.create_future()
            self._waiters.add(self._transfer_waiter)
            try:
                await self._transfer_waiter
            finally:
                self._waiters.discard(self._transfer_waiter)
            if self.transfer_to is None:
                self._check()
        return self.transfer_to

    def transferred(self, target: str) -> None:
        """Called by the manager's ``on_refer`` for this call."""
        self.transfer_to = target
        if self._transfer_waiter is not None:
            _resolve(self._transfer_waiter)

    async def wait_ended(self) -> str:
        """Wait for the call to end; returns the end reason."""
        while not self.call.ended.is_set():
            future: asyncio.Future[None] = self._loop.create_future()
            self._waiters.add(future)
            try:
                await future
            finally:
                self._waiters.discard(future)
        return self.call.end_reason

    # -- speaking -------------------------------------------------------------------------------------
    async def say(self, pcm: np.ndarray) -> float:
        """Play ``pcm``; returns the monotonic time its last frame was sent (the end of speech)."""
        self._check()
        playback = self.call.play(pcm)
        future: asyncio.Future[None] = self._loop.create_future()
        sent: list[float] = []

        def played(stopped: bool) -> None:
            sent.append(time.monotonic())
            _resolve(future)

        playback.callbacks.append(played)
        if playback.finished:
            _resolve(future)
        self._waiters.add(future)
        try:
            await future
        finally:
            self._waiters.discard(future)
        if self.call.ended.is_set() or playback.stopped:
            raise CallEnded(self.call.end_reason or "playback stopped")
        return sent[0] if sent else time.monotonic()

    async def press(self, digits: str, duration_ms: int = 100, gap_ms: int = 60) -> float:
        """Send RFC 4733 digits; returns the time the last one should have been sent."""
        self._check()
        self.call.send_dtmf(digits)
        await self._wait(len(digits) * (duration_ms + gap_ms) / 1000)
        return time.monotonic()

    def expect_reply(self, speech_end: float) -> PendingReply:
        """Start timing the agent's reply to speech that ended at ``speech_end`` (monotonic)."""
        pending = PendingReply(speech_end)
        if self.last_loud is not None and self.last_loud > speech_end:
            pending.reply_at = next(t for t in self.loud_packets if t > speech_end)
        else:
            self._pending.append(pending)
        return pending

    def first_reply_after(self, t: float) -> float | None:
        """Arrival time of the first packet with energy after ``t`` (None if none yet)."""
        return next((x for x in self.loud_packets if x > t), None)

    def rtp_stats(self) -> dict[str, float | int]:
        """Received-audio figures of the call (the record's ``rtp`` object)."""
        reception = self.call.stream.reception
        lost = max(int(reception.lost), 0)
        total = self.packets + lost
        return {
            "packets": self.packets,
            "lost": lost,
            "loss_pct": round(100 * lost / total, 3) if total else 0.0,
            "jitter_ms": round(float(reception.jitter_ms), 2),
            "gaps": self.gaps,
        }

    async def close(self) -> None:
        """Release the waits (kept for the callers written against the older reader-task design)."""
        self._on_ended("closed")


class _Recorder:
    """The caller's tap, with each plain frame's G.711 payload kept on its way (``stream``: the shared
    RTP socket routes by the stream's far end)."""

    def __init__(self, tap: PacketTap) -> None:
        self.tap = tap
        self.stream = tap.stream
        self.payloads: list[bytes] = []

    def __call__(self, data: bytes, source: tuple[str, int], arrival: float) -> None:
        if len(data) == PLAIN_FRAME and (data[1] & 0x7F) == self.tap.payload_type:
            self.payloads.append(data[12:])
        self.tap(data, source, arrival)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
