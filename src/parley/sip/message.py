"""Sans-I/O SIP message model, parser and serializer (RFC 3261 §7, §18.3, §20, §25).

Hand-written: the maintained Python SIP stacks either wrap C libraries with their own I/O
(pjsua2) or are threaded and stale (pyVoIP); none offers a plain bytes-in/messages-out parser.
Only :class:`SipParseError` escapes :func:`parse_message`, :class:`StreamFramer` and the
header accessors of a parsed message, whatever the input bytes; every step is linear-time.

Leniency (RFC 4475 decisions, see tests/sip/test_rfc4475.py): extra SP/HTAB in the
Request-Line and spaces just inside ``<>`` are tolerated; header text that is not UTF-8 is
kept byte-exact (surrogateescape) so Call-ID/tags echo back unchanged. Structural errors
(bad framing, missing/duplicate mandatory headers, unquoted non-token display names, URI
headers in the Request-URI or outside ``<>``, a bare ``z9hG4bK`` branch) are rejected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from parley.sip.errors import SipParseError
from parley.sip.uri import (
    TOKEN,
    NameAddr,
    SipUri,
    format_host,
    format_params,
    parse_hostport,
    parse_port,
    plain_params,
    show,
    split_params,
    split_quoted,
)

MAX_MESSAGE_SIZE = 65_535
MAX_HEADER_COUNT = 256
MAX_HEADER_SECTION = 16_384

COMPACT_FORMS = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To",
    "v": "Via", "o": "Event", "r": "Refer-To", "b": "Referred-By", "u": "Allow-Events",
    "x": "Session-Expires", "a": "Accept-Contact", "j": "Reject-Contact", "d": "Request-Disposition",
    "y": "Identity", "n": "Identity-Info",
}  # fmt: skip

_KNOWN = [
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
    "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition",
    "Content-Encoding", "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date",
    "Error-Info", "Event", "Expires", "From", "In-Reply-To", "Max-Forwards", "Min-Expires",
    "MIME-Version", "Organization", "Priority", "Proxy-Authenticate", "Proxy-Authorization",
    "Proxy-Require", "Record-Route", "Refer-To", "Referred-By", "Reply-To", "Require",
    "Retry-After", "Route", "RSeq", "RAck", "Server", "Session-Expires", "Subject",
    "Subscription-State", "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via",
    "Warning", "WWW-Authenticate",
]  # fmt: skip
CANONICAL_NAMES = {name.lower(): name for name in _KNOWN}

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1): split into one value each.
LIST_HEADERS = frozenset(
    h.lower()
    for h in (
        "Via", "Route", "Record-Route", "Contact", "Allow", "Supported", "Require", "Proxy-Require",
        "Unsupported", "Accept", "Accept-Encoding", "Accept-Language", "Content-Encoding",
        "Allow-Events", "In-Reply-To", "Error-Info", "Alert-Info", "Call-Info", "Warning",
    )
)  # fmt: skip

REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 407: "Proxy Authentication Required",
    408: "Request Timeout", 413: "Request Entity Too Large", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending",
    500: "Server Internal Error", 501: "Not Implemented", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported", 603: "Decline",
}  # fmt: skip

_TOKEN = TOKEN
_HEADER_NAME = TOKEN
_LWS = re.compile(r"[ \t]+")
_COLON_LWS = re.compile(r"[ \t]*:[ \t]*")
_HEADER_LINE = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*:[ \t]*(.*)", re.DOTALL)
_FAST_REQUEST_LINE = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+) (sips?:[^\x00-\x20\x7f<>\"]+) SIP/2\.0")
_VERSION = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE | re.ASCII)
_STATUS_LINE = re.compile(
    r"(SIP/[0-9]+\.[0-9]+)[ \t]+([1-6][0-9][0-9])(?:[ \t](.*))?", re.IGNORECASE | re.ASCII | re.DOTALL
)
_TOK = r"[A-Za-z0-9\-.!%*_+`'~]+"
_FAST_VIA = re.compile(
    r"SIP/2\.0/(UDP|TCP|TLS|SCTP|WS|WSS) ([A-Za-z0-9\-.]+)(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-_.!~*'()+%]+(?:=[A-Za-z0-9\-_.!~*'()+%\[\]:]+)?)*)"
)
_VIA_SENT = re.compile(rf"({_TOK})[ \t]*/[ \t]*({_TOK})[ \t]*/[ \t]*({_TOK})[ \t]+(.+)", re.DOTALL)
MAGIC_COOKIE = "z9hG4bK"
# Methods of RFC 3261 and its common extensions: a CSeq mismatch on any other method is 501.
KNOWN_METHODS = frozenset(
    ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
     "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE")
)  # fmt: skip

# lower-case header name (full or compact) -> (canonical name, lookup key)
_NAMES: dict[str, tuple[str, str]] = {name.lower(): (name, name.lower()) for name in _KNOWN}
_NAMES.update({short: (full, full.lower()) for short, full in COMPACT_FORMS.items()})


def canonical_name(name: str) -> str:
    """Expand compact forms and normalise the case of well-known header names."""
    known = _NAMES.get(name.lower())
    return known[0] if known is not None else name


def _key(name: str) -> str:
    """Case-insensitive lookup key of a header name (compact forms expanded)."""
    low = name.lower()
    known = _NAMES.get(low)
    return known[1] if known is not None else low


class Headers:
    """Ordered, case-insensitive multi-map of header values (one entry per list element)."""

    __slots__ = ("_items", "_keys")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        self._keys: list[str] = []
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        low = name.lower()
        canonical, key = _NAMES.get(low) or (name, low)
        self._items.append((canonical, value))
        self._keys.append(key)

    def get(self, name: str, default: str | None = None) -> str | None:
        try:
            return self._items[self._keys.index(_key(name))][1]
        except ValueError:
            return default

    def get_all(self, name: str) -> list[str]:
        key = _key(name)
        return [item[1] for item, k in zip(self._items, self._keys, strict=True) if k == key]

    def count(self, name: str) -> int:
        """How many values ``name`` has (after splitting comma-separated lists)."""
        return self._keys.count(_key(name))

    def set(self, name: str, value: str) -> None:
        """Replace every value of ``name`` with one value, keeping the first position."""
        self.replace(name, [value])

    def replace(self, name: str, values: list[str]) -> None:
        key = _key(name)
        canonical = canonical_name(name)
        at = self._keys.index(key) if key in self._keys else len(self._items)
        kept = [(item, k) for item, k in zip(self._items, self._keys, strict=True) if k != key]
        self._items = [item for item, _ in kept]
        self._keys = [k for _, k in kept]
        for offset, value in enumerate(values):
            self._items.insert(at + offset, (canonical, value))
            self._keys.insert(at + offset, key)

    def remove(self, name: str) -> None:
        self.replace(name, [])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._keys

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._keys == other._keys and [v for _, v in self._items] == [v for _, v in other._items]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def copy(self) -> Headers:
        new = Headers()
        new._items = list(self._items)
        new._keys = list(self._keys)
        return new


def _small_int(text: str, limit: int) -> int | None:
    """``text`` as an int in 0..limit (ASCII digits, leading zeros allowed), else None."""
    if text.isdigit() and text.isascii() and len(text) <= 9:
        value = int(text)
        return value if value <= limit else None
    digits = text.strip(" \t")
    if not digits or not (digits.isascii() and digits.isdigit()):
        return None
    digits = digits.lstrip("0") or "0"
    if len(digits) > len(str(limit)):
        return None
    value = int(digits)
    return value if value <= limit else None


def _check_via_params(params: dict[str, str | None], text: str) -> None:
    if "branch" in params and not params["branch"]:
        raise SipParseError(f"empty Via branch in {show(text)}")
    if "received" in params and not params["received"]:
        raise SipParseError(f"empty Via received in {show(text)}")
    rport = params.get("rport")
    if rport is not None:
        parse_port(rport)
    if "ttl" in params:
        ttl = params["ttl"]
        if ttl is None or _small_int(ttl, 255) is None:
            raise SipParseError(f"bad Via ttl in {show(text)}")


@dataclass(slots=True)
class Via:
    """One Via header value: ``SIP/2.0/UDP host:port;branch=z9hG4bK...;rport``.

    ``protocol`` is the sent-protocol name/version (``SIP/2.0``); other versions parse so a
    505 can still be routed back (RFC 4475 §3.1.2.16).
    """

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @classmethod
    def parse(cls, text: str) -> Via:
        fast = _FAST_VIA.fullmatch(text)
        if fast is not None:
            transport, host, port_text, param_text = fast.groups()
            port = int(port_text) if port_text else None
            if port is None or 0 < port < 65536:
                params = plain_params(param_text)
                _check_via_params(params, text)
                return cls(transport, host.lower(), port, params)
        return cls._parse_general(text)

    @classmethod
    def _parse_general(cls, text: str) -> Via:
        """The full grammar; :meth:`parse` gives the same result faster for common values."""
        sent, params = split_params(text)
        m = _VIA_SENT.fullmatch(sent)
        if not m:
            raise SipParseError(f"bad Via {show(text)}")
        host, port = parse_hostport(_COLON_LWS.sub(":", m.group(4)))
        _check_via_params(params, text)
        protocol = f"{m.group(1).upper()}/{m.group(2)}"
        return cls(m.group(3).upper(), host, port, params, protocol)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The rport value (RFC 3581); None when absent or present without a value."""
        value = self.params.get("rport")
        return int(value) if value is not None and value.isascii() and value.isdigit() else None

    def stamp_received(self, source_host: str, source_port: int) -> None:
        """Record where a request came from (RFC 3261 §18.2.1, RFC 3581 §4).

        ``received`` is added when the sent-by host differs from the source address or
        when ``rport`` was requested; a requested ``rport`` gets the source port.
        """
        if "rport" in self.params:
            self.params["rport"] = str(source_port)
            self.params["received"] = source_host
        elif self.host != source_host.lower():
            self.params["received"] = source_host

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {format_host(self.host)}{port}{format_params(self.params)}"


