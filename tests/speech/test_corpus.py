"""The synthetic caller corpus: answer generators, the simulated line, determinism and the CLI."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from datetime import date, time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from parley.cli import main
from parley.media import g711
from parley.media.jitter import conceal
from parley.speech import corpus as corpus_module
from parley.speech.corpus import (
    ANSWER_MAKERS,
    CODECS,
    DEFAULT_VOICES,
    FILLER_WORDS,
    HELD_OUT_NOISES,
    HELD_OUT_VOICES,
    LABELS_FILE,
    RATES,
    Line,
    babble_bed,
    babble_talkers,
    degrade,
    disfluent,
    generate_corpus,
    lost_frames,
    normalise_text,
    number_words,
    ordinal_words,
    parse_voices,
    plan_corpus,
    question_for,
    read_labels,
    read_wav,
    speak_digits,
    speech_power,
    transcript_value,
    year_words,
)
from parley.speech.evaluation import is_correct
from parley.speech.noise import NOISE_KINDS, make_noise
from parley.speech.tts import load_tts
from parley.speech.types import Question, SlotType

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
            elif slot_type is SlotType.TIME:
                assert time(8) <= time.fromisoformat(value) < time(18)
                assert is_correct(Question(SlotType.TIME), answer.text, value)  # as the reader takes it
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
            corpus_module._BABBLE_BEDS.clear()  # each run renders its own babble: a and b must agree
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
        "loss_rate", "lost_frames", "seed", "question", "duration_s", "speech_start_s", "codec",
        "loss_burst", "disfluency", "answer_text", "split", "held_out_voice",
    }  # fmt: skip
    voices = set(FAST_VOICES.split(","))
    for record in records:
        assert keys <= set(record), record
        assert record["seed"] == 7 and record["voice"] in voices and record["split"] == "all"
        assert record["rate"] > 0 and record["pitch"] > 0
        assert (record["snr_db"] is None) == (record["noise"] is None)
        assert record["noise"] is None or record["noise"] in NOISE_KINDS
        assert (record["loss_rate"] == 0) <= (record["lost_frames"] == 0)
        assert (record["loss_rate"] == 0) == (record["loss_burst"] is None)
        assert record["disfluency"] in (None, "hesitation", "restart", "correction")
        if record["disfluency"] in ("restart", "correction"):
            assert record["text"].endswith(", " + record["answer_text"])
        said = iter(normalise_text(record["text"]).split())  # the answer is said in full, in order
        assert all(word in said for word in normalise_text(record["answer_text"]).split()), record
        assert (record["disfluency"] is None) == (record["text"] == record["answer_text"])
        assert {"prompt", "digit_count", "options"} <= set(record["question"])
        question = question_for(record)
        assert question.slot_type.value == record["slot_type"]
        pcm, rate = read_wav(directory / record["file"])
        assert rate == 8000 and len(pcm) / 8000 == pytest.approx(record["duration_s"], abs=0.001)
        if record["lost_frames"] == 0:  # every sample is a level of the line's codec
            assert np.isin(pcm, g711.decode_table(record["codec"])).all()
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


# --- the harder corpus: voices, noises, codecs, bursts of loss, disfluent callers --------------

ALL_VOICES = parse_voices([",".join(DEFAULT_VOICES)])


def test_plan_has_every_condition():
    plan = plan_corpus(2, 34, ALL_VOICES)
    noisy = [u for u in plan if u.line.snr_db is not None]
    assert {u.line.noise for u in noisy} == set(NOISE_KINDS)
    assert {u.line.codec for u in plan} == set(CODECS)
    assert {u.line.loss_burst for u in plan if u.line.loss_rate > 0} == {1.0, 3.0}
    assert {u.rate for u in plan} == set(RATES)
    assert {f"{u.engine}:{u.voice}" for u in plan} == set(DEFAULT_VOICES)
    kinds = [u.disfluency for u in plan]
    assert {"hesitation", "restart", "correction"} <= set(kinds)
    assert 0.15 < sum(kind is not None for kind in kinds) / len(kinds) < 0.35  # about a quarter
    assert sum(kind is None for kind in kinds) > len(kinds) / 2  # plain answers stay the rule
    espeak = sum(u.engine == "espeak-ng" for u in plan) / len(plan)
    assert espeak < 2 / len(DEFAULT_VOICES)  # the robotic voices are weighted down


def test_training_and_evaluation_splits_are_disjoint():
    train = plan_corpus(1, 34, ALL_VOICES, split="train")
    evaluation = plan_corpus(2, 34, ALL_VOICES, split="eval")
    assert not {f"{u.engine}:{u.voice}" for u in train} & HELD_OUT_VOICES
    assert not {u.line.noise for u in train if u.line.snr_db is not None} & HELD_OUT_NOISES
    assert {f"{u.engine}:{u.voice}" for u in evaluation} >= HELD_OUT_VOICES
    assert {u.line.noise for u in evaluation if u.line.snr_db is not None} >= HELD_OUT_NOISES

    def pairs(plan):
        return {(u.engine, u.voice, normalise_text(u.text)) for u in plan}

    assert not pairs(train) & pairs(evaluation)
    # without splits, short answers do meet the same voice again (what the splits prevent)
    assert pairs(plan_corpus(1, 34, ALL_VOICES)) & pairs(plan_corpus(2, 34, ALL_VOICES))
    with pytest.raises(ValueError, match="split"):
        plan_corpus(1, 2, ALL_VOICES, split="test")
    with pytest.raises(ValueError, match="held out"):
        plan_corpus(1, 2, [("festival", "ked_diphone")], split="train")


def test_disfluent_callers_mean_their_final_answer():
    rng = random.Random(9)
    seen = set()
    for slot_type in SlotType:
        for _ in range(300):
            answer = ANSWER_MAKERS[slot_type](rng)
            kind, pieces = disfluent(answer, rng)
            texts = [piece.text for piece in pieces]
            assert all(texts)
            if kind == "hesitation" and len(pieces) == 3:  # "four two seven, uh, one nine three"
                assert texts[1] in corpus_module.SHORT_FILLERS
                assert f"{texts[0]} {texts[2]}".replace(",", "") == answer.text.replace(",", "")
            else:
                assert texts[-1] == answer.text  # the last words are the whole answer
            assert all(piece.pause_s > 0 for piece in pieces[:-1]) and pieces[-1].pause_s == 0
            value = transcript_value(answer, pieces)
            seen.add((slot_type, kind))
            if kind is None:
                assert len(pieces) == 1
            elif kind == "hesitation":
                assert any(text in corpus_module.FILLERS for text in texts)
            elif kind == "restart":
                assert len(pieces) == 2 and answer.text.startswith(texts[0].rstrip(","))
            else:
                assert len(pieces) == 3 and texts[1] in corpus_module.CORRECTION_MARKERS
                assert texts[0] != answer.text
            if slot_type is SlotType.FREE:
                assert kind != "correction"
                said = normalise_text(", ".join(texts)).split()
                assert value.split() == [word for word in said if word not in FILLER_WORDS]
            else:
                assert value == answer.value  # after a correction, the value is what was meant
            if kind == "correction" and slot_type in (SlotType.DIGITS, SlotType.PHONE):
                wrong = texts[0].split()
                assert not " ".join(answer.text.split()).replace(",", "").startswith(" ".join(wrong))
    for slot_type in SlotType:
        kinds = {"hesitation", "restart"} | ({"correction"} if slot_type is not SlotType.FREE else set())
        assert {(slot_type, kind) for kind in kinds} <= seen, slot_type


def test_correction_examples():
    def corrected(slot_type, seed):
        rng = random.Random(seed)
        while True:
            answer = ANSWER_MAKERS[slot_type](rng)
            kind, pieces = disfluent(answer, rng)
            if kind == "correction":
                return answer, [piece.text for piece in pieces]

    answer, (wrong, _, right) = corrected(SlotType.DATE, 1)
    day = date.fromisoformat(answer.value)
    assert ordinal_words(day.day) in right or "tomorrow" in right or right.startswith("next ")
    assert wrong != right and wrong not in right
    answer, (wrong, _, right) = corrected(SlotType.NAME, 2)
    assert wrong in answer.options and wrong != answer.value and answer.value in right
    answer, (wrong, _, right) = corrected(SlotType.YES_NO, 3)
    assert wrong == ("no" if answer.value else "yes")


def test_line_a_law():
    pcm = tone()
    out, _ = degrade(pcm, Line(codec="PCMA", lead_s=0.0, tail_s=0.0), np.random.default_rng(0))
    assert np.array_equal(out, g711.alaw_decode(g711.alaw_encode(pcm)))
    assert np.isin(out, g711.decode_table("PCMA")).all()
    assert not np.isin(out, g711.decode_table("PCMU")).all()  # not µ-law levels
    ulaw, _ = degrade(pcm, Line(codec="PCMU", lead_s=0.0, tail_s=0.0), np.random.default_rng(0))
    assert not np.array_equal(out, ulaw)
    with pytest.raises(ValueError):
        degrade(pcm, Line(codec="G729"), np.random.default_rng(0))


def test_bursty_loss_keeps_its_rate_in_longer_runs():
    def runs(mask):
        edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(int), [0]))))
        return edges[1::2] - edges[::2]

    independent = lost_frames(20_000, 0.05, 1.0, np.random.default_rng(3))
    bursty = lost_frames(20_000, 0.05, 3.0, np.random.default_rng(3))
    assert abs(independent.mean() - 0.05) < 0.01 and abs(bursty.mean() - 0.05) < 0.01
    assert runs(independent).mean() < 1.2 and 2.5 < runs(bursty).mean() < 3.5
    assert not lost_frames(100, 0.0, 3.0, np.random.default_rng(3)).any()


def envelope_stats(noise: np.ndarray) -> tuple[float, float, float]:
    """(std of 20 ms frame levels in dB, share of power at 100-1000 Hz, share of the envelope's
    modulation at syllable rates, 2-8 Hz)."""
    frames = noise[: len(noise) // 160 * 160].reshape(-1, 160)
    powers = np.mean(frames**2, axis=1)
    spectrum = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(len(noise), 1 / 8000)
    voice_band = spectrum[(freqs >= 100) & (freqs < 1000)].sum() / spectrum.sum()
    envelope = np.sqrt(powers) - np.sqrt(powers).mean()
    modulation = np.abs(np.fft.rfft(envelope)) ** 2
    rates = np.fft.rfftfreq(len(envelope), 0.02)
    syllabic = modulation[(rates >= 2) & (rates <= 8)].sum() / modulation[rates > 0].sum()
    return float(np.std(10 * np.log10(powers + 1e-9))), float(voice_band), float(syllabic)


@pytest.fixture(scope="module")
def babble() -> np.ndarray:
    if not (shutil.which("flite") and shutil.which("espeak-ng")):
        pytest.skip("flite and espeak-ng are needed (apt-get install flite espeak-ng)")
    voices = parse_voices([FAST_VOICES])
    engines = {engine: load_tts(engine) for engine, _ in voices}
    talkers = babble_talkers(voices, lambda engine, voice: voice != "rms")
    assert len({(engine, voice) for engine, voice, _, _ in talkers}) >= 3  # several different voices
    assert talkers[0][0] == "flite"  # the natural-sounding voices first
    return asyncio.run(babble_bed(engines, talkers))


def test_babble_is_speech_like(babble):
    assert len(babble) > 8000 * 20 and np.mean(babble**2) == pytest.approx(1.0)
    n = 8000 * 10
    level_swing, voice_band, syllabic = envelope_stats(
        make_noise("babble", n, np.random.default_rng(1), babble)
    )
    for kind in ("white", "pink"):
        other = envelope_stats(make_noise(kind, n, np.random.default_rng(1)))
        assert level_swing > other[0] + 1.0 and voice_band > other[1] + 0.3 and syllabic > other[2] + 0.15
    assert voice_band > 0.6 and syllabic > 0.45
    first = make_noise("babble", n, np.random.default_rng(1), babble)
    assert np.array_equal(first, make_noise("babble", n, np.random.default_rng(1), babble))
    assert not np.array_equal(first, make_noise("babble", n, np.random.default_rng(2), babble))
    with pytest.raises(ValueError, match="babble bed"):
        make_noise("babble", n, np.random.default_rng(1))


def test_street_noise_rumbles_with_transients():
    def low_to_high(noise):  # power density at 50-150 Hz over that at 1-3 kHz
        spectrum = np.abs(np.fft.rfft(noise)) ** 2
        freqs = np.fft.rfftfreq(len(noise), 1 / 8000)
        return (
            spectrum[(freqs >= 50) & (freqs < 150)].mean() / spectrum[(freqs >= 1000) & (freqs < 3000)].mean()
        )

    def level_swing(noise):  # std of the 20 ms frame levels, dB
        return np.std(10 * np.log10(np.mean(noise.reshape(-1, 160) ** 2, axis=1)))

    noise = make_noise("street", 8000 * 20, np.random.default_rng(4))
    white = make_noise("white", 8000 * 20, np.random.default_rng(4))
    pink = make_noise("pink", 8000 * 20, np.random.default_rng(4))
    assert np.mean(noise**2) == pytest.approx(1.0)
    assert low_to_high(noise) > 10 * low_to_high(white)  # rumble, not hiss
    assert level_swing(noise) > level_swing(pink) + 2.0  # vehicles pass, things bang: not stationary
    frames = np.mean(noise.reshape(-1, 160) ** 2, axis=1)
    assert frames.max() > 8 * np.median(frames)  # transients stand out of the bed
    assert np.array_equal(noise, make_noise("street", 8000 * 20, np.random.default_rng(4)))
    with pytest.raises(ValueError, match="unknown noise"):
        make_noise("rain", 100, np.random.default_rng(4))


@pytest.mark.parametrize("kind", ["babble", "street"])
def test_line_babble_and_street_snr(babble, kind):
    pcm = tone(2.0)
    rng = np.random.default_rng(5)
    out, _ = degrade(pcm, Line(snr_db=10.0, noise=kind, lead_s=0.0, tail_s=0.0), rng, babble)
    noise = out.astype(np.float64) - g711.ulaw_decode(g711.ulaw_encode(pcm))  # codec error is tiny
    measured = 10 * np.log10(speech_power(pcm) / np.mean(noise**2))
    assert abs(measured - 10.0) < 1.0


@needs_engines
def test_training_split_renders_without_held_out_voices(tmp_path):
    held_out = "espeak-ng:en-gb-x-rp+f3"
    assert held_out in HELD_OUT_VOICES
    voices = f"flite:kal16,{held_out}"
    train = asyncio.run(
        generate_corpus(tmp_path / "train", seed=3, per_type=2, voices=[voices], split="train")
    )
    assert {r["voice"] for r in train} == {"flite:kal16"} and {r["split"] for r in train} == {"train"}
    assert not any(r["held_out_voice"] for r in train)
    assert not {r["noise"] for r in train} & HELD_OUT_NOISES
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(
        main, ["corpus", "--out", str(out), "--per-type", "1", "--voices", held_out, "--split", "eval"]
    )
    assert result.exit_code == 0, result.output
    assert {(r["voice"], r["split"], r["held_out_voice"]) for r in read_labels(out)} == {
        (held_out, "eval", True)
    }
    bad = runner.invoke(main, ["corpus", "--out", str(out), "--voices", held_out, "--split", "train"])
    assert bad.exit_code == 2 and "held out" in bad.output
