"""A tiny in-memory SIP "network" for sans-I/O user-agent tests (no sockets, no sleeps).

:class:`Net` drains the ``outbox`` of each registered :class:`UserAgent` (keyed by its
``(host, port)``), delivers the bytes to the addressed UA's ``receive`` and keeps a fake clock
that jumps from one ``next_deadline()`` to the next, calling ``expire``. Rules can drop,
duplicate or hold back (reorder) chosen packets; every packet is logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from parley.sip.dialog import hop_address
from parley.sip.message import SipRequest, SipResponse, parse_message
from parley.sip.uri import NameAddr
from parley.sip.useragent import CallEvent, UserAgent

Address = tuple[str, int]


@dataclass
class Packet:
    src: Address
    dst: Address
    transport: str
    data: bytes
    time: float
    fate: str = "delivered"  # "delivered", "dropped", "held", "forwarded", "undeliverable"

    @property
    def msg(self) -> SipRequest | SipResponse:
        return parse_message(self.data)

    @property
    def label(self) -> str:
        """``"INVITE"``, ``"ACK"``, ``"200 INVITE"``, ``"487 INVITE"``... for compact assertions."""
        try:
            msg = self.msg
        except ValueError:
            return "garbage"
        if isinstance(msg, SipRequest):
            return msg.method
        return f"{msg.status} {msg.cseq[1]}"


Match = Callable[[Packet], bool]


def resolved(addr: Address) -> Address:
    """The network's "DNS": a host name without a port (port 0, RFC 3263 SRV first) is on 5060."""
    return addr if addr[1] else (addr[0], 5060)


def request(method: str) -> Match:
    return lambda p: p.label == method


def response(status: int, method: str = "INVITE") -> Match:
    return lambda p: p.label == f"{status} {method}"


@dataclass
class _Rule:
    match: Match
    action: str  # "drop", "dup", "hold"
    count: int | None  # None: forever


@dataclass
class Net:
    uas: dict[Address, UserAgent] = field(default_factory=dict)
    now: float = 0.0
    log: list[Packet] = field(default_factory=list)
    held: list[Packet] = field(default_factory=list)
    events: dict[Address, list[CallEvent]] = field(default_factory=dict)
    proxies: set[Address] = field(default_factory=set)
    _rules: list[_Rule] = field(default_factory=list)

    @classmethod
    def of(cls, *uas: UserAgent) -> Net:
        net = cls()
        for ua in uas:
            net.add(ua)
        return net

    def add(self, ua: UserAgent) -> None:
        self.uas[(ua.host, ua.port)] = ua
        self.events[(ua.host, ua.port)] = []

    # -- fault injection ---------------------------------------------------------------------
    def drop(self, match: Match, count: int | None = 1) -> None:
        self._rules.append(_Rule(match, "drop", count))

    def duplicate(self, match: Match, count: int | None = 1) -> None:
        self._rules.append(_Rule(match, "dup", count))

    def hold(self, match: Match, count: int | None = 1) -> None:
        """Keep matching packets back until :meth:`release` (to deliver them out of order)."""
        self._rules.append(_Rule(match, "hold", count))

    def clear_rules(self) -> None:
        self._rules.clear()

    def _action(self, packet: Packet) -> str | None:
        for rule in self._rules:
            if rule.count != 0 and rule.match(packet):
                if rule.count is not None:
                    rule.count -= 1
                return rule.action
        return None

    # -- delivery ----------------------------------------------------------------------------
    def _collect(self) -> None:
        for addr, ua in self.uas.items():
            if ua.events:
                self.events[addr].extend(ua.events)
                ua.events[:] = []

    def forward(self, addr: Address) -> None:
        """Make ``addr`` a transparent proxy for requests: it consumes its own Route entry
        (loose routing, or the strict-routing Request-URI rewrite of RFC 3261 §16.4) and sends
        the request on, keeping the original source address (it adds no Via)."""
        self.proxies.add(addr)

    def _proxy(self, packet: Packet) -> None:
        msg = packet.msg
        if not isinstance(msg, SipRequest):
            packet.fate = "undeliverable"
            return
        routes = msg.headers.get_all("Route")
        if resolved(hop_address(msg.request_uri, packet.transport)[0]) == packet.dst and routes:
            msg.uri = str(NameAddr.parse(routes[-1]).uri)  # we were a strict router's target
            routes = routes[:-1]
        elif (
            routes and resolved(hop_address(NameAddr.parse(routes[0]).uri, packet.transport)[0]) == packet.dst
        ):
            routes = routes[1:]
        msg.headers.replace("Route", routes)
        next_uri = NameAddr.parse(routes[0]).uri if routes else msg.request_uri
        (dst, transport) = hop_address(next_uri, packet.transport)
        packet.fate = "forwarded"
        onward = Packet(packet.src, resolved(dst), transport, msg.serialize(), self.now)
        self.log.append(onward)
        self._deliver(onward)

    def _deliver(self, packet: Packet) -> None:
        if packet.dst in self.proxies:
            self._proxy(packet)
            return
        target = self.uas.get(packet.dst)
        if target is None:
            packet.fate = "undeliverable"
            return
        target.receive(packet.data, packet.src, packet.transport, self.now)

    def release(self) -> None:
        """Deliver the held packets (in the order they were held), then flush."""
        held, self.held = self.held, []
        for packet in held:
            packet.fate = "delivered"
            self._deliver(packet)
        self.flush()

    def flush(self) -> None:
        """Deliver everything in every outbox until the network is quiet."""
        while True:
            self._collect()
            pending: list[Packet] = []
            for addr, ua in self.uas.items():
                for out in ua.outbox:
                    pending.append(Packet(addr, resolved(out.addr), out.transport, out.data, self.now))
                ua.outbox[:] = []
            if not pending:
                return
            for packet in pending:
                action = self._action(packet)
                self.log.append(packet)
                if action == "drop":
                    packet.fate = "dropped"
                elif action == "hold":
                    packet.fate = "held"
                    self.held.append(packet)
                else:
                    self._deliver(packet)
                    if action == "dup":
                        copy = Packet(packet.src, packet.dst, packet.transport, packet.data, self.now)
                        self.log.append(copy)
                        self._deliver(copy)

    def next_deadline(self) -> float | None:
        deadlines = [d for ua in self.uas.values() if (d := ua.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    def advance(self, seconds: float) -> None:
        """Run the clock forward ``seconds``, firing every timer on the way."""
        self.run_until(self.now + seconds)

    def run_until(self, end: float) -> None:
        self.flush()
        while (deadline := self.next_deadline()) is not None and deadline <= end:
            self.now = max(self.now, deadline)
            for ua in self.uas.values():
                ua.expire(self.now)
            self.flush()
        self.now = max(self.now, end)
        self._collect()

    # -- inspection --------------------------------------------------------------------------
    def sent(self, src: UserAgent | None = None, since: int = 0) -> list[Packet]:
        packets = self.log[since:]
        if src is not None:
            packets = [p for p in packets if p.src == (src.host, src.port)]
        return packets

    def labels(self, src: UserAgent | None = None, since: int = 0) -> list[str]:
        return [p.label for p in self.sent(src, since)]

    def events_of(self, ua: UserAgent, kind: type | None = None) -> list[CallEvent]:
        self._collect()
        events = self.events[(ua.host, ua.port)]
        return [e for e in events if kind is None or isinstance(e, kind)]
