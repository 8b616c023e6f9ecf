"""Prometheus metrics of voice agents, owned by the agent layer (see :mod:`parley.telephony.metrics`
for how they are exposed). Labels carry outcomes only, never caller data."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TURN_LATENCY_SECONDS = Histogram(
    "parley_turn_latency_seconds",
    "From the caller's last speech to the agent's next step decided: the end-of-speech wait, the "
    "recognisers' finish and understanding (the reply's playback follows; cached prompts at once).",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0),
)
WEBHOOK_SECONDS = Histogram(
    "parley_webhook_seconds",
    "Webhook calls from agents, retries included.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
WEBHOOK_ERRORS = Counter(
    "parley_webhook_errors",
    "Webhook calls that failed: no answer or a transport error (error), an HTTP error status "
    "(status), or an outcome that cannot be known (unknown).",
    ["kind"],
)
DECODE_LOAD = Gauge(
    "parley_decode_load",
    "Load of an agent's speech decoder processes, or the cores they share (1.0: saturated).",
    multiprocess_mode="livemax",
)
RECORDS_HELD = Gauge(
    "parley_records_held",
    "Call records waiting in memory because the disk refused them (full, read-only, I/O errors).",
    multiprocess_mode="livesum",
)
RECORDS_LOST = Counter(
    "parley_records_lost",
    "Call records dropped: the disk refused them and the memory bound was reached (or a write was "
    "cut short by a full disk).",
)
