"""Prometheus metrics of speech recognition, owned by the speech layer (exposed as
:mod:`parley.telephony.metrics` says). Labels: engine names and slot types, never transcripts."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ASR_FINAL_SECONDS = Histogram(
    "parley_asr_final_seconds",
    "From the end of the caller's speech to each engine's final transcript.",
    ["engine"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0),
)
ASR_WINS = Counter(
    "parley_asr_wins", "Turns whose transcript the arbiter took from this engine.", ["engine", "slot_type"]
)
ASR_MISSES = Counter(
    "parley_asr_misses",
    "Turns an engine gave no final for: an error, or the arbiter's deadline (timeout).",
    ["engine", "why"],
)
