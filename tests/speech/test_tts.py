"""TTS plugins through the real Debian engines, and the prompt cache."""

from __future__ import annotations

import asyncio
import json
import subprocess

import numpy as np
import pytest
import soxr

from parley.speech.tts import (
    CachedTts,
    EspeakTts,
    FallbackTts,
    FestivalTts,
    FliteTts,
    PromptCache,
    Resampler,
    TtsEngine,
    TtsError,
    available_tts,
    default_cache_dir,
    load_tts,
    parse_wav_header,
    render,
    split_clauses,
)

PROMPT = (
    "Thank you for calling Parley bank. Your call may be recorded for training purposes. "
    "Please say your account number, one digit at a time."
)
SHORT = "Please say your account number."


def engine_or_skip(name: str, voice: str | None = None) -> TtsEngine:
    engine = load_tts(name)
    if not engine.available():
        pytest.skip(f"{engine.binary} is not installed (apt-get install flite espeak-ng festival)")
    if voice is not None and voice not in engine.voices():
        pytest.skip(f"{name} voice {voice} is not installed")
    return engine


def f0_median(pcm: np.ndarray, rate: int = 8000) -> float:
    """Median autocorrelation pitch of the loud 40 ms frames."""
    x = pcm.astype(np.float64)
    n = int(0.04 * rate)
    found = []
    for start in range(0, len(x) - n, n // 2):
        frame = x[start : start + n] - x[start : start + n].mean()
        if np.sqrt(np.mean(frame**2)) < 500:
            continue
        ac = np.correlate(frame, frame, "full")[n - 1 :]
        lo, hi = rate // 400, rate // 60
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.4 * ac[0]:
            found.append(rate / lag)
    return float(np.median(found))


def test_registry_and_protocol():
    assert {"flite", "espeak-ng", "festival"} <= set(available_tts())
    assert isinstance(load_tts("flite"), FliteTts)
    assert isinstance(load_tts("espeak-ng"), EspeakTts)
    assert isinstance(load_tts("festival"), FestivalTts)
    for name in ("flite", "espeak-ng", "festival"):
        assert isinstance(load_tts(name), TtsEngine)
    with pytest.raises(LookupError):
        load_tts("no-such-engine")


def test_split_clauses():
    assert split_clauses(PROMPT) == [
        "Thank you for calling Parley bank.",
        "Your call may be recorded for training purposes.",
        "Please say your account number, one digit at a time.",
    ]
    assert split_clauses("Hello Mr. Smith. How are you?") == ["Hello Mr. Smith.", "How are you?"]
    long = "When you hear the tone, say your account number, then press the hash key, and wait."
    clauses = split_clauses(long, max_chars=40)
    assert " ".join(clauses) == long and len(clauses) > 1 and all(len(c) <= 40 for c in clauses)
    assert split_clauses("  ") == []


def test_wav_header_parsing():
    header = b"RIFF\xff\xff\xff\x7fWAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x22\x56\x00\x00"
    header += b"\x44\xac\x00\x00\x02\x00\x10\x00data\xff\xff\xff\x7f"
    assert parse_wav_header(header[:30]) is None
    assert parse_wav_header(header) == (22050, 44)
    with pytest.raises(TtsError):
        parse_wav_header(b"OggS" + header[4:])


def test_resampler_is_independent_of_input_partition():
    rng = np.random.default_rng(1)
    native = (rng.standard_normal(16000 * 2) * 3000).astype(np.int16)
    whole = Resampler(16000)
    reference = np.concatenate(whole.push(native) + whole.flush())
    assert abs(len(reference) - 16000) <= 2
    pieces = Resampler(16000)
    out: list[np.ndarray] = []
    cuts = np.sort(rng.choice(len(native), 40, replace=False))
    for part in np.split(native, cuts):
        out += pieces.push(part)
    out += pieces.flush()
    assert np.array_equal(np.concatenate(out), reference)
    passthrough = Resampler(8000)
    assert np.array_equal(
        np.concatenate(passthrough.push(native[:1000]) + passthrough.flush()), native[:1000]
    )


ENGINE_VOICES = [
    ("flite", "slt"),
    ("flite", "kal16"),
    ("flite", "awb"),
    ("flite", "rms"),
    ("festival", "kal_diphone"),
    ("festival", "cmu_us_slt_arctic_hts"),
    ("espeak-ng", "en-us"),
]


@pytest.mark.parametrize(("name", "voice"), ENGINE_VOICES)
async def test_engine_speaks_8khz(name, voice):
    engine = engine_or_skip(name, voice)
    chunks = [chunk async for chunk in engine.stream(SHORT, voice)]
    assert chunks and all(c.dtype == np.int16 and c.ndim == 1 for c in chunks)
    pcm = np.concatenate(chunks)
    seconds = len(pcm) / 8000
    assert 1.0 < seconds < 4.0, seconds
    frames = pcm[: len(pcm) // 160 * 160].astype(np.float64).reshape(-1, 160)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    assert rms.max() > 1000 and (rms > 300).sum() > 25  # at least half a second of loud speech
    assert engine.running == 0


async def test_flite_output_is_its_native_audio_resampled():
    engine = engine_or_skip("flite", "slt")
    native = subprocess.run(
        ["flite", "-voice", "slt", "-t", SHORT, "-o", "/dev/stdout"], capture_output=True, check=True
    ).stdout
    rate, offset = parse_wav_header(native)
    assert rate == 16000
    samples = np.frombuffer(native[offset:], dtype="<i2")
    expected = soxr.resample(samples, rate, 8000)
    streamed = await render(engine, SHORT, "slt")
    assert abs(len(streamed) - len(expected)) <= 2
    n = min(len(streamed), len(expected))
    assert np.corrcoef(streamed[:n].astype(float), expected[:n].astype(float))[0, 1] > 0.999


async def test_rate_and_pitch():
    flite = engine_or_skip("flite", "slt")
    normal = await render(flite, SHORT, "slt")
    fast = await render(flite, SHORT, "slt", rate=1.5)
    slow = await render(flite, SHORT, "slt", rate=0.75)
    assert len(fast) < 0.8 * len(normal) < 0.8 * len(slow)
    high = await render(flite, SHORT, "slt", pitch=1.4)
    assert f0_median(high) > 1.2 * f0_median(normal)
    espeak = engine_or_skip("espeak-ng", "en-us")
    assert len(await render(espeak, SHORT, rate=1.5)) < 0.8 * len(await render(espeak, SHORT))


@pytest.mark.parametrize(("name", "voice"), [("flite", "slt"), ("festival", "kal_diphone")])
async def test_clause_pipeline_yields_before_the_prompt_is_rendered(name, voice):
    engine = engine_or_skip(name, voice)
    assert len(split_clauses(PROMPT)) == 3
    launches_at_chunk = []
    async for _ in engine.stream(PROMPT, voice):
        launches_at_chunk.append(engine.launches)
    # the first chunk left when at most 2 of the 3 clauses had even been started
    assert launches_at_chunk[0] <= 2
    assert launches_at_chunk[-1] == 3
    assert launches_at_chunk == sorted(launches_at_chunk)
    assert len(launches_at_chunk) > 3


async def test_espeak_streams_stdout_while_synthesising():
    engine = engine_or_skip("espeak-ng", "en-us")
    running_at_chunk = []
    async for _ in engine.stream(PROMPT):
        running_at_chunk.append(engine.running)
    assert engine.launches == 1
    assert running_at_chunk[0] == 1  # espeak-ng was still writing when the first chunk was yielded
    assert len(running_at_chunk) > 10
    assert engine.running == 0


@pytest.mark.parametrize(("name", "voice"), [("flite", "slt"), ("espeak-ng", "en-us")])
async def test_closing_the_stream_kills_the_engine(name, voice):
    engine = engine_or_skip(name, voice)
    stream = engine.stream(PROMPT * 3, voice)
    first = await anext(stream)
    assert len(first)
    await stream.aclose()
    assert engine.running == 0
    assert engine.launches <= 2


async def test_cancelling_the_consumer_kills_the_engine():
    engine = engine_or_skip("festival", "kal_diphone")

    async def consume() -> None:
        async for _ in engine.stream(PROMPT):
            pass

    task = asyncio.create_task(consume())
    while engine.running == 0:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.running == 0


async def test_unknown_voice():
    engine = engine_or_skip("flite")
    with pytest.raises(TtsError):
        await render(engine, SHORT, "no-such-voice")


# --- cache -----------------------------------------------------------------------------------


async def test_cache_hit_serves_identical_audio_without_the_engine(tmp_path):
    cache = PromptCache(tmp_path)
    first_engine = engine_or_skip("flite", "slt")
    rendered = await render(CachedTts(first_engine, cache), PROMPT)
    assert first_engine.launches == 3
    assert cache.misses == 1 and cache.hits == 0

    second_engine = FliteTts()
    cached = CachedTts(second_engine, cache, chunk=800)
    chunks = [chunk async for chunk in cached.stream(PROMPT)]
    assert second_engine.launches == 0
    assert cache.hits == 1
    assert np.array_equal(np.concatenate(chunks), rendered)
    assert max(len(c) for c in chunks) == 800
    # the default voice and the explicit one share an address; other parameters do not
    key = PromptCache.key("flite", "slt", 1.0, 1.0, PROMPT)
    assert cached._key(PROMPT, None, 1.0, 1.0) == key
    others = {
        PromptCache.key("flite", "kal16", 1.0, 1.0, PROMPT),
        PromptCache.key("flite", "slt", 1.1, 1.0, PROMPT),
        PromptCache.key("flite", "slt", 1.0, 1.1, PROMPT),
        PromptCache.key("flite", "slt", 1.0, 1.0, PROMPT + " "),
        PromptCache.key("espeak-ng", "slt", 1.0, 1.0, PROMPT),
    }
    assert key not in others and len(others) == 5
    pcm_path, meta_path = cache.paths(key)
    meta = json.loads(meta_path.read_text())
    assert meta["samples"] == len(rendered) and meta["sample_rate"] == 8000 and meta["text"] == PROMPT
    assert pcm_path.stat().st_size == 2 * len(rendered)
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "sidecar"])
async def test_corrupt_cache_entry_is_rendered_again(tmp_path, damage):
    cache = PromptCache(tmp_path)
    original = await render(CachedTts(engine_or_skip("flite", "slt"), cache), SHORT)
    pcm_path, meta_path = cache.paths(PromptCache.key("flite", "slt", 1.0, 1.0, SHORT))
    data = bytearray(pcm_path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
        pcm_path.write_bytes(bytes(data))
    elif damage == "truncate":
        pcm_path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        meta_path.write_text(meta_path.read_text()[:20])
    engine = FliteTts()
    again = await render(CachedTts(engine, cache), SHORT)
    assert engine.launches == 1
    assert np.array_equal(again, original)
    if damage != "sidecar":
        assert cache.corrupt == 1
    healed = FliteTts()
    assert np.array_equal(await render(CachedTts(healed, cache), SHORT), original)
    assert healed.launches == 0


async def test_concurrent_renders_and_abandoned_streams(tmp_path):
    cache = PromptCache(tmp_path)
    engine = engine_or_skip("flite", "kal16")
    tts = CachedTts(engine, cache)
    results = await asyncio.gather(*(render(tts, SHORT, "kal16") for _ in range(4)))
    assert all(np.array_equal(r, results[0]) for r in results)
    assert not list(tmp_path.rglob("*.tmp"))
    assert cache.get(PromptCache.key("flite", "kal16", 1.0, 1.0, SHORT)) is not None
    # a stream closed early stores nothing
    stream = tts.stream(PROMPT, "kal16")
    await anext(stream)
    await stream.aclose()
    assert cache.get(PromptCache.key("flite", "kal16", 1.0, 1.0, PROMPT)) is None
    assert await tts.warm([SHORT, PROMPT], "kal16") == 1
    assert await tts.warm([SHORT, PROMPT], "kal16") == 0


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PARLEY_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "tts"
    assert PromptCache().directory == tmp_path / "tts"
    monkeypatch.delenv("PARLEY_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "parley" / "tts"


@pytest.mark.parametrize(("name", "voice"), [("flite", "slt"), ("festival", None)])
def test_engines_render_under_uvloop_whose_subprocess_pipes_are_socketpairs(name, voice):
    """`parley serve` runs on uvloop: an engine that writes to /dev/stdout by path gets no audio there."""
    import uvloop

    engine = engine_or_skip(name, voice)
    pcm = uvloop.run(render(engine, "Thank you for calling.", voice))
    assert len(pcm) > 4000 and np.abs(pcm.astype(np.int32)).max() > 1000


def broken_binary(tmp_path, name: str = "flite") -> str:
    """A stand-in for an engine binary that fails the way a broken install does (exit 1)."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\necho 'cannot synthesise' >&2\nexit 1\n")
    path.chmod(0o755)
    return str(path)


async def test_fallback_speaks_with_the_next_voice_when_the_engine_fails(tmp_path, caplog):
    espeak = engine_or_skip("espeak-ng")
    broken = FliteTts(binary=broken_binary(tmp_path))
    speaker = FallbackTts([(broken, None), (espeak, "en-us")])
    caplog.set_level("WARNING", logger="parley.speech.tts")
    audio = await render(speaker, "Your balance is four hundred dollars.", "slt")
    assert np.abs(audio.astype(np.int32)).max() > 1000 and len(audio) > 8000  # a second of speech
    assert np.array_equal(audio, await render(espeak, "Your balance is four hundred dollars.", "en-us"))
    assert speaker.failures == {"flite:slt": 1}
    assert "TTS flite:slt failed (TtsError, 1 so far): speaking with espeak-ng:en-us" in caplog.text
    assert "balance" not in caplog.text  # the prompt may hold caller data: never logged


async def test_fallback_serves_a_cached_prompt_while_the_engine_fails(tmp_path):
    """Pre-rendered audio: what the prompt cache holds is served without the (broken) engine."""
    flite = engine_or_skip("flite", "slt")
    cache = PromptCache(tmp_path / "cache")
    rendered = await render(CachedTts(flite, cache), SHORT, "slt")
    broken = CachedTts(FliteTts(binary=broken_binary(tmp_path)), cache)
    speaker = FallbackTts([(broken, None), (EspeakTts(binary=broken_binary(tmp_path, "espeak")), None)])
    assert np.array_equal(await render(speaker, SHORT, "slt"), rendered)
    assert speaker.failures == {}
    with pytest.raises(TtsError):  # not cached, and every choice fails: the caller of stream() decides
        await render(speaker, "Something never said before.", "slt")
    assert speaker.failures == {"flite:slt": 1, "espeak-ng:default": 1}


class _FailsMidPrompt:
    """An engine that gives one chunk, then fails (a process killed mid-prompt)."""

    name = "midway"

    def voices(self) -> list[str]:
        return ["v"]

    async def stream(self, text, voice=None, rate=1.0, pitch=1.0):
        yield np.ones(160, dtype=np.int16)
        raise TtsError("killed")


async def test_fallback_does_not_restart_a_prompt_that_had_begun():
    espeak = engine_or_skip("espeak-ng")
    speaker = FallbackTts([(_FailsMidPrompt(), "v"), (espeak, "en-us")])
    chunks = []
    with pytest.raises(TtsError, match="killed"):
        async for chunk in speaker.stream("Hello there.", "v"):
            chunks.append(chunk)
    assert len(chunks) == 1  # the words said are not said again in another voice


async def test_a_full_disk_for_the_prompt_cache_costs_no_prompt(tmp_path, caplog):
    """The rendering is spoken all the same; it is not kept (and is rendered again next time)."""
    from integration.harness import fill_disk, small_disk

    caplog.set_level("WARNING", logger="parley.speech.tts")  # another test may have raised it

    flite = engine_or_skip("flite", "slt")
    with small_disk(tmp_path / "disk") as disk:
        fill_disk(disk)
        cached = CachedTts(flite, PromptCache(disk / "cache"))
        audio = await render(cached, SHORT, "slt")
        assert np.array_equal(audio, await render(flite, SHORT, "slt"))
        assert cached.cache.failed_puts == 1 and flite.launches >= 2
        await render(cached, SHORT, "slt")
        assert cached.cache.failed_puts == 2
    assert caplog.text.count("prompt cache: ") == 1  # the first failure; then every 100th
