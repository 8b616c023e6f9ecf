"""SIP message parser, serializer, stream framer and response builder (RFC 3261 §7, §18.3, §20)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.sip.errors import SipParseError
from parley.sip.message import (
    MAX_HEADER_COUNT,
    MAX_HEADER_SECTION,
    MAX_MESSAGE_SIZE,
    REASON_PHRASES,
    Headers,
    SipRequest,
    SipResponse,
    StreamFramer,
    Via,
    canonical_name,
    error_response,
    make_response,
    parse_cseq,
    parse_message,
)

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def invite(body: bytes = SDP, *, extra: str = "", content_length: int | None = None) -> bytes:
    length = len(body) if content_length is None else content_length
    head = (
        "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
        "Max-Forwards: 70\r\n"
        "To: Bob <sip:bob@biloxi.example.com>\r\n"
        'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
        "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
        "CSeq: 314159 INVITE\r\n"
        "Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
        "Content-Type: application/sdp\r\n" + extra + f"Content-Length: {length}\r\n\r\n"
    )
    return head.encode() + body


def response(status: int = 200, *, extra: str = "", body: bytes = b"") -> bytes:
    head = (
        f"SIP/2.0 {status} {REASON_PHRASES.get(status, 'Whatever')}\r\n"
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1\r\n"
        "To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
        "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
        "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
        "CSeq: 314159 INVITE\r\n" + extra + f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def request_of(data: bytes) -> SipRequest:
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    return message


def rejected(data: bytes) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    return info.value


# -- basics -------------------------------------------------------------------------------------


def test_parse_invite() -> None:
    m = request_of(invite())
    assert (m.method, m.uri) == ("INVITE", "sip:bob@biloxi.example.com")
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert m.cseq == (314159, "INVITE")
    assert m.from_.tag == "1928301774" and m.from_.display == "Alice"
    assert m.to.tag is None and str(m.to.uri) == "sip:bob@biloxi.example.com"
    assert m.request_uri.user == "bob"
    assert m.content_type == "application/sdp"
    assert m.body == SDP
    assert "call-id" in repr(m)


def test_parse_response() -> None:
    m = parse_message(response(180))
    assert isinstance(m, SipResponse)
    assert (m.status, m.reason) == (180, "Ringing")
    assert m.to.tag == "a6c85cf"
    assert m.top_via.received == "192.0.2.1"


def test_compact_forms() -> None:
    data = (
        b"OPTIONS sip:bob@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP host.example.com;branch=z9hG4bK1\r\n"
        b"f: <sip:alice@example.com>;tag=1\r\nt: <sip:bob@example.com>\r\ni: cid@host\r\n"
        b"CSeq: 1 OPTIONS\r\nm: <sip:alice@host.example.com>\r\nk: timer, 100rel\r\n"
        b"s: hello\r\nc: text/plain\r\ne: gzip\r\nu: refer\r\no: refer\r\nl: 2\r\n\r\nhi"
    )
    m = request_of(data)
    assert [name for name, _ in m.headers] == [
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Supported", "Supported", "Subject",
        "Content-Type", "Content-Encoding", "Allow-Events", "Event", "Content-Length",
    ]  # fmt: skip
    assert m.headers.get_all("Supported") == ["timer", "100rel"]
    assert m.headers.get("k") == "timer"
    assert m.body == b"hi"
    assert canonical_name("I") == "Call-ID"
    assert canonical_name("cseq") == "CSeq"
    assert canonical_name("WWW-AUTHENTICATE") == "WWW-Authenticate"
    assert canonical_name("X-Custom") == "X-Custom"


def test_header_names_are_case_insensitive() -> None:
    data = invite().replace(b"Call-ID:", b"cAlL-iD:").replace(b"Max-Forwards:", b"MAX-FORWARDS  :")
    m = request_of(data)
    assert m.headers.get("call-id") == m.headers.get("i") == "a84b4c76e66710@pc33.atlanta.example.com"
    assert m.headers.get("max-forwards") == "70"
    assert ("Call-ID", "a84b4c76e66710@pc33.atlanta.example.com") in list(m.headers)


def test_folded_header_lines() -> None:
    data = invite(extra="Subject: I know you're there,\r\n   pick up the phone\r\n\tand talk to me!\r\n")
    data = data.replace(b"CSeq: 314159 INVITE", b"CSeq:\r\n 314159\r\n  INVITE")
    m = request_of(data)
    assert m.headers.get("Subject") == "I know you're there, pick up the phone and talk to me!"
    assert m.cseq == (314159, "INVITE")


def test_folding_right_after_the_start_line_is_an_error() -> None:
    data = invite().replace(b"SIP/2.0\r\nVia", b"SIP/2.0\r\n folded\r\nVia", 1)
    assert "continuation" in rejected(data).reason


def test_bare_lf_line_endings_are_accepted() -> None:
    m = request_of(invite(b"").replace(b"\r\n", b"\n"))
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert m.body == b""


def test_bare_cr_is_rejected() -> None:
    assert "bare CR" in rejected(invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 70\rX: y")).reason


def test_multiple_values_per_line_and_across_lines() -> None:
    extra = (
        "Via: SIP/2.0/TCP p1.example.com;branch=z9hG4bKa, SIP/2.0/UDP p2.example.com;branch=z9hG4bKb\r\n"
        "Allow: INVITE, ACK,CANCEL\r\nAllow: BYE\r\n"
    )
    m = request_of(invite(extra=extra))
    assert [v.host for v in m.vias] == ["pc33.atlanta.example.com", "p1.example.com", "p2.example.com"]
    assert m.headers.get_all("Allow") == ["INVITE", "ACK", "CANCEL", "BYE"]
    assert len(m.headers.get_all("via")) == 3


def test_quoted_commas_in_contact_display_names() -> None:
    extra = 'Contact: "Doe, John" <sip:john@example.com>;q=0.5, <sip:jd@example.org;x=1>\r\n'
    m = request_of(invite(extra=extra).replace(b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n", b""))
    assert m.headers.get_all("Contact") == [
        '"Doe, John" <sip:john@example.com>;q=0.5',
        "<sip:jd@example.org;x=1>",
    ]


def test_non_list_headers_keep_their_commas() -> None:
    extra = 'Date: Sat, 13 Nov 2010 23:29:00 GMT\r\nWWW-Authenticate: Digest realm="a", nonce="b"\r\n'
    m = request_of(invite(extra=extra))
    assert m.headers.get("Date") == "Sat, 13 Nov 2010 23:29:00 GMT"
    assert m.headers.get("WWW-Authenticate") == 'Digest realm="a", nonce="b"'


def test_utf8_and_invalid_utf8_header_values() -> None:
    m = request_of(invite().replace(b'"Alice"', '"Zoë Ünal"'.encode()))
    assert m.from_.display == "Zoë Ünal"
    # Not UTF-8: kept byte-exact, so the Call-ID is echoed back unchanged.
    raw = invite().replace(b"Call-ID: a84b", b"Call-ID: \xff\xfe84b")
    m = request_of(raw)
    assert m.serialize() == raw
    assert make_response(m, 200).serialize().count(b"Call-ID: \xff\xfe84b") == 1


# -- start line -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"INVITE sip:bob@biloxi.example.com SIP/3.0", 505),
        (b"INVITE <sip:bob@biloxi.example.com> SIP/2.0", 400),
        (b"INVITE sip:bob@biloxi.example.com?X=1 SIP/2.0", 400),
        (b"INVITE sip:bob@biloxi.example.com; lr SIP/2.0", 400),
        (b"INVITE sip:bob@biloxi.example.com:0 SIP/2.0", 400),
        (b"INVITE sip:bob@bi%xloxi.example.com SIP/2.0", 400),
    ],
)
def test_request_line_errors_that_can_be_answered(line: bytes, status: int) -> None:
    exc = rejected(invite().replace(b"INVITE sip:bob@biloxi.example.com SIP/2.0", line, 1))
    assert exc.status == status
    assert exc.request is not None
    answer = error_response(exc)
    assert answer is not None and answer.status == status


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"INVITE",
        b"INVITE sip:bob@biloxi.example.com",
        b"INV@ITE sip:b@c SIP/2.0",
        b"INVITE sip:b@c HTTP/1.1",
    ],
)
def test_unusable_request_lines(line: bytes) -> None:
    exc = rejected(invite().replace(b"INVITE sip:bob@biloxi.example.com SIP/2.0", line, 1))
    assert exc.request is None


def test_extra_whitespace_in_request_line_is_tolerated() -> None:
    m = request_of(
        invite().replace(
            b"INVITE sip:bob@biloxi.example.com SIP/2.0", b"INVITE \t sip:bob@biloxi.example.com  SIP/2.0 "
        )
    )
    assert (m.method, m.uri) == ("INVITE", "sip:bob@biloxi.example.com")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"SIP/2.0 200", ""),
        (b"SIP/2.0 200 ", ""),
        (b"SIP/2.0 603 Decline it", "Decline it"),
        (b"sip/2.0 100 x", "x"),
    ],
)
def test_status_lines(line: bytes, reason: str) -> None:
    m = parse_message(response().replace(b"SIP/2.0 200 OK", line))
    assert isinstance(m, SipResponse)
    assert m.reason == reason


@pytest.mark.parametrize(
    "line", [b"SIP/2.0 99 Low", b"SIP/2.0 700 High", b"SIP/2.0 2000 OK", b"SIP/2.0 OK", b"SIP/1.0 200 OK"]
)
def test_bad_status_lines_are_dropped(line: bytes) -> None:
    exc = rejected(response().replace(b"SIP/2.0 200 OK", line))
    assert exc.request is None
    assert error_response(exc) is None


# -- mandatory and single-valued headers -----------------------------------------------------


@pytest.mark.parametrize("name", [b"Via", b"From", b"To", b"Call-ID", b"CSeq"])
def test_missing_mandatory_header(name: bytes) -> None:
    lines = [line for line in invite().split(b"\r\n") if not line.startswith(name + b":")]
    assert name.decode() in rejected(b"\r\n".join(lines)).reason


@pytest.mark.parametrize(
    "header", [b"Call-ID: other", b"CSeq: 2 INVITE", b"To: <sip:x@y>", b"Max-Forwards: 9"]
)
def test_duplicate_single_value_header(header: bytes) -> None:
    assert "more than one" in rejected(invite(extra=header.decode() + "\r\n")).reason


@pytest.mark.parametrize(
    ("cseq", "status"),
    [("314159 BYE", 400), ("x INVITE", 400), ("2147483648 INVITE", 400), ("1", 400), ("1 INVITE x", 400)],
)
def test_bad_cseq(cseq: str, status: int) -> None:
    exc = rejected(invite().replace(b"CSeq: 314159 INVITE", f"CSeq: {cseq}".encode()))
    assert exc.status == status
    assert exc.request is not None  # the Via is fine: a 400 can go back


def test_parse_cseq() -> None:
    assert parse_cseq("0009 \t INVITE") == (9, "INVITE")
    assert parse_cseq("2147483647 ACK") == (2**31 - 1, "ACK")
    for bad in (
        "",
        "1",
        "-1 INVITE",
        "1.0 INVITE",
        "\u0661 INVITE",  # ARABIC-INDIC DIGIT ONE: isdigit() but not ASCII
        "9" * 5000 + " INVITE",
        "1 IN/VITE",
        "1\x1cINVITE",
    ):
        with pytest.raises(SipParseError):
            parse_cseq(bad)


@pytest.mark.parametrize("value", ["256", "-1", "abc", "9" * 5000, "²"])
def test_bad_max_forwards(value: str) -> None:
    data = invite().replace(b"Max-Forwards: 70", f"Max-Forwards: {value}".encode())
    assert "Max-Forwards" in rejected(data).reason


def test_max_forwards_with_leading_zeros() -> None:
    assert (
        request_of(invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 0068")).headers.get("Max-Forwards")
        == "0068"
    )


def test_bad_header_lines() -> None:
    assert "bad header line" in rejected(invite(extra="No colon here\r\n")).reason
    assert "bad header line" in rejected(invite(extra="Bad Name: x\r\n")).reason
    assert "bad header line" in rejected(invite(extra=": no name\r\n")).reason


def test_bad_contact_is_rejected_but_star_is_fine() -> None:
    assert (
        "Contact"
        in rejected(invite().replace(b"Contact: <sip:alice@", b"Contact: Alice, Smith <sip:alice@")).reason
    )
    assert request_of(invite().replace(b"Contact: <sip:alice@pc33.atlanta.example.com>", b"Contact: *"))


def test_bad_branch() -> None:
    assert "branch" in rejected(invite().replace(b"branch=z9hG4bK776asdhds", b"branch=z9hG4bK")).reason
    assert "branch" in rejected(invite().replace(b"branch=z9hG4bK776asdhds", b"branch=")).reason


# -- Via ----------------------------------------------------------------------------------------


def test_via_parse() -> None:
    via = Via.parse("SIP/2.0/UDP pc33.atlanta.example.com:5066;branch=z9hG4bK776asdhds;received=192.0.2.1")
    assert (via.transport, via.host, via.port) == ("UDP", "pc33.atlanta.example.com", 5066)
    assert via.branch == "z9hG4bK776asdhds"
    assert via.received == "192.0.2.1"
    assert via.rport is None and "rport" not in via.params
    assert via.protocol == "SIP/2.0"
    assert str(via) == "SIP/2.0/UDP pc33.atlanta.example.com:5066;branch=z9hG4bK776asdhds;received=192.0.2.1"


def test_via_rport_with_and_without_value() -> None:
    bare = Via.parse("SIP/2.0/UDP 192.0.2.1;rport;branch=z9hG4bKx")
    assert "rport" in bare.params and bare.params["rport"] is None and bare.rport is None
    valued = Via.parse("SIP/2.0/UDP 192.0.2.1;rport=5062;received=203.0.113.9;branch=z9hG4bKx")
    assert valued.rport == 5062
    assert valued.received == "203.0.113.9"


def test_via_ipv6_and_odd_spacing() -> None:
    via = Via.parse("SIP / 2.0 / tcp [2001:db8::9]:5061 ; branch = z9hG4bK1 ; received=2001:db8::1")
    assert (via.transport, via.host, via.port) == ("TCP", "2001:db8::9", 5061)
    assert via.branch == "z9hG4bK1"
    assert via.received == "2001:db8::1"
    assert str(via) == "SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bK1;received=2001:db8::1"
    assert Via.parse(str(via)) == via


def test_via_other_protocol_version_parses() -> None:
    assert Via.parse("SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw").protocol == "SIP/7.0"


def test_via_stamp_received_rfc3581() -> None:
    via = Via.parse("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx;rport")
    via.stamp_received("203.0.113.7", 40123)
    assert str(via) == "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx;rport=40123;received=203.0.113.7"
    same_host = Via.parse("SIP/2.0/UDP 203.0.113.7;branch=z9hG4bKx")
    same_host.stamp_received("203.0.113.7", 5060)
    assert "received" not in same_host.params
    other_host = Via.parse("SIP/2.0/UDP client.example.com;branch=z9hG4bKx")
    other_host.stamp_received("203.0.113.7", 5060)
    assert other_host.received == "203.0.113.7" and "rport" not in other_host.params


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIP/2.0/UDP",
        "SIP/2.0 host",
        "SIP/2.0/UDP host;branch",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP host;received",
        "SIP/2.0/UDP host;rport=0",
        "SIP/2.0/UDP host;rport=70000",
        "SIP/2.0/UDP host;rport=abc",
        "SIP/2.0/UDP host;ttl=256",
        "SIP/2.0/UDP host;ttl",
        "SIP/2.0/UDP host:0",
        "SIP/2.0/UDP host;;",
        "SIP/2.0/UDP [::1",
        "SIP/2.0/UDP ho st",
    ],
)
def test_bad_vias(text: str) -> None:
    with pytest.raises(SipParseError):
        Via.parse(text)


# -- Content-Length on datagrams -------------------------------------------------------------


def test_body_is_cut_to_content_length() -> None:
    m = request_of(invite(SDP + b"trailing junk", content_length=len(SDP)))
    assert m.body == SDP


def test_missing_content_length_on_udp_takes_the_rest() -> None:
    data = invite().replace(f"Content-Length: {len(SDP)}\r\n".encode(), b"")
    m = request_of(data)
    assert m.body == SDP
    assert "Content-Length" not in m.headers


def test_content_length_larger_than_datagram() -> None:
    exc = rejected(invite(content_length=len(SDP) + 1))
    assert exc.status == 400
    assert "exceeds" in exc.reason
    assert exc.request is not None


@pytest.mark.parametrize(
    ("value", "status"), [("-1", 400), ("1a", 400), ("", 400), ("٣", 400), ("9" * 40, 413)]
)
def test_bad_content_length(value: str, status: int) -> None:
    data = invite().replace(f"Content-Length: {len(SDP)}".encode(), f"Content-Length: {value}".encode())
    assert rejected(data).status == status


def test_content_length_with_leading_zeros_and_compact_form() -> None:
    data = invite().replace(f"Content-Length: {len(SDP)}".encode(), f"l:  000{len(SDP)} ".encode())
    assert request_of(data).body == SDP


def test_leading_crlf_before_datagram_start_line() -> None:
    assert request_of(b"\r\n\r\n" + invite()).method == "INVITE"


def test_no_blank_line() -> None:
    assert "blank line" in rejected(invite(b"").rstrip(b"\r\n")).reason


# -- size limits ----------------------------------------------------------------------------------


def test_message_size_limit() -> None:
    body = b"x" * (MAX_MESSAGE_SIZE - len(invite(b"")) + 10)
    exc = rejected(invite(body))
    assert exc.status == 413


def test_header_count_limit() -> None:
    extra = "".join(f"X-H{i}: v\r\n" for i in range(MAX_HEADER_COUNT))
    assert rejected(invite(extra=extra)).status == 413
    values = ", ".join(["INVITE"] * (MAX_HEADER_COUNT + 1))
    assert rejected(invite(extra=f"Allow: {values}\r\n")).status == 413
    ok = "".join(f"X-H{i}: v\r\n" for i in range(MAX_HEADER_COUNT - 20))
    assert len(request_of(invite(extra=ok)).headers) > MAX_HEADER_COUNT - 20


def test_header_section_limit_on_datagrams() -> None:
    extra = "X-Big: " + "a" * MAX_HEADER_SECTION + "\r\n"
    assert rejected(invite(extra=extra)).status == 413


# -- serializer ---------------------------------------------------------------------------------


def test_serialize_round_trip() -> None:
    original = request_of(invite(extra='Contact: "Doe, John" <sip:j@example.com>\r\nSubject: a\r\n\tb\r\n'))
    data = original.serialize()
    assert data.startswith(b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/UDP")
    assert data.endswith(b"Content-Length: %d\r\n\r\n" % len(SDP) + SDP)
    again = request_of(data)
    assert again == original
    assert again.headers.get("Subject") == "a b"


def test_serialize_recomputes_content_length() -> None:
    m = request_of(invite())
    m.body = b"changed"
    assert parse_message(m.serialize()).body == b"changed"
    m.headers.remove("Content-Length")
    assert b"Content-Length: 7\r\n" in m.serialize()


def test_response_round_trip() -> None:
    original = parse_message(response(486, body=b"busy"))
    assert parse_message(original.serialize()) == original


def test_serialize_built_message() -> None:
    headers = Headers([("v", "SIP/2.0/TCP h;branch=z9hG4bK1"), ("f", "<sip:a@b>;tag=1"), ("t", "<sip:c@d>")])
    headers.add("i", "x@y")
    headers.add("CSeq", "1 OPTIONS")
    m = SipRequest(headers, b"", method="OPTIONS", uri="sip:c@d")
    assert m.serialize() == (
        b"OPTIONS sip:c@d SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
        b"To: <sip:c@d>\r\nCall-ID: x@y\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )


# -- Headers ------------------------------------------------------------------------------------


def test_headers_multimap() -> None:
    h = Headers([("Via", "a"), ("To", "t"), ("v", "b")])
    assert h.get("VIA") == "a" and h.get_all("via") == ["a", "b"] and h.count("v") == 2
    assert h.get("Missing") is None and h.get("Missing", "d") == "d"
    h.set("Via", "c")
    assert list(h) == [("Via", "c"), ("To", "t")]
    h.replace("Route", ["r1", "r2"])
    assert list(h)[-2:] == [("Route", "r1"), ("Route", "r2")]
    h.remove("to")
    assert "To" not in h and "Route" in h and 5 not in h
    copy = h.copy()
    copy.add("X", "y")
    assert len(copy) == len(h) + 1
    assert copy != h
    assert Headers([("i", "1")]) == Headers([("Call-ID", "1")])


# -- StreamFramer -------------------------------------------------------------------------------


def test_framer_several_messages_in_one_read() -> None:
    framer = StreamFramer()
    stream = invite() + response(180) + invite(b"")
    items = framer.feed(stream)
    assert [type(i).__name__ for i in items] == ["SipRequest", "SipResponse", "SipRequest"]
    assert items[0].body == SDP  # type: ignore[union-attr]
    assert items[2].body == b""  # type: ignore[union-attr]


def test_framer_message_split_byte_by_byte() -> None:
    framer = StreamFramer()
    data = invite()
    items = []
    for i in range(len(data)):
        items.extend(framer.feed(data[i : i + 1]))
        if i < len(data) - 1:
            assert items == []
    assert items == [parse_message(data)]


def test_framer_keep_alive_crlfs() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.feed(b"\r\n") == []
    items = framer.feed(b"\r\n" + invite() + b"\r\n\r\n" + invite(b""))
    assert len(items) == 2
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n") == []
    assert len(framer.feed(invite())) == 1


def test_framer_body_arrives_later() -> None:
    framer = StreamFramer()
    data = invite()
    head_end = data.index(b"\r\n\r\n") + 4
    assert framer.feed(data[:head_end]) == []
    assert framer.feed(data[head_end:-1]) == []
    (m,) = framer.feed(data[-1:])
    assert m.body == SDP  # type: ignore[union-attr]


def test_framer_missing_content_length_is_fatal_and_sticky() -> None:
    framer = StreamFramer()
    data = invite().replace(f"Content-Length: {len(SDP)}\r\n".encode(), b"")
    with pytest.raises(SipParseError, match="Content-Length is mandatory") as info:
        framer.feed(data)
    assert info.value.request is not None  # a 400 can be sent before closing
    with pytest.raises(SipParseError):
        framer.feed(invite())


@pytest.mark.parametrize("value", [b"-5", b"abc", b""])
def test_framer_bad_content_length_is_fatal(value: bytes) -> None:
    data = invite().replace(f"Content-Length: {len(SDP)}".encode(), b"Content-Length: " + value)
    with pytest.raises(SipParseError, match="Content-Length"):
        StreamFramer().feed(data)


def test_framer_oversized_header_section() -> None:
    framer = StreamFramer()
    with pytest.raises(SipParseError) as info:
        framer.feed(b"INVITE sip:a@b SIP/2.0\r\nX: " + b"a" * MAX_HEADER_SECTION)
    assert info.value.status == 413
    with pytest.raises(SipParseError) as info:
        StreamFramer().feed(invite(extra="X: " + "a" * MAX_HEADER_SECTION + "\r\n"))
    assert info.value.status == 413


def test_framer_oversized_body() -> None:
    with pytest.raises(SipParseError) as info:
        StreamFramer().feed(invite(b"", content_length=MAX_MESSAGE_SIZE))
    assert info.value.status == 413


def test_framer_broken_message_is_reported_and_stream_continues() -> None:
    broken = invite().replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE")
    items = StreamFramer().feed(broken + invite())
    assert isinstance(items[0], SipParseError)
    assert items[0].request is not None
    assert isinstance(items[1], SipRequest)


def test_framer_broken_start_line_still_framed_by_content_length() -> None:
    broken = invite().replace(b"INVITE sip:bob@biloxi.example.com SIP/2.0", b"garbage")
    items = StreamFramer().feed(broken + response())
    assert isinstance(items[0], SipParseError) and items[0].request is None
    assert isinstance(items[1], SipResponse)


def test_framer_bare_lf_messages() -> None:
    data = invite().replace(b"\r\n", b"\n")
    body_start = data.index(b"\n\n") + 2
    data = data[:body_start] + SDP
    (m,) = StreamFramer().feed(data)
    assert m.body == SDP  # type: ignore[union-attr]


def test_framer_conflicting_content_lengths() -> None:
    with pytest.raises(SipParseError, match="conflicting"):
        StreamFramer().feed(invite(extra="Content-Length: 3\r\n"))


def test_framer_duplicate_equal_content_length_frames_then_rejects() -> None:
    items = StreamFramer().feed(invite(extra=f"l: {len(SDP)}\r\n") + invite())
    assert isinstance(items[0], SipParseError) and "more than one" in items[0].reason
    assert isinstance(items[1], SipRequest)


# -- make_response / error_response -----------------------------------------------------------


def test_make_response_copies_dialog_headers_and_adds_tag() -> None:
    req = request_of(invite(extra="Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp\r\nX: 1\r\n"))
    resp = make_response(req, 200, to_tag="t9", body=b"v=0\r\n", extra=[("Contact", "<sip:bob@192.0.2.4>")])
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    for name in ("From", "Call-ID", "CSeq"):
        assert resp.headers.get(name) == req.headers.get(name)
    assert resp.to.tag == "t9"
    assert resp.reason == "OK"
    assert resp.headers.get("Contact") == "<sip:bob@192.0.2.4>"
    assert "X" not in resp.headers and "Max-Forwards" not in resp.headers
    parsed = parse_message(resp.serialize())
    assert isinstance(parsed, SipResponse) and parsed.body == b"v=0\r\n"


def test_make_response_keeps_an_existing_to_tag() -> None:
    req = request_of(
        invite().replace(b"To: Bob <sip:bob@biloxi.example.com>", b"To: <sip:bob@b.example.com>;tag=old")
    )
    assert make_response(req, 200, to_tag="new").to.tag == "old"


def test_make_response_100_has_no_tag_and_copies_timestamp() -> None:
    req = request_of(invite(extra="Timestamp: 54\r\n"))
    trying = make_response(req, 100, to_tag="t9")
    assert trying.to.tag is None
    assert trying.reason == "Trying"
    assert trying.headers.get("Timestamp") == "54"
    assert "Timestamp" not in make_response(req, 180, to_tag="t9").headers


def test_make_response_record_route_for_dialog_creating_requests() -> None:
    rr = "Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    req = request_of(invite(extra=rr))
    assert make_response(req, 200, to_tag="t").headers.get_all("Record-Route") == [
        "<sip:p1.example.com;lr>",
        "<sip:p2.example.com;lr>",
    ]
    assert len(make_response(req, 180, to_tag="t").headers.get_all("Record-Route")) == 2
    assert make_response(req, 486, to_tag="t").headers.get_all("Record-Route") == []
    bye = request_of(invite(b"", extra=rr).replace(b"INVITE", b"BYE"))
    assert make_response(bye, 200).headers.get_all("Record-Route") == []


def test_make_response_unknown_status_reason() -> None:
    assert make_response(request_of(invite()), 499).reason == "Unknown"
    assert make_response(request_of(invite()), 499, "Custom").reason == "Custom"


def test_error_response_names_the_problem() -> None:
    exc = rejected(invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 70\r\nMax-Forwards: 69"))
    answer = error_response(exc, to_tag="e1")
    assert answer is not None
    assert answer.status == 400
    assert answer.reason == "more than one Max-Forwards header"
    assert answer.to.tag == "e1"
    assert answer.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert isinstance(parse_message(answer.serialize()), SipResponse)


def test_error_response_reason_is_printable() -> None:
    exc = SipParseError("bad\r\nthing\x00", request=request_of(invite()))
    answer = error_response(exc)
    assert answer is not None and answer.reason == "bad??thing?"
    assert error_response(SipParseError("no request")) is None


# -- the Via fast path agrees with the full grammar -------------------------------------------------

_protocols = ["SIP/2.0/UDP", "SIP/2.0/TCP", "SIP/2.0/udp", "SIP / 2.0 / TLS", "SIP/3.0/UDP", "SIP/2.0/X"]
_via_text = st.builds(
    lambda proto, sp, host, port, params: f"{proto}{sp}{host}{port}{params}",
    st.sampled_from(_protocols),
    st.sampled_from([" ", "  ", "\t", ""]),
    st.sampled_from(["host.example.com", "HOST.example.com", "192.0.2.1", "[2001:db8::1]", "h_1", "a b", ""]),
    st.sampled_from(["", ":5060", ":0", ":65536", " : 5060", ":"]),
    st.lists(
        st.sampled_from([";branch=z9hG4bK1", ";rport", ";rport=5", ";rport=x", ";received=1.2.3.4", ";ttl=9",
                         ";ttl=300", ";branch=", ";;", ";maddr=[::1]", " ; x = y", ";x=%41"]),
        max_size=4,
    ).map("".join),
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(_via_text)
def test_via_fast_path_matches_general_parser(text: str) -> None:
    def outcome(parse: Callable[[str], Via]) -> Via | type[SipParseError]:
        try:
            return parse(text)
        except SipParseError:
            return SipParseError

    assert outcome(Via.parse) == outcome(Via._parse_general)
