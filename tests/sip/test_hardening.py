"""The user agent against hostile or sloppy peers (issue 15): limits, refusals, matching, answers."""

from __future__ import annotations

import logging

import pytest
from sipnet import Net, request
from test_useragent import ALICE, ANSWER, BOB, OFFER, outbox_messages, raw, ua

from parley.sip.auth import DigestCredentials, DigestVerifier, parse_challenge
from parley.sip.dialog import hop_address
from parley.sip.limits import SipLimits, SourceFilter, SourceRate
from parley.sip.message import SipResponse, parse_message
from parley.sip.transaction import COMPACT_MIN, Outgoing
from parley.sip.uri import SipUri
from parley.sip.useragent import CallConfirmed, CallEnded, CallFailed, IncomingCall, UserAgent


def answers(agent: UserAgent) -> list[SipResponse]:
    out = outbox_messages(agent)
    assert all(isinstance(m, SipResponse) for m in out)
    return out  # type: ignore[return-value]


# -- item 10: transaction matching includes the Call-ID --------------------------------------------
def test_a_reused_branch_from_another_call_is_a_new_transaction() -> None:
    bob = ua(BOB, "bob")
    invite = raw("INVITE", body=OFFER, extra="Content-Type: application/sdp\r\n", call_id="call-a")
    bob.receive(invite, ALICE, "UDP", 0.0)
    (first,) = answers(bob)
    bob.receive(invite.replace(b"call-a", b"call-b"), ALICE, "UDP", 0.1)  # same branch, other call
    (second,) = answers(bob)
    assert (first.call_id, second.call_id) == ("call-a", "call-b")
    assert [e.session.call_id for e in bob.events if isinstance(e, IncomingCall)] == ["call-a", "call-b"]
    bob.receive(invite, ALICE, "UDP", 0.2)  # a true retransmission: its transaction answers again
    (again,) = answers(bob)
    assert again.serialize() == first.serialize()
    assert len([e for e in bob.events if isinstance(e, IncomingCall)]) == 2


