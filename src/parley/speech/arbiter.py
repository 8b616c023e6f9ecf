"""The arbiter: several ASR engines hear the same turn in parallel; a per-slot-type policy picks one.

Not failover: every turn, each engine that supports the question decodes the caller's audio
off the event loop, and the winner is chosen on four signals —

- the engine's *prior* for this slot type (its accuracy on a labelled corpus, see
  :class:`EnginePriors`; ``bench/asr_arbiter.py`` learns them),
- whether the transcript *reads as a valid answer* (a 5-digit account number beats a sentence:
  :func:`parley.nlu.reader.read_slot`, the dialogue's own reader), within the range the question
  allows (a birth date in the past),
- the engine's own confidence, calibrated per engine on the same corpus (see ``CONFIDENCE_WEIGHT``),
- how many other engines read the same value (see ``AGREEMENT_WEIGHT`` and :func:`ranked`).

The priors, calibrations and weights learned on the training corpus ship in ``priors.json`` beside
this module and are the default.

A turn has a deadline counted from the end of speech: an engine that raises, hangs or is slow
never blocks it — the best result available by then wins (a final, else the latest partial).
The turn ends before the deadline as soon as the finals in cannot be beaten by any engine still
decoding (:func:`best_possible`: its prior with a valid, fully confident answer that every other engine
agrees with), nor overtaken by a rival final that the engines still decoding might yet agree with.
Every turn yields a :class:`TurnRecord` with all hypotheses, scores, the winner and why.

Second opinions: engines named in the arbiter's ``second_opinions`` tiers hear the audio but decode
only when the engines before them do not agree (:func:`agreed`: the leading reading is a valid answer
that another engine read too). On one core the decodes of a turn run one after another anyway, so
a turn whose first engines agree closes sooner and spends less CPU, and one where they disagree
closes no later than if every engine had decoded at once. The first engines (those in no tier: the
streaming decoders, whose finals are in a few milliseconds after the end of speech) close a turn alone
only when their agreement is also sure: one of the engines that agree is at least
``EnginePriors.sure_confidence`` confident (calibrated), a threshold learned on the training corpus so
that closing there costs none of its answers, and the answer is not a string of digits or letters
(:func:`sure_for`). Those turns are decided before a neural engine could have decoded at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from parley.nlu.reader import SYMBOL_STRING_KINDS, SlotReading, agreement, in_range, read_slot, same_reading
from parley.speech import metrics
from parley.speech.types import AsrEngine, AsrSession, Hypothesis, Question, SlotType, TurnRecord

if TYPE_CHECKING:
    from parley.speech.engines.pool import DecodePool

PRIOR_WEIGHT = 0.45
VALID_WEIGHT = 0.35
# Raw confidences are not comparable (the general LM's are lattice posteriors; the grammar's and the
# agent LM's, decoded without the lattice pass, are not, and the agent LM's are 1.00 on every
# hypothesis; whisper's are token probabilities): each engine's is *calibrated* on the training
# corpus (:meth:`EnginePriors.calibrate`: Platt scaling, P(right | engine, confidence)), and the
# weight of the calibrated confidence is learned there too. Uncalibrated, it only breaks ties.
CONFIDENCE_WEIGHT = 0.05
# Engines that read the same value from an answer agree: ROVER-style voting, as independent mistakes
# seldom coincide ("four three oh seven double seven" from both pocketsphinx engines against whisper's
# "4307-07"). Each other engine agreeing adds this much; learned on the training corpus like the
# confidence weight (bench/asr_arbiter.py).
AGREEMENT_WEIGHT = 0.1
INCOMPLETE_CREDIT = 0.3  # an incomplete (4 of 5 digits) or out-of-range reading earns this share
SHIPPED_PRIORS = Path(__file__).with_name("priors.json")  # learned by bench/asr_arbiter.py


@dataclass(slots=True)
class EnginePriors:
    """P(engine is right | slot type), Laplace-smoothed, learned from labelled utterances; with each
    engine's confidence calibration, the weight the arbiter gives calibrated confidences and the one it
    gives each other engine that read the same value."""

    table: dict[str, dict[str, float]] = field(default_factory=dict)
    default: float = 0.5
    calibration: dict[str, tuple[float, float]] = field(default_factory=dict)  # engine -> (slope, offset)
    confidence_weight: float = CONFIDENCE_WEIGHT
    agreement_weight: float = 0.0
    # the first engines' agreement closes a turn alone from this calibrated confidence (module docstring)
    sure_confidence: float = 0.0

    def get(self, engine: str, slot_type: str) -> float:
        return self.table.get(engine, {}).get(slot_type, self.default)

    def confidence(self, engine: str, raw: float) -> float:
        """``engine``'s confidence as P(right): calibrated when learned, else clipped as given."""
        raw = min(max(raw, 0.0), 1.0)
        fit = self.calibration.get(engine)
        if fit is None:
            return raw
        return 1.0 / (1.0 + math.exp(-(fit[0] * raw + fit[1])))

    def best_confidence(self, engine: str) -> float:
        return max(self.confidence(engine, 0.0), self.confidence(engine, 1.0))

    @classmethod
    def learn(cls, outcomes: Sequence[tuple[str, str, bool]]) -> EnginePriors:
        """From (engine, slot type, correct) triples."""
        counts: dict[tuple[str, str], list[int]] = {}
        for engine, slot_type, correct in outcomes:
            tally = counts.setdefault((engine, slot_type), [0, 0])
            tally[0] += int(correct)
            tally[1] += 1
        table: dict[str, dict[str, float]] = {}
        for (engine, slot_type), (right, total) in counts.items():
            table.setdefault(engine, {})[slot_type] = (right + 1) / (total + 2)
        return cls(table)

    def calibrate(self, samples: Sequence[tuple[str, float, bool]]) -> None:
        """Fit each engine's confidence to P(right) from (engine, raw confidence, correct) samples
        (logistic regression on the one feature; an engine whose samples are all right or all
        wrong, or whose confidence never varies, maps every confidence to its smoothed hit rate)."""
        from sklearn.linear_model import LogisticRegression

        by_engine: dict[str, list[tuple[float, bool]]] = {}
        for engine, raw, correct in samples:
            by_engine.setdefault(engine, []).append((min(max(raw, 0.0), 1.0), correct))
        for engine, pairs in by_engine.items():
            confidences = np.array([[c] for c, _ in pairs])
            labels = np.array([r for _, r in pairs], dtype=int)
            rate = (labels.sum() + 1) / (len(labels) + 2)
            if len(set(labels)) < 2 or np.ptp(confidences) < 1e-6:
                self.calibration[engine] = (0.0, math.log(rate / (1 - rate)))
                continue
            model = LogisticRegression(C=10.0).fit(confidences, labels)
            self.calibration[engine] = (float(model.coef_[0][0]), float(model.intercept_[0]))

    def save(self, path: Path) -> None:
        data = {
            "default": self.default,
            "table": self.table,
            "calibration": {e: list(fit) for e, fit in self.calibration.items()},
            "confidence_weight": self.confidence_weight,
            "agreement_weight": self.agreement_weight,
            "sure_confidence": self.sure_confidence,
        }
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> EnginePriors:
        data = json.loads(path.read_text())
        return cls(
            {e: {k: float(v) for k, v in t.items()} for e, t in data["table"].items()},
            data["default"],
            {e: (float(a), float(b)) for e, (a, b) in data.get("calibration", {}).items()},
            float(data.get("confidence_weight", CONFIDENCE_WEIGHT)),
            float(data.get("agreement_weight", 0.0)),
            float(data.get("sure_confidence", 0.0)),
        )

    @classmethod
    def shipped(cls) -> EnginePriors:
        """The priors and calibration learned on the project's training corpus (``priors.json``)."""
        return cls.load(SHIPPED_PRIORS) if SHIPPED_PRIORS.exists() else cls()


