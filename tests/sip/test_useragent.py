"""User-agent core (RFC 3261 §8, §12-§15, RFC 3515) with UAs wired through an in-memory network."""

from __future__ import annotations

import hashlib
import re

import pytest
from sipnet import Net, Packet, request, response

from parley.sip.auth import DigestCredentials
from parley.sip.message import SipRequest, SipResponse, make_response, parse_message
from parley.sip.transaction import MAGIC_COOKIE, T1, State
from parley.sip.useragent import (
    ALLOWED_METHODS,
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallFailed,
    CallProgress,
    IncomingCall,
    InfoReceived,
    InviteSession,
    ReferProgress,
    ReferReceived,
    ReInviteReceived,
    ReInviteResult,
    SessionState,
    UserAgent,
)

ALICE = ("10.0.0.1", 5060)
BOB = ("10.0.0.2", 5060)
CAROL = ("10.0.0.3", 5060)
OFFER = (
    b"v=0\r\no=alice 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
)
ANSWER = (
    b"v=0\r\no=bob 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"
)
HOLD = OFFER.replace(b"o=alice 1 1", b"o=alice 1 2") + b"a=sendonly\r\n"
HELD = ANSWER.replace(b"o=bob 1 1", b"o=bob 1 2") + b"a=recvonly\r\n"


def ua(addr: tuple[str, int], user: str, **kwargs) -> UserAgent:
    return UserAgent(addr[0], addr[1], user=user, **kwargs)


@pytest.fixture
def pair() -> tuple[Net, UserAgent, UserAgent]:
    alice, bob = ua(ALICE, "alice"), ua(BOB, "bob")
    return Net.of(alice, bob), alice, bob


def call(net: Net, alice: UserAgent, bob: UserAgent, target: str = "sip:bob@10.0.0.2:5060", **kwargs):
    """Alice calls Bob; return (alice's session, bob's session) once Bob has the INVITE."""
    session = alice.invite(target, OFFER, net.now, **kwargs)
    net.flush()
    incoming = net.events_of(bob, IncomingCall)
    assert len(incoming) == 1
    return session, incoming[-1].session


def establish(net: Net, alice: UserAgent, bob: UserAgent, **kwargs) -> tuple[InviteSession, InviteSession]:
    uac, uas = call(net, alice, bob, **kwargs)
    bob.answer(uas, ANSWER, net.now)
    net.flush()
    assert uac.state == SessionState.CONFIRMED and uas.state == SessionState.CONFIRMED
    return uac, uas


def msgs(packets: list[Packet]) -> list[SipRequest | SipResponse]:
    return [p.msg for p in packets]


def outbox_messages(agent: UserAgent) -> list[SipRequest | SipResponse]:
    out = [parse_message(o.data) for o in agent.outbox]
    agent.outbox.clear()
    return out


