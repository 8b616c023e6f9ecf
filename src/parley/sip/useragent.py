"""Sans-I/O SIP user agent core (UAS and UAC), RFC 3261 §8, §12–§15, RFC 3515 REFER.

Fed datagrams/stream messages and the time, it drives transactions and dialogs, answers what
it can by itself (100 Trying, OPTIONS, 481, 501, 503 over the call limit or while draining,
CANCEL → 487, BYE, glare 491, digest challenges) and reports the rest as :class:`CallEvent`
objects. SDP bodies pass through untouched: offer/answer belongs to the media layer above.
"""

from __future__ import annotations

import logging
import random
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from parley.repeats import RepeatedErrors
from parley.sip.auth import AuthError, DigestCredentials, DigestVerifier, parse_challenge
from parley.sip.dialog import Address, Dialog, hop_address
from parley.sip.errors import SipParseError
from parley.sip.limits import SipLimits, SourceFilter, SourceRate
from parley.sip.message import (
    REASON_PHRASES,
    Headers,
    SipRequest,
    SipResponse,
    StreamFramer,
    error_response,
    make_response,
    parse_message,
)
from parley.sip.transaction import (
    T1,
    T2,
    ClientTransaction,
    Outgoing,
    RequestEvent,
    ResponseEvent,
    ServerTransaction,
    State,
    TimeoutEvent,
    TransactionLayer,
    new_branch,
)
from parley.sip.uri import NameAddr, SipUri, format_host

log = logging.getLogger(__name__)
URI_SCHEMES = ("sip", "sips", "tel")
ALLOWED_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REFER", "NOTIFY", "INFO")
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset()


def _accepts_sdp(accept: list[str]) -> bool:
    """Whether an Accept header (its values) lets our answers' application/sdp body through."""
    ranges = [value.split(";", 1)[0].strip().lower() for value in accept]
    ranges = [r for r in ranges if r]
    return not ranges or any(r in ("application/sdp", "application/*", "*/*") for r in ranges)


class SessionState(Enum):
    CALLING = "calling"  # UAC: INVITE sent, no answer yet
    INCOMING = "incoming"  # UAS: INVITE received, not answered yet
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(eq=False)
class InviteSession:
    """One call leg: the INVITE dialog and its pending transactions."""

    ua: UserAgent
    role: str  # "uas" or "uac"
    invite: SipRequest
    peer: Address
    transport: str
    state: SessionState
    dialog: Dialog | None = None
    server_txn: ServerTransaction | None = None
    client_txn: ClientTransaction | None = None
    local_tag: str = ""
    local_sdp: bytes = b""
    remote_sdp: bytes = b""
    pending_reinvite_in: ServerTransaction | None = None
    pending_reinvite_out: ClientTransaction | None = None
    final_2xx: bytes | None = None
    final_2xx_addr: Address | None = None  # where the 2xx went: the Via address (§18.2.2)
    ack_bytes: bytes | None = None
    reinvite_offer: bytes = b""  # our last re-INVITE offer, re-sent after a 491 (§14.1)
    cancel_requested: bool = False
    bye_after_ack: bool = False
    end_reason: str = ""
    refer_txn: ServerTransaction | None = None
    auth_attempts: int = 0
    timers: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, float] = field(default_factory=dict)
    app: object = None  # the layer above keeps its call object here

    @property
    def call_id(self) -> str:
        return self.invite.call_id

    def on_timer(self, name: str, now: float) -> None:
        self.ua._session_timer(self, name, now)


# --- events for the layer above ------------------------------------------------------------
@dataclass(slots=True)
class IncomingCall:
    session: InviteSession
    offer: bytes


@dataclass(slots=True)
class CallProgress:
    session: InviteSession
    status: int


@dataclass(slots=True)
class CallAnswered:
    session: InviteSession
    answer: bytes


@dataclass(slots=True)
class CallFailed:
    session: InviteSession
    status: int
    reason: str


@dataclass(slots=True)
class CallConfirmed:
    """The ACK for our 2xx came; ``answer`` is its SDP when our 2xx carried the offer (delayed offer)."""

    session: InviteSession
    answer: bytes = b""


@dataclass(slots=True)
class CallEnded:
    session: InviteSession
    reason: str  # "remote-bye", "local-bye", "cancelled", "no-ack", "timeout", "refused"


@dataclass(slots=True)
class ReInviteReceived:
    session: InviteSession
    txn: ServerTransaction
    offer: bytes


@dataclass(slots=True)
class ReInviteResult:
    session: InviteSession
    status: int
    answer: bytes


@dataclass(slots=True)
class ReferReceived:
    session: InviteSession
    txn: ServerTransaction
    refer_to: str


@dataclass(slots=True)
class ReferProgress:
    """A NOTIFY for our REFER: ``status`` is the sipfrag status code; ``final`` ends it."""

    session: InviteSession
    status: int
    final: bool


