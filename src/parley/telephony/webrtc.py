"""Browser calls: WebRTC as a second channel that produces the same :class:`Call` as SIP.

A page sends a JSON offer (``POST /offer``, :mod:`parley.telephony.webpage`); :class:`WebRtcChannel`
answers it with aiortc, which does ICE (aioice), DTLS-SRTP (pylibsrtp) and Opus: none of that is
written here. Once ICE and DTLS are up, the call is a :class:`Call` like any SIP call — same app
(agent or echo), same media clock, same admission control (``--max-calls`` counts browsers and SIP
dialogs together, ``--max-load`` the same loads), same records — so agents and speech cannot tell a
browser call from a SIP call.

Audio takes the path a SIP call's does, with Opus for G.711. aiortc does ICE, DTLS and SRTP; the
RTP its receiver gets is taken from it at once (:meth:`WebRtcChannel._take_rtp`): RFC 4733
telephone-events go to :class:`~parley.media.dtmf.DtmfReceiver` (Chromium's ``RTCDTMFSender``:
``telephone-event`` is added to aiortc's codecs, which leave it out, so the answer accepts it), Opus
packets to the same :class:`~parley.media.jitter.JitterBuffer` as an RTP stream's, played out by the
media clock. Each tick decodes the slot's packet (libopus through PyAV, at 48 kHz) and takes it to
8 kHz with libswresample (PyAV's), and encodes the call's 8 kHz frame to Opus as it is (libopus takes
8 kHz input; its RTP clock stays 48 kHz), which aiortc packs, protects and sends; while the call
plays nothing, nothing is sent once the encoder has said silence (as a browser's DTX). So a browser call
hears with the jitter buffer's delay, as a SIP call does. aiortc's own receive path held four packets
in its jitter buffer before releasing one (80 ms), decoded on a thread, and soxr's stream resampler
then handed out the 8 kHz audio in bursts of about 40 ms; its sending path encoded 48 kHz stereo on
an executor thread per frame. libswresample delays 2 ms; soxr stays the speech layer's resampler.

A page's keypad sends keys as RFC 4733 when the browser negotiated it, else over the call's data
channel, which also carries to the page what the agent heard and did (:meth:`Call.publish`) and
either side's hang-up. A browser that vanishes without hanging up ends the call when ICE fails (the
consent checks of RFC 7675 stop being answered): the call ends with ``ice-failed`` and its record
says so.

The answer asks the browser for Opus DTX (``usedtx=1``): a silent caller's Chromium then sends about 5
packets a second, not 50 (:func:`_ask_for_dtx`).

Taking the RTP from aiortc, adding telephone-event, asking for DTX and setting the consent timeout use
parts of aiortc and aioice that are not public API: :func:`check_aiortc` lists them and refuses a
version without them, and ``pyproject.toml`` pins both to the minor versions that have them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import inspect
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aioice.ice
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCSessionDescription,
)
from aiortc.codecs import CODECS
from aiortc.mediastreams import MediaStreamError

from parley.media.dtmf import DtmfReceiver
from parley.media.g711 import FRAME_SAMPLES
from parley.media.jitter import JitterBuffer, conceal
from parley.media.rtp import RtpPacket
from parley.media.stream import Playback
from parley.sip.sdp import Codec, SdpError, parse_sdp
from parley.telephony import logs, metrics
from parley.telephony.call import Call

if TYPE_CHECKING:
    from aiortc import RTCDataChannel, RTCRtpReceiver

    from parley.telephony.manager import App, CallManager

log = logging.getLogger(__name__)

PIPELINE_RATE = 8000  # the rate of every Call's frames (G.711's)
OPUS_CLOCK = 48000  # Opus's RTP clock, whatever the audio's bandwidth
OPUS_FRAME = OPUS_CLOCK * FRAME_SAMPLES // PIPELINE_RATE  # 960: a 20 ms packet, one jitter-buffer slot
OPUS_BITRATE = 32000  # narrowband speech (the pipeline's 8 kHz): CELT at this rate is transparent
OPUS_APPLICATION = "lowdelay"  # CELT only: 2.5 ms of look-ahead where "voip" (SILK) has 6.5
TELEPHONE_EVENT = "audio/telephone-event"
TELEPHONE_EVENT_NAME = "telephone-event"
MAX_OUT_PACKETS = 5  # packets queued for aiortc beyond which the oldest go (100 ms): it stopped pulling
MAX_HEARD_FRAMES = 3  # decoded 8 kHz frames held beyond a tick's (packets longer than 20 ms)
# After the call's audio, silent frames are still sent until the encoder's own silence packet (TOC and
# CELT's silence flag: 3 bytes), at most this many (its memory of the audio dies out in about twelve);
# then nothing until the next audio (see BrowserStream.next_out).
SILENCE_PACKET_BYTES = 3
SILENCE_TAIL_FRAMES = 25
SETUP_TIMEOUT_S = 20.0  # offer answered, but ICE/DTLS never came up: give up
QUIET_BEFORE_CLOSE_S = 2.0  # nothing from the browser this long before its connection closed: it had gone
CLOSE_DELAY_S = 0.5  # after a hang-up, time for the data channel's last message before closing
INACTIVITY_CHECK_TICKS = 50
SDP_MAX_BYTES = 64 * 1024
MAX_BACKLOG = 200  # events kept for a page whose data channel is not open (yet)
_PIPELINE_TIME = fractions.Fraction(1, PIPELINE_RATE)


def _accept_telephone_events() -> None:
    """Add RFC 4733 ``telephone-event`` (8 and 48 kHz, as Chromium offers) to the audio codecs aiortc
    answers with, after its own: aiortc has no DTMF (aiortc/aiortc#30, "wontfix": WebRTC has no API
    to receive it), so without this it leaves them out of the answer and browsers cannot send keys.
    Its receiver never sees these packets: :meth:`WebRtcChannel._take_rtp` takes them first."""
    audio = CODECS["audio"]
    for rate, payload_type in ((8000, 126), (48000, 110)):  # payload types: the offer's are used
        if not any(c.mimeType.lower() == TELEPHONE_EVENT and c.clockRate == rate for c in audio):
            audio.append(
                RTCRtpCodecParameters(
                    TELEPHONE_EVENT, rate, payloadType=payload_type, parameters={"0-15": None}
                )
            )


_accept_telephone_events()


def _ask_for_dtx() -> None:
    """Answer Opus with ``usedtx=1`` (RFC 7587: the receiver prefers DTX), which browsers honour: while
    the caller is silent (most of a call: the agent speaks), Chromium sends about 5 packets a second
    instead of 50 (14 against 151 in 3 quiet seconds, its own ``packetsSent``), and each packet
    spared is aiortc's per-packet Python (DTLS transport, SRTP, RTP parsing), a jitter-buffer insert
    and an Opus decode on the server. The gaps are
    silence to the call: the jitter buffer holds its place and the stream conceals, then plays
    zeros (:meth:`BrowserStream.deliver`); speech after a gap starts a new talk spurt."""
    for codec in CODECS["audio"]:
        if codec.mimeType.lower() == "audio/opus":
            codec.parameters["usedtx"] = 1


_ask_for_dtx()


class OfferError(Exception):
    """An offer that cannot be answered; ``status`` is the HTTP status to answer with (400 bad
    offer, 503 refused by admission control), and the message says why in words for the page."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason  # a short token for the metrics: "sdp", "limit", "load", "draining"


