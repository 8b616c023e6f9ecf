"""Adaptive jitter buffer for 20 ms G.711 frames, and packet-loss concealment.

Hand-written (sans-I/O, no clock of its own) because playout is driven by the server's shared
media clock: the caller pushes packets as they arrive and calls :meth:`JitterBuffer.pop` once per
20 ms tick. Frames are placed in playout slots by RTP timestamp (so silence-suppression gaps are
not mistaken for loss), duplicates and late packets are dropped and counted, and the playout
delay (in frames) adapts:

* it grows at once when a packet arrives after its slot was played (late) or when the buffer ran
  dry while the very packet it waited for was merely delayed, and at the end of an adaptation
  window when the spread of packet transit times calls for more;
* it shrinks by at most one frame per window (2 s by default) when a window saw no late packet
  and no underrun, the transit spread allows it, and the buffer held more frames than needed for
  the whole window (this also absorbs a sender clock running faster than ours);
* it never exceeds ``max_delay``: a burst that overfills the buffer drops the oldest frames.

When the buffer is empty at a tick it holds its position (returns None without counting a loss):
the sender may be silent (DTX) or slow (clock drift), or the packet may be late. A packet that
arrives with the buffer empty and its slot further ahead than the target delay (a new talk spurt
or resumption after a gap), an SSRC change, or a timestamp jump of more than ``resync_frames``
re-synchronises the playout point. RFC 4733 events and comfort noise must be demultiplexed
before the buffer; it only carries one frame per packet of ``frame_samples`` samples.

Compiled with Cython, typed by ``jitter.pxd``: it runs for every packet and every tick of every
call (see :mod:`parley.media.stream`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parley.media.rtp import RtpPacket

_MASK32 = 0xFFFFFFFF
_HALF32 = 0x80000000
_MASK64 = 0xFFFFFFFFFFFFFFFF
_NO_RMIN = 1 << 62
_NO_RMAX = -(1 << 62)
_CONCEAL_GAINS = (230, 154, 77)  # /256: about 0.9, 0.6, 0.3 for the 1st-3rd lost frame


@dataclass(slots=True)
class JitterStats:
    """Counters of a :class:`JitterBuffer` (frames unless stated)."""

    received: int = 0  # packets pushed
    played: int = 0  # frames returned by pop()
    lost: int = 0  # slots concealed (missing while later frames were buffered) or skipped
    late: int = 0  # packets arriving after their slot was played or concealed
    duplicates: int = 0
    overflow_drops: int = 0  # frames discarded to bound latency (overflow, re-sync)
    shrinks: int = 0  # frames discarded to reduce the playout delay
    stretches: int = 0  # ticks held to increase the playout delay
    underruns: int = 0  # ticks with nothing to play (sender silent, slow, or packet delayed)
    resyncs: int = 0
    current_delay_frames: int = 0  # target playout delay
    jitter_ms: float = 0.0  # RFC 3550 interarrival jitter estimate


class JitterBuffer:
    """Reorders one incoming RTP audio stream into 20 ms playout slots (see the module docstring)."""

    __slots__ = (
        "_count",
        "_cur_rmax",
        "_cur_rmin",
        "_have_transit",
        "_holding",
        "_jitter",
        "_last_ts",
        "_mask",
        "_newest",
        "_next_slot",
        "_next_ts",
        "_played",
        "_prebuffer",
        "_prev_spread",
        "_received",
        "_ring",
        "_seen",
        "_ssrc",
        "_stats",
        "_stretch",
        "_synced",
        "_transit",
        "_win_events",
        "_win_min_level",
        "_win_pops",
        "adapt_window",
        "clock_rate",
        "frame_samples",
        "max_delay",
        "min_delay",
        "resync_frames",
        "target",
    )

    def __init__(
        self,
        frame_samples: int = 160,
        min_delay: int = 1,
        max_delay: int = 8,
        initial_delay: int | None = None,
        clock_rate: int = 8000,
        adapt_window: int = 100,
        resync_frames: int = 50,
    ) -> None:
        if frame_samples <= 0 or not 0 <= min_delay <= max_delay:
            raise ValueError("need frame_samples > 0 and 0 <= min_delay <= max_delay")
        self.frame_samples = frame_samples
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.clock_rate = clock_rate
        self.adapt_window = max(1, adapt_window)
        self.resync_frames = max(resync_frames, max_delay + 1)
        start = 2 if initial_delay is None else initial_delay
        self.target = max(min_delay, min(max_delay, start))
        self._stats = JitterStats()
        # Slot n's payload sits at ring[n & mask]: buffered slots never span more than resync_frames.
        size = 1 << self.resync_frames.bit_length()
        self._ring: list[bytes | None] = [None] * size
        self._mask = size - 1
        self._count = 0  # payloads in the ring
        self._synced = False
        self._ssrc = 0
        self._next_slot = 0
        self._next_ts = 0
        self._newest = -1
        self._prebuffer = 0
        self._stretch = 0
        self._holding = 0
        self._seen = 0  # bit i: slot next_slot - 1 - i held a frame (duplicate vs late)
        self._received = 0  # the two per-packet counters live here, copied into stats on demand
        self._played = 0
        self._transit = 0
        self._have_transit = False
        self._last_ts = -1  # none yet (timestamps are unsigned)
        self._jitter = 0.0
        self._prev_spread = -1  # transit spread of the previous window (-1: none yet)
        self._cur_rmin = _NO_RMIN  # transit extremes of the current window
        self._cur_rmax = _NO_RMAX
        self._reset_window()

    @property
    def stats(self) -> JitterStats:
        """The counters, with the current delay and jitter filled in."""
        stats = self._stats
        stats.received = self._received
        stats.played = self._played
        stats.current_delay_frames = self.target
        stats.jitter_ms = self._jitter * 1000.0 / self.clock_rate
        return stats

    @property
    def buffered(self) -> int:
        """Frames buffered and not yet played."""
        return self._count

    def _reset_window(self) -> None:
        self._win_pops = 0
        self._win_events = 0
        self._win_min_level = 1 << 30

    def _resync(self, slot_payload: bytes, timestamp: int, ssrc: int, hard: bool) -> None:
        stats = self._stats
        if self._synced:
            stats.resyncs += 1
            stats.overflow_drops += self._count
        if hard:
            self._have_transit = False
            self._last_ts = -1
            self._prev_spread = -1
            self._cur_rmin, self._cur_rmax = _NO_RMIN, _NO_RMAX
        self._ring = [None] * len(self._ring)
        self._ring[0] = slot_payload
        self._count = 1
        self._synced = True
        self._ssrc = ssrc
        self._next_slot = 0
        self._newest = 0
        self._next_ts = timestamp
        self._prebuffer = self.target
        self._stretch = 0
        self._holding = 0
        self._seen = 0

    def push(self, packet: RtpPacket, arrival_ts: int) -> None:
        """Buffer ``packet``, which arrived at ``arrival_ts`` (local clock, samples)."""
        self.insert(packet.payload, packet.timestamp, packet.ssrc, arrival_ts)

    def insert(self, payload: bytes, timestamp: int, ssrc: int, arrival_ts: int) -> None:
        """:meth:`push` from the header fields and payload (the receive path's way, no packet object)."""
        self._received += 1
        if not self._synced or ssrc != self._ssrc:
            self._resync(payload, timestamp, ssrc, True)
            self._observe(timestamp, arrival_ts)
            return
        slot_off = (((timestamp - self._next_ts + _HALF32) & _MASK32) - _HALF32) // self.frame_samples
        if slot_off < 0:
            if slot_off < -self.resync_frames:
                self._resync(payload, timestamp, ssrc, True)
                self._observe(timestamp, arrival_ts)
                return
            back = -slot_off
            if back <= 64 and (self._seen >> (back - 1)) & 1:
                self._stats.duplicates += 1
                return
            self._observe(timestamp, arrival_ts)
            self._stats.late += 1
            self._win_events += 1
            if self.target < self.max_delay:
                self.target += 1
                self._stretch += 1
            return
        if slot_off > self.resync_frames or (self._newest < self._next_slot and slot_off > self.target):
            hard = slot_off > self.resync_frames
            if not hard:
                self._observe(timestamp, arrival_ts)
            self._resync(payload, timestamp, ssrc, hard)
            if hard:
                self._observe(timestamp, arrival_ts)
            return
        slot = self._next_slot + slot_off
        ring = self._ring
        if ring[slot & self._mask] is not None:
            self._stats.duplicates += 1
            return
        ring[slot & self._mask] = payload
        self._count += 1
        self._observe(timestamp, arrival_ts)
        if self._holding:
            if slot_off == 0 and self.target < self.max_delay:
                self.target += 1  # the awaited packet was merely delayed: more delay needed
            self._holding = 0
        if slot > self._newest:
            self._newest = slot
            excess = slot - self._next_slot - self.max_delay
            if excess > 0:
                self._skip(excess, overflow=True)

    def _observe(self, timestamp: int, arrival_ts: int) -> None:
        """Update the interarrival jitter (RFC 3550 A.8) and the transit spread of the window."""
        if timestamp == self._last_ts:
            return
        self._last_ts = timestamp
        transit = ((arrival_ts - timestamp + _HALF32) & _MASK32) - _HALF32
        if self._have_transit:
            d = ((transit - self._transit + _HALF32) & _MASK32) - _HALF32
            self._jitter += ((d if d >= 0 else -d) - self._jitter) * 0.0625
        self._transit = transit
        self._have_transit = True
        if transit < self._cur_rmin:
            self._cur_rmin = transit
        if transit > self._cur_rmax:
            self._cur_rmax = transit

    def _skip(self, count: int, overflow: bool) -> None:
        """Discard the ``count`` oldest slots (played never)."""
        stats = self._stats
        ring = self._ring
        for _ in range(count):
            index = self._next_slot & self._mask
            frame = ring[index]
            if frame is None:
                stats.lost += 1
            else:
                ring[index] = None
                self._count -= 1
                if overflow:
                    stats.overflow_drops += 1
                else:
                    stats.shrinks += 1
            self._next_slot += 1
            self._next_ts = (self._next_ts + self.frame_samples) & _MASK32
            self._seen = ((self._seen << 1) | (frame is not None)) & _MASK64
        if overflow:
            self._prebuffer = 0
            self._stretch = 0

    def pop(self) -> bytes | None:
        """Return the payload for this 20 ms tick, or None when there is nothing to play."""
        if not self._synced:
            return None
        if self._prebuffer:
            self._prebuffer -= 1
            return None
        if self._stretch:
            self._stretch -= 1
            self._stats.stretches += 1
            return None
        slot = self._next_slot
        level = self._newest - slot
        if level < 0:
            self._holding += 1
            self._stats.underruns += 1
            self._win_events += 1
            return None
        index = slot & self._mask
        frame = self._ring[index]
        if frame is not None:
            self._ring[index] = None
            self._count -= 1
        self._next_slot = slot + 1
        self._next_ts = (self._next_ts + self.frame_samples) & _MASK32
        if frame is None:
            self._stats.lost += 1
            self._seen = (self._seen << 1) & _MASK64
        else:
            self._played += 1
            self._seen = ((self._seen << 1) | 1) & _MASK64
        if level < self._win_min_level:
            self._win_min_level = level
        self._win_pops += 1
        if self._win_pops >= self.adapt_window:
            self._adapt()
        return frame

    def _adapt(self) -> None:
        """End of an adaptation window: move the target delay towards what the jitter needs."""
        spread = self._prev_spread
        if self._cur_rmax >= self._cur_rmin:
            current = self._cur_rmax - self._cur_rmin
            spread = max(spread, current)
            self._prev_spread = current
        desired = -1  # unknown until a window has seen two packets
        if spread >= 0:
            desired = max(self.min_delay, -(-spread // self.frame_samples) + 1)
        if desired > self.target:
            grow = min(desired, self.max_delay) - self.target
            self.target += grow
            self._stretch += grow
        elif self._win_events == 0:
            if self._win_min_level > self.target and self._count:
                self._skip(1, overflow=False)
            if 0 <= desired < self.target:
                self.target -= 1
        self._cur_rmin, self._cur_rmax = _NO_RMIN, _NO_RMAX
        self._reset_window()


def conceal(last_pcm: np.ndarray | None, consecutive_losses: int, frame_samples: int = 160) -> np.ndarray:
    """Packet-loss concealment for one missing frame (int16 PCM).

    Repeats the last good frame, attenuated to about 90%, 60% and 30% for the 1st, 2nd and 3rd
    consecutive loss (60 ms); from the 4th on (or with no previous frame) it returns silence.
    """
    if last_pcm is None or not 1 <= consecutive_losses <= len(_CONCEAL_GAINS):
        return np.zeros(frame_samples, dtype=np.int16)
    gain = _CONCEAL_GAINS[consecutive_losses - 1]
    return ((last_pcm.astype(np.int32) * gain) >> 8).astype(np.int16)