@dataclass(slots=True)
class SipMessage:
    """Fields shared by requests and responses.

    The header accessors parse on every call and raise only :class:`SipParseError`.
    """

    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self.headers.get("CSeq") or "")

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        value = self.headers.get("Via")
        if value is None:
            raise SipParseError("missing Via")
        return Via.parse(value)

    @property
    def from_(self) -> NameAddr:
        return NameAddr.parse(self.headers.get("From") or "")

    @property
    def to(self) -> NameAddr:
        return NameAddr.parse(self.headers.get("To") or "")

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        return value.split(";")[0].strip().lower() if value else None

    def _header_block(self, start_line: str) -> bytes:
        lines = [start_line]
        lines.extend(f"{name}: {value}" for name, value in self.headers if name != "Content-Length")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + self.body


@dataclass(slots=True)
class SipRequest(SipMessage):
    method: str = ""
    uri: str = ""

    @property
    def request_uri(self) -> SipUri:
        return SipUri.parse(self.uri)

    def serialize(self) -> bytes:
        return self._header_block(f"{self.method} {self.uri} SIP/2.0")

    def __repr__(self) -> str:
        return f"<SipRequest {self.method} {self.uri} call-id={self.call_id!r}>"


@dataclass(slots=True)
class SipResponse(SipMessage):
    status: int = 0
    reason: str = ""

    def serialize(self) -> bytes:
        return self._header_block(f"SIP/2.0 {self.status} {self.reason}")

    def __repr__(self) -> str:
        return f"<SipResponse {self.status} {self.reason} call-id={self.call_id!r}>"