def score(
    hypothesis: Hypothesis, question: Question, priors: EnginePriors, agreeing: float = 0.0
) -> tuple[float, str]:
    """The arbiter's score for one hypothesis and a short explanation; ``agreeing``: how much the
    other engines' readings support it (one per engine reading the same valid value; see
    :func:`ranked`)."""
    if not hypothesis.text.strip():
        return 0.0, "empty"
    return _score(hypothesis, question, priors, read_slot(question, hypothesis.text), agreeing)


def _score(
    hypothesis: Hypothesis,
    question: Question,
    priors: EnginePriors,
    reading: SlotReading | None,
    agreeing: float,
) -> tuple[float, str]:
    prior = priors.get(hypothesis.engine, question.slot_type.value)
    validity, verdict = _validity(question, reading)
    confidence = priors.confidence(hypothesis.engine, hypothesis.confidence)
    total = PRIOR_WEIGHT * prior + VALID_WEIGHT * validity + priors.confidence_weight * confidence
    why = f"prior {prior:.2f}, {verdict} {question.slot_type.value}, confidence {confidence:.2f}"
    if agreeing and validity == 1.0:
        total += priors.agreement_weight * agreeing
        why += f", agreement {agreeing:.2f} from other engines"
    return total, why


def _validity(question: Question, reading: SlotReading | None) -> tuple[float, str]:
    """How much a reading counts as an answer to ``question`` (1.0: complete and in range), and why."""
    if reading is None:
        return 0.0, "invalid"
    if not reading.complete:
        return INCOMPLETE_CREDIT, "incomplete"
    if not in_range(question, reading.value):
        return INCOMPLETE_CREDIT, "out-of-range"
    return 1.0, "valid"


