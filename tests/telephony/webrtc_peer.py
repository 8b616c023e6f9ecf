"""A browser's part played by aiortc: for tests that need a WebRTC caller without Chromium, and for
``bench/webrtc.py``'s load generator.

:class:`BrowserPeer` POSTs its offer to a page's ``/offer`` (as ``call.js`` does), sends audio it is
given (8 kHz frames, resampled to 48 kHz; silence otherwise, paced in real time), and time-stamps the
agent's audio as aiortc decodes it. Run as a script (``python webrtc_peer.py URL``) it places one
call, prints ``connected`` and waits: a test kills it to play a browser that vanishes.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import sys
import time
from typing import Any

import av
import httpx
import numpy as np
import soxr
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from parley.sip.sdp import parse_sdp

RATE = 48000
FRAME = 960  # 20 ms at 48 kHz
LOUD_RMS = 300.0  # int16 RMS of a 20 ms frame that counts as speech
MAX_BEHIND_S = 0.1  # sending this late, the microphone skips ahead instead of catching up
# Opus DTX as Chromium runs it when the answer asks (usedtx=1): after this many silent frames, one
# packet every DTX_INTERVAL_FRAMES (200 ms) until speech comes again (Chromium's rate: 14 packets
# in 3 quiet seconds, by its own packetsSent; Chromium 156)
DTX_AFTER_FRAMES = 10
DTX_INTERVAL_FRAMES = 10


class _Microphone(MediaStreamTrack):
    """Audio queued by :meth:`BrowserPeer.say`, silence between; one 20 ms Opus packet per 20 ms,
    encoded here as a browser's audio thread does (aiortc would encode each frame on a thread pool,
    whose hand-offs jitter the packets' departure under load)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.queue: list[np.ndarray] = []
        self.start: float | None = None
        self.sent = 0
        self.first_speech_sent: float | None = None  # when the first frame of the last say() left
        self.last_speech_sent: float | None = None
        self.time_base = fractions.Fraction(1, RATE)
        self.encoder = av.CodecContext.create("libopus", "w")
        self.encoder.sample_rate, self.encoder.layout, self.encoder.format = RATE, "mono", "s16"
        self.encoder.bit_rate, self.encoder.options = 32000, {"application": "voip"}  # as Chromium's
        self.encoder.time_base = self.time_base
        self.dtx = False  # the answer asked for Opus DTX (usedtx=1): set by BrowserPeer.call
        self.silent = 0  # silent frames in a row
        self.skipped = 0  # frames not sent (DTX)

    async def recv(self) -> av.Packet:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            await self._next_tick()
            if self.queue:
                if self.last_speech_sent is not None or self.first_speech_sent is None:
                    self.first_speech_sent, self.last_speech_sent = time.monotonic(), None
                pcm = self.queue.pop(0)
                if not self.queue:
                    self.last_speech_sent = time.monotonic()
                self.silent = 0
            else:
                pcm = np.zeros(FRAME, dtype=np.int16)
                self.silent += 1
                quiet = self.silent - DTX_AFTER_FRAMES
                if self.dtx and quiet > 0 and quiet % DTX_INTERVAL_FRAMES:
                    self.sent += 1  # not sent: the RTP timestamp leaps over it
                    self.skipped += 1
                    continue
            return self._encode(pcm)

    async def _next_tick(self) -> None:
        """Wait for this frame's time (20 ms after the last one's)."""
        now = time.monotonic()
        if self.start is None or now - (self.start + self.sent * FRAME / RATE) > MAX_BEHIND_S:
            # first frame, or this process stalled: go on from now, as Parley's media clock does (a
            # burst of catch-up frames would overfill the server's jitter buffer, which drops them)
            self.start = now - self.sent * FRAME / RATE
        else:
            await asyncio.sleep(max(0.0, self.start + self.sent * FRAME / RATE - now))

    def _encode(self, pcm: np.ndarray) -> av.Packet:
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self.sent * FRAME
        frame.time_base = self.time_base
        (packet,) = self.encoder.encode(frame)  # one per 20 ms frame
        packet.pts, packet.time_base = self.sent * FRAME, self.time_base
        self.sent += 1
        return packet