class OpusIn:
    """A browser's Opus packets to the pipeline's 8 kHz frames: libopus decodes at 48 kHz (FFmpeg's
    wrapper offers no other rate) and libswresample takes it to 8 kHz, with an anti-aliasing filter
    and 2 ms of delay (soxr's stream resampler delays 40 ms, in bursts)."""

    def __init__(self) -> None:
        self._decoder = av.CodecContext.create("libopus", "r")
        self._decoder.sample_rate = OPUS_CLOCK
        self._decoder.layout = "mono"
        self._decoder.format = "s16"
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=PIPELINE_RATE)
        self._heard = np.empty(0, dtype=np.int16)
        self._primed = False
        self.errors = 0

    def decode(self, payload: bytes) -> None:
        """Decode one packet into the frames :meth:`next_frame` hands out (a bad packet is dropped)."""
        try:
            frames = self._decoder.decode(av.Packet(payload))
            pcm = [f.to_ndarray().reshape(-1) for frame in frames for f in self._resampler.resample(frame)]
        except (av.FFmpegError, ValueError):
            self.errors += 1
            return
        if not pcm:
            return
        out = np.concatenate(pcm) if len(pcm) > 1 else pcm[0]
        if not self._primed:  # the resampler's delay: the first packet gives a little short of a frame
            self._primed = True
            out = np.concatenate((np.zeros(max(0, FRAME_SAMPLES - len(out)), dtype=np.int16), out))
        heard = np.concatenate((self._heard, out)) if len(self._heard) else out
        excess = len(heard) - (MAX_HEARD_FRAMES + 1) * FRAME_SAMPLES
        self._heard = heard[excess:] if excess > 0 else heard

    def next_frame(self) -> np.ndarray | None:
        """The next 20 ms at 8 kHz, or None if no whole frame is decoded."""
        if len(self._heard) < FRAME_SAMPLES:
            return None
        frame, self._heard = self._heard[:FRAME_SAMPLES], self._heard[FRAME_SAMPLES:]
        return frame


