"""SIP transaction layer (RFC 3261 §17, with RFC 6026's Accepted states), sans-I/O.

The four state machines (INVITE/non-INVITE, client/server) keep their timers A–M as
deadlines; :class:`TransactionLayer` keeps one heap of them so an event loop needs a single
timer for the whole stack (``next_deadline`` / ``expire``). Time is whatever clock the caller
passes in, so tests drive it by hand. Hand-written: no Python library offers SIP transactions
without its own I/O.
"""

from __future__ import annotations

import heapq
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from parley.sip.message import Headers, SipRequest, SipResponse, make_response

T1 = 0.5
T2 = 4.0
T4 = 5.0
MAGIC_COOKIE = "z9hG4bK"
COMPACT_MIN = 4096  # timer heap entries before stopped timers' entries are swept out

Address = tuple[str, int]


def response_address(request: SipRequest, source: Address, transport: str) -> Address:
    """Where responses to ``request`` go (§18.2.2, RFC 3581): the source for rport and streams."""
    via = request.top_via
    if transport != "UDP" or "rport" in via.params:
        return source
    host = via.params.get("received") or source[0]
    return host, via.port or 5060


def new_branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(8)


class State(Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(slots=True)
class Outgoing:
    """Bytes for the transport to send; ``txn`` is the transaction that sent them, if any."""

    data: bytes
    addr: Address
    transport: str
    txn: Transaction | None = None


@dataclass(slots=True)
class ResponseEvent:
    """A response for the TU, from a client transaction (``txn`` is None for stray 2xx)."""

    txn: ClientTransaction | None
    response: SipResponse


@dataclass(slots=True)
class RequestEvent:
    """A new request for the TU; ``txn`` is None for ACKs of 2xx (they have no transaction)."""

    txn: ServerTransaction | None
    request: SipRequest
    source: Address
    transport: str


@dataclass(slots=True)
class TimeoutEvent:
    """A client transaction got no final response (timer B/F), or a server one no ACK (H);
    ``transport_error``: its request could not be sent at all (RFC 3261 §17.1.4, a 503)."""

    txn: ClientTransaction | ServerTransaction
    transport_error: bool = False


Event = ResponseEvent | RequestEvent | TimeoutEvent


@dataclass(eq=False)
class Transaction:
    """State shared by all four machines."""

    key: tuple[str, ...]
    request: SipRequest
    addr: Address
    transport: str
    layer: TransactionLayer
    state: State = State.TRYING
    timers: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, float] = field(default_factory=dict)
    context: object = None

    @property
    def reliable(self) -> bool:
        return self.transport != "UDP"

    def _start(self, name: str, delay: float, now: float) -> None:
        deadline = now + delay
        self.timers[name] = deadline
        self.intervals[name] = delay
        self.layer._schedule(deadline, self, name)

    def _stop(self, *names: str) -> None:
        for name in names:
            self.timers.pop(name, None)

    def _terminate(self) -> None:
        self.state = State.TERMINATED
        self.timers.clear()
        self.layer._remove(self)

    def _send(self, data: bytes) -> None:
        self.layer.outbox.append(Outgoing(data, self.addr, self.transport, self))

    def on_timer(self, name: str, now: float) -> None:
        raise NotImplementedError


@dataclass(eq=False)
class ClientTransaction(Transaction):
    """INVITE (ICT, §17.1.1) and non-INVITE (NICT, §17.1.2) client transactions."""

    encoded: bytes = b""
    last_response: SipResponse | None = None

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"

    def start(self, now: float) -> None:
        self.encoded = self.request.serialize()
        self._send(self.encoded)
        if self.is_invite:
            self.state = State.CALLING
            if not self.reliable:
                self._start("A", T1, now)
            self._start("B", 64 * T1, now)
        else:
            self.state = State.TRYING
            if not self.reliable:
                self._start("E", T1, now)
            self._start("F", 64 * T1, now)

    def on_response(self, response: SipResponse, now: float) -> None:
        status = response.status
        events = self.layer.events
        if self.is_invite:
            if self.state in (State.CALLING, State.PROCEEDING):
                self._stop("A", "B")
                self.last_response = response
                if status < 200:
                    self.state = State.PROCEEDING
                elif status < 300:
                    self.state = State.ACCEPTED
                    self._start("M", 64 * T1, now)
                else:
                    self.state = State.COMPLETED
                    self._send(self._ack_for(response).serialize())
                    self._start("D", 0 if self.reliable else 32.0, now)
                events.append(ResponseEvent(self, response))
            elif self.state == State.ACCEPTED and 200 <= status < 300:
                events.append(ResponseEvent(self, response))  # the TU re-sends its ACK
            elif self.state == State.COMPLETED and status >= 300:
                self._send(self._ack_for(response).serialize())
            return
        if self.state in (State.TRYING, State.PROCEEDING):
            self.last_response = response
            if status < 200:
                self.state = State.PROCEEDING
            else:
                self._stop("E", "F")
                self.state = State.COMPLETED
                self._start("K", 0 if self.reliable else T4, now)
            events.append(ResponseEvent(self, response))

    def _ack_for(self, response: SipResponse) -> SipRequest:
        """The ACK for a non-2xx final response belongs to the transaction (§17.1.1.3)."""
        headers = Headers()
        headers.add("Via", self.request.headers.get("Via") or "")
        for name in ("From", "Call-ID"):
            headers.add(name, self.request.headers.get(name) or "")
        headers.add("To", response.headers.get("To") or "")
        headers.add("CSeq", f"{self.request.cseq[0]} ACK")
        for route in self.request.headers.get_all("Route"):
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        return SipRequest(headers, b"", method="ACK", uri=self.request.uri)

    def on_timer(self, name: str, now: float) -> None:
        if name in ("A", "E"):
            if name == "E" and self.state == State.PROCEEDING:
                interval = T2
            else:
                interval = self.intervals[name] * 2
                if name == "E":
                    interval = min(interval, T2)
            self._send(self.encoded)
            self._start(name, interval, now)
        elif name in ("B", "F"):
            self._terminate()
            self.layer.events.append(TimeoutEvent(self))
        else:  # D, K, M: absorb-retransmissions timers ran out
            self._terminate()