class BrowserPeer:
    """One WebRTC call to a Parley page from aiortc."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection()
        self.microphone = _Microphone()
        self.pc.addTrack(self.microphone)
        self.channel = self.pc.createDataChannel("parley")
        self.events: list[dict[str, Any]] = []
        self.heard: list[tuple[float, float]] = []  # (arrival, RMS) of every 20 ms of the agent's audio
        self.call_id: str | None = None
        self.connected = asyncio.Event()
        self.hung_up = asyncio.Event()  # the agent hung up (data channel)
        self._reader: asyncio.Task | None = None
        self.channel.on("message", self._on_message)

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._reader = asyncio.ensure_future(self._read(track))

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState == "connected":
                self.connected.set()

    def _on_message(self, message: str) -> None:
        event = json.loads(message)
        self.events.append(event)
        if event.get("type") == "hangup":
            self.hung_up.set()

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            pcm = frame.to_ndarray().astype(np.float64)
            self.heard.append((time.monotonic(), float(np.sqrt(np.mean(pcm * pcm)))))

    async def call(self, url: str, **fields: Any) -> httpx.Response:
        """POST the offer to ``url``; on 200 the answer is applied. Returns the response."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"type": "offer", "sdp": self.pc.localDescription.sdp, **fields}
        async with httpx.AsyncClient() as client:
            response = await client.post(url, json=body, timeout=10)
        if response.status_code == 200:
            answer = response.json()
            self.call_id = answer["call_id"]
            await self.accept(answer["sdp"])
        return response

    async def accept(self, answer_sdp: str) -> None:
        """Apply the server's answer; send with Opus DTX if it asks (``usedtx=1``), as Chromium does."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        self.microphone.dtx = _opus_dtx(answer_sdp)

    def say(self, pcm: np.ndarray, rate: int = 8000) -> None:
        """Queue audio to send (any rate; resampled to 48 kHz)."""
        audio = soxr.resample(pcm.astype(np.int16), rate, RATE).astype(np.int16)
        audio = np.concatenate((audio, np.zeros(-len(audio) % FRAME, dtype=np.int16)))
        self.microphone.queue.extend(audio.reshape(-1, FRAME))

    async def said(self) -> float:
        """Wait until the queued audio has been sent; the time its last frame left."""
        while self.microphone.queue or self.microphone.last_speech_sent is None:
            await asyncio.sleep(0.01)
        return self.microphone.last_speech_sent

    def first_loud_after(self, moment: float) -> float | None:
        """When the first loud 20 ms of the agent's audio arrived after ``moment``."""
        return next((t for t, rms in self.heard if t > moment and rms > LOUD_RMS), None)

    async def wait_quiet(self, silence_s: float, timeout: float = 30.0) -> None:
        """Until the agent spoke and then was quiet for ``silence_s`` (its prompt ended)."""
        deadline = time.monotonic() + timeout
        start = len(self.heard)
        while time.monotonic() < deadline:
            loud = [t for t, rms in self.heard[start:] if rms > LOUD_RMS]
            if loud and time.monotonic() - loud[-1] >= silence_s:
                return
            await asyncio.sleep(0.02)
        raise TimeoutError("the agent's prompt did not end")

    def hang_up(self) -> None:
        if self.channel.readyState == "open":
            self.channel.send(json.dumps({"type": "hangup"}))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.pc.close()


def _opus_dtx(sdp: str) -> bool:
    """Whether an answer asks for Opus DTX (``usedtx=1`` in its Opus fmtp), as Chromium reads it."""
    opus = {c.payload_type for c in parse_sdp(sdp.encode()).codecs if c.name.lower() == "opus"}
    lines = [line.removeprefix("a=fmtp:") for line in sdp.splitlines() if line.startswith("a=fmtp:")]
    fmtp = (line.split(" ", 1) for line in lines)
    return any(int(pt) in opus and "usedtx=1" in rest.replace(" ", "").split(";") for pt, rest in fmtp)


async def _call_and_wait(url: str) -> None:
    peer = BrowserPeer()
    response = await peer.call(url)
    if response.status_code != 200:
        print(f"refused {response.status_code} {response.text}", flush=True)
        return
    await asyncio.wait_for(peer.connected.wait(), 20)
    print(f"connected {peer.call_id}", flush=True)
    await asyncio.sleep(3600)  # until killed


if __name__ == "__main__":
    asyncio.run(_call_and_wait(sys.argv[1]))
