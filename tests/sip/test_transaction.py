"""Transaction layer (RFC 3261 §17, RFC 6026) driven by a hand-held clock."""

from __future__ import annotations

import pytest

from parley.sip.message import SipRequest, SipResponse, make_response, parse_message
from parley.sip.transaction import (
    MAGIC_COOKIE,
    T1,
    T4,
    ClientTransaction,
    RequestEvent,
    ResponseEvent,
    ServerTransaction,
    State,
    TimeoutEvent,
    TransactionLayer,
    response_address,
)

PEER = ("192.0.2.20", 5060)
SRC = ("192.0.2.10", 5062)


def make_request(
    method: str = "INVITE",
    branch: str | None = MAGIC_COOKIE + "abc123",
    cseq: int = 1,
    transport: str = "UDP",
    via_host: str = "192.0.2.10",
    via_port: int = 5062,
    from_tag: str = "ft1",
    to_tag: str | None = None,
) -> SipRequest:
    via = f"SIP/2.0/{transport} {via_host}:{via_port}" + (f";branch={branch}" if branch else "")
    to = "<sip:bob@192.0.2.20>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:bob@192.0.2.20 SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: <sip:alice@192.0.2.10>;tag={from_tag}",
        f"To: {to}",
        "Call-ID: call-1@192.0.2.10",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:alice@192.0.2.10:5062>",
        "Route: <sip:192.0.2.99;lr>",
        "",
        "",
    ]
    message = parse_message("\r\n".join(lines).encode())
    assert isinstance(message, SipRequest)
    return message


def reply(request: SipRequest, status: int, to_tag: str | None = "tt9") -> SipResponse:
    return make_response(request, status, to_tag=to_tag)


def drain(layer: TransactionLayer) -> tuple[list, list]:
    out, events = list(layer.outbox), list(layer.events)
    layer.outbox.clear()
    layer.events.clear()
    return out, events


def fire_all_until(layer: TransactionLayer, end: float) -> list[float]:
    """Jump from deadline to deadline up to ``end``; return the times at which bytes went out."""
    times = []
    while (deadline := layer.next_deadline()) is not None and deadline <= end:
        layer.expire(deadline)
        out, _ = drain(layer)
        times.extend(deadline for _ in out)
    return times


# --- INVITE client transaction (§17.1.1) ---------------------------------------------------------
def test_invite_client_timer_a_doubles_and_timer_b_times_out():
    layer = TransactionLayer()
    invite = make_request()
    txn = layer.send_request(invite, PEER, "UDP", now=0.0)
    out, _ = drain(layer)
    assert [o.data for o in out] == [invite.serialize()]
    assert out[0].addr == PEER and out[0].transport == "UDP"
    assert txn.state == State.CALLING
    assert layer.next_deadline() == pytest.approx(0.5)

    retransmit_times = []
    while (deadline := layer.next_deadline()) is not None and deadline < 32.0:
        layer.expire(deadline)
        out, events = drain(layer)
        assert events == []
        assert all(o.data == invite.serialize() for o in out)
        retransmit_times.extend(deadline for _ in out)
    # A fires after 0.5, 1, 2, 4, 8, 16 s intervals.
    assert retransmit_times == pytest.approx([0.5, 1.5, 3.5, 7.5, 15.5, 31.5])
    assert layer.next_deadline() == pytest.approx(64 * T1)
    layer.expire(32.0)
    out, events = drain(layer)
    assert len(events) == 1 and isinstance(events[0], TimeoutEvent) and events[0].txn is txn
    assert txn.state == State.TERMINATED
    assert layer.clients == {}


def test_invite_client_no_timer_a_on_tcp():
    layer = TransactionLayer()
    txn = layer.send_request(make_request(transport="TCP"), PEER, "TCP", now=0.0)
    drain(layer)
    assert "A" not in txn.timers
    assert layer.next_deadline() == pytest.approx(32.0)
    assert fire_all_until(layer, 31.9) == []
    layer.expire(32.0)
    _, events = drain(layer)
    assert [type(e) for e in events] == [TimeoutEvent]


