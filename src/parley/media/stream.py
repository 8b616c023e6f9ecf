"""One call's RTP stream: receive (latching, jitter buffer, DTMF, stats) and clocked sending.

Sans-I/O: packets come in through :meth:`RtpStream.receive`, the media clock calls
:meth:`RtpStream.tick` every 20 ms, and bytes go out through the ``send`` callable the
transport gave. Audio goes up as 160-sample int16 frames through ``on_audio``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from parley.media import g711
from parley.media.dtmf import DtmfReceiver, dtmf_payloads
from parley.media.jitter import JitterBuffer, conceal
from parley.media.rtcp import RtcpError, SenderReport, build_compound, parse_compound, report_block
from parley.media.rtp import ReceptionStats, RtpError, RtpPacket, RtpSender

FRAME_SAMPLES = 160
CLOCK_RATE = 8000
RTCP_INTERVAL_TICKS = 250  # 5 s (RFC 3550 §6.2 minimum for a two-party session)
INACTIVITY_CHECK_TICKS = 50
Address = tuple[str, int]


@dataclass(slots=True)
class StreamStats:
    packets_in: int = 0
    packets_out: int = 0
    strangers: int = 0
    malformed: int = 0
    unknown_payload: int = 0
    dtmf_in: int = 0


class Playback:
    """Encoded audio queued for sending; ``done`` fires when played out or stopped."""

    __slots__ = ("data", "offset", "stopped", "callbacks")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0
        self.stopped = False
        self.callbacks: list[Callable[[bool], None]] = []

    @property
    def finished(self) -> bool:
        return self.stopped or self.offset >= len(self.data)

    def _finish(self, stopped: bool) -> None:
        self.stopped = self.stopped or stopped
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback(stopped)


class RtpStream:
    """State of one negotiated audio stream."""

    def __init__(
        self,
        codec: str,
        payload_type: int,
        remote: Address,
        send: Callable[[bytes, Address], None],
        *,
        dtmf_payload_type: int | None = 101,
        time: Callable[[], float],
        inactivity_timeout: float = 30.0,
        send_rtcp: Callable[[bytes, Address], None] | None = None,
        cname: str = "parley",
    ) -> None:
        self.codec = codec
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self.remote = remote
        self.latched: Address | None = None
        self._send = send
        self._time = time
        self.sender = RtpSender(payload_type)
        self.jitter = JitterBuffer()
        self.reception = ReceptionStats()
        self.dtmf = DtmfReceiver()
        self.stats = StreamStats()
        self.sending = True
        self.receiving = True
        self.on_audio: Callable[[np.ndarray], None] | None = None
        self.on_dtmf: Callable[[str], None] | None = None
        self.on_inactive: Callable[[], None] | None = None
        self.inactivity_timeout = inactivity_timeout
        self.started = time()
        self.last_rx = self.started
        self._playbacks: deque[Playback] = deque()
        self._dtmf_out: deque[tuple[bytes, bool]] = deque()
        self._silence = g711.encode(codec, np.zeros(FRAME_SAMPLES, dtype=np.int16))
        self._decode_table = g711.decode_table(codec)
        self._last_pcm: np.ndarray | None = None
        self._losses = 0
        self._inactive_reported = False
        self._event_ts = 0
        self._send_rtcp = send_rtcp
        self.cname = cname
        self._ticks = 0
        self._last_sr = 0
        self._last_sr_at: float | None = None
        self.rtcp_in = 0

    # -- receive ------------------------------------------------------------------------------
    def receive(self, data: bytes, source: Address) -> None:
        """Handle one datagram from the RTP socket."""
        if not self.receiving:
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            self.stats.malformed += 1
            return
        if self.latched is None:
            self.latched = source  # symmetric RTP: answer where the media really comes from
        elif source != self.latched:
            self.stats.strangers += 1
            return
        self.stats.packets_in += 1
        self.last_rx = now = self._time()
        arrival_ts = int((now - self.started) * CLOCK_RATE)
        pt = packet.payload_type
        if pt == self.payload_type:
            self.reception.update(packet, arrival_ts)
            self.jitter.push(packet, arrival_ts)
        elif pt == self.dtmf_payload_type:
            digit = self.dtmf.feed(packet)
            if digit is not None:
                self.stats.dtmf_in += 1
                if self.on_dtmf is not None:
                    self.on_dtmf(digit)
        else:
            self.stats.unknown_payload += 1

    # -- send ---------------------------------------------------------------------------------
    def play(self, pcm: np.ndarray) -> Playback:
        """Queue 8 kHz int16 audio; it is encoded once and sent 20 ms per tick."""
        playback = Playback(g711.encode(self.codec, pcm))
        self._playbacks.append(playback)
        return playback

    def stop_playback(self) -> None:
        """Drop everything queued at once (barge-in)."""
        while self._playbacks:
            self._playbacks.popleft()._finish(True)

    @property
    def playing(self) -> bool:
        return bool(self._playbacks)

    def send_dtmf(self, digits: str, duration_ms: int = 100) -> None:
        for digit in digits:
            self._dtmf_out.extend(dtmf_payloads(digit, duration_ms))
            self._dtmf_out.extend([(b"", False)] * 3)  # inter-digit gap

    def _next_frame(self) -> bytes:
        playbacks = self._playbacks
        while playbacks:
            playback = playbacks[0]
            start = playback.offset
            chunk = playback.data[start : start + FRAME_SAMPLES]
            playback.offset = start + FRAME_SAMPLES
            if playback.offset >= len(playback.data):
                playbacks.popleft()._finish(False)
            if chunk:
                if len(chunk) < FRAME_SAMPLES:
                    chunk += self._silence[len(chunk) :]
                return chunk
        return self._silence

    def receive_rtcp(self, data: bytes, source: Address) -> None:
        """Note the peer's sender reports (for LSR/DLSR in our receiver reports)."""
        try:
            packets = parse_compound(data)
        except RtcpError:
            self.stats.malformed += 1
            return
        self.rtcp_in += 1
        for packet in packets:
            if isinstance(packet, SenderReport):
                self._last_sr = packet.ntp_middle
                self._last_sr_at = self._time()

    def _report(self) -> None:
        if self._send_rtcp is None:
            return
        now = self._time()
        blocks = [report_block(self.reception, now, self._last_sr, self._last_sr_at)] if self.reception.received else []
        remote = self.latched or self.remote
        self._send_rtcp(build_compound(self.sender.ssrc, self.cname, blocks, sender=self.sender), (remote[0], remote[1] + 1))

    def tick(self) -> None:
        """One 20 ms period: play out one received frame, send one frame (hot path: 1,000s per tick)."""
        ticks = self._ticks = self._ticks + 1
        on_audio = self.on_audio
        payload = self.jitter.pop()
        if payload is not None:
            pcm = self._decode_table.take(np.frombuffer(payload, np.uint8))
            self._last_pcm = pcm
            self._losses = 0
            if on_audio is not None:
                on_audio(pcm)
        elif on_audio is not None and self._last_pcm is not None:
            self._losses += 1
            on_audio(conceal(self._last_pcm, self._losses))
        if self.sending:
            if self._dtmf_out:
                self._send_dtmf_frame()
            else:
                self._send(self.sender.packet(self._next_frame()), self.latched or self.remote)
                self.stats.packets_out += 1
            if ticks % RTCP_INTERVAL_TICKS == 0:
                self._report()
        if ticks % INACTIVITY_CHECK_TICKS == 0:
            self._check_inactivity()

    def _send_dtmf_frame(self) -> None:
        payload, marker = self._dtmf_out.popleft()
        if marker:
            self._event_ts = self.sender.timestamp
        if payload:
            packet = self.sender.packet_at(payload, self._event_ts, marker, self.dtmf_payload_type or 101)
            self._send(packet, self.latched or self.remote)
            self.stats.packets_out += 1
        self.sender.advance(FRAME_SAMPLES)

    def _check_inactivity(self) -> None:
        if (
            self.on_inactive is not None
            and not self._inactive_reported
            and self.receiving
            and self.sending
            and self._time() - self.last_rx > self.inactivity_timeout
        ):
            self._inactive_reported = True
            self.on_inactive()

    def update_remote(self, remote: Address, send: bool, receive: bool) -> None:
        """Apply a new offer/answer: address change or hold (sendonly/inactive)."""
        if remote != self.remote:
            self.remote = remote
            self.latched = None
        self.sending = send
        self.receiving = receive
        self.last_rx = self._time()
        self._inactive_reported = False
