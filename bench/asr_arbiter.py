"""Slot accuracy and CPU of each offline ASR engine alone and of the arbiter choosing among them.

Two synthetic corpora are rendered with ``parley.speech.corpus`` (several flite/festival/espeak-ng
voices, noise, G.711, packet loss): a small one with its own seed to *learn* the engine priors,
and the evaluation one (>= 300 utterances, every slot type). For each evaluation utterance every
engine decodes the audio as a stream of 20 ms frames; the arbiter's pick is scored from the
same hypotheses with the learned priors (exactly the arbiter's policy, without re-decoding).
"arbiter" runs every engine on every question; "arbiter-lean" runs only the grammar and the
per-agent LM on closed questions (the general LM, the costliest, only on free speech).
"oracle" counts an utterance right when any engine got it: no selection policy can beat it.
Latency (end of speech -> the arbiter's decision) is measured with the real arbiter as the voice
agent runs it (``LEAN_SELECTION``, 1 s deadline, engines in decode processes) on a sample of
utterances streamed in real time.

Decodes are cached per engine fingerprint (name, decoder settings, code revision) in each corpus
directory, so re-running after changing one engine re-decodes only that engine.

Usage: ``.venv/bin/python bench/asr_arbiter.py [--per-type 34] [--train-per-type 12]``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from parley.agent.voice import LEAN_SELECTION
from parley.speech.arbiter import Arbiter, EnginePriors, score
from parley.speech.corpus import generate_corpus, question_for, read_labels, read_wav
from parley.speech.engines import load_engines
from parley.speech.engines.pool import DecodePool
from parley.speech.evaluation import is_correct
from parley.speech.types import FRAME_SAMPLES, AsrEngine, Hypothesis, SlotType

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CLOSED = [t.value for t in SlotType if t != SlotType.FREE]


async def corpus(directory: Path, seed: int, per_type: int) -> list[dict[str, Any]]:
    if not (directory / "labels.jsonl").exists():
        await generate_corpus(directory, seed=seed, per_type=per_type)
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


def fingerprint(engine: AsrEngine) -> str:
    """What an engine's decodes depend on: its name, decoder settings and code revision."""
    settings = {k: v for k, v in sorted(getattr(engine, "settings", {}).items()) if k != "dict"}
    revision = getattr(engine, "revision", "")
    return hashlib.sha1(f"{engine.name}|{revision}|{settings}".encode()).hexdigest()[:10]


def _load_worker(names: list[str]) -> None:
    _ENGINES[:] = load_engines(names)


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
        row: dict[str, Any] = {"record": record, "hypotheses": {}, "correct": {}, "cpu": {}}
        for engine in engines:
            final = cache[fingerprint(engine)][record["id"]]
            if final is None:
                continue
            name, text, confidence, cpu = final
            row["hypotheses"][name] = Hypothesis(name, text, confidence, True, cpu_seconds=cpu)
            row["correct"][name] = is_correct(question, text, record["value"], reference(record))
            row["cpu"][name] = cpu
        row["audio_seconds"] = record["duration_s"]
        rows.append(row)
    return rows


def arbitrate(rows: list[dict], priors: EnginePriors, label: str, engines: set[str] | None = None) -> None:
    """The arbiter's pick among the engines it runs for each question (all, or ``engines`` on
    closed questions), scored with its policy: same hypotheses, no re-decoding."""
    for row in rows:
        question = question_for(row["record"])
        closed = question.slot_type != SlotType.FREE
        running = {
            name: h
            for name, h in row["hypotheses"].items()
            if engines is None or not closed or name in engines
        }
        best = max(running.values(), key=lambda h: score(h, question, priors)[0])
        row["correct"][label] = row["correct"][best.engine]
        row["cpu"][label] = sum(row["cpu"][name] for name in running)


async def latency_sample(
    engines: list[AsrEngine], directory: Path, records: list[dict], priors: EnginePriors
) -> list[float]:
    """End of speech -> decision, with the audio streamed in real time, as the voice agent runs it."""
    async with DecodePool([e.name for e in engines]) as pool:  # in production engines decode in processes
        await pool.warm()
        arbiter = Arbiter(engines, priors=priors, deadline=1.0, pool=pool, selection=LEAN_SELECTION)
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