def test_invite_client_provisional_stops_retransmissions():
    layer = TransactionLayer()
    invite = make_request()
    txn = layer.send_request(invite, PEER, "UDP", now=0.0)
    drain(layer)
    layer.expire(0.5)  # one retransmission
    assert len(drain(layer)[0]) == 1
    layer.receive_response(reply(invite, 180), now=0.7)
    out, events = drain(layer)
    assert out == []
    assert [(type(e), e.response.status) for e in events] == [(ResponseEvent, 180)]
    assert txn.state == State.PROCEEDING
    assert fire_all_until(layer, 100.0) == []
    assert txn.state == State.PROCEEDING  # no timer B in Proceeding: the TU decides (CANCEL)


def test_invite_client_non_2xx_final_is_acked_by_the_transaction():
    layer = TransactionLayer()
    invite = make_request()
    txn = layer.send_request(invite, PEER, "UDP", now=0.0)
    drain(layer)
    layer.receive_response(reply(invite, 180), now=0.1)
    drain(layer)
    busy = reply(invite, 486, to_tag="busytag")
    layer.receive_response(busy, now=1.0)
    out, events = drain(layer)
    assert [e.response.status for e in events] == [486]
    assert txn.state == State.COMPLETED
    assert len(out) == 1 and out[0].addr == PEER
    ack = parse_message(out[0].data)
    assert isinstance(ack, SipRequest)
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.top_via.branch == invite.top_via.branch  # same branch: part of the INVITE transaction
    assert len(ack.vias) == 1
    assert ack.to.tag == "busytag"
    assert ack.headers.get("From") == invite.headers.get("From")
    assert ack.call_id == invite.call_id
    assert ack.cseq == (1, "ACK")
    assert ack.headers.get_all("Route") == ["<sip:192.0.2.99;lr>"]
    # A retransmitted final response is ACKed again, not passed up.
    layer.receive_response(busy, now=2.0)
    out, events = drain(layer)
    assert events == []
    assert [o.data for o in out] == [ack.serialize()]
    # Timer D: 32 s on UDP.
    assert layer.next_deadline() == pytest.approx(33.0)
    layer.expire(32.9)
    assert txn.state == State.COMPLETED
    layer.expire(33.0)
    assert txn.state == State.TERMINATED
    assert drain(layer) == ([], [])
    assert layer.clients == {}


def test_invite_client_timer_d_is_zero_on_tcp():
    layer = TransactionLayer()
    invite = make_request(transport="TCP")
    txn = layer.send_request(invite, PEER, "TCP", now=0.0)
    layer.receive_response(reply(invite, 603), now=1.0)
    assert txn.state == State.COMPLETED
    assert layer.next_deadline() == pytest.approx(1.0)
    layer.expire(1.0)
    assert txn.state == State.TERMINATED


def test_invite_client_2xx_enters_accepted_and_passes_retransmissions_up():
    layer = TransactionLayer()
    invite = make_request()
    txn = layer.send_request(invite, PEER, "UDP", now=0.0)
    drain(layer)
    ok = reply(invite, 200)
    layer.receive_response(ok, now=1.0)
    out, events = drain(layer)
    assert out == []  # the ACK for a 2xx is the TU's job
    assert [e.response.status for e in events] == [200]
    assert txn.state == State.ACCEPTED
    assert txn.timers.keys() == {"M"}
    assert layer.next_deadline() == pytest.approx(1.0 + 64 * T1)
    layer.receive_response(ok, now=2.0)
    out, events = drain(layer)
    assert out == []
    assert len(events) == 1 and events[0].txn is txn and events[0].response is ok
    # Non-2xx after a 2xx is ignored in Accepted.
    layer.receive_response(reply(invite, 500), now=2.5)
    assert drain(layer) == ([], [])
    layer.expire(33.0)
    assert txn.state == State.TERMINATED
    # After timer M a stray 2xx still reaches the TU, without a transaction.
    layer.receive_response(ok, now=40.0)
    _, events = drain(layer)
    assert len(events) == 1 and events[0].txn is None