def ranked(
    hypotheses: Sequence[Hypothesis], question: Question, priors: EnginePriors
) -> list[tuple[float, Hypothesis, str]]:
    """Every hypothesis with its score and why, best first (valid answers before the others, each by
    score): :func:`score` with the agreement of the other engines. A valid reading is supported by each
    other engine's valid reading of the same value; for symbol strings (digits, phone numbers,
    spellings) also, in part, by a reading that differs in a few symbols or is incomplete
    (:func:`parley.nlu.reader.agreement`): two engines that each mishear one digit, in different
    places, still vote for the digits they share."""
    readings = [read_slot(question, h.text) if h.text.strip() else None for h in hypotheses]
    valid = [r if _validity(question, r)[0] == 1.0 else None for r in readings]
    kind = question.reading_kind
    supporters = readings if kind in SYMBOL_STRING_KINDS else valid
    out = []
    for i, hypothesis in enumerate(hypotheses):
        if not hypothesis.text.strip():
            out.append((0.0, hypothesis, "empty"))
            continue
        mine = valid[i]
        agreeing = 0.0
        if mine is not None and question.slot_type is not SlotType.FREE:
            agreeing = sum(
                agreement(kind, mine.value, other.value)
                for j, other in enumerate(supporters)
                if j != i and other is not None and hypotheses[j].engine != hypothesis.engine
            )
        value, why = _score(hypothesis, question, priors, readings[i], agreeing)
        out.append((value, hypothesis, why))
    # a valid answer first, whatever the scores: an incomplete or out-of-range reading is a no-match
    # to the dialogue (the caller asked again), so an engine with a high prior that heard half the
    # answer must not hide one that heard all of it ("December, does January 2027." by whisper-tiny
    # over the grammar's "the third of january twenty twenty seven")
    order = sorted(range(len(out)), key=lambda i: (valid[i] is not None, out[i][0]), reverse=True)
    return [out[i] for i in order]


