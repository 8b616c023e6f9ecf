"""Dialogs (RFC 3261 §12): creation on both sides, CSeq ordering, loose vs strict routing."""

from __future__ import annotations

from parley.sip.dialog import Dialog, hop_address
from parley.sip.message import SipRequest, make_response, parse_message
from parley.sip.uri import SipUri

VIA = "SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKnew1"


def invite(
    record_routes: tuple[str, ...] = (), contact: str | None = "<sip:alice@192.0.2.10:5062>"
) -> SipRequest:
    lines = [
        "INVITE sip:bob@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKproxy",
        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKa1",
        "Max-Forwards: 69",
        'From: "Alice" <sip:alice@example.com>;tag=atag',
        "To: <sip:bob@example.com>",
        "Call-ID: dlg-1@192.0.2.10",
        "CSeq: 314 INVITE",
    ]
    lines += [f"Record-Route: {rr}" for rr in record_routes]
    if contact:
        lines.append(f"Contact: {contact}")
    request = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(request, SipRequest)
    return request


RR = ("<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>")  # p2 nearest the UAS


def ok_for(request: SipRequest, contact: str = "<sip:bob@192.0.2.20:5070>"):
    return make_response(request, 200, to_tag="btag", extra=[("Contact", contact)])


def test_uas_dialog_from_invite():
    inv = invite(RR)
    ok = ok_for(inv)
    dialog = Dialog.as_uas(inv, ok, "UDP")
    assert dialog.id == ("dlg-1@192.0.2.10", "btag", "atag")
    assert dialog.local_tag == "btag" and dialog.remote_tag == "atag"
    assert dialog.local_uri == "<sip:bob@example.com>;tag=btag"
    assert dialog.remote_uri == '"Alice" <sip:alice@example.com>;tag=atag'
    assert dialog.remote_target == "sip:alice@192.0.2.10:5062"
    assert dialog.route_set == list(RR)  # UAS keeps Record-Route order
    assert dialog.remote_seq == 314
    assert dialog.transport == "UDP"
    bye = dialog.new_request("BYE", VIA)
    assert bye.uri == "sip:alice@192.0.2.10:5062"
    assert bye.headers.get("From") == "<sip:bob@example.com>;tag=btag"
    assert bye.headers.get("To") == '"Alice" <sip:alice@example.com>;tag=atag'
    assert bye.headers.get_all("Route") == list(RR)
    assert bye.call_id == "dlg-1@192.0.2.10"
    assert bye.cseq == (dialog.local_seq, "BYE")
    assert bye.headers.get_all("Via") == [VIA]
    assert bye.headers.get("Max-Forwards") == "70"
    assert str(dialog.next_hop()) == "sip:p2.example.com;lr"


def test_uac_dialog_from_2xx_reverses_the_route_set():
    inv = invite(RR)
    ok = ok_for(inv)
    dialog = Dialog.as_uac(inv, ok, "TCP")
    assert dialog.id == ("dlg-1@192.0.2.10", "atag", "btag")
    assert dialog.local_uri == '"Alice" <sip:alice@example.com>;tag=atag'
    assert dialog.remote_uri == "<sip:bob@example.com>;tag=btag"
    assert dialog.remote_target == "sip:bob@192.0.2.20:5070"
    assert dialog.route_set == list(reversed(RR))
    assert dialog.local_seq == 314
    assert dialog.remote_seq is None
    assert dialog.transport == "TCP"
    bye = dialog.new_request("BYE", VIA)
    assert bye.cseq == (315, "BYE")
    assert bye.uri == "sip:bob@192.0.2.20:5070"
    assert bye.headers.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert str(dialog.next_hop()) == "sip:p1.example.com;lr"
    # ACK for the 2xx reuses the INVITE's CSeq number and does not consume one.
    ack = dialog.new_request("ACK", VIA, cseq=314)
    assert ack.cseq == (314, "ACK") and dialog.local_seq == 315


def test_rfc2543_invite_without_contact_targets_its_from_address():
    """RFC 4475 §3.4 (inv2543): an RFC 2543 INVITE may lack Contact; requests go to its From URI."""
    inv = invite(contact=None)
    dialog = Dialog.as_uas(inv, ok_for(inv), "UDP")
    assert dialog.remote_target == str(inv.from_.uri)