# --- non-INVITE client transaction (§17.1.2) -----------------------------------------------------
def test_non_invite_client_timer_e_caps_at_t2_and_timer_f_times_out():
    layer = TransactionLayer()
    options = make_request("OPTIONS")
    txn = layer.send_request(options, PEER, "UDP", now=0.0)
    drain(layer)
    assert txn.state == State.TRYING
    times = fire_all_until(layer, 31.99)
    # intervals 0.5, 1, 2, 4, 4, 4, ...
    expected = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert times == pytest.approx(expected)
    layer.expire(32.0)
    _, events = drain(layer)
    assert [type(e) for e in events] == [TimeoutEvent]
    assert txn.state == State.TERMINATED


def test_non_invite_client_proceeding_retransmits_every_t2():
    layer = TransactionLayer()
    bye = make_request("BYE", to_tag="tt9")
    txn = layer.send_request(bye, PEER, "UDP", now=0.0)
    drain(layer)
    layer.receive_response(reply(bye, 100, to_tag=None), now=0.1)
    _, events = drain(layer)
    assert [e.response.status for e in events] == [100]
    assert txn.state == State.PROCEEDING
    times = fire_all_until(layer, 20.0)
    # E was due at 0.5 (T1); from then on it is T2 in Proceeding.
    assert times == pytest.approx([0.5, 4.5, 8.5, 12.5, 16.5])
    layer.receive_response(reply(bye, 200), now=20.0)
    out, events = drain(layer)
    assert out == [] and [e.response.status for e in events] == [200]
    assert txn.state == State.COMPLETED
    assert txn.timers.keys() == {"K"}
    # Retransmitted final responses are absorbed in Completed.
    layer.receive_response(reply(bye, 200), now=21.0)
    assert drain(layer) == ([], [])
    assert layer.next_deadline() == pytest.approx(20.0 + T4)
    layer.expire(20.0 + T4)
    assert txn.state == State.TERMINATED
    assert fire_all_until(layer, 100.0) == []


def test_non_invite_client_timer_k_zero_on_tcp_and_no_timer_e():
    layer = TransactionLayer()
    req = make_request("INFO", transport="TCP", to_tag="x")
    txn = layer.send_request(req, PEER, "TCP", now=0.0)
    assert txn.timers.keys() == {"F"}
    layer.receive_response(reply(req, 200), now=1.0)
    assert txn.timers == {"K": 1.0}
    layer.expire(1.0)
    assert txn.state == State.TERMINATED


# --- INVITE server transaction (§17.2.1) ---------------------------------------------------------
def new_server(request: SipRequest, transport: str = "UDP") -> tuple[TransactionLayer, ServerTransaction]:
    layer = TransactionLayer()
    layer.receive_request(request, SRC, transport, now=0.0)
    _, events = drain(layer)
    assert len(events) == 1 and isinstance(events[0], RequestEvent)
    assert events[0].request is request and events[0].source == SRC
    txn = events[0].txn
    assert isinstance(txn, ServerTransaction)
    return layer, txn


def test_invite_server_retransmission_resends_last_provisional_only():
    invite = make_request()
    layer, txn = new_server(invite)
    assert txn.state == State.PROCEEDING
    # Retransmission before any response: nothing to resend, not reported again.
    layer.receive_request(make_request(), SRC, "UDP", now=0.2)
    assert drain(layer) == ([], [])
    txn.respond_with(100, now=0.3)
    ringing = reply(invite, 180)
    txn.respond(ringing, now=0.4)
    out, _ = drain(layer)
    assert [parse_message(o.data).status for o in out] == [100, 180]
    assert out[0].addr == ("192.0.2.10", 5062)
    layer.receive_request(make_request(), SRC, "UDP", now=1.0)
    out, events = drain(layer)
    assert events == []
    assert [o.data for o in out] == [ringing.serialize()]