def parse_cseq(text: str) -> tuple[int, str]:
    """``"314159 INVITE"`` -> ``(314159, "INVITE")``; the number must be below 2**31 (§8.1.1.5)."""
    parts = _LWS.split(text.strip(" \t"))
    if len(parts) != 2 or not _TOKEN.fullmatch(parts[1]):
        raise SipParseError(f"bad CSeq {show(text)}")
    number = _small_int(parts[0], 2**31 - 1)
    if number is None:
        raise SipParseError(f"bad or out-of-range CSeq number {show(text)}")
    return number, parts[1]


def _find_blank_line(data: bytes | bytearray, start: int = 0) -> tuple[int, int]:
    """(end of the header section, length of the separator) or (-1, 0): CRLFCRLF or bare LFs."""
    crlf = data.find(b"\r\n\r\n", start)
    lf = data.find(b"\n\n", start, crlf + 2 if crlf >= 0 else len(data))
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf, 2
    return crlf, (4 if crlf >= 0 else 0)


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    end, sep = _find_blank_line(data)
    if end < 0:
        raise SipParseError("no blank line after headers")
    return data[:end], data[end + sep :]


def _lines(text: str) -> list[str]:
    """Split the header section into logical lines, unfolding continuation lines (§7.3.1)."""
    text = text.lstrip("\r\n")
    crlf = text.count("\r\n")
    if crlf == text.count("\n") and crlf == text.count("\r"):
        lines = text.split("\r\n")
    else:
        if text.count("\r") != crlf + text.endswith("\r"):
            raise SipParseError("bare CR in header section")
        text = text.replace("\r\n", "\n").rstrip("\r")
        lines = text.split("\n")
    if "\n " not in text and "\n\t" not in text:
        return lines
    out: list[list[str]] = []
    for index, line in enumerate(lines):
        if line[:1] in (" ", "\t"):
            if index <= 1:
                raise SipParseError("continuation line before the first header")
            current = out[-1]
            current[-1] = current[-1].rstrip(" \t")
            current.append(line.strip(" \t"))
        else:
            out.append([line])
    return [parts[0] if len(parts) == 1 else " ".join(parts) for parts in out]


