"""Slot accuracy and CPU of each offline ASR engine alone and of the arbiter choosing among them.

Two synthetic corpora are rendered (the evaluation one in voices and noise the training one never has,
``split="eval"``) with ``parley.speech.corpus`` (several flite/festival/espeak-ng
voices, noise, G.711, packet loss): a small one with its own seed to *learn* the engine priors,
and the evaluation one (>= 300 utterances, every slot type). For each evaluation utterance every
engine decodes the audio as a stream of 20 ms frames; the arbiter's pick is scored from the
same hypotheses with the learned priors (exactly the arbiter's policy, without re-decoding).
"arbiter" runs every engine on every question; "arbiter-lean" runs what the voice agent runs
(``LEAN_SELECTION``: the grammar, the per-agent LM and whisper's base and tiny.en models on closed
questions, and base on noise-reduced audio too for digits, phone numbers, spellings and amounts; whisper
and the agent LM on free speech), asking base, then tiny.en and then base on noise-reduced audio only when
the engines before them disagree (``SECOND_OPINIONS``; the streaming decoders' agreement must also be
sure: ``sure_confidence``, learned here too), with the CPU of the decodes it asked for.
"oracle" counts an utterance right when any engine got it: no selection policy can beat it.
Variants of whisper (``--variants``: without the question prompt, with a 30 s or a 5 s encoder
window, greedy decoding, the beam's top hypothesis only) are reported beside, for the choices in
the engine's docstring; they take no part in the arbiter or the oracle.

The priors are learned on the training corpus, with each engine's confidence calibration and the
weights of calibrated confidence and of agreement between engines (the ones that score best on the
training corpus itself); ``--ship`` writes them to ``src/parley/speech/priors.json``, the arbiter's default.
Latency (end of speech -> the arbiter's decision) is measured with the real arbiter as the voice
agent runs it (``LEAN_SELECTION``, 1 s deadline, engines in decode processes) on a sample of
utterances streamed in real time.

Decodes are cached per engine fingerprint (name, decoder settings, code revision) in each corpus
directory, so re-running after changing one engine re-decodes only that engine.

Usage: ``.venv/bin/python bench/asr_arbiter.py [--per-type 38] [--train-per-type 24] [--variants [NAME ...]]
[--ship]``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from parley.agent.voice import LEAN_SELECTION, SECOND_OPINIONS
from parley.speech import corpus as corpus_module
from parley.speech.arbiter import (
    AGREEMENT_WEIGHT,
    SHIPPED_PRIORS,
    Arbiter,
    EnginePriors,
    agreement_confidence,
    consulted,
    opinion_tiers,
    ranked,
    sure_for,
)
from parley.speech.corpus import generate_corpus, question_for, read_labels, read_wav
from parley.speech.engines import load_engines
from parley.speech.engines.pool import DecodePool
from parley.speech.engines.whisper import WhisperEngine
from parley.speech.evaluation import is_correct, word_error_rate
from parley.speech.types import FRAME_SAMPLES, AsrEngine, Hypothesis, SlotType

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WEIGHT_MARGIN = 0.02  # share of the training answers a weight must win over the default (best_weight)
CLOSED = [t.value for t in SlotType if t != SlotType.FREE]


async def corpus(directory: Path, seed: int, per_type: int, split: str) -> list[dict[str, Any]]:
    if not (directory / "labels.jsonl").exists():
        await generate_corpus(directory, seed=seed, per_type=per_type, split=split)
    return read_labels(directory)


def decode(engine: AsrEngine, record: dict[str, Any], audio: np.ndarray) -> Hypothesis | None:
    question = question_for(record)
    if not engine.supports(question):
        return None
    engine.prepare(question)
    session = engine.start(question)
    for start in range(0, len(audio), FRAME_SAMPLES * 5):
        session.feed(audio[start : start + FRAME_SAMPLES * 5])
    return session.finish()


def reference(record: dict[str, Any]) -> date | None:
    value = record["question"].get("reference_date")
    return date.fromisoformat(value) if value else None


_ENGINES: list[AsrEngine] = []
# Whisper variants measured beside the engines (not arbitrated): label -> WhisperEngine settings.
VARIANTS: dict[str, dict[str, Any]] = {
    "whisper-noprompt": {"biased": False},
    "whisper-ctx30": {"context_s": 30.0},
    "whisper-ctx5": {"context_s": 5.0},
    "whisper-beam1": {"beam_size": 1},
    "whisper-top1": {"n_best": 1},
}


def make_engine(name: str) -> AsrEngine:
    """An installed engine by entry-point name, or a whisper variant by its label."""
    if name in VARIANTS:
        engine = WhisperEngine(**VARIANTS[name])
        engine.name = name  # its hypotheses and cache entries carry the variant's label
        return engine
    return load_engines([name])[0]


def fingerprint(engine: AsrEngine) -> str:
    """What an engine's decodes depend on: its name, decoder settings and code revision."""
    settings = {k: v for k, v in sorted(getattr(engine, "settings", {}).items()) if k != "dict"}
    revision = getattr(engine, "revision", "")
    return hashlib.sha1(f"{engine.name}|{revision}|{settings}".encode()).hexdigest()[:10]


