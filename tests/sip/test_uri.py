"""SipUri, NameAddr and the parameter/quoting helpers (RFC 3261 §19.1, §20.10, §25; RFC 3966)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.sip.errors import SipParseError
from parley.sip.uri import (
    NameAddr,
    SipUri,
    format_host,
    format_params,
    parse_hostport,
    split_params,
    split_quoted,
)

# -- SipUri -----------------------------------------------------------------------------------


def test_full_sip_uri() -> None:
    uri = SipUri.parse(
        "sips:alice:secret@Atlanta.Example.COM:5061;Transport=TCP;lr?subject=hi&priority=urgent"
    )
    assert uri.scheme == "sips"
    assert (uri.user, uri.password) == ("alice", "secret")
    assert (uri.host, uri.port) == ("atlanta.example.com", 5061)
    assert uri.params == {"transport": "TCP", "lr": None}
    assert uri.headers == "subject=hi&priority=urgent"
    assert (
        str(uri) == "sips:alice:secret@atlanta.example.com:5061;transport=TCP;lr?subject=hi&priority=urgent"
    )


@pytest.mark.parametrize(
    "text",
    [
        "sip:bob@biloxi.example.com",
        "sip:biloxi.example.com",
        "sip:192.0.2.4:5060",
        "sip:+15551234567@gw.example.com;user=phone",
        "sip:alice@atlanta.example.com;maddr=239.255.255.1;ttl=15",
        "sips:bob@[2001:db8::10]:5061;transport=tls",
        "sip:[::1]",
        "sip:user;par=u%40example.net@example.com",
        "sip:I%20have%20spaces@example.net",
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
        "sip:alice@atlanta.example.com;method=REGISTER?to=alice%40atlanta.example.com",
        "tel:+1-201-555-0123",
        "tel:7042;phone-context=example.com",
        "urn:service:sos",
        "http://www.example.com/path",
    ],
)
def test_str_round_trip(text: str) -> None:
    uri = SipUri.parse(text)
    assert str(uri) == text
    assert SipUri.parse(str(uri)) == uri


def test_ipv6_host_is_stored_unbracketed() -> None:
    uri = SipUri.parse("sip:alice@[2001:DB8::10]:5070;transport=udp")
    assert (uri.host, uri.port) == ("2001:db8::10", 5070)
    assert str(uri) == "sip:alice@[2001:db8::10]:5070;transport=udp"


def test_user_part_may_hold_reserved_characters() -> None:
    uri = SipUri.parse("sip:a?b;c,d/e@example.com;lr")
    assert uri.user == "a?b;c,d/e"
    assert uri.params == {"lr": None}
    assert uri.headers is None


def test_tel_uri() -> None:
    uri = SipUri.parse("tel:+1-201-555-0123;ext=1234;phone-context=+1")
    assert uri.scheme == "tel"
    assert uri.user == "+1-201-555-0123"
    assert uri.host == ""
    assert uri.params == {"ext": "1234", "phone-context": "+1"}


def test_other_schemes_are_opaque() -> None:
    uri = SipUri.parse("nobodyKnowsThisScheme:totallyopaquecontent")
    assert uri.scheme == "nobodyknowsthisscheme"
    assert uri.host == "totallyopaquecontent"


def test_scheme_and_host_case_insensitive() -> None:
    assert SipUri.parse("SIP:Bob@BILOXI.example.com") == SipUri.parse("sip:Bob@biloxi.example.com")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "example.com",
        "<sip:user@example.com>",
        "1sip:user@example.com",
        "sip:user@example.com; lr",
        "sip:user @example.com",
        "sip:user@exa\tmple.com",
        "sip:user@",
        "sip:@example.com",
        "sip:user@example.com:0",
        "sip:user@example.com:65536",
        "sip:user@example.com:50x0",
        "sip:user@example.com:" + "9" * 5000,
        "sip:user@example.com:٥٠٦٠",
        "sip:user@[2001:db8::1",
        "sip:user@[not-an-address]",
        "sip:user@[::1]x",
        "sip:user@::1",
        "sip:user@exam_ple.com;;lr",
        "sip:user@example.com;=x",
        "sip:%zzuser@example.com",
        "sip:user@example.com;x=%4",
        "sip:user@ex\x00ample.com",
        'sip:"user"@example.com',
        "tel:",
        "tel:abc xyz",
        "tel:;x=1",
        "mailto:",
        "sip:user@exämple.com",
    ],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(SipParseError):
        SipUri.parse(text)


# -- hostport -----------------------------------------------------------------------------------


def test_parse_hostport() -> None:
    assert parse_hostport("Example.COM") == ("example.com", None)
    assert parse_hostport("192.0.2.1:5060") == ("192.0.2.1", 5060)
    assert parse_hostport("[::1]:5070") == ("::1", 5070)
    assert parse_hostport(" host ") == ("host", None)
    assert format_host("::1") == "[::1]"
    assert format_host("[::1]") == "[::1]"
    assert format_host("example.com") == "example.com"


# -- params and quoting -------------------------------------------------------------------------


def test_split_params() -> None:
    assert split_params('value ; A = 1 ;b; c="x;y"') == ("value", {"a": "1", "b": None, "c": '"x;y"'})
    assert format_params({"a": "1", "b": None}) == ";a=1;b"
    with pytest.raises(SipParseError):
        split_params("value;;a")


def test_split_quoted() -> None:
    assert split_quoted('"Doe, John" <sip:a@b>, <sip:c@d;x=1,2>', ",") == [
        '"Doe, John" <sip:a@b>',
        " <sip:c@d;x=1,2>",
    ]
    assert split_quoted(r'"a \", b", c', ",") == [r'"a \", b"', " c"]
    assert split_quoted(r'"a \\", b', ",") == [r'"a \\"', " b"]
    assert split_quoted("a,b,,c", ",") == ["a", "b", "", "c"]
    for bad in ('"open, quote', "<sip:a@b, c", "a>, b", r'"escaped end\"'):
        with pytest.raises(SipParseError):
            split_quoted(bad, ",")


# -- NameAddr ---------------------------------------------------------------------------------


def test_quoted_display_name_with_escapes() -> None:
    na = NameAddr.parse(r'"Doe, \"Johnny\" John" <sip:john@example.com;transport=tcp>;tag=abc;expires=60')
    assert na.display == r"Doe, \"Johnny\" John"
    assert str(na.uri) == "sip:john@example.com;transport=tcp"
    assert na.uri.params == {"transport": "tcp"}
    assert na.params == {"tag": "abc", "expires": "60"}
    assert na.tag == "abc"
    assert na.raw_uri == "sip:john@example.com;transport=tcp"
    assert NameAddr.parse(str(na)) == na


def test_unquoted_display_and_no_display() -> None:
    assert NameAddr.parse("Bob <sip:bob@example.com>").display == "Bob"
    assert NameAddr.parse("A. G.  Bell<sip:bell@example.com>").display == "A. G.  Bell"
    plain = NameAddr.parse("<sip:bob@example.com>")
    assert plain.display is None
    assert str(plain) == "<sip:bob@example.com>"
    assert NameAddr.parse('"" <sip:bob@example.com>').display == ""


def test_addr_spec_parameters_belong_to_the_header() -> None:
    na = NameAddr.parse("sip:+19725552222@gw1.example.net;unknownparam;tag=1")
    assert na.uri.params == {}
    assert na.params == {"unknownparam": None, "tag": "1"}
    assert str(na) == "<sip:+19725552222@gw1.example.net>;unknownparam;tag=1"


def test_name_addr_with_non_sip_uri() -> None:
    assert NameAddr.parse("<tel:+15551234567>;tag=9").uri.user == "+15551234567"
    assert NameAddr.parse("<urn:service:sos>").uri.scheme == "urn"


def test_spaces_inside_angle_brackets_are_tolerated() -> None:
    assert str(NameAddr.parse('"W" < sip:t.watson@example.org >').uri) == "sip:t.watson@example.org"


def test_whitespace_around_parameters() -> None:
    na = NameAddr.parse('"Q" <sip:a@example.com> ; newparam =\tnewvalue ; secondparam ; q = 0.33')
    assert na.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Bell, Alexander <sip:a.g.bell@example.com>",
        '"Mr. J. User <sip:j.user@example.com>',
        '"Bob" sip:bob@example.com',
        "<sip:bob@example.com",
        "<sip:bob@example.com> junk",
        "<sip:bob@example.com>;;tag=1",
        "<sip:bob@example.com>;tag=1;",
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
        "sip:a@b, sip:c@d",
        "<<sip:bob@example.com>>",
        "<" * 1000 + "sip:a@b" + ">" * 1000,
        "<>",
        "*",
    ],
)
def test_bad_name_addrs(text: str) -> None:
    with pytest.raises(SipParseError):
        NameAddr.parse(text)


# -- the fast paths agree with the full grammar --------------------------------------------------

_uri_chars = st.sampled_from(list("abcXYZ019-_.!~*'()&=+$,;?/:@%[]<> \"\t\x00é\u212a\u017f"))
_uri_like = st.one_of(
    st.text(_uri_chars, max_size=30).map(lambda s: "sip:" + s),
    st.builds(
        lambda user, host, port, params: f"sip:{user}@{host}{port}{params}",
        st.sampled_from(["alice", "bob.smith", "+1555", "a%20b", "x;y", ""]),
        st.sampled_from(["example.com", "EXAMPLE.com", "192.0.2.1", "[::1]", "h_1", "bad host"]),
        st.sampled_from(["", ":5060", ":0", ":65535", ":65536", ":"]),
        st.lists(
            st.sampled_from([";lr", ";transport=TCP", ";x=", ";=y", ";;", ";maddr=[::1]"]), max_size=3
        ).map("".join),
    ),
)


def _outcome(parse: object, text: str) -> object:
    try:
        return parse(text)  # type: ignore[operator]
    except SipParseError:
        return SipParseError


@settings(max_examples=400, deadline=None)
@given(_uri_like)
def test_sip_uri_fast_path_matches_general_parser(text: str) -> None:
    assert _outcome(SipUri.parse, text) == _outcome(SipUri._parse_general, text)


_display = st.sampled_from(['"Alice" ', '"A \\"B\\"" ', "Bob ", "A. Bell", "Bell, A ", '"" ', "", '"x'])
_params = st.lists(st.sampled_from([";tag=1", ";lr", ";q=0.5", ";x=", ";;", ' ;a = "b c"']), max_size=3)


@settings(max_examples=400, deadline=None)
@given(
    _display,
    st.sampled_from(
        ["<sip:a@example.com>", "<sip:a@example.com;lr>", "sip:a@example.com", "< sip:a@b >", "<x"]
    ),
    _params.map("".join),
)
def test_name_addr_fast_path_matches_general_parser(display: str, uri: str, params: str) -> None:
    text = display + uri + params
    assert _outcome(NameAddr.parse, text) == _outcome(NameAddr._parse_general, text)
