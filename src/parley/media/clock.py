"""The process-wide media clock: one 20 ms tick drives every call's playout and sending.

A timer per call would mean 1,000 timers drifting apart and 1,000 wake-ups per tick; here a
single callback, scheduled on absolute times (``start + n * period``) so it never drifts,
walks every registered stream: it sends each one's frame, then reads every call's sockets at
once (its :class:`~parley.media.datagram.DatagramPoller`: no event-loop callback per packet) and
delivers what is due. The G.711 work of all streams is done in one vectorised pass per codec
and direction (numpy's per-call overhead, not the arithmetic, is what costs at 20 ms frames).
Lateness and run time of each tick are recorded for the benchmark.

Compiled with Cython (``clock.pxd`` types only the per-stream records: the streams stay duck-typed
:class:`Ticking` objects, their phase methods bound once); see :mod:`parley.media.stream`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from time import monotonic, process_time
from typing import Protocol

import numpy as np

from parley.media import g711
from parley.media.endpoint import DatagramPoller
from parley.media.g711 import FRAME_SAMPLES

PERIOD = 0.020
YOUNG_THRESHOLD = 700  # allocations that make a young collection due (CPython's default)
MIDDLE_EVERY = 10  # every 10th young collection also takes the middle generation (ditto)
FULL_EVERY_S = 600.0  # a full collection at least this often, even while calls never stop
FULL_AFTER_ENDED = 50  # ... and once this many streams (or as many as are live) ended since the last
LOAD_TICKS = 50  # measure CPU load every second
RING = 4096  # ticks of history kept for the timing figures (82 s)
_INT16 = np.dtype(np.int16)
try:
    import cython

    COMPILED = cython.compiled  # True when this module runs as the C extension setup.py builds
except ImportError:  # Cython is only needed to build the extension
    COMPILED = False
log = logging.getLogger(__name__)


class Ticking(Protocol):
    """What the clock needs of a stream (see :class:`parley.media.stream.RtpStream`)."""

    codec: str

    def pull(self) -> bytes | None: ...
    def deliver(self, pcm: np.ndarray | None) -> None: ...
    def next_out(self) -> bytes | np.ndarray | None: ...
    def send_payload(self, payload: bytes) -> None: ...
    def housekeeping(self) -> None: ...


class MediaClock:
    """Calls ``tick()`` on every registered stream once per period."""

    def __init__(self, period: float = PERIOD, time: Callable[[], float] | None = None) -> None:
        self.period = period
        self.streams: dict[int, Ticking] = {}
        self._bound: dict[int, _Phases] = {}
        self._phase_list: list[_Phases] = []  # what _phases() returns until a stream is added or removed
        self._pacing = False  # counted among the clocks that keep the garbage collector paced
        self.poller = DatagramPoller()  # every call's RTP/RTCP sockets, read at the start of each tick
        self._loop: asyncio.AbstractEventLoop | None = None
        self._time = time
        self._handle: asyncio.TimerHandle | None = None
        self._start = 0.0
        self._n = 0
        self.ticks = 0
        self.skipped = 0
        self.cpu_load = 0.0  # the process's CPU use over the last second (1.0 = one core)
        self._load_mark = (monotonic(), process_time())
        self._lateness = np.zeros(RING, dtype=np.float32)  # recent tick start lateness (s)
        self._durations = np.zeros(RING, dtype=np.float32)  # recent tick run times (s)
        self._first_sent = np.zeros(RING, dtype=np.float64)  # when each tick sent its first frame
        self._last_sent = np.zeros(RING, dtype=np.float64)  # ... and its last one

    def add(self, stream: Ticking) -> None:
        self.streams[id(stream)] = stream
        self._phase_list = []
        if self._handle is None:
            self.start()

    def remove(self, stream: Ticking) -> None:
        if self.streams.pop(id(stream), None) is not None:
            _GC.ended += 1  # its call's cyclic garbage is now there to collect
        self._bound.pop(id(stream), None)
        self._phase_list = []

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        now = self._now()
        self._start = now
        self._n = 0
        self._schedule()
        if not self._pacing:
            self._pacing = True
            _GC.clock_started()

    def stop(self) -> None:
        """Stop ticking (streams and sockets stay registered; :meth:`start` resumes)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._idle()

    def _idle(self) -> None:
        if self._pacing:
            self._pacing = False
            _GC.clock_stopped()

    def _now(self) -> float:
        # Lateness is measured on the monotonic clock: uvloop's loop.time() has 1 ms steps.
        return self._time() if self._time else monotonic()

    def _schedule(self) -> None:
        assert self._loop is not None
        self._n += 1
        delay = self._start + self._n * self.period - self._now()
        self._handle = self._loop.call_later(max(delay, 0.0), self._tick)

    def _tick(self) -> None:
        due = self._start + self._n * self.period
        late = self._now() - due
        self._lateness[self.ticks % len(self._lateness)] = late
        self.ticks += 1
        if late > 5 * self.period:
            # The process stalled: skip the missed ticks instead of bursting frames out.
            missed = int(late / self.period)
            log.warning("media clock stalled for %.0f ms with %d streams", late * 1000, len(self.streams))
            self.skipped += missed
            self._n += missed
        try:
            self._run_streams(due, late)
        finally:  # whatever a stream's consumer did, the other calls keep their clock
            if self.streams:
                self._schedule()
            else:
                self._handle = None
                self._idle()

    def _run_streams(self, due: float, late: float) -> None:
        # Sending comes first, so every frame leaves at the tick's start whatever the receiving
        # costs (it varies with what arrived); a frame queued by this tick's audio leaves next tick.
        streams = self._phases()
        outgoing = _next_out_all(streams)
        slot = (self.ticks - 1) % RING
        self._first_sent[slot] = self._now()
        _encode_and_send(streams, outgoing)
        self._last_sent[slot] = self._now()
        try:
            self.poller.poll()  # what arrived since the last tick, before the jitter buffers are read
        except Exception:
            log.exception("handling received RTP/RTCP failed")
        _decode_and_deliver(streams, _pull_all(streams))
        _housekeeping_all(streams)
        _GC.collect_young(len(streams))  # after the sends: what it costs delays no frame of this tick
        self._durations[slot] = self._now() - due - late
        if self.ticks % LOAD_TICKS == 0:
            wall, cpu = monotonic(), process_time()
            self.cpu_load = (cpu - self._load_mark[1]) / max(wall - self._load_mark[0], 1e-6)
            self._load_mark = (wall, cpu)

    def _phases(self) -> list[_Phases]:
        """Every stream's phase methods, bound once per stream rather than looked up every tick; the
        list is kept from tick to tick until :meth:`add` or :meth:`remove` changes the streams."""
        if len(self._phase_list) == len(self.streams):
            return self._phase_list
        bound = self._bound
        phases = []
        for key, stream in self.streams.items():
            entry = bound.get(key)
            if entry is None or entry.stream is not stream:
                entry = bound[key] = _Phases(stream)
            phases.append(entry)
        self._phase_list = phases
        return phases

    def lateness_percentile(self, q: float) -> float:
        """The ``q``-th percentile of recent tick start lateness, in seconds."""
        return self._percentile(self._lateness, q)

    def duration_percentile(self, q: float) -> float:
        """The ``q``-th percentile of recent tick run time (sends, reads, deliveries, collection), in
        seconds: near the period, the process is out of CPU."""
        return self._percentile(self._durations, q)

    def departure_jitter_percentile(self, q: float) -> float:
        """The ``q``-th percentile of |interval - 20 ms| between a stream's consecutive frames.

        Taken for the first and the last stream of every tick (the others lie in between), over
        recent ticks; a stall shows up as one long interval. In seconds.
        """
        count = min(self.ticks, RING)
        if count < 2:
            return 0.0
        order = (np.arange(count) + (self.ticks - count)) % RING
        deviations = [
            np.abs(np.diff(ring[order]) - self.period) for ring in (self._first_sent, self._last_sent)
        ]
        return float(np.percentile(np.concatenate(deviations), q))

    def _percentile(self, ring: np.ndarray, q: float) -> float:
        count = min(self.ticks, len(ring))
        return float(np.percentile(ring[:count], q)) if count else 0.0