def test_invite_server_non_2xx_timer_g_then_timer_h():
    invite = make_request()
    layer, txn = new_server(invite)
    txn.respond(reply(invite, 486), now=0.0)
    out, _ = drain(layer)
    assert len(out) == 1
    assert txn.state == State.COMPLETED
    times = fire_all_until(layer, 31.99)
    # G: 0.5, 1, 2, 4, 4, 4 ... (capped at T2)
    assert times == pytest.approx([0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
    layer.expire(32.0)
    _, events = drain(layer)
    assert len(events) == 1 and isinstance(events[0], TimeoutEvent) and events[0].txn is txn
    assert txn.state == State.TERMINATED
    assert layer.servers == {}


def test_invite_server_ack_confirms_and_timer_i_terminates():
    invite = make_request()
    layer, txn = new_server(invite)
    response = reply(invite, 404)
    txn.respond(response, now=0.0)
    drain(layer)
    # A retransmitted INVITE in Completed gets the final response again.
    layer.receive_request(make_request(), SRC, "UDP", now=0.1)
    out, events = drain(layer)
    assert events == [] and [o.data for o in out] == [response.serialize()]
    ack = make_request("ACK", to_tag="tt9")  # same branch: ACK for a non-2xx
    layer.receive_request(ack, SRC, "UDP", now=0.2)
    assert drain(layer) == ([], [])  # absorbed, not passed to the TU
    assert txn.state == State.CONFIRMED
    assert txn.timers.keys() == {"I"}
    assert layer.next_deadline() == pytest.approx(0.2 + T4)
    assert fire_all_until(layer, 0.2 + T4) == []  # no more G retransmissions
    assert txn.state == State.TERMINATED


def test_invite_server_timer_g_not_used_on_tcp_and_i_is_zero():
    invite = make_request(transport="TCP")
    layer, txn = new_server(invite, "TCP")
    txn.respond(reply(invite, 500), now=0.0)
    assert txn.timers.keys() == {"H"}
    layer.receive_request(make_request("ACK", transport="TCP", to_tag="tt9"), SRC, "TCP", now=1.0)
    assert txn.state == State.CONFIRMED
    assert txn.timers == {"I": 1.0}


def test_invite_server_2xx_accepted_absorbs_retransmissions_then_timer_l():
    invite = make_request()
    layer, txn = new_server(invite)
    txn.respond(reply(invite, 200), now=0.0)
    drain(layer)
    assert txn.state == State.ACCEPTED
    assert txn.timers.keys() == {"L"}
    layer.receive_request(make_request(), SRC, "UDP", now=0.5)
    assert drain(layer) == ([], [])  # the TU retransmits 2xx itself
    # Further responses from the TU are not sent by the transaction.
    txn.respond(reply(invite, 500), now=0.6)
    assert drain(layer) == ([], [])
    layer.expire(64 * T1)
    assert txn.state == State.TERMINATED


def test_invite_server_ack_for_2xx_with_reused_branch_reaches_the_tu():
    """RFC 6026 §7.1: an ACK matching an Accepted INVITE server transaction goes to the TU."""
    invite = make_request()
    layer, txn = new_server(invite)
    txn.respond(reply(invite, 200), now=0.0)
    drain(layer)
    ack = make_request("ACK", to_tag="tt9")  # a peer that reuses the INVITE branch
    layer.receive_request(ack, SRC, "UDP", now=0.5)
    _, events = drain(layer)
    assert len(events) == 1
    assert isinstance(events[0], RequestEvent) and events[0].txn is None and events[0].request is ack
    assert txn.state == State.ACCEPTED


# --- non-INVITE server transaction (§17.2.2) -----------------------------------------------------
def test_non_invite_server_retransmission_and_timer_j():
    options = make_request("OPTIONS")
    layer, txn = new_server(options)
    assert txn.state == State.TRYING
    layer.receive_request(make_request("OPTIONS"), SRC, "UDP", now=0.1)
    assert drain(layer) == ([], [])  # Trying: discarded
    provisional = reply(options, 100, to_tag=None)
    txn.respond(provisional, now=0.2)
    assert txn.state == State.PROCEEDING
    drain(layer)
    layer.receive_request(make_request("OPTIONS"), SRC, "UDP", now=0.3)
    assert [o.data for o in drain(layer)[0]] == [provisional.serialize()]
    ok = reply(options, 200)
    txn.respond(ok, now=1.0)
    drain(layer)
    assert txn.state == State.COMPLETED
    layer.receive_request(make_request("OPTIONS"), SRC, "UDP", now=2.0)
    out, events = drain(layer)
    assert events == [] and [o.data for o in out] == [ok.serialize()]
    assert layer.next_deadline() == pytest.approx(1.0 + 64 * T1)
    layer.expire(1.0 + 64 * T1)
    assert txn.state == State.TERMINATED
    # After J, the same request is a new transaction.
    layer.receive_request(make_request("OPTIONS"), SRC, "UDP", now=40.0)
    _, events = drain(layer)
    assert len(events) == 1 and events[0].txn is not txn


def test_non_invite_server_timer_j_zero_on_tcp():
    req = make_request("OPTIONS", transport="TCP")
    _layer, txn = new_server(req, "TCP")
    txn.respond(reply(req, 200), now=3.0)
    assert txn.timers == {"J": 3.0}


# --- matching (§17.1.3, §17.2.3) -----------------------------------------------------------------
def test_client_matching_uses_branch_and_cseq_method():
    layer = TransactionLayer()
    invite = make_request()
    txn = layer.send_request(invite, PEER, "UDP", now=0.0)
    drain(layer)
    other = make_request(branch=MAGIC_COOKIE + "other")
    layer.receive_response(reply(other, 180), now=0.1)
    assert drain(layer) == ([], [])  # unknown branch: stray provisional dropped
    assert txn.state == State.CALLING
    cancel = make_request("CANCEL")  # same branch, other method
    layer.receive_response(reply(cancel, 200), now=0.2)
    assert drain(layer) == ([], [])
    assert txn.state == State.CALLING
    layer.receive_response(reply(invite, 180), now=0.3)
    assert txn.state == State.PROCEEDING


def test_cancel_is_a_separate_client_transaction():
    layer = TransactionLayer()
    invite = make_request()
    invite_txn = layer.send_request(invite, PEER, "UDP", now=0.0)
    cancel = make_request("CANCEL")
    cancel_txn = layer.send_request(cancel, PEER, "UDP", now=0.1)
    assert invite_txn is not cancel_txn and len(layer.clients) == 2
    layer.receive_response(reply(cancel, 200), now=0.2)
    _, events = drain(layer)
    assert [e.txn for e in events] == [cancel_txn]
    assert cancel_txn.state == State.COMPLETED and invite_txn.state == State.CALLING


def test_server_matching_branch_sent_by_and_method():
    layer, txn = new_server(make_request())
    # Same branch, different sent-by: a different transaction.
    layer.receive_request(make_request(via_host="192.0.2.77"), ("192.0.2.77", 5062), "UDP", now=0.1)
    _, events = drain(layer)
    assert len(events) == 1 and events[0].txn is not txn
    # Same branch and sent-by, different port: different transaction too.
    layer.receive_request(make_request(via_port=5099), SRC, "UDP", now=0.1)
    _, events = drain(layer)
    assert len(events) == 1 and events[0].txn is not txn
    # ACK matches the INVITE transaction; CANCEL does not.
    key = TransactionLayer.server_key(make_request())
    assert TransactionLayer.server_key(make_request("ACK", to_tag="x")) == key
    assert TransactionLayer.server_key(make_request("CANCEL")) != key
    layer.receive_request(make_request("CANCEL"), SRC, "UDP", now=0.2)
    _, events = drain(layer)
    assert len(events) == 1
    assert events[0].request.method == "CANCEL" and events[0].txn is not txn
    assert layer.find_invite_server(make_request("CANCEL")) is txn
    assert layer.find_invite_server(make_request("CANCEL", branch=MAGIC_COOKIE + "zzz")) is None


def test_server_matching_rfc2543_fallback_without_magic_cookie():
    old = make_request(branch=None)
    layer, txn = new_server(old)
    # Retransmission: same Call-ID, From tag, CSeq and sent-by.
    layer.receive_request(make_request(branch=None), SRC, "UDP", now=0.1)
    assert drain(layer) == ([], [])
    # Branch present but without the cookie is also an RFC 2543 branch.
    legacy = make_request(branch="1234abc")
    assert TransactionLayer.server_key(legacy) == TransactionLayer.server_key(old)
    # A new CSeq is a new transaction.
    layer.receive_request(make_request("INVITE", branch=None, cseq=2), SRC, "UDP", now=0.2)
    _, events = drain(layer)
    assert len(events) == 1 and events[0].txn is not txn
    # CANCEL of an RFC 2543 INVITE finds it.
    assert layer.find_invite_server(make_request("CANCEL", branch=None)) is txn
    # An ACK with the same CSeq number matches the INVITE transaction.
    txn.respond(reply(old, 486), now=0.3)
    layer.receive_request(make_request("ACK", branch=None, to_tag="tt9"), SRC, "UDP", now=0.4)
    assert txn.state == State.CONFIRMED


def test_ack_for_2xx_with_new_branch_goes_to_tu_without_transaction():
    layer, txn = new_server(make_request())
    txn.respond(reply(txn.request, 200), now=0.0)
    drain(layer)
    ack = make_request("ACK", branch=MAGIC_COOKIE + "ackbranch", to_tag="tt9")
    layer.receive_request(ack, SRC, "UDP", now=0.1)
    _, events = drain(layer)
    assert len(events) == 1 and events[0].txn is None and events[0].request is ack
    assert len(layer.servers) == 1  # ACKs never create transactions


def test_response_address_follows_via_received_and_rport():
    req = make_request()
    # Without received/rport: the Via port, at the packet's source host (what "received" holds).
    assert response_address(req, ("192.0.2.10", 40000), "UDP") == ("192.0.2.10", 5062)
    assert response_address(req, ("203.0.113.5", 40000), "UDP") == ("203.0.113.5", 5062)
    req.headers.set("Via", f"SIP/2.0/UDP 192.0.2.10:5062;branch={MAGIC_COOKIE}x;received=203.0.113.5")
    assert response_address(req, ("203.0.113.5", 40000), "UDP") == ("203.0.113.5", 5062)
    req.headers.set("Via", f"SIP/2.0/UDP 192.0.2.10:5062;branch={MAGIC_COOKIE}x;rport=40000")
    assert response_address(req, ("203.0.113.5", 40000), "UDP") == ("203.0.113.5", 40000)
    assert response_address(make_request(), ("203.0.113.5", 40000), "TCP") == ("203.0.113.5", 40000)


def test_client_transaction_is_stored_and_removed():
    layer = TransactionLayer()
    invite = make_request()
    txn = layer.send_request(invite, PEER, "UDP", now=0.0, context="ctx")
    assert isinstance(txn, ClientTransaction) and txn.context == "ctx"
    assert layer.clients == {(invite.top_via.branch, "INVITE"): txn}
    layer.expire(100.0)
    assert layer.clients == {}
    assert layer.next_deadline() is None