def raw(
    method: str,
    *,
    to_tag: str | None = None,
    from_tag: str = "ft",
    call_id: str = "raw-1",
    cseq: int = 1,
    extra: str = "",
    body: bytes = b"",
    branch: str = "z9hG4bKraw1",
) -> bytes:
    to = "<sip:bob@10.0.0.2>" + (f";tag={to_tag}" if to_tag else "")
    head = (
        f"{method} sip:bob@10.0.0.2 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.1:5060;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@10.0.0.1>;tag={from_tag}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:alice@10.0.0.1:5060>\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# --- a whole call ------------------------------------------------------------------------------
def test_full_call_invite_100_200_ack_bye(pair):
    net, alice, bob = pair
    uac, uas = call(net, alice, bob)
    assert net.labels() == ["INVITE", "100 INVITE"]
    invite = net.log[0].msg
    assert net.log[0].dst == BOB and net.log[1].dst == ALICE
    assert invite.headers.get("Contact") == "<sip:alice@10.0.0.1:5060>"
    assert invite.top_via.branch.startswith(MAGIC_COOKIE)
    assert invite.body == OFFER and invite.content_type == "application/sdp"
    trying = net.log[1].msg
    assert trying.to.tag is None
    assert uas.state == SessionState.INCOMING and uac.state == SessionState.EARLY
    assert net.events_of(bob, IncomingCall)[0].offer == OFFER
    assert [e.status for e in net.events_of(alice, CallProgress)] == [100]

    bob.ring(uas, net.now)
    net.flush()
    assert net.labels(since=2) == ["180 INVITE"]
    assert net.log[2].msg.to.tag == uas.local_tag

    bob.answer(uas, ANSWER, net.now)
    net.flush()
    assert net.labels(since=3) == ["200 INVITE", "ACK"]
    ok, ack = net.log[3].msg, net.log[4].msg
    assert ok.body == ANSWER and ok.content_type == "application/sdp"
    assert ok.to.tag == uas.local_tag
    assert ok.headers.get("Contact") == "<sip:bob@10.0.0.2:5060>"
    assert "INVITE" in ok.headers.get_all("Allow")
    assert ack.uri == "sip:bob@10.0.0.2:5060"  # the remote target from the 200's Contact
    assert ack.cseq == (1, "ACK")
    assert ack.top_via.branch != invite.top_via.branch  # ACK for 2xx is its own transaction
    assert ack.to.tag == uas.local_tag and ack.from_.tag == uac.local_tag
    assert [e.answer for e in net.events_of(alice, CallAnswered)] == [ANSWER]
    assert len(net.events_of(bob, CallConfirmed)) == 1
    assert uac.dialog.id == (uas.dialog.call_id, uas.dialog.remote_tag, uas.dialog.local_tag)

    alice.bye(uac, net.now)
    net.flush()
    assert net.labels(since=5) == ["BYE", "200 BYE"]
    bye = net.log[5].msg
    assert bye.uri == "sip:bob@10.0.0.2:5060" and bye.cseq == (2, "BYE")
    assert [e.reason for e in net.events_of(alice, CallEnded)] == ["local-bye"]
    assert [e.reason for e in net.events_of(bob, CallEnded)] == ["remote-bye"]
    assert uac.state == uas.state == SessionState.TERMINATED
    # Lingering sessions are forgotten after the absorb period; no traffic on the way.
    net.advance(40.0)
    assert net.labels(since=7) == []
    assert alice.sessions == {} and bob.sessions == {}


def test_callee_hangs_up(pair):
    net, alice, bob = pair
    uac, uas = establish(net, alice, bob)
    mark = len(net.log)
    bob.bye(uas, net.now)
    net.flush()
    assert net.labels(since=mark) == ["BYE", "200 BYE"]
    bye = net.log[mark].msg
    assert net.log[mark].dst == ALICE
    assert bye.uri == "sip:alice@10.0.0.1:5060"
    assert bye.from_.tag == uas.local_tag and bye.to.tag == uac.local_tag
    assert bye.cseq == (1, "BYE")  # the UAS's own CSeq space
    assert [e.reason for e in net.events_of(bob, CallEnded)] == ["local-bye"]
    assert [e.reason for e in net.events_of(alice, CallEnded)] == ["remote-bye"]


def test_call_over_tcp_has_no_retransmissions():
    alice, bob = ua(ALICE, "alice", transport="TCP"), ua(BOB, "bob", transport="TCP")
    net = Net.of(alice, bob)
    uac, uas = establish(net, alice, bob, target="sip:bob@10.0.0.2:5060;transport=tcp")
    assert all(p.transport == "TCP" for p in net.log)
    assert net.log[0].msg.top_via.transport == "TCP"
    assert net.log[0].msg.headers.get("Contact") == "<sip:alice@10.0.0.1:5060;transport=tcp>"
    mark = len(net.log)
    net.advance(60.0)
    assert net.labels(since=mark) == []
    assert uac.state == uas.state == SessionState.CONFIRMED


def test_rejected_call_is_acked_and_ends_refused(pair):
    net, alice, bob = pair
    _uac, uas = call(net, alice, bob)
    bob.reject(uas, 486, net.now)
    net.flush()
    assert net.labels(since=2) == ["486 INVITE", "ACK"]
    ack = net.log[3].msg
    assert ack.top_via.branch == net.log[0].msg.top_via.branch
    assert [(e.status, e.reason) for e in net.events_of(alice, CallFailed)] == [(486, "Busy Here")]
    assert [e.reason for e in net.events_of(alice, CallEnded)] == ["refused"]
    assert [e.reason for e in net.events_of(bob, CallEnded)] == ["refused"]
    net.advance(40.0)
    assert net.labels(since=4) == []  # ACK stopped timer G


def test_unanswered_invite_times_out(pair):
    net, alice, _bob = pair
    net.drop(request("INVITE"), count=None)
    session = alice.invite("sip:bob@10.0.0.2", OFFER, 0.0)
    net.advance(31.9)
    assert net.labels() == ["INVITE"] * 7
    assert net.events_of(alice) == []
    net.advance(0.2)
    assert [(e.status) for e in net.events_of(alice, CallFailed)] == [408]
    assert [e.reason for e in net.events_of(alice, CallEnded)] == ["timeout"]
    assert session.state == SessionState.TERMINATED


# --- 2xx reliability (§13.3.1.4) --------------------------------------------------------------------
def test_lost_ack_2xx_is_retransmitted_until_the_ack_arrives(pair):
    net, alice, bob = pair
    uac, uas = call(net, alice, bob)
    net.drop(request("ACK"), count=1)
    bob.answer(uas, ANSWER, net.now)
    net.flush()
    assert net.labels(since=2) == ["200 INVITE", "ACK"]
    assert net.log[3].fate == "dropped"
    assert uas.state == SessionState.EARLY and uac.state == SessionState.CONFIRMED
    net.advance(T1)
    # The 2xx retransmission is ACKed again by the UAC; the UAS is confirmed.
    assert net.labels(since=4) == ["200 INVITE", "ACK"]
    assert net.log[4].data == net.log[2].data
    assert net.log[5].data == net.log[3].data  # the very same ACK
    assert uas.state == SessionState.CONFIRMED
    assert len(net.events_of(bob, CallConfirmed)) == 1
    assert len(net.events_of(alice, CallAnswered)) == 1  # not reported twice
    net.advance(60.0)
    assert net.labels(since=6) == []


def test_callee_bye_before_the_ack_waits_for_the_ack(pair):
    net, alice, bob = pair
    _, uas = call(net, alice, bob)
    net.drop(request("ACK"), count=1)
    bob.answer(uas, ANSWER, net.now)
    net.flush()
    bob.bye(uas, net.now)
    net.flush()
    assert "BYE" not in net.labels(since=2)  # §15: not before the ACK (or its timeout)
    assert uas.state == SessionState.EARLY
    net.advance(T1)  # the 2xx retransmission brings a new ACK, then the BYE goes out
    assert net.labels(since=4) == ["200 INVITE", "ACK", "BYE", "200 BYE"]
    assert [e.reason for e in net.events_of(bob, CallEnded)] == ["local-bye"]
    assert [e.reason for e in net.events_of(alice, CallEnded)] == ["remote-bye"]


def test_no_ack_within_64_t1_sends_bye_and_ends_no_ack(pair):
    net, alice, bob = pair
    _uac, uas = call(net, alice, bob)
    net.drop(request("ACK"), count=None)
    bob.answer(uas, ANSWER, 0.0)
    net.advance(31.9)
    oks = [p for p in net.sent(bob) if p.label == "200 INVITE"]
    assert [p.time for p in oks] == pytest.approx(
        [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    )
    assert net.events_of(bob, CallEnded) == []
    mark = len(net.log)
    net.advance(0.2)
    assert net.labels(bob, since=mark)[0] == "BYE"
    assert [e.reason for e in net.events_of(bob, CallEnded)] == ["no-ack"]
    assert uas.state == SessionState.TERMINATED
    assert net.events_of(bob, CallConfirmed) == []
    mark = len(net.log)
    net.advance(60.0)
    assert "200 INVITE" not in net.labels(bob, since=mark)


def test_2xx_retransmissions_follow_the_via_not_the_source_port():
    bob = ua(BOB, "bob")
    data = raw("INVITE", body=OFFER, extra="Content-Type: application/sdp\r\n").replace(b";rport", b"")
    bob.receive(data, ("10.0.0.1", 40000), "UDP", 0.0)
    (event,) = bob.events
    bob.outbox.clear()
    bob.answer(event.session, ANSWER, 0.0)
    bob.expire(T1)
    assert [(parse_message(o.data).status, o.addr) for o in bob.outbox] == [
        (200, ("10.0.0.1", 5060)),
        (200, ("10.0.0.1", 5060)),
    ]


def test_retransmitted_invite_is_answered_once(pair):
    net, alice, bob = pair
    net.duplicate(request("INVITE"))
    session = alice.invite("sip:bob@10.0.0.2", OFFER, 0.0)
    net.flush()
    assert net.labels() == ["INVITE", "INVITE", "100 INVITE", "100 INVITE"]
    assert net.log[2].data == net.log[3].data  # the same 100 resent by the transaction
    assert len(net.events_of(bob, IncomingCall)) == 1
    assert len(bob.sessions) == 1
    (uas,) = bob.sessions.values()
    bob.answer(uas, ANSWER, net.now)
    net.flush()
    mark = len(net.log)
    alice.layer.send_stateless(net.log[0].data, BOB, "UDP")  # a late retransmission after the 2xx
    net.flush()
    assert net.labels(since=mark) == ["INVITE"]  # absorbed by the Accepted transaction
    assert len(net.events_of(bob, IncomingCall)) == 1
    assert session.state == SessionState.CONFIRMED


# --- CANCEL (§9) --------------------------------------------------------------------------------
def test_cancel_before_answer(pair):
    net, alice, bob = pair
    uac, uas = call(net, alice, bob)
    bob.ring(uas, net.now)
    net.flush()
    mark = len(net.log)
    alice.cancel(uac, net.now)
    net.flush()
    assert net.labels(since=mark) == ["CANCEL", "200 CANCEL", "487 INVITE", "ACK"]
    invite = net.log[0].msg
    cancel = net.log[mark].msg
    assert cancel.uri == invite.uri
    assert cancel.top_via.branch == invite.top_via.branch
    assert cancel.cseq == (1, "CANCEL")
    assert cancel.headers.get("To") == invite.headers.get("To")
    assert cancel.from_.tag == invite.from_.tag
    terminated = net.log[mark + 2].msg
    assert terminated.to.tag == uas.local_tag
    ack = net.log[mark + 3].msg
    assert ack.top_via.branch == invite.top_via.branch and ack.to.tag == uas.local_tag
    assert [e.status for e in net.events_of(alice, CallFailed)] == [487]
    assert [e.reason for e in net.events_of(alice, CallEnded)] == ["cancelled"]
    assert [e.reason for e in net.events_of(bob, CallEnded)] == ["cancelled"]
    bob.answer(uas, ANSWER, net.now)  # too late: no-op
    net.advance(40.0)
    assert "200 INVITE" not in net.labels()


def test_cancel_before_any_provisional_is_deferred(pair):
    net, alice, _bob = pair
    net.hold(response(100))
    uac = alice.invite("sip:bob@10.0.0.2", OFFER, 0.0)
    net.flush()
    assert net.labels() == ["INVITE", "100 INVITE"] and net.log[1].fate == "held"
    alice.cancel(uac, net.now)
    net.flush()
    assert net.labels() == ["INVITE", "100 INVITE"]  # no CANCEL yet (§9.1)
    net.release()
    assert net.labels(since=2) == ["CANCEL", "200 CANCEL", "487 INVITE", "ACK"]
    assert [e.reason for e in net.events_of(alice, CallEnded)] == ["cancelled"]


def test_bye_before_answer_cancels(pair):
    net, alice, bob = pair
    uac, _uas = call(net, alice, bob)
    alice.bye(uac, net.now)
    net.flush()
    assert net.labels(since=2) == ["CANCEL", "200 CANCEL", "487 INVITE", "ACK"]
    assert [e.reason for e in net.events_of(alice, CallEnded)] == ["cancelled"]


def test_deferred_cancel_then_2xx_hangs_up_with_bye(pair):
    net, alice, bob = pair
    net.hold(response(100))
    uac = alice.invite("sip:bob@10.0.0.2", OFFER, 0.0)
    net.flush()
    alice.cancel(uac, net.now)
    (incoming,) = net.events_of(bob, IncomingCall)
    bob.answer(incoming.session, ANSWER, net.now)  # the 2xx overtakes the held 100
    net.flush()
    assert net.labels(since=2) == ["200 INVITE", "ACK", "BYE", "200 BYE"]
    assert len(net.events_of(alice, CallAnswered)) == 1
    assert [e.reason for e in net.events_of(alice, CallEnded)] == ["local-bye"]
    assert [e.reason for e in net.events_of(bob, CallEnded)] == ["remote-bye"]
    net.release()  # the stale 100 changes nothing
    assert uac.state == SessionState.TERMINATED
    assert "CANCEL" not in net.labels()


def test_cancel_after_2xx_does_not_end_the_call(pair):
    net, alice, bob = pair
    _uac, uas = establish(net, alice, bob)
    invite = net.log[0].msg
    cancel = raw("CANCEL", from_tag=invite.from_.tag, call_id=invite.call_id, branch=invite.top_via.branch)
    bob.receive(cancel, ALICE, "UDP", net.now)
    net.flush()
    assert net.labels()[-1] == "200 CANCEL"
    assert uas.state == SessionState.CONFIRMED and net.events_of(bob, CallEnded) == []


def test_cancel_of_unknown_invite_gets_481():
    bob = ua(BOB, "bob")
    bob.receive(raw("CANCEL"), ALICE, "UDP", 0.0)
    assert [m.status for m in outbox_messages(bob)] == [481]


# --- requests the core answers itself ----------------------------------------------------------
def test_options_gets_200_with_allow():
    bob = ua(BOB, "bob")
    bob.receive(raw("OPTIONS"), ALICE, "UDP", 0.0)
    (ok,) = outbox_messages(bob)
    assert ok.status == 200 and ok.cseq == (1, "OPTIONS")
    assert ok.headers.get_all("Allow") == list(ALLOWED_METHODS)
    assert ok.to.tag
    assert ok.headers.get("Accept") == "application/sdp"
    assert bob.events == [] and bob.sessions == {}


def test_unknown_method_gets_501():
    bob = ua(BOB, "bob")
    bob.receive(raw("PUBLISH"), ALICE, "UDP", 0.0)
    (reply,) = outbox_messages(bob)
    assert (reply.status, reply.cseq) == (501, (1, "PUBLISH"))
    assert "INVITE" in reply.headers.get_all("Allow")


@pytest.mark.parametrize("method", ["BYE", "INFO", "REFER", "NOTIFY"])
def test_out_of_dialog_requests_get_481(method):
    bob = ua(BOB, "bob")
    bob.receive(raw(method), ALICE, "UDP", 0.0)
    assert [m.status for m in outbox_messages(bob)] == [481]


@pytest.mark.parametrize("method", ["BYE", "INFO"])
@pytest.mark.parametrize("which", ["to", "from", "call-id"])
def test_in_dialog_request_with_wrong_ids_gets_481(pair, method, which):
    net, alice, bob = pair
    uac, uas = establish(net, alice, bob)
    tags = {"to_tag": uas.local_tag, "from_tag": uac.local_tag, "call_id": uac.call_id}
    tags[{"to": "to_tag", "from": "from_tag", "call-id": "call_id"}[which]] = "wrong"
    bob.receive(raw(method, cseq=5, **tags), ALICE, "UDP", net.now)
    replies = outbox_messages(bob)
    assert [m.status for m in replies] == [481]
    assert uas.state == SessionState.CONFIRMED
    assert net.events_of(bob, CallEnded) == [] and bob.events == []


def test_in_dialog_cseq_out_of_order_gets_500(pair):
    net, alice, bob = pair
    uac, uas = establish(net, alice, bob)
    ids = {"to_tag": uas.local_tag, "from_tag": uac.local_tag, "call_id": uac.call_id}
    bob.receive(raw("INFO", cseq=1, **ids), ALICE, "UDP", net.now)
    (reply,) = outbox_messages(bob)
    assert reply.status == 500
    bob.receive(raw("INFO", cseq=7, branch="z9hG4bKi7", body=b"x", **ids), ALICE, "UDP", net.now)
    assert [m.status for m in outbox_messages(bob)] == [200]
    assert [e.body for e in bob.events if isinstance(e, InfoReceived)] == [b"x"]


def test_busy_above_max_sessions_gets_503_with_retry_after():
    alice, bob = ua(ALICE, "alice"), ua(BOB, "bob", max_sessions=1)
    net = Net.of(alice, bob)
    call(net, alice, bob)
    second = alice.invite("sip:bob@10.0.0.2", OFFER, net.now)
    net.flush()
    assert net.labels(since=2) == ["INVITE", "503 INVITE", "ACK"]
    assert net.log[3].msg.headers.get("Retry-After") == "5"
    assert bob.stats["rejected_busy"] == 1
    assert len(net.events_of(bob, IncomingCall)) == 1
    assert second.state == SessionState.TERMINATED
    assert [e.status for e in net.events_of(alice, CallFailed)] == [503]


def test_draining_answers_options_and_new_invites_503_and_keeps_calls_in_progress():
    alice, bob = ua(ALICE, "alice"), ua(BOB, "bob")
    net = Net.of(alice, bob)
    uac, uas = establish(net, alice, bob)
    bob.draining = True
    bob.receive(raw("OPTIONS", call_id="probe-1"), ALICE, "UDP", net.now)
    (probe,) = outbox_messages(bob)
    assert (probe.status, probe.cseq[1]) == (503, "OPTIONS")
    assert probe.headers.get("Retry-After") == "5"
    refused = alice.invite("sip:bob@10.0.0.2", OFFER, net.now)
    net.flush()
    assert refused.state == SessionState.TERMINATED
    assert [e.status for e in net.events_of(alice, CallFailed)] == [503]
    alice.bye(uac, net.now)  # the call in progress still ends normally
    net.flush()
    assert uas.state == SessionState.TERMINATED and uac.state == SessionState.TERMINATED
    bob.draining = False
    bob.receive(raw("OPTIONS", call_id="probe-2", branch="z9hG4bKp2"), ALICE, "UDP", net.now)
    assert [m.status for m in outbox_messages(bob)] == [200]


def test_admission_control_rejects_new_calls_with_503_while_overloaded():
    alice, bob = ua(ALICE, "alice"), ua(BOB, "bob")
    net = Net.of(alice, bob)
    overloaded = [True]
    bob.admit = lambda: not overloaded[0]
    refused = alice.invite("sip:bob@10.0.0.2", OFFER, net.now)
    net.flush()
    assert net.labels() == ["INVITE", "503 INVITE", "ACK"]
    assert refused.state == SessionState.TERMINATED and net.events_of(bob, IncomingCall) == []
    overloaded[0] = False
    alice.invite("sip:bob@10.0.0.2", OFFER, net.now)
    net.flush()
    assert len(net.events_of(bob, IncomingCall)) == 1  # load is back down: calls are taken again


def test_unsupported_require_gets_420():
    bob = ua(BOB, "bob")
    bob.receive(raw("INVITE", extra="Require: 100rel, timer\r\n"), ALICE, "UDP", 0.0)
    (reply,) = outbox_messages(bob)
    assert reply.status == 420
    assert reply.headers.get_all("Unsupported") == ["100rel", "timer"]
    assert bob.events == []


def test_invite_with_unsupported_body_gets_415():
    bob = ua(BOB, "bob")
    bob.receive(raw("INVITE", extra="Content-Type: text/plain\r\n", body=b"hi"), ALICE, "UDP", 0.0)
    assert [m.status for m in outbox_messages(bob)] == [415]


# --- re-INVITE (§14) ------------------------------------------------------------------------------
def test_reinvite_hold(pair):
    net, alice, bob = pair
    uac, uas = establish(net, alice, bob)
    mark = len(net.log)
    assert alice.reinvite(uac, HOLD, net.now)
    assert not alice.reinvite(uac, HOLD, net.now)  # one at a time
    net.flush()
    assert net.labels(since=mark) == ["INVITE", "100 INVITE"]  # 100 stops INVITE retransmissions
    reinvite = net.log[mark].msg
    assert reinvite.to.tag == uas.local_tag and reinvite.cseq == (2, "INVITE")
    assert reinvite.headers.get("Contact") == "<sip:alice@10.0.0.1:5060>"
    (event,) = net.events_of(bob, ReInviteReceived)
    assert event.session is uas and event.offer == HOLD and b"a=sendonly" in event.offer
    bob.respond_reinvite(uas, 200, HELD, net.now)
    net.flush()
    assert net.labels(since=mark + 2) == ["200 INVITE", "ACK"]
    assert net.log[mark + 3].msg.cseq == (2, "ACK")
    results = net.events_of(alice, ReInviteResult)
    assert [(r.status, r.answer) for r in results] == [(200, HELD)]
    assert uac.remote_sdp == HELD and uas.local_sdp == HELD
    assert uac.state == uas.state == SessionState.CONFIRMED
    mark = len(net.log)
    net.advance(40.0)
    assert net.labels(since=mark) == []  # the ACK stopped the 2xx retransmissions
    assert net.events_of(bob, CallEnded) == []


def test_reinvite_2xx_retransmission_is_acked_again(pair):
    net, alice, bob = pair
    uac, uas = establish(net, alice, bob)
    alice.reinvite(uac, HOLD, net.now)
    net.flush()
    net.drop(request("ACK"))
    bob.respond_reinvite(uas, 200, HELD, net.now)
    net.flush()
    mark = len(net.log)
    net.advance(T1)
    assert net.labels(since=mark) == ["200 INVITE", "ACK"]
    assert net.log[-1].fate == "delivered"
    mark = len(net.log)
    net.advance(40.0)
    assert net.labels(since=mark) == []
    assert net.events_of(bob, CallEnded) == []
    assert len(net.events_of(alice, ReInviteResult)) == 1


def test_reinvite_rejected_keeps_the_call(pair):
    net, alice, bob = pair
    uac, uas = establish(net, alice, bob)
    alice.reinvite(uac, HOLD, net.now)
    net.flush()
    bob.respond_reinvite(uas, 488, b"", net.now)
    net.flush()
    assert net.labels()[-2:] == ["488 INVITE", "ACK"]
    assert [r.status for r in net.events_of(alice, ReInviteResult)] == [488]
    assert uac.state == uas.state == SessionState.CONFIRMED
    assert alice.reinvite(uac, HOLD, net.now)  # a new one may be sent


def test_reinvite_glare_491_and_retry_after_random_delay():
    alice = ua(ALICE, "alice", rng=lambda: 0.5)
    bob = ua(BOB, "bob", rng=lambda: 0.5)
    net = Net.of(alice, bob)
    uac, uas = establish(net, alice, bob)
    start = net.now
    mark = len(net.log)
    assert alice.reinvite(uac, HOLD, net.now)
    assert bob.reinvite(uas, HELD, net.now)
    net.flush()
    labels = net.labels(since=mark)
    assert labels.count("491 INVITE") == 2
    assert sorted(labels) == sorted(["INVITE", "INVITE", "491 INVITE", "491 INVITE", "ACK", "ACK"])
    assert net.events_of(alice, ReInviteReceived) == [] and net.events_of(bob, ReInviteReceived) == []
    assert [r.status for r in net.events_of(alice, ReInviteResult)] == [491]
    assert [r.status for r in net.events_of(bob, ReInviteResult)] == [491]
    # Bob does not own the Call-ID: retry after 2.0 * 0.5 = 1.0 s; Alice: 2.1 + 1.9 * 0.5 = 3.05 s.
    mark = len(net.log)
    net.advance(0.99)
    assert net.labels(since=mark) == []
    net.advance(0.02)
    assert net.labels(bob, since=mark)[0] == "INVITE"
    assert net.log[mark].time == pytest.approx(start + 1.0)
    (bob_retry,) = net.events_of(alice, ReInviteReceived)
    assert bob_retry.offer == HELD
    alice.respond_reinvite(uac, 200, OFFER, net.now)
    net.flush()
    assert [r.status for r in net.events_of(bob, ReInviteResult)] == [491, 200]
    mark = len(net.log)
    net.advance(2.0)  # to start + 3.01
    assert net.labels(alice, since=mark) == []
    net.advance(0.1)
    retry = [p for p in net.sent(alice, since=mark) if p.label == "INVITE"]
    assert len(retry) == 1 and retry[0].time == pytest.approx(start + 3.05)
    (alice_retry,) = net.events_of(bob, ReInviteReceived)
    assert alice_retry.offer == HOLD


# --- REFER (RFC 3515) ----------------------------------------------------------------------------
def test_refused_or_unanswered_refer_ends_the_transfer(pair):
    net, alice, bob = pair
    uac, uas = establish(net, alice, bob)
    alice.refer(uac, "sip:carol@10.0.0.3", net.now)
    net.flush()
    txn = uas.refer_txn
    txn.respond_with(603, now=net.now)  # the peer does not transfer: no NOTIFY will follow
    bob.refer_txn = None
    net.flush()
    assert [(p.status, p.final) for p in net.events_of(alice, ReferProgress)] == [(603, True)]
    net.drop(request("REFER"), count=None)
    alice.refer(uac, "sip:carol@10.0.0.3", net.now)
    net.flush()
    net.advance(40.0)  # timer F
    assert [(p.status, p.final) for p in net.events_of(alice, ReferProgress)][-1] == (408, True)


def test_requests_for_an_ended_dialog_get_481_and_refer_is_refused_locally(pair):
    net, alice, bob = pair
    uac, uas = establish(net, alice, bob)
    alice.bye(uac, net.now)
    net.flush()
    assert uas.state == SessionState.TERMINATED  # it lingers to absorb retransmissions
    assert alice.refer(uac, "sip:carol@10.0.0.3", net.now) is None
    mark = len(net.log)
    bob._in_dialog_request(uas, "REFER", b"", net.now, extra=[("Refer-To", "<sip:carol@10.0.0.3>")])
    net.flush()
    assert net.labels(since=mark) == ["REFER", "481 REFER"]
    assert net.events_of(alice, ReferReceived) == []


def test_refer_accept_and_notify_progress(pair):
    net, alice, bob = pair
    uac, uas = establish(net, alice, bob)
    mark = len(net.log)
    alice.refer(uac, "sip:carol@10.0.0.3", net.now)
    net.flush()
    assert net.labels(since=mark) == ["REFER"]
    refer = net.log[mark].msg
    assert refer.headers.get("Refer-To") == "<sip:carol@10.0.0.3>"
    (event,) = net.events_of(bob, ReferReceived)
    assert event.session is uas and event.refer_to == "sip:carol@10.0.0.3"
    bob.accept_refer(uas, net.now)
    net.flush()
    assert net.labels(since=mark + 1) == ["202 REFER", "NOTIFY", "200 NOTIFY"]
    notify = net.log[mark + 2].msg
    assert notify.headers.get("Event") == "refer"
    assert notify.headers.get("Subscription-State").startswith("active")
    assert notify.content_type == "message/sipfrag"
    assert notify.body == b"SIP/2.0 100 Trying\r\n"
    assert [(p.status, p.final) for p in net.events_of(alice, ReferProgress)] == [(100, False)]
    bob.notify_refer(uas, 200, net.now)
    net.flush()
    assert net.labels(since=mark + 4) == ["NOTIFY", "200 NOTIFY"]
    final = net.log[mark + 4].msg
    assert final.headers.get("Subscription-State").startswith("terminated")
    assert final.body == b"SIP/2.0 200 OK\r\n"
    assert final.cseq[0] > notify.cseq[0]
    assert [(p.status, p.final) for p in net.events_of(alice, ReferProgress)] == [(100, False), (200, True)]
    assert uas.refer_txn is None
    assert uac.state == uas.state == SessionState.CONFIRMED


# --- digest authentication (§22) ------------------------------------------------------------------
def _auth_params(value: str) -> dict[str, str]:
    assert value.startswith("Digest ")
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', value[7:])}


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _challenge(invite: SipRequest, status: int = 401, nonce: str = "n1", stale: bool = False) -> bytes:
    header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    value = f'Digest realm="parley.test", nonce="{nonce}", qop="auth", opaque="op"'
    if stale:
        value += ", stale=TRUE"
    return make_response(invite, status, to_tag="srv", extra=[(header, value)]).serialize()


def _only_invite(agent: UserAgent) -> SipRequest:
    out = outbox_messages(agent)
    invites = [m for m in out if isinstance(m, SipRequest) and m.method == "INVITE"]
    assert len(invites) == 1
    return invites[0]


@pytest.mark.parametrize(("status", "answer_header"), [(401, "Authorization"), (407, "Proxy-Authorization")])
def test_digest_challenge_is_answered_once(status, answer_header):
    alice = ua(ALICE, "alice", credentials=DigestCredentials("alice", "s3cret"))
    session = alice.invite("sip:bob@10.0.0.2", OFFER, 0.0)
    first = _only_invite(alice)
    alice.receive(_challenge(first, status), BOB, "UDP", 0.1)
    out = outbox_messages(alice)
    assert [(m.method, m.cseq) for m in out] == [("ACK", (1, "ACK")), ("INVITE", (2, "INVITE"))]
    ack, second = out
    assert ack.top_via.branch == first.top_via.branch
    assert second.top_via.branch != first.top_via.branch
    assert second.call_id == first.call_id and second.from_.tag == first.from_.tag
    assert second.to.tag is None
    assert second.body == OFFER
    params = _auth_params(second.headers.get(answer_header))
    assert params["username"] == "alice" and params["realm"] == "parley.test"
    assert params["nonce"] == "n1" and params["uri"] == "sip:bob@10.0.0.2"
    assert params["qop"] == "auth" and params["nc"] == "00000001" and params["opaque"] == "op"
    ha1 = _md5("alice:parley.test:s3cret")
    ha2 = _md5("INVITE:sip:bob@10.0.0.2")
    expected = _md5(f"{ha1}:n1:{params['nc']}:{params['cnonce']}:auth:{ha2}")
    assert params["response"] == expected
    assert alice.events == []  # the challenge is handled inside the core
    assert session.state == SessionState.CALLING
    # A second, non-stale challenge means the credentials are wrong: give up.
    alice.receive(_challenge(second, status, nonce="n2"), BOB, "UDP", 0.2)
    out = outbox_messages(alice)
    assert [(m.method, m.cseq) for m in out] == [("ACK", (2, "ACK"))]
    assert [(e.status) for e in alice.events if isinstance(e, CallFailed)] == [status]
    assert [e.reason for e in alice.events if isinstance(e, CallEnded)] == ["refused"]


def test_digest_stale_nonce_is_retried():
    alice = ua(ALICE, "alice", credentials=DigestCredentials("alice", "s3cret"))
    alice.invite("sip:bob@10.0.0.2", OFFER, 0.0)
    first = _only_invite(alice)
    alice.receive(_challenge(first), BOB, "UDP", 0.1)
    second = _only_invite(alice)
    alice.receive(_challenge(second, nonce="n2", stale=True), BOB, "UDP", 0.2)
    third = _only_invite(alice)
    assert third.cseq == (3, "INVITE")
    assert _auth_params(third.headers.get("Authorization"))["nonce"] == "n2"
    assert alice.events == []


def test_digest_without_credentials_fails():
    alice = ua(ALICE, "alice")
    alice.invite("sip:bob@10.0.0.2", OFFER, 0.0)
    first = _only_invite(alice)
    alice.receive(_challenge(first), BOB, "UDP", 0.1)
    assert [m.method for m in outbox_messages(alice)] == ["ACK"]
    assert [e.status for e in alice.events if isinstance(e, CallFailed)] == [401]


def test_authenticated_call_acks_2xx_with_credentials():
    alice = ua(ALICE, "alice", credentials=DigestCredentials("alice", "s3cret"))
    session = alice.invite("sip:bob@10.0.0.2", OFFER, 0.0)
    first = _only_invite(alice)
    alice.receive(_challenge(first), BOB, "UDP", 0.1)
    second = _only_invite(alice)
    ok = make_response(second, 200, to_tag="srv", body=ANSWER, extra=[("Contact", "<sip:bob@10.0.0.2>")])
    alice.receive(ok.serialize(), BOB, "UDP", 0.2)
    (ack,) = outbox_messages(alice)
    assert ack.method == "ACK" and ack.cseq == (2, "ACK")
    assert ack.headers.get("Authorization") == second.headers.get("Authorization")
    assert session.state == SessionState.CONFIRMED


# --- robustness -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data",
    [b"\x00\xff\xfe garbage", b"hello world\r\n\r\n", b"SIP/2.0 999\r\n\r\n", b"INVITE\r\n\r\n", b"\r\n\r\n"],
)
def test_garbage_datagrams_are_dropped(data):
    bob = ua(BOB, "bob")
    bob.receive(data, ALICE, "UDP", 0.0)
    assert bob.outbox == [] and bob.events == []


def test_broken_request_with_readable_headers_gets_400_naming_the_problem():
    bob = ua(BOB, "bob")
    data = raw("INVITE", extra="Max-Forwards: lots\r\n")
    bob.receive(data, ALICE, "UDP", 0.0)
    assert len(bob.outbox) == 1 and bob.outbox[0].addr == ALICE
    (reply,) = outbox_messages(bob)
    assert reply.status == 400
    assert reply.headers.get("Via") == "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKraw1;rport"
    assert reply.headers.get("Call-ID") == "raw-1" and reply.cseq == (1, "INVITE")
    assert reply.from_.tag == "ft"
    assert "Max-Forwards" in reply.reason and reply.to.tag  # §21.4.1: the phrase says what is wrong
    assert bob.stats["parse_errors"] == 1 and bob.events == []


def test_bad_version_gets_505():
    bob = ua(BOB, "bob")
    bob.receive(raw("OPTIONS").replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), ALICE, "UDP", 0.0)
    assert [m.status for m in outbox_messages(bob)] == [505]