@dataclass(eq=False)
class ServerTransaction(Transaction):
    """INVITE (IST, §17.2.1) and non-INVITE (NIST, §17.2.2) server transactions."""

    last_response: bytes | None = None
    final_status: int = 0
    local_tag: str = ""  # the To tag of responses that create no dialog (§8.2.6.2); set on first use

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"

    def respond(self, response: SipResponse, now: float) -> None:
        """Send a response from the TU through this transaction (with a Server header, §20.35)."""
        if self.state in (State.COMPLETED, State.CONFIRMED, State.TERMINATED, State.ACCEPTED):
            return
        if self.layer.server_header and "Server" not in response.headers:
            response.headers.add("Server", self.layer.server_header)
        data = response.serialize()
        self.last_response = data
        self._send(data)
        status = response.status
        if status < 200:
            self.state = State.PROCEEDING
            return
        self.final_status = status
        if self.is_invite:
            if status < 300:
                self.state = State.ACCEPTED
                self._start("L", 64 * T1, now)
            else:
                self.state = State.COMPLETED
                if not self.reliable:
                    self._start("G", T1, now)
                self._start("H", 64 * T1, now)
        else:
            self.state = State.COMPLETED
            self._start("J", 0 if self.reliable else 64 * T1, now)

    def respond_with(
        self, status: int, reason: str | None = None, now: float = 0.0, **kwargs: object
    ) -> None:
        """Shorthand: build a response from the request and send it.

        Every response but 100 carries a To tag (§8.2.6.2): the one given, else this transaction's own.
        """
        if kwargs.get("to_tag") is None:
            if not self.local_tag:
                self.local_tag = secrets.token_hex(6)
            kwargs["to_tag"] = self.local_tag
        self.respond(make_response(self.request, status, reason, **kwargs), now)  # type: ignore[arg-type]

    def forget(self) -> None:
        """End a transaction answered statelessly: its retransmissions will be new requests."""
        self._terminate()

    def on_retransmission(self, request: SipRequest, now: float) -> None:
        if request.method == "ACK":
            if self.state == State.COMPLETED:
                self.state = State.CONFIRMED
                self._stop("G", "H")
                self._start("I", 0 if self.reliable else T4, now)
            return
        if self.state in (State.PROCEEDING, State.COMPLETED) and self.last_response is not None:
            self._send(self.last_response)

    def on_timer(self, name: str, now: float) -> None:
        if name == "G":
            if self.last_response is not None:
                self._send(self.last_response)
            self._start("G", min(self.intervals["G"] * 2, T2), now)
        elif name == "H":
            self._terminate()
            self.layer.events.append(TimeoutEvent(self))
        else:  # I, J, L
            self._terminate()