class _GarbagePacer:
    """Keeps the cyclic garbage collector's pauses out of the 20 ms ticks, and its garbage bounded.

    Left automatic, a full collection starts on whatever allocation crosses its threshold — inside
    a tick — and walks every object of every call: measured 260 ms with 500 load-tester calls,
    which stalls all of them. While any media clock runs, automatic collection is off; the clocks
    run the cheap young collections themselves after each tick's sends (same thresholds as
    CPython's), and a full one when the last clock goes idle.

    A server that is never idle needs full collections too: an agent call leaves ~150 KB of cyclic
    garbage (its ASR turns and their engine workers, which refer to each other; cancelled tasks,
    whose exceptions hold their frames; closures over the call), which the young collections
    promote instead of freeing. A full collection runs once ``FULL_AFTER_ENDED`` streams, or as
    many as are live (so that its cost, which grows with the live calls, is spread over as many
    ended ones), have ended since the last, and at least every ``FULL_EVERY_S`` seconds. It walks
    only what calls made: ``parley serve`` freezes its start-up heap (:func:`gc.freeze`, in
    :func:`parley.telephony.server.run_server`). One that takes longer than a tick is logged.
    """

    def __init__(self) -> None:
        self.running = 0  # media clocks ticking in this process
        self.was_enabled = True
        self.young = 0
        self.ended = 0  # streams removed from clocks since the last full collection
        self.last_full = monotonic()
        self.full_pauses: list[float] = []  # seconds each full collection took while clocks ran

    def clock_started(self) -> None:
        self.running += 1
        if self.running == 1:
            self.was_enabled = gc.isenabled()
            gc.disable()

    def clock_stopped(self) -> None:
        self.running = max(self.running - 1, 0)
        if self.running == 0 and self.was_enabled:
            gc.enable()
            gc.collect()
            self.last_full = monotonic()
            self.ended = 0

    def collect_young(self, live: int = 0) -> None:
        """After a tick with ``live`` streams: a young collection when due, or a full one."""
        if gc.get_count()[0] < YOUNG_THRESHOLD:
            return
        now = monotonic()
        if now - self.last_full >= FULL_EVERY_S or self.ended >= max(FULL_AFTER_ENDED, live):
            gc.collect()
            self.last_full = monotonic()
            self.ended = 0
            pause = self.last_full - now
            self.full_pauses.append(pause)
            level = logging.INFO if pause > PERIOD else logging.DEBUG
            log.log(level, "full garbage collection during calls took %.1f ms", 1000 * pause)
            return
        self.young += 1
        gc.collect(1 if self.young % MIDDLE_EVERY == 0 else 0)