def test_stray_responses_never_crash_and_match_nothing(pair):
    net, alice, bob = pair
    _uac, uas = call(net, alice, bob)  # bob has an unanswered incoming session
    invite = net.log[0].msg
    bob.outbox.clear()
    strays = [
        make_response(invite, 200, to_tag="x", extra=[("Contact", "<sip:x@10.0.0.9>")]),
        make_response(invite, 180, to_tag="x"),
        make_response(invite, 486, to_tag="x"),
    ]
    # A response that names bob's pending session by its tags in From (as if bob had sent it).
    forged = parse_message(raw("INVITE", from_tag=uas.local_tag, call_id=uas.call_id))
    strays.append(make_response(forged, 200, to_tag="y", extra=[("Contact", "<sip:x@10.0.0.9>")]))
    strays.append(make_response(forged, 200, to_tag="y"))  # no Contact either
    bye = parse_message(raw("BYE", to_tag="y"))
    strays.append(make_response(bye, 200))
    for stray in strays:
        bob.receive(stray.serialize(), ALICE, "UDP", 1.0)
        bob.receive(stray.serialize(), ALICE, "TCP", 1.0)
    assert bob.outbox == [] and bob.events == []
    assert uas.state == SessionState.INCOMING and uas.dialog is None


def test_stray_2xx_after_call_ended_is_not_a_new_answer():
    alice, bob = ua(ALICE, "alice", transport="TCP"), ua(BOB, "bob", transport="TCP")
    net = Net.of(alice, bob)
    uac, uas = call(net, alice, bob, target="sip:bob@10.0.0.2;transport=tcp")
    bob.reject(uas, 603, net.now)
    net.flush()
    net.advance(1.0)  # timer D is 0 on TCP: the INVITE client transaction is gone, the session lingers
    assert uac.client_txn.state == State.TERMINATED
    assert alice.sessions
    late = make_response(uac.invite, 200, to_tag="late", extra=[("Contact", "<sip:bob@10.0.0.2>")])
    mark = len(net.log)
    alice.receive(late.serialize(), BOB, "TCP", net.now)
    net.flush()
    assert net.labels(since=mark) == []
    assert net.events_of(alice, CallAnswered) == []
    assert uac.dialog is None and uac.state == SessionState.TERMINATED