def agreement_confidence(
    finals: Sequence[Hypothesis], question: Question, priors: EnginePriors
) -> tuple[float, str] | None:
    """When the leading final reads as a valid answer and another engine's final reads the same value:
    the highest calibrated confidence among the engines that read it, and which engines they are
    ("whisper and sphinx-grammar"); else None."""
    if not finals:
        return None
    lead = ranked(finals, question, priors)[0][1]
    mine = read_slot(question, lead.text) if lead.text.strip() else None
    if _validity(question, mine)[0] != 1.0:
        return None
    agreeing = [
        other
        for other in finals
        if other.engine != lead.engine
        and other.text.strip()
        and _validity(question, theirs := read_slot(question, other.text))[0] == 1.0
        and same_reading(mine.value, theirs.value)
    ]
    if not agreeing:
        return None
    confidence = max(priors.confidence(h.engine, h.confidence) for h in (lead, *agreeing))
    return confidence, f"{lead.engine} and {agreeing[0].engine}"


def agreed(
    finals: Sequence[Hypothesis], question: Question, priors: EnginePriors, sure: float = 0.0
) -> str | None:
    """Why the leading final needs no second opinion ("whisper and sphinx-grammar read the same
    answer"): it reads as a valid answer, another engine's final reads the same value, and one of them
    is at least ``sure`` confident (calibrated); else None."""
    found = agreement_confidence(finals, question, priors)
    if found is None or found[0] < sure:
        return None
    confidence, engines = found
    why = f"{engines} read the same answer"
    return f"{why}, confidence {confidence:.2f}" if sure > 0 else why


def opinion_tiers(second_opinions: Sequence[Sequence[str]]) -> dict[str, int]:
    """Engine -> its tier: n for the n-th tier of second opinions (an engine in none is in tier 0)."""
    return {name: i + 1 for i, tier in enumerate(second_opinions) for name in tier}


def consulted(
    finals: Sequence[Hypothesis], question: Question, priors: EnginePriors, tiers: dict[str, int]
) -> list[Hypothesis]:
    """The finals a turn weighs when every engine would answer in time: tier by tier until they
    :func:`agreed` (surely, after the first engines alone: :func:`sure_for`) (:meth:`ArbiterTurn.finish`,
    replayed on decoded answers by the benchmark)."""
    asked: list[Hypothesis] = []
    for tier in sorted({tiers.get(h.engine, 0) for h in finals}):
        asked += [h for h in finals if tiers.get(h.engine, 0) == tier]
        if agreed(asked, question, priors, sure_for(tier, question, priors)) is not None:
            break
    return asked


def sure_for(tier: int, question: Question, priors: EnginePriors) -> float:
    """The confidence an agreement needs to close a turn after ``tier``: the first engines alone need
    :attr:`EnginePriors.sure_confidence`, and never suffice for a string of digits or letters (the two
    pocketsphinx decoders share their acoustic confusions: both heard "nine nine nine one eight nine" as
    "...nine nine eight nine" at confidence 0.94, and one symbol changes the value); once a second
    opinion is in, agreement is enough."""
    if tier != 0:
        return 0.0
    return math.inf if question.reading_kind in SYMBOL_STRING_KINDS else priors.sure_confidence


def best_possible(engine: str, question: Question, priors: EnginePriors) -> float:
    """The highest :func:`score` ``engine`` could still reach on ``question``: a valid answer
    with its highest confidence. A final already in that scores more cannot be beaten by it."""
    prior = priors.get(engine, question.slot_type.value)
    return PRIOR_WEIGHT * prior + VALID_WEIGHT + priors.confidence_weight * priors.best_confidence(engine)


class _ThreadedSession:
    """A plain (blocking) engine session driven through an executor."""

    def __init__(self, session: AsrSession, executor: Executor) -> None:
        self.session = session
        self.executor = executor

    async def feed(self, pcm: np.ndarray) -> Hypothesis | None:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.session.feed, pcm)

    async def finish(self) -> Hypothesis:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.session.finish)

    async def abandon(self) -> None:
        """Let the engine give back what the session holds (``close()`` is optional in AsrSession)."""
        close = getattr(self.session, "close", None)
        if close is not None:
            await asyncio.get_running_loop().run_in_executor(self.executor, close)


