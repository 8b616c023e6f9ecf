"""Calls over real sockets: the SIP user agent, RTP endpoints, SDP and the media clock joined.

:class:`CallManager` answers incoming calls by running an application coroutine per call
(``app(call)``; the call is hung up when it returns) and places outgoing ones (:meth:`dial`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from parley.media.clock import MediaClock
from parley.media.endpoint import PortAllocator, RtpEndpoint
from parley.media.srtp import SrtpContext, protecting, unprotecting
from parley.media.stream import RtpStream
from parley.sip.auth import DigestCredentials, DigestVerifier
from parley.sip.limits import SipLimits, SourceFilter
from parley.sip.resolver import ResolveError, SipResolver, is_numeric
from parley.sip.sdp import (
    SRTP_POLICIES,
    LocalSdp,
    MediaOffer,
    NegotiatedMedia,
    NoCommonCodec,
    SdpError,
    parse_sdp,
)
from parley.sip.tls import TlsConfig
from parley.sip.transport import SipTransport
from parley.sip.useragent import (
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallEvent,
    CallFailed,
    IncomingCall,
    InviteSession,
    ReferProgress,
    ReferReceived,
    ReInviteReceived,
    ReInviteResult,
    SessionState,
    UserAgent,
)
from parley.telephony import logs, metrics
from parley.telephony.call import Call

log = logging.getLogger(__name__)
App = Callable[[Call], Awaitable[None]]


class DialError(Exception):
    """An outgoing call was not answered; ``status`` is the final SIP status (408 on timeout)."""

    def __init__(self, status: int, reason: str, *, final_response: bool = True) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.final_response = final_response  # False: no final response came (we gave up waiting)
        self.call_id: str | None = None  # set by dial()


@dataclass(slots=True)
class _Leg:
    """Media state kept beside a session until the call ends."""

    endpoint: RtpEndpoint
    sdp: LocalSdp
    call: Call | None = None
    answered: asyncio.Future | None = None
    tasks: set[asyncio.Task] = field(default_factory=set)


@dataclass(slots=True)
class ManagerStats:
    answered: int = 0
    rejected: int = 0
    failed: int = 0
    ended: dict[str, int] = field(default_factory=dict)
    media: dict[str, int] = field(default_factory=dict)  # RTP counters summed over ended calls


class CallManager:
    """Owns the SIP transport, the RTP port pool and the media clock of one process."""

    def __init__(
        self,
        app: App | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 5060,
        transports: tuple[str, ...] = ("UDP",),
        max_calls: int | None = None,
        rtp_ports: tuple[int, int] = (20000, 40000),
        codecs: tuple[str, ...] = ("PCMU", "PCMA"),
        media_timeout: float = 30.0,
        credentials: DigestCredentials | None = None,
        on_refer: Callable[[Call, str], Awaitable[int]] | None = None,
        max_load: float | None = 0.85,
        load_sources: Sequence[Callable[[], float]] = (),
        limits: SipLimits | None = None,
        allow: Sequence[str] = (),
        resolver: SipResolver | None = None,
        authenticator: DigestVerifier | None = None,
        tls: TlsConfig | None = None,
        srtp: str = "optional",
    ) -> None:
        self.app = app
        self.ua = UserAgent(
            host,
            port,
            transport=transports[0],
            max_sessions=max_calls,
            credentials=credentials,
            limits=limits,
            allow=SourceFilter(allow),
            authenticator=authenticator,
        )
        self.resolver = resolver or SipResolver()
        self.tls = tls
        if srtp not in SRTP_POLICIES:
            raise ValueError(f"srtp must be one of {SRTP_POLICIES}")
        self.srtp = srtp  # off, optional (SRTP when the peer offers it), required
        self.transports = transports
        self.clock = MediaClock()
        self.ports = PortAllocator(host, *rtp_ports, poller=self.clock.poller)
        self.codecs = codecs
        self.media_timeout = media_timeout
        self.on_refer = on_refer
        self.max_load = max_load
        self.load_sources = [lambda: self.clock.cpu_load, *load_sources]
        if max_load is not None:
            # Overload: reject new calls cleanly (503) rather than degrade every call in progress.
            self.ua.admit = lambda: self.load() < max_load
        self.ua.on_refused = lambda reason: metrics.CALLS_REFUSED.labels(reason).inc()
        self.ua.on_sip_refused = lambda reason: metrics.SIP_REFUSED.labels(reason).inc()
        self.calls: dict[str, Call] = {}
        self.stats = ManagerStats()
        self._transport: SipTransport | None = None
        self._legs: dict[int, _Leg] = {}
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def load(self) -> float:
        """The busiest of the loads admission watches (1.0 = saturated): the media clock's process
        and ``load_sources`` (e.g. an agent's speech decoders)."""
        load = max(source() for source in self.load_sources)
        metrics.LOAD.set(load)
        return load

    def refusal(self) -> str | None:
        """Why a new call would be refused now, as an INVITE would be ("draining", "limit", "load"),
        or None: admission control for calls that come another way (a browser's offer)."""
        if self.ua.draining:
            return "draining"
        if self.ua.over_limit():
            return "limit"
        if self.max_load is not None and self.load() >= self.max_load:
            return "load"
        return None

    @property
    def host(self) -> str:
        return self.ua.host

    @property
    def port(self) -> int:
        return self.ua.port

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport = SipTransport(self.ua, self._on_events, self.resolver, tls=self.tls)
        self._transport.on_connections = metrics.SIP_TCP_CONNECTIONS.inc
        await self._transport.start(self.transports)

    async def stop(self, drain: float = 0.0) -> None:
        """Stop taking calls; wait up to ``drain`` seconds for calls to end, then hang up the rest."""
        self.ua.draining = True  # new INVITEs and OPTIONS probes now get 503
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_ended(), drain)
        for call in list(self.calls.values()):
            call.hangup()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_ended(), 2.0)
        for task in list(self._tasks):
            task.cancel()
        self.clock.stop()
        if self._transport is not None:
            await self._transport.close()
        for leg in self._legs.values():
            leg.endpoint.close()
        self.clock.poller.close()

    async def _all_ended(self) -> None:
        while self.calls:
            await asyncio.sleep(0.05)

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _flush(self) -> None:
        if self._transport is not None:
            self._transport.flush()

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call task failed", exc_info=task.exception())

    # -- SIP events ---------------------------------------------------------------------------
    def _on_events(self, events: list[CallEvent]) -> None:
        for event in events:
            session = event.session
            leg = self._legs.get(id(session))
            if isinstance(event, IncomingCall):
                self._spawn(self._accept(session, self._now()))
            elif isinstance(event, CallAnswered) and leg is not None:
                self._on_answered(session, leg, event.answer)
            elif isinstance(event, CallFailed) and leg is not None:
                self.stats.failed += 1
                if leg.answered is not None and not leg.answered.done():
                    leg.answered.set_exception(DialError(event.status, event.reason))
            elif isinstance(event, CallConfirmed) and leg is not None and event.answer:
                self._spawn(self._on_ack_answer(session, leg, event.answer))
            elif isinstance(event, CallEnded):
                self._on_ended(session, event.reason)
            elif isinstance(event, ReInviteReceived) and leg is not None:
                self._spawn(self._on_reinvite(session, leg, event.offer))
            elif isinstance(event, ReInviteResult) and leg is not None and leg.call is not None:
                if 200 <= event.status < 300 and event.answer:
                    self._spawn(self._apply_answer(leg, event.answer))
                future = leg.call._reinvite
                if future is not None and not future.done() and event.status >= 200 and event.status != 491:
                    future.set_result(event.status)
            elif isinstance(event, ReferReceived) and leg is not None and leg.call is not None:
                self._spawn(self._on_refer(session, leg.call, event.refer_to))
            elif isinstance(event, ReferReceived):  # the call has ended: no dialog to transfer
                event.txn.respond_with(481, now=self._now())
                session.refer_txn = None
            elif isinstance(event, ReferProgress) and leg is not None and leg.call is not None:
                future = leg.call._transfer
                if event.final and future is not None and not future.done():
                    future.set_result(event.status)

    async def _accept(self, session: InviteSession, received: float) -> None:
        """Answer an incoming INVITE: open RTP, negotiate SDP, send 200, run the app."""
        logs.call_id.set(session.call_id)  # this task's context, copied into the app's task
        refusal = self._screen(session)
        if refusal is not None:
            log.info("call refused (403): %s", refusal)  # the reason names a rule, never a number
            self.stats.rejected += 1
            metrics.CALLS_REFUSED.labels("access").inc()
            self.ua.reject(session, 403, self._now())
            self._flush()
            return
        try:
            endpoint = await self.ports.open()
        except OSError:
            self.ua.reject(session, 503, self._now())
            self.stats.rejected += 1
            metrics.CALLS_REFUSED.labels("rtp-ports").inc()
            self._flush()
            return
        if session.state != SessionState.INCOMING:  # cancelled while we opened the sockets
            endpoint.close()
            return
        sdp = LocalSdp(endpoint.host, endpoint.port, self.codecs, srtp=self.srtp)
        if not session.remote_sdp:  # delayed offer: ours goes in the 200, the answer comes in the ACK
            leg = _Leg(endpoint, sdp)
            self._legs[id(session)] = leg
            self.ua.answer(session, sdp.offer(), self._now())
            self._flush()
            return
        try:
            answer, media = sdp.answer(await self._resolved(parse_sdp(session.remote_sdp)))
        except NoCommonCodec:
            endpoint.close()
            self.stats.rejected += 1
            metrics.CALLS_REFUSED.labels("codec").inc()
            self.ua.reject(session, 488, self._now())
            self._flush()
            return
        except SdpError as exc:
            endpoint.close()
            self.stats.rejected += 1
            metrics.CALLS_REFUSED.labels("sdp").inc()
            self.ua.reject(session, 488, self._now(), reason=f"Bad SDP: {exc}"[:60])
            self._flush()
            return
        leg = _Leg(endpoint, sdp)
        self._legs[id(session)] = leg
        call = self._make_call(session, leg, media, "inbound")
        self.ua.answer(session, answer, self._now())
        self._flush()
        self.stats.answered += 1
        log.info("call answered")
        metrics.CALLS_ADMITTED.inc()
        metrics.CALLS_ACTIVE.inc()
        metrics.CALL_SETUP_SECONDS.observe(self._now() - received)
        if self.app is not None:
            leg.tasks.add(self._spawn(self._run_app(call)))

    def _screen(self, session: InviteSession) -> str | None:
        """The app's reason to refuse this INVITE (its ``screen(caller, called)``, if it has one):
        the caller is the From URI's user part, the number dialled the request URI's."""
        screen = getattr(self.app, "screen", None)
        if screen is None:
            return None
        invite = session.invite
        try:
            caller = invite.from_.uri.user or ""
        except Exception:  # unparsable From: matches no pattern
            caller = ""
        try:
            called = invite.request_uri.user or ""
        except Exception:
            called = ""
        return screen(caller, called)

    async def _resolved(self, offer: MediaOffer) -> MediaOffer:
        """The offer or answer with a numeric connection address: a host name in ``c=`` is resolved
        (A/AAAA); one that does not resolve is an :class:`SdpError`, so the call is refused cleanly
        rather than sending every frame to nowhere."""
        if is_numeric(offer.address):
            return offer
        try:
            addresses = await self.resolver.resolve(offer.address, offer.port or 9, "UDP")
        except ResolveError as exc:
            raise SdpError(f"connection address does not resolve: {exc}") from None
        offer.address = addresses[0][0]
        return offer

    async def _on_ack_answer(self, session: InviteSession, leg: _Leg, body: bytes) -> None:
        """The ACK's SDP answers the offer in our 2xx: an initial delayed offer, or a re-INVITE's."""
        try:
            media = leg.sdp.accept_answer(await self._resolved(parse_sdp(body)))
        except SdpError as exc:
            log.info("call %s: unusable SDP answer in the ACK (%s), hanging up", session.call_id, exc)
            self.ua.bye(session, self._now())
            self._flush()
            return
        if session.state == SessionState.TERMINATED or self._legs.get(id(session)) is not leg:
            return
        if leg.call is not None:
            self._apply(leg, media)
            return
        call = self._make_call(session, leg, media, "inbound")
        self.stats.answered += 1
        metrics.CALLS_ADMITTED.inc()
        metrics.CALLS_ACTIVE.inc()
        if self.app is not None:
            leg.tasks.add(self._spawn(self._run_app(call)))

    async def _apply_answer(self, leg: _Leg, body: bytes) -> None:
        with contextlib.suppress(SdpError):
            self._apply(leg, leg.sdp.accept_answer(await self._resolved(parse_sdp(body))))

    def start_app(self, call: Call, app: App | None = None) -> None:
        """Run ``app`` (default: the manager's) on a call that another channel (a browser) answered."""
        app = app or self.app
        if app is not None:
            self._spawn(self._run_app(call, app))

    async def _run_app(self, call: Call, app: App | None = None) -> None:
        try:
            await (app or self.app)(call)  # type: ignore[misc]
        finally:
            if not call.ended.is_set():
                call.hangup()

    def _make_call(self, session: InviteSession, leg: _Leg, media: NegotiatedMedia, direction: str) -> Call:
        endpoint = leg.endpoint
        send, send_rtcp = endpoint.send, endpoint.send_rtcp
        srtp = None
        if media.srtp is not None:  # RTP/SAVP: every packet through libsrtp, both ways
            keys = media.srtp
            srtp = SrtpContext(keys.suite, keys.local_key, keys.remote_key)
            send, send_rtcp = protecting(send, srtp.protect), protecting(send_rtcp, srtp.protect_rtcp)
        stream = RtpStream(
            media.codec,
            media.payload_type,
            (media.remote_address, media.remote_port),
            send,
            dtmf_payload_type=media.telephone_event_pt,
            time=time.monotonic,
            inactivity_timeout=self.media_timeout,
            send_rtcp=send_rtcp,
        )
        stream.update_remote((media.remote_address, media.remote_port), media.send, media.receive)
        if srtp is None:
            endpoint.on_rtp(stream.receive)
            endpoint.on_rtcp(stream.receive_rtcp)
        else:
            endpoint.on_rtp(unprotecting(stream.receive, srtp.unprotect))
            endpoint.on_rtcp(unprotecting(stream.receive_rtcp, srtp.unprotect_rtcp))
        call = Call(self, session, stream, direction)
        call.srtp = srtp
        stream.on_inactive = lambda: self._on_media_timeout(call)
        leg.call = call
        session.app = call
        self.calls[session.call_id + session.local_tag] = call
        self.clock.add(stream)
        return call

    def _on_media_timeout(self, call: Call) -> None:
        log.info("call %s: no RTP for %.0f s, hanging up", call.call_id, self.media_timeout)
        call.hangup()

    def _apply(self, leg: _Leg, media: NegotiatedMedia) -> None:
        call = leg.call
        if call is not None and call.srtp is not None and media.srtp is not None:
            keys = media.srtp  # a re-INVITE may change the SDES keys (RFC 4568 §7.1.4)
            if call.srtp.rekey(keys.suite, keys.local_key, keys.remote_key):
                log.info("call %s: SRTP keys changed", call.call_id)
        if leg.call is not None:
            leg.call.stream.update_remote(
                (media.remote_address, media.remote_port), media.send, media.receive
            )

    async def _on_reinvite(self, session: InviteSession, leg: _Leg, offer: bytes) -> None:
        if not offer:
            self.ua.respond_reinvite(session, 200, leg.sdp.offer(leg.sdp.direction), self._now())
            self._flush()
            return
        try:
            parsed = await self._resolved(parse_sdp(offer))
            if leg.call is not None and parsed.port and parsed.secure != (leg.call.srtp is not None):
                raise SdpError("SRTP cannot be turned on or off during a call")
            answer, media = leg.sdp.answer(parsed)
        except SdpError:
            self.ua.respond_reinvite(session, 488, b"", self._now())
            self._flush()
            return
        self._apply(leg, media)
        self.ua.respond_reinvite(session, 200, answer, self._now())
        self._flush()

    async def _on_refer(self, session: InviteSession, call: Call, target: str) -> None:
        if self.on_refer is None:
            txn = session.refer_txn
            if txn is not None:
                txn.respond_with(603, now=self._now())
                session.refer_txn = None
            self._flush()
            return
        self.ua.accept_refer(session, self._now())
        self._flush()
        status = await self.on_refer(call, target)
        self.ua.notify_refer(session, status, self._now())
        self._flush()

    def _on_ended(self, session: InviteSession, reason: str) -> None:
        self.stats.ended[reason] = self.stats.ended.get(reason, 0) + 1
        leg = self._legs.pop(id(session), None)
        if leg is None:
            return
        session.app = None  # the session lingers a while for retransmissions; the call need not
        if leg.call is not None:
            stream = leg.call.stream
            self._add_media_totals(stream)
            if leg.call.direction == "inbound":
                metrics.CALLS_ACTIVE.dec()
                metrics.CALLS_ENDED.labels(reason).inc()
                token = logs.call_id.set(session.call_id)  # called from the transport, not the call's task
                log.info("call ended: %s", reason)
                logs.call_id.reset(token)
            self.clock.remove(stream)
            self.calls.pop(session.call_id + session.local_tag, None)
            leg.call._ended(reason)
            # The stream's callbacks point back at the call: cut them so refcounting frees both.
            stream.on_audio = stream.on_dtmf = stream.on_inactive = None
        if leg.answered is not None and not leg.answered.done():
            leg.answered.set_exception(DialError(487 if reason == "cancelled" else 480, reason))
        leg.endpoint.close()

    def _add_media_totals(self, stream: RtpStream) -> None:
        totals = self.stats.media
        jitter = stream.jitter.stats
        for name, value in (
            ("packets_in", stream.stats.packets_in),
            ("packets_out", stream.stats.packets_out),
            ("strangers", stream.stats.strangers),
            ("malformed", stream.stats.malformed),
            ("dtmf_in", stream.stats.dtmf_in),
            ("expected", stream.reception.expected),
            ("lost", max(stream.reception.lost, 0)),
            ("late", jitter.late),
            ("concealed", jitter.lost),
        ):
            totals[name] = totals.get(name, 0) + int(value)
        metrics.RTP_PACKETS_EXPECTED.inc(max(stream.reception.expected, 0))
        metrics.RTP_PACKETS_LOST.inc(max(stream.reception.lost, 0))
        if stream.stats.packets_in:
            metrics.RTP_JITTER_SECONDS.observe(stream.reception.jitter / 8000)  # G.711: 8 kHz timestamps

    def report(self) -> dict[str, object]:
        """Counters and media-clock timing for benchmarks and operators."""
        return {
            "answered": self.stats.answered,
            "rejected": self.stats.rejected,
            "rejected_busy": self.ua.stats["rejected_busy"],
            "parse_errors": self.ua.stats["parse_errors"],
            "failed": self.stats.failed,
            "sip": self.sip_report(),
            "ended": dict(self.stats.ended),
            "media": dict(self.stats.media),
            "clock": {
                "ticks": self.clock.ticks,
                "skipped": self.clock.skipped,
                "lateness_p50_ms": 1000 * self.clock.lateness_percentile(50),
                "lateness_p99_ms": 1000 * self.clock.lateness_percentile(99),
                "tick_p99_ms": 1000 * self.clock.duration_percentile(99),
                "departure_jitter_p99_ms": 1000 * self.clock.departure_jitter_percentile(99),
            },
        }

    def sip_report(self) -> dict[str, object]:
        """The SIP edge's counters and limits (refusals, rate limiting, transactions, TCP, DNS)."""
        ua = self.ua
        report: dict[str, object] = dict(ua.stats)
        report["transactions"] = len(ua.layer.servers) + len(ua.layer.clients)
        report["rejected_overload"] = ua.layer.overloaded
        report["sessions"] = len(ua.sessions)
        if self._transport is not None:
            report.update(self._transport.report())
        return report

    # -- actions from calls -------------------------------------------------------------------
    def hangup(self, call: Call) -> None:
        session = call.session
        if session.state == SessionState.TERMINATED:
            return
        self.ua.bye(session, self._now())
        self._flush()

    def refer(self, call: Call, target: str) -> None:
        self.ua.refer(call.session, target, self._now())
        self._flush()

    def reinvite(self, call: Call, direction: str, new_key: bool = False) -> bool:
        leg = self._legs.get(id(call.session))
        if leg is None:
            return False
        if new_key:
            leg.sdp.new_key()
        sent = self.ua.reinvite(call.session, leg.sdp.offer(direction or leg.sdp.direction), self._now())
        self._flush()
        return sent

    # -- outgoing calls -----------------------------------------------------------------------
    async def dial(self, target: str, timeout: float = 32.0, transport: str | None = None) -> Call:
        """Call ``target`` (``sip:user@ip:port``); returns once answered, raises :class:`DialError`."""
        endpoint = await self.ports.open()
        sdp = LocalSdp(endpoint.host, endpoint.port, self.codecs, srtp=self.srtp)
        session = self.ua.invite(target, sdp.offer(), self._now(), transport=transport)
        leg = _Leg(endpoint, sdp, answered=asyncio.get_running_loop().create_future())
        self._legs[id(session)] = leg
        self._flush()
        try:
            return await asyncio.wait_for(asyncio.shield(leg.answered), timeout)  # type: ignore[arg-type]
        except DialError as exc:
            exc.call_id = session.call_id
            raise
        except (TimeoutError, asyncio.CancelledError) as exc:
            # Nobody awaits the answer any more: a late failure is not reported, and a 2xx that
            # crosses our CANCEL is hung up at once (see _on_answered) instead of left running.
            leg.answered.cancel()  # type: ignore[union-attr]
            self.ua.cancel(session, self._now())
            self._flush()
            if isinstance(exc, TimeoutError):
                error = DialError(408, "no answer", final_response=False)
                error.call_id = session.call_id
                raise error from None
            raise

    def _on_answered(self, session: InviteSession, leg: _Leg, answer: bytes) -> None:
        if leg.answered is not None and leg.answered.cancelled():  # dial() gave up before this 2xx
            self.ua.bye(session, self._now())
            return
        try:
            offer = parse_sdp(answer)
            if not is_numeric(offer.address):
                self._spawn(self._answered_by_name(session, leg, offer))
                return
            media = leg.sdp.accept_answer(offer)
        except SdpError as exc:
            self._bad_answer(session, leg, exc)
            return
        self._answered(session, leg, media)

    def _bad_answer(self, session: InviteSession, leg: _Leg, exc: SdpError) -> None:
        self.ua.bye(session, self._now())
        self._flush()
        if leg.answered is not None and not leg.answered.done():
            leg.answered.set_exception(DialError(488, f"bad SDP answer: {exc}"))

    async def _answered_by_name(self, session: InviteSession, leg: _Leg, offer: MediaOffer) -> None:
        try:
            media = leg.sdp.accept_answer(await self._resolved(offer))
        except SdpError as exc:
            self._bad_answer(session, leg, exc)
            return
        if session.state != SessionState.TERMINATED:
            self._answered(session, leg, media)

    def _answered(self, session: InviteSession, leg: _Leg, media: NegotiatedMedia) -> None:
        call = self._make_call(session, leg, media, "outbound")
        if leg.answered is not None and not leg.answered.done():
            leg.answered.set_result(call)