class OpusOut:
    """The call's 8 kHz frames to Opus packets, one per frame: libopus encodes 8 kHz input as it is,
    so nothing is resampled (the browser decodes at 48 kHz; the RTP clock is Opus's 48 kHz)."""

    def __init__(self) -> None:
        self._encoder = av.CodecContext.create("libopus", "w")
        self._encoder.sample_rate = PIPELINE_RATE
        self._encoder.layout = "mono"
        self._encoder.format = "s16"
        self._encoder.bit_rate = OPUS_BITRATE
        self._encoder.options = {"application": OPUS_APPLICATION}
        self._encoder.time_base = _PIPELINE_TIME
        self._pts = 0

    def skip(self, samples: int) -> None:
        """Time passes with nothing sent (the next packet's RTP timestamp leaps: a gap, as with DTX)."""
        self._pts += samples

    def encode(self, pcm: np.ndarray) -> list[av.Packet]:
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = PIPELINE_RATE
        frame.pts = self._pts
        frame.time_base = _PIPELINE_TIME
        packets = self._encoder.encode(frame)
        for packet in packets:  # time-stamped by the frames sent, not the encoder's look-ahead
            packet.pts = self._pts
            packet.time_base = _PIPELINE_TIME
        self._pts += len(pcm)
        return packets