# --- TCP framing ------------------------------------------------------------------------------------
def test_tcp_message_split_across_chunks():
    bob = ua(BOB, "bob", transport="TCP")
    data = raw("INVITE", body=OFFER, extra="Content-Type: application/sdp\r\n").replace(b"/UDP", b"/TCP")
    cut = len(data) - 1  # the last byte of the body completes the message
    for i in range(0, cut, 7):
        bob.receive(data[i : min(i + 7, cut)], ALICE, "TCP", 0.0)
    assert bob.events == [] and bob.outbox == []
    bob.receive(data[cut:], ALICE, "TCP", 0.0)
    assert [type(e) for e in bob.events] == [IncomingCall]
    assert bob.events[0].offer == OFFER
    assert [(o.addr, o.transport) for o in bob.outbox] == [(ALICE, "TCP")]
    (trying,) = outbox_messages(bob)
    assert trying.status == 100


def test_tcp_two_messages_in_one_chunk():
    bob = ua(BOB, "bob", transport="TCP")
    invite = raw("INVITE", body=OFFER, extra="Content-Type: application/sdp\r\n").replace(b"/UDP", b"/TCP")
    options = raw("OPTIONS", call_id="raw-2", branch="z9hG4bKopt").replace(b"/UDP", b"/TCP")
    bob.receive(b"\r\n\r\n" + invite + options, ALICE, "TCP", 0.0)  # keep-alive CRLFs first
    assert [type(e) for e in bob.events] == [IncomingCall]
    assert bob.events[0].offer == OFFER
    assert all(o.addr == ALICE and o.transport == "TCP" for o in bob.outbox)
    replies = outbox_messages(bob)
    assert [(m.status, m.cseq[1]) for m in replies] == [(100, "INVITE"), (200, "OPTIONS")]


