"""The synthetic caller corpus: answer generators, the simulated line, determinism and the CLI."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from parley.cli import main
from parley.media import g711
from parley.media.jitter import conceal
from parley.speech.corpus import (
    ANSWER_MAKERS,
    LABELS_FILE,
    Line,
    degrade,
    generate_corpus,
    number_words,
    ordinal_words,
    parse_voices,
    plan_corpus,
    question_for,
    read_labels,
    read_wav,
    speak_digits,
    speech_power,
    year_words,
)
from parley.speech.types import SlotType

FAST_VOICES = "flite:slt,flite:kal16,flite:rms,espeak-ng:en-us"
needs_engines = pytest.mark.skipif(
    not (shutil.which("flite") and shutil.which("espeak-ng")),
    reason="flite and espeak-ng are needed (apt-get install flite espeak-ng)",
)


def test_number_words():
    assert number_words(0) == "zero"
    assert number_words(13) == "thirteen"
    assert number_words(40) == "forty"
    assert number_words(250) == "two hundred and fifty"
    assert number_words(1005) == "one thousand and five"
    assert number_words(5500) == "five thousand five hundred"
    assert number_words(21_999) == "twenty one thousand nine hundred and ninety nine"
    assert (
        ordinal_words(3) == "third"
        and ordinal_words(21) == "twenty first"
        and ordinal_words(30) == "thirtieth"
    )
    assert year_words(1987) == "nineteen eighty seven"
    assert year_words(2005) == "two thousand and five"
    assert year_words(2024) == "twenty twenty four"
    assert year_words(1905) == "nineteen oh five"


def test_speak_digits():
    rng = random.Random(0)
    assert speak_digits("4271", rng, "oh", False) == "four two seven one"
    assert speak_digits("4007", rng, "oh", True) == "four double oh seven"
    assert speak_digits("4007", rng, "zero", False) == "four zero zero seven"
    assert speak_digits("7771", rng, "oh", True) == "seven double seven one"


def test_every_slot_type_has_answers_with_valid_values():
    rng = random.Random(5)
    for slot_type in SlotType:
        for _ in range(40):
            answer = ANSWER_MAKERS[slot_type](rng)
            assert answer.slot_type is slot_type and answer.text and answer.prompt
            value = answer.value
            if slot_type in (SlotType.DIGITS, SlotType.PHONE):
                assert value.isdigit() and len(value) == answer.digit_count
                assert 6 <= len(value) <= 11
            elif slot_type is SlotType.NAME:
                assert value in answer.options and value in answer.text
            elif slot_type is SlotType.SPELLED:
                assert value.isalpha() and value.isupper() and " ".join(value) in answer.text
            elif slot_type is SlotType.YES_NO:
                assert isinstance(value, bool)
            elif slot_type is SlotType.DATE:
                date.fromisoformat(value)
            elif slot_type is SlotType.AMOUNT:
                assert value["currency"] in ("GBP", "USD", "EUR") and value["value"] > 0
            elif slot_type is SlotType.CHOICE:
                assert value in answer.options
            else:
                assert value == " ".join(value.split()) and value.islower()


def test_plan_is_a_function_of_the_seed():
    voices = parse_voices([FAST_VOICES])
    assert voices[0] == ("flite", "slt") and len(voices) == 4
    with pytest.raises(ValueError):
        parse_voices(["slt"])
    first = plan_corpus(3, 4, voices)
    assert first == plan_corpus(3, 4, voices)
    assert first != plan_corpus(4, 4, voices)
    assert {u.answer.slot_type for u in first} == set(SlotType)
    assert len({u.id for u in first}) == len(first) == 4 * len(SlotType)
    flat = plan_corpus(3, 4, voices, pitch_support=lambda engine, voice: voice != "rms")
    assert all(u.pitch == 1.0 for u in flat if u.voice == "rms")


def tone(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(8000 * seconds)) / 8000
    return (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16)


def test_line_pads_and_goes_through_ulaw():
    pcm = tone()
    out, lost = degrade(pcm, Line(lead_s=0.2, tail_s=0.4), np.random.default_rng(0))
    assert lost == 0 and out.dtype == np.int16
    assert len(out) == 1600 + 8000 + 3200
    assert not out[:1600].any() and not out[9600:].any()
    assert np.isin(out, g711.decode_table("PCMU")).all()
    assert np.array_equal(out[1600:9600], g711.ulaw_decode(g711.ulaw_encode(pcm)))
    odd, _ = degrade(pcm[:1000], Line(lead_s=0.0, tail_s=0.0), np.random.default_rng(0))
    assert len(odd) == 1120  # padded to whole 20 ms frames


@pytest.mark.parametrize(("noise", "snr_db"), [("white", 10.0), ("pink", 20.0)])
def test_line_noise_snr(noise, snr_db):
    pcm = tone(2.0)
    out, _ = degrade(pcm, Line(snr_db=snr_db, noise=noise, lead_s=1.0), np.random.default_rng(1))
    noise_power = np.mean(out[:8000].astype(np.float64) ** 2)
    measured = 10 * np.log10(speech_power(pcm) / noise_power)
    assert abs(measured - snr_db) < 1.0


def test_line_packet_loss_is_concealed():
    pcm = tone(2.0)
    line = Line(loss_rate=0.2, lead_s=0.0, tail_s=0.0)
    clean, _ = degrade(pcm, Line(lead_s=0.0, tail_s=0.0), np.random.default_rng(2))
    lossy, lost = degrade(pcm, line, np.random.default_rng(2))
    assert 0.1 * 100 < lost < 0.3 * 100  # 100 frames at 20 %
    clean_frames, lossy_frames = clean.reshape(-1, 160), lossy.reshape(-1, 160)
    changed = {i for i in range(len(clean_frames)) if not np.array_equal(clean_frames[i], lossy_frames[i])}
    assert len(changed) == lost  # an attenuated copy of another frame never equals the clean one
    last_good, run = None, 0
    for i, frame in enumerate(lossy_frames):  # each lost frame is the concealment of the last good one
        if i in changed:
            run += 1
            assert np.array_equal(frame, conceal(last_good, run))
        else:
            last_good, run = frame, 0


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    if not (shutil.which("flite") and shutil.which("espeak-ng")):
        pytest.skip("flite and espeak-ng are needed (apt-get install flite espeak-ng)")
    root = tmp_path_factory.mktemp("corpus")
    runs = {"a": 7, "b": 7, "c": 8}

    async def make() -> None:
        for name, seed in runs.items():
            await generate_corpus(root / name, seed=seed, per_type=2, voices=[FAST_VOICES])

    asyncio.run(make())
    return {name: root / name for name in runs}


def test_corpus_is_deterministic(corpora):
    a, b, c = corpora["a"], corpora["b"], corpora["c"]
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    assert len(files) == 2 * len(SlotType) + 1
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / LABELS_FILE).read_bytes() != (c / LABELS_FILE).read_bytes()
    differing = [n for n in files if n.endswith(".wav") and (a / n).read_bytes() != (c / n).read_bytes()]
    assert len(differing) > len(SlotType)


def test_corpus_labels(corpora):
    directory = corpora["a"]
    records = read_labels(directory)
    assert len(records) == 2 * len(SlotType)
    assert {r["slot_type"] for r in records} == {t.value for t in SlotType}
    keys = {
        "id", "file", "slot_type", "text", "value", "voice", "rate", "pitch", "snr_db", "noise",
        "loss_rate", "lost_frames", "seed", "question", "duration_s", "speech_start_s",
    }  # fmt: skip
    voices = set(FAST_VOICES.split(","))
    for record in records:
        assert keys <= set(record), record
        assert record["seed"] == 7 and record["voice"] in voices
        assert record["rate"] > 0 and record["pitch"] > 0
        assert record["snr_db"] is None or record["noise"] in ("white", "pink")
        assert (record["loss_rate"] == 0) <= (record["lost_frames"] == 0)
        assert {"prompt", "digit_count", "options"} <= set(record["question"])
        question = question_for(record)
        assert question.slot_type.value == record["slot_type"]
        pcm, rate = read_wav(directory / record["file"])
        assert rate == 8000 and len(pcm) / 8000 == pytest.approx(record["duration_s"], abs=0.001)
        speech = pcm[int(record["speech_start_s"] * 8000) :]
        assert np.abs(speech).max() > 2000  # something was said
        if record["slot_type"] == "digits":
            assert len(record["value"]) == record["question"]["digit_count"]
        if record["slot_type"] == "amount":
            assert set(record["value"]) == {"value", "currency"}
        if record["slot_type"] == "free":
            assert record["intent"]
        if record["slot_type"] == "date":
            assert record["question"]["reference_date"]
    json.dumps(records)  # plain JSON all the way down


@needs_engines
def test_corpus_applies_packet_loss(tmp_path):
    records = asyncio.run(generate_corpus(tmp_path, seed=11, per_type=3, voices=["flite:kal16"]))
    lossy = [r for r in records if r["loss_rate"] > 0]
    assert lossy and sum(r["lost_frames"] for r in lossy) > 0
    assert all(r["lost_frames"] == 0 for r in records if r["loss_rate"] == 0)


@needs_engines
def test_cli_corpus(tmp_path):
    out = tmp_path / "corpus"
    runner = CliRunner()
    result = runner.invoke(main, ["corpus", "--out", str(out), "--per-type", "1", "--voices", "flite:kal16"])
    assert result.exit_code == 0, result.output
    assert f"{len(SlotType)} utterances" in result.output
    assert len(read_labels(out)) == len(SlotType)
    assert len(list(out.glob("*.wav"))) == len(SlotType)
    bad = runner.invoke(main, ["corpus", "--out", str(out), "--voices", "flite:nobody"])
    assert bad.exit_code == 2 and "nobody" in bad.output
