"""RFC 4475 (SIP torture test messages) against the parser.

Every message is either parsed with the semantics its section points out, or rejected the
way the RFC says. The messages are read byte-exact from ../shared/rfc4475 (never copied
into the project); the tests skip when that directory is absent.

Decisions where RFC 4475 leaves a choice ("reasonable to reject ... may be liberal"):
policy is *lenient on whitespace, strict on structure*.

=========  ========  ==========================================================================
message    section   decision
=========  ========  ==========================================================================
lwsstart   3.1.2.9   parse: extra SP between Request-Line elements is ignored (re-serialized
                     with single SP, as the RFC requires of a forwarding element)
trws       3.1.2.10  parse: trailing SP after SIP-Version is ignored
badaspec   3.1.2.14  parse: spaces just inside <> around the To URI are ignored
baddate    3.1.2.12  parse: the Date header is never interpreted, so a non-GMT zone is harmless
escruri    3.1.2.11  reject 400: headers are not allowed in a Request-URI (RFC 3261 Table 1)
regbadct   3.1.2.13  reject 400: a Contact URI with '?' must be in <>; no bracket guessing
baddn      3.1.2.15  reject 400: unquoted display names with non-token characters
badbranch  3.2.1     reject 400 statelessly: branch "z9hG4bK" alone would put every such
                     request from the source into one transaction
mismatch02 3.1.2.18  reject 501 (the RFC's preferred code for an unknown method)
scalarlg   3.1.2.5   response: dropped (SipParseError without a request to answer)
bigcode    3.1.2.19  response: dropped
badinv01   3.1.2.1   reject 400, answered: its top Via is malformed, so the 400 goes back to
                     the source address, copying the Via as it was
=========  ========  ==========================================================================

Application-layer answers (416 unkscm/novelsc, 420 bext01, 415 invut, 401 regaut01, 406
sdp01, 483 zeromf at proxies, dropping bcast) belong to the user agent: the parser must
accept those messages, and these tests check it exposes what that decision needs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parley.sip.errors import SipParseError
from parley.sip.message import (
    SipRequest,
    SipResponse,
    StreamFramer,
    error_response,
    parse_message,
)

RFC4475_DIR = Path(__file__).parents[2].parent / "shared" / "rfc4475"

VALID = [
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq", "semiuri",
    "transports", "mpart01", "unreason", "noreason",
    # tolerated (see the module docstring)
    "lwsstart", "trws", "badaspec", "baddate",
    # well-formed; the application layer decides (3.3, 3.4)
    "unkscm", "novelsc", "unksm2", "bext01", "invut", "regaut01", "bcast", "zeromf", "cparam01",
    "cparam02", "regescrt", "sdp01", "inv2543",
]  # fmt: skip

# name -> (status, answerable): the SipParseError status, and whether it carries a request
# that error_response() can answer. Responses are never answered.
INVALID: dict[str, tuple[int, bool]] = {
    "badinv01": (400, True),
    "clerr": (400, True),
    "ncl": (400, True),
    "scalar02": (400, True),
    "scalarlg": (400, False),
    "quotbal": (400, True),
    "ltgtruri": (400, True),
    "lwsruri": (400, True),
    "escruri": (400, True),
    "regbadct": (400, True),
    "baddn": (400, True),
    "badvers": (505, True),
    "mismatch01": (400, True),
    "mismatch02": (501, True),
    "bigcode": (400, False),
    "badbranch": (400, True),
    "insuf": (400, True),
    "multi01": (400, True),
    "mcl01": (400, True),
}

# Answers that copy the request's broken (or missing) From/To/Call-ID/CSeq as they are.
ECHOES_BROKEN_HEADER = {"insuf", "scalar02", "baddn", "quotbal", "multi01", "badinv01"}


def load(name: str) -> bytes:
    path = RFC4475_DIR / f"{name}.dat"
    if not RFC4475_DIR.is_dir():
        pytest.skip(f"RFC 4475 messages not found at {RFC4475_DIR} (../shared/rfc4475 beside the repo)")
    return path.read_bytes()


def parse(name: str) -> SipRequest | SipResponse:
    return parse_message(load(name))


def request(name: str) -> SipRequest:
    message = parse(name)
    assert isinstance(message, SipRequest)
    return message


def reject(name: str) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse(name)
    return info.value


# -- coverage of the corpus ------------------------------------------------------------------


def test_every_message_is_classified() -> None:
    load("wsinv")
    names = {path.stem for path in RFC4475_DIR.glob("*.dat")}
    assert names == set(VALID) | set(INVALID)
    assert not set(VALID) & set(INVALID)
    source = (RFC4475_DIR / "SOURCE.txt").read_text()
    valid_section = re.search(r"3\.1\.1\.x valid \(([^)]*)\)", source)
    assert valid_section is not None
    assert set(valid_section.group(1).split()) <= set(VALID)


# Content-Length deliberately wrong or absent (SOURCE.txt): framing is tested separately.
BAD_FRAMING = {"clerr", "dblreq", "inv2543", "mcl01", "ncl"}


@pytest.mark.parametrize("name", sorted(VALID + list(INVALID)))
def test_stream_and_datagram_agree(name: str) -> None:
    data = load(name)
    try:
        expected: SipRequest | SipResponse | SipParseError = parse_message(data)
    except SipParseError as exc:
        expected = exc
    for chunk in (len(data), 1, 7):
        framer = StreamFramer()
        items = []
        try:
            for i in range(0, len(data), chunk):
                items.extend(framer.feed(data[i : i + chunk]))
        except SipParseError:
            assert name in BAD_FRAMING
            continue
        if name in BAD_FRAMING:
            continue
        assert len(items) == 1
        (item,) = items
        if isinstance(expected, SipParseError):
            assert isinstance(item, SipParseError)
            assert (item.status, item.reason) == (expected.status, expected.reason)
        else:
            assert isinstance(item, type(expected))
            assert (item.headers, item.body) == (expected.headers, expected.body)


@pytest.mark.parametrize("name", VALID)
def test_valid_message_parses_and_round_trips(name: str) -> None:
    message = parse(name)
    again = parse_message(message.serialize())
    assert type(again) is type(message)
    assert again.body == message.body
    assert [h for h in again.headers if h[0] != "Content-Length"] == [
        h for h in message.headers if h[0] != "Content-Length"
    ]
    # Every accessor the user agent calls works on what the parser accepted.
    message.top_via, message.vias, message.from_, message.to, message.cseq  # noqa: B018
    if isinstance(message, SipRequest):
        message.request_uri  # noqa: B018


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_message_is_rejected_as_the_rfc_says(name: str) -> None:
    status, answerable = INVALID[name]
    exc = reject(name)
    assert exc.status == status
    assert exc.reason
    response = error_response(exc, to_tag="t1")
    if not answerable:
        assert response is None
        return
    assert response is not None
    assert response.status == status
    assert response.headers.get_all("Via") == exc.request.headers.get_all("Via")  # type: ignore[union-attr]
    if name not in ECHOES_BROKEN_HEADER:
        reparsed = parse_message(response.serialize())
        assert isinstance(reparsed, SipResponse)
        assert (reparsed.status, reparsed.call_id) == (status, exc.request.call_id)  # type: ignore[union-attr]


# -- 3.1.1 valid messages --------------------------------------------------------------------


def test_wsinv_whitespace_folding_and_case() -> None:
    m = request("wsinv")
    assert m.method == "INVITE"
    assert m.uri == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert m.request_uri.params == {"unknownparam": None}
    assert str(m.to.uri) == "sip:vivekg@chair-dnrc.example.com"
    assert m.to.tag == "1918181833n"
    assert m.from_.display == r"J Rosenberg \\\""  # raw quoted-string contents, escapes kept
    assert m.from_.tag == "98asjd8"
    assert m.headers.get("max-forwards") == "0068"
    assert m.cseq == (9, "INVITE")
    assert m.headers.get("Content-Length") == "150"
    assert m.headers.get("Subject") == ""
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    vias = m.vias
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    (contact,) = m.headers.get_all("Contact")
    assert contact.startswith('"Quoted string \\"\\"" <sip:jdrosen@example.com>')
    assert m.headers.get("Route") == "<sip:services.example.com;lr;unknownwith=value;unknown-no-value>"
    assert len(m.body) == 150


def test_intmeth_unusual_tokens_and_utf8() -> None:
    m = request("intmeth")
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.cseq == (139122385, m.method)
    uri = m.request_uri
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"
    assert uri.headers is None and uri.params == {}
    assert m.to.display == "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f"
    assert m.from_.display == "token1~` token2'+_ token3*%!.-"
    assert m.from_.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert m.top_via.branch == "z9hG4bK-.!%66*_+`'~"


def test_esc01_escapes_are_kept() -> None:
    m = request("esc01")
    assert m.request_uri.user == "sips%3Auser%40example.com"
    assert m.request_uri.host == "example.net"
    assert m.to.uri.user == "%75se%72"
    assert m.from_.uri.user == "I%20have%20spaces"
    contact = m.headers.get("Contact")
    assert contact == "<sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>"
    assert m.content_type == "application/sdp"  # compact form "C"
    assert len(m.body) == 150


def test_escnull_escaped_nul_is_kept() -> None:
    m = request("escnull")
    assert m.to.uri.user == "null-%00-null"
    assert m.from_.uri.user == "null-%00-null"
    assert m.headers.get_all("Contact") == ["<sip:%00@host5.example.com>", "<sip:%00%00@host5.example.com>"]
    assert m.body == b""


def test_esc02_escaped_method_and_header_name_are_not_unescaped() -> None:
    m = request("esc02")
    assert m.method == "RE%47IST%45R"  # not REGISTER
    assert m.cseq == (29344, "RE%47IST%45R")
    assert m.to.display == "%Z%45"
    assert m.top_via.branch == "z9hG4bK209%fzsnel234"
    contacts = ["<sip:alias1@host1.example.com>", "<sip:alias3@host3.example.com>"]
    assert m.headers.get_all("Contact") == contacts
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp_display_name_without_space() -> None:
    m = request("lwsdisp")
    assert m.from_.display == "caller"
    assert str(m.from_.uri) == "sip:caller@example.com"
    assert m.from_.tag == "323"


def test_longreq_long_values_and_many_vias() -> None:
    m = request("longreq")
    vias = m.vias
    assert len(vias) == 34
    assert vias[0].host == "sip33.example.com"
    assert vias[-1].received == "192.0.2.5"
    assert vias[-1].branch is not None and vias[-1].branch.startswith("verylonglong")
    assert m.to.uri.port == 6000
    assert len(m.from_.tag or "") > 150
    assert len(m.body) == 150


def test_dblreq_extra_octets_in_datagram_are_ignored() -> None:
    m = request("dblreq")
    assert m.method == "REGISTER"
    assert m.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"  # compact "I" form
    assert m.body == b""


def test_semiuri_semicolon_in_user_part() -> None:
    m = request("semiuri")
    uri = m.request_uri
    assert uri.user == "user;par=u%40example.net"
    assert uri.host == "example.com"
    assert uri.params == {}
    assert m.headers.get_all("Accept") == [
        "application/sdp", "application/pkcs7-mime", "multipart/mixed", "multipart/signed",
        "message/sip", "message/sipfrag",
    ]  # fmt: skip


def test_transports_several_via_transports() -> None:
    m = request("transports")
    assert [v.transport for v in m.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert m.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def test_mpart01_binary_multipart_body_is_byte_exact() -> None:
    data = load("mpart01")
    m = request("mpart01")
    assert len(m.body) == 553
    assert data.endswith(m.body)
    assert m.body.count(b"\n") - m.body.count(b"\r\n") == 3  # the bare LFs inside the binary part
    assert m.content_type == "multipart/mixed"
    assert m.top_via.params["rport"] is None
    assert parse_message(m.serialize()).body == m.body


def test_unreason_utf8_reason_phrase() -> None:
    m = parse("unreason")
    assert isinstance(m, SipResponse)
    assert m.status == 200
    assert m.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"


def test_noreason_empty_reason_phrase() -> None:
    m = parse("noreason")
    assert isinstance(m, SipResponse)
    assert (m.status, m.reason) == (100, "")


# -- 3.1.2 invalid (or tolerated) messages -----------------------------------------------------


def test_lwsstart_extra_spaces_tolerated_and_not_forwarded() -> None:
    m = request("lwsstart")
    assert (m.method, m.uri) == ("INVITE", "sip:user@example.com")
    assert m.serialize().startswith(b"INVITE sip:user@example.com SIP/2.0\r\n")


def test_trws_trailing_spaces_tolerated() -> None:
    m = request("trws")
    assert (m.method, m.uri) == ("OPTIONS", "sip:remote-target@example.com")
    assert m.serialize().startswith(b"OPTIONS sip:remote-target@example.com SIP/2.0\r\n")


def test_badaspec_spaces_inside_angle_brackets_tolerated() -> None:
    m = request("badaspec")
    assert str(m.to.uri) == "sip:t.watson@example.org"
    assert m.to.display == "Watson, Thomas"


def test_baddate_date_is_not_interpreted() -> None:
    m = request("baddate")
    assert m.headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"


def test_clerr_content_length_too_large() -> None:
    exc = reject("clerr")
    assert "9999" in exc.reason
    # Over a stream there is nothing to do but wait for the rest (RFC 4475 §3.1.2.2).
    framer = StreamFramer()
    assert framer.feed(load("clerr")) == []


def test_ncl_negative_content_length_is_fatal_on_streams() -> None:
    exc = reject("ncl")
    assert "Content-Length" in exc.reason
    with pytest.raises(SipParseError) as info:
        StreamFramer().feed(load("ncl"))
    assert info.value.request is not None  # a 400 can still be sent before closing


def test_scalar02_cseq_out_of_range() -> None:
    assert "CSeq" in reject("scalar02").reason


def test_scalarlg_response_is_dropped() -> None:
    exc = reject("scalarlg")
    assert exc.request is None
    assert "CSeq" in exc.reason


def test_badvers_505() -> None:
    exc = reject("badvers")
    assert exc.status == 505
    response = error_response(exc)
    assert response is not None and response.status == 505


def test_mismatch_cseq_method() -> None:
    assert reject("mismatch01").status == 400
    assert reject("mismatch02").status == 501


def test_bigcode_response_is_dropped() -> None:
    exc = reject("bigcode")
    assert exc.request is None


def test_quotbal_unterminated_quote() -> None:
    assert "quoted" in reject("quotbal").reason


def test_badinv01_extra_separators() -> None:
    assert "Via" in reject("badinv01").reason


# -- 3.2 / 3.3 / 3.4 -------------------------------------------------------------------------


def test_badbranch_rejected_statelessly() -> None:
    exc = reject("badbranch")
    assert "branch" in exc.reason
    assert error_response(exc) is not None


def test_insuf_missing_headers_still_answered() -> None:
    exc = reject("insuf")
    assert "From" in exc.reason and "To" in exc.reason and "Call-ID" in exc.reason
    response = error_response(exc)
    assert response is not None
    assert response.headers.get("CSeq") == "193942 INVITE"


def test_unknown_schemes_parse_for_the_application_to_answer() -> None:
    assert request("unkscm").request_uri.scheme == "nobodyknowsthisscheme"
    assert request("unkscm").request_uri.host == "totallyopaquecontent"
    novelsc = request("novelsc").request_uri
    assert (novelsc.scheme, novelsc.host) == ("soap.beep", "//192.0.2.103:3002")
    m = request("unksm2")
    assert m.to.uri.scheme == "isbn"
    assert m.from_.uri.scheme == "http"
    assert m.headers.get("Contact") == "<name:John_Smith>"


def test_bext01_require_values() -> None:
    m = request("bext01")
    assert m.headers.get_all("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert m.headers.get_all("Proxy-Require") == ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]


def test_invut_and_sdp01_content_negotiation_fields() -> None:
    assert request("invut").content_type == "application/unknownformat"
    assert request("sdp01").headers.get("Accept") == "text/nobodyKnowsThis"


def test_regaut01_unknown_auth_scheme_kept() -> None:
    assert request("regaut01").headers.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"


def test_multi01_duplicate_single_value_headers() -> None:
    assert "more than one" in reject("multi01").reason


def test_mcl01_conflicting_content_lengths() -> None:
    assert "Content-Length" in reject("mcl01").reason
    with pytest.raises(SipParseError, match="conflicting Content-Length"):
        StreamFramer().feed(load("mcl01"))


def test_bcast_second_via_is_broadcast() -> None:
    m = parse("bcast")
    assert isinstance(m, SipResponse)
    assert m.vias[1].host == "255.255.255.255"


def test_zeromf_max_forwards_zero() -> None:
    assert request("zeromf").headers.get("Max-Forwards") == "0"


def test_cparam_contact_vs_uri_parameters() -> None:
    from parley.sip.uri import NameAddr

    one = NameAddr.parse(request("cparam01").headers.get("Contact") or "")
    assert one.params == {"unknownparam": None}
    assert one.uri.params == {}
    two = NameAddr.parse(request("cparam02").headers.get("Contact") or "")
    assert two.params == {}
    assert two.uri.params == {"unknownparam": None}


def test_regescrt_escaped_headers_in_contact_uri() -> None:
    from parley.sip.uri import NameAddr

    contact = NameAddr.parse(request("regescrt").headers.get("Contact") or "")
    assert contact.uri.headers == "Route=%3Csip:sip.example.com%3E"


def test_inv2543_rfc2543_request() -> None:
    m = request("inv2543")
    assert m.top_via.branch is None
    assert m.from_.tag is None
    assert "Content-Length" not in m.headers and "Max-Forwards" not in m.headers
    assert m.body.startswith(b"v=0\r\n") and m.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")
    # Without Content-Length a stream cannot be framed.
    with pytest.raises(SipParseError, match="Content-Length"):
        StreamFramer().feed(load("inv2543"))


def test_missing_corpus_skips_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.RFC4475_DIR", Path("/nonexistent/shared/rfc4475"))
    with pytest.raises(pytest.skip.Exception, match="RFC 4475 messages not found"):
        load("wsinv")


# -- what the user agent answers (issue 15: every message answered as the RFC says) -----------

# The user agent's answer to each message that has one decided by the RFC (3.3, 3.4, 3.1.2.1).
UA_ANSWERS = {
    "badinv01": [400],  # its top Via is malformed: answered to the source, the Via copied as it was
    "unkscm": [416],
    "novelsc": [416],
    "sdp01": [406],  # it accepts no SDP, and our answer would be SDP
    "bext01": [420],
    "invut": [415],
    "inv2543": [100],  # a valid RFC 2543 INVITE: the call is offered to the application
    "zeromf": [200],  # Max-Forwards 0 matters to proxies; this user agent is the target
    "mismatch02": [501],
}


def ua_answers(name: str, transport: str = "UDP") -> tuple[list[bytes], list[object]]:
    """Feed one message to a fresh user agent; its responses (raw) and its events."""
    from parley.sip.useragent import UserAgent

    agent = UserAgent("192.0.2.99", 5060, transport=transport)
    try:
        agent.receive(load(name), ("192.0.2.15", 5060), transport, 0.0)
    except ConnectionError:
        assert transport == "TCP"  # a stream that cannot be framed is closed (after its answer)
    return [out.data for out in agent.outbox], list(agent.events)


@pytest.mark.parametrize("name", sorted(UA_ANSWERS))
def test_user_agent_answers_as_the_rfc_says(name: str) -> None:
    responses, events = ua_answers(name)
    assert [int(data.split(b" ", 2)[1]) for data in responses] == UA_ANSWERS[name]
    assert bool(events) == (name == "inv2543")


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
@pytest.mark.parametrize("name", sorted(VALID + list(INVALID)))
def test_every_response_has_a_to_tag_and_a_server_header(name: str, transport: str) -> None:
    """§8.2.6.2: a To tag on every response but 100; a Server header on each of them (issue 15 item 7)."""
    responses, _ = ua_answers(name, transport)
    # Responses are not answered; over a stream, clerr's body is still awaited (see test_clerr...).
    assert (
        responses
        or name in ("scalarlg", "bigcode", "unreason", "noreason", "bcast")
        or (transport, name) == ("TCP", "clerr")
    )
    for data in responses:
        assert re.search(rb"^Server: Parley\r$", data, re.MULTILINE), data
        if name in ECHOES_BROKEN_HEADER:  # the request's To (if any) was broken: copied as it was
            continue
        response = parse_message(data)
        assert isinstance(response, SipResponse)
        if response.status != 100:
            assert response.to.tag, data