def test_a_response_with_our_branch_but_another_call_id_is_ignored() -> None:
    net = Net.of(alice := ua(ALICE, "alice"), bob := ua(BOB, "bob"))
    session = alice.invite("sip:bob@10.0.0.2:5060", OFFER, net.now)
    alice.outbox.clear()
    invite = session.client_txn.request  # type: ignore[union-attr]
    forged = (
        f"SIP/2.0 486 Busy Here\r\nVia: {invite.headers.get('Via')}\r\n"
        f"From: {invite.headers.get('From')}\r\nTo: <sip:bob@10.0.0.2>;tag=x\r\n"
        f"Call-ID: another-call\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    alice.receive(forged, BOB, "UDP", 0.1)
    assert not [e for e in alice.events if isinstance(e, CallFailed)]
    assert bob is not None


# -- item 7: a To tag and a Server header on every response -----------------------------------------
@pytest.mark.parametrize(
    ("message", "options", "status"),
    [
        (raw("INVITE", body=OFFER, extra="Content-Type: application/sdp\r\n"), {"max_sessions": 0}, 503),
        (raw("FOO"), {}, 501),
        (raw("INVITE", body=b"x", extra="Content-Type: text/plain\r\n"), {}, 415),
        (raw("INVITE", body=OFFER, extra="Content-Type: application/sdp\r\nRequire: foo\r\n"), {}, 420),
    ],
    ids=["503", "501", "415", "420"],
)
def test_refusals_carry_a_to_tag_and_the_server_header(message: bytes, options: dict, status: int) -> None:
    bob = ua(BOB, "bob", **options)
    bob.receive(message, ALICE, "UDP", 0.0)
    (response,) = answers(bob)
    assert response.status == status
    assert response.to.tag and response.headers.get("Server") == "Parley"


def test_100_trying_has_the_server_header_and_no_tag() -> None:
    bob = ua(BOB, "bob")
    bob.receive(raw("INVITE", body=OFFER, extra="Content-Type: application/sdp\r\n"), ALICE, "UDP", 0.0)
    (trying,) = answers(bob)
    assert trying.status == 100 and trying.headers.get("Server") == "Parley" and trying.to.tag is None


def test_a_refusal_and_its_retransmission_have_the_same_tag() -> None:
    bob = ua(BOB, "bob")
    unsupported = raw("INVITE", body=b"x", extra="Content-Type: text/plain\r\n")
    bob.receive(unsupported, ALICE, "UDP", 0.0)
    bob.receive(unsupported, ALICE, "UDP", 0.1)
    first, again = answers(bob)
    assert first.status == 415 and first.to.tag == again.to.tag


def test_requests_answered_outside_a_dialog_keep_no_transaction() -> None:
    """OPTIONS and refusals outside any dialog are answered statelessly (§8.2.7): a flood of them
    holds no transaction (issue 15 item 4: 60,000 OPTIONS took memory from 51 to 225 MB)."""
    bob = ua(BOB, "bob", limits=SipLimits(rate_per_ip=0))
    statuses = set()
    for i in range(3 * COMPACT_MIN):
        method = ("OPTIONS", "FOO", "BYE")[i % 3]
        bob.receive(raw(method, branch=f"z9hG4bKs{i}", call_id=f"s{i}"), ALICE, "UDP", i * 0.001)
        statuses.update(m.status for m in answers(bob))
    assert sorted(statuses) == [200, 481, 501]
    assert not bob.layer.servers
    # The stopped timers' heap entries (which hold their transactions) are swept out as they pile up.
    assert len(bob.layer._heap) <= COMPACT_MIN
    assert bob.next_deadline() is None


# -- items 4 and the limits: transactions in flight, per-source rate, allow-list -----------------------
def test_transactions_in_flight_are_bounded() -> None:
    bob = ua(BOB, "bob", limits=SipLimits(max_transactions=50, rate_per_ip=0))
    offer = {"body": OFFER, "extra": "Content-Type: application/sdp\r\n"}
    for i in range(80):
        bob.receive(
            raw("INVITE", branch=f"z9hG4bKflood{i}", call_id=f"f{i}", **offer), ALICE, "UDP", i * 0.001
        )
    statuses = [m.status for m in answers(bob)]
    assert statuses == [100] * 50 + [503] * 30
    assert len(bob.layer.servers) == 50 and bob.layer.overloaded == 30
    for event in bob.events:
        bob.reject(event.session, 486, 1.0)  # type: ignore[union-attr]
    bob.expire(100.0)  # the transactions ran out: there is room again
    answers(bob)
    bob.receive(raw("INVITE", branch="z9hG4bKlater", call_id="later", **offer), ALICE, "UDP", 100.0)
    assert [m.status for m in answers(bob)] == [100]


@pytest.mark.parametrize("action", ["reply", "drop"])
def test_requests_over_the_per_source_rate_are_refused(action: str) -> None:
    bob = ua(BOB, "bob", limits=SipLimits(rate_per_ip=10, rate_action=action))
    for i in range(30):  # a burst of 30 at once: 20 (twice the rate) pass
        bob.receive(raw("OPTIONS", branch=f"z9hG4bKr{i}", call_id=f"r{i}"), ALICE, "UDP", 0.0)
    statuses = [m.status for m in answers(bob)]
    assert statuses == [200] * 20 + ([503] * 10 if action == "reply" else [])
    assert bob.stats["rate_limited"] == 10
    bob.receive(raw("OPTIONS", branch="z9hG4bKother", call_id="o"), ("10.0.0.7", 5060), "UDP", 0.0)
    assert [m.status for m in answers(bob)] == [200]  # another source has its own bucket
    bob.receive(raw("OPTIONS", branch="z9hG4bKlater", call_id="l"), ALICE, "UDP", 1.0)
    assert [m.status for m in answers(bob)] == [200]  # refilled at 10 a second


def test_source_rate_table_stays_bounded() -> None:
    rate = SourceRate(5, max_sources=100)
    for i in range(1000):
        rate.allow(f"10.1.{i // 256}.{i % 256}", i * 0.001)
    assert len(rate) <= 100


def test_sources_outside_the_allow_list_are_refused_without_caller_data(caplog) -> None:
    bob = ua(BOB, "bob", allow=SourceFilter(["10.0.0.0/30", "192.0.2.7"]))
    caplog.set_level(logging.INFO)
    bob.receive(raw("INVITE", body=OFFER, extra="Content-Type: application/sdp\r\n"), ALICE, "UDP", 0.0)
    assert [m.status for m in answers(bob)] == [100]  # 10.0.0.1 is inside 10.0.0.0/30
    for _ in range(3):
        bob.receive(raw("OPTIONS", call_id="secret-caller"), ("10.0.0.9", 5060), "UDP", 0.0)
    assert answers(bob) == [] and bob.stats["refused_source"] == 3
    with pytest.raises(ConnectionError):
        bob.receive(raw("OPTIONS"), ("10.0.0.9", 5061), "TCP", 0.0)
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and "allow-list" in refusals[0]  # logged once, with its reason
    assert "secret-caller" not in caplog.text and "10.0.0.9" not in caplog.text and "alice" not in caplog.text


# -- item 9: 413 over a stream ------------------------------------------------------------------------
def test_a_message_too_large_for_a_stream_gets_413_before_the_close() -> None:
    bob = ua(BOB, "bob", transport="TCP", limits=SipLimits(max_message_size=4096))
    big = raw("INVITE", body=b"v" * 5000, extra="Content-Type: application/sdp\r\n")
    with pytest.raises(ConnectionError):
        bob.receive(big[:1000], ALICE, "TCP", 0.0)
    (response,) = answers(bob)
    assert response.status == 413 and response.to.tag and response.headers.get("Server") == "Parley"


# -- item 5: delayed offer -------------------------------------------------------------------------------
def test_delayed_offer_answer_comes_in_the_ack() -> None:
    net = Net.of(alice := ua(ALICE, "alice"), bob := ua(BOB, "bob"))
    uac = alice.invite("sip:bob@10.0.0.2:5060", b"", net.now)
    net.flush()
    (incoming,) = net.events_of(bob, IncomingCall)
    assert incoming.offer == b""
    net.drop(request("ACK"))  # Parley's UAC ACKs empty: replaced below by a delayed-offer peer's ACK
    bob.answer(incoming.session, OFFER, net.now)  # our offer in the 200
    net.flush()
    assert uac.remote_sdp == OFFER
    ack = next(p for p in net.log if p.label == "ACK").msg
    ack.body = ANSWER
    ack.headers.add("Content-Type", "application/sdp")
    bob.receive(ack.serialize(), ALICE, "UDP", net.now)
    net.flush()
    assert [e.answer for e in net.events_of(bob, CallConfirmed)] == [ANSWER]
    assert incoming.session.remote_sdp == ANSWER


# -- item 1: transport errors are transaction errors --------------------------------------------------------
def test_an_unsendable_invite_fails_the_call_with_503() -> None:
    alice = ua(ALICE, "alice")
    session = alice.invite("sip:bob@unresolvable.invalid", OFFER, 0.0)
    (item,) = alice.outbox
    assert item.addr == ("unresolvable.invalid", 0)  # no port: SRV first (RFC 3263 §4.2)
    alice.outbox.clear()
    alice.transport_error(item, 0.1)
    assert [(e.status) for e in alice.events if isinstance(e, CallFailed)] == [503]
    assert [e.reason for e in alice.events if isinstance(e, CallEnded)] == ["timeout"]
    assert session.client_txn is not None and alice.next_deadline() is not None  # only the linger
    alice.transport_error(Outgoing(b"", ("x", 1), "UDP"), 0.2)  # one without transaction: ignored


def test_hop_address_leaves_the_port_open_for_srv_only_for_names() -> None:
    assert hop_address(SipUri.parse("sip:x@example.com"), "UDP") == (("example.com", 0), "UDP")
    assert hop_address(SipUri.parse("sip:x@example.com:5070"), "UDP") == (("example.com", 5070), "UDP")
    assert hop_address(SipUri.parse("sip:x@192.0.2.1"), "UDP") == (("192.0.2.1", 5060), "UDP")


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        SipLimits(rate_action="ignore")
    with pytest.raises(ValueError):
        SipLimits(max_connections=0)
    assert parse_message(raw("OPTIONS")).method == "OPTIONS"


# -- access control: digest authentication of inbound INVITEs (RFC 3261 §22, qop=auth) --------------
def authenticated_pair(password: str) -> tuple[Net, UserAgent, UserAgent]:
    verifier = DigestVerifier({"alice": "s3cret"}, "parley.test", nonce_lifetime=60.0)
    alice = ua(ALICE, "alice", credentials=DigestCredentials("alice", password))
    bob = ua(BOB, "bob", authenticator=verifier)
    return Net.of(alice, bob), alice, bob


def test_an_invite_with_the_right_credentials_gets_through() -> None:
    net, alice, bob = authenticated_pair("s3cret")
    alice.invite("sip:bob@10.0.0.2:5060", OFFER, net.now)
    net.flush()
    assert net.labels()[:4] == ["INVITE", "401 INVITE", "ACK", "INVITE"]
    challenge = next(p.msg for p in net.log if p.label == "401 INVITE").headers.get("WWW-Authenticate")
    assert 'qop="auth"' in challenge and 'realm="parley.test"' in challenge
    assert len(net.events_of(bob, IncomingCall)) == 1
    assert (bob.stats["auth_challenged"], bob.stats["auth_failed"]) == (1, 0)


def test_wrong_credentials_are_refused_and_logged_without_caller_data(caplog) -> None:
    caplog.set_level(logging.INFO)
    net, alice, bob = authenticated_pair("wrong")
    alice.invite("sip:bob@10.0.0.2:5060", OFFER, net.now)
    net.flush()
    assert net.events_of(bob, IncomingCall) == []
    assert [e.status for e in net.events_of(alice, CallFailed)] == [401]
    assert bob.stats["auth_failed"] == 1
    (line,) = [r.getMessage() for r in caplog.records if "authentication failed" in r.getMessage()]
    assert "wrong password" in line and "alice" not in line and "10.0.0.1" not in line


def test_a_replayed_or_expired_authorization_is_refused() -> None:
    net, alice, bob = authenticated_pair("s3cret")
    alice.invite("sip:bob@10.0.0.2:5060", OFFER, net.now)
    net.flush()
    authorized = [p.msg for p in net.log if p.label == "INVITE"][1]
    replay = authorized.serialize().replace(b"Call-ID: ", b"Call-ID: replay-")
    replay = replay.replace(authorized.top_via.branch.encode(), b"z9hG4bKreplay")  # type: ignore[union-attr]
    bob.receive(replay, ALICE, "UDP", net.now + 1)
    (refused,) = answers(bob)
    assert refused.status == 401 and "stale" not in (refused.headers.get("WWW-Authenticate") or "")
    assert bob.stats["auth_failed"] == 1  # the nonce count did not grow: a replay
    late = replay.replace(b"Call-ID: replay-", b"Call-ID: late-").replace(b"z9hG4bKreplay", b"z9hG4bKlate")
    late = late.replace(b"nc=00000001", b"nc=00000002")  # a fresh count cannot rescue an expired nonce...
    bob.receive(late, ALICE, "UDP", net.now + 120)
    (stale,) = answers(bob)
    # ... but the response hash covers nc, so this one is refused as forged before its age is looked at.
    assert stale.status == 401 and bob.stats["auth_failed"] == 2


def test_an_expired_nonce_is_challenged_again_as_stale() -> None:
    verifier = DigestVerifier({"alice": "s3cret"}, "parley.test", nonce_lifetime=60.0)
    challenge = parse_challenge(verifier.challenge(0.0))
    answer = DigestCredentials("alice", "s3cret").authorize(challenge, "INVITE", "sip:bob@10.0.0.2")
    assert verifier.verify(answer, "INVITE", "sip:bob@10.0.0.2", 30.0) == "ok"
    answer = DigestCredentials("alice", "s3cret").authorize(challenge, "INVITE", "sip:bob@10.0.0.2")
    assert verifier.verify(answer, "INVITE", "sip:bob@10.0.0.2", 61.0) == "stale"
    assert "stale=true" in verifier.challenge(61.0, stale=True)
    assert verifier.verify(answer, "INVITE", "sip:bob@10.0.0.3", 30.0) == "wrong realm or uri"
    forged = answer.replace(challenge.nonce.split(".")[1], "0" * 32)
    assert verifier.verify(forged, "INVITE", "sip:bob@10.0.0.2", 30.0) == "unknown nonce"
    assert verifier.verify("Basic abc", "INVITE", "sip:bob@10.0.0.2", 30.0) == "malformed credentials"
    assert verifier.verify("Basic realm=x", "INVITE", "sip:bob@10.0.0.2", 30.0) == "not digest credentials"


def test_every_refusal_reaches_the_metrics_hook_with_its_reason() -> None:
    invite = {"body": OFFER, "extra": "Content-Type: application/sdp\r\n"}

    def refusals(agent: UserAgent, *messages: tuple[bytes, tuple[str, int]]) -> list[str]:
        reasons: list[str] = []
        agent.on_sip_refused = reasons.append
        for when, (message, source) in enumerate(messages):
            agent.receive(message, source, "UDP", float(when))
        return reasons

    assert refusals(
        ua(BOB, "b", allow=SourceFilter(["10.0.0.0/24"])), (raw("OPTIONS"), ("192.0.2.6", 5060))
    ) == ["source"]
    burst = [(raw("OPTIONS", branch=f"z9hG4bKr{i}", call_id=f"r{i}"), ALICE) for i in range(3)]
    assert refusals(ua(BOB, "b", limits=SipLimits(rate_per_ip=100)), *burst) == []
    # 0.5 a second, bursts of 1; one request a second: the second is refused, the third has a token again
    assert refusals(ua(BOB, "b", limits=SipLimits(rate_per_ip=0.5)), *burst) == ["rate"]
    two = [(raw("INVITE", branch=f"z9hG4bKt{i}", call_id=f"t{i}", **invite), ALICE) for i in range(2)]
    assert refusals(ua(BOB, "b", limits=SipLimits(max_transactions=1)), *two) == ["transactions"]
    verifier = DigestVerifier({"alice": "s3cret"}, "parley.test")
    forged = 'Digest username="alice", realm="parley.test", nonce="1.x", uri="sip:bob@10.0.0.2", response="0"'
    extra = invite["extra"] + f"Authorization: {forged}\r\n"
    bad = (raw("INVITE", body=OFFER, extra=extra), ALICE)
    assert refusals(ua(BOB, "b", authenticator=verifier), bad) == ["auth"]
