"""Digest authentication (RFC 2617, RFC 7616, RFC 8760) as a SIP UAC."""

from __future__ import annotations

import contextlib
import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.sip.auth import (
    AuthError,
    Challenge,
    DigestCredentials,
    authorize,
    parse_challenge,
    select_challenge,
)

RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)

RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def rfc7616_challenge(algorithm: str) -> str:
    return (
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )


def params(header: str) -> dict[str, str]:
    """Authorization header params; quoted values keep their quotes so tests can check quoting."""
    assert header.startswith("Digest ")
    return dict(re.findall(r'([a-z]+)=("(?:[^"\\]|\\.)*"|[^\s,]+)', header[len("Digest ") :]))


def h(name: str, text: str) -> str:
    return hashlib.new(name, text.encode()).hexdigest()


# --- RFC worked examples --------------------------------------------------------------------------


def test_rfc2617_section_3_5_example():
    header = DigestCredentials("Mufasa", "Circle Of Life").authorize(
        parse_challenge(RFC2617_CHALLENGE), "GET", "/dir/index.html", cnonce="0a4f113b"
    )
    p = params(header)
    assert p["response"] == '"6629fae49393a05397450978507c4ef1"'
    assert p["username"] == '"Mufasa"'
    assert p["realm"] == '"testrealm@host.com"'
    assert p["nonce"] == '"dcd98b7102dd2f0e8b11d0f600bfb0c093"'
    assert p["uri"] == '"/dir/index.html"'
    assert p["cnonce"] == '"0a4f113b"'
    assert p["opaque"] == '"5ccc069c403ebaf9f0171e9517f40e41"'
    assert p["qop"] == "auth"
    assert p["nc"] == "00000001"
    assert p["algorithm"] == "MD5"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_examples(algorithm, expected):
    challenge = parse_challenge(rfc7616_challenge(algorithm))
    header = DigestCredentials("Mufasa", "Circle of Life").authorize(
        challenge, "GET", "/dir/index.html", cnonce=RFC7616_CNONCE
    )
    p = params(header)
    assert p["response"] == f'"{expected}"'
    assert p["algorithm"] == algorithm
    assert p["qop"] == "auth"
    assert p["nc"] == "00000001"
    assert p["opaque"] == f'"{RFC7616_OPAQUE}"'


def test_function_form():
    header = authorize(
        DigestCredentials("Mufasa", "Circle Of Life"),
        parse_challenge(RFC2617_CHALLENGE),
        "GET",
        "/dir/index.html",
        cnonce="0a4f113b",
    )
    assert 'response="6629fae49393a05397450978507c4ef1"' in header


# --- algorithms and qop ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "hashname"),
    [("SHA-512-256", "sha512_256"), ("SHA-256", "sha256"), ("MD5", "md5")],
)
def test_sip_register_response(algorithm, hashname):
    challenge = parse_challenge(
        f'Digest realm="atlanta.com", nonce="abc123", algorithm={algorithm}, qop="auth"'
    )
    header = DigestCredentials("alice", "secret").authorize(
        challenge, "REGISTER", "sip:atlanta.com", cnonce="c1"
    )
    ha1 = h(hashname, "alice:atlanta.com:secret")
    ha2 = h(hashname, "REGISTER:sip:atlanta.com")
    assert params(header)["response"] == f'"{h(hashname, f"{ha1}:abc123:00000001:c1:auth:{ha2}")}"'
    assert params(header)["algorithm"] == algorithm


@pytest.mark.parametrize(("algorithm", "hashname"), [("MD5-sess", "md5"), ("SHA-256-sess", "sha256")])
def test_sess_algorithms(algorithm, hashname):
    challenge = parse_challenge(f'Digest realm="r", nonce="n", algorithm={algorithm.lower()}, qop="auth"')
    assert challenge.algorithm == algorithm
    header = DigestCredentials("u", "p").authorize(challenge, "INVITE", "sip:bob@b.example", cnonce="cn")
    ha1 = h(hashname, f"{h(hashname, 'u:r:p')}:n:cn")
    ha2 = h(hashname, "INVITE:sip:bob@b.example")
    assert params(header)["response"] == f'"{h(hashname, f"{ha1}:n:00000001:cn:auth:{ha2}")}"'
    assert params(header)["algorithm"] == algorithm


