"""A scripted caller for end-to-end voice-agent calls: Parley's own UAC, flite answers, prompt detection.

Shared by ``tests/agent/test_calls_e2e.py`` and ``bench/turn_latency.py``:

* :class:`WebhookSink` — a local HTTP server (thread) that records every JSON body POSTed/PUT to it.
* :func:`start_agent_server` — ``parley serve AGENT.yaml`` as a subprocess, ready once it prints
  "answering calls"; :func:`stop_agent_server` stops it with SIGTERM (kill after a bound).
* :class:`ScriptedCaller` — wraps a dialled :class:`~parley.telephony.call.Call`: a reader task feeds
  every received frame to a WebRTC VAD (``wait_prompt_end``: speech, then ≥ ``silence_ms`` of
  silence), and a tap on the RTP socket time-stamps every arriving packet with energy (so reply
  latency is measured at packet arrival, before the caller's own jitter buffer).
  ``say(pcm)`` plays an answer and returns the time its last frame was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from integration.harness import spawn_until_ready
from parley.media import g711
from parley.speech.tts import TtsEngine, render
from parley.speech.vad import make_vad
from parley.telephony.call import Call
from parley.telephony.manager import CallManager

HOST = "127.0.0.1"
FRAME_MS = 20
NO_UVLOOP = "import sys; sys.modules['uvloop'] = None; from parley.cli import main; main(prog_name='parley')"
TRIM_LEVEL = 30  # flite's own background is ≈ 20-40
LOUD = 300  # peak |sample| of a frame/packet that carries speech (G.711 silence decodes to 0 or ±8)


# -- webhook sink ------------------------------------------------------------------------------
class WebhookSink:
    """Records JSON bodies sent to it; answers ``response`` (JSON) with ``status``."""

    def __init__(self, response: dict[str, Any] | None = None, status: int = 200) -> None:
        self.requests: list[tuple[str, str, Any]] = []  # (method, path, json body)
        self.response = response if response is not None else {}
        self.status = status
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                sink.requests.append((self.command, self.path, body))
                data = json.dumps(sink.response).encode()
                self.send_response(sink.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_PUT = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def __enter__(self) -> WebhookSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the server under test ---------------------------------------------------------------------
@dataclass
class AgentServer:
    proc: subprocess.Popen
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"sip:agent@{HOST}:{self.port}"

    def log(self, tail: int = 80) -> str:
        return "".join(self.lines[-tail:])


def start_agent_server(
    agent_file: Path,
    *,
    port: int,
    rtp_ports: tuple[int, int],
    records: Path | None = None,
    extra: list[str] | None = None,
    startup_timeout: float = 60.0,
    cwd: Path | None = None,
    prefix: list[str] | None = None,
    uvloop: bool = True,
    cache_dir: Path | None = None,
) -> AgentServer:
    """``parley serve AGENT --transport udp`` as a subprocess; returns once it answers calls.

    ``uvloop=False`` runs the same CLI on asyncio's own loop (to tell uvloop-only faults apart).
    ``cache_dir`` becomes ``PARLEY_CACHE_DIR``: a fresh one makes the server really synthesise its
    prompts instead of reading what an earlier run left in the shared prompt cache.

    Raises RuntimeError (with its log) when it exits or is not ready within ``startup_timeout``.
    """
    launcher = ["-m", "parley"] if uvloop else ["-c", NO_UVLOOP]
    cmd = [*(prefix or []), sys.executable, *launcher, "-v", "serve", str(agent_file)]
    cmd += ["--host", HOST, "--port", str(port), "--transport", "udp"]
    cmd += ["--rtp-ports", f"{rtp_ports[0]}-{rtp_ports[1]}"]
    if records is not None:
        cmd += ["--records", str(records)]
    cmd += extra or []
    lines: list[str] = []
    env = {**os.environ, "PARLEY_CACHE_DIR": str(cache_dir)} if cache_dir is not None else None
    proc = spawn_until_ready(cmd, lines, cwd=cwd, env=env, startup_timeout=startup_timeout)
    return AgentServer(proc, port, lines)


def stop_agent_server(server: AgentServer, timeout: float = 10.0) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
    proc = server.proc
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: the decoder workers too
            proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # leftover pool workers, if any
    return proc.returncode


# -- caller audio ------------------------------------------------------------------------------
def trim(pcm: np.ndarray, level: int = TRIM_LEVEL) -> np.ndarray:
    """``pcm`` without leading and trailing silence (so the last frame sent is the end of speech).

    The level is low: a higher one cuts weak onsets ("f" of "four"), which the recognisers then miss.
    """
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > level)
    if not len(loud):
        return pcm[:0]
    return pcm[loud[0] : loud[-1] + 1]


def speech_ms(pcm: np.ndarray) -> int:
    """How much of ``pcm`` the caller's prompt detector counts as speech (same VAD and level)."""
    vad = make_vad()
    frames = [pcm[i : i + 160] for i in range(0, len(pcm) - 159, 160)]
    return FRAME_MS * sum(
        vad.speech_probability(f) >= 0.5 and int(np.abs(f.astype(np.int32)).max()) > LOUD for f in frames
    )


