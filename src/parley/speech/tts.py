"""Text-to-speech plugins (flite, espeak-ng, festival) streaming 8 kHz audio, and a prompt cache.

Why it looks like this:

* Engines are Debian binaries run as asyncio subprocesses, so synthesis never blocks the event
  loop and a cancelled prompt (barge-in, hang-up) kills its process at once.
* The first audio must leave before the whole prompt is rendered. flite and festival only write a
  WAV once the whole input is synthesised, so the text is split into sentences (and long sentences
  at commas) and rendered as a pipeline: clause n+1 is launched as soon as clause n is ready, while
  clause n is being yielded. espeak-ng writes its WAV to stdout as it synthesises, so one process
  renders the whole text and its stdout is resampled and yielded as it arrives.
* Engines render at 16 kHz (flite, festival) or 22.05 kHz (espeak-ng); one soxr ``ResampleStream``
  per prompt takes that to 8 kHz so the clauses join without clicks. soxr is fed float32 in
  fixed-size blocks and rounded back to int16 here (its own int16 output is randomly dithered), so
  the output is byte-identical however the pipe happened to deliver the input (the corpus
  generator depends on that).
* Static prompts should cost nothing after their first use: :class:`PromptCache` keeps rendered
  8 kHz audio under a content address (sha256 of engine, voice, rate, pitch, text and the output
  format version), written atomically and checked against a digest on every read.

Time to first chunk vs whole render of a 3-sentence prompt (136 characters, 8–10 s of speech),
median of 5 runs on this machine kind (2 cores, load ≈ 2 from parallel work; ``bench/tts_latency.py``).
"one process" is the same text rendered by a single engine call, which yields nothing until done:

==============================  ===========  ============  ===========
engine:voice                    first chunk  whole render  one process
==============================  ===========  ============  ===========
flite:slt                       59 ms        227 ms        130 ms
flite:kal16                     10 ms        31 ms         10 ms
flite:awb                       67 ms        227 ms        130 ms
flite:rms                       78 ms        235 ms        140 ms
festival:kal_diphone            312 ms       1023 ms       370 ms
festival:cmu_us_slt_arctic_hts  391 ms       1238 ms       640 ms
espeak-ng:en-us (streamed)      23 ms        39 ms         15 ms
==============================  ===========  ============  ===========

Splitting costs one engine start-up per clause (≈ 30 ms for flite's clustergen voices, ≈ 300 ms
for festival), so the whole render takes longer, but every clause is still rendered many times
faster than it plays, and the caller hears the first words sooner.

Pitch is honoured by flite's slt, kal16 and awb voices (``f0_shift``), festival's kal_diphone and
ked_diphone, and espeak-ng; flite's rms and festival's HTS voice ignore it (see :meth:`supports_pitch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import tempfile
from collections import deque
from collections.abc import AsyncIterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import soxr

from parley.speech.types import TELEPHONE_RATE

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "parley.tts_engines"
CACHE_FORMAT = "pcm_s16le/8000/mono/v1"  # part of every cache key: bump when output changes
DEFAULT_CHUNK = 1600  # samples per chunk served from the cache (200 ms)


class TtsError(RuntimeError):
    """An engine failed to synthesise (bad voice, binary missing, non-zero exit)."""


@runtime_checkable
class TtsEngine(Protocol):
    """A speech synthesiser plugin (entry point group ``parley.tts_engines``)."""

    name: str

    def voices(self) -> list[str]:
        """Voices this engine can speak with on this machine."""
        ...

    def stream(
        self, text: str, voice: str | None = None, rate: float = 1.0, pitch: float = 1.0
    ) -> AsyncIterator[np.ndarray]:
        """Yield 8 kHz mono int16 chunks of ``text`` spoken by ``voice`` (an async generator).

        ``rate`` and ``pitch`` are factors (1.0 = the voice's own; 1.25 = 25 % faster / higher).
        """
        ...


# --- text splitting --------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")
_ABBREVIATIONS = frozenset(
    {"mr.", "mrs.", "ms.", "dr.", "st.", "prof.", "no.", "vs.", "etc.", "e.g.", "i.e."}
)


def split_clauses(text: str, max_chars: int = 60) -> list[str]:
    """Split ``text`` into sentences, and sentences longer than ``max_chars`` at , ; and :."""
    sentences: list[str] = []
    for piece in _SENTENCE_END.split(text.strip()):
        piece = piece.strip()
        if not piece:
            continue
        last_word = sentences[-1].rsplit(None, 1)[-1].lower() if sentences else ""
        if last_word in _ABBREVIATIONS:
            sentences[-1] = f"{sentences[-1]} {piece}"
        else:
            sentences.append(piece)
    clauses: list[str] = []
    for sentence in sentences:
        if len(sentence) <= max_chars:
            clauses.append(sentence)
            continue
        current = ""
        for part in _CLAUSE_END.split(sentence):
            if current and len(current) + 1 + len(part) > max_chars:
                clauses.append(current)
                current = part
            else:
                current = f"{current} {part}" if current else part
        if current:
            clauses.append(current)
    return clauses


# --- audio helpers ---------------------------------------------------------------------------


def parse_wav_header(data: bytes) -> tuple[int, int] | None:
    """(sample rate, offset of the PCM data) of a mono 16-bit RIFF header, or None if incomplete.

    Size fields are ignored: streaming writers (espeak-ng) put 0x7fffffff there.
    """
    if len(data) < 12:
        return None
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise TtsError("engine output is not a RIFF/WAVE stream")
    offset = 12
    rate = 0
    while len(data) >= offset + 8:
        chunk_id = data[offset : offset + 4]
        size = struct.unpack_from("<I", data, offset + 4)[0]
        if chunk_id == b"data":
            if not rate:
                raise TtsError("WAV data chunk before its fmt chunk")
            return rate, offset + 8
        if len(data) < offset + 8 + size:
            return None
        if chunk_id == b"fmt ":
            fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, offset + 8)
            if fmt != 1 or channels != 1 or bits != 16:
                raise TtsError(f"unsupported WAV format {fmt}/{channels} ch/{bits} bit")
        offset += 8 + size + (size & 1)
    return None


class Resampler:
    """Streaming resampler to 8 kHz int16, deterministic: fixed soxr blocks, float32, no dither."""

    __slots__ = ("_block", "_pending", "_stream", "in_rate")

    def __init__(self, in_rate: int, out_rate: int = TELEPHONE_RATE, block: int | None = None) -> None:
        self.in_rate = in_rate
        self._stream = (
            None if in_rate == out_rate else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32")
        )
        self._block = block or max(1, in_rate // 10)
        self._pending = np.empty(0, dtype=np.int16)

    def _convert(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return block
        out = self._stream.resample_chunk(block.astype(np.float32), last=last)
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)

    def push(self, pcm: np.ndarray) -> list[np.ndarray]:
        """Add native-rate samples; returns the 8 kHz chunks that became ready."""
        buf = np.concatenate((self._pending, pcm.astype(np.int16, copy=False)))
        whole = len(buf) - len(buf) % self._block
        self._pending = buf[whole:]
        out = []
        for start in range(0, whole, self._block):
            chunk = self._convert(buf[start : start + self._block])
            if chunk.size:
                out.append(chunk)
        return out

    def flush(self) -> list[np.ndarray]:
        """End of input: the remaining output."""
        pending, self._pending = self._pending, np.empty(0, dtype=np.int16)
        chunk = self._convert(pending, last=True)
        return [chunk] if chunk.size else []


# --- engines ---------------------------------------------------------------------------------


class SubprocessTts:
    """Common machinery: spawning, counting and reaping engine processes."""

    name = ""
    binary = ""
    default_voice = ""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or type(self).binary
        self.launches = 0  # processes started (tests assert a cache hit starts none)
        self._procs: set[asyncio.subprocess.Process] = set()
        self._voices: list[str] | None = None

    @property
    def running(self) -> int:
        """Engine processes alive right now."""
        return sum(1 for proc in self._procs if proc.returncode is None)

    def available(self) -> bool:
        """Whether the engine's binary is installed."""
        return shutil.which(self.binary) is not None

    def supports_pitch(self, voice: str) -> bool:
        """Whether ``pitch`` changes this voice's output."""
        return True

    def voices(self) -> list[str]:
        """Voices this engine can speak with on this machine (cached)."""
        if self._voices is None:
            self._voices = self._list_voices() if self.available() else []
        return list(self._voices)

    def _list_voices(self) -> list[str]:
        raise NotImplementedError

    def _voice(self, voice: str | None) -> str:
        voice = voice or self.default_voice
        if voice not in self.voices():
            raise TtsError(f"{self.name} has no voice {voice!r} (have {self.voices()})")
        return voice

    async def _spawn(self, *args: str, stdin: bool = False) -> asyncio.subprocess.Process:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary,
                *args,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError as exc:
            raise TtsError(f"{self.binary} is not installed") from exc
        self.launches += 1
        self._procs.add(proc)
        return proc

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        """Kill ``proc`` if it still runs and wait for it (also when we are being cancelled)."""
        self._procs.discard(proc)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())  # if we are cancelled again, the wait still reaps it