class _EngineWorker:
    """Opens one engine's session and feeds it in order, off the event loop."""

    def __init__(self, engine: AsrEngine, turn: ArbiterTurn) -> None:
        self.engine = engine
        self.turn = turn
        self.queue: asyncio.Queue[np.ndarray | None] = asyncio.Queue()
        self.partials: list[Hypothesis] = []  # as they came: the fallback when the final is late
        self.final: Hypothesis | None = None
        self.final_at = 0.0  # time.perf_counter() when the final came (turn record, metrics)
        self.error: str | None = None
        self.session: Any = None
        self.task = asyncio.ensure_future(self._run())

    async def _open(self) -> Any:
        arbiter, question = self.turn.arbiter, self.turn.question
        if arbiter.pool is not None:
            return await arbiter.pool.start(self.engine.name, question)
        loop = asyncio.get_running_loop()
        session = await loop.run_in_executor(arbiter.executor, self.engine.start, question)
        return _ThreadedSession(session, arbiter.executor)

    async def _run(self) -> None:
        try:
            self.session = session = await self._open()
            while True:
                chunk = await self.queue.get()
                if chunk is None:
                    self.final = await session.finish()
                    self.final_at = time.perf_counter()
                    return
                partial = await session.feed(chunk)
                if partial is not None:
                    self.partials.append(partial)
                    self.turn._on_partial(partial)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken plugin must not break the turn
            self.error = f"{type(exc).__name__}: {exc}"

    async def abandon(self) -> None:
        """Give up on this engine: cancel the feeding and free a pooled session's decoder."""
        self.task.cancel()
        abandon = getattr(self.session, "abandon", None)
        if abandon is not None:
            with contextlib.suppress(Exception):
                await abandon()


