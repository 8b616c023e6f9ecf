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
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Literal

import numpy as np

from parley.speech.types import AsrEngine, AsrSession, Hypothesis, Question

EngineSpec = str | type  # an entry-point name (group ``parley.asr_engines``) or an engine class

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

    def __init__(self, pool: DecodePool, worker: int, sid: int, engine: str) -> None:
        self._pool = pool
        self._worker = worker
        self._sid = sid
        self.engine = engine
        self._lock = asyncio.Lock()  # one feeder at a time, in order
        self.closed = False

    async def feed(self, pcm: np.ndarray) -> Hypothesis | None:
        """Decode 8 kHz int16 audio; a partial hypothesis when the transcript changed."""
        async with self._lock:
            return await self._pool._run(self._worker, _feed, self._sid, pcm)

    async def finish(self) -> Hypothesis:
        """The final hypothesis; the session is closed afterwards."""
        async with self._lock:
            try:
                return await self._pool._run(self._worker, _finish, self._sid)
            finally:
                self._close()

    async def abandon(self) -> None:
        """Drop the session without a result (e.g. the arbiter's deadline passed)."""
        if not self.closed:
            self._close()
            await self._pool._run(self._worker, _drop, self._sid)

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self._pool._load[self._worker] -= 1


class DecodePool:
    """Engines and their sessions in worker processes (or threads), driven from asyncio."""

    def __init__(
        self,
        engines: Sequence[EngineSpec],
        workers: int | None = None,
        kind: Literal["process", "thread"] = "process",
        dedicated: Sequence[str] = (),
    ) -> None:
        """``workers`` processes run every engine but the ``dedicated`` ones (entry-point names), which
        get one process each of their own (in thread mode, everything shares one thread pool)."""
        self.kind = kind
        self.specs = list(engines)
        count = workers or os.cpu_count() or 1
        self._executors: list[Executor] = []
        self._engine_workers: dict[str, list[int]] = {}  # engine -> the executors that run it
        if kind == "process":
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            alone = [s for s in self.specs if isinstance(s, str) and s in dedicated]
            shared = [s for s in self.specs if s not in alone]
            groups = [shared] * (count if shared else 0) + [[s] for s in alone]
            for group in groups:
                self._executors.append(
                    ProcessPoolExecutor(1, mp_context=ctx, initializer=_init, initargs=(group,))
                )
                for spec in group:
                    self._engine_workers.setdefault(_spec_name(spec), []).append(len(self._executors) - 1)
        else:
            _init(self.specs)
            self._executors = [ThreadPoolExecutor(count, thread_name_prefix="parley-asr")]
            self._engine_workers = {_spec_name(spec): [0] for spec in self.specs}
        self._load = [0] * len(self._executors)
        self._ids = itertools.count(1)

    async def _run(self, worker: int, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executors[worker], fn, *args)

    async def warm(self) -> list[int]:
        """Start every worker now (process start-up and engine loading), returns their pids."""
        return list(await asyncio.gather(*(self._run(i, _ping) for i in range(len(self._executors)))))

    def _workers_of(self, engine: str) -> list[int]:
        workers = self._engine_workers.get(engine)
        if not workers:
            raise LookupError(f"ASR engine {engine!r} is not in this decode pool")
        return workers

    async def prepare(self, engine: str, question: Question) -> None:
        """Prepare ``question`` on every worker that runs ``engine`` (grammars and LMs are per process)."""
        await asyncio.gather(*(self._run(i, _prepare, engine, question) for i in self._workers_of(engine)))

    async def start(self, engine: str, question: Question) -> PooledSession:
        """Open a session of ``engine`` on the least-loaded worker that runs it."""
        worker = min(self._workers_of(engine), key=self._load.__getitem__)
        sid = next(self._ids)
        self._load[worker] += 1
        try:
            await self._run(worker, _start, engine, question, sid)
        except BaseException:
            self._load[worker] -= 1
            raise
        return PooledSession(self, worker, sid, engine)

    def close(self) -> None:
        """Stop the workers (waits for running decodes)."""
        for ex in self._executors:
            ex.shutdown(wait=True, cancel_futures=True)

    async def __aenter__(self) -> DecodePool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)