def test_sess_without_qop_is_refused():
    with pytest.raises(AuthError):
        DigestCredentials("u", "p").authorize(Challenge("r", "n", algorithm="MD5-sess"), "INVITE", "sip:x")


def test_auth_int_hashes_the_body():
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth-int"')
    header = DigestCredentials("u", "p").authorize(challenge, "INVITE", "sip:bob@b.example", body, cnonce="c")
    ha2 = h("md5", f"INVITE:sip:bob@b.example:{hashlib.md5(body).hexdigest()}")
    expected = h("md5", f"{h('md5', 'u:r:p')}:n:00000001:c:auth-int:{ha2}")
    assert params(header)["response"] == f'"{expected}"'
    assert params(header)["qop"] == "auth-int"


def test_auth_preferred_over_auth_int():
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth-int, auth"')
    assert params(DigestCredentials("u", "p").authorize(challenge, "INVITE", "sip:x"))["qop"] == "auth"


def test_unknown_qop_only_is_refused():
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth-conf"')
    with pytest.raises(AuthError):
        DigestCredentials("u", "p").authorize(challenge, "INVITE", "sip:x")


def test_rfc2069_without_qop():
    challenge = parse_challenge('Digest realm="biloxi.com", nonce="dcd98b", opaque=""')
    header = DigestCredentials("bob", "zanzibar").authorize(challenge, "INVITE", "sip:bob@biloxi.com")
    p = params(header)
    expected = h(
        "md5", f"{h('md5', 'bob:biloxi.com:zanzibar')}:dcd98b:{h('md5', 'INVITE:sip:bob@biloxi.com')}"
    )
    assert p["response"] == f'"{expected}"'
    assert "qop" not in p and "nc" not in p and "cnonce" not in p
    assert p["opaque"] == '""'


def test_nonce_count_increments_per_nonce():
    creds = DigestCredentials("u", "p")
    first = parse_challenge('Digest realm="r", nonce="n1", qop="auth"')
    second = parse_challenge('Digest realm="r", nonce="n2", qop="auth"')
    assert params(creds.authorize(first, "REGISTER", "sip:r"))["nc"] == "00000001"
    assert params(creds.authorize(first, "REGISTER", "sip:r"))["nc"] == "00000002"
    assert params(creds.authorize(second, "REGISTER", "sip:r"))["nc"] == "00000001"
    assert params(creds.authorize(first, "REGISTER", "sip:r"))["nc"] == "00000003"


def test_nonce_count_is_hexadecimal():
    creds = DigestCredentials("u", "p")
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth"')
    for _ in range(9):
        creds.authorize(challenge, "REGISTER", "sip:r")
    assert params(creds.authorize(challenge, "REGISTER", "sip:r"))["nc"] == "0000000a"


def test_nonce_count_reused_cnonce_changes_response():
    creds = DigestCredentials("u", "p")
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth"')
    one = params(creds.authorize(challenge, "REGISTER", "sip:r", cnonce="c"))["response"]
    two = params(creds.authorize(challenge, "REGISTER", "sip:r", cnonce="c"))["response"]
    assert one != two


def test_random_cnonce():
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth"')
    header = DigestCredentials("u", "p").authorize(challenge, "REGISTER", "sip:r")
    assert re.fullmatch(r'"[0-9a-f]{16}"', params(header)["cnonce"])


def test_quoting_and_unquoted_fields():
    challenge = parse_challenge(r'Digest realm="a \"quoted\" realm", nonce="n", qop=auth, opaque="o"')
    header = DigestCredentials('we"ird', "p").authorize(challenge, "REGISTER", "sip:r", cnonce="c")
    assert r'username="we\"ird"' in header
    assert r'realm="a \"quoted\" realm"' in header
    assert re.search(r"algorithm=MD5(,|$)", header)
    assert re.search(r"qop=auth(,|$)", header)
    assert re.search(r"nc=00000001(,|$)", header)
    ha1 = h("md5", 'we"ird:a "quoted" realm:p')
    expected = h("md5", f"{ha1}:n:00000001:c:auth:{h('md5', 'REGISTER:sip:r')}")
    assert f'response="{expected}"' in header


