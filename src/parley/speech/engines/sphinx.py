"""Offline streaming ASR engines on pocketsphinx 5 (the wheel's en-us 16 kHz model).

Three engines share one session implementation and differ only in the search they activate:

- ``SphinxLmEngine`` ("sphinx-lm"): the wheel's general en-us trigram LM; every slot type.
- ``SphinxGrammarEngine`` ("sphinx-grammar"): each question compiled to JSGF (``grammar.py``);
  closed questions only.
- ``SphinxAgentLmEngine`` ("sphinx-agent-lm"): a small ARPA trigram LM built from the agent's
  prompts, phrases, options and slot vocabulary with ``pocketsphinx.lm.ArpaBoLM`` (the builder
  that ships inside the pocketsphinx wheel: fixed-mass absolute discounting with back-off, as
  CMU's lmtool; kenlm's ``lmplz`` would need a C++ build).

Streaming: 8 kHz telephone frames are upsampled per session by a ``soxr.ResampleStream`` (so
chunk edges join without clicks) and decoded with ``process_raw(full_utt=False)``; a partial
``Hypothesis`` is returned whenever ``hyp()`` text changes. ``finish`` flushes the resampler,
ends the utterance and reads word timings from ``seg()``.

Confidence: pocketsphinx computes word posteriors on the lattice (forward-backward); the Python
API already returns them as linear probabilities (``seg().prob``, ``get_prob()``). We report the
geometric mean of the spoken words' posteriors: "how sure the decoder is of each word, on
average", independent of utterance length (the utterance posterior ``get_prob()`` shrinks with
every word). An empty transcript has confidence 0.

Decoders are expensive (measured: 0.11 s and ≈27 MB RSS without an LM, 0.35-0.45 s and ≈90 MB
with the general LM) while switching searches is cheap (``add_jsgf_string`` 1-20 ms,
``activate_search`` µs), so each engine keeps a pool of idle decoders; a session borrows one on
its first audio (off the event loop, see ``pool.py``), adds the question's search if that decoder
has not seen it yet, and returns it in ``finish``. The front end is re-initialised per session
(``reinit_feat``, 0.1 ms) and CMN set to ``TELEPHONE_CMNINIT``: without that, live-CMN history left
by the previous utterance changed results ("four two seven one" decoded as "it is one two seven
one" on a reused decoder), so a pooled decoder now carries nothing over from another call.

Tuning (measured on this machine, flite slt/kal16/awb/rms utterances → 8 kHz → G.711 µ-law →
16 kHz, fed in 20 ms frames; CPU = process seconds per audio second):

- The model's default ``cmninit`` (40,3,-1) is for wide-band speech; telephone audio upsampled
  from 8 kHz has no energy above 4 kHz and a very different cepstral mean, and live CMN needs
  seconds to adapt. Initialising CMN with the mean measured on telephone speech fixed most
  grammar errors: digits grammar 0/3 → 3/3 exact on the first utterances tried.
- A grammar's size drives its CPU: a fully nested number grammar for amounts cost 0.72 s/s, the
  flattened one in ``grammar.py`` 0.26 s/s; digits/yes-no/names/choices cost 0.02-0.07 s/s.
- Sample: 14 answers (digits with and without a count, yes/no, names, dates, an amount, a
  choice, a free sentence) x 4 voices; "right" = the expected words, ignoring a leading carrier
  ("it's", "the") and "pound"/"pounds". CPU excludes creating the decoder.

  ================  =====================================  =======  =======
  engine            settings                               right    CPU s/s
  ================  =====================================  =======  =======
  sphinx-grammar    defaults (chosen)                      40/52    0.081
  sphinx-grammar    topn 2                                 39/52    0.074
  sphinx-grammar    ds 2                                   36/52    0.078
  sphinx-grammar    maxhmmpf 3000                          40/52    0.083
  sphinx-lm         defaults                               18/56    0.238
  sphinx-lm         maxhmmpf 3000, beam 1e-40 (chosen)     18/56    0.195
  sphinx-lm         topn 2                                 18/56    0.195
  sphinx-lm         ds 2                                   11/56    0.173
  sphinx-lm         fwdflat off                            15/56    0.141
  sphinx-lm         maxhmmpf 3000, beam 1e-40, fwdflat off 15/56    0.151
  sphinx-agent-lm   defaults (chosen)                      38/56    0.044
  sphinx-agent-lm   fwdflat off                            38/56    0.044
  sphinx-agent-lm   ds 2                                   37/56    0.030
  sphinx-agent-lm   maxhmmpf 3000                          38/56    0.046
  ================  =====================================  =======  =======

  ``-ds 2`` (frame downsampling) always cost accuracy (badly on the general LM); ``-topn`` and
  ``maxhmmpf`` barely move the small searches; only the general LM gains from pruning. Partials
  are computed every ``PARTIAL_MS`` of audio, not per 20 ms frame (``hyp()`` backtraces).
  The same sample with the *untuned* default ``cmninit`` and the nested amount grammar:
  grammar 26/52, agent LM 36/56, general LM 24/56.

- Second round, on the ASR benchmark's *training* corpus (``bench/asr_arbiter.py``, seed 1, 96
  closed answers with noise and packet loss; CPU = s per audio second). The CPU sink was not the
  search but ``bestpath``: the lattice pass at the end of each utterance cost the grammar engine
  6.3 s/s on spelled names and 0.6 s/s on digits. Without it the grammar engine got 48/96 right
  (44/96 with it) at 0.058 s/s (1.1 s/s with it). The word confidences are then no longer lattice
  posteriors (see ``parley.speech.arbiter.CONFIDENCE_WEIGHT``). Other settings, on 3 spelled
  names: narrower beams (1e-30/1e-30/1e-20) 2.2 → 0.14 s/s, ``maxhmmpf`` 1500 no change,
  ``fsgusefiller`` off 0.5 s/s but 15/96 right overall (silence and noise must be absorbed).
  Agent LM: ``bestpath`` off 33/96 (34/96) at 0.085 s/s, also ``fwdflat`` off 33/96 at 0.060.
  Counted digits as a direct FSG (``grammar.py``): digits 0.125 → 0.031 s/s, 3 → 4/12 right;
  phone numbers 2 → 3/12 ("double" now allowed in 11-digit numbers).
  A second grammar engine with another front end (default ``cmninit``, ``lw`` 10, or
  ``remove_noise`` off) was right on at most 1 of 84 answers the first one missed: decoder
  variants make the same acoustic mistakes, so they add no diversity for the arbiter.
- Third round, the turn-latency bench's digit answers (flite slt, G.711, the server's VAD and early
  close; 240 answers of 4 and 6 digits): ``silprob`` 0.05 (default 0.005: a pause between digits
  costs the search less): 203 → 222/240 exact. On the arbiter bench's evaluation corpus (seed 2,
  34 per closed type) every type kept its score (phone numbers 5 → 6/34): chosen.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pocketsphinx
import soxr
from pocketsphinx import Decoder
from pocketsphinx.lm import ArpaBoLM

from parley.speech.engines import grammar as grammar_mod
from parley.speech.engines.sphinx_log import log_path
from parley.speech.types import TELEPHONE_RATE, Hypothesis, Question, SlotType, WordTiming

MODEL_RATE = 16000
FRAME_RATE = 100  # pocketsphinx frames per second (-frate)
MODEL_DIR = Path(pocketsphinx.get_model_path()) / "en-us"
DICTIONARY = str(MODEL_DIR / "cmudict-en-us.dict")

# Cepstral mean of flite voices after the 8 kHz G.711 round trip, upsampled (see module docstring).
TELEPHONE_CMNINIT = "40.0,24.3,-35.5,38.0,-17.9,-2.4,2.0,-27.7,18.2,-6.1,2.5,6.3,-12.9"

# Idle decoders kept per engine and process: as many as the sessions one decode process runs at once,
# or every turn above that creates a decoder (0.1-0.5 s of CPU, the turn's answer waits for it).
MAX_IDLE_DECODERS = 16

# How often a session asks for a partial (``hyp()`` backtraces the search: not free per 20 ms frame).
PARTIAL_MS = 100

# Decoder settings per engine, chosen by measurement (module docstring).
TUNING: dict[str, dict[str, Any]] = {
    "sphinx-lm": {"maxhmmpf": 3000, "beam": 1e-40},
    "sphinx-grammar": {"bestpath": False, "silprob": 0.05},
    "sphinx-agent-lm": {"bestpath": False, "fwdflat": False},
}

_FILLER = re.compile(r"^(<s>|</s>|<sil>|\(NULL\)|\[.*\]|\+\+.*\+\+)$")  # (NULL): an FSG's empty move
_ALT = re.compile(r"\(\d+\)$")


@dataclass(slots=True)
class _PooledDecoder:
    decoder: Decoder
    searches: set[str] = field(default_factory=set)
    active: str = "_default"  # ``current_search()`` crashes on a decoder without any search


class DecoderPool:
    """Idle decoders of one configuration, shared by an engine's sessions (thread-safe)."""

    def __init__(self, make: Callable[[], Decoder], max_idle: int = MAX_IDLE_DECODERS) -> None:
        self._make = make
        self._idle: list[_PooledDecoder] = []
        self._lock = threading.Lock()
        self.max_idle = max_idle
        self.created = 0

    def acquire(self) -> _PooledDecoder:
        """An idle decoder, or a new one (slow: 0.1-0.5 s) when none is idle."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
            self.created += 1
        return _PooledDecoder(self._make())

    def release(self, pooled: _PooledDecoder) -> None:
        """Give a decoder back (dropped when ``max_idle`` are already idle)."""
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(pooled)

    def warm(self, count: int = 1) -> None:
        """Create decoders ahead of the first call, until ``count`` are idle."""
        while len(self._idle) < min(count, self.max_idle):
            self.release(_PooledDecoder(self._make()))


@dataclass(frozen=True, slots=True)
class _Search:
    """A named search and how to install it into a decoder that lacks it."""

    name: str
    install: Callable[[Decoder], None]


def _to_int16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


def _confidence(words: Iterable[WordTiming]) -> float:
    probs = [max(w.confidence, 1e-6) for w in words]
    if not probs:
        return 0.0
    return float(min(1.0, math.exp(sum(math.log(p) for p in probs) / len(probs))))


class SphinxSession:
    """One utterance on a pooled decoder; see the module docstring."""

    def __init__(self, engine: _SphinxEngine, search: _Search) -> None:
        self._engine = engine
        self._search = search
        self._pooled: _PooledDecoder | None = None
        # float32, not int16: libsoxr dithers integer output with a random seed, which made every run
        # decode differently (measured: 3 different transcripts of one utterance in 5 runs).
        self._resampler = soxr.ResampleStream(TELEPHONE_RATE, MODEL_RATE, 1, dtype="float32")
        self._text = ""
        self._samples = 0
        self._cpu = 0.0
        self._finished = False
        self._next_partial = 0
        self._lock = threading.Lock()  # close() may come from another thread while a feed runs

    def _decoder(self) -> Decoder:
        if self._pooled is None:
            pooled = self._engine.pool.acquire()
            try:
                if self._search.name not in pooled.searches:
                    self._search.install(pooled.decoder)
                    pooled.searches.add(self._search.name)
                dec = pooled.decoder
                if pooled.active != self._search.name:
                    dec.activate_search(self._search.name)
                    pooled.active = self._search.name
                dec.reinit_feat()  # fresh front end: live CMN history made results depend on the last call
                dec.set_cmn(self._engine.cmninit)
                dec.start_utt()
            except Exception:
                self._engine.pool.release(pooled)
                raise
            self._pooled = pooled
        return self._pooled.decoder

    def feed(self, pcm: np.ndarray) -> Hypothesis | None:
        """Decode 8 kHz int16 audio; a partial hypothesis when the best text changed."""
        with self._lock:
            return self._feed(pcm)

    def _feed(self, pcm: np.ndarray) -> Hypothesis | None:
        if self._finished:
            raise RuntimeError("session already finished")
        if len(pcm) == 0:
            return None
        dec = self._decoder()  # not counted: borrowing/creating a decoder is set-up, not decoding
        t0 = time.thread_time()
        up = _to_int16(self._resampler.resample_chunk(np.asarray(pcm, dtype=np.float32)))
        self._samples += len(pcm)
        if len(up):
            dec.process_raw(up.tobytes(), no_search=False, full_utt=False)
        due = self._samples >= self._next_partial
        if due:
            self._next_partial = self._samples + self._engine.partial_samples
            hyp = dec.hyp()
            text = hyp.hypstr if hyp is not None else ""
        self._cpu += time.thread_time() - t0
        if not due or text == self._text:
            return None
        self._text = text
        return Hypothesis(
            engine=self._engine.name,
            text=text,
            confidence=0.0,  # no lattice yet on partials
            is_final=False,
            audio_seconds=self._samples / TELEPHONE_RATE,
            cpu_seconds=self._cpu,
        )

    def close(self) -> None:
        """Abandon the utterance (the arbiter no longer needs it) and give the decoder back to the pool:
        a dropped session must not take its decoder with it (a new one costs 0.1-0.5 s of CPU)."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            pooled, self._pooled = self._pooled, None
            if pooled is not None:
                try:
                    pooled.decoder.end_utt()
                except Exception:  # a decoder in an unknown state is not reused
                    return
                self._engine.pool.release(pooled)

    def finish(self) -> Hypothesis:
        """End the utterance: final text, word timings and confidence; returns the decoder to the pool."""
        with self._lock:
            return self._finish()

    def _finish(self) -> Hypothesis:
        if self._finished:
            raise RuntimeError("session already finished")
        self._finished = True
        if self._pooled is None:
            return Hypothesis(engine=self._engine.name, text="", confidence=0.0, is_final=True)
        t0 = time.thread_time()
        dec = self._pooled.decoder
        try:
            tail = _to_int16(self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
            if len(tail):
                dec.process_raw(tail.tobytes(), no_search=False, full_utt=False)
            best_so_far = dec.hyp()  # a grammar's path may not reach a final state: then keep this
            dec.end_utt()
            hyp = dec.hyp()
            text = hyp.hypstr if hyp is not None else ""
            unfinished = not text and best_so_far is not None and bool(best_so_far.hypstr)
            if unfinished:
                text = best_so_far.hypstr
            words = tuple(
                WordTiming(
                    word=_ALT.sub("", seg.word),
                    start=seg.start_frame / FRAME_RATE,
                    end=(seg.end_frame + 1) / FRAME_RATE,
                    confidence=float(min(1.0, max(0.0, seg.prob))),
                )
                for seg in dec.seg() or ()  # None when no path reached the grammar's end
                if not _FILLER.match(seg.word)
            )
        finally:
            self._engine.pool.release(self._pooled)
            self._pooled = None
        self._cpu += time.thread_time() - t0
        return Hypothesis(
            engine=self._engine.name,
            text=text,
            confidence=_confidence(words) if text and not unfinished else 0.0,
            is_final=True,
            words=words,
            audio_seconds=self._samples / TELEPHONE_RATE,
            cpu_seconds=self._cpu,
        )


class _SphinxEngine:
    """Shared engine plumbing: decoder configuration, pool and session creation."""

    name = "sphinx"
    with_lm = False
    revision = "3"  # bumped when decoding changes without a settings change (benchmark caches)

    def __init__(
        self,
        max_idle: int = MAX_IDLE_DECODERS,
        cmninit: str = TELEPHONE_CMNINIT,
        partial_ms: int = PARTIAL_MS,
        **config: Any,
    ) -> None:
        self.cmninit = cmninit
        self.partial_samples = partial_ms * TELEPHONE_RATE // 1000
        settings: dict[str, Any] = {
            "hmm": str(MODEL_DIR / "en-us"),
            "dict": DICTIONARY,
            "samprate": MODEL_RATE,
            "cmninit": cmninit,
            "loglevel": "ERROR",
            **TUNING.get(self.name, {}),
            **config,
        }
        if not self.with_lm:
            settings["lm"] = None
        self.settings = settings
        # the C library's log lines go to Python logging (DEBUG), not to stderr: sphinx_log
        self.pool = DecoderPool(lambda: Decoder(**self.settings, logfn=log_path()), max_idle=max_idle)

    def supports(self, question: Question) -> bool:
        """Whether this engine should listen for answers to ``question``."""
        return True

    def prepare(self, question: Question) -> None:
        """Compile what ``question`` needs ahead of the audio."""
        self._search(question)

    def start(self, question: Question) -> SphinxSession:
        """Open a streaming session (the decoder is borrowed on the first audio)."""
        return SphinxSession(self, self._search(question))

    def _search(self, question: Question) -> _Search:
        raise NotImplementedError


class SphinxLmEngine(_SphinxEngine):
    """pocketsphinx with its general en-us LM: open vocabulary, weak on digits."""

    name = "sphinx-lm"
    with_lm = True

    def _search(self, question: Question) -> _Search:
        # The decoder's own LM search, created with it; nothing to install.
        return _Search("_default", lambda dec: None)


class SphinxGrammarEngine(_SphinxEngine):
    """pocketsphinx FSG search on a JSGF grammar compiled from each closed question."""

    name = "sphinx-grammar"
    revision = "7"  # silprob; alternate pronunciation of a leading "seven"; no bare "yeah" carrier

    def __init__(self, max_idle: int = MAX_IDLE_DECODERS, **config: Any) -> None:
        super().__init__(max_idle=max_idle, **config)
        self._grammars: dict[Question, grammar_mod.Grammar] = {}
        self._lock = threading.Lock()

    def supports(self, question: Question) -> bool:
        """Closed questions only; NAME/CHOICE need options (or phrases) to build a grammar from."""
        if question.slot_type is SlotType.FREE:
            return False
        if question.slot_type in (SlotType.NAME, SlotType.CHOICE):
            return bool(question.options or question.phrases)
        return True

    def grammar(self, question: Question) -> grammar_mod.Grammar:
        """The compiled grammar of ``question`` (cached per distinct question)."""
        with self._lock:
            cached = self._grammars.get(question)
        if cached is None:
            cached = grammar_mod.compile_question(question, DICTIONARY)
            with self._lock:
                self._grammars[question] = cached
        return cached

    def _search(self, question: Question) -> _Search:
        if not self.supports(question):
            raise ValueError(f"{self.name} does not handle {question.slot_type} questions")
        g = self.grammar(question)

        return _Search(g.name, g.install)


@functools.cache
def _cmudict_lines() -> dict[str, list[str]]:
    """The pocketsphinx dictionary's lines by word (alternates such as ``read(2)`` under ``read``)."""
    lines: dict[str, list[str]] = {}
    with open(DICTIONARY, encoding="utf-8") as f:
        for line in f:
            head = line.split(" ", 1)[0]
            lines.setdefault(head.split("(", 1)[0], []).append(line.rstrip("\n"))
    return lines


def _slot_sentences(slot_type: SlotType) -> list[str]:
    """Generic answer sentences per slot type, so the agent LM knows the slot vocabulary."""
    g = grammar_mod
    digits = " ".join(g.DIGIT_WORDS)
    if slot_type in (SlotType.DIGITS, SlotType.PHONE):
        backwards = " ".join(reversed(g.DIGIT_WORDS))
        return [digits, f"double {digits}", f"triple {digits}", f"my number is {digits}", backwards]
    if slot_type is SlotType.YES_NO:
        return list(g.YES_WORDS + g.NO_WORDS)
    if slot_type is SlotType.SPELLED:
        return [" ".join(g.LETTERS), *(f"{c} as in {w}" for c, w in zip(g.LETTERS, g.NATO, strict=True))]
    if slot_type is SlotType.DATE:
        return [
            *(f"the {o} of {m}" for o, m in zip(g.ORDINAL_UNITS * 2, g.MONTHS, strict=False)),
            *(f"{m} {o}" for m, o in zip(g.MONTHS, (*g.ORDINAL_TEENS, "twentieth"), strict=False)),
            *(f"next {d}" for d in g.WEEKDAYS),
            *(f"on {d}" for d in g.WEEKDAYS),
            "today",
            "tomorrow",
            "yesterday",
            "twenty first",
            "thirty first",
        ]
    if slot_type is SlotType.TIME:
        return [
            *(f"half past {h}" for h in g.HOURS),
            *(f"quarter to {h} {p}" for h, p in zip(g.HOURS, g.DAY_PARTS * 2, strict=False)),
            *(f"{h} thirty" for h in g.HOURS),
            *(f"{h} o'clock" for h in g.HOURS),
            *(f"at {h} {t} {p}" for h, t, p in zip(g.HOURS, g.TEENS, g.DAY_PARTS * 2, strict=False)),
            "noon",
            "midday",
        ]
    if slot_type is SlotType.AMOUNT:
        return [
            *(f"{u} hundred and {t} {c}" for u, t, c in zip(g.UNITS, g.TENS, g.CURRENCIES, strict=False)),
            *(
                f"{t} {u} {c} and {t} cents"
                for t, u, c in zip(g.TENS, g.UNITS, g.CURRENCIES[::2], strict=False)
            ),
            *(f"{t} pounds {t} pence" for t in g.TEENS),
            "one thousand two hundred pounds",
        ]
    return []


def build_arpa(sentences: Iterable[str]) -> str:
    """An ARPA trigram LM (text) over ``sentences``, with sentence boundaries."""
    corpus = "\n".join(" ".join(t) for s in sentences if (t := grammar_mod.normalise(s)))
    if not corpus:
        raise ValueError("no sentences to build a language model from")
    lm = ArpaBoLM(text=corpus, add_start=True, discount_mass=0.5)
    lm.compute()
    out = io.StringIO()
    lm.write(out)
    return out.getvalue()


class SphinxAgentLmEngine(_SphinxEngine):
    """pocketsphinx with a small trigram LM built from the agent's own texts (all slot types).

    The corpus grows with every ``prepare``d question (its prompt, phrases, options and generic
    answers for its slot type) plus ``phrases`` given at construction; the LM is rebuilt when the
    corpus changed, once, before the next session.
    """

    name = "sphinx-agent-lm"

    def __init__(self, phrases: Iterable[str] = (), max_idle: int = MAX_IDLE_DECODERS, **config: Any) -> None:
        super().__init__(max_idle=max_idle, **config)
        self._corpus: dict[str, None] = dict.fromkeys(phrases)
        self._seen: set[Question] = set()
        self._lock = threading.Lock()
        self._dir = tempfile.TemporaryDirectory(prefix="parley-agent-lm-")
        self._current: _Search | None = None
        self.dictionary_misses: set[str] = set()

    def add_phrases(self, phrases: Iterable[str]) -> None:
        """Add agent texts to the LM corpus (the LM is rebuilt lazily)."""
        with self._lock:
            before = len(self._corpus)
            self._corpus.update(dict.fromkeys(phrases))
            if len(self._corpus) != before:
                self._current = None

    def _learn(self, question: Question) -> None:
        if question in self._seen:
            return
        self._seen.add(question)
        texts = [question.prompt, *question.phrases, *question.options, *_slot_sentences(question.slot_type)]
        if question.slot_type is SlotType.NAME:
            texts += [f"my name is {o}" for o in question.options]
        self.add_phrases(t for t in texts if t)

    def _search(self, question: Question) -> _Search:
        self._learn(question)
        with self._lock:
            if self._current is not None:
                return self._current
            corpus = list(self._corpus)
        if not corpus:
            corpus = _slot_sentences(SlotType.YES_NO)
        arpa = build_arpa(corpus)
        entries: list[str] = []  # the LM's words only (cmudict lines, else espeak-ng's phones)
        for word in sorted({w for s in corpus for w in grammar_mod.normalise(s)}):
            known = _cmudict_lines().get(word)
            phones = None if known else grammar_mod.g2p(word)
            if known:
                entries += known
            elif phones is None:
                self.dictionary_misses.add(word)
            else:
                entries.append(f"{word} {phones}")
        name = "lm" + hashlib.sha1(arpa.encode()).hexdigest()[:12]
        path = Path(self._dir.name) / f"{name}.arpa"
        path.write_text(arpa, encoding="utf-8")
        dictionary = Path(self._dir.name) / f"{name}.dict"
        dictionary.write_text("\n".join(entries) + "\n", encoding="utf-8")

        def install(dec: Decoder) -> None:
            # A dictionary of the LM's words: with the whole cmudict loaded, pocketsphinx 5.1's
            # add_lm_file costs ~13 s of CPU even for this tiny LM; with these words, ~2 ms.
            dec.load_dict(str(dictionary))
            dec.add_lm_file(name, str(path))

        search = _Search(name, install)
        with self._lock:
            self._current = search
        return search
