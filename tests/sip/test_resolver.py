"""RFC 3263 resolution against a real DNS server on loopback: c-ares (aiodns) asks, dnspython answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from parley.sip.resolver import ResolveError, SipResolver

ZONE = {
    ("_sip._udp.trunk.test.", "SRV"): ["10 0 5070 primary.trunk.test.", "20 0 5080 backup.trunk.test."],
    ("_sips._tcp.trunk.test.", "SRV"): ["10 0 5061 primary.trunk.test."],
    ("primary.trunk.test.", "A"): ["127.0.0.11"],
    ("backup.trunk.test.", "A"): ["127.0.0.12"],
    ("plain.test.", "A"): ["127.0.0.13"],
    ("short.test.", "A"): ["127.0.0.14"],
}
TTL = {"short.test.": 1}
NAMES = {name for name, _ in ZONE}


class DnsServer(asyncio.DatagramProtocol):
    """Answers from ``ZONE`` (NXDOMAIN for other names, an empty answer for other types); logs queries."""

    def __init__(self) -> None:
        self.queries: list[tuple[str, str]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.DatagramTransport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        for question in query.question:
            name, kind = question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype)
            self.queries.append((name, kind))
            if name not in NAMES:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            elif (name, kind) in ZONE:
                ttl = TTL.get(name, 300)
                reply.answer.append(dns.rrset.from_text_list(name, ttl, "IN", kind, ZONE[name, kind]))
        assert self.transport is not None
        self.transport.sendto(reply.to_wire(), addr)

    def asked(self, name: str) -> list[str]:
        return [kind for asked, kind in self.queries if asked == name]


@pytest.fixture
async def dns_server() -> AsyncIterator[tuple[DnsServer, SipResolver]]:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(DnsServer, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    resolver = SipResolver(nameservers=[f"127.0.0.1:{port}"], timeout=1.0, min_ttl=0.5)
    try:
        yield server, resolver
    finally:
        resolver.close()
        transport.close()


async def test_a_name_without_port_follows_srv_records_in_priority_order(dns_server) -> None:
    server, resolver = dns_server
    assert await resolver.resolve("trunk.test", 0, "UDP") == [("127.0.0.11", 5070), ("127.0.0.12", 5080)]
    assert server.asked("_sip._udp.trunk.test.") == ["SRV"]
    assert "A" in server.asked("primary.trunk.test.") and "A" in server.asked("backup.trunk.test.")
    assert await resolver.resolve("trunk.test", 0, "TLS") == [("127.0.0.11", 5061)]
    assert server.asked("_sips._tcp.trunk.test.") == ["SRV"]


async def test_answers_are_cached_for_their_ttl(dns_server) -> None:
    server, resolver = dns_server
    first = await resolver.resolve("trunk.test", 0, "UDP")
    asked = len(server.queries)
    assert await resolver.resolve("TRUNK.test", 0, "UDP") == first
    assert len(server.queries) == asked
    assert resolver.stats["cache_hits"] == 1 and resolver.stats["lookups"] == 1

    assert await resolver.resolve("short.test", 5060, "UDP") == [("127.0.0.14", 5060)]
    asked = len(server.queries)
    await resolver.resolve("short.test", 5060, "UDP")
    assert len(server.queries) == asked  # within its 1 s TTL
    await asyncio.sleep(1.2)
    await resolver.resolve("short.test", 5060, "UDP")
    assert len(server.queries) > asked  # expired: asked again


async def test_a_name_with_a_port_gets_addresses_only(dns_server) -> None:
    server, resolver = dns_server
    assert await resolver.resolve("plain.test", 5099, "UDP") == [("127.0.0.13", 5099)]
    assert "SRV" not in server.asked("_sip._udp.plain.test.")


async def test_without_srv_records_the_transport_default_port_is_used(dns_server) -> None:
    server, resolver = dns_server
    assert await resolver.resolve("plain.test", 0, "UDP") == [("127.0.0.13", 5060)]
    assert await resolver.resolve("plain.test", 0, "TLS") == [("127.0.0.13", 5061)]
    assert server.asked("_sip._udp.plain.test.") == ["SRV"]


async def test_a_failure_is_an_error_and_is_cached(dns_server) -> None:
    server, resolver = dns_server
    with pytest.raises(ResolveError, match=r"missing\.test"):
        await resolver.resolve("missing.test", 5060, "UDP")
    asked = len(server.queries)
    with pytest.raises(ResolveError, match=r"missing\.test"):
        await resolver.resolve("missing.test", 5060, "UDP")
    assert len(server.queries) == asked  # the failure's negative TTL: no query flood
    assert resolver.stats["failures"] == 1


async def test_numeric_hosts_need_no_lookup(dns_server) -> None:
    server, resolver = dns_server
    assert await resolver.resolve("192.0.2.7", 0, "TLS") == [("192.0.2.7", 5061)]
    assert await resolver.resolve("[::1]", 5070, "UDP") == [("::1", 5070)]
    assert server.queries == []
