"""Locating SIP servers (RFC 3263 §4): a host name in a URI becomes addresses to send to.

Lookups go through aiodns (c-ares): asynchronous, and it reads the hosts file as well as DNS, so
``sip:x@localhost`` works as people expect. A numeric host needs no lookup. A name with a port
gets A/AAAA records; a name without one first gets SRV records (``_sip._udp``, ``_sip._tcp``,
``_sips._tcp``; NAPTR is skipped, as §4.1 allows a client that knows its transport), ordered by
priority and weight (RFC 2782), then A/AAAA for each target; without SRV records, A/AAAA on the
transport's default port. Answers are cached for their TTL (at least ``min_ttl``, at most
``max_ttl``); a failure is cached for ``negative_ttl`` so a retransmitting transaction does not
turn into a query flood. Failures raise :class:`ResolveError`, which the transport reports to the
transaction as a transport error (RFC 3261 §8.1.3.1: treated as a 503).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from collections import OrderedDict
from dataclasses import dataclass

import aiodns
import aiodns.error

Address = tuple[str, int]
DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "TLS": 5061}
SRV_PREFIXES = {"UDP": "_sip._udp.", "TCP": "_sip._tcp.", "TLS": "_sips._tcp."}


class ResolveError(Exception):
    """A SIP target's host name could not be resolved."""


def is_numeric(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass(slots=True)
class _Entry:
    expires: float
    addresses: list[Address] | None  # None: a cached failure
    error: str = ""


class SipResolver:
    """RFC 3263 resolution with a bounded TTL cache; one instance per transport."""

    def __init__(
        self,
        *,
        timeout: float = 4.0,
        min_ttl: float = 5.0,
        max_ttl: float = 3600.0,
        negative_ttl: float = 30.0,
        max_entries: int = 4096,
        nameservers: list[str] | None = None,
    ) -> None:
        self.timeout = timeout
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self._nameservers = nameservers
        self._dns: aiodns.DNSResolver | None = None
        self._cache: OrderedDict[tuple[str, int, str], _Entry] = OrderedDict()
        self.stats = {"lookups": 0, "cache_hits": 0, "failures": 0}

    def _resolver(self) -> aiodns.DNSResolver:
        if self._dns is None:
            options = {"timeout": self.timeout, "tries": 2}
            self._dns = aiodns.DNSResolver(nameservers=self._nameservers, **options)
        return self._dns

    def cached(self, host: str, port: int, transport: str, now: float) -> list[Address] | None:
        """The cached addresses for a target, None when a lookup is needed; raises a cached failure."""
        if is_numeric(host):
            return [(host.strip("[]"), port or DEFAULT_PORTS.get(transport, 5060))]
        entry = self._cache.get((host.lower(), port, transport))
        if entry is None or entry.expires <= now:
            return None
        self._cache.move_to_end((host.lower(), port, transport))
        self.stats["cache_hits"] += 1
        if entry.addresses is None:
            raise ResolveError(entry.error)
        return entry.addresses

    async def resolve(self, host: str, port: int, transport: str) -> list[Address]:
        """Addresses for ``host`` in preference order; ``port`` 0 means the URI named none (SRV)."""
        loop = asyncio.get_running_loop()
        found = self.cached(host, port, transport, loop.time())
        if found is not None:
            return found
        self.stats["lookups"] += 1
        key = (host.lower(), port, transport)
        try:
            addresses, ttl = await asyncio.wait_for(self._lookup(host, port, transport), self.timeout * 2 + 1)
        except (aiodns.error.DNSError, TimeoutError, OSError, ValueError) as exc:
            self.stats["failures"] += 1
            reason = f"cannot resolve {host!r}: {_describe(exc)}"
            self._store(key, _Entry(loop.time() + self.negative_ttl, None, reason))
            raise ResolveError(reason) from None
        if not addresses:
            self.stats["failures"] += 1
            reason = f"cannot resolve {host!r}: no addresses"
            self._store(key, _Entry(loop.time() + self.negative_ttl, None, reason))
            raise ResolveError(reason)
        self._store(key, _Entry(loop.time() + min(max(ttl, self.min_ttl), self.max_ttl), addresses))
        return addresses

    def _store(self, key: tuple[str, int, str], entry: _Entry) -> None:
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    async def _lookup(self, host: str, port: int, transport: str) -> tuple[list[Address], float]:
        if port:
            return await self._addresses(host, port)
        try:
            answer = await self._resolver().query_dns(SRV_PREFIXES.get(transport, "_sip._udp.") + host, "SRV")
        except aiodns.error.DNSError:
            answer = None
        records = [r for r in answer.answer if r.type == 33] if answer is not None else []  # 33: SRV
        if not records:
            return await self._addresses(host, DEFAULT_PORTS.get(transport, 5060))
        ttl = min(r.ttl for r in records)
        out: list[Address] = []
        for record in _srv_order(records):
            try:
                found, found_ttl = await self._addresses(record.data.target.rstrip("."), record.data.port)
            except aiodns.error.DNSError:
                continue
            out.extend(a for a in found if a not in out)
            ttl = min(ttl, found_ttl)
        return out, ttl

    async def _addresses(self, host: str, port: int) -> tuple[list[Address], float]:
        result = await self._resolver().getaddrinfo(host, port=port, type=socket.SOCK_DGRAM)
        out: list[Address] = []
        ttls: list[float] = []
        for node in result.nodes:
            address = node.addr[0].decode() if isinstance(node.addr[0], bytes) else str(node.addr[0])
            if (address, port) not in out:
                out.append((address, port))
                ttls.append(float(node.ttl))
        # IPv4 first: the sockets here are IPv4 unless bound to an IPv6 address.
        out.sort(key=lambda a: ":" in a[0])
        return out, min(ttls) if ttls else self.min_ttl

    def close(self) -> None:
        if self._dns is not None:
            self._dns.cancel()
            self._dns = None


def _srv_order(records: list) -> list:
    """RFC 2782 order: by priority, and within one priority a weighted random draw."""
    out = []
    for priority in sorted({r.data.priority for r in records}):
        group = [r for r in records if r.data.priority == priority]
        while group:
            total = sum(r.data.weight for r in group)
            pick = random.uniform(0, total) if total else 0.0
            running = 0.0
            chosen = group[0]
            for record in group:
                running += record.data.weight
                if running >= pick:
                    chosen = record
                    break
            out.append(chosen)
            group.remove(chosen)
    return out


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiodns.error.DNSError) and len(exc.args) >= 2:
        return str(exc.args[1])
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