_GC = _GarbagePacer()


class _Phases:
    """A stream's codec and its phase methods, bound once (a method lookup per call per tick adds up)."""

    __slots__ = ("codec", "deliver", "housekeeping", "next_out", "pull", "send_payload", "stream")

    def __init__(self, stream: Ticking) -> None:
        self.stream = stream
        self.codec = stream.codec
        self.pull = stream.pull
        self.deliver = stream.deliver
        self.next_out = stream.next_out
        self.send_payload = stream.send_payload
        self.housekeeping = stream.housekeeping


def _pull_all(streams: list[_Phases]) -> list[bytes | None]:
    return [stream.pull() for stream in streams]


def _next_out_all(streams: list[_Phases]) -> list[bytes | np.ndarray | None]:
    return [stream.next_out() for stream in streams]


def _housekeeping_all(streams: list[_Phases]) -> None:
    for stream in streams:
        try:
            stream.housekeeping()
        except Exception:
            log.exception("stream housekeeping (RTCP, inactivity) failed")


def _by_codec(streams: list[_Phases], frames: list, wanted: type | None) -> dict[str, list[int]]:
    """Indices of the streams whose frame needs G.711 work, grouped by codec, in one pass.

    ``wanted`` bytes: received payloads of a full frame; None: PCM frames still to encode.
    """
    groups: dict[str, list[int]] = {}
    for i, frame in enumerate(frames):
        if frame is None:
            continue
        if wanted is bytes:
            if len(frame) != FRAME_SAMPLES:
                continue
        elif type(frame) is bytes:
            continue
        stream = streams[i]
        codec = stream.codec
        group = groups.get(codec)
        if group is None:
            groups[codec] = [i]
        else:
            group.append(i)
    return groups