def _load_worker(names: list[str]) -> None:
    _ENGINES[:] = [make_engine(name) for name in names]


def _decode_all(job: tuple[str, dict[str, Any]]) -> list[tuple[str, str, float, float]]:
    """In a worker process: the finals of the loaded engines for one utterance, as plain tuples."""
    path, record = job
    audio, _ = read_wav(Path(path))
    finals = []
    for engine in _ENGINES:
        hypothesis = decode(engine, record, audio)
        if hypothesis is not None:
            finals.append((engine.name, hypothesis.text, hypothesis.confidence, hypothesis.cpu_seconds))
    return finals


def run_engines(
    directory: Path, records: list[dict[str, Any]], engines: list[AsrEngine], workers: int
) -> list[dict]:
    """Decode every utterance with every engine in ``workers`` processes. Cached in the corpus
    directory per engine :func:`fingerprint`: changing one engine re-decodes only that engine."""
    cache_file = directory / "decodes-by-engine.json"
    cache: dict[str, dict[str, list]] = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    for engine in engines:
        entries = cache.setdefault(fingerprint(engine), {})
        todo = [r for r in records if r["id"] not in entries]
        if not todo:
            continue
        with ProcessPoolExecutor(workers, initializer=_load_worker, initargs=([engine.name],)) as pool:
            jobs = [(str(directory / r["file"]), r) for r in todo]
            for done, (record, finals) in enumerate(zip(todo, pool.map(_decode_all, jobs), strict=True), 1):
                entries[record["id"]] = finals[0] if finals else None
                if done % 10 == 0 or done == len(todo):
                    cache_file.write_text(json.dumps(cache))
                print(f"\r  {engine.name}: decoded {done}/{len(todo)}", end="", file=sys.stderr)
        print(file=sys.stderr)
    rows = []
    for record in records:
        question = question_for(record)
        row: dict[str, Any] = {"record": record, "hypotheses": {}, "correct": {}, "cpu": {}, "texts": {}}
        for engine in engines:
            final = cache[fingerprint(engine)][record["id"]]
            if final is None:
                continue
            name, text, confidence, cpu = final
            row["hypotheses"][name] = Hypothesis(name, text, confidence, True, cpu_seconds=cpu)
            row["correct"][name] = is_correct(question, text, record["value"], reference(record))
            row["cpu"][name] = cpu
            row["texts"][name] = text
        row["audio_seconds"] = record["duration_s"]
        rows.append(row)
    return rows