def test_tcp_framing_error_raises_connection_error():
    bob = ua(BOB, "bob", transport="TCP")
    no_length = raw("OPTIONS").replace(b"Content-Length: 0\r\n", b"")
    with pytest.raises(ConnectionError):
        bob.receive(no_length, ALICE, "TCP", 0.0)
    assert ALICE not in bob.framers
    # A fresh connection from the same peer starts a new framer.
    bob.receive(raw("OPTIONS"), ALICE, "TCP", 0.0)
    # The unframeable request still got its 400 (written before the connection closes).
    assert [m.status for m in outbox_messages(bob)] == [400, 200]


# --- Record-Route through a proxy (§12.1, §16.6) -------------------------------------------------
def test_record_route_is_copied_and_used_for_in_dialog_requests(pair):
    net, alice, bob = pair
    net.forward(("proxy", 5060))
    uac, uas = establish(net, alice, bob, extra=[("Record-Route", "<sip:proxy;lr>")])
    ok = next(p.msg for p in net.log if p.label == "200 INVITE")
    assert ok.headers.get_all("Record-Route") == ["<sip:proxy;lr>"]
    acks = [p for p in net.log if p.label == "ACK"]
    assert acks[0].dst == ("proxy", 5060)
    assert acks[0].msg.headers.get_all("Route") == ["<sip:proxy;lr>"]
    assert uas.dialog.route_set == ["<sip:proxy;lr>"] and uac.dialog.route_set == ["<sip:proxy;lr>"]
    mark = len(net.log)
    bob.bye(uas, net.now)
    net.flush()
    bye = net.log[mark]
    assert bye.label == "BYE" and bye.src == BOB and bye.dst == ("proxy", 5060)
    assert bye.msg.headers.get_all("Route") == ["<sip:proxy;lr>"]
    assert bye.msg.uri == "sip:alice@10.0.0.1:5060"
    assert [e.reason for e in net.events_of(alice, CallEnded)] == ["remote-bye"]
    assert "200 BYE" in net.labels(since=mark)


