"""Voice activity detection on 20 ms, 8 kHz telephone frames: WebRTC's GMM VAD or Silero's ONNX model.

Measured with ``bench/vad_compare.py`` (16 utterances from flite kal/slt/awb/rms and espeak-ng at
−28…−16 dBFS between 0.7–1.2 s silences, 47 s, G.711 µ-law round trip; the reference is an energy
detector on the clean signal, frame speech when within 30 dB of the utterance's loudest frame, so
"accuracy" also counts the VADs' natural hangover inside words as errors; threshold 0.5):

==============================  ===========  ===========  ===========  =============
figure                          webrtc/1     webrtc/2     webrtc/3     silero (ONNX)
==============================  ===========  ===========  ===========  =============
frame accuracy, clean           89.1 %       90.5 %       91.5 %       90.2 %
… white noise, 20 / 10 dB SNR   90.6 / 57.4  91.5 / 90.5  90.8 / 89.3  90.0 / 88.2
… pink noise, 20 / 10 dB SNR    90.1 / 89.7  91.5 / 90.2  90.8 / 89.3  89.6 / 89.3
missed speech frames, 10 dB     0.0–2.1 %    4.8–5.6 %    8.5–8.8 %    3.9–4.8 %
onset delay mean, clean         0 ms         0 ms         2.5 ms       44 ms
onset delay mean / max, noisy   8–15 / 80    8–16 / 80    14–28 / 160  30–44 / 160
noise-only FP, ≤ −35 dBFS       ≤ 0.7 %      ≤ 0.3 %      ≤ 0.3 %      0 %
noise-only FP, white −30 dBFS   100 %        93 %         1.4 %        0 %
noise-only FP, pink −30/−25     41 / 100 %   17 / 100 %   17 / 99 %    0 / 0 %
CPU per 20 ms frame             3 µs         3 µs         3 µs         110–150 µs
barge-in stop after onset       —            40 ms        —            40–300 ms
==============================  ===========  ===========  ===========  =============

The default is ``webrtc`` (aggressiveness 2). On speech both are equally accurate (≈ 90 % against
the energy reference, clean and down to 10 dB SNR), but WebRTC sees onsets 30–40 ms sooner: Silero
decides per 32 ms window and needs a couple of them. On 32 flite utterances (4 voices), barge-in
with two onset frames stopped the prompt 40 ms after the first audible frame every time with
WebRTC, and after 40–300 ms (median 80) with Silero, over the 60 ms budget. WebRTC also costs 3 µs
instead of 110–150 µs per frame (at 1,500 calls per core Silero alone would need eight cores).
Silero's strength is stationary noise: from −30 dBFS of white or pink noise WebRTC calls nearly
every frame speech (turns then end only at ``max_speech_ms`` and every prompt is barged in),
Silero none. Select it with ``make_vad("silero")`` for noisy lines.

Silero's ONNX model ships inside the ``silero-vad`` wheel, but that package imports torch (≈1 GB), so
Parley never imports it: the model file is located with :func:`importlib.util.find_spec` (which does
not execute the package) and run with onnxruntime directly. Install it with
``pip install --no-deps silero-vad``. One :class:`onnxruntime.InferenceSession` is shared by every
call (``run`` is thread-safe and the recurrent state is passed in explicitly), so a call costs only
its own state tensors, not another copy of the model.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from parley.speech.types import FRAME_SAMPLES, TELEPHONE_RATE

if TYPE_CHECKING:
    import onnxruntime

DEFAULT_VAD = "webrtc"


@runtime_checkable
class Vad(Protocol):
    """A frame-by-frame speech detector with per-call state (one instance per call and consumer).

    An implementation may also set ``hangover_ms``: how long, typically, it keeps reporting speech
    after the speech stopped (built-in hangover, window lag). The endpointer subtracts it so that
    ``silence_ms`` is counted from the end of the caller's speech, not from the VAD's last frame.
    """

    def speech_probability(self, frame: np.ndarray) -> float:
        """Probability (0..1) that one 20 ms, 8 kHz int16 frame (160 samples) contains speech."""
        ...

    def reset(self) -> None:
        """Forget everything heard so far (a new turn or a new call)."""
        ...


class WebRtcVad:
    """The WebRTC GMM VAD (``webrtcvad-wheels``): a hard 0/1 decision per frame.

    ``aggressiveness`` 0..3: higher rejects more non-speech (and more quiet speech). WebRTC holds
    "speech" for up to 7 (modes 0–1) or 5 (modes 2–3) frames after a long speech run; the
    ``hangover_ms`` figures are the measured median lag of its last speech frame behind the end
    of 36 flite utterances (4 voices), G.711.
    """

    HANGOVER_MS = {0: 140, 1: 140, 2: 80, 3: 40}

    def __init__(self, aggressiveness: int = 2) -> None:
        import webrtcvad

        if not 0 <= aggressiveness <= 3:
            raise ValueError("aggressiveness must be 0..3")
        self.aggressiveness = aggressiveness
        self.hangover_ms = self.HANGOVER_MS[aggressiveness]
        self._module = webrtcvad
        self._vad = webrtcvad.Vad(aggressiveness)

    def speech_probability(self, frame: np.ndarray) -> float:
        if len(frame) != FRAME_SAMPLES:
            raise ValueError(f"expected a {FRAME_SAMPLES}-sample frame, got {len(frame)}")
        return (
            1.0 if self._vad.is_speech(frame.astype(np.int16, copy=False).tobytes(), TELEPHONE_RATE) else 0.0
        )

    def reset(self) -> None:
        self._vad = self._module.Vad(self.aggressiveness)


def silero_model_path() -> Path:
    """Where the ``silero-vad`` wheel keeps ``silero_vad.onnx``, found without importing the package."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("Silero VAD is not installed: pip install --no-deps silero-vad")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise RuntimeError(f"the silero-vad package has no {path.name} at {path.parent}")
    return path


