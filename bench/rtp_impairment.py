"""Slot accuracy over a clean RTP path and over one with packet loss and jitter, side by side.

Each utterance of the evaluation corpus (``parley.speech.corpus``, as ``bench/asr_arbiter.py`` renders
it; its own lines already have noise, codecs and some loss) is sent as 20 ms G.711 RTP packets into
the server's real receive path — :class:`parley.media.stream.RtpStream` (its jitter buffer and
concealment), pulled once per 20 ms tick as the media clock does — twice:

- **clean**: every packet arrives on time;
- **impaired**: each packet is lost with probability ``--loss`` (default 5 %, independent) and the
  others arrive after a delay drawn uniformly from 0 to ``--jitter-ms`` (default 60 ms), so they
  come out of order and in bursts; the jitter buffer adapts and conceals what is missing or late.

The received audio is decoded by the engines the voice agent runs (``LEAN_SELECTION``) and the
arbiter picks with the shipped priors (its policy, without re-decoding); an answer is right when its
value is the labelled one (``parley.speech.evaluation.is_correct``). Printed: accuracy per slot type
for each engine and the arbiter, clean beside impaired, and the jitter buffer's counts.

Measured here (``--per-type 8``: 64 closed answers, a machine loaded by other work, 1,126 s): the
arbiter 56.2 % right clean and 56.2 % impaired (whisper 53.1 / 53.1, the grammar 29.7 / 26.6, the
agent LM 28.1 / 26.6); the jitter buffer concealed 522 of 11,287 frames (4.6 %), 26 came late.
64 answers is a small sample: per slot type the two columns differ by one or two answers either way.

Usage: ``.venv/bin/python bench/rtp_impairment.py [--per-type 8] [--loss 0.05] [--jitter-ms 60]``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from asr_arbiter import decode, reference
from parley.agent.voice import LEAN_SELECTION
from parley.media import g711
from parley.media.rtp import RtpSender
from parley.media.stream import RtpStream
from parley.speech import corpus as corpus_module
from parley.speech.arbiter import EnginePriors, score
from parley.speech.corpus import generate_corpus, question_for, read_labels, read_wav
from parley.speech.engines import load_engines
from parley.speech.evaluation import is_correct
from parley.speech.types import FRAME_SAMPLES, AsrEngine, Hypothesis, SlotType

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FRAME_S = 0.02
SOURCE = ("127.0.0.1", 40000)


def through_rtp(
    pcm: np.ndarray, loss: float, jitter_ms: float, seed: int
) -> tuple[np.ndarray, dict[str, int]]:
    """``pcm`` as the server hears it after RTP with ``loss`` and up to ``jitter_ms`` of extra delay:
    (received audio, the jitter buffer's counts)."""
    rng = np.random.default_rng(seed)
    clock = [0.0]
    stream = RtpStream("PCMU", 0, SOURCE, lambda data, address: None, time=lambda: clock[0])
    heard: list[np.ndarray] = []
    stream.on_audio = heard.append
    sender = RtpSender(0)
    frames = len(pcm) // FRAME_SAMPLES
    arrivals: list[tuple[float, bytes]] = []
    for index in range(frames):
        packet = sender.packet(g711.encode("PCMU", pcm[index * FRAME_SAMPLES : (index + 1) * FRAME_SAMPLES]))
        if loss and rng.random() < loss:
            continue
        delay = rng.uniform(0.0, jitter_ms / 1000) if jitter_ms else 0.0
        arrivals.append((index * FRAME_S + delay, packet))
    arrivals.sort(key=lambda item: item[0])
    position = 0
    tick = 0
    while position < len(arrivals) or stream.jitter.buffered:  # until the last packet is played
        now = tick * FRAME_S + 0.001  # the tick comes just after a packet sent on time
        tick += 1
        clock[0] = now
        while position < len(arrivals) and arrivals[position][0] <= now:
            stream.receive(arrivals[position][1], SOURCE, arrivals[position][0])
            position += 1
        payload = stream.pull()
        stream.deliver(None if payload is None else g711.decode("PCMU", payload))
    stats = stream.jitter.stats
    counts = {"lost": stats.lost, "late": stats.late, "underruns": stats.underruns, "frames": frames}
    return (np.concatenate(heard) if heard else np.zeros(0, dtype=np.int16)), counts


_ENGINES: list[AsrEngine] = []


def _load(names: list[str]) -> None:
    _ENGINES[:] = load_engines(names)


def _decode(job: tuple[str, dict[str, Any], str, float, float, int]) -> tuple[list, dict[str, int]]:
    """In a worker: one utterance through one channel, decoded by every engine that hears its type."""
    path, record, _, loss, jitter_ms, seed = job
    audio, _ = read_wav(Path(path))
    received, counts = through_rtp(audio, loss, jitter_ms, seed)
    chosen = LEAN_SELECTION.get(question_for(record).slot_type, ())
    finals = []
    for engine in _ENGINES:
        if engine.name in chosen and (hypothesis := decode(engine, record, received)) is not None:
            finals.append((engine.name, hypothesis.text, hypothesis.confidence))
    return finals, counts


def accuracy_table(results: dict[str, list[dict]], columns: list[str]) -> dict[str, dict[str, float]]:
    """{slot type: {"column/condition": share right}}, with the mean over closed types."""
    tally: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for condition, rows in results.items():
        for row in rows:
            for column in columns:
                if column in row["correct"]:
                    tally[row["slot_type"]][f"{column}/{condition}"].append(row["correct"][column])
    table = {t: {k: sum(v) / len(v) for k, v in cells.items()} for t, cells in tally.items()}
    closed = [t.value for t in SlotType if t is not SlotType.FREE and t.value in table]
    keys = {key for cells in table.values() for key in cells}
    table["closed (mean)"] = {
        key: float(np.mean([table[t][key] for t in closed if key in table[t]])) for key in sorted(keys)
    }
    return table


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-type", type=int, default=8, help="evaluation utterances per slot type")
    parser.add_argument("--loss", type=float, default=0.05, help="packet loss of the impaired channel")
    parser.add_argument("--jitter-ms", type=float, default=60.0, help="extra delay, uniform from 0 to this")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes")
    parser.add_argument("--workdir", type=Path, default=RESULTS / "asr")
    args = parser.parse_args()
    revision = hashlib.sha1(Path(corpus_module.__file__).read_bytes()).hexdigest()[:8]
    directory = args.workdir / f"eval-seed2-{args.per_type}-{revision}"  # shared with asr_arbiter.py
    if not (directory / "labels.jsonl").exists():
        print(f"rendering the corpus in {directory}", file=sys.stderr)
        await generate_corpus(directory, seed=2, per_type=args.per_type, split="eval")
    records = [r for r in read_labels(directory) if r["slot_type"] != SlotType.FREE.value]
    names = sorted({name for names in LEAN_SELECTION.values() for name in names})
    priors = EnginePriors.shipped()
    conditions = {"clean": (0.0, 0.0), "impaired": (args.loss, args.jitter_ms)}
    results: dict[str, list[dict]] = {}
    buffer: dict[str, dict[str, int]] = {}
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers, initializer=_load, initargs=(names,)) as pool:
        for condition, (loss, jitter_ms) in conditions.items():
            jobs = [
                (str(directory / r["file"]), r, condition, loss, jitter_ms, index)
                for index, r in enumerate(records)
            ]
            rows = []
            totals: dict[str, int] = defaultdict(int)
            decoded = zip(records, pool.map(_decode, jobs), strict=True)
            for done, (record, (finals, counts)) in enumerate(decoded):
                question = question_for(record)
                hypotheses = [Hypothesis(n, t, c, True) for n, t, c in finals]
                value, day = record["value"], reference(record)
                correct = {h.engine: is_correct(question, h.text, value, day) for h in hypotheses}
                if hypotheses:
                    best = max(hypotheses, key=lambda h: score(h, question, priors)[0])
                    correct["arbiter"] = correct[best.engine]
                rows.append({"slot_type": record["slot_type"], "correct": correct})
                for key, value in counts.items():
                    totals[key] += value
                print(f"\r  {condition}: {done + 1}/{len(records)}", end="", file=sys.stderr)
            print(file=sys.stderr)
            results[condition] = rows
            buffer[condition] = dict(totals)
    columns = [*names, "arbiter"]
    table = accuracy_table(results, columns)
    print(f"\nslot accuracy, {len(records)} closed answers; impaired: {100 * args.loss:.0f} % loss,"
          f" 0-{args.jitter_ms:.0f} ms extra delay ({time.perf_counter() - started:.0f} s)")  # fmt: skip
    print("each cell: % right clean / impaired")
    print(f"{'slot type':<15}" + "".join(f"{c:>18}" for c in columns))
    for slot_type, cells in table.items():
        line = ""
        for column in columns:
            clean, impaired = cells.get(f"{column}/clean"), cells.get(f"{column}/impaired")
            cell = "-" if clean is None or impaired is None else f"{100 * clean:.1f} / {100 * impaired:.1f}"
            line += f"{cell:>18}"
        print(f"{slot_type:<15}{line}")
    for condition, totals in buffer.items():
        frames = max(1, totals["frames"])
        print(f"jitter buffer, {condition}: {totals['frames']} frames sent, concealed {totals['lost']}"
              f" ({100 * totals['lost'] / frames:.1f} %), late {totals['late']},"
              f" underruns {totals['underruns']}")  # fmt: skip
    closed = table["closed (mean)"]
    print(f"arbiter, closed answers: clean {100 * closed['arbiter/clean']:.1f}%,"
          f" impaired {100 * closed['arbiter/impaired']:.1f}%")  # fmt: skip
    out = args.workdir / "rtp_impairment.json"
    summary = {"table": table, "jitter_buffer": buffer, "args": vars(args)}
    out.write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    asyncio.run(main())