class ClauseTts(SubprocessTts):
    """An engine that renders whole inputs: clauses are rendered as a pipeline (see module doc)."""

    async def _render(self, clause: str, voice: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        """Render one clause: (native-rate int16 samples, sample rate)."""
        raise NotImplementedError

    async def _run(self, *args: str, stdin: bytes | None = None) -> bytes:
        proc = await self._spawn(*args, stdin=stdin is not None)
        try:
            out, err = await proc.communicate(stdin)
        finally:
            await self._reap(proc)
        if proc.returncode != 0:
            raise TtsError(f"{self.binary} exited {proc.returncode}: {err.decode(errors='replace').strip()}")
        return out

    @staticmethod
    def _decode_wav(data: bytes) -> tuple[np.ndarray, int]:
        header = parse_wav_header(data)
        if header is None:
            raise TtsError("truncated WAV from engine")
        rate, offset = header
        end = offset + (len(data) - offset) // 2 * 2
        return np.frombuffer(data[offset:end], dtype="<i2").astype(np.int16), rate

    async def stream(
        self, text: str, voice: str | None = None, rate: float = 1.0, pitch: float = 1.0
    ) -> AsyncIterator[np.ndarray]:
        """Yield 8 kHz int16 chunks; clause n+1 renders while clause n is being yielded."""
        voice = self._voice(voice)
        clauses = deque(split_clauses(text))
        pending: deque[asyncio.Task[tuple[np.ndarray, int]]] = deque()

        def launch_next() -> None:
            if clauses:
                pending.append(asyncio.ensure_future(self._render(clauses.popleft(), voice, rate, pitch)))

        resampler: Resampler | None = None
        try:
            launch_next()
            while pending:
                pcm, native_rate = await pending.popleft()
                launch_next()
                if resampler is None:
                    resampler = Resampler(native_rate)
                elif resampler.in_rate != native_rate:
                    raise TtsError(f"{self.name} changed sample rate mid-prompt")
                for chunk in resampler.push(pcm):
                    yield chunk
            for chunk in resampler.flush() if resampler is not None else []:
                yield chunk
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


class FliteTts(ClauseTts):
    """CMU flite (Debian ``flite``): voices slt, kal16, awb, rms (16 kHz) and kal (8 kHz)."""

    name = "flite"
    binary = "flite"
    default_voice = "slt"
    _LIMITED_DOMAIN = frozenset({"awb_time"})  # speaks clock times only
    _PITCHLESS = frozenset({"rms"})

    def _list_voices(self) -> list[str]:
        import subprocess

        out = subprocess.run([self.binary, "-lv"], capture_output=True, text=True, timeout=10).stdout
        listed = out.partition(":")[2].split()
        return [voice for voice in listed if voice not in self._LIMITED_DOMAIN]

    def supports_pitch(self, voice: str) -> bool:
        """rms ignores f0 features; the other voices follow ``f0_shift``."""
        return voice not in self._PITCHLESS

    async def _render(self, clause: str, voice: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        args = ["-voice", voice]
        if rate != 1.0:
            args += ["--setf", f"duration_stretch={1.0 / rate:.4f}"]
        if pitch != 1.0:
            args += ["--setf", f"f0_shift={pitch:.4f}"]
        # A temp file, not /dev/stdout: under uvloop a subprocess's stdout is a socketpair, which
        # flite cannot open by path (it then exits 0 with no audio).
        with tempfile.TemporaryDirectory(prefix="parley-tts-") as tmp:
            out = Path(tmp) / "clause.wav"
            await self._run(*args, "-t", clause, "-o", str(out))
            return self._decode_wav(out.read_bytes())


class FestivalTts(ClauseTts):
    """Festival's ``text2wave`` (Debian ``festival`` + ``festvox-kallpc16k``/``festvox-us-slt-hts``).

    Each clause is a festival process (about 0.35 s of start-up), so festival is for corpora and
    cached prompts rather than live replies.
    """

    name = "festival"
    binary = "text2wave"
    default_voice = "kal_diphone"
    voice_root = Path("/usr/share/festival/voices")
    # int_lr target mean/std of voices with LR intonation
    _F0 = {"kal_diphone": (105, 14), "ked_diphone": (105, 15)}

    def _list_voices(self) -> list[str]:
        if not self.voice_root.is_dir():
            return []
        return sorted(path.name for path in self.voice_root.glob("*/*") if path.is_dir())

    def supports_pitch(self, voice: str) -> bool:
        """Only voices driven by linear-regression intonation targets (kal_diphone, ked_diphone)."""
        return voice in self._F0

    def _setup(self, voice: str, rate: float, pitch: float) -> str:
        forms = [f"(voice_{voice})"]
        if rate != 1.0:
            if voice.endswith("_hts"):
                forms.append(
                    f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {rate:.4f}))))'
                )
            else:
                forms.append(f"(Parameter.set 'Duration_Stretch {1.0 / rate:.4f})")
        if pitch != 1.0 and voice in self._F0:
            mean, std = self._F0[voice]
            forms.append(
                f"(set! int_lr_params '((target_f0_mean {mean * pitch:.2f}) (target_f0_std {std * pitch:.2f})"
                " (model_f0_mean 170) (model_f0_std 34)))"
            )
        return f"(begin {' '.join(forms)})"

    async def _render(self, clause: str, voice: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        with tempfile.TemporaryDirectory(prefix="parley-tts-") as tmp:  # see FliteTts: no /dev/stdout
            out = Path(tmp) / "clause.wav"
            await self._run("-eval", self._setup(voice, rate, pitch), "-o", str(out), stdin=clause.encode())
            return self._decode_wav(out.read_bytes())


class EspeakTts(SubprocessTts):
    """espeak-ng (Debian ``espeak-ng``): formant synthesis streamed from stdout at 22.05 kHz.

    Too robotic for pocketsphinx (1/36 right): a hard case for corpora, not a caller-facing voice.
    """

    name = "espeak-ng"
    binary = "espeak-ng"
    default_voice = "en-us"
    base_wpm = 175
    base_pitch = 50
    read_size = 8192

    def _list_voices(self) -> list[str]:
        import subprocess

        out = subprocess.run(
            [self.binary, "--voices=en"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines()
        voices = []
        for line in out[1:]:
            fields = line.split()
            # mbrola voices need the mbrola binary; "!v/..." entries are variants (voice+variant)
            if len(fields) >= 5 and not fields[4].startswith(("mb/", "!v/")):
                voices.append(fields[1])
        return sorted(set(voices))

    def _voice(self, voice: str | None) -> str:
        voice = voice or self.default_voice
        if voice.partition("+")[0] not in self.voices():  # "en-us+f3": a variant of en-us
            raise TtsError(f"espeak-ng has no voice {voice!r}")
        return voice

    async def stream(
        self, text: str, voice: str | None = None, rate: float = 1.0, pitch: float = 1.0
    ) -> AsyncIterator[np.ndarray]:
        """Yield 8 kHz int16 chunks resampled from espeak-ng's stdout as it is written."""
        voice = self._voice(voice)
        wpm = max(80, min(450, round(self.base_wpm * rate)))
        level = max(0, min(99, round(self.base_pitch * pitch)))
        proc = await self._spawn("--stdout", "-v", voice, "-s", str(wpm), "-p", str(level), stdin=True)
        try:
            assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
            proc.stdin.write(text.encode() + b"\n")
            await proc.stdin.drain()
            proc.stdin.close()
            head = b""
            header = None
            while header is None:
                data = await proc.stdout.read(self.read_size)
                if not data:
                    break
                head += data
                header = parse_wav_header(head)
            resampler: Resampler | None = None
            if header is not None:
                native_rate, offset = header
                resampler = Resampler(native_rate)
                carry = head[offset:]
                while True:
                    whole = len(carry) - len(carry) % 2
                    for chunk in resampler.push(np.frombuffer(carry[:whole], dtype="<i2").astype(np.int16)):
                        yield chunk
                    carry = carry[whole:]
                    data = await proc.stdout.read(self.read_size)
                    if not data:
                        break
                    carry += data
            err = await proc.stderr.read()
            if await proc.wait() != 0 or resampler is None:
                raise TtsError(f"espeak-ng exited {proc.returncode}: {err.decode(errors='replace').strip()}")
            for chunk in resampler.flush():
                yield chunk
        finally:
            await self._reap(proc)


class FallbackTts:
    """Speaks with the first of several (engine, voice) choices that works on each prompt.

    A choice that fails before its first audio (binary missing or broken, unknown voice, a crash)
    hands the prompt to the next choice, and the failure is logged with the engine and the error's
    kind, never the prompt's text (it may hold caller data). A choice that fails after its first
    audio ends the prompt there: starting it again in another voice would repeat words. The first
    choice is typically a :class:`CachedTts`, whose prompt cache serves the prompts it rendered
    before (pre-rendered audio) even while its engine fails.
    """

    def __init__(self, choices: list[tuple[TtsEngine, str | None]]) -> None:
        if not choices:
            raise ValueError("FallbackTts needs at least one engine")
        self.choices = choices
        self.name = choices[0][0].name
        self.failures: dict[str, int] = {}  # "engine:voice" -> prompts it failed on

    def voices(self) -> list[str]:
        """The first engine's voices."""
        return self.choices[0][0].voices()

    async def stream(
        self, text: str, voice: str | None = None, rate: float = 1.0, pitch: float = 1.0
    ) -> AsyncIterator[np.ndarray]:
        """The first choice's audio (``voice`` is the first choice's voice), else the next one's."""
        last = len(self.choices) - 1
        for index, (engine, own_voice) in enumerate(self.choices):
            chosen = voice if index == 0 else own_voice
            started = False
            try:
                async for chunk in engine.stream(text, chosen, rate, pitch):
                    started = True
                    yield chunk
                return
            except Exception as exc:
                name = f"{engine.name}:{chosen or 'default'}"
                self.failures[name] = self.failures.get(name, 0) + 1
                if started or index == last:
                    raise
                log.warning(
                    "TTS %s failed (%s, %d so far): speaking with %s",
                    name,
                    type(exc).__name__,
                    self.failures[name],
                    f"{self.choices[index + 1][0].name}:{self.choices[index + 1][1] or 'default'}",
                )


def available_tts() -> list[str]:
    """Names of the TTS engines registered under ``parley.tts_engines``."""
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_tts(name: str, **options: object) -> TtsEngine:
    """Instantiate the TTS engine registered as ``name`` (entry point group ``parley.tts_engines``)."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()(**options)
    raise LookupError(f"no TTS engine {name!r} (registered: {available_tts()})")


def trim_silence(
    pcm: np.ndarray, *, level: int = 100, lead_ms: int = 20, tail_ms: int | None = None
) -> np.ndarray:
    """``pcm`` without the silence a synthesiser puts before the speech (200-300 ms for flite and
    festival: all of it added to the agent's reply latency), keeping ``lead_ms`` before the first
    sample louder than ``level``; also the trailing silence beyond ``tail_ms`` when given.
    Empty when nothing is louder than ``level``."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > level)
    if not len(loud):
        return pcm[:0]
    per_ms = TELEPHONE_RATE // 1000
    start = max(0, int(loud[0]) - lead_ms * per_ms)
    end = len(pcm) if tail_ms is None else min(len(pcm), int(loud[-1]) + 1 + tail_ms * per_ms)
    return pcm[start:end]


async def render(
    engine: TtsEngine, text: str, voice: str | None = None, rate: float = 1.0, pitch: float = 1.0
) -> np.ndarray:
    """The whole prompt as one 8 kHz int16 array."""
    chunks = [chunk async for chunk in engine.stream(text, voice, rate, pitch)]
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int16)


# --- prompt cache ----------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$PARLEY_CACHE_DIR/tts``, else ``$XDG_CACHE_HOME/parley/tts``, else ``~/.cache/parley/tts``."""
    root = os.environ.get("PARLEY_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "tts"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "parley" / "tts"


class PromptCache:
    """Content-addressed store of rendered 8 kHz int16 prompts: ``<key>.pcm`` + ``<key>.json``.

    Both files are written to a temporary name and renamed into place (pcm first, sidecar last),
    so a reader sees either nothing or complete files; the sidecar's sha256 of the PCM catches
    corrupt or truncated entries, which are deleted and reported as misses.
    """

    def __init__(self, directory: Path | str | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self.failed_puts = 0  # renderings the disk refused (full, read-only): served, not kept

    @staticmethod
    def key(engine: str, voice: str, rate: float, pitch: float, text: str) -> str:
        """The sha256 content address of one rendering."""
        identity = {
            "engine": engine,
            "voice": voice,
            "rate": round(float(rate), 6),
            "pitch": round(float(pitch), 6),
            "text": text,
            "format": CACHE_FORMAT,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def paths(self, key: str) -> tuple[Path, Path]:
        """(pcm, sidecar) paths of ``key``."""
        folder = self.directory / key[:2]
        return folder / f"{key}.pcm", folder / f"{key}.json"

    def get(self, key: str) -> np.ndarray | None:
        """The cached audio, or None (missing, or corrupt and now removed)."""
        pcm_path, meta_path = self.paths(key)
        try:
            meta = json.loads(meta_path.read_text())
            data = pcm_path.read_bytes()
        except (OSError, ValueError):
            self.misses += 1
            return None
        if (
            meta.get("format") != CACHE_FORMAT
            or meta.get("samples") != len(data) // 2
            or len(data) % 2
            or meta.get("sha256") != hashlib.sha256(data).hexdigest()
        ):
            self.corrupt += 1
            self.misses += 1
            for path in (meta_path, pcm_path):
                path.unlink(missing_ok=True)
            return None
        self.hits += 1
        return np.frombuffer(data, dtype="<i2").astype(np.int16)

    def put(self, key: str, pcm: np.ndarray, **info: object) -> None:
        """Store ``pcm`` (8 kHz int16) under ``key``; ``info`` goes into the sidecar."""
        pcm_path, meta_path = self.paths(key)
        pcm_path.parent.mkdir(parents=True, exist_ok=True)
        data = pcm.astype("<i2").tobytes()
        meta = {
            **info,
            "format": CACHE_FORMAT,
            "samples": len(data) // 2,
            "sample_rate": TELEPHONE_RATE,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        self._atomic_write(pcm_path, data)
        self._atomic_write(meta_path, json.dumps(meta, sort_keys=True).encode())

    @staticmethod
    def _atomic_write(path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


class CachedTts:
    """A :class:`TtsEngine` serving prompts from a :class:`PromptCache`, rendering only on a miss."""

    def __init__(
        self, engine: TtsEngine, cache: PromptCache | None = None, chunk: int = DEFAULT_CHUNK
    ) -> None:
        self.engine = engine
        self.cache = cache if cache is not None else PromptCache()
        self.chunk = chunk
        self.name = engine.name

    def voices(self) -> list[str]:
        """The wrapped engine's voices."""
        return self.engine.voices()

    def _key(self, text: str, voice: str | None, rate: float, pitch: float) -> str:
        voice = voice or getattr(self.engine, "default_voice", "") or ""
        return self.cache.key(self.engine.name, voice, rate, pitch, text)

    async def stream(
        self, text: str, voice: str | None = None, rate: float = 1.0, pitch: float = 1.0
    ) -> AsyncIterator[np.ndarray]:
        """Serve a hit in ``chunk``-sample pieces; on a miss stream the engine and store the result."""
        key = self._key(text, voice, rate, pitch)
        cached = await asyncio.to_thread(self.cache.get, key)
        if cached is not None:
            for start in range(0, len(cached), self.chunk):
                yield cached[start : start + self.chunk]
            return
        parts: list[np.ndarray] = []
        async for chunk in self.engine.stream(text, voice, rate, pitch):
            parts.append(chunk)
            yield chunk
        audio = np.concatenate(parts) if parts else np.empty(0, dtype=np.int16)
        info = {"engine": self.engine.name, "voice": voice, "rate": rate, "pitch": pitch, "text": text}
        try:
            await asyncio.to_thread(self.cache.put, key, audio, **info)
        except OSError as exc:  # a full or read-only disk: the prompt was spoken; it is rendered again
            self.cache.failed_puts += 1
            if self.cache.failed_puts == 1 or self.cache.failed_puts % 100 == 0:
                log.warning("prompt cache: %d prompts not stored (%s)", self.cache.failed_puts, exc.strerror)

    async def warm(
        self, texts: list[str], voice: str | None = None, rate: float = 1.0, pitch: float = 1.0
    ) -> int:
        """Render ``texts`` not yet cached (e.g. an agent's static prompts at load); returns how many."""
        rendered = 0
        for text in texts:
            if await asyncio.to_thread(self.cache.get, self._key(text, voice, rate, pitch)) is None:
                await render(self, text, voice, rate, pitch)
                rendered += 1
        return rendered