def test_cseq_ordering_rejects_lower_and_exempts_ack_and_cancel():
    inv = invite()
    dialog = Dialog.as_uas(inv, ok_for(inv), "UDP")

    def req(method: str, number: int) -> SipRequest:
        return dialog_request(method, number)

    assert not dialog.accepts_cseq(req("BYE", 313))
    assert not dialog.accepts_cseq(req("INFO", 314))  # equal: not a new request
    assert dialog.remote_seq == 314
    assert dialog.accepts_cseq(req("ACK", 314))
    assert dialog.accepts_cseq(req("CANCEL", 314))
    assert dialog.accepts_cseq(req("ACK", 1))
    assert dialog.remote_seq == 314  # exempt methods do not move the remote sequence
    assert dialog.accepts_cseq(req("INFO", 320))
    assert dialog.remote_seq == 320
    assert not dialog.accepts_cseq(req("BYE", 315))  # now behind 320


def test_uac_dialog_accepts_any_first_remote_cseq():
    inv = invite()
    dialog = Dialog.as_uac(inv, ok_for(inv), "UDP")
    assert dialog.accepts_cseq(dialog_request("BYE", 1))
    assert dialog.remote_seq == 1
    assert not dialog.accepts_cseq(dialog_request("BYE", 1))


def dialog_request(method: str, number: int) -> SipRequest:
    text = (
        f"{method} sip:bob@192.0.2.20:5070 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKx\r\n"
        "From: <sip:alice@example.com>;tag=atag\r\nTo: <sip:bob@example.com>;tag=btag\r\n"
        f"Call-ID: dlg-1@192.0.2.10\r\nCSeq: {number} {method}\r\n\r\n"
    )
    request = parse_message(text.encode())
    assert isinstance(request, SipRequest)
    return request


def test_strict_routing_puts_first_route_in_request_uri():
    inv = invite(("<sip:strict.example.com:5080;maddr=10.0.0.1>", "<sip:loose.example.com;lr>"))
    dialog = Dialog.as_uas(inv, ok_for(inv), "UDP")
    bye = dialog.new_request("BYE", VIA)
    assert bye.uri == "sip:strict.example.com:5080;maddr=10.0.0.1"
    assert bye.headers.get_all("Route") == ["<sip:loose.example.com;lr>", "<sip:alice@192.0.2.10:5062>"]
    assert str(dialog.next_hop()) == "sip:strict.example.com:5080;maddr=10.0.0.1"
    # The route set itself is unchanged by building the request.
    assert dialog.route_set[0] == "<sip:strict.example.com:5080;maddr=10.0.0.1>"


def test_loose_routing_keeps_remote_target_as_request_uri():
    inv = invite(("<sip:192.0.2.50:5090;lr;transport=tcp>",))
    dialog = Dialog.as_uas(inv, ok_for(inv), "UDP")
    info = dialog.new_request("INFO", VIA, body=b"x")
    assert info.uri == "sip:alice@192.0.2.10:5062"
    assert info.headers.get_all("Route") == ["<sip:192.0.2.50:5090;lr;transport=tcp>"]
    assert info.body == b"x"
    assert hop_address(dialog.next_hop(), dialog.transport) == (("192.0.2.50", 5090), "TCP")


def test_no_route_set_goes_to_remote_target():
    inv = invite()
    dialog = Dialog.as_uac(inv, ok_for(inv, "<sip:bob@[2001:db8::1]:5070;transport=tcp>"), "UDP")
    bye = dialog.new_request("BYE", VIA)
    assert "Route" not in bye.headers
    assert hop_address(dialog.next_hop(), dialog.transport) == (("2001:db8::1", 5070), "TCP")


def test_target_refresh_moves_remote_target():
    inv = invite(RR)
    dialog = Dialog.as_uas(inv, ok_for(inv), "UDP")
    reinvite = dialog_request("INVITE", 315)
    dialog.update_target(reinvite)  # no Contact: unchanged
    assert dialog.remote_target == "sip:alice@192.0.2.10:5062"
    reinvite.headers.add("Contact", '"A" <sip:alice@198.51.100.7:6000;transport=udp>;expires=30')
    dialog.update_target(reinvite)
    assert dialog.remote_target == "sip:alice@198.51.100.7:6000;transport=udp"
    assert dialog.new_request("BYE", VIA).uri == "sip:alice@198.51.100.7:6000;transport=udp"
    assert dialog.route_set == list(RR)  # the route set is fixed at dialog creation


def test_hop_address_defaults():
    assert hop_address(SipUri.parse("sip:192.0.2.1"), "UDP") == (("192.0.2.1", 5060), "UDP")
    assert hop_address(SipUri.parse("sips:192.0.2.1"), "TCP") == (
        ("192.0.2.1", 5061),
        "TLS",
    )  # sips: is TLS (RFC 3263 §4.1)
    assert hop_address(SipUri.parse("sip:192.0.2.1:5070;transport=TCP"), "UDP") == (
        ("192.0.2.1", 5070),
        "TCP",
    )