def arbitrate(
    rows: list[dict],
    priors: EnginePriors,
    label: str,
    engines: list[str],
    selection: dict[SlotType, tuple[str, ...]] | None = None,
    second_opinions: Sequence[Sequence[str]] = (),
) -> None:
    """The arbiter's pick among ``engines`` (narrowed to ``selection[slot type]`` when given, asking
    ``second_opinions`` only when the engines before them disagree), scored with its policy: same
    hypotheses, no re-decoding."""
    tiers = opinion_tiers(second_opinions)
    for row in rows:
        question = question_for(row["record"])
        chosen = selection.get(question.slot_type) if selection else None
        running = {
            name: h
            for name, h in row["hypotheses"].items()
            if name in engines and (chosen is None or name in chosen)
        }
        asked = consulted(list(running.values()), question, priors, tiers)
        best = ranked(asked, question, priors)[0][1]
        row["correct"][label] = row["correct"][best.engine]
        row["cpu"][label] = sum(row["cpu"][h.engine] for h in asked)
        row.setdefault("tier", {})[label] = max(tiers.get(h.engine, 0) for h in asked)
        row["texts"][label] = best.text


def learn_priors(rows: list[dict], engines: list[str]) -> EnginePriors:
    """Priors, confidence calibrations and the confidence and agreement weights, from the training
    corpus."""
    outcomes = [
        (name, row["record"]["slot_type"], row["correct"][name]) for row in rows for name in engines
        if name in row["correct"]
    ]  # fmt: skip
    priors = EnginePriors.learn(outcomes)
    priors.calibrate(
        [
            (name, row["hypotheses"][name].confidence, row["correct"][name])
            for row in rows
            for name in engines
            if name in row["hypotheses"]
        ]
    )
    priors.sure_confidence = 1.0  # whisper always asked while the weights are learned; then learned itself
    confidence = (0.05, 0.1, 0.2, 0.3, 0.45, 0.6)
    priors.confidence_weight = best_weight(rows, priors, engines, "confidence_weight", confidence)
    # Agreement: the default unless another weight scores better (on a small training corpus where the
    # arbiter is already near its oracle, agreement often changes nothing there).
    agreement = (AGREEMENT_WEIGHT, 0.05, 0.2, 0.0, 0.3)
    priors.agreement_weight = best_weight(rows, priors, engines, "agreement_weight", agreement)
    priors.sure_confidence = lowest_sure_confidence(rows, priors, engines)
    for row in rows:
        for key in ("correct", "cpu", "texts"):
            row[key].pop("trial", None)
    return priors


def best_weight(
    rows: list[dict], priors: EnginePriors, engines: list[str], name: str, weights: tuple[float, ...]
) -> float:
    """The weight of ``weights`` for ``priors.<name>`` with which the lean arbiter over ``engines`` gets
    most of ``rows`` right; the first (the default) unless another gets :data:`WEIGHT_MARGIN` more of
    them right: on a training corpus of a few hundred answers one answer more is noise (agreement's
    0.0 beat its default 0.1 by 170 to 167 of 216 there, and lost 279 to 284 of 342 on the
    evaluation corpus)."""
    scores = []
    for weight in weights:
        setattr(priors, name, weight)
        arbitrate(rows, priors, "trial", engines, LEAN_SELECTION, SECOND_OPINIONS)
        scores.append((sum(row["correct"]["trial"] for row in rows), weight))
    default = scores[0]
    best = max(scores, key=lambda score: score[0])  # the first of equals
    return best[1] if best[0] >= default[0] + max(1, round(WEIGHT_MARGIN * len(rows))) else default[1]


def lowest_sure_confidence(rows: list[dict], priors: EnginePriors, engines: list[str]) -> float:
    """The lowest calibrated confidence from which the first engines' agreement may close a turn alone
    (:attr:`EnginePriors.sure_confidence`) and the lean arbiter still gets as many of ``rows`` right as
    when it always asks whisper too; 1.0 (never) when no such confidence."""

    def right(sure: float) -> int:
        priors.sure_confidence = sure
        arbitrate(rows, priors, "trial", engines, LEAN_SELECTION, SECOND_OPINIONS)
        return sum(row["correct"]["trial"] for row in rows)

    tiers = opinion_tiers(SECOND_OPINIONS)
    candidates = set()
    for row in rows:
        question = question_for(row["record"])
        chosen = LEAN_SELECTION.get(question.slot_type, ())
        first = [h for name, h in row["hypotheses"].items() if name in chosen and tiers.get(name, 0) == 0]
        found = agreement_confidence(first, question, priors)
        if found is not None and sure_for(0, question, priors) != math.inf:  # may close a turn alone
            candidates.add(found[0])
    reference = right(1.0)
    return next((sure for sure in sorted(candidates) if right(sure) >= reference), 1.0)