class AnswerBook:
    """Caller answers rendered once (flite), trimmed of silence."""

    def __init__(self, engine: TtsEngine, voice: str = "slt") -> None:
        self.engine = engine
        self.voice = voice
        self._cache: dict[str, np.ndarray] = {}

    async def get(self, text: str) -> np.ndarray:
        if text not in self._cache:
            self._cache[text] = trim(await render(self.engine, text, self.voice))
        return self._cache[text]


class CallEnded(Exception):
    """The call ended while the caller was waiting for something."""


class ScriptedCaller:
    """Listens to one call's incoming audio and speaks prerecorded answers."""

    def __init__(self, manager: CallManager, call: Call) -> None:
        self.call = call
        self.vad = make_vad()
        self.speech_frames = 0  # speech frames heard since the last mark
        self.trailing_silence = 0  # consecutive non-speech frames up to the last frame
        self.frames = 0
        self.loud_packets: list[float] = []  # monotonic arrival times of RTP packets with speech energy
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())
        leg = manager._legs.get(id(call.session))
        if leg is not None:  # time-stamp packets on arrival, before the jitter buffer
            receive = call.stream.receive
            codec = call.stream.codec

            def tap(data: bytes, source: tuple[str, int]) -> None:
                if len(data) > 12 and data[1] & 0x7F in (0, 8):
                    payload = g711.decode(codec, data[12:])
                    if int(np.abs(payload.astype(np.int32)).max()) > LOUD:
                        self.loud_packets.append(time.monotonic())
                receive(data, source)

            leg.endpoint.on_rtp(tap)

    async def _read(self) -> None:
        async for item in self.call.incoming():
            if not isinstance(item, np.ndarray):
                continue
            self.frames += 1
            if self.vad.speech_probability(item) >= 0.5 and np.abs(item.astype(np.int32)).max() > LOUD:
                self.speech_frames += 1
                self.trailing_silence = 0
            else:
                self.trailing_silence += 1
            self._changed.set()
        self._changed.set()

    def mark(self) -> None:
        """Forget speech heard so far: the next ``wait_prompt_end`` waits for new speech."""
        self.speech_frames = 0

    async def _until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            if self.call.ended.is_set():
                raise CallEnded(self.call.end_reason)
            self._changed.clear()
            await self._changed.wait()

    async def wait_prompt_end(self, silence_ms: int = 700, min_speech_ms: int = 300) -> None:
        """Wait for the agent's next prompt: ≥ ``min_speech_ms`` of speech, then ``silence_ms`` of silence."""
        self.mark()
        await self._until(
            lambda: (
                self.speech_frames * FRAME_MS >= min_speech_ms
                and self.trailing_silence * FRAME_MS >= silence_ms
            )
        )

    async def wait_silence(self, seconds: float) -> None:
        """Stay silent for ``seconds`` (returns early with CallEnded if the call ends)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.call.ended.wait(), seconds)
        if self.call.ended.is_set():
            raise CallEnded(self.call.end_reason)

    async def say(self, pcm: np.ndarray) -> float:
        """Play ``pcm``; returns the monotonic time the last frame was sent (the end of speech)."""
        playback = self.call.play(pcm)
        sent: list[float] = []
        playback.callbacks.append(lambda stopped: sent.append(time.monotonic()))
        if not await self.call.wait_played(playback):
            raise CallEnded(self.call.end_reason or "playback stopped")
        return sent[0] if sent else time.monotonic()

    def first_reply_after(self, t: float) -> float | None:
        """Arrival time of the first packet with energy after ``t`` (None if none yet)."""
        return next((x for x in self.loud_packets if x > t), None)

    async def wait_ended(self) -> str:
        return await self.call.wait_ended()

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
