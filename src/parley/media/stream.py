"""One call's RTP stream: receive (latching, jitter buffer, DTMF, stats) and clocked sending.

Sans-I/O: packets come in through :meth:`RtpStream.receive`, the media clock calls
:meth:`RtpStream.tick` every 20 ms, and bytes go out through the ``send`` callable the
transport gave. Audio goes up as 160-sample int16 frames through ``on_audio``.

Compiled with Cython (``stream.pxd`` types it; ``setup.py`` builds it with ``rtp``, ``jitter``
and ``clock``): every call sends and receives 50 packets a second, and interpreted, this path
cost about 15 µs of CPU per packet pair, which held a core to about 600 calls; compiled it is
about 4 µs (``bench/rtp_hot_path.py``). The source stays plain Python, so it also runs
uncompiled (several times slower) when no C compiler was found at install time. After editing
this file or its ``.pxd``, rebuild with ``pip install -e .`` (``tests/media/test_compiled.py``
catches a stale build). Compiled, integers typed in the ``.pxd`` follow C rules: widen to 64
bits before shifting a byte left by 24.
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
    """A snapshot of a stream's packet counters (:attr:`RtpStream.stats`)."""

    packets_in: int = 0
    packets_out: int = 0
    strangers: int = 0
    malformed: int = 0
    unknown_payload: int = 0
    dtmf_in: int = 0