def _parse_start_line(line: str) -> tuple[str, str, str, SipParseError | None]:
    """Return ('request', method, uri, error) or ('response', status, reason, error).

    ``error`` is a problem found after the method and URI could be located (bad version,
    bad Request-URI): it is raised once the headers are read, so the request can still be
    answered (RFC 4475 §3.1.2.7, §3.1.2.8, §3.1.2.16).
    """
    fast = _FAST_REQUEST_LINE.fullmatch(line)
    if fast is not None:
        method, uri = fast.groups()
        try:
            if SipUri.parse(uri).headers is None:
                return "request", method, uri, None
        except SipParseError:
            pass  # the general path below reports it, after the headers are read
    if line[:4].upper() == "SIP/":
        m = _STATUS_LINE.fullmatch(line)
        if not m:
            raise SipParseError(f"bad status line {show(line)}")
        if m.group(1).upper() != "SIP/2.0":
            raise SipParseError(f"unsupported SIP version in {show(line)}", status=505)
        return "response", m.group(2), m.group(3) or "", None
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        # Extra SP/HTAB between or after the elements is tolerated (RFC 4475 §3.1.2.9, §3.1.2.10).
        parts = _LWS.split(line.strip(" \t"))
    if len(parts) < 3 or not _TOKEN.fullmatch(parts[0]) or not _VERSION.fullmatch(parts[-1]):
        raise SipParseError(f"bad request line {show(line)}")
    method, version, uri = parts[0], parts[-1], " ".join(parts[1:-1])
    error = None
    if version.upper() != "SIP/2.0":
        error = SipParseError(f"unsupported SIP version {show(version)}", status=505)
    elif len(parts) != 3:
        error = SipParseError(f"whitespace inside Request-URI {show(uri)}")
    else:
        try:
            if SipUri.parse(uri).headers is not None:
                # Table 1 of §19.1.1: no headers in a Request-URI (RFC 4475 §3.1.2.11).
                error = SipParseError(f"headers are not allowed in the Request-URI {show(uri)}")
        except SipParseError as exc:
            error = SipParseError(f"bad Request-URI: {exc.reason}")
    return "request", method, uri, error