class BrowserStream:
    """A browser call's media as its :class:`Call` sees it: the playback interface of an
    :class:`~parley.media.stream.RtpStream` (play, play_frame, stop_playback, playing) at 8 kHz,
    ticked by the media clock like one: received Opus packets wait in a jitter buffer and each tick
    plays out one (decoded, with concealment for a missing one); each tick's frame to the browser is
    Opus-encoded and goes out through ``send_packet`` (aiortc) instead of an RTP socket."""

    codec = "L16"  # the clock's G.711 batching never sees a frame of this stream (next_out gives None)

    def __init__(
        self, send_packet: Callable[[av.Packet, Playback | None], None], *, inactivity_timeout: float = 30.0
    ) -> None:
        self.send_packet = send_packet
        self.on_audio: Callable[[np.ndarray], None] | None = None
        self.on_dtmf: Callable[[str], None] | None = None
        self.on_inactive: Callable[[], None] | None = None
        self.inactivity_timeout = inactivity_timeout
        self.frames_in = self.frames_out = 0  # frames heard; frames sent (not the silent ones skipped)
        self.frames_skipped = 0  # ticks with nothing to send and nothing sent (see next_out)
        self._quiet = True  # the browser has heard silence: nothing sent until audio (none before the first)
        self._quiet_ticks = 0  # silent frames sent since the last audio
        self.dtmf_in = self.dtmf_rfc4733 = 0  # every key; those that came as RFC 4733 events
        self.started = self.last_rx = time.monotonic()
        self.jitter = JitterBuffer(frame_samples=OPUS_FRAME, clock_rate=OPUS_CLOCK)
        self.opus_in = OpusIn()
        self.opus_out = OpusOut()
        self.dtmf: dict[int, DtmfReceiver] = {}  # negotiated telephone-event payload type -> its receiver
        self._ticks = 0
        self._losses = 0
        self._last_pcm: np.ndarray | None = None
        self._playbacks: deque[Playback | np.ndarray] = deque()
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self._starting: Playback | None = None  # the playback whose first frame this tick sends

    # -- from the browser ---------------------------------------------------------------------
    def receive_opus(self, payload: bytes, timestamp: int, ssrc: int, arrival: float) -> None:
        """An Opus packet as it arrived (``arrival``: ``time.monotonic``): into the jitter buffer."""
        self.last_rx = arrival
        self.jitter.insert(payload, timestamp, ssrc, int((arrival - self.started) * OPUS_CLOCK))

    def receive_event(self, payload_type: int, packet: RtpPacket) -> None:
        """An RFC 4733 telephone-event packet: a key once per event (its repeats and end packets not)."""
        receiver = self.dtmf.get(payload_type)
        digit = receiver.feed(packet) if receiver is not None else None
        if digit is not None:
            self.dtmf_rfc4733 += 1
            self.receive_dtmf(digit)

    def receive_dtmf(self, digit: str) -> None:
        """A key: from an RFC 4733 event, or the page's keypad over the data channel."""
        self.dtmf_in += 1
        if self.on_dtmf is not None:
            self.on_dtmf(digit)

    # -- to the browser -----------------------------------------------------------------------
    def play(self, pcm: np.ndarray) -> Playback:
        """Queue 8 kHz int16 audio; sent 20 ms per tick."""
        playback = Playback(np.ascontiguousarray(pcm, dtype=np.int16).tobytes())
        self._playbacks.append(playback)
        return playback

    def play_frame(self, pcm: np.ndarray) -> None:
        """Queue one 20 ms frame of a live source (echo, streamed TTS)."""
        if len(pcm) != FRAME_SAMPLES:
            self.play(pcm)
        else:
            self._playbacks.append(pcm)

    def stop_playback(self) -> None:
        """Drop everything queued at once (barge-in)."""
        while self._playbacks:
            item = self._playbacks.popleft()
            if type(item) is Playback:
                item._finish(True)

    @property
    def playing(self) -> bool:
        return bool(self._playbacks)

    def send_dtmf(self, digits: str, duration_ms: int = 100) -> None:
        raise ValueError("a browser call sends no telephone-events: DTMF cannot be sent to a browser")

    def _next_frame(self) -> np.ndarray:
        playbacks = self._playbacks
        step = 2 * FRAME_SAMPLES  # bytes of a frame
        while playbacks:
            playback = playbacks[0]
            if type(playback) is not Playback:
                return playbacks.popleft()
            start = playback.offset
            if not start:
                playback.first_sent = time.monotonic()  # the media clock's time; when aiortc takes it, later
                self._starting = playback
            chunk = playback.data[start : start + step]
            playback.offset = start + step
            if playback.offset >= len(playback.data):
                playbacks.popleft()._finish(False)
            if chunk:
                frame = np.frombuffer(chunk, dtype=np.int16)
                if len(frame) < FRAME_SAMPLES:
                    frame = np.concatenate((frame, self._silence[len(frame) :]))
                return frame
        return self._silence

    # -- the media clock's phases (see parley.media.clock.Ticking) -------------------------------
    def next_out(self) -> None:
        """Encode this tick's frame and send it to the browser; nothing for the clock to encode.

        While nothing plays, nothing is sent once the encoder has said silence (:data:`SILENCE_PACKET_BYTES`,
        or after :data:`SILENCE_TAIL_FRAMES`): the RTP timestamps leap over the gap, as a browser's
        Opus DTX does.
        An agent is silent most of a call, and libopus's CELT takes 3-4 times longer on digital
        silence than on speech (its filters' memories decay into denormal floats); aiortc's
        per-packet sending is saved as well."""
        self._starting = None
        frame = self._next_frame()
        silent = frame is self._silence
        if silent and self._quiet:
            self.frames_skipped += 1
            self.opus_out.skip(FRAME_SAMPLES)
            return
        self.frames_out += 1
        packets = self.opus_out.encode(frame)
        for packet in packets:
            self.send_packet(packet, self._starting)
        if silent:
            self._quiet_ticks += 1
            self._quiet = self._quiet_ticks >= SILENCE_TAIL_FRAMES or any(
                packet.size <= SILENCE_PACKET_BYTES for packet in packets
            )
        else:
            self._quiet, self._quiet_ticks = False, 0

    def pull(self) -> None:
        """Decode the packet due for this tick's slot; :meth:`deliver` hands the frame on."""
        self._ticks += 1
        payload = self.jitter.pop()
        if payload is not None:
            self.opus_in.decode(payload)

    def deliver(self, pcm: np.ndarray | None) -> None:
        """Hand this tick's decoded frame (or concealment for a missing one) to the consumer."""
        on_audio = self.on_audio
        frame = self.opus_in.next_frame()
        if frame is not None:
            self.frames_in += 1
            self._last_pcm = frame
            self._losses = 0
            if on_audio is not None:
                on_audio(frame)
        elif on_audio is not None and self._last_pcm is not None:
            self._losses += 1
            on_audio(conceal(self._last_pcm, self._losses))

    def send_payload(self, payload: bytes) -> None:
        pass

    def housekeeping(self) -> None:
        on_inactive = self.on_inactive
        if (
            self._ticks % INACTIVITY_CHECK_TICKS == 0
            and on_inactive is not None
            and time.monotonic() - self.last_rx > self.inactivity_timeout
        ):
            self.on_inactive = None
            on_inactive()


