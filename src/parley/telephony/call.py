"""The :class:`Call` object the layers above use: audio and DTMF in, audio out, hang up, transfer."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from parley.media.srtp import SrtpContext
from parley.media.stream import Playback, RtpStream

if TYPE_CHECKING:
    from parley.sip.useragent import InviteSession


class Channel(Protocol):
    """What carries a call: SIP (:class:`~parley.telephony.manager.CallManager`) or a browser
    (:class:`~parley.telephony.webrtc.WebRtcChannel`). A call asks its channel to act on it."""

    def hangup(self, call: Call) -> None: ...
    def refer(self, call: Call, target: str) -> None: ...
    def reinvite(self, call: Call, direction: str, new_key: bool = False) -> bool:
        """A re-INVITE offering ``direction`` ("": the current one), with a new SRTP key if asked."""
        ...


@dataclass(slots=True, frozen=True)
class DtmfDigit:
    """A telephone-event (RFC 4733) digit received from the caller."""

    digit: str


class Call:
    """One established call, over SIP or from a browser (WebRTC): the layers above cannot tell which.

    Incoming audio arrives as 20 ms frames of 8 kHz int16 PCM. Consume it either with
    ``async for item in call.incoming()`` (frames and :class:`DtmfDigit` in order) or, on
    hot paths, by setting ``on_audio``/``on_dtmf`` callbacks which run inside the media tick.
    ``stream`` is the call's media (an :class:`RtpStream`, or a browser call's stream with the same
    playback interface); ``session`` is the SIP dialog (None for a browser call).
    """

    MAX_QUEUED_FRAMES = 500  # 10 s: a consumer that stops reading loses old audio, not memory

    def __init__(
        self,
        manager: Channel,
        session: InviteSession | None,
        stream: RtpStream,
        direction: str,
        *,
        call_id: str | None = None,
        channel: str = "sip",
    ) -> None:
        self.manager = manager
        self.session = session
        self.stream = stream
        self.direction = direction
        self.channel = channel  # "sip" or "webrtc": for records and logs, never for the dialogue
        self.call_id = call_id or (session.call_id if session is not None else "")
        self.on_event: Callable[[dict[str, Any]], None] | None = None  # see publish()
        self.ended = asyncio.Event()
        self.end_reason = ""
        self._on_audio: Callable[[np.ndarray], None] | None = None
        self.on_dtmf: Callable[[str], None] | None = None
        self._queue: deque[np.ndarray | DtmfDigit] = deque(maxlen=self.MAX_QUEUED_FRAMES)
        self._waiter: asyncio.Future[None] | None = None
        self._transfer: asyncio.Future[int] | None = None
        self._reinvite: asyncio.Future[int] | None = None
        self.dtmf_received: list[str] = []
        self.on_ended: Callable[[str], None] | None = None  # called once when the call ends
        self.srtp: SrtpContext | None = None  # the call's SRTP, when its media is encrypted
        stream.on_audio = self._audio_in
        stream.on_dtmf = self._dtmf_in

    # -- input --------------------------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def on_audio(self) -> Callable[[np.ndarray], None] | None:
        return self._on_audio

    @on_audio.setter
    def on_audio(self, callback: Callable[[np.ndarray], None] | None) -> None:
        """A callback gets frames straight from the media tick, bypassing the ``incoming()`` queue."""
        self._on_audio = callback
        self.stream.on_audio = callback if callback is not None else self._audio_in

    def _audio_in(self, pcm: np.ndarray) -> None:
        self._queue.append(pcm)
        self._wake()

    def _dtmf_in(self, digit: str) -> None:
        self.dtmf_received.append(digit)
        if self.on_dtmf is not None:
            self.on_dtmf(digit)
        else:
            self._queue.append(DtmfDigit(digit))
            self._wake()

    async def incoming(self) -> AsyncIterator[np.ndarray | DtmfDigit]:
        """Audio frames and DTMF digits until the call ends."""
        while True:
            while self._queue:
                yield self._queue.popleft()
            if self.ended.is_set():
                return
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    # -- output -------------------------------------------------------------------------------
    def play(self, pcm: np.ndarray) -> Playback:
        """Queue audio to send; the returned playback can be awaited with :meth:`wait_played`."""
        return self.stream.play(pcm)

    async def wait_played(self, playback: Playback) -> bool:
        """Wait until ``playback`` has been sent; False if it was stopped (barge-in) or the call ended."""
        if playback.finished:
            return not playback.stopped
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        playback.callbacks.append(lambda stopped: future.done() or future.set_result(not stopped))
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            await asyncio.wait({future, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        return future.done() and future.result()

    def play_frame(self, pcm: np.ndarray) -> None:
        """Queue one 20 ms frame of a live source (encoded in the media clock's batch)."""
        self.stream.play_frame(pcm)

    def stop_playback(self) -> None:
        """Stop all queued audio at once (barge-in)."""
        self.stream.stop_playback()

    def send_dtmf(self, digits: str) -> None:
        self.stream.send_dtmf(digits)

    def publish(self, event: dict[str, Any]) -> None:
        """Tell whoever watches the call what the agent heard and did (a partial, a turn's result, the
        slots): a browser call shows it on the caller's page; on SIP nobody listens."""
        if self.on_event is not None and not self.ended.is_set():
            self.on_event(event)

    # -- control ------------------------------------------------------------------------------
    def hangup(self) -> None:
        self.manager.hangup(self)

    async def transfer(self, target: str, timeout: float = 32.0) -> int:
        """Blind transfer (REFER); returns the final sipfrag status (200 when the transfer worked)."""
        if self.ended.is_set():
            return 481  # no dialog to send the REFER in
        self._transfer = asyncio.get_running_loop().create_future()
        self.manager.refer(self, target)
        try:
            return await asyncio.wait_for(self._transfer, timeout)
        except TimeoutError:
            return 408

    async def hold(self, on: bool = True, timeout: float = 32.0) -> int:
        """Put the peer on hold (re-INVITE with sendonly) or resume (sendrecv); returns the status."""
        return await self._reoffer("sendonly" if on else "sendrecv", False, timeout)

    async def rekey(self, timeout: float = 32.0) -> int:
        """Offer a new SRTP key (re-INVITE, same direction); returns the status. Both sides use the
        new keys once the offer is answered."""
        return await self._reoffer("", True, timeout)

    async def _reoffer(self, direction: str, new_key: bool, timeout: float) -> int:
        if self.ended.is_set():
            return 481
        self._reinvite = asyncio.get_running_loop().create_future()
        if not self.manager.reinvite(self, direction, new_key=new_key):
            return 491
        try:
            return await asyncio.wait_for(self._reinvite, timeout)
        except TimeoutError:
            return 408

    async def wait_ended(self) -> str:
        await self.ended.wait()
        return self.end_reason

    def _ended(self, reason: str) -> None:
        if self.ended.is_set():
            return
        self.end_reason = reason
        self.ended.set()
        self._wake()
        if self.on_ended is not None:
            self.on_ended(reason)
        for future in (self._transfer, self._reinvite):
            if future is not None and not future.done():
                future.set_result(481)