def _parse_headers(lines: list[str]) -> Headers:
    headers = Headers()
    items = headers._items
    keys = headers._keys
    for line in lines:
        if not line:
            continue
        m = _HEADER_LINE.fullmatch(line)
        if m is None:
            raise SipParseError(f"bad header line {show(line)}")
        name, value = m.groups()
        low = name.lower()
        canonical, key = _NAMES.get(low) or (name, low)
        value = value.rstrip(" \t")
        if key in LIST_HEADERS and "," in value:
            for item in split_quoted(value, ","):
                item = item.strip(" \t")
                if item:
                    items.append((canonical, item))
                    keys.append(key)
        else:
            items.append((canonical, value))
            keys.append(key)
        if len(items) > MAX_HEADER_COUNT:
            raise SipParseError("too many header values", status=413)
    return headers


REQUIRED_REQUEST_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")
SINGLE_HEADERS = ("Call-ID", "CSeq", "From", "To", "Content-Length", "Max-Forwards", "Content-Type")
_REQUIRED_KEYS = [(name, name.lower()) for name in REQUIRED_REQUEST_HEADERS]
_SINGLE_KEYS = [(name, name.lower()) for name in SINGLE_HEADERS]


def _validate(message: SipMessage) -> None:
    headers = message.headers
    keys = headers._keys
    missing = [h for h, key in _REQUIRED_KEYS if key not in keys]
    if missing:
        raise SipParseError(f"missing mandatory header(s): {', '.join(missing)}")
    for name, key in _SINGLE_KEYS:
        if keys.count(key) > 1:
            raise SipParseError(f"more than one {name} header")
    _number, method = message.cseq
    if isinstance(message, SipRequest) and method != message.method:
        # RFC 4475 §3.1.2.17/§3.1.2.18: 400, or 501 when the request method is unknown.
        status = 400 if message.method in KNOWN_METHODS else 501
        raise SipParseError(f"CSeq method {show(method)} does not match {show(message.method)}", status)
    try:
        via = message.top_via
    except SipParseError as exc:
        raise SipParseError(f"bad Via: {exc.reason}") from None
    if isinstance(message, SipRequest) and via.branch == MAGIC_COOKIE:
        # RFC 4475 §3.2.1: the magic cookie without a transaction id; reject statelessly.
        raise SipParseError("Via branch has the magic cookie but no transaction id")
    for name in ("From", "To"):
        try:
            NameAddr.parse(headers.get(name) or "")
        except SipParseError as exc:
            raise SipParseError(f"bad {name}: {exc.reason}") from None
    for value in headers.get_all("Contact"):
        if value != "*":
            try:
                NameAddr.parse(value)
            except SipParseError as exc:
                raise SipParseError(f"bad Contact: {exc.reason}") from None
    max_forwards = headers.get("Max-Forwards")
    if max_forwards is not None and _small_int(max_forwards, 255) is None:
        raise SipParseError(f"bad Max-Forwards {show(max_forwards)}")
    _content_length(headers)


def _length_value(text: str) -> int:
    value = text.strip(" \t")
    if not value or not (value.isascii() and value.isdigit()):
        raise SipParseError(f"bad Content-Length {show(value)}")
    value = value.lstrip("0") or "0"
    if len(value) > 9:
        raise SipParseError("Content-Length too large", status=413)
    return int(value)


def _content_length(headers: Headers) -> int | None:
    value = headers.get("Content-Length")
    return None if value is None else _length_value(value)


def _respondable(message: SipRequest | SipResponse) -> SipRequest | None:
    """The request if a response to it can be sent: it has a Via, even a malformed one.

    With a readable top Via the response is routed by it; with a malformed one (RFC 4475
    §3.1.2.1) it still goes back where the request came from, copying the Via as it was.
    """
    if not isinstance(message, SipRequest) or "Via" not in message.headers:
        return None
    return message


