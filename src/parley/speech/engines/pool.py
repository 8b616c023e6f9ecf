"""Run ASR sessions off the event loop: in worker processes (default) or a thread pool.

Measured on this machine (2 cores), pocketsphinx 5.1.1 decoding 9 s of speech with the general LM
in 20 ms chunks:

- 1 thread: 2.03 s wall; 2 threads each decoding their own 9 s at once: 5.86 s wall, i.e. 0.69x
  the throughput of one thread — ``process_raw`` holds the GIL, and the two threads fight for it.
- A pure-Python ticker thread (``time.sleep(0.005)`` loop) got 153 of an ideal 489 ticks while one
  thread decoded: a thread pool would starve the event loop (and SIP signalling) too.
- 2 processes: 3.30 s wall for both (including creating a decoder in each, ≈0.4 s), ≈2x one.

- Through this module, one 10.5 s chunk decoded by the general LM while an asyncio task ticked
  every 5 ms: process worker 613 of an ideal 630 ticks; thread worker 4 of 607 (the loop froze).

So decoding runs in worker processes: they hold more calls (they scale with cores) and leave the
event loop alone. An engine that decodes a whole answer at once (whisper: 0.25 CPU-s at the end of a
turn) can be given processes of its own (``dedicated``): in a shared process its decode queued behind
every call's streaming feeds and theirs behind it, and under load of a few calls whisper missed the
arbiter's deadline on most turns (a load test of four calls on a busy machine). Each worker process
owns its own engines (built from entry-point names or engine classes) and the sessions opened on it;
a session sticks to the worker it started on (its decoder state lives there), and new sessions go to
the least-loaded worker that runs their engine. ``kind="thread"`` keeps everything in-process
(cheaper start-up, for tests and light loads).

A decode process that dies (killed, out of memory, a crash in an engine's C code) or hangs is
replaced: a call into a process that died raises :class:`DecoderLost` (the arbiter counts the engine
as failed for that turn, and the turn goes on with the others), and a process with calls waiting
that finished none of them for ``hang_s`` seconds is killed and replaced the same way. A hang is
told from a long queue by the time since the process last *finished* a call, not since a call was
sent: a busy process finishes calls all the time. The sessions that lived in a lost process fail
at their next call; the new process loads its engines and re-prepares the questions prepared so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal

import numpy as np

from parley.speech.types import AsrEngine, AsrSession, Hypothesis, Question

log = logging.getLogger(__name__)

EngineSpec = str | type  # an entry-point name (group ``parley.asr_engines``) or an engine class
# A process with calls waiting that finished none for this long is hung: killed and replaced. Long
# enough for a whisper decode on a busy core (0.25 CPU-s) and for the general LM's 100 ms feeds
# queued behind it, short enough that a stuck engine costs a few turns of that engine, not the call.
HANG_S = 15.0
PREPARED_KEPT = 256  # the latest questions prepared, prepared again in a replacement process
# Calls that may legitimately run longer (a new process loading its engines): not watched.
_UNWATCHED_S = 120.0


class DecoderLost(RuntimeError):
    """The decode process that held a session died or hung, and was replaced."""

# Per-process state: engines by name and open sessions by id (shared by all threads in thread mode).
_ENGINES: dict[str, AsrEngine] = {}
_SESSIONS: dict[int, AsrSession] = {}


def _init(specs: Sequence[EngineSpec]) -> None:
    from parley.speech.engines import load_engines

    names = [s for s in specs if isinstance(s, str)]
    for engine in load_engines(names) if names else []:
        _ENGINES[engine.name] = engine
    for spec in specs:
        if isinstance(spec, type):
            engine = spec()
            _ENGINES[engine.name] = engine


def _prepare(engine: str, question: Question) -> None:
    instance = _ENGINES[engine]
    instance.prepare(question)
    decoders = getattr(instance, "pool", None)
    if decoders is not None and hasattr(decoders, "warm"):
        decoders.warm(2)  # decoders now (0.1-0.45 s each), not on a caller's first words


def _start(engine: str, question: Question, sid: int) -> None:
    _SESSIONS[sid] = _ENGINES[engine].start(question)


def _feed(sid: int, pcm: np.ndarray) -> Hypothesis | None:
    return _SESSIONS[sid].feed(pcm)


def _finish(sid: int) -> Hypothesis:
    return _SESSIONS.pop(sid).finish()


def _drop(sid: int) -> None:
    session = _SESSIONS.pop(sid, None)
    close = getattr(session, "close", None)  # optional in AsrSession: gives back what it holds
    if close is not None:
        close()


def _ping() -> int:
    return os.getpid()


def _spec_name(spec: EngineSpec) -> str:
    return spec if isinstance(spec, str) else str(spec.name)


class PooledSession:
    """An ``AsrSession`` running in the pool; async ``feed``/``finish`` never block the loop."""

    def __init__(self, pool: DecodePool, worker: int, sid: int, engine: str, generation: int) -> None:
        self._pool = pool
        self._worker = worker
        self._generation = generation  # the process it lives in
        self._sid = sid
        self.engine = engine
        self._lock = asyncio.Lock()  # one feeder at a time, in order
        self.closed = False

    def _check(self) -> None:
        if self._pool._generation[self._worker] != self._generation:
            self._close()
            raise DecoderLost(f"the decode process of this {self.engine} session was replaced")

    async def feed(self, pcm: np.ndarray) -> Hypothesis | None:
        """Decode 8 kHz int16 audio; a partial hypothesis when the transcript changed."""
        async with self._lock:
            self._check()
            return await self._pool._run(self._worker, _feed, self._sid, pcm)

    async def finish(self) -> Hypothesis:
        """The final hypothesis; the session is closed afterwards."""
        async with self._lock:
            try:
                self._check()
                return await self._pool._run(self._worker, _finish, self._sid)
            finally:
                self._close()

    async def abandon(self) -> None:
        """Drop the session without a result (e.g. the arbiter's deadline passed)."""
        if not self.closed:
            self._close()
            if self._pool._generation[self._worker] == self._generation:
                await self._pool._run(self._worker, _drop, self._sid)

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._pool._generation[self._worker] == self._generation:  # a new process starts at 0
                self._pool._load[self._worker] -= 1


class DecodePool:
    """Engines and their sessions in worker processes (or threads), driven from asyncio."""

    def __init__(
        self,
        engines: Sequence[EngineSpec],
        workers: int | None = None,
        kind: Literal["process", "thread"] = "process",
        dedicated: Sequence[str] = (),
        hang_s: float = HANG_S,
    ) -> None:
        """``workers`` processes run every engine but the ``dedicated`` ones (entry-point names), which
        get one process each of their own (in thread mode, everything shares one thread pool). A
        process that finished none of its waiting calls for ``hang_s`` seconds is replaced."""
        if hang_s <= 0:
            raise ValueError(f"hang_s must be positive, not {hang_s}")
        self.kind = kind
        self.specs = list(engines)
        self.hang_s = hang_s
        count = workers or os.cpu_count() or 1
        self._executors: list[Executor] = []
        self._groups: list[list[EngineSpec]] = []  # the engines of each executor
        self._engine_workers: dict[str, list[int]] = {}  # engine -> the executors that run it
        if kind == "process":
            methods = multiprocessing.get_all_start_methods()
            self._context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            alone = [s for s in self.specs if isinstance(s, str) and s in dedicated]
            shared = [s for s in self.specs if s not in alone]
            self._groups = [shared] * (count if shared else 0) + [[s] for s in alone]
            for group in self._groups:
                self._executors.append(self._process(group))
                for spec in group:
                    self._engine_workers.setdefault(_spec_name(spec), []).append(len(self._executors) - 1)
        else:
            _init(self.specs)
            self._executors = [ThreadPoolExecutor(count, thread_name_prefix="parley-asr")]
            self._engine_workers = {_spec_name(spec): [0] for spec in self.specs}
        workers_count = len(self._executors)
        self._load = [0] * workers_count  # open sessions per worker
        self._generation = [0] * workers_count  # bumped when a worker's process is replaced
        self._waiting = [0] * workers_count  # calls sent and not yet answered
        self._progress = [0.0] * workers_count  # when a worker last finished a call (or became busy)
        self._loading = [True] * workers_count  # no call finished yet: loading its engines, not watched
        self._unwatched = [0] * workers_count  # unwatched calls (start-up, prepare) in flight
        self._pids: list[int | None] = [None] * workers_count
        self._prepared: list[tuple[str, Question]] = []  # re-prepared in a replacement process
        self._background: set[asyncio.Future[Any]] = set()
        self.replaced = 0  # processes replaced since start (died or hung)
        self._closed = False
        self._ids = itertools.count(1)

    def _process(self, group: Sequence[EngineSpec]) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(1, mp_context=self._context, initializer=_init, initargs=(group,))

    async def _run(self, worker: int, fn: Any, *args: Any, watched: bool = True) -> Any:
        """``fn(*args)`` on ``worker``; raises :class:`DecoderLost` when its process dies or hangs."""
        loop = asyncio.get_running_loop()
        executor = self._executors[worker]
        generation = self._generation[worker]
        try:
            future = loop.run_in_executor(executor, fn, *args)
        except RuntimeError as exc:  # broken (it died), or shut down by a replacement meanwhile
            died = isinstance(exc, BrokenProcessPool)
            self._replace(worker, generation, "it died" if died else f"it could not take work ({exc})")
            raise DecoderLost(f"decode process {worker} was lost") from exc
        if self._waiting[worker] == 0:
            self._progress[worker] = time.monotonic()
        self._waiting[worker] += 1
        self._unwatched[worker] += not watched
        # Counted when the process answers, awaited or not: a call whose caller gave up (the
        # arbiter's deadline) still runs there, and its end is progress all the same.
        future.add_done_callback(lambda done: self._answered(worker, generation, watched, done))
        try:
            while True:
                done, _ = await asyncio.wait([future], timeout=self.hang_s if watched else _UNWATCHED_S)
                if done:
                    return future.result()
                stalled = time.monotonic() - self._progress[worker]
                busy = self._loading[worker] or self._unwatched[worker]  # loading, preparing: not hung
                current = self._generation[worker] == generation
                if watched and current and stalled >= self.hang_s and not busy:
                    self._replace(worker, generation, f"it finished no call for {stalled:.1f} s (hung)")
                if self._generation[worker] != generation:
                    future.cancel()
                    raise DecoderLost(f"decode process {worker} hung and was replaced")
        except BrokenProcessPool as exc:
            self._replace(worker, generation, "it died")
            raise DecoderLost(f"decode process {worker} died") from exc

    def _answered(self, worker: int, generation: int, watched: bool, future: asyncio.Future[Any]) -> None:
        """A call to ``worker`` ended (or was cancelled by a replacement): its process's progress."""
        if self._generation[worker] != generation:
            return  # a replaced process: its counters started again
        self._waiting[worker] -= 1
        self._unwatched[worker] -= not watched
        if not future.cancelled() and not isinstance(future.exception(), BrokenProcessPool):
            self._progress[worker] = time.monotonic()
            self._loading[worker] = False

    def _replace(self, worker: int, generation: int, why: str) -> None:
        """Kill ``worker``'s process (if ``generation`` is still the one running) and start another."""
        if self.kind != "process" or self._closed or self._generation[worker] != generation:
            return  # thread mode, shutting down, or already replaced by a call that saw the same fault
        old = self._executors[worker]
        assert isinstance(old, ProcessPoolExecutor)
        pids = list(getattr(old, "_processes", None) or {})  # private, but the only handle on a hung one
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        old.shutdown(wait=False, cancel_futures=True)
        group = self._groups[worker]
        self._executors[worker] = self._process(group)
        self._generation[worker] += 1
        self._load[worker] = 0
        self._waiting[worker] = 0
        self._unwatched[worker] = 0
        self._loading[worker] = True
        self._pids[worker] = None
        self.replaced += 1
        names = ", ".join(_spec_name(spec) for spec in group)
        log.warning("decode process %s (%s) replaced: %s", pids or "?", names, why)
        warm = asyncio.ensure_future(self._rewarm(worker))
        self._background.add(warm)
        warm.add_done_callback(self._background.discard)

    async def _rewarm(self, worker: int) -> None:
        """Start a replacement process now and prepare its engines' questions, not on a caller's turn."""
        try:
            self._pids[worker] = pid = await self._run(worker, _ping, watched=False)
            log.info("decode process %d runs %s (a replacement)", pid, ", ".join(self.engines_of(pid)))
            names = {_spec_name(spec) for spec in self._groups[worker]}
            for engine, question in list(self._prepared):
                if engine in names:
                    await self._run(worker, _prepare, engine, question, watched=False)
        except Exception as exc:  # the next call finds out again, and says so
            if not self._closed:
                log.warning("a replacement decode process failed to start: %s", exc)

    @property
    def all_running(self) -> bool:
        """Whether every worker process has started (after :meth:`warm`, and a replacement's warm-up)."""
        return None not in self._pids

    def pids(self) -> list[int]:
        """The pids of the worker processes known to be running (process mode, after :meth:`warm`)."""
        return [pid for pid in self._pids if pid is not None]

    async def warm(self) -> list[int]:
        """Start every worker now (process start-up and engine loading), returns their pids. A pool
        whose processes all run already answers at once (nothing queues behind their decoding)."""
        if self.kind == "process" and self.all_running:
            return self.pids()
        count = len(self._executors)
        pids = await asyncio.gather(*(self._run(i, _ping, watched=False) for i in range(count)))
        if self.kind == "process":
            self._pids = list(pids)
        return list(pids)

    def engines_of(self, pid: int) -> list[str]:
        """The engines that the worker process ``pid`` runs (empty for an unknown pid)."""
        if pid not in self._pids:
            return []
        return [_spec_name(spec) for spec in self._groups[self._pids.index(pid)]]

    def _workers_of(self, engine: str) -> list[int]:
        workers = self._engine_workers.get(engine)
        if not workers:
            raise LookupError(f"ASR engine {engine!r} is not in this decode pool")
        return workers

    async def prepare(self, engine: str, question: Question) -> None:
        """Prepare ``question`` on every worker that runs ``engine`` (grammars and LMs are per process).
        A question prepared already is not sent again (a replacement process prepares it by itself):
        a new agent version warming up on a busy pool does not queue behind the calls' decoding."""
        workers = self._workers_of(engine)
        if (engine, question) in self._prepared:
            return
        self._prepared = [*self._prepared[-(PREPARED_KEPT - 1) :], (engine, question)]
        await asyncio.gather(*(self._run(i, _prepare, engine, question, watched=False) for i in workers))

    async def start(self, engine: str, question: Question) -> PooledSession:
        """Open a session of ``engine`` on the least-loaded worker that runs it."""
        worker = min(self._workers_of(engine), key=self._load.__getitem__)
        sid = next(self._ids)
        self._load[worker] += 1
        generation = self._generation[worker]
        try:
            await self._run(worker, _start, engine, question, sid)
        except BaseException:
            if self._generation[worker] == generation:
                self._load[worker] -= 1
            raise
        session = PooledSession(self, worker, sid, engine, generation)
        session._check()  # its process may have been replaced while it started
        return session

    def close(self) -> None:
        """Stop the workers (waits for running decodes)."""
        self._closed = True
        for ex in self._executors:
            ex.shutdown(wait=True, cancel_futures=True)

    async def __aenter__(self) -> DecodePool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)
