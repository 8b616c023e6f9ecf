"""Prometheus metrics of calls, owned by the telephony layer (prometheus-client).

The layer only updates them; whoever runs the process exposes them (``parley serve --admin-port``,
or a node's supervisor summing its workers through prometheus-client's multiprocess mode:
:mod:`parley.cluster.metrics`). No label carries caller data: only reasons and outcomes.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CALLS_ACTIVE = Gauge("parley_calls_active", "Calls in progress.", multiprocess_mode="livesum")
CALLS_ADMITTED = Counter("parley_calls_admitted", "Incoming calls answered (200 OK sent).")
CALLS_REFUSED = Counter(
    "parley_calls_refused",
    "Incoming calls refused: 503 while draining, over --max-calls or over --max-load; 488 no codec; "
    "503 no RTP port.",
    ["reason"],
)
CALLS_ENDED = Counter("parley_calls_ended", "Calls ended, by how.", ["reason"])
CALL_SETUP_SECONDS = Histogram(
    "parley_call_setup_seconds",
    "From an INVITE's arrival to the 200 OK sent.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
RTP_PACKETS_EXPECTED = Counter("parley_rtp_packets_expected", "RTP packets expected from callers (RFC 3550).")
RTP_PACKETS_LOST = Counter("parley_rtp_packets_lost", "RTP packets from callers that never arrived.")
RTP_JITTER_SECONDS = Histogram(
    "parley_rtp_jitter_seconds",
    "Each ended call's last interarrival jitter estimate (RFC 3550 §6.4.1).",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16),
)
LOAD = Gauge(
    "parley_load",
    "The busiest load admission control watches (1.0: a core saturated): the event loop's process or "
    "an agent's speech decoders.",
    multiprocess_mode="livemax",  # a dead worker's last load is dropped
)
SIP_REFUSED = Counter(
    "parley_sip_refused",
    "SIP requests and TCP/TLS connections the edge refused: source (not in --allow), rate (over "
    "--rate-per-ip), transactions (over --max-transactions), auth (digest credentials refused), "
    "connections (over --max-connections or --max-connections-per-ip).",
    ["reason"],
)
SIP_TCP_CONNECTIONS = Gauge(
    "parley_sip_tcp_connections", "SIP connections open (TCP and TLS).", multiprocess_mode="livesum"
)