def test_strict_route_set_from_record_route(pair):
    net, alice, bob = pair
    net.forward(("10.0.0.9", 5060))
    _uac, uas = establish(net, alice, bob, extra=[("Record-Route", "<sip:10.0.0.9>")])
    mark = len(net.log)
    bob.bye(uas, net.now)
    net.flush()
    bye = net.log[mark]
    assert bye.dst == ("10.0.0.9", 5060)
    assert bye.msg.uri == "sip:10.0.0.9"
    assert bye.msg.headers.get_all("Route") == ["<sip:alice@10.0.0.1:5060>"]


# --- misc ---------------------------------------------------------------------------------------------
def test_info_in_dialog(pair):
    net, alice, bob = pair
    uac, uas = establish(net, alice, bob)
    ids = {"to_tag": uac.local_tag, "from_tag": uas.local_tag, "call_id": uac.call_id}
    data = raw("INFO", cseq=1, body=b"Signal=5\r\n", extra="Content-Type: application/dtmf-relay\r\n", **ids)
    alice.receive(data, BOB, "UDP", net.now)
    assert [m.status for m in outbox_messages(alice)] == [200]
    infos = [e for e in alice.events if isinstance(e, InfoReceived)]
    assert [(e.session, e.content_type, e.body) for e in infos] == [
        (uac, "application/dtmf-relay", b"Signal=5\r\n")
    ]


def test_server_transaction_state_after_answer(pair):
    net, alice, bob = pair
    uac, uas = establish(net, alice, bob)
    assert uas.server_txn.state == State.ACCEPTED
    assert uac.client_txn.state == State.ACCEPTED
    net.advance(64 * T1 + 1)
    assert uas.server_txn.state == State.TERMINATED and uac.client_txn.state == State.TERMINATED