class _OutgoingAudio(MediaStreamTrack):
    """The call's audio as aiortc pulls it: Opus packets already encoded, one per media-clock tick
    (aiortc packs them as they are: no encoder of its own, no thread hop per frame)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._packets: deque[tuple[av.Packet, Playback | None, float]] = deque(maxlen=MAX_OUT_PACKETS)
        self._ready: asyncio.Event = asyncio.Event()
        self.handoffs = 0
        self.handoff_total_s = self.handoff_max_s = 0.0  # from the tick's encode to aiortc taking it

    def push(self, packet: av.Packet, starts: Playback | None = None) -> None:
        """Queue a packet; ``starts``: the playback whose first frame it carries."""
        self._packets.append((packet, starts, time.monotonic()))
        self._ready.set()

    async def recv(self) -> av.Packet:
        while not self._packets:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        packet, starts, queued = self._packets.popleft()
        now = time.monotonic()
        if starts is not None:  # leaving now (aiortc packs, protects and sends it before it pulls again)
            starts.first_sent = now
        waited = now - queued
        self.handoffs += 1
        self.handoff_total_s += waited
        self.handoff_max_s = max(self.handoff_max_s, waited)
        return packet

    def stop(self) -> None:
        super().stop()
        self._ready.set()


@dataclass(eq=False)
class _Browser:
    """One peer connection and, once it is up, its call."""

    call_id: str
    pc: RTCPeerConnection
    out: _OutgoingAudio
    stream: BrowserStream
    app: App | None
    call: Call | None = None
    channel: RTCDataChannel | None = None
    ended: bool = False
    setup_timer: asyncio.TimerHandle | None = None
    backlog: list[str] = field(default_factory=list)  # events published before the data channel opened


class WebRtcChannel:
    """Answers browsers' offers and runs each connected browser as a :class:`Call` of ``manager``
    (its media clock, admission control, app and statistics).

    ``ice_servers``: STUN/TURN URLs for callers behind NAT (none is needed on a LAN or localhost).
    """

    def __init__(
        self, manager: CallManager, *, ice_servers: tuple[str, ...] = (), consent_timeout: float = 30.0
    ) -> None:
        check_aiortc()
        self.manager = manager
        self.ice_servers = ice_servers
        # RFC 7675: a browser that stops answering consent checks for this long is gone. aioice checks
        # every CONSENT_INTERVAL (5 s) and gives up after CONSENT_FAILURES misses, for the process.
        aioice.ice.CONSENT_FAILURES = max(1, round(consent_timeout / aioice.ice.CONSENT_INTERVAL))
        self.browsers: dict[str, _Browser] = {}
        self.answered = self.refused = 0
        self.ended: dict[str, int] = {}
        self.dtmf_rfc4733 = 0  # keys that came as RFC 4733 events (the rest: over the data channel)
        self.handoffs = 0  # packets aiortc took from the calls' tracks, and how long they waited
        self.handoff_total_s = self.handoff_max_s = 0.0
        self.jitter_delay_frames: list[int] = []  # each ended call's jitter buffer delay at its end
        self.jitter_late = 0  # packets that came after their slot was played
        self._closing: set[asyncio.Task] = set()

    def refusal(self) -> OfferError | None:
        """Why a new browser call would be refused now (the same admission as an INVITE's), or None."""
        reason = self.manager.refusal()
        if reason is None:
            return None
        message = {
            "draining": "The server is shutting down and takes no new calls. Please try again shortly.",
            "limit": "All lines are busy: the server is at its call limit. Please try again shortly.",
            "load": "The server is too busy to take another call now. Please try again shortly.",
        }[reason]
        return OfferError(503, message, reason)

    async def answer(self, offer: Any, app: App | None = None) -> dict[str, str]:
        """Answer a browser's offer (``{"type": "offer", "sdp": ...}``); the call starts once ICE and
        DTLS are up. ``app`` overrides the manager's app for this call (the studio's chosen version).
        Raises :class:`OfferError` for a bad offer (400) or when admission refuses (503)."""
        sdp = _offered_sdp(offer)
        refused = self.refusal()
        if refused is not None:
            self.refused += 1
            metrics.CALLS_REFUSED.labels(refused.reason).inc()
            raise refused
        from aiortc import RTCIceServer

        config = RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in self.ice_servers])
        pc = RTCPeerConnection(configuration=config)
        out = _OutgoingAudio()
        browser = _Browser(
            "webrtc-" + secrets.token_hex(8),
            pc,
            out,
            BrowserStream(out.push, inactivity_timeout=self.manager.media_timeout),
            app,
        )
        self._wire(browser)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
            if not audio:
                raise OfferError(400, "the offer has no audio stream (m=audio)", "sdp")
            audio[0].sender.replaceTrack(out)
            audio[0].direction = "sendrecv"
            answer = await pc.createAnswer()
            codecs = _answered_codecs(answer.sdp)  # the offer's that aiortc (and telephone-event) know
            if not codecs or codecs[0].name.lower() != "opus":
                needs = "the server sends Opus: the offer must have Opus first among its audio codecs"
                raise OfferError(400, needs, "sdp")
            await pc.setLocalDescription(answer)
            self._take_rtp(browser, audio[0].receiver, codecs)
        except OfferError:
            await pc.close()
            self._refused_sdp()
            raise
        except Exception as exc:  # aiortc's parse and negotiation errors: the offer is at fault
            await pc.close()
            self._refused_sdp()
            raise OfferError(400, f"cannot answer this offer: {exc}", "sdp") from None
        self.browsers[browser.call_id] = browser
        self.manager.ua.other_calls += 1  # counts against --max-calls from now (setup included)
        browser.setup_timer = asyncio.get_running_loop().call_later(
            SETUP_TIMEOUT_S, lambda: self._end(browser, "setup-timeout")
        )
        return {"type": "answer", "sdp": pc.localDescription.sdp, "call_id": browser.call_id}

    def _refused_sdp(self) -> None:
        self.refused += 1
        metrics.CALLS_REFUSED.labels("sdp").inc()

    def _wire(self, browser: _Browser) -> None:
        pc = browser.pc

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            browser.channel = channel
            channel.on("message", lambda message: self._on_message(browser, message))
            channel.on("open", lambda: self._flush_events(browser))
            self._flush_events(browser)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            state = pc.connectionState
            if state == "connected" and browser.call is None and not browser.ended:
                self._connected(browser)
            elif state == "failed" or (state == "closed" and _went_quiet(browser.stream)):
                self._end(browser, "ice-failed")
            elif state == "closed":  # the browser closed its side (DTLS close_notify) without our page
                self._end(browser, "remote-hangup")

    def _connected(self, browser: _Browser) -> None:
        """ICE and DTLS are up: the browser is a call now."""
        if browser.setup_timer is not None:
            browser.setup_timer.cancel()
        manager = self.manager
        stream: Any = browser.stream  # the playback interface of an RtpStream (see BrowserStream)
        call = Call(self, None, stream, "inbound", call_id=browser.call_id, channel="webrtc")
        browser.call = call
        browser.stream.on_audio = call._audio_in
        browser.stream.on_dtmf = call._dtmf_in
        browser.stream.on_inactive = lambda: self._media_timeout(call)
        call.on_event = lambda event: self._send_event(browser, event)
        manager.calls[browser.call_id] = call
        manager.clock.add(browser.stream)
        self.answered += 1
        manager.stats.answered += 1
        metrics.CALLS_ADMITTED.inc()
        metrics.CALLS_ACTIVE.inc()
        token = logs.call_id.set(browser.call_id)
        log.info("browser call connected")
        manager.start_app(call, browser.app)
        logs.call_id.reset(token)

    def _take_rtp(self, browser: _Browser, receiver: RTCRtpReceiver, codecs: list[Codec]) -> None:
        """Have the RTP that ``receiver`` gets (decrypted, parsed) go to the call's stream instead:
        Opus into its jitter buffer, telephone-events to its DTMF receivers. aiortc's receive path
        (jitter buffer, decoder thread) is left idle; its RTCP statistics with it.

        aiortc has no public hook for a receiver's RTP: this replaces the private method its DTLS
        transport calls per packet (see :func:`check_aiortc`)."""
        stream = browser.stream
        opus = codecs[0].payload_type
        for codec in codecs:
            if codec.name.lower() == TELEPHONE_EVENT_NAME:
                stream.dtmf[codec.payload_type] = DtmfReceiver(codec.clock_rate)

        async def handle_rtp_packet(packet: Any, arrival_time_ms: int) -> None:
            if browser.call is None:
                return  # not connected yet (cannot happen before DTLS, but be sure)
            payload_type = packet.payload_type
            if payload_type == opus:
                stream.receive_opus(packet.payload, packet.timestamp, packet.ssrc, time.monotonic())
            elif payload_type in stream.dtmf:
                event = RtpPacket(payload_type, packet.sequence_number, packet.timestamp, packet.ssrc,
                                  packet.payload, packet.marker)  # fmt: skip
                stream.receive_event(payload_type, event)

        receiver._handle_rtp_packet = handle_rtp_packet  # what aiortc's DTLS transport calls per packet

    def _on_message(self, browser: _Browser, message: str | bytes) -> None:
        """The page's messages: ``{"type": "dtmf", "digit": "5"}`` and ``{"type": "hangup"}``."""
        try:
            data = json.loads(message)
        except (TypeError, ValueError):
            return
        if not isinstance(data, dict):
            return
        kind = data.get("type")
        if kind == "hangup":
            self._end(browser, "remote-hangup")
        elif kind == "dtmf" and browser.call is not None:
            digit = str(data.get("digit", ""))
            if len(digit) == 1 and digit in "0123456789*#ABCD":
                browser.stream.receive_dtmf(digit)

    def _send_event(self, browser: _Browser, event: dict[str, Any]) -> None:
        browser.backlog.append(json.dumps(event, default=str))
        del browser.backlog[:-MAX_BACKLOG]
        self._flush_events(browser)

    def _flush_events(self, browser: _Browser) -> None:
        channel = browser.channel
        if channel is not None and channel.readyState == "open":
            for message in browser.backlog:
                channel.send(message)
            browser.backlog.clear()

    def _media_timeout(self, call: Call) -> None:
        log.info("call %s: no audio from the browser for %.0f s, hanging up", call.call_id,
                 self.manager.media_timeout)  # fmt: skip
        call.hangup()

    # -- Channel: what a Call asks of us ---------------------------------------------------------
    def hangup(self, call: Call) -> None:
        browser = self.browsers.get(call.call_id)
        if browser is not None:
            self._send_event(browser, {"type": "hangup", "by": "agent"})
            self._end(browser, "local-hangup")

    def refer(self, call: Call, target: str) -> None:
        """A browser call cannot be transferred: the transfer fails (the agent's failure path runs)."""
        future = call._transfer
        if future is not None and not future.done():
            future.set_result(501)

    def reinvite(self, call: Call, direction: str, new_key: bool = False) -> bool:
        return False  # no hold for a browser call (Call.hold answers 491)

    # -- ending ---------------------------------------------------------------------------------
    def _end(self, browser: _Browser, reason: str) -> None:
        """The call is over (at once: its app and record see ``reason``); the connection closes after."""
        if browser.ended:
            return
        browser.ended = True
        if browser.setup_timer is not None:
            browser.setup_timer.cancel()
        self.browsers.pop(browser.call_id, None)
        manager = self.manager
        manager.ua.other_calls -= 1
        self.ended[reason] = self.ended.get(reason, 0) + 1
        call = browser.call
        if call is not None:
            manager.stats.ended[reason] = manager.stats.ended.get(reason, 0) + 1
            manager.clock.remove(browser.stream)
            manager.calls.pop(browser.call_id, None)
            metrics.CALLS_ACTIVE.dec()
            metrics.CALLS_ENDED.labels(reason).inc()
            token = logs.call_id.set(browser.call_id)
            log.info("browser call ended: %s", reason)
            logs.call_id.reset(token)
            call._ended(reason)
            stream = browser.stream
            stream.on_audio = stream.on_dtmf = stream.on_inactive = None
            call.on_event = None
        out = browser.out
        out.stop()
        self.dtmf_rfc4733 += browser.stream.dtmf_rfc4733
        self.handoffs += out.handoffs
        self.handoff_total_s += out.handoff_total_s
        self.handoff_max_s = max(self.handoff_max_s, out.handoff_max_s)
        jitter = browser.stream.jitter.stats
        self.jitter_delay_frames.append(jitter.current_delay_frames)
        self.jitter_late += jitter.late
        # after our hang-up, the page hears it on the data channel before the connection closes
        delay = CLOSE_DELAY_S if reason == "local-hangup" else 0.0
        closing = asyncio.ensure_future(self._close(browser, delay))
        self._closing.add(closing)  # not the manager's tasks: those are cancelled as it stops
        closing.add_done_callback(self._closing.discard)

    async def _close(self, browser: _Browser, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        with contextlib.suppress(Exception):
            await browser.pc.close()

    async def close(self) -> None:
        """End every browser call and close the connections (the server stops)."""
        for browser in list(self.browsers.values()):
            self._end(browser, "local-hangup")
        if self._closing:
            await asyncio.wait(self._closing, timeout=2.0)

    def report(self) -> dict[str, Any]:
        return {"answered": self.answered, "refused": self.refused, "ended": dict(self.ended),
                "active": len(self.browsers), "dtmf_rfc4733": self.dtmf_rfc4733,
                "handoff_ms": {"mean": round(1000 * self.handoff_total_s / max(1, self.handoffs), 3),
                               "max": round(1000 * self.handoff_max_s, 3)},
                "jitter_delay_frames": self.jitter_delay_frames[-100:],
                "jitter_late": self.jitter_late}  # fmt: skip


def _offered_sdp(offer: Any) -> str:
    """The SDP of a JSON offer, checked enough to say clearly what is wrong with a bad one."""
    if not isinstance(offer, dict):
        raise OfferError(400, 'expected a JSON object {"type": "offer", "sdp": "..."}', "sdp")
    if offer.get("type") != "offer":
        raise OfferError(400, f'expected "type": "offer", got {offer.get("type")!r}', "sdp")
    sdp = offer.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip():
        raise OfferError(400, 'the offer has no "sdp" text', "sdp")
    if len(sdp) > SDP_MAX_BYTES:
        raise OfferError(400, f"the SDP is larger than {SDP_MAX_BYTES} bytes", "sdp")
    lines = [line.strip() for line in sdp.strip().splitlines()]
    if not lines[0].startswith("v=0"):
        raise OfferError(400, "malformed SDP: it must start with v=0 (RFC 8866)", "sdp")
    bad = next((line for line in lines if len(line) < 2 or line[1] != "=" or not line[0].isalpha()), None)
    if bad is not None:
        raise OfferError(400, f"malformed SDP line: {bad[:60]!r}", "sdp")
    if not any(line.startswith("m=audio ") for line in lines):
        raise OfferError(400, "the offer has no audio stream (m=audio)", "sdp")
    for needed, what in (("a=ice-ufrag:", "ICE credentials"), ("a=fingerprint:", "a DTLS fingerprint")):
        if not any(line.startswith(needed) for line in lines):
            raise OfferError(400, f"the offer has no {what} ({needed[:-1]}): not a WebRTC offer", "sdp")
    return sdp if sdp.endswith("\n") else sdp + "\r\n"


def _answered_codecs(sdp: str) -> list[Codec]:
    """The audio codecs of an answer, in its order (the first is the one sent)."""
    try:
        return parse_sdp(sdp.encode()).codecs
    except SdpError:
        return []


def _went_quiet(stream: BrowserStream) -> bool:
    """Whether the browser had stopped sending before the connection closed by itself: ICE consent
    expired (RFC 7675; aiortc then closes the DTLS transport too, and may report the connection
    "closed" before its ICE transport says "failed"), rather than the browser closing it on purpose,
    which it does with its microphone's packets still coming (at most 400 ms apart with Opus DTX)."""
    return time.monotonic() - stream.last_rx >= QUIET_BEFORE_CLOSE_S


def check_aiortc() -> None:
    """Fail clearly, naming the version, if aiortc or aioice lack what this channel relies on beyond
    their public API (both are pinned in ``pyproject.toml``; ``tests/telephony/test_webrtc_aiortc.py``
    checks the same and more for each upgrade):

    - ``RTCRtpReceiver._handle_rtp_packet(packet, arrival_time_ms)``, the coroutine method aiortc's DTLS
      transport calls for each decrypted RTP packet of a receiver: replaced per call
      (:meth:`WebRtcChannel._take_rtp`), since aiortc has no public hook for raw RTP;
    - ``aiortc.codecs.CODECS["audio"]``, the table of the codecs aiortc answers with: telephone-event
      is added to it (:func:`_accept_telephone_events`) and its Opus asks for DTX (:func:`_ask_for_dtx`),
      since aiortc has no API to add a codec or set a codec's parameters;
    - ``aioice.ice.CONSENT_INTERVAL`` and ``CONSENT_FAILURES``, which aioice reads on each consent
      check (RFC 7675): set from ``--webrtc-consent-timeout``, since aiortc passes no such option on.

    Its one public but little-known behaviour: a track's ``recv()`` may return an encoded ``av.Packet``
    (:class:`_OutgoingAudio`), which aiortc sends as it is, without its own encoder.
    """
    import aiortc
    from aiortc import RTCRtpReceiver

    problems = []
    handler = getattr(RTCRtpReceiver, "_handle_rtp_packet", None)
    if not inspect.iscoroutinefunction(handler) or list(inspect.signature(handler).parameters) != [
        "self",
        "packet",
        "arrival_time_ms",
    ]:
        problems.append("RTCRtpReceiver._handle_rtp_packet(self, packet, arrival_time_ms) is gone or changed")
    audio = CODECS.get("audio") if isinstance(CODECS, dict) else None
    if not isinstance(audio, list) or not all(isinstance(c, RTCRtpCodecParameters) for c in audio):
        problems.append("aiortc.codecs.CODECS['audio'] is no longer a list of RTCRtpCodecParameters")
    for name in ("CONSENT_INTERVAL", "CONSENT_FAILURES"):
        if not isinstance(getattr(aioice.ice, name, None), int):
            problems.append(f"aioice.ice.{name} is gone")
    if problems:
        raise RuntimeError(
            f"browser calls need what aiortc 1.16 / aioice 0.13 have; aiortc {aiortc.__version__}, aioice "
            f"{getattr(aioice, '__version__', '?')} differ: " + "; ".join(problems)
        )