def _decode_and_deliver(streams: list[_Phases], payloads: list[bytes | None]) -> None:
    """Decode every stream's 20 ms payload with one table lookup per codec, then deliver."""
    frames: list[np.ndarray | None] = [None] * len(streams)
    for codec, index in _by_codec(streams, payloads, bytes).items():
        joined = b"".join([payloads[i] for i in index])  # type: ignore[misc]
        rows = list(_decode_joined(codec, joined).reshape(-1, FRAME_SAMPLES))
        for row, i in enumerate(index):
            frames[i] = rows[row]
    for i, stream in enumerate(streams):
        payload = payloads[i]
        frame = frames[i]
        if frame is None and payload is not None:  # odd-sized frame: decode alone
            frame = g711.decode(stream.codec, payload)
        try:
            stream.deliver(frame)
        except Exception:  # an app's audio callback failed: log it, keep the other calls going
            log.exception("delivering audio to a stream's consumer failed")


def _decode_joined(codec: str, joined: bytes) -> np.ndarray:
    """G.711 bytes to int16 PCM: a C loop over the table when compiled (numpy's ``take`` first
    converts every index to a 64-bit integer), ``g711.decode`` otherwise."""
    if not COMPILED:
        return g711.decode(codec, joined)
    out = np.empty(len(joined), np.int16)
    _lookup_bytes(g711.decode_table(codec), joined, out)
    return out


def _encode_joined(codec: str, joined: np.ndarray) -> bytes:
    """int16 PCM to G.711 bytes, as :func:`_decode_joined` (other dtypes go through ``g711.encode``)."""
    if not COMPILED or joined.dtype is not _INT16 or not joined.flags.c_contiguous:
        return g711.encode(codec, joined)
    out = np.empty(len(joined), np.uint8)
    _lookup_samples(g711.encode_table(codec), joined.view(np.uint16), out)
    return out.tobytes()


def _lookup_bytes(table: np.ndarray, source: bytes, out: np.ndarray) -> None:
    for k in range(len(source)):
        out[k] = table[source[k]]


def _lookup_samples(table: np.ndarray, source: np.ndarray, out: np.ndarray) -> None:
    for k in range(len(source)):
        out[k] = table[source[k]]


def _join_frames(frames: list[np.ndarray]) -> np.ndarray:
    """The frames as one array: int16 ones joined as bytes (a third of np.concatenate's cost)."""
    for frame in frames:
        dtype = frame.dtype
        if dtype is not _INT16 and dtype != _INT16:  # native int16 arrays share one dtype object
            return np.concatenate(frames)  # float or wider ints: g711.encode clips them
    try:
        return np.frombuffer(b"".join(frames), np.int16)  # type: ignore[arg-type]
    except (BufferError, TypeError, ValueError):  # a non-contiguous view among them
        return np.concatenate(frames)


def _encode_and_send(streams: list[_Phases], outgoing: list[bytes | np.ndarray | None]) -> None:
    """Encode every stream's pending PCM frame with one table lookup per codec, then send."""
    for codec, index in _by_codec(streams, outgoing, None).items():
        pcm = [outgoing[i] for i in index]
        joined = _join_frames(pcm)  # type: ignore[arg-type]
        encoded = _encode_joined(codec, joined)
        for row, i in enumerate(index):
            outgoing[i] = encoded[row * FRAME_SAMPLES : (row + 1) * FRAME_SAMPLES]
    for i, stream in enumerate(streams):
        out = outgoing[i]
        if out is not None:
            try:
                stream.send_payload(out)  # type: ignore[arg-type]
            except Exception:
                log.exception("sending a stream's frame failed")