@dataclass(slots=True)
class InfoReceived:
    session: InviteSession
    content_type: str | None
    body: bytes


CallEvent = (
    IncomingCall
    | CallProgress
    | CallAnswered
    | CallFailed
    | CallConfirmed
    | CallEnded
    | ReInviteReceived
    | ReInviteResult
    | ReferReceived
    | ReferProgress
    | InfoReceived
)


class UserAgent:
    """The SIP endpoint state: feed it with :meth:`receive`/:meth:`expire`, drain ``outbox``/``events``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        transport: str = "UDP",
        user: str = "parley",
        max_sessions: int | None = None,
        credentials: DigestCredentials | None = None,
        user_agent: str = "Parley",
        rng: Callable[[], float] = random.random,
        limits: SipLimits | None = None,
        allow: SourceFilter | None = None,
        authenticator: DigestVerifier | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.tls_port: int | None = None  # set by a transport listening for SIP over TLS
        self.transport = transport.upper()
        self.user = user
        self.max_sessions = max_sessions
        self.other_calls = 0  # calls of other channels (browsers) that count against max_sessions
        # Admission control beyond the call limit (e.g. CPU load): False answers new INVITEs 503.
        self.admit: Callable[[], bool] | None = None
        # Draining: new INVITEs and out-of-dialog OPTIONS get 503, so a load balancer probing with
        # OPTIONS (Kamailio's dispatcher) stops sending calls while the calls in progress finish.
        self.draining = False
        self.on_refused: Callable[[str], None] | None = None  # a new INVITE got 503: why (metrics)
        # A request refused by the edge's limits or access control: why ("source", "rate", "auth",
        # "transactions"; the transport adds "connections"), for the metrics.
        self.on_sip_refused: Callable[[str], None] | None = None
        self.credentials = credentials
        self.user_agent = user_agent
        self.layer = TransactionLayer()
        self.outbox: list[Outgoing] = self.layer.outbox
        self.events: list[CallEvent] = []
        self.sessions: dict[tuple[str, str], InviteSession] = {}  # (call-id, local tag)
        self.framers: dict[Address, StreamFramer] = {}
        self._rng = rng
        self.limits = limits or SipLimits()
        self.allow = allow or SourceFilter()
        self.rate = SourceRate(self.limits.rate_per_ip)
        self.layer.max_transactions = self.limits.max_transactions
        self.layer.on_overload = lambda: self._sip_refused("transactions")
        self.layer.server_header = user_agent
        self.refusals = RepeatedErrors(log)
        self.authenticator = authenticator  # digest authentication of inbound INVITEs, when set
        self.stats = {
            "parse_errors": 0,
            "rejected_busy": 0,
            "stray": 0,
            "transport_errors": 0,
            "refused_source": 0,
            "rate_limited": 0,
            "auth_challenged": 0,
            "auth_failed": 0,
        }

    # -- helpers ------------------------------------------------------------------------------
    @property
    def active_sessions(self) -> int:
        return sum(1 for s in self.sessions.values() if s.state != SessionState.TERMINATED)

    def over_limit(self) -> bool:
        """At ``max_sessions``: SIP dialogs and the other channels' calls together."""
        return self.max_sessions is not None and self.active_sessions + self.other_calls >= self.max_sessions

    def port_of(self, transport: str) -> int:
        """Our port for ``transport``: TLS listens on its own (``tls_port``), UDP and TCP share ``port``."""
        return self.tls_port if transport == "TLS" and self.tls_port else self.port

    def via(self, transport: str) -> str:
        sent_by = f"{format_host(self.host)}:{self.port_of(transport)}"
        return f"SIP/2.0/{transport} {sent_by};branch={new_branch()};rport"

    def contact(self, transport: str) -> str:
        suffix = "" if transport == "UDP" else f";transport={transport.lower()}"
        return f"<sip:{self.user}@{format_host(self.host)}:{self.port_of(transport)}{suffix}>"

    def next_deadline(self) -> float | None:
        return self.layer.next_deadline()

    def transport_error(self, item: Outgoing, now: float) -> None:
        """The transport could not send ``item`` (its target did not resolve, or is unreachable)."""
        self.stats["transport_errors"] += 1
        self.layer.transport_error(item.txn)
        self._drain_layer_events(now)

    def expire(self, now: float) -> None:
        self.layer.expire(now)
        self._drain_layer_events(now)

    def _start_timer(self, session: InviteSession, name: str, delay: float, now: float) -> None:
        session.timers[name] = now + delay
        session.intervals[name] = delay
        self.layer._schedule(now + delay, session, name)  # type: ignore[arg-type]

    def _send(self, data: bytes, addr: Address, transport: str) -> None:
        self.layer.send_stateless(data, addr, transport)

    # -- input ------------------------------------------------------------------------------
    def allows_source(self, host: str) -> bool:
        """Whether the allow-list lets ``host`` in; a refusal is counted and logged (no caller data)."""
        if self.allow.allows(host):
            return True
        self.stats["refused_source"] += 1
        self.refusals.report("refused-source", "SIP refused: source address not in the allow-list")
        self._sip_refused("source")
        return False

    def _sip_refused(self, reason: str) -> None:
        if self.on_sip_refused is not None:
            self.on_sip_refused(reason)

    def receive(self, data: bytes, source: Address, transport: str, now: float) -> None:
        """Feed one datagram (UDP) or a chunk of a stream (TCP) from ``source``."""
        if self.allow and not self.allows_source(source[0]):
            if transport != "UDP":
                raise ConnectionError("source address not in the allow-list")
            return
        if transport == "UDP":
            if not data.strip(b"\r\n\x00 "):
                return  # keep-alive
            try:
                message = parse_message(data, self.limits.max_message_size)
            except SipParseError as exc:
                self._reject_unparseable(exc, source, transport)
                return
            self.receive_message(message, source, transport, now)
            return
        framer = self.framers.get(source)
        if framer is None:
            framer = self.framers[source] = StreamFramer(self.limits.max_message_size)
        try:
            items = framer.feed(data)
        except SipParseError as exc:
            self.framers.pop(source, None)
            self._reject_unparseable(exc, source, transport)  # e.g. 413 before the connection closes
            raise ConnectionError(f"stream framing error from {source}: {exc.reason}") from exc
        for item in items:
            if isinstance(item, SipParseError):
                self._reject_unparseable(item, source, transport)
            else:
                self.receive_message(item, source, transport, now)
        if framer.error is not None:  # the messages before the framing error were handled first
            self.framers.pop(source, None)
            self._reject_unparseable(framer.error, source, transport)
            raise ConnectionError(f"stream framing error from {source}: {framer.error.reason}")

    def connection_lost(self, source: Address) -> None:
        self.framers.pop(source, None)

    def receive_message(
        self, message: SipRequest | SipResponse, source: Address, transport: str, now: float
    ) -> None:
        if isinstance(message, SipResponse):
            self.layer.receive_response(message, now)
        else:
            if not self.rate.allow(source[0], now):
                self.stats["rate_limited"] += 1
                self.refusals.report("rate-limited", "SIP requests over the per-source rate limit")
                self._sip_refused("rate")
                if self.limits.rate_action == "reply" and message.method != "ACK":
                    busy = make_response(
                        message, 503, to_tag=secrets.token_hex(6), extra=[("Retry-After", "5")]
                    )
                    self._send(self._stamp(busy).serialize(), source, transport)
                return
            via = message.top_via
            via.stamp_received(source[0], source[1])
            if "received" in via.params:
                message.headers.replace("Via", [str(via), *message.headers.get_all("Via")[1:]])
            self.layer.receive_request(message, source, transport, now)
        self._drain_layer_events(now)

    def _reject_unparseable(self, exc: SipParseError, source: Address, transport: str) -> None:
        """Answer a broken request statelessly (400/413/501/505) when its top Via can be read (§8.2)."""
        self.stats["parse_errors"] += 1
        response = error_response(exc, to_tag=secrets.token_hex(6))
        if response is not None:  # broken responses and Via-less requests are dropped (§18.1.2)
            self._send(self._stamp(response).serialize(), source, transport)

    def _stamp(self, response: SipResponse) -> SipResponse:
        """Add the Server header to a response sent outside any transaction."""
        if self.user_agent and "Server" not in response.headers:
            response.headers.add("Server", self.user_agent)
        return response

    # -- transaction events -------------------------------------------------------------------
    def _drain_layer_events(self, now: float) -> None:
        while self.layer.events:
            event = self.layer.events.pop(0)
            if isinstance(event, RequestEvent):
                self._on_request(event, now)
            elif isinstance(event, ResponseEvent):
                self._on_response(event, now)
            elif isinstance(event, TimeoutEvent):
                self._on_timeout(event, now)

    def _find_session(self, message: SipRequest | SipResponse, local_tag: str | None) -> InviteSession | None:
        return self.sessions.get((message.call_id, local_tag or ""))

    def _find_dialog(self, request: SipRequest) -> InviteSession | None:
        """The session whose dialog ID (Call-ID, To tag, From tag) the request carries (§12.2.2)."""
        session = self._find_session(request, request.to.tag)
        if session is None or session.dialog is None:
            return None
        return session if session.dialog.remote_tag == (request.from_.tag or "") else None

    def _on_request(self, event: RequestEvent, now: float) -> None:
        request, txn = event.request, event.txn
        method = request.method
        if txn is None:  # ACK for a 2xx
            session = self._find_dialog(request)
            if session is not None:
                self._on_ack(session, request.body, now)
            else:
                self.stats["stray"] += 1
            return
        self._on_transaction_request(event, txn, now)
        if method != "INVITE" and request.to.tag is None and txn.state == State.COMPLETED:
            # Answered at once outside any dialog (OPTIONS, refusals): nothing to keep (§8.2.7). A
            # retransmission is answered anew, and a flood of them holds no transaction in memory.
            txn.forget()

    def _on_transaction_request(self, event: RequestEvent, txn: ServerTransaction, now: float) -> None:
        request = txn.request
        method = request.method
        if method not in ALLOWED_METHODS:
            txn.respond_with(501, now=now, extra=[("Allow", ", ".join(ALLOWED_METHODS))])
            return
        if request.uri.partition(":")[0].lower() not in URI_SCHEMES:
            txn.respond_with(416, now=now)  # §8.2.2.1 (RFC 4475 §3.3.1/§3.3.2)
            return
        unsupported = [
            ext.strip()
            for ext in request.headers.get_all("Require")
            if ext.strip() not in SUPPORTED_EXTENSIONS
        ]
        if unsupported and method not in ("CANCEL",):
            txn.respond_with(420, now=now, extra=[("Unsupported", ", ".join(unsupported))])
            return
        if method == "CANCEL":
            self._on_cancel(txn, now)
            return
        to_tag = request.to.tag
        if to_tag:
            session = self._find_dialog(request)
            if session is None:
                txn.respond_with(481, now=now)
                return
            self._on_in_dialog(session, txn, now)
            return
        if method == "INVITE":
            self._on_invite(txn, event, now)
        elif method == "OPTIONS" and self.draining:
            txn.respond_with(503, now=now, to_tag=secrets.token_hex(6), extra=[("Retry-After", "5")])
        elif method == "OPTIONS":
            txn.respond_with(
                200,
                now=now,
                to_tag=secrets.token_hex(6),
                extra=[
                    ("Allow", ", ".join(ALLOWED_METHODS)),
                    ("Accept", "application/sdp"),
                    ("Contact", self.contact(event.transport)),
                    ("Server", self.user_agent),
                ],
            )
        elif method in ("BYE", "REFER", "NOTIFY", "INFO"):
            txn.respond_with(481, now=now)
        else:
            txn.respond_with(405, now=now, extra=[("Allow", ", ".join(ALLOWED_METHODS))])

    def _on_invite(self, txn: ServerTransaction, event: RequestEvent, now: float) -> None:
        request = txn.request
        if request.body and request.content_type not in ("application/sdp", None):
            txn.respond_with(415, now=now, extra=[("Accept", "application/sdp")])
            return
        over_limit = self.over_limit()
        overloaded = not (self.draining or over_limit) and self.admit is not None and not self.admit()
        if self.draining or over_limit or overloaded:
            self.stats["rejected_busy"] += 1
            if self.on_refused is not None:
                self.on_refused("draining" if self.draining else "limit" if over_limit else "load")
            txn.respond_with(503, now=now, extra=[("Retry-After", "5")])
            return
        if self.authenticator is not None and not self._authenticated(txn, now):
            return
        if not _accepts_sdp(request.headers.get_all("Accept")):
            txn.respond_with(406, now=now, extra=[("Accept", "application/sdp")])  # RFC 4475 §3.3.15
            return
        try:
            SipUri.parse(request.uri)
            contact = request.headers.get("Contact")
            if contact is not None:  # an RFC 2543 INVITE may have none (RFC 4475 §3.4)
                NameAddr.parse(contact)
        except SipParseError as exc:
            txn.respond_with(400, exc.reason[:80], now=now)
            return
        txn.respond_with(100, now=now)
        session = InviteSession(
            self,
            "uas",
            request,
            event.source,
            event.transport,
            SessionState.INCOMING,
            server_txn=txn,
            local_tag=secrets.token_hex(6),
            remote_sdp=request.body,
        )
        txn.context = session
        self.sessions[(request.call_id, session.local_tag)] = session
        self.events.append(IncomingCall(session, request.body))

    def _authenticated(self, txn: ServerTransaction, now: float) -> bool:
        """Check the INVITE's digest credentials; a 401 with a challenge when missing or refused."""
        assert self.authenticator is not None
        request = txn.request
        verdict = self.authenticator.verify(request.headers.get("Authorization"), "INVITE", request.uri, now)
        if verdict == "ok":
            return True
        if verdict in ("missing", "stale"):
            self.stats["auth_challenged"] += 1
        else:
            self.stats["auth_failed"] += 1
            self.refusals.report(f"auth:{verdict}", "SIP INVITE refused: authentication failed (%s)", verdict)
            self._sip_refused("auth")
        challenge = self.authenticator.challenge(now, stale=verdict == "stale")
        txn.respond_with(401, now=now, extra=[("WWW-Authenticate", challenge)])
        return False

    def _on_cancel(self, txn: ServerTransaction, now: float) -> None:
        invite_txn = self.layer.find_invite_server(txn.request)
        if invite_txn is None:
            txn.respond_with(481, now=now)
            return
        session = invite_txn.context
        to_tag = session.local_tag if isinstance(session, InviteSession) else None
        txn.respond_with(200, now=now, to_tag=to_tag)  # same To tag as the INVITE's response (§9.2)
        if invite_txn.state == State.PROCEEDING and isinstance(session, InviteSession):
            invite_txn.respond_with(487, now=now, to_tag=session.local_tag)
            self._end(session, "cancelled", now)

    def _on_in_dialog(self, session: InviteSession, txn: ServerTransaction, now: float) -> None:
        request = txn.request
        dialog = session.dialog
        assert dialog is not None
        if session.state == SessionState.TERMINATED:
            txn.respond_with(481, now=now)  # the dialog is over; the session only lingers (§12.2.2)
            return
        if not dialog.accepts_cseq(request):
            txn.respond_with(500, "CSeq Out of Order", now=now)
            return
        method = request.method
        if method == "BYE":
            txn.respond_with(200, now=now)
            self._end(session, "remote-bye", now)
        elif method == "INVITE":
            if session.pending_reinvite_out is not None:
                txn.respond_with(491, now=now)  # glare (§14.2)
            elif session.pending_reinvite_in is not None or session.state != SessionState.CONFIRMED:
                txn.respond_with(500, now=now, extra=[("Retry-After", str(int(self._rng() * 10)))])
            else:
                txn.respond_with(100, now=now)  # stops the peer's INVITE retransmissions (§17.2.1)
                dialog.update_target(request)
                session.pending_reinvite_in = txn
                txn.context = session
                self.events.append(ReInviteReceived(session, txn, request.body))
        elif method == "REFER":
            refer_to = request.headers.get("Refer-To")
            if refer_to is None:
                txn.respond_with(400, "Missing Refer-To", now=now)
                return
            session.refer_txn = txn
            self.events.append(ReferReceived(session, txn, str(NameAddr.parse(refer_to).uri)))
        elif method == "NOTIFY":
            txn.respond_with(200, now=now)
            match = re.match(rb"SIP/2\.0 (\d{3})", request.body)
            if match:
                final = "terminated" in (request.headers.get("Subscription-State") or "")
                self.events.append(ReferProgress(session, int(match[1]), final))
        elif method == "INFO":
            txn.respond_with(200, now=now)
            self.events.append(InfoReceived(session, request.content_type, request.body))
        elif method == "OPTIONS":
            txn.respond_with(200, now=now, extra=[("Allow", ", ".join(ALLOWED_METHODS))])

    def _on_ack(self, session: InviteSession, body: bytes, now: float) -> None:
        if session.final_2xx is None:
            return
        session.final_2xx = None
        session.timers.pop("2xx", None)
        session.timers.pop("2xx-timeout", None)
        if session.state == SessionState.EARLY:
            session.state = SessionState.CONFIRMED
            session.remote_sdp = body or session.remote_sdp
            self.events.append(CallConfirmed(session, body))
            if session.bye_after_ack:
                self.bye(session, now)
        elif body and session.state == SessionState.CONFIRMED:
            self.events.append(CallConfirmed(session, body))  # the answer to a re-INVITE's offer in our 2xx

    # -- UAS actions --------------------------------------------------------------------------
    def ring(self, session: InviteSession, now: float) -> None:
        if session.server_txn is not None and session.state == SessionState.INCOMING:
            contact = [("Contact", self.contact(session.transport))]  # lets the caller form an early dialog
            session.server_txn.respond_with(180, now=now, to_tag=session.local_tag, extra=contact)

    def answer(self, session: InviteSession, sdp: bytes, now: float) -> None:
        """Accept the call with a 2xx carrying ``sdp``, retransmitted until the ACK (§13.3.1.4)."""
        txn = session.server_txn
        if txn is None or session.state != SessionState.INCOMING or txn.state != State.PROCEEDING:
            return
        response = self._answer_response(session, txn.request, sdp)
        session.dialog = Dialog.as_uas(txn.request, response, session.transport)
        session.local_sdp = sdp
        session.state = SessionState.EARLY
        txn.respond(response, now)
        self._retransmit_2xx(session, response.serialize(), txn.addr, now)

    def _answer_response(self, session: InviteSession, request: SipRequest, sdp: bytes) -> SipResponse:
        extra = [("Contact", self.contact(session.transport)), ("Allow", ", ".join(ALLOWED_METHODS))]
        if sdp:
            extra.append(("Content-Type", "application/sdp"))
        extra.append(("Server", self.user_agent))
        return make_response(request, 200, to_tag=session.local_tag, body=sdp, extra=extra)

    def _retransmit_2xx(self, session: InviteSession, data: bytes, addr: Address, now: float) -> None:
        session.final_2xx = data
        session.final_2xx_addr = addr
        if session.transport == "UDP":
            self._start_timer(session, "2xx", T1, now)
        self._start_timer(session, "2xx-timeout", 64 * T1, now)

    def reject(self, session: InviteSession, status: int, now: float, reason: str | None = None) -> None:
        txn = session.server_txn
        if txn is None or session.state != SessionState.INCOMING:
            return
        txn.respond_with(status, reason, now=now, to_tag=session.local_tag)
        self._end(session, "refused", now)

    def respond_reinvite(self, session: InviteSession, status: int, sdp: bytes, now: float) -> None:
        txn = session.pending_reinvite_in
        if txn is None or session.dialog is None:
            return
        session.pending_reinvite_in = None
        if status >= 300:
            txn.respond_with(status, now=now)
            return
        session.local_sdp = sdp
        response = self._answer_response(session, txn.request, sdp)
        txn.respond(response, now)
        self._retransmit_2xx(session, response.serialize(), txn.addr, now)

    def accept_refer(self, session: InviteSession, now: float) -> None:
        """202 the REFER, then the implicit subscription's first NOTIFY (RFC 3515 §2.4.4)."""
        txn = session.refer_txn
        if txn is None:
            return
        txn.respond_with(202, now=now, extra=[("Contact", self.contact(session.transport))])
        self.notify_refer(session, 100, now)

    def notify_refer(self, session: InviteSession, status: int, now: float) -> None:
        final = status >= 200
        state = "terminated;reason=noresource" if final else "active;expires=60"
        body = f"SIP/2.0 {status} {REASON_PHRASES.get(status, 'Unknown')}\r\n".encode()
        self._in_dialog_request(
            session,
            "NOTIFY",
            body,
            now,
            extra=[
                ("Event", "refer"),
                ("Subscription-State", state),
                ("Content-Type", "message/sipfrag;version=2.0"),
            ],
        )
        if final:
            session.refer_txn = None

    # -- UAC actions --------------------------------------------------------------------------
    def invite(
        self,
        target: str,
        sdp: bytes,
        now: float,
        *,
        from_uri: str | None = None,
        transport: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> InviteSession:
        """Place a call to ``target`` (a sip: URI whose host is an IP address)."""
        uri = SipUri.parse(target)
        addr, transport = hop_address(uri, transport or self.transport)
        local_tag = secrets.token_hex(6)
        headers = Headers()
        headers.add("Via", self.via(transport))
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<{from_uri or f'sip:{self.user}@{format_host(self.host)}'}>;tag={local_tag}")
        headers.add("To", f"<{target}>")
        headers.add("Call-ID", f"{secrets.token_hex(12)}@{format_host(self.host)}")
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", self.contact(transport))
        headers.add("Allow", ", ".join(ALLOWED_METHODS))
        headers.add("User-Agent", self.user_agent)
        for name, value in extra or []:
            headers.add(name, value)
        if sdp:
            headers.add("Content-Type", "application/sdp")
        request = SipRequest(headers, sdp, method="INVITE", uri=target)
        session = InviteSession(
            self, "uac", request, addr, transport, SessionState.CALLING, local_tag=local_tag
        )
        session.local_sdp = sdp
        self.sessions[(request.call_id, local_tag)] = session
        session.client_txn = self.layer.send_request(request, addr, transport, now, context=session)
        return session

    def cancel(self, session: InviteSession, now: float) -> None:
        """CANCEL an unanswered outgoing call; sent once a provisional response arrived (§9.1)."""
        txn = session.client_txn
        if (
            session.role != "uac"
            or txn is None
            or session.state not in (SessionState.CALLING, SessionState.EARLY)
        ):
            return
        if txn.state != State.PROCEEDING:
            session.cancel_requested = True
            return
        invite = txn.request
        headers = Headers()
        headers.add("Via", invite.headers.get("Via") or "")
        for name in ("Max-Forwards", "From", "To", "Call-ID"):
            headers.add(name, invite.headers.get(name) or "")
        headers.add("CSeq", f"{invite.cseq[0]} CANCEL")
        for route in invite.headers.get_all("Route"):
            headers.add("Route", route)
        cancel = SipRequest(headers, b"", method="CANCEL", uri=invite.uri)
        self.layer.send_request(cancel, txn.addr, txn.transport, now)

    def bye(self, session: InviteSession, now: float) -> None:
        """Hang up a confirmed call (or an answered one whose ACK has not come yet)."""
        if session.dialog is None or session.state == SessionState.TERMINATED:
            if session.role == "uac" and session.state in (SessionState.CALLING, SessionState.EARLY):
                self.cancel(session, now)
            return
        if session.role == "uas" and session.state == SessionState.EARLY and session.final_2xx is not None:
            session.bye_after_ack = True  # a callee waits for the ACK (or its timeout) before BYE (§15)
            return
        self._in_dialog_request(session, "BYE", b"", now)
        self._end(session, "local-bye", now)

    def reinvite(self, session: InviteSession, sdp: bytes, now: float) -> bool:
        """Send a re-INVITE with a new offer (hold, resume, media change); False while one is pending."""
        if (
            session.state != SessionState.CONFIRMED
            or session.pending_reinvite_out
            or session.pending_reinvite_in
        ):
            return False
        session.local_sdp = sdp
        session.reinvite_offer = sdp
        session.pending_reinvite_out = self._in_dialog_request(
            session,
            "INVITE",
            sdp,
            now,
            extra=[("Contact", self.contact(session.transport)), ("Content-Type", "application/sdp")],
        )
        return True

    def refer(self, session: InviteSession, target: str, now: float) -> ClientTransaction | None:
        """Blind transfer: ask the peer to call ``target`` (RFC 3515); None once the call is over."""
        if session.dialog is None or session.state != SessionState.CONFIRMED:
            return None
        return self._in_dialog_request(
            session,
            "REFER",
            b"",
            now,
            extra=[
                ("Refer-To", f"<{target}>"),
                ("Referred-By", f"<sip:{self.user}@{format_host(self.host)}>"),
                ("Contact", self.contact(session.transport)),
            ],
        )

    def _in_dialog_request(
        self,
        session: InviteSession,
        method: str,
        body: bytes,
        now: float,
        extra: list[tuple[str, str]] | None = None,
    ) -> ClientTransaction:
        dialog = session.dialog
        assert dialog is not None
        addr, transport = hop_address(dialog.next_hop(), dialog.transport)
        request = dialog.new_request(method, self.via(transport), body)
        for name, value in extra or []:
            request.headers.add(name, value)
        return self.layer.send_request(request, addr, transport, now, context=session)

    # -- responses ----------------------------------------------------------------------------
    def _on_response(self, event: ResponseEvent, now: float) -> None:
        response = event.response
        txn = event.txn
        session = txn.context if txn is not None else self._find_session(response, response.from_.tag)
        if not isinstance(session, InviteSession):
            return
        method = response.cseq[1]
        if method == "INVITE":
            if txn is not None and txn is session.client_txn:
                self._on_invite_response(session, response, now)
            elif txn is not None and txn is session.pending_reinvite_out:
                self._on_reinvite_response(session, txn, response, now)
            elif 200 <= response.status < 300:
                # A retransmitted 2xx of an INVITE/re-INVITE already answered, or one that
                # arrived after timer M (no transaction): only ever re-ACKed, never a new answer.
                self._ack_again(session, response)
        elif method == "BYE" and response.status >= 200:
            self._end(session, "local-bye", now)
        elif method == "REFER" and response.status >= 300:
            # Refused outright: no NOTIFY will come, so this is the transfer's final word.
            self.events.append(ReferProgress(session, response.status, final=True))

    def _ack_again(self, session: InviteSession, response: SipResponse) -> None:
        """Re-send our ACK for a retransmitted 2xx (§13.2.2.4) if it is the 2xx that ACK answered."""
        dialog = session.dialog
        if dialog is None or session.ack_bytes is None or response.to.tag != dialog.remote_tag:
            return
        if parse_message(session.ack_bytes).cseq[0] != response.cseq[0]:
            return
        addr, transport = hop_address(dialog.next_hop(), dialog.transport)
        self._send(session.ack_bytes, addr, transport)

    def _on_invite_response(self, session: InviteSession, response: SipResponse, now: float) -> None:
        status = response.status
        if status < 200:
            if session.state == SessionState.CALLING:
                session.state = SessionState.EARLY
            self.events.append(CallProgress(session, status))
            if session.cancel_requested:
                session.cancel_requested = False
                self.cancel(session, now)
            return
        if status < 300:
            if session.dialog is not None:
                self._ack_again(session, response)  # 2xx retransmission
                return
            session.dialog = Dialog.as_uac(session.invite, response, session.transport)
            session.remote_sdp = response.body
            self._send_ack(session, session.invite.cseq[0], b"")
            session.state = SessionState.CONFIRMED
            self.events.append(CallAnswered(session, response.body))
            if session.cancel_requested:
                self.bye(session, now)
            return
        if status in (401, 407) and self._retry_with_auth(session, response, now):
            return
        if session.state != SessionState.TERMINATED:
            self.events.append(CallFailed(session, status, response.reason))
            self._end(session, "cancelled" if status == 487 else "refused", now)

    def _send_ack(self, session: InviteSession, cseq: int, body: bytes) -> None:
        dialog = session.dialog
        assert dialog is not None
        addr, transport = hop_address(dialog.next_hop(), dialog.transport)
        ack = dialog.new_request("ACK", self.via(transport), body, cseq=cseq)
        for name in ("Authorization", "Proxy-Authorization"):
            for value in session.invite.headers.get_all(name):
                ack.headers.add(name, value)
        session.ack_bytes = ack.serialize()
        self._send(session.ack_bytes, addr, transport)

    def _retry_with_auth(self, session: InviteSession, response: SipResponse, now: float) -> bool:
        """Answer a digest challenge once per call (RFC 3261 §22.2)."""
        if self.credentials is None or session.auth_attempts >= 2:
            return False
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        answer_header = "Authorization" if response.status == 401 else "Proxy-Authorization"
        value = response.headers.get(header)
        if value is None:
            return False
        try:
            challenge = parse_challenge(value)
        except AuthError:
            return False
        if session.auth_attempts and not challenge.stale:
            return False
        session.auth_attempts += 1
        old = session.invite
        headers = old.headers.copy()
        headers.set("Via", self.via(session.transport))
        headers.set("CSeq", f"{old.cseq[0] + 1} INVITE")
        headers.set(answer_header, self.credentials.authorize(challenge, "INVITE", old.uri, old.body))
        request = SipRequest(headers, old.body, method="INVITE", uri=old.uri)
        session.invite = request
        session.state = SessionState.CALLING
        session.client_txn = self.layer.send_request(
            request, session.peer, session.transport, now, context=session
        )
        return True

    def _on_reinvite_response(
        self, session: InviteSession, txn: ClientTransaction, response: SipResponse, now: float
    ) -> None:
        status = response.status
        if status < 200:
            return
        session.pending_reinvite_out = None
        if status < 300:
            assert session.dialog is not None
            session.dialog.update_target(response)
            self._send_ack(session, txn.request.cseq[0], b"")
            session.remote_sdp = response.body
        elif status == 491:
            # Glare: retry after a random pause (§14.1): 2.1–4 s if we own the Call-ID, else 0–2 s.
            delay = 2.1 + 1.9 * self._rng() if session.role == "uac" else 2.0 * self._rng()
            self._start_timer(session, "glare-retry", delay, now)
        elif status in (408, 481):
            self.bye(session, now)
        self.events.append(ReInviteResult(session, status, response.body))

    def _on_timeout(self, event: TimeoutEvent, now: float) -> None:
        session = event.txn.context
        if not isinstance(session, InviteSession):
            return
        if event.txn is session.client_txn and session.state in (SessionState.CALLING, SessionState.EARLY):
            if event.transport_error:
                self.events.append(CallFailed(session, 503, "Service Unavailable (transport error)"))
            else:
                self.events.append(CallFailed(session, 408, "Request Timeout"))
            self._end(session, "timeout", now)
        elif event.txn is session.pending_reinvite_out:
            session.pending_reinvite_out = None
            self.bye(session, now)
        elif isinstance(event.txn, ClientTransaction) and event.txn.request.method == "BYE":
            self._end(session, "local-bye", now)
        elif isinstance(event.txn, ClientTransaction) and event.txn.request.method == "REFER":
            self.events.append(ReferProgress(session, 408, final=True))

    # -- session timers -----------------------------------------------------------------------
    def _session_timer(self, session: InviteSession, name: str, now: float) -> None:
        if name == "2xx" and session.final_2xx is not None:
            self._send(session.final_2xx, session.final_2xx_addr or session.peer, session.transport)
            self._start_timer(session, "2xx", min(session.intervals["2xx"] * 2, T2), now)
        elif name == "2xx-timeout" and session.final_2xx is not None:
            session.final_2xx = None
            session.timers.pop("2xx", None)
            # No ACK in 64*T1 (§13.3.1.4): end the dialog with a BYE. Not via bye(), which
            # would end the session as "local-bye" before "no-ack" could be reported.
            if session.dialog is not None and session.state != SessionState.TERMINATED:
                self._in_dialog_request(session, "BYE", b"", now)
            self._end(session, "no-ack", now)
        elif name == "glare-retry":
            self.reinvite(session, session.reinvite_offer, now)
        elif name == "linger":
            self._forget(session)

    def _forget(self, session: InviteSession) -> None:
        """Drop an ended session once its retransmissions are absorbed, and its references.

        A session and its transactions point at each other (``context`` and ``server_txn``...),
        and the layer above keeps its call in ``app``: left as they are, they form reference
        cycles that only the cyclic garbage collector frees, which a busy server runs seldom.
        Cut here, everything of the call is freed the moment the last timer lets go of it.
        """
        if self.sessions.get((session.call_id, session.local_tag)) is session:
            del self.sessions[(session.call_id, session.local_tag)]
        session.server_txn = session.client_txn = session.refer_txn = None
        session.pending_reinvite_in = session.pending_reinvite_out = None
        session.timers.clear()
        session.app = None

    def _end(self, session: InviteSession, reason: str, now: float) -> None:
        if session.state == SessionState.TERMINATED:
            return
        session.state = SessionState.TERMINATED
        session.end_reason = reason
        session.final_2xx = None
        for name in ("2xx", "2xx-timeout", "glare-retry"):
            session.timers.pop(name, None)
        self.events.append(CallEnded(session, reason))
        # Keep the session a while to absorb retransmissions of the BYE/2xx, then forget it.
        self._start_timer(session, "linger", 32.0, now)
