"""Endpointing on real flite speech: silence timeout, early close, pauses, no input, max speech.

Frames are fed one at a time; time is frames × 20 ms, so assertions are in frames.
"""

from __future__ import annotations

import numpy as np
import pytest

from parley.speech.endpoint import (
    Endpointer,
    EndpointEvent,
    NoInput,
    Paused,
    SpeechEnded,
    SpeechStarted,
    TurnState,
)
from parley.speech.vad import make_vad

from .vad_audio import VAD_NAMES, flite, frames, n_frames, needs_flite, noise, silence

pytestmark = needs_flite
ACCOUNT = "my account number is four two seven nine one"


def run(endpointer: Endpointer, pcm_frames: list[np.ndarray]) -> list[tuple[int, EndpointEvent]]:
    """(frame index, event) for every event the frames caused."""
    return [(i, event) for i, frame in enumerate(pcm_frames) if (event := endpointer.feed(frame)) is not None]


@pytest.mark.parametrize("name", VAD_NAMES)
@pytest.mark.parametrize("voice", ["kal", "slt"])
def test_turn_ends_after_silence_ms_of_silence(name, voice):
    speech = flite(ACCOUNT, voice)
    speech_end = 25 + n_frames(speech)  # first silent frame
    endpointer = Endpointer(make_vad(name))  # silence_ms=700: 35 frames
    events = run(endpointer, frames(silence(500), speech, silence(1500)))
    assert [type(event) for _, event in events] == [SpeechStarted, SpeechEnded]
    (_, started), (end_index, ended) = events
    assert abs(started.at_ms // 20 - 25) <= 3
    assert ended.reason == "silence"
    into_silence = end_index + 1 - speech_end
    assert abs(into_silence - 35) <= 2, f"ended {into_silence} frames into silence"
    assert ended.at_ms == (end_index + 1) * 20
    assert endpointer.state is TurnState.ENDED
    assert endpointer.feed(np.zeros(160, dtype=np.int16)) is None  # nothing more until reset()


@pytest.mark.parametrize("silence_ms", [400, 1000])
def test_silence_ms_is_configurable(silence_ms):
    speech = flite(ACCOUNT)
    endpointer = Endpointer(make_vad(), silence_ms=silence_ms)
    events = run(endpointer, frames(silence(500), speech, silence(1500)))
    end_index, ended = events[-1]
    assert ended.reason == "silence"
    assert abs((end_index + 1) - (25 + n_frames(speech)) - silence_ms // 20) <= 2


def test_early_close_when_the_caller_already_paused_ends_the_turn_at_once():
    speech = flite(ACCOUNT)
    pcm_frames = frames(silence(500), speech, silence(1500))
    endpointer = Endpointer(make_vad())
    asr_latency = 10  # the complete slot is known 200 ms after the speech ended
    request_at = 25 + n_frames(speech) + asr_latency
    events = run(endpointer, pcm_frames[:request_at])
    assert [type(event) for _, event in events] == [SpeechStarted]
    ended = endpointer.request_early_close()
    assert isinstance(ended, SpeechEnded) and ended.reason == "early-close"
    assert ended.at_ms == request_at * 20  # 500 ms before the silence timeout would have fired
    assert endpointer.request_early_close() is None  # idempotent once ended
    assert run(endpointer, pcm_frames[request_at:]) == []


def test_early_close_while_speaking_ends_at_the_next_pause_before_the_silence_timeout():
    first, second = flite("four two seven"), flite("nine one")
    pcm_frames = frames(silence(500), first, silence(200), second, silence(1500))
    first_end = 25 + n_frames(first)
    endpointer = Endpointer(make_vad())
    request_at = 25 + n_frames(first) // 2  # mid-speech
    assert [type(e) for _, e in run(endpointer, pcm_frames[:request_at])] == [SpeechStarted]
    assert endpointer.request_early_close() is None  # the caller is still talking
    events = run(endpointer, pcm_frames[request_at:])
    assert len(events) == 1
    index, ended = events[0]
    assert isinstance(ended, SpeechEnded) and ended.reason == "early-close"
    end_frame = request_at + index + 1
    # At the first pause (within the 200 ms gap after "four two seven"), not 700 ms after "nine one".
    assert first_end < end_frame <= first_end + 10, end_frame - first_end
    without = run(Endpointer(make_vad()), pcm_frames)
    assert without[-1][1].reason == "silence" and without[-1][0] + 1 > end_frame + 40


def test_early_close_before_speech_is_ignored():
    endpointer = Endpointer(make_vad())
    assert run(endpointer, frames(silence(400))) == []
    assert endpointer.request_early_close() is None
    events = run(endpointer, frames(flite("yes that's right"), silence(1000)))
    assert [type(e) for _, e in events] == [SpeechStarted, SpeechEnded]
    assert events[-1][1].reason == "silence"


@pytest.mark.parametrize("name", VAD_NAMES)
def test_300_ms_pause_inside_a_sentence_does_not_end_the_turn(name):
    first, second = flite("my account number is", "slt"), flite("four two seven nine", "slt")
    second_end = 25 + n_frames(first) + 15 + n_frames(second)
    events = run(Endpointer(make_vad(name)), frames(silence(500), first, silence(300), second, silence(1200)))
    assert [type(event) for _, event in events] == [SpeechStarted, SpeechEnded]
    end_index, ended = events[-1]
    assert ended.reason == "silence"
    assert abs((end_index + 1) - second_end - 35) <= 2


def test_a_pause_longer_than_silence_ms_does_end_the_turn():
    first = flite("my account number is", "slt")
    events = run(Endpointer(make_vad()), frames(silence(500), first, silence(900), flite("four two seven")))
    assert [type(event) for _, event in events] == [SpeechStarted, SpeechEnded]
    assert abs(events[-1][0] + 1 - (25 + n_frames(first)) - 35) <= 2


@pytest.mark.parametrize("background", ["silence", "line noise"])
def test_no_input_when_nobody_speaks(background):
    audio = silence(6000) if background == "silence" else noise(6000, -45.0)
    events = run(Endpointer(make_vad()), frames(audio))
    assert events == [(249, NoInput(5000))]


def test_no_input_ms_is_configurable_and_speech_prevents_it():
    assert run(Endpointer(make_vad(), no_input_ms=2000), frames(silence(3000))) == [(99, NoInput(2000))]
    events = run(Endpointer(make_vad(), no_input_ms=2000), frames(silence(1000), flite("yes"), silence(3000)))
    assert [type(e) for _, e in events] == [SpeechStarted, SpeechEnded]


def test_max_speech_ends_a_turn_that_never_pauses():
    sentences = ["I am calling about the bill I received last month",
                 "which shows a charge for a service I never ordered"]  # fmt: skip
    speech = np.concatenate([flite(text, "awb") for text in sentences])
    endpointer = Endpointer(make_vad(), max_speech_ms=2000)
    events = run(endpointer, frames(silence(500), speech, silence(1000)))
    assert [type(e) for _, e in events] == [SpeechStarted, SpeechEnded]
    (_, started), (end_index, ended) = events
    assert ended.reason == "max-speech"
    assert ended.at_ms - started.at_ms == 2000 and ended.at_ms == (end_index + 1) * 20
    assert n_frames(speech) * 20 > 3000  # the caller was still talking


def test_a_short_burst_does_not_start_a_turn():
    speech = flite(ACCOUNT)
    burst = speech[160 * 20 : 160 * 23]  # 60 ms of speech < min_speech_ms=100
    events = run(Endpointer(make_vad(), no_input_ms=2000), frames(silence(500), burst, silence(2000)))
    assert events == [(99, NoInput(2000))]


def test_same_audio_same_events_after_reset():
    pcm_frames = frames(silence(300), flite("can you hear me", "rms"), silence(1000))
    endpointer = Endpointer(make_vad())
    first = run(endpointer, pcm_frames)
    endpointer.reset()
    assert endpointer.state is TurnState.WAITING and endpointer.elapsed_ms == 0
    assert run(endpointer, pcm_frames) == first


def test_no_input_clock_is_held_while_the_prompt_plays():
    endpointer = Endpointer(make_vad(), no_input_ms=400)
    quiet = np.zeros(160, dtype=np.int16)
    for _ in range(100):  # a 2 s prompt: no-input must not fire during it
        endpointer.hold_no_input()
        assert endpointer.feed(quiet) is None
    events = [endpointer.feed(quiet) for _ in range(25)]
    fired = [i for i, e in enumerate(events) if isinstance(e, NoInput)]
    assert len(fired) == 1 and 17 <= fired[0] <= 20  # ~400 ms after the prompt ended


def test_a_pause_check_comes_once_per_pause_and_can_end_the_turn_there():
    first, second = flite("four two seven"), flite("nine one")
    first_end = 25 + n_frames(first)
    pcm_frames = frames(silence(500), first, silence(400), second, silence(1500))
    second_end = first_end + 20 + n_frames(second)
    events = run(Endpointer(make_vad(), pause_check_ms=250), pcm_frames)
    assert [type(e) for _, e in events] == [SpeechStarted, Paused, Paused, SpeechEnded]
    (_, _), (p1, paused), (p2, _), (end_index, ended) = events
    assert abs(p1 + 1 - first_end - 250 // 20) <= 2  # 250 ms into the caller's pause
    assert paused.at_ms == (p1 + 1) * 20 and paused.last_speech_ms < paused.at_ms
    assert abs(p2 + 1 - second_end - 250 // 20) <= 2
    assert ended.reason == "silence"  # refused checks change nothing: the timeout still ends it
    assert abs(end_index + 1 - second_end - 35) <= 2

    endpointer = Endpointer(make_vad(), pause_check_ms=250)
    assert endpointer.end_on_pause() is None  # before speech
    events = run(endpointer, pcm_frames[: p1 + 1])
    assert isinstance(events[-1][1], Paused)
    ended = endpointer.end_on_pause()
    assert isinstance(ended, SpeechEnded) and ended.reason == "pause" and ended.at_ms == (p1 + 1) * 20
    assert endpointer.state is TurnState.ENDED and endpointer.end_on_pause() is None


def test_end_on_pause_is_refused_once_the_caller_speaks_again():
    first, second = flite("four two seven"), flite("nine one")
    pcm_frames = frames(silence(500), first, silence(400), second, silence(1500))
    endpointer = Endpointer(make_vad(), pause_check_ms=250)
    paused = next(i for i, e in run(endpointer, pcm_frames) if isinstance(e, Paused))
    endpointer.reset()
    run(endpointer, pcm_frames[: paused + 1])
    resumed = 25 + n_frames(first) + 20 + n_frames(second) // 2  # a check answered late: "nine" began
    run(endpointer, pcm_frames[paused + 1 : resumed])
    assert endpointer.end_on_pause() is None
    assert endpointer.state is TurnState.SPEAKING


def test_no_pause_checks_unless_asked_or_when_not_shorter_than_the_silence_timeout():
    pcm_frames = frames(silence(500), flite("four two seven"), silence(400), flite("nine one"), silence(1500))
    for endpointer in (Endpointer(make_vad()), Endpointer(make_vad(), silence_ms=700, pause_check_ms=700)):
        assert [type(e) for _, e in run(endpointer, pcm_frames)] == [SpeechStarted, SpeechEnded]
        assert endpointer.end_on_pause() is None
    early = Endpointer(make_vad(), pause_check_ms=250)  # an early close requested: no check needed
    started = next(i for i, e in run(early, pcm_frames) if isinstance(e, SpeechStarted))
    early.reset()
    run(early, pcm_frames[: started + 5])
    early.request_early_close()
    assert [type(e) for _, e in run(early, pcm_frames[started + 5 :])] == [SpeechEnded]