def _build(head: bytes) -> SipRequest | SipResponse:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("utf-8", "surrogateescape")
    lines = _lines(text)
    kind, first, second, error = _parse_start_line(lines[0])
    if len(lines) > MAX_HEADER_COUNT + 1:
        raise SipParseError("too many header lines", status=413)
    headers = _parse_headers(lines[1:])
    message: SipRequest | SipResponse
    if kind == "request":
        message = SipRequest(headers, b"", method=first, uri=second)
    else:
        message = SipResponse(headers, b"", status=int(first), reason=second)
    try:
        if error is not None:
            raise error
        _validate(message)
    except SipParseError as exc:
        exc.request = _respondable(message)
        raise
    return message


def parse_message(data: bytes, max_size: int = MAX_MESSAGE_SIZE) -> SipRequest | SipResponse:
    """Parse one whole datagram into a request or response.

    The body is cut to Content-Length and any octets after it are ignored (RFC 3261 §18.3,
    RFC 4475 §3.1.1.8); a datagram shorter than its Content-Length is rejected. Without
    Content-Length (allowed on UDP) the rest of the datagram is the body.
    """
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")
    head, rest = _split_head(data)
    if len(head) > MAX_HEADER_SECTION:  # a datagram is at most 64 kB: reading it for the 413 is bounded
        try:
            request = _respondable(_build(head))
        except SipParseError:
            request = None
        raise SipParseError("header section too large", status=413, request=request)
    message = _build(head)
    if len(data) > max_size:  # the headers were fine: the request can still get its 413
        raise SipParseError("message too large", status=413, request=_respondable(message))
    length = _content_length(message.headers)
    if length is None:
        message.body = rest
    elif length > len(rest):
        raise SipParseError(
            f"Content-Length {length} exceeds the {len(rest)} body bytes received",
            request=_respondable(message),
        )
    else:
        message.body = rest[:length]
    return message


class StreamFramer:
    """Split a TCP byte stream into SIP messages using Content-Length (RFC 3261 §18.3).

    ``feed`` returns the messages completed by the new bytes, in order; a message that is
    framed correctly but broken inside comes out as a :class:`SipParseError` (answer it
    with :func:`error_response` and carry on). A framing error (a header section over the
    size limit, a missing, bad or conflicting Content-Length) is fatal for the connection:
    it is raised, and raised again by any later ``feed``. CRLFs between messages
    (keep-alives, RFC 5626 §3.5.1) are skipped.
    """

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._scan = 0
        self._pending: tuple[int, int, SipRequest | SipResponse | SipParseError] | None = None
        self._error: SipParseError | None = None

    @property
    def error(self) -> SipParseError | None:
        """The framing error that ended the stream, if one did."""
        return self._error

    def feed(self, data: bytes) -> list[SipRequest | SipResponse | SipParseError]:
        """The messages the new bytes complete. A framing error is raised at once when no message
        came before it in ``data``; otherwise those messages are returned first and the error is
        left in :attr:`error` (and raised by the next ``feed``)."""
        if self._error is not None:
            raise self._error
        self._buffer += data
        out: list[SipRequest | SipResponse | SipParseError] = []
        try:
            self._drain(out)
        except SipParseError as exc:
            self._error = exc
            self._buffer.clear()
            if not out:
                raise
        return out

    def _drain(self, out: list[SipRequest | SipResponse | SipParseError]) -> None:
        buf = self._buffer
        while True:
            if self._pending is None:
                skip = 0
                size = len(buf)
                while skip < size and buf[skip] in (10, 13):
                    skip += 1
                if skip:
                    del buf[:skip]
                    self._scan = 0
                end, sep = _find_blank_line(buf, self._scan)
                if end < 0:
                    if len(buf) > MAX_HEADER_SECTION:
                        raise SipParseError("header section too large", status=413)
                    self._scan = max(0, len(buf) - 3)
                    return
                if end > MAX_HEADER_SECTION:
                    raise SipParseError("header section too large", status=413)
                self._pending = self._frame(bytes(buf[:end]), end + sep, self.max_size)
            body_start, total, item = self._pending
            if len(buf) < total:
                return
            if not isinstance(item, SipParseError):
                item.body = bytes(buf[body_start:total])
            del buf[:total]
            self._pending = None
            self._scan = 0
            out.append(item)

    @staticmethod
    def _frame(
        head: bytes, body_start: int, max_size: int
    ) -> tuple[int, int, SipRequest | SipResponse | SipParseError]:
        """(body start, total length, message or its parse error); the body comes once complete."""
        item: SipRequest | SipResponse | SipParseError
        try:
            item = _build(head)
        except SipParseError as exc:
            item = exc
            length = _framing_length(head, exc.request)
        else:
            found = _content_length(item.headers)
            if found is None:
                raise SipParseError(
                    "Content-Length is mandatory on stream transports", request=_respondable(item)
                )
            length = found
        if body_start + length > max_size:  # answered 413 when its headers could be read (§21.4.11)
            request = item.request if isinstance(item, SipParseError) else _respondable(item)
            raise SipParseError("message too large", status=413, request=request)
        return body_start, body_start + length, item