class Playback:
    """Encoded audio queued for sending; ``callbacks`` run when it is played out or stopped, and
    ``first_sent`` is when its first frame left (the stream's clock; None until then)."""

    __slots__ = ("callbacks", "data", "first_sent", "offset", "stopped")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0
        self.stopped = False
        self.first_sent: float | None = None
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
        self._dtmf_pt = -1 if dtmf_payload_type is None else dtmf_payload_type  # -1: not negotiated
        self.remote = remote
        self.latched: Address | None = None
        self._destination = remote  # where frames go: the latched source, else the signalled address
        self._send = send
        self._time = time
        self.sender = RtpSender(payload_type)
        self.jitter = JitterBuffer()
        self.reception = ReceptionStats()
        self.dtmf = DtmfReceiver()
        # counters (read together through ``stats``)
        self.packets_in = self.packets_out = self.strangers = 0
        self.malformed = self.unknown_payload = self.dtmf_in = 0
        self.sending = True
        self.receiving = True
        self.on_audio: Callable[[np.ndarray], None] | None = None
        self.on_dtmf: Callable[[str], None] | None = None
        self.on_inactive: Callable[[], None] | None = None
        self.inactivity_timeout = inactivity_timeout
        self.started = time()
        self.last_rx = self.started
        self._playbacks: deque[Playback | np.ndarray] = deque()
        self._dtmf_out: deque[tuple[bytes, bool]] = deque()
        self._silence = g711.encode(codec, np.zeros(FRAME_SAMPLES, dtype=np.int16))
        self._last_pcm: np.ndarray | None = None
        self._losses = 0
        self._inactive_reported = False
        self._event_ts = 0
        self._previous: Address | None = None
        self._reframe_buffer = b""
        self._reframe_next_ts = -1
        self._reframe_start_ts = 0
        self._reframe_ssrc = -1
        self._send_rtcp = send_rtcp
        self.cname = cname
        self._ticks = 0
        self._last_sr = 0
        self._last_sr_at: float | None = None
        self.rtcp_in = 0

    # -- receive ------------------------------------------------------------------------------
    def receive(self, data: bytes, source: Address, arrival: float = -1.0) -> None:
        """Handle one datagram from the RTP socket; ``arrival`` is its receive time (default: now)."""
        if not self.receiving:
            return
        raw = data if type(data) is bytes else bytes(data)
        if len(raw) >= 12 and raw[0] == 0x80:  # the common case: no padding, extension or CSRCs
            pt = raw[1] & 0x7F
            packet = None
        else:
            try:
                packet = RtpPacket.parse(raw)
            except RtpError:
                self.malformed += 1
                return
            pt = packet.payload_type
        if self.latched is None:
            # Symmetric RTP: answer where the media really comes from — but only latch on our
            # negotiated payload types (RTCP or junk on this port must not capture the stream),
            # and not on a straggler from the address a re-INVITE just moved away from.
            if (pt != self.payload_type and pt != self._dtmf_pt) or source == self._previous:
                self.strangers += 1
                return
            self.latched = self._destination = source
        elif source is not self.latched and source != self.latched:
            self.strangers += 1
            return
        self.packets_in += 1
        self.last_rx = now = arrival if arrival >= 0.0 else self._time()
        arrival_ts = int((now - self.started) * CLOCK_RATE)
        if pt == self.payload_type:
            if packet is None:
                sequence = (raw[2] << 8) | raw[3]
                timestamp = raw[4]  # widened to 64 bits first: compiled, a byte << 24 is a C int
                timestamp = (timestamp << 24) | (raw[5] << 16) | (raw[6] << 8) | raw[7]
                ssrc = raw[8]
                ssrc = (ssrc << 24) | (raw[9] << 16) | (raw[10] << 8) | raw[11]
                self.reception.update_header(sequence, timestamp, ssrc, arrival_ts)
                if len(raw) == 12 + FRAME_SAMPLES:
                    self.jitter.insert(raw[12:], timestamp, ssrc, arrival_ts)
                    return
                packet = RtpPacket.parse(raw)
            else:
                self.reception.update(packet, arrival_ts)
            if len(packet.payload) == FRAME_SAMPLES:
                self.jitter.push(packet, arrival_ts)
            else:
                self._reframe(packet, arrival_ts)
        elif pt == self._dtmf_pt:
            if packet is None:
                packet = RtpPacket.parse(raw)
            self.reception.update(packet, arrival_ts)  # same sequence space as the audio
            digit = self.dtmf.feed(packet)
            if digit is not None:
                self.dtmf_in += 1
                if self.on_dtmf is not None:
                    self.on_dtmf(digit)
        else:
            self.unknown_payload += 1

    def _reframe(self, packet: RtpPacket, arrival_ts: int) -> None:
        """Cut packets of other durations (10, 30, 40 ms ...) into 20 ms frames for the jitter buffer.

        G.711 has one byte per sample, so a frame is 160 bytes and its RTP timestamp advances by 160.
        """
        if packet.timestamp != self._reframe_next_ts or packet.ssrc != self._reframe_ssrc:
            self._reframe_buffer = b""  # not contiguous with what we hold: start over
            self._reframe_start_ts = packet.timestamp
            self._reframe_ssrc = packet.ssrc
        buffer = self._reframe_buffer + packet.payload
        self._reframe_next_ts = (packet.timestamp + len(packet.payload)) & 0xFFFFFFFF
        while len(buffer) >= FRAME_SAMPLES:
            frame = RtpPacket(packet.payload_type, packet.sequence, self._reframe_start_ts, packet.ssrc,
                              buffer[:FRAME_SAMPLES], packet.marker)  # fmt: skip
            self.jitter.push(frame, arrival_ts)
            buffer = buffer[FRAME_SAMPLES:]
            self._reframe_start_ts = (self._reframe_start_ts + FRAME_SAMPLES) & 0xFFFFFFFF
        self._reframe_buffer = buffer

    # -- send ---------------------------------------------------------------------------------
    def play(self, pcm: np.ndarray) -> Playback:
        """Queue 8 kHz int16 audio; it is encoded once and sent 20 ms per tick."""
        playback = Playback(g711.encode(self.codec, pcm))
        self._playbacks.append(playback)
        return playback

    def play_frame(self, pcm: np.ndarray) -> None:
        """Queue one 20 ms frame of a live source (echo, streamed TTS); the media clock encodes it
        together with every other stream's frame in one vectorised pass."""
        if len(pcm) != FRAME_SAMPLES:
            self.play(pcm)
        else:
            self._playbacks.append(pcm)

    def stop_playback(self) -> None:
        """Drop everything queued at once (barge-in)."""
        playbacks = self._playbacks
        while playbacks:
            item = playbacks.popleft()
            if type(item) is Playback:
                item._finish(True)

    @property
    def dtmf_payload_type(self) -> int | None:
        """The negotiated telephone-event payload type (None: the peer offered none)."""
        return None if self._dtmf_pt < 0 else self._dtmf_pt

    @property
    def stats(self) -> StreamStats:
        """The packet counters so far."""
        return StreamStats(self.packets_in, self.packets_out, self.strangers, self.malformed,
                           self.unknown_payload, self.dtmf_in)  # fmt: skip

    @property
    def playing(self) -> bool:
        return bool(self._playbacks)

    def send_dtmf(self, digits: str, duration_ms: int = 100) -> None:
        """Queue RFC 4733 events; ValueError if the peer did not negotiate telephone-event."""
        if self.dtmf_payload_type is None:
            raise ValueError("the peer did not offer telephone-event: RFC 4733 DTMF cannot be sent")
        for digit in digits:
            self._dtmf_out.extend(dtmf_payloads(digit, duration_ms))
            self._dtmf_out.extend([(b"", False)] * 3)  # inter-digit gap

    def _next_frame(self) -> bytes | np.ndarray:
        """The next 160-sample frame to send: encoded bytes, or a PCM frame still to encode."""
        playbacks = self._playbacks
        while playbacks:
            playback = playbacks[0]
            if type(playback) is not Playback:
                return playbacks.popleft()  # a live PCM frame from play_frame()
            start = playback.offset
            if not start:
                playback.first_sent = self._time()
            chunk = playback.data[start : start + FRAME_SAMPLES]
            playback.offset = start + FRAME_SAMPLES
            if playback.offset >= len(playback.data):
                playbacks.popleft()._finish(False)
            if chunk:
                if len(chunk) < FRAME_SAMPLES:
                    chunk += self._silence[len(chunk) :]
                return chunk
        return self._silence

    def receive_rtcp(self, data: bytes, source: Address, arrival: float = -1.0) -> None:
        """Note the peer's sender reports (for LSR/DLSR in our receiver reports)."""
        try:
            packets = parse_compound(data)
        except RtcpError:
            self.malformed += 1
            return
        self.rtcp_in += 1
        for packet in packets:
            if isinstance(packet, SenderReport):
                self._last_sr = packet.ntp_middle
                self._last_sr_at = arrival if arrival >= 0.0 else self._time()

    def _report(self) -> None:
        remote = self._destination
        # RTCP goes to the RTP port + 1 (RFC 3550 §11): there is none above an RTP port of 65535.
        if self._send_rtcp is None or remote[0] in ("0.0.0.0", "::") or not 0 < remote[1] < 65535:
            return
        now = self._time()
        blocks = (
            [report_block(self.reception, now, self._last_sr, self._last_sr_at)]
            if self.reception.received
            else []
        )
        self._send_rtcp(
            build_compound(self.sender.ssrc, self.cname, blocks, sender=self.sender),
            (remote[0], remote[1] + 1),
        )

    # -- the media clock's phases (see MediaClock._tick, which batches the G.711 work) ---------
    def pull(self) -> bytes | None:
        """Phase 3: the received payload due for this 20 ms slot (None when missing)."""
        self._ticks += 1
        return self.jitter.pop()

    def deliver(self, pcm: np.ndarray | None) -> None:
        """Phase 4: hand the decoded frame (or concealment for a missing one) to the consumer."""
        on_audio = self.on_audio
        if pcm is not None:
            self._last_pcm = pcm
            self._losses = 0
            if on_audio is not None:
                on_audio(pcm)
        elif on_audio is not None and self._last_pcm is not None:
            self._losses += 1
            on_audio(conceal(self._last_pcm, self._losses))

    def next_out(self) -> bytes | np.ndarray | None:
        """Phase 1: the frame to send now (PCM still to be encoded), or None (held, or DTMF sent)."""
        if not self.sending:
            self.sender.advance(FRAME_SAMPLES)  # the RTP clock keeps running through a hold
            return None
        if self._dtmf_out:
            self._send_dtmf_frame()
            return None
        return self._next_frame()

    def send_payload(self, payload: bytes) -> None:
        """Phase 2: packetize and send one encoded frame."""
        self._send(self.sender.packet(payload), self._destination)
        self.packets_out += 1

    def housekeeping(self) -> None:
        """Phase 5 (every tick, cheap): RTCP reports every 5 s and the inactivity check every 1 s."""
        ticks = self._ticks
        if ticks % RTCP_INTERVAL_TICKS == 0:
            self._report()  # RTCP goes on during hold too (RFC 3264 §5.1)
        if ticks % INACTIVITY_CHECK_TICKS == 0:
            self._check_inactivity()

    def tick(self) -> None:
        """All phases for this stream alone, in the clock's order (it batches them across streams)."""
        frame = self.next_out()
        if frame is not None:
            self.send_payload(frame if type(frame) is bytes else g711.encode(self.codec, frame))
        payload = self.pull()
        self.deliver(g711.decode(self.codec, payload) if payload is not None else None)
        self.housekeeping()

    def _send_dtmf_frame(self) -> None:
        payload, marker = self._dtmf_out.popleft()
        if marker:
            self._event_ts = self.sender.timestamp
        if payload:
            packet = self.sender.packet_at(payload, self._event_ts, marker, self.dtmf_payload_type)
            self._send(packet, self._destination)
            self.packets_out += 1
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
            self.remote = self._destination = remote
            self._previous = self.latched
            self.latched = None
        self.sending = send
        self.receiving = receive
        self.last_rx = self._time()
        self._inactive_reported = False