class ArbiterTurn:
    """One caller turn: feed 20 ms frames as they arrive, then :meth:`finish` at end of speech."""

    def __init__(
        self, arbiter: Arbiter, question: Question, on_partial: Callable[[Hypothesis], None] | None
    ) -> None:
        self.arbiter = arbiter
        self.question = question
        self.on_partial = on_partial
        self.record = TurnRecord(question)
        self.finished = False
        self._pending: list[np.ndarray] = []
        self.workers = [_EngineWorker(engine, self) for engine in arbiter.engines_for(question)]

    def _on_partial(self, hypothesis: Hypothesis) -> None:
        self.record.hypotheses.append(hypothesis)
        if self.on_partial is not None:
            self.on_partial(hypothesis)

    @property
    def lagging(self) -> bool:
        """Whether an engine still decoding has more audio queued than the chunk just sent: it is a chunk
        or more behind the caller (a chunk flushed by this very frame is no lag)."""
        return any(w.queue.qsize() > 1 for w in self.workers if w.error is None and not w.task.done())

    def feed(self, frame: np.ndarray) -> None:
        """Add one frame; engines get audio in chunks of ``chunk_frames`` to keep overhead low."""
        self._pending.append(frame)
        if len(self._pending) >= self.arbiter.chunk_frames:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        chunk = np.concatenate(self._pending)
        self._pending = []
        for worker in self.workers:
            if worker.error is None:
                worker.queue.put_nowait(chunk)

    async def finish(self, deadline: float | None = None) -> TurnRecord:
        """End of speech: gather finals until the decision cannot change (or the deadline: the
        arbiter's, or ``deadline`` seconds) and choose the winner. Second opinions decode only when the
        engines before them do not agree (:func:`agreed`); those not asked are ``TurnRecord.not_run``.
        Engines still decoding when no result of theirs could win any more are not waited for
        (``TurnRecord.not_awaited``); those still decoding at the deadline time out."""
        started = time.perf_counter()
        self.finished = True
        self._flush()
        deadline = started + (self.arbiter.deadline if deadline is None else deadline)
        tiers = sorted({self.arbiter.tier_of(w.engine.name) for w in self.workers})
        asked: list[_EngineWorker] = []
        for tier in tiers:
            joining = [w for w in self.workers if self.arbiter.tier_of(w.engine.name) == tier]
            for worker in joining:
                worker.queue.put_nowait(None)
            asked += joining
            await self._gather(asked, deadline)
            if tier == tiers[-1] or time.perf_counter() >= deadline:
                break
            finals = [w.final for w in asked if w.final is not None]
            priors = self.arbiter.priors
            why = agreed(finals, self.question, priors, sure_for(tier, self.question, priors))
            if why is not None:
                self.record.not_run = [w.engine.name for w in self.workers if w not in asked]
                self.record.agreed = why
                break
        record = self.record
        candidates: list[Hypothesis] = []
        settled = self._settled(asked)
        for worker in self.workers:
            name = worker.engine.name
            if worker.final is not None:
                record.hypotheses.append(worker.final)
                candidates.append(worker.final)
                record.answer_seconds[name] = max(0.0, worker.final_at - started)
            else:
                if not worker.task.done():
                    cleanup = asyncio.ensure_future(worker.abandon())  # a stuck thread's result is ignored
                    self.arbiter.background.add(cleanup)
                    cleanup.add_done_callback(self.arbiter.background.discard)
                    if name in record.not_run:
                        continue
                    if settled:
                        record.not_awaited.append(name)
                    else:
                        record.failed_engines[name] = "timeout"
                elif worker.error is not None:
                    record.failed_engines[name] = worker.error
                fallback = self._best_partial(worker)
                if fallback is not None and name not in record.not_awaited:
                    candidates.append(fallback)
        self._choose(candidates)
        if record.not_run:
            record.reason += f"; not asked: {', '.join(record.not_run)} ({record.agreed})"
        record.finish_seconds = time.perf_counter() - started
        self._count()
        return record

    async def _gather(self, asked: list[_EngineWorker], deadline: float) -> None:
        """Wait for the finals of ``asked`` until they are settled or the deadline passes."""
        pending = {worker.task for worker in asked if not worker.task.done()}
        while pending and not self._settled(asked):
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            _, pending = await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)

    def _count(self) -> None:
        """The turn in the speech metrics: each final's delay after the end of speech, the winner, misses."""
        for name, delay in self.record.answer_seconds.items():
            metrics.ASR_FINAL_SECONDS.labels(name).observe(delay)
        for name, why in self.record.failed_engines.items():
            metrics.ASR_MISSES.labels(name, "timeout" if why == "timeout" else "error").inc()
        if self.record.winner is not None:
            metrics.ASR_WINS.labels(self.record.winner.engine, self.question.slot_type.value).inc()

    def _settled(self, asked: list[_EngineWorker]) -> bool:
        """Whether the finals already in beat anything the ``asked`` engines still decoding could return."""
        waiting = [w for w in asked if w.final is None and w.error is None and not w.task.done()]
        if not waiting:
            return True
        finals = [w.final for w in asked if w.final is not None]
        if not finals:
            return False
        priors = self.arbiter.priors
        (best, _, _), *rivals = ranked(finals, self.question, priors)
        # Each engine still decoding may yet agree with a rival, or with itself and all the finals.
        lift = priors.agreement_weight * len(waiting)
        if lift and any(best <= value + lift for value, _, _ in rivals):
            return False
        most = priors.agreement_weight * (len(finals) + len(waiting) - 1)
        return all(best > best_possible(w.engine.name, self.question, priors) + most for w in waiting)

    def _best_partial(self, worker: _EngineWorker) -> Hypothesis | None:
        """An engine without a final: its best-scoring partial, the latest of equals. A decoder that
        fell behind may revise a complete partial (the one that closed the turn early) into an
        incomplete one while it catches up, and its latest alone would then be a no-match."""
        best: tuple[float, Hypothesis] | None = None
        for hypothesis in worker.partials:
            value = score(hypothesis, self.question, self.arbiter.priors)[0]
            if best is None or value >= best[0]:
                best = (value, hypothesis)
        return None if best is None else best[1]

    def _choose(self, candidates: list[Hypothesis]) -> None:
        record = self.record
        scored = ranked(candidates, self.question, self.arbiter.priors)
        for value, hypothesis, _ in scored:
            record.scores[hypothesis.engine] = value
        if not scored:
            record.reason = "no engine produced a result"
            return
        best = scored[0]
        record.winner = best[1]
        kind = "final" if best[1].is_final else "partial (engine missed the deadline)"
        record.reason = f"{best[1].engine} {kind}: {best[2]}"

    async def abandon(self) -> None:
        """Stop every engine (hang-up, barge-out) without choosing."""
        for worker in self.workers:
            await worker.abandon()