async def latency_sample(
    engines: list[AsrEngine], directory: Path, records: list[dict], priors: EnginePriors
) -> list[float]:
    """End of speech -> decision, with the audio streamed in real time, as the voice agent runs it."""
    async with DecodePool([e.name for e in engines]) as pool:  # in production engines decode in processes
        await pool.warm()
        arbiter = Arbiter(
            engines,
            priors=priors,
            deadline=1.0,
            pool=pool,
            selection=LEAN_SELECTION,
            second_opinions=SECOND_OPINIONS,
        )
        return await _timed_turns(arbiter, directory, records)


async def _timed_turns(arbiter: Arbiter, directory: Path, records: list[dict]) -> list[float]:
    delays = []
    for record in records:
        audio, _ = read_wav(directory / record["file"])
        question = question_for(record)
        await arbiter.prepare(question)
        turn = arbiter.start_turn(question)
        for start in range(0, len(audio), FRAME_SAMPLES):
            turn.feed(audio[start : start + FRAME_SAMPLES])
            if start % (FRAME_SAMPLES * 5) == 0:
                await asyncio.sleep(0.1)  # 5 frames = 100 ms of caller audio
        started = time.perf_counter()
        turn_record = await turn.finish()
        delays.append(time.perf_counter() - started)
        if turn_record.failed_engines:
            print(f"  {record['id']}: {turn_record.failed_engines}", file=sys.stderr)
    return delays


def table(rows: list[dict], names: list[str]) -> dict[str, dict[str, float | None]]:
    by_type: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for name, right in row["correct"].items():
            by_type[row["record"]["slot_type"]][name].append(right)
    out: dict[str, dict[str, float | None]] = {}
    for slot_type in [t.value for t in SlotType]:
        out[slot_type] = {
            name: (sum(v) / len(v) if (v := by_type[slot_type].get(name)) else None) for name in names
        }
    for label, types in (("closed (mean)", CLOSED), ("all (mean)", [t.value for t in SlotType])):
        out[label] = {}
        for name in names:
            values = [out[t][name] for t in types if out[t][name] is not None]
            out[label][name] = sum(values) / len(values) if values else None  # type: ignore[operator]
    return out


def cpu_per_answer(rows: list[dict], names: list[str], closed_only: bool) -> dict[str, float]:
    """Mean decoding CPU seconds per answer (whisper's cost is per decode, not per audio second)."""
    out = {}
    for name in names:
        costs = [
            row["cpu"][name]
            for row in rows
            if name in row["cpu"] and not (closed_only and row["record"]["slot_type"] == SlotType.FREE.value)
        ]
        out[name] = sum(costs) / len(costs) if costs else 0.0
    return out


def free_speech_wer(rows: list[dict], names: list[str]) -> dict[str, float]:
    """Word error rate over all free-speech answers (errors / reference words) per column."""
    out = {}
    free = [row for row in rows if row["record"]["slot_type"] == SlotType.FREE.value]
    words = sum(len(str(row["record"]["value"]).split()) for row in free) or 1
    for name in names:
        errors = sum(
            word_error_rate(str(row["record"]["value"]), row["texts"].get(name, ""))
            * len(str(row["record"]["value"]).split())
            for row in free
        )
        out[name] = errors / words
    return out


