"""Sans-I/O SIP message model, parser and serializer (RFC 3261 §7, §20, §25).

Hand-written: the maintained Python SIP stacks either wrap C libraries with their own I/O
(pjsua2) or are threaded and stale (pyVoIP); none offers a plain bytes-in/messages-out parser.
Only :class:`SipParseError` escapes :func:`parse_message` and :class:`StreamFramer`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from parley.sip.errors import SipParseError
from parley.sip.uri import NameAddr, SipUri, format_host, format_params, parse_hostport, split_params, split_quoted

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

_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_HEADER_NAME = _TOKEN


def canonical_name(name: str) -> str:
    """Expand compact forms and normalise the case of well-known header names."""
    low = name.lower()
    if low in COMPACT_FORMS:
        return COMPACT_FORMS[low]
    return CANONICAL_NAMES.get(low, name)


class Headers:
    """Ordered, case-insensitive multi-map of header values (one entry per list element)."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def get(self, name: str, default: str | None = None) -> str | None:
        low = canonical_name(name).lower()
        for key, value in self._items:
            if key.lower() == low:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        low = canonical_name(name).lower()
        return [value for key, value in self._items if key.lower() == low]

    def set(self, name: str, value: str) -> None:
        """Replace every value of ``name`` with one value, keeping the first position."""
        self.replace(name, [value])

    def replace(self, name: str, values: list[str]) -> None:
        canonical = canonical_name(name)
        low = canonical.lower()
        positions = [i for i, (key, _) in enumerate(self._items) if key.lower() == low]
        at = positions[0] if positions else len(self._items)
        self._items = [item for item in self._items if item[0].lower() != low]
        for offset, value in enumerate(values):
            self._items.insert(at + offset, (canonical, value))

    def remove(self, name: str) -> None:
        self.replace(name, [])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> Headers:
        new = Headers()
        new._items = list(self._items)
        return new


@dataclass(slots=True)
class Via:
    """One Via header value: ``SIP/2.0/UDP host:port;branch=z9hG4bK...;rport``."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        sent, params = split_params(text)
        m = re.match(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9]+)\s+(\S.*)$", sent, re.IGNORECASE)
        if not m:
            raise SipParseError(f"bad Via {text!r}")
        host, port = parse_hostport(m.group(2).replace(" ", ""))
        return cls(m.group(1).upper(), host, port, params)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {format_host(self.host)}{port}{format_params(self.params)}"


@dataclass(slots=True)
class SipMessage:
    """Fields shared by requests and responses."""

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
    parts = text.split()
    if len(parts) != 2 or not parts[0].isdigit() or not _TOKEN.match(parts[1]):
        raise SipParseError(f"bad CSeq {text!r}")
    number = int(parts[0])
    if number >= 2**31:
        raise SipParseError(f"CSeq number out of range {text!r}")
    return number, parts[1]


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    for sep in (b"\r\n\r\n", b"\n\n"):
        idx = data.find(sep)
        if idx >= 0:
            return data[:idx], data[idx + len(sep) :]
    raise SipParseError("no blank line after headers")


def _unfold(head: str) -> list[str]:
    lines: list[str] = []
    for line in re.split(r"\r?\n", head):
        if line[:1] in (" ", "\t") and lines:
            lines[-1] = lines[-1].rstrip() + " " + line.strip()
        else:
            lines.append(line)
    return lines


def _parse_start_line(line: str) -> tuple[str, str, str]:
    """Return ('request', method, uri) or ('response', status, reason)."""
    if line.startswith("SIP/"):
        m = re.match(r"^SIP/(\d+\.\d+) (\d{3}) ?(.*)$", line)
        if not m:
            raise SipParseError(f"bad status line {line!r}")
        if m.group(1) != "2.0":
            raise SipParseError(f"unsupported SIP version in {line!r}", status=505)
        return "response", m.group(2), m.group(3)
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(f"bad request line {line!r}")
    method, uri, version = parts
    if not _TOKEN.match(method):
        raise SipParseError(f"bad method in {line!r}")
    if not re.match(r"^SIP/\d+\.\d+$", version, re.IGNORECASE):
        raise SipParseError(f"bad SIP version in {line!r}")
    if version.upper() != "SIP/2.0":
        raise SipParseError(f"unsupported SIP version {version!r}", status=505)
    SipUri.parse(uri)
    return "request", method, uri


def _parse_headers(lines: list[str]) -> Headers:
    if len(lines) > MAX_HEADER_COUNT:
        raise SipParseError("too many headers", status=413)
    headers = Headers()
    for line in lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        name = name.rstrip(" \t")
        if not sep or not _HEADER_NAME.match(name):
            raise SipParseError(f"bad header line {line[:80]!r}")
        value = value.strip(" \t")
        if name.lower() in LIST_HEADERS or name.lower() in ("v", "m", "k", "u", "e"):
            for item in split_quoted(value, ","):
                if item.strip():
                    headers.add(name, item.strip())
        else:
            headers.add(name, value)
    return headers


REQUIRED_REQUEST_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")


def _validate(message: SipMessage) -> None:
    missing = [h for h in REQUIRED_REQUEST_HEADERS if h not in message.headers]
    if missing:
        raise SipParseError(f"missing mandatory header(s): {', '.join(missing)}")
    for name in ("Call-ID", "CSeq", "From", "To", "Content-Length", "Max-Forwards", "Content-Type"):
        if len(message.headers.get_all(name)) > 1:
            raise SipParseError(f"more than one {name} header")
    number, method = message.cseq
    if isinstance(message, SipRequest) and method != message.method:
        raise SipParseError(f"CSeq method {method!r} does not match request method {message.method!r}")
    message.top_via  # noqa: B018 - parses and validates the topmost Via
    message.from_  # noqa: B018
    message.to  # noqa: B018
    max_forwards = message.headers.get("Max-Forwards")
    if max_forwards is not None and not (max_forwards.isdigit() and int(max_forwards) < 256):
        raise SipParseError(f"bad Max-Forwards {max_forwards!r}")


def _content_length(headers: Headers) -> int | None:
    value = headers.get("Content-Length")
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 9:
        raise SipParseError(f"bad Content-Length {value!r}")
    return int(value)


def _build(head: bytes, body: bytes) -> SipRequest | SipResponse:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("utf-8", "surrogateescape")
    lines = _unfold(text.lstrip("\r\n"))
    kind, first, second = _parse_start_line(lines[0])
    headers = _parse_headers(lines[1:])
    message: SipRequest | SipResponse
    if kind == "request":
        message = SipRequest(headers, body, method=first, uri=second)
    else:
        message = SipResponse(headers, body, status=int(first), reason=second)
    _validate(message)
    return message


def parse_message(data: bytes) -> SipRequest | SipResponse:
    """Parse one whole datagram into a request or response.

    The body is cut to Content-Length; a datagram shorter than its Content-Length is
    rejected (RFC 3261 §18.3). Without Content-Length (allowed on UDP) the rest is the body.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise SipParseError("message too large", status=413)
    head, rest = _split_head(data)
    headers_probe = _build(head, b"")
    length = _content_length(headers_probe.headers)
    if length is None:
        body = rest
    elif length > len(rest):
        raise SipParseError(f"Content-Length {length} exceeds the {len(rest)} body bytes received")
    else:
        body = rest[:length]
    headers_probe.body = body
    return headers_probe