class Arbiter:
    """Runs the engines that support each question and picks the best transcript per turn."""

    def __init__(
        self,
        engines: Sequence[AsrEngine],
        *,
        priors: EnginePriors | None = None,
        deadline: float = 1.0,
        executor: Executor | None = None,
        pool: DecodePool | None = None,
        chunk_frames: int = 5,
        selection: dict[SlotType, tuple[str, ...]] | None = None,
        second_opinions: Sequence[Sequence[str]] = (),
    ) -> None:
        self.engines = list(engines)
        # tiers of engines asked in order, each only when the engines before it do not agree (module
        # docstring); an engine in no tier is in the first
        self.tiers = opinion_tiers(second_opinions)
        self.priors = priors if priors is not None else EnginePriors.shipped()
        self.deadline = deadline
        # pocketsphinx holds the GIL while decoding: production uses a process DecodePool; the
        # thread executor serves engines that release the GIL (cloud clients) and tests.
        self.pool = pool
        self.selection = selection
        self.background: set[asyncio.Future] = set()
        self.executor = executor or ThreadPoolExecutor(max_workers=max(2, len(self.engines)))
        self.chunk_frames = chunk_frames

    def tier_of(self, engine: str) -> int:
        """When ``engine`` decodes: 0 with the first engines, n with the n-th tier of second opinions."""
        return self.tiers.get(engine, 0)

    def engines_for(self, question: Question) -> list[AsrEngine]:
        """The engines that listen to answers of ``question``: those that support it, narrowed
        to ``selection[slot type]`` when the policy names engines for that type."""
        chosen = self.selection.get(question.slot_type) if self.selection else None
        return [
            engine
            for engine in self.engines
            if (chosen is None or engine.name in chosen) and _supports(engine, question)
        ]

    async def prepare(self, question: Question) -> None:
        """Let each engine compile what the question needs, before the caller answers."""
        loop = asyncio.get_running_loop()
        for engine in self.engines_for(question):
            with contextlib.suppress(Exception):
                if self.pool is not None:
                    await self.pool.prepare(engine.name, question)
                else:
                    await loop.run_in_executor(self.executor, engine.prepare, question)

    def start_turn(
        self, question: Question, on_partial: Callable[[Hypothesis], None] | None = None
    ) -> ArbiterTurn:
        return ArbiterTurn(self, question, on_partial)

    async def recognize(self, question: Question, audio: np.ndarray) -> TurnRecord:
        """Convenience for whole utterances (tests, benchmarks): stream ``audio`` then finish."""
        turn = self.start_turn(question)
        for start in range(0, len(audio), 160):
            turn.feed(audio[start : start + 160])
            await asyncio.sleep(0)
        return await turn.finish()


def _supports(engine: AsrEngine, question: Question) -> bool:
    try:
        return bool(engine.supports(question))
    except Exception:
        return False