def breakdown(rows: list[dict], column: str, key: str) -> dict[str, tuple[int, int]]:
    """Closed answers right/total per value of a label field (voice, noise, codec, disfluency...)."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        record = row["record"]
        if record["slot_type"] == SlotType.FREE.value or key not in record:
            continue
        tally = out[str(record[key])]
        tally[0] += int(row["correct"][column])
        tally[1] += 1
    return {k: (v[0], v[1]) for k, v in sorted(out.items())}


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-type", type=int, default=38, help="evaluation utterances per slot type")
    parser.add_argument(
        "--train-per-type", type=int, default=24, help="prior-learning utterances per slot type"
    )
    parser.add_argument("--latency-sample", type=int, default=27, help="real-time turns timed (0: none)")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes")
    parser.add_argument("--workdir", type=Path, default=RESULTS / "asr")
    parser.add_argument(
        "--variants",
        nargs="*",
        choices=sorted(VARIANTS),
        help="also decode these whisper variants (all if none named)",
    )
    parser.add_argument(
        "--engines",
        nargs="+",
        help="only these installed engines (default: all; the lean ones are enough "
        "for the agent's figures: sphinx-grammar sphinx-agent-lm whisper whisper-tiny)",
    )
    parser.add_argument("--ship", action="store_true", help=f"write the learned priors to {SHIPPED_PRIORS}")
    args = parser.parse_args()
    engines = load_engines(args.engines)
    names = [e.name for e in engines]
    variants = [make_engine(v) for v in (args.variants or VARIANTS)] if args.variants is not None else []
    revision = hashlib.sha1(Path(corpus_module.__file__).read_bytes()).hexdigest()[:8]  # re-render on change
    train_dir = args.workdir / f"train-seed1-{args.train_per_type}-{revision}"
    test_dir = args.workdir / f"eval-seed2-{args.per_type}-{revision}"
    print(f"corpora in {args.workdir} (rendered once, then reused)", file=sys.stderr)
    train_records = await corpus(train_dir, 1, args.train_per_type, "train")
    test_records = await corpus(test_dir, 2, args.per_type, "eval")  # voices and noise train never had

    print("learning priors", file=sys.stderr)
    train_rows = run_engines(train_dir, train_records, engines, args.workers)
    priors = learn_priors(train_rows, names)
    priors.save(args.workdir / "priors.json")
    if args.ship:
        shipped = EnginePriors.shipped()
        for engine in set(shipped.table) - set(names):  # engines this run left out keep what they had
            priors.table[engine] = shipped.table[engine]
            if engine in shipped.calibration:
                priors.calibration[engine] = shipped.calibration[engine]
        priors.save(SHIPPED_PRIORS)

    print(f"evaluating on {len(test_records)} utterances", file=sys.stderr)
    rows = run_engines(test_dir, test_records, [*engines, *variants], args.workers)
    arbitrate(rows, priors, "arbiter", names)
    arbitrate(rows, priors, "arbiter-lean", names, LEAN_SELECTION, SECOND_OPINIONS)
    for row in rows:
        row["correct"]["oracle"] = any(row["correct"][n] for n in names if n in row["correct"])
    raw = [
        {"id": row["record"]["id"], "slot_type": row["record"]["slot_type"], "value": row["record"]["value"],
         "correct": row["correct"], "cpu": row["cpu"], "texts": row["texts"]}
        for row in rows
    ]  # fmt: skip
    (args.workdir / "decodes.json").write_text(json.dumps(raw, indent=1, default=str))
    columns = [*names, *(v.name for v in variants), "arbiter", "arbiter-lean", "oracle"]
    accuracy = table(rows, columns)
    cpu_closed = cpu_per_answer(rows, columns[:-1], closed_only=True)
    cpu_all = cpu_per_answer(rows, columns[:-1], closed_only=False)
    wer = free_speech_wer(rows, columns[:-1])
    delays: list[float] = []
    if args.latency_sample > 0:  # 0: accuracy only
        step = max(1, len(test_records) // args.latency_sample)
        sample = [r for i, r in enumerate(test_records) if i % step == 0]
        delays = await latency_sample(engines, test_dir, sample[: args.latency_sample], priors)

    closed = {c: accuracy["closed (mean)"][c] or 0.0 for c in columns}
    best_single = max(names, key=lambda n: closed[n])
    arbiter = "arbiter-lean"  # what the voice agent runs
    closed_answers = sum(1 for r in rows if r["record"]["slot_type"] != SlotType.FREE.value)
    print(f"\nslot accuracy ({len(rows)} utterances, {closed_answers} closed;", end=" ")
    print(f"priors learned on {len(train_rows)}; weights: confidence {priors.confidence_weight},", end=" ")
    print(f"agreement {priors.agreement_weight}; sure from {priors.sure_confidence:.3f})")
    print(f"{'slot type':<15}" + "".join(f"{c:>17}" for c in columns))
    for slot_type, values in accuracy.items():
        cells = "".join(f"{'-' if v is None else f'{100 * v:.1f}%':>17}" for v in values.values())
        print(f"{slot_type:<15}{cells}")
    print(f"{'free WER':<15}" + "".join(f"{100 * wer.get(c, 0):>16.1f}%" for c in columns[:-1]))
    print(f"{'CPU s/answer':<15}" + "".join(f"{cpu_closed.get(c, 0):>17.3f}" for c in columns[:-1]))
    print(f"{'  (with free)':<15}" + "".join(f"{cpu_all.get(c, 0):>17.3f}" for c in columns[:-1]))
    for key in ("disfluency", "voice", "noise", "codec"):
        split = breakdown(rows, arbiter, key)
        if split:
            print(f"{arbiter} by {key}: " + ", ".join(f"{k} {r}/{t}" for k, (r, t) in split.items()))
    worst = min(
        (t for t in CLOSED if accuracy[t][arbiter] is not None), key=lambda t: accuracy[t][arbiter] or 0
    )
    p50 = statistics.median(delays) if delays else float("nan")
    p95 = float(np.percentile(delays, 95)) if delays else float("nan")
    print(f"\n{arbiter}: {100 * closed[arbiter]:.1f}% of closed answers (goal >= 90%); worst type {worst}"
          f" {100 * (accuracy[worst][arbiter] or 0):.1f}% (goal >= 80%)")  # fmt: skip
    print(f"best single engine: {best_single} {100 * closed[best_single]:.1f}%; {arbiter} beats it by"
          f" {100 * (closed[arbiter] - closed[best_single]):+.1f} points (goal >= +5)")  # fmt: skip
    share = closed[arbiter] / max(closed["oracle"], 1e-9)
    print(f"oracle {100 * closed['oracle']:.1f}%: {arbiter} reaches {100 * share:.1f}% of it (goal >= 97%)")
    print(f"CPU per call of 4 answers ({arbiter}): {4 * cpu_closed[arbiter]:.2f} s")
    closed_tiers = [r["tier"][arbiter] for r in rows if r["record"]["slot_type"] != SlotType.FREE.value]
    asked = ", ".join(
        f"{100 * closed_tiers.count(tier) / len(closed_tiers):.0f}% after {' + '.join(engines)}"
        for tier, engines in enumerate([("the streaming engines",), *SECOND_OPINIONS])
    )
    print(f"closed answers decided ({arbiter}): {asked}")
    print(f"end of speech -> arbiter decision over {len(delays)} real-time turns:", end=" ")
    print(f"p50 {1000 * p50:.0f} ms, p95 {1000 * p95:.0f} ms")
    summary = {
        "accuracy": accuracy, "cpu_per_answer_closed": cpu_closed, "cpu_per_answer_all": cpu_all,
        "free_speech_wer": wer, "best_single": best_single, "latency_p50_s": p50, "latency_p95_s": p95,
        "utterances": len(rows), "closed_answers": closed_answers, "priors": priors.table,
        "calibration": priors.calibration, "confidence_weight": priors.confidence_weight,
        "agreement_weight": priors.agreement_weight, "sure_confidence": priors.sure_confidence,
    }  # fmt: skip
    (args.workdir / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
