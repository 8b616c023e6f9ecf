"""Hypothesis fuzzing of the SIP parser: only SipParseError may ever escape.

Covers parse_message, StreamFramer, the header accessors the user agent calls later (a
ValueError/IndexError/UnicodeError there would kill a connection handler), error_response,
and the serialize -> parse round trip. The whole file is meant to run in well under 30 s.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from parley.sip.errors import SipParseError
from parley.sip.message import (
    MAX_HEADER_SECTION,
    MAX_MESSAGE_SIZE,
    SipRequest,
    SipResponse,
    StreamFramer,
    error_response,
    parse_message,
)
from parley.sip.uri import NameAddr

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"

SEEDS: list[bytes] = [
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bKx;received=192.0.2.9\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b'From: "Alice \\"A\\"" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b'Contact: "Doe, J" <sip:alice@pc33.atlanta.example.com;transport=tcp>;expires=60, <tel:+1555>\r\n'
    b"Record-Route: <sip:p1.example.com;lr>\r\n"
    b"Allow: INVITE, ACK, BYE\r\n"
    b"Subject: folded\r\n  value\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP,
    b"SIP/2.0 180 Ringing\r\n"
    b"v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;received=192.0.2.2;rport=5060\r\n"
    b"t: <sip:bob@example.com>;tag=x\r\nf: sip:alice@example.com;tag=y\r\ni: cid\r\n"
    b"CSeq: 1 INVITE\r\nl: 0\r\n\r\n",
    b"OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0\r\n"
    b"Via: SIP  /  2.0 / UDP host.example.com ; branch = z9hG4bKa\r\n"
    b"To: sip:user@example.com\r\nFrom: A. Bell<sip:bell@example.com>;tag=1\r\n"
    b"Call-ID: o@h\r\nCSeq: 7 OPTIONS\r\nAccept: application/sdp,\r\n text/plain\r\n\r\n",
    b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKr\r\n"
    b"To: <sip:u@example.com>\r\nFrom: <sip:u@example.com>;tag=2\r\nCall-ID: r@h\r\nCSeq: 2 REGISTER\r\n"
    b"Contact: *\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n",
]


def exercise(message: SipRequest | SipResponse) -> None:
    """Call every accessor the user agent uses: each may only raise SipParseError."""
    getters: list[Callable[[], object]] = [
        lambda: message.top_via,
        lambda: message.vias,
        lambda: message.from_,
        lambda: message.to,
        lambda: message.cseq,
        lambda: message.call_id,
        lambda: message.content_type,
        lambda: [str(v) for v in message.vias],
        lambda: (str(message.from_), str(message.to), message.from_.tag, message.top_via.rport),
        lambda: [NameAddr.parse(v) for v in message.headers.get_all("Contact") if v != "*"],
        lambda: [NameAddr.parse(v) for v in message.headers.get_all("Record-Route")],
    ]
    if isinstance(message, SipRequest):
        getters.append(lambda: message.request_uri)
        getters.append(lambda: str(message.request_uri))
    for getter in getters:
        with contextlib.suppress(SipParseError):
            getter()


def comparable(message: SipRequest | SipResponse) -> tuple[object, ...]:
    headers = [item for item in message.headers if item[0] != "Content-Length"]
    if isinstance(message, SipRequest):
        return ("request", message.method, message.uri, headers, message.body)
    return ("response", message.status, message.reason, headers, message.body)


def check_round_trip(message: SipRequest | SipResponse) -> None:
    data = message.serialize()
    try:
        again = parse_message(data)
    except SipParseError as exc:
        # Serializing adds a Content-Length and one line per value, which may cross a size limit.
        assert exc.status == 413, exc.reason
        return
    assert comparable(again) == comparable(message)


def check_datagram(data: bytes) -> None:
    """parse_message returns a message or raises SipParseError; both are then exercised."""
    try:
        message = parse_message(data)
    except SipParseError as exc:
        assert isinstance(exc.reason, str) and exc.reason
        assert 400 <= exc.status < 600
        answer = error_response(exc, to_tag="fz")
        if answer is not None:
            answer.serialize()
            exercise(answer)
        return
    exercise(message)
    check_round_trip(message)


# -- (a) random bytes -------------------------------------------------------------------------

_interesting = st.sampled_from(
    [b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"\x00", b":", b";", b",", b"<", b">", b'"', b"\\", b" ", b"\t",
     b"SIP/2.0", b"INVITE ", b"sip:", b"Via: ", b"v:", b"l: ", b"Content-Length: ", b"CSeq: 1 INVITE",
     b"From: ", b"To: ", b"Call-ID: ", b"@", b"[", b"]", b"%", b"=", b"\xff", b"\xc3", b"9" * 30, b"-1",
     b"9" * 5000, "²".encode(), "٣".encode(), "\u212a".encode(), b"\x0b", b"\x1c", "\x85".encode()]
)  # fmt: skip


@FUZZ
@given(st.binary(max_size=600))
@example(b"")
@example(b"\r\n\r\n")
@example(b"SIP/2.0 200 OK\r\n\r\n")
@example(b"INVITE sip:a@b SIP/2.0\r\n\r\n")
def test_random_bytes(data: bytes) -> None:
    check_datagram(data)


@FUZZ
@given(st.lists(st.one_of(_interesting, st.binary(max_size=8)), max_size=60).map(b"".join))
def test_random_sip_like_tokens(data: bytes) -> None:
    check_datagram(data)


_name = st.one_of(
    st.sampled_from(["Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Contact", "m", "l",
                     "Content-Length", "Max-Forwards", "Route", "Record-Route", "Allow", "Accept", "X-A"]),
    st.text(st.sampled_from("aZ-!%*_+`'~.9 é:"), min_size=0, max_size=6),
)  # fmt: skip
_value = st.text(st.sampled_from('abc<>";,:@=\\ \t/.019%[]?*\x00\x7fé\u212a\r\n²٣\x1c\x85'), max_size=40)
_start = st.one_of(
    st.sampled_from(
        ["INVITE sip:a@b SIP/2.0", "SIP/2.0 200 OK", "OPTIONS tel:+1 SIP/2.0", "ACK x:y SIP/2.0"]
    ),
    st.text(st.sampled_from("INVITE sip:@b/2.0 SIP123<>\t"), max_size=30),
)


@FUZZ
@given(_start, st.lists(st.tuples(_name, _value), max_size=12), st.binary(max_size=20), st.booleans())
def test_structured_random_messages(
    start: str, headers: list[tuple[str, str]], body: bytes, cl: bool
) -> None:
    lines = [start] + [f"{name}: {value}" for name, value in headers]
    if cl:
        lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass") + body
    check_datagram(data)


# -- (b) mutations of valid messages ------------------------------------------------------------

_insertions = st.sampled_from(
    [b"\r", b"\n", b"\r\n", b"\x00", b":", b"<", b">", b'"', b";", b",", b" ", b"\\", b"\xff", b"9" * 4400,
     "²".encode(), "\u0663".encode(), b"\r\n ", b"%", b"@", b"["]
)  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(
            st.sampled_from(
                ["flip", "truncate", "insert", "delete", "dup_line", "drop_line", "swap", "value"]
            )
        )
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(_insertions) * draw(st.integers(1, 3))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            if kind == "value":  # a new value for one header (or a new start-line element)
                name, colon, _ = lines[i].partition(b":")
                new = draw(st.one_of(_value.map(str.encode), _interesting))
                lines[i] = name + b": " + new if colon else lines[i].replace(b" ", b" " + new + b" ", 1)
            elif kind == "dup_line":
                lines.insert(i, lines[i])
            elif kind == "drop_line":
                del lines[i]
            else:
                j = draw(st.integers(0, len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_messages(data: bytes) -> None:
    check_datagram(data)


def test_seeds_parse() -> None:
    for seed in SEEDS:
        message = parse_message(seed)
        exercise(message)
        check_round_trip(message)


# -- (c) stream framing ---------------------------------------------------------------------------

_framed_seeds = [seed for seed in SEEDS if b"Content-Length" in seed or b"\r\nl: " in seed]


@FUZZ
@given(
    st.lists(st.tuples(st.sampled_from(_framed_seeds), st.sampled_from([b"", b"\r\n", b"\r\n\r\n"])),
             min_size=1, max_size=5),
    st.lists(st.integers(1, 400), max_size=30),
)  # fmt: skip
def test_framer_random_chunking_matches_datagram_parse(
    messages: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(keepalive + seed for seed, keepalive in messages)
    expected = [comparable(parse_message(seed)) for seed, _ in messages]
    framer = StreamFramer()
    got = []
    pos = 0
    for size in [*cuts, len(stream)]:
        got.extend(framer.feed(stream[pos : pos + size]))
        pos += size
        if pos >= len(stream):
            break
    assert all(isinstance(item, (SipRequest, SipResponse)) for item in got)
    assert [comparable(item) for item in got] == expected  # type: ignore[arg-type]


@FUZZ
@given(
    st.lists(st.one_of(mutated(), st.binary(max_size=40)), max_size=4),
    st.lists(st.integers(1, 200), max_size=20),
)
def test_framer_on_garbage_raises_only_sip_parse_error(parts: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(parts)
    framer = StreamFramer()
    pos = 0
    try:
        for size in [*cuts, len(stream)]:
            for item in framer.feed(stream[pos : pos + size]):
                if isinstance(item, SipParseError):
                    answer = error_response(item)
                    if answer is not None:
                        answer.serialize()
                else:
                    exercise(item)
            pos += size
            if pos >= len(stream):
                break
    except SipParseError:
        pass


# -- (d) round trip ---------------------------------------------------------------------------------


@FUZZ
@given(
    st.sampled_from(SEEDS[:3]),
    st.lists(st.tuples(st.sampled_from(["Subject", "X-Info", "Allow", "Contact", "Supported"]),
                       st.text(st.sampled_from('abc é"<>,;=@:sip.'), min_size=1, max_size=20)), max_size=4),
)  # fmt: skip
def test_round_trip_with_extra_headers(seed: bytes, extra: list[tuple[str, str]]) -> None:
    head, _, body = seed.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    lines[1:1] = [f"{name}: {value}".encode() for name, value in extra]
    check_datagram(b"\r\n".join(lines) + b"\r\n\r\n" + body)


# -- pathological inputs stay linear-time ------------------------------------------------------------


def _timed(data: bytes) -> float:
    start = time.perf_counter()
    check_datagram(data)
    with contextlib.suppress(SipParseError):
        StreamFramer().feed(data)
    return time.perf_counter() - start


def _with_header(name: bytes, value: bytes) -> bytes:
    seed = SEEDS[0]
    return seed.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\n" + name + b": " + value + b"\r\n")


PATHOLOGICAL = [
    _with_header(b"Contact", b"<" * 15000),
    _with_header(b"Contact", b"<" * 7000 + b">" * 7000),
    _with_header(b"Contact", b'"' + b"\\a" * 7000),
    _with_header(b"Contact", b'"' + b'\\"' * 7000 + b" <sip:a@b>"),
    _with_header(b"Contact", b"<sip:a@b>;" + b"x;" * 5000),
    _with_header(b"Allow", b"," * 15000),
    _with_header(b"Via", b"SIP/2.0/UDP " + b" " * 15000 + b"h"),
    _with_header(b"Via", b"SIP" + b" /" * 7000),
    _with_header(b"X", b"a\r\n " * 4000),
    _with_header(b"Route", b"<sip:" + b"a" * 15000 + b"@" * 100 + b">"),
    SEEDS[0].replace(b"CSeq: 314159", b"CSeq: " + b"9" * 15000),
    SEEDS[0].replace(b"Content-Length: ", b"Content-Length: " + b"0" * 15000),
    SEEDS[0].replace(b"sip:bob@", b"sip:" + b"%" * 15000 + b"bob@"),
    SEEDS[0].replace(
        b"sip:bob@biloxi.example.com SIP", b"sip:bob@biloxi.example.com" + b" " * 15000 + b"SIP"
    ),
    b"INVITE " + b"a" * (MAX_HEADER_SECTION - 100) + b"\r\n\r\n",
    b"X" * (MAX_MESSAGE_SIZE - 10),
    b"\r\n" * (MAX_MESSAGE_SIZE // 2),
    b"SIP/2.0 200 " + b"\xff" * 15000 + b"\r\n\r\n",
]


def test_pathological_inputs_are_fast() -> None:
    for data in PATHOLOGICAL:
        assert _timed(data) < 0.25, data[:80]


def test_byte_by_byte_feeding_is_linear() -> None:
    data = SEEDS[0].replace(b"Content-Length: ", b"X-Pad: " + b"p" * 8000 + b"\r\nContent-Length: ")
    framer = StreamFramer()
    start = time.perf_counter()
    items = []
    for i in range(len(data)):
        items.extend(framer.feed(data[i : i + 1]))
    assert len(items) == 1
    assert time.perf_counter() - start < 1.0