_sessions: dict[Path, onnxruntime.InferenceSession] = {}
_sessions_lock = threading.Lock()


def _shared_session(path: Path) -> onnxruntime.InferenceSession:
    with _sessions_lock:
        session = _sessions.get(path)
        if session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
            _sessions[path] = session
        return session


class SileroVad:
    """Silero VAD v5+ (ONNX, CPU, one thread) fed 8 kHz audio directly.

    At 8 kHz the model takes 256-sample (32 ms) windows preceded by the previous window's last 32
    samples, and carries a ``(2, 1, 128)`` recurrent state. Frames are buffered into windows (five
    windows per eight frames); a frame that completes no window returns the latest window's
    probability, so a decision lags the audio by 0–12 ms plus the window itself. Its last speech
    frame lags the end of speech by a median 60 ms (same measurement as :class:`WebRtcVad`).
    """

    WINDOW = 256
    CONTEXT = 32
    hangover_ms = 60

    def __init__(self, model_path: Path | str | None = None) -> None:
        self._session = _shared_session(Path(model_path) if model_path else silero_model_path())
        self._sr = np.array(TELEPHONE_RATE, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._input = np.zeros((1, self.CONTEXT + self.WINDOW), dtype=np.float32)
        self._filled = 0  # samples of the current window already in self._input
        self._probability = 0.0

    def speech_probability(self, frame: np.ndarray) -> float:
        if len(frame) != FRAME_SAMPLES:
            raise ValueError(f"expected a {FRAME_SAMPLES}-sample frame, got {len(frame)}")
        samples = frame.astype(np.float32) * (1.0 / 32768.0)
        buffer = self._input[0]
        start = 0
        while start < len(samples):
            take = min(self.WINDOW - self._filled, len(samples) - start)
            at = self.CONTEXT + self._filled
            buffer[at : at + take] = samples[start : start + take]
            self._filled += take
            start += take
            if self._filled == self.WINDOW:
                out, self._state = self._session.run(
                    None, {"input": self._input, "state": self._state, "sr": self._sr}
                )
                self._probability = float(out[0, 0])
                buffer[: self.CONTEXT] = buffer[-self.CONTEXT :]
                self._filled = 0
        return self._probability


VADS: dict[str, type[WebRtcVad] | type[SileroVad]] = {"webrtc": WebRtcVad, "silero": SileroVad}


def make_vad(name: str = DEFAULT_VAD, **options: object) -> Vad:
    """A new VAD by name (``webrtc`` or ``silero``); ``options`` go to its constructor."""
    try:
        cls = VADS[name]
    except KeyError:
        raise ValueError(f"unknown VAD {name!r}; choose one of {', '.join(VADS)}") from None
    return cls(**options)  # type: ignore[arg-type]