def test_header_injection_refused():
    with pytest.raises(AuthError):
        DigestCredentials("u\r\nVia: x", "p").authorize(Challenge("r", "n"), "REGISTER", "sip:r")


def test_repr_hides_password():
    assert "hunter2" not in repr(DigestCredentials("u", "hunter2"))


# --- challenge parsing -----------------------------------------------------------------------------------


def test_parse_rfc2617_challenge():
    c = parse_challenge(RFC2617_CHALLENGE)
    assert c == Challenge(
        realm="testrealm@host.com",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        algorithm="MD5",
        qop=["auth", "auth-int"],
        opaque="5ccc069c403ebaf9f0171e9517f40e41",
        stale=False,
        scheme="Digest",
    )


def test_parse_escaped_quotes_and_commas():
    c = parse_challenge(r'Digest realm="a,b \"c\" \\d", nonce="x,y=z", algorithm=MD5')
    assert c.realm == r'a,b "c" \d'
    assert c.nonce == "x,y=z"


def test_parse_case_insensitive_names_and_whitespace():
    c = parse_challenge('  digest  REALM = "r" ,NONCE="n",Algorithm=sha-256,  QOP="AUTH" , Stale=TRUE')
    assert (c.realm, c.nonce, c.algorithm, c.qop, c.stale) == ("r", "n", "SHA-256", ["auth"], True)
    assert c.scheme == "Digest"


def test_parse_unquoted_values_and_unknown_params():
    c = parse_challenge(
        'Digest realm="sip.example", domain="sip:example", nonce=abc123, stale=false, foo=bar'
    )
    assert c.nonce == "abc123"
    assert not c.stale
    assert c.qop == []
    assert c.opaque is None


def test_parse_folded_challenge():
    c = parse_challenge('Digest realm="r",\r\n  nonce="n",\r\n\tqop="auth"')
    assert (c.realm, c.nonce, c.qop) == ("r", "n", ["auth"])


@pytest.mark.parametrize(
    "value",
    [
        "",
        'Basic realm="r"',
        'Bearer realm="r"',
        'Digest nonce="n"',
        'Digest realm="r"',
        'Digest realm="r", nonce="n", algorithm=SHA-1',
        'Digest realm="r", nonce="n", algorithm=AKAv1-MD5',
        'Digest realm="r, nonce="n"',
        'Digest realm="r" nonce="n"',
        'Digest realm="r", nonce=',
        'Digest realm="r", nonce="n", realm="s"',
        'Digest realm="r", ="n"',
        "Digest realm",
    ],
)
def test_parse_errors(value):
    with pytest.raises(AuthError):
        parse_challenge(value)
    assert issubclass(AuthError, ValueError)


def test_select_challenge_takes_topmost_supported():
    chosen = select_challenge(
        [
            'Digest realm="r", nonce="n1", algorithm=AKAv1-MD5',
            'Digest realm="r", nonce="n2", algorithm=SHA-256',
            'Digest realm="r", nonce="n3", algorithm=MD5',
        ]
    )
    assert (chosen.nonce, chosen.algorithm) == ("n2", "SHA-256")
    with pytest.raises(AuthError):
        select_challenge(['Basic realm="r"'])
    with pytest.raises(AuthError):
        select_challenge([])


def test_proxy_challenge_scheme_is_echoed():
    header = DigestCredentials("u", "p").authorize(
        parse_challenge('DIGEST realm="r", nonce="n"'), "INVITE", "sip:bob@b.example"
    )
    assert header.startswith("Digest ")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_random_challenge_raises_only_auth_error(value):
    try:
        challenge = parse_challenge(value)
    except AuthError:
        return
    with contextlib.suppress(AuthError):
        DigestCredentials("u", "p").authorize(challenge, "INVITE", "sip:x")