class StreamFramer:
    """Split a TCP byte stream into SIP messages using Content-Length (RFC 3261 §18.3).

    ``feed`` returns the messages completed by the new bytes. A framing error (a header
    section over the size limit, a missing or bad Content-Length) is fatal for the
    connection: it is raised and the framer must not be fed again.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[SipRequest | SipResponse | SipParseError]:
        self._buffer += data
        out: list[SipRequest | SipResponse | SipParseError] = []
        while True:
            # Keep-alive CRLFs between messages (RFC 5626 §3.5.1) are skipped.
            while self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEADER_SECTION:
                    raise SipParseError("header section too large", status=413)
                return out
            head = bytes(self._buffer[:end])
            length = self._framing_length(head)
            total = end + 4 + length
            if total > MAX_MESSAGE_SIZE:
                raise SipParseError("message too large", status=413)
            if len(self._buffer) < total:
                return out
            body = bytes(self._buffer[end + 4 : total])
            del self._buffer[:total]
            try:
                message = _build(head, b"")
                message.body = body
                out.append(message)
            except SipParseError as exc:
                out.append(exc)

    @staticmethod
    def _framing_length(head: bytes) -> int:
        match = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\S*)[ \t]*$", head)
        if match is None:
            raise SipParseError("Content-Length is mandatory on stream transports")
        value = match.group(1)
        if not value.isdigit() or len(value) > 9:
            raise SipParseError(f"bad Content-Length {value!r}")
        return int(value)


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
    if to_tag is not None and status != 100:
        if request.to.tag is None:
            headers.set("To", f"{request.headers.get('To')};tag={to_tag}")
    if request.method in ("INVITE", "SUBSCRIBE", "REFER") and 100 < status < 300:
        for value in request.headers.get_all("Record-Route"):
            headers.add("Record-Route", value)
    if status == 100 and "Timestamp" in request.headers:
        headers.add("Timestamp", request.headers.get("Timestamp") or "")
    for name, value in extra:
        headers.add(name, value)
    return SipResponse(headers, body, status=status, reason=reason or REASON_PHRASES.get(status, "Unknown"))