def _framing_length(head: bytes, request: SipRequest | None) -> int:
    """Content-Length of a header section that failed to parse, for framing only."""
    values: list[bytes] = []
    in_length = False
    for line in head.split(b"\n")[1:]:
        if line[:1] in (b" ", b"\t"):
            if in_length:
                values[-1] += b" " + line
            continue
        name, sep, value = line.partition(b":")
        in_length = bool(sep) and name.strip(b" \t").lower() in (b"content-length", b"l")
        if in_length:
            values.append(value)
    found = {v.strip(b" \t\r") for v in values}
    if not found:
        raise SipParseError("Content-Length is mandatory on stream transports", request=request)
    if len(found) > 1:
        raise SipParseError("conflicting Content-Length values", request=request)
    try:
        return _length_value(found.pop().decode("latin-1"))
    except SipParseError as exc:
        exc.request = request
        raise


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    body: bytes = b"",
    extra: Iterable[tuple[str, str]] = (),
) -> SipResponse:
    """Build a response to ``request`` copying Via, From, To, Call-ID, CSeq (RFC 3261 §8.2.6).

    Record-Route is copied into responses to dialog-creating requests (§12.1.1).
    """
    headers = Headers()
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in request.headers.get_all(name):
            headers.add(name, value)
    if to_tag is not None and status != 100 and request.to.tag is None:
        headers.set("To", f"{request.headers.get('To')};tag={to_tag}")
    if request.method in ("INVITE", "SUBSCRIBE", "REFER") and 100 < status < 300:
        for value in request.headers.get_all("Record-Route"):
            headers.add("Record-Route", value)
    if status == 100 and "Timestamp" in request.headers:
        headers.add("Timestamp", request.headers.get("Timestamp") or "")
    for name, value in extra:
        headers.add(name, value)
    return SipResponse(headers, body, status=status, reason=reason or REASON_PHRASES.get(status, "Unknown"))


def error_response(exc: SipParseError, *, to_tag: str | None = None) -> SipResponse | None:
    """The stateless answer (400, 413, 501, 505...) to a request that failed to parse.

    None when there is nothing to answer (a broken response, or a request without a readable
    top Via). The reason phrase names the problem (RFC 3261 §21.4.1).
    """
    request = exc.request
    if request is None:
        return None
    try:
        if request.to.tag is not None:
            to_tag = None
    except SipParseError:
        to_tag = None
    reason = "".join(ch if ch.isprintable() else "?" for ch in exc.reason[:120])
    return make_response(request, exc.status, reason or None, to_tag=to_tag)
