"""Limits that keep a SIP edge facing the internet alive, and who may talk to it at all.

:class:`SipLimits` holds every limit with its default (``parley serve`` has an option for each):

==========================  =========  ============================================================
limit                       default    what happens at it
==========================  =========  ============================================================
``tcp_idle_timeout``        120 s      a TCP connection without traffic (and without a call on it)
                                       is closed
``max_connections``         4096       more TCP connections are closed as they are accepted
``max_connections_per_ip``  256        ditto, per source address
``max_message_size``        65,535 B   a request is answered 413 (and a stream connection closed)
``max_transactions``        20,000     new requests get a stateless 503 with Retry-After
``rate_per_ip``             200 /s     requests beyond the rate (with a burst of twice it) from one
                                       source get 503 (``rate_action="reply"``) or are dropped,
                                       as Kamailio's pike module does
==========================  =========  ============================================================

:class:`SourceRate` is the per-source token bucket and :class:`SourceFilter` the allow-list of
source networks; both are sans-I/O (fed the time).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class SipLimits:
    tcp_idle_timeout: float = 120.0
    max_connections: int = 4096
    max_connections_per_ip: int = 256
    max_message_size: int = 65_535
    max_transactions: int = 20_000
    rate_per_ip: float = 200.0  # 0: no rate limit
    rate_action: str = "reply"  # "reply" (503) or "drop"

    def __post_init__(self) -> None:
        if self.rate_action not in ("reply", "drop"):
            raise ValueError("rate_action must be 'reply' or 'drop'")
        for name in ("max_connections", "max_connections_per_ip", "max_message_size", "max_transactions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.tcp_idle_timeout <= 0 or self.rate_per_ip < 0:
            raise ValueError("tcp_idle_timeout must be positive and rate_per_ip not negative")


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class SourceRate:
    """A token bucket per source address: ``rate`` requests a second, bursts of ``2 * rate``.

    Buckets that have refilled are forgotten when the table grows past ``max_sources``, so a
    flood from many addresses costs bounded memory.
    """

    def __init__(self, rate: float, *, max_sources: int = 65_536) -> None:
        self.rate = rate
        self.burst = 2.0 * rate
        self.max_sources = max_sources
        self._buckets: dict[str, _Bucket] = {}
        self.limited = 0

    def allow(self, source: str, now: float) -> bool:
        if self.rate <= 0:
            return True
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                self._forget_full(now)
            bucket = self._buckets[source] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        self.limited += 1
        return False

    def _forget_full(self, now: float) -> None:
        full = [
            source
            for source, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.updated) * self.rate >= self.burst
        ]
        for source in full:
            del self._buckets[source]
        if len(self._buckets) >= self.max_sources:  # all busy: the oldest go
            for source in list(self._buckets)[: self.max_sources // 4]:
                del self._buckets[source]

    def __len__(self) -> int:
        return len(self._buckets)


class SourceFilter:
    """An allow-list of source networks (e.g. the trunk's or the load balancer's); empty allows all."""

    def __init__(self, networks: Iterable[str] = ()) -> None:
        self.networks: list[IpNetwork] = [ipaddress.ip_network(n.strip(), strict=False) for n in networks]
        self._known: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def allows(self, source: str) -> bool:
        if not self.networks:
            return True
        known = self._known.get(source)
        if known is not None:
            return known
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        allowed = any(address in network for network in self.networks)
        if len(self._known) < 4096:
            self._known[source] = allowed
        return allowed