class TransactionLayer:
    """Matches messages to transactions, runs their timers and collects output.

    ``outbox`` holds bytes to send, ``events`` what the transaction user must act on;
    the owner drains both after each call.
    """

    def __init__(self, max_transactions: int = 20_000, server_header: str = "") -> None:
        self.clients: dict[tuple[str, ...], ClientTransaction] = {}
        self.servers: dict[tuple[str, ...], ServerTransaction] = {}
        self.max_transactions = max_transactions  # server transactions in flight; beyond: 503
        self.server_header = server_header
        self.overloaded = 0  # requests answered 503 because of max_transactions
        self.on_overload: Callable[[], None] | None = None  # told of each (metrics)
        self.outbox: list[Outgoing] = []
        self.events: list[Event] = []
        self._heap: list[tuple[float, int, Transaction, str]] = []
        self._compact_at = COMPACT_MIN
        self._counter = 0

    # -- timers ---------------------------------------------------------------------------
    def _schedule(self, deadline: float, txn: Transaction, name: str) -> None:
        self._counter += 1
        heapq.heappush(self._heap, (deadline, self._counter, txn, name))
        if len(self._heap) >= self._compact_at:
            self._compact()

    def _compact(self) -> None:
        """Drop the entries of stopped timers. They are otherwise only dropped when their deadline
        comes, and until then keep their transaction (and its request) alive: a flood of requests
        answered at once would hold 32 s of them (timer J) in memory. Amortised: the heap is rebuilt
        only once it has doubled since the last time."""
        heap = self._heap  # in place: expire() may be iterating over this very list
        heap[:] = [entry for entry in heap if entry[2].timers.get(entry[3]) == entry[0]]
        heapq.heapify(heap)
        self._compact_at = max(COMPACT_MIN, 2 * len(self._heap))

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, _, txn, name = heap[0]
            if txn.timers.get(name) == deadline:
                return deadline
            heapq.heappop(heap)  # stale entry: timer stopped or restarted
        return None

    def expire(self, now: float) -> None:
        """Fire every timer whose deadline is at or before ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, txn, name = heapq.heappop(heap)
            if txn.timers.get(name) == deadline:
                del txn.timers[name]
                txn.on_timer(name, now)

    def _remove(self, txn: Transaction) -> None:
        table: dict = self.clients if isinstance(txn, ClientTransaction) else self.servers
        if table.get(txn.key) is txn:
            del table[txn.key]

    # -- client side ----------------------------------------------------------------------
    def send_request(
        self, request: SipRequest, addr: Address, transport: str, now: float, context: object = None
    ) -> ClientTransaction:
        """Start a client transaction; the request's top Via must carry a fresh branch."""
        branch = request.top_via.branch or ""
        key = (branch, request.method)
        txn = ClientTransaction(key, request, addr, transport, self, context=context)
        self.clients[key] = txn
        txn.start(now)
        return txn

    def transport_error(self, txn: Transaction | None) -> None:
        """The transport could not send for ``txn`` (unresolvable or unreachable, §17.1.4/§17.2.4)."""
        if txn is None or txn.state == State.TERMINATED:
            return
        txn._terminate()
        if isinstance(txn, ClientTransaction):
            self.events.append(TimeoutEvent(txn, transport_error=True))

    def send_stateless(self, data: bytes, addr: Address, transport: str) -> None:
        """Send bytes outside any transaction (ACK for 2xx, 2xx retransmissions)."""
        self.outbox.append(Outgoing(data, addr, transport))

    def receive_response(self, response: SipResponse, now: float) -> None:
        branch = response.top_via.branch or ""
        txn = self.clients.get((branch, response.cseq[1]))
        if txn is not None and txn.request.call_id != response.call_id:
            return  # our branch, another call's response: a forgery or a broken peer
        if txn is None:
            if 200 <= response.status < 300 and response.cseq[1] == "INVITE":
                self.events.append(ResponseEvent(None, response))  # a 2xx retransmission after M
            return
        txn.on_response(response, now)

    # -- server side ----------------------------------------------------------------------
    @staticmethod
    def server_key(request: SipRequest) -> tuple[str, ...]:
        """§17.2.3 matching: branch + sent-by + method (ACK matches its INVITE), and Call-ID too.

        The Call-ID is not in §17.2.3, but a branch reused by another call (a broken or hostile
        peer) must not match that call's transaction and get its cached response.
        """
        via = request.top_via
        method = "INVITE" if request.method == "ACK" else request.method
        branch = via.branch or ""
        sent_by = f"{via.host}:{via.port or 5060}"
        if branch.startswith(MAGIC_COOKIE):
            return (branch, sent_by, request.call_id, method)
        # RFC 2543 peers: no usable branch; match on the request's identifying fields.
        return ("2543", request.call_id, request.from_.tag or "", str(request.cseq[0]), sent_by, method)

    def receive_request(self, request: SipRequest, source: Address, transport: str, now: float) -> None:
        key = self.server_key(request)
        txn = self.servers.get(key)
        if txn is not None:
            if request.method == "ACK" and txn.state == State.ACCEPTED:
                # RFC 6026 §7.1: an ACK matching an Accepted INVITE transaction (a peer that
                # reused the INVITE's branch, or an RFC 2543 peer) is the TU's ACK for the 2xx.
                self.events.append(RequestEvent(None, request, source, transport))
                return
            txn.on_retransmission(request, now)
            return
        if request.method == "ACK":
            self.events.append(RequestEvent(None, request, source, transport))  # ACK for a 2xx
            return
        address = response_address(request, source, transport)
        if len(self.servers) >= self.max_transactions:
            self.overloaded += 1
            if self.on_overload is not None:
                self.on_overload()
            busy = make_response(request, 503, to_tag=secrets.token_hex(6), extra=[("Retry-After", "5")])
            if self.server_header:
                busy.headers.add("Server", self.server_header)
            self.send_stateless(busy.serialize(), address, transport)
            return
        txn = ServerTransaction(key, request, address, transport, self)
        self.servers[key] = txn
        if request.method == "INVITE":
            txn.state = State.PROCEEDING
        self.events.append(RequestEvent(txn, request, source, transport))

    def find_invite_server(self, cancel: SipRequest) -> ServerTransaction | None:
        """The INVITE transaction a CANCEL refers to (§9.2)."""
        key = self.server_key(cancel)
        return self.servers.get((*key[:-1], "INVITE"))