def cpu_per_audio_second(rows: list[dict], names: list[str], closed_only: bool) -> dict[str, float]:
    out = {}
    for name in names:
        cpu = audio = 0.0
        for row in rows:
            if closed_only and row["record"]["slot_type"] == SlotType.FREE.value:
                continue
            if name in row["cpu"]:
                cpu += row["cpu"][name]
                audio += row["audio_seconds"]
        out[name] = cpu / audio if audio else 0.0
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-type", type=int, default=34, help="evaluation utterances per slot type")
    parser.add_argument(
        "--train-per-type", type=int, default=12, help="prior-learning utterances per slot type"
    )
    parser.add_argument("--latency-sample", type=int, default=27)
    parser.add_argument("--workers", type=int, default=2, help="decoding processes")
    parser.add_argument("--workdir", type=Path, default=RESULTS / "asr")
    args = parser.parse_args()
    engines = load_engines()
    names = [e.name for e in engines]
    train_dir = args.workdir / f"train-seed1-{args.train_per_type}"
    test_dir = args.workdir / f"eval-seed2-{args.per_type}"
    print(f"corpora in {args.workdir} (rendered once, then reused)", file=sys.stderr)
    train_records = await corpus(train_dir, 1, args.train_per_type)
    test_records = await corpus(test_dir, 2, args.per_type)

    print("learning priors", file=sys.stderr)
    train_rows = run_engines(train_dir, train_records, engines, args.workers)
    outcomes = [
        (name, row["record"]["slot_type"], right)
        for row in train_rows
        for name, right in row["correct"].items()
    ]
    priors = EnginePriors.learn(outcomes)
    priors.save(args.workdir / "priors.json")

    print(f"evaluating on {len(test_records)} utterances", file=sys.stderr)
    rows = run_engines(test_dir, test_records, engines, args.workers)
    raw = [
        {"id": row["record"]["id"], "slot_type": row["record"]["slot_type"], "correct": row["correct"],
         "cpu": row["cpu"], "audio_seconds": row["audio_seconds"],
         "texts": {name: h.text for name, h in row["hypotheses"].items()}}
        for row in rows
    ]  # fmt: skip
    (args.workdir / "decodes.json").write_text(json.dumps(raw, indent=1))
    arbitrate(rows, priors, "arbiter")
    arbitrate(rows, priors, "arbiter-lean", {"sphinx-grammar", "sphinx-agent-lm"})
    for row in rows:
        row["correct"]["oracle"] = any(row["correct"].values())
    columns = [*names, "arbiter", "arbiter-lean", "oracle"]
    accuracy = table(rows, columns)
    cpu_closed = cpu_per_audio_second(rows, columns[:-1], closed_only=True)
    cpu_all = cpu_per_audio_second(rows, columns[:-1], closed_only=False)
    sample = [
        r for i, r in enumerate(test_records) if i % max(1, len(test_records) // args.latency_sample) == 0
    ]
    delays = await latency_sample(engines, test_dir, sample[: args.latency_sample], priors)

    best_single = max(names, key=lambda n: accuracy["closed (mean)"][n] or 0.0)
    best_arbiter = max(("arbiter", "arbiter-lean"), key=lambda n: accuracy["closed (mean)"][n] or 0.0)
    base = max(accuracy["closed (mean)"][best_single] or 1e-9, 1e-9)
    gain = (accuracy["closed (mean)"][best_arbiter] or 0) / base - 1
    print(f"\nslot accuracy ({len(rows)} utterances; priors learned on {len(train_rows)} others)")
    print(f"{'slot type':<15}" + "".join(f"{c:>17}" for c in columns))
    for slot_type, values in accuracy.items():
        cells = "".join(f"{'-' if v is None else f'{100 * v:.1f}%':>17}" for v in values.values())
        print(f"{slot_type:<15}{cells}")
    print(f"{'CPU s/s closed':<15}" + "".join(f"{cpu_closed.get(c, 0):>17.3f}" for c in columns))
    print(f"{'CPU s/s all':<15}" + "".join(f"{cpu_all.get(c, 0):>17.3f}" for c in columns))
    p50 = statistics.median(delays)
    p95 = float(np.percentile(delays, 95))
    print(f"\nbest single engine on closed questions: {best_single};", end=" ")
    print(f"{best_arbiter} relative slot-accuracy gain over it: {100 * gain:+.1f}%")
    print(f"end of speech -> arbiter decision over {len(delays)} real-time turns:", end=" ")
    print(f"p50 {1000 * p50:.0f} ms, p95 {1000 * p95:.0f} ms")
    summary = {
        "accuracy": accuracy, "cpu_per_audio_second_closed": cpu_closed, "cpu_per_audio_second_all": cpu_all,
        "best_single": best_single, "relative_gain": gain, "latency_p50_s": p50, "latency_p95_s": p95,
        "utterances": len(rows), "priors": priors.table,
    }  # fmt: skip
    (args.workdir / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
