"""SIP URIs and name-addr values (RFC 3261 §19.1, §20.10, §25.1; tel: URIs, RFC 3966).

Hand-written: no maintained Python library parses SIP URIs and name-addr header values
(sipsimple/pjsip bindings are C extensions tied to their own stacks); the grammar is small.
Every parser here is linear-time and raises only :class:`SipParseError`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from parley.sip.errors import SipParseError

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# Never legal unescaped inside any URI (RFC 3986 §2, RFC 3261 §25.1): controls, space, DEL, <>".
_URI_FORBIDDEN = re.compile(r'[\x00-\x20\x7f<>"]')
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HOSTNAME = re.compile(r"[A-Za-z0-9_\-.]+")
_TEL_NUMBER = re.compile(r"\+?[0-9A-Fa-f*#\-.()]*[0-9A-Fa-f*#][0-9A-Fa-f*#\-.()]*")
TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# The common shape ``sip:user@host:port;a=b;c`` without escapes, passwords, IPv6 or headers:
# parsed by one regex; anything else takes the general path (same results, more checks).
_TOK = r"[A-Za-z0-9\-.!%*_+`'~]+"
_PLAIN_PARAMS = r"((?:;[A-Za-z0-9\-_.!~*'()+%]+(?:=[A-Za-z0-9\-_.!~*'()+%]+)?)*)"
# Common name-addr shapes: '"Display" <uri>;p=v', 'Display <uri>', '<uri>', 'sip:a@b;tag=x'.
_FAST_ANGLE = re.compile(rf'(?:"([^"\\]*)" ?|({_TOK}(?: {_TOK})*) ?)?<([^<>"\s]+)>{_PLAIN_PARAMS}')
_FAST_ADDR_SPEC = re.compile(rf'([^<>"\s;?,]+){_PLAIN_PARAMS}')
_FAST_SIP = re.compile(
    r"(sips?):(?:([A-Za-z0-9\-_.!~*'()&=+$,]+)@)?([A-Za-z0-9\-.]+)(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-_.!~*'()+]+(?:=[A-Za-z0-9\-_.!~*'()+\[\]/:&$]*)?)*)",
    re.IGNORECASE | re.ASCII,
)
_SPECIALS: dict[str, re.Pattern[str]] = {}


def show(text: str, limit: int = 60) -> str:
    """A short printable excerpt of untrusted ``text`` for error reasons."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def split_params(text: str) -> tuple[str, dict[str, str | None]]:
    """Split ``value;a=1;b`` into ``("value", {"a": "1", "b": None})``, honouring quotes.

    Names are lower-cased; whitespace around ``;`` and ``=`` is dropped (RFC 3261 SEMI/EQUAL).
    """
    parts = split_quoted(text, ";")
    params: dict[str, str | None] = {}
    for raw in parts[1:]:
        key, eq, value = raw.partition("=")
        key = key.strip()
        if not key:
            raise SipParseError(f"empty parameter in {show(text)}")
        params[key.lower()] = value.strip() if eq else None
    return parts[0].strip(), params


def plain_params(text: str) -> dict[str, str | None]:
    """Parameters ``;a=1;b`` already known to hold no quotes or whitespace."""
    params: dict[str, str | None] = {}
    if text:
        for raw in text[1:].split(";"):
            key, eq, value = raw.partition("=")
            params[key.lower()] = value if eq else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    """Render a parameter dict back to ``;a=1;b`` form."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def split_quoted(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes and angle brackets.

    Raises :class:`SipParseError` for an unterminated quoted string or unbalanced ``<>``.
    Only the special characters are visited in Python, so long plain runs stay cheap.
    """
    if '"' not in text and "<" not in text and ">" not in text:
        return text.split(sep)
    pattern = _SPECIALS.get(sep)
    if pattern is None:
        pattern = _SPECIALS.setdefault(sep, re.compile('[\\\\"<>' + re.escape(sep) + "]"))
    parts: list[str] = []
    depth = 0
    in_quotes = False
    escaped_at = -1
    start = 0
    for match in pattern.finditer(text):
        i = match.start()
        if i == escaped_at:
            continue
        ch = text[i]
        if in_quotes:
            if ch == "\\":
                escaped_at = i + 1
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            if depth == 0:
                raise SipParseError(f"unbalanced angle brackets in {show(text)}")
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if in_quotes:
        raise SipParseError(f"unbalanced quotes in {show(text)}")
    if depth != 0:
        raise SipParseError(f"unbalanced angle brackets in {show(text)}")
    parts.append(text[start:])
    return parts


@dataclass(slots=True)
class SipUri:
    """A ``sip:``/``sips:``/``tel:`` URI (other schemes keep their opaque text in ``host``).

    For ``tel:`` the number is in ``user`` and ``host`` is empty. Escapes (``%41``) are kept
    as received; parameter names and the host are lower-cased.
    """

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        fast = _FAST_SIP.fullmatch(text)
        if fast is not None:
            scheme, user, host, port_text, param_text = fast.groups()
            port = int(port_text) if port_text else None
            if port is None or 0 < port < 65536:
                return cls(scheme.lower(), user, None, host.lower(), port, plain_params(param_text), None)
        return cls._parse_general(text)

    @classmethod
    def _parse_general(cls, text: str) -> SipUri:
        """The full grammar; :meth:`parse` gives the same result faster for common URIs."""
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        if not colon:
            raise SipParseError(f"URI without scheme: {show(text)}")
        if not _SCHEME.fullmatch(scheme):
            raise SipParseError(f"bad URI scheme in {show(text)}")
        if _URI_FORBIDDEN.search(text):
            raise SipParseError(f"whitespace or forbidden character inside URI {show(text)}")
        scheme = scheme.lower()
        if scheme == "tel":
            number, params = split_params(rest)
            if not _TEL_NUMBER.fullmatch(number):
                raise SipParseError(f"bad tel: number in {show(text)}")
            return cls(scheme, number, None, "", None, params, None)
        if scheme not in ("sip", "sips"):
            if not rest:
                raise SipParseError(f"empty URI {show(text)}")
            return cls(scheme=scheme, host=rest)
        if _BAD_ESCAPE.search(rest):
            raise SipParseError(f"bad %-escape in URI {show(text)}")
        # '@' cannot appear unescaped in host, params or headers, so the last one ends userinfo
        # (the user part itself may hold ';', '?' and ',': RFC 4475 §3.1.1.2 and §3.1.1.9).
        user = password = None
        at = rest.rfind("@")
        if at >= 0:
            user, colon, pw = rest[:at].partition(":")
            password = pw if colon else None
            if not user:
                raise SipParseError(f"empty user part in {show(text)}")
            rest = rest[at + 1 :]
        rest, qmark, headers = rest.partition("?")
        hostport, params = split_params(rest)
        host, port = parse_hostport(hostport)
        return cls(scheme, user, password, host, port, params, headers if qmark else None)

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user or ''}{format_params(self.params)}"
        if self.scheme not in ("sip", "sips"):
            return f"{self.scheme}:{self.host}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(format_host(self.host))
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(format_params(self.params))
        if self.headers is not None:
            out.append("?" + self.headers)
        return "".join(out)


def parse_port(text: str) -> int:
    """A port number 1-65535 in ASCII digits."""
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or not 0 < int(text) < 65536:
        raise SipParseError(f"bad port {show(text)}")
    return int(text)


def parse_hostport(text: str) -> tuple[str, int | None]:
    """Parse ``host[:port]`` where host may be an IPv6 reference ``[::1]`` (kept unbracketed)."""
    text = text.strip()
    port_text: str | None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference {show(text)}")
        host, rest = text[1:end], text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else None
        if rest and port_text is None:
            raise SipParseError(f"junk after IPv6 reference {show(text)}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise SipParseError(f"bad IPv6 reference {show(text)}") from None
    else:
        host, sep, port_text = text.partition(":")
        if not sep:
            port_text = None
        if not _HOSTNAME.fullmatch(host):
            raise SipParseError(f"bad host in {show(text)}")
    port = parse_port(port_text) if port_text is not None else None
    return host.lower(), port


def format_host(host: str) -> str:
    """Bracket IPv6 addresses for use in URIs and Via."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(slots=True)
class NameAddr:
    """A ``"Display" <uri>;params`` value (From, To, Contact, Route, Record-Route, Refer-To).

    ``display`` is the raw display name (quoted-string contents with escapes kept, or the
    unquoted tokens). In the addr-spec form (no ``<>``) parameters after the URI belong to
    the header, not the URI (RFC 3261 §20.10; RFC 4475 §3.3.12).
    """

    uri: SipUri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    raw_uri: str | None = None

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip()
        fast = _FAST_ANGLE.fullmatch(text)
        if fast is not None:
            quoted, tokens, raw_uri, param_text = fast.groups()
            display = quoted if quoted is not None else tokens
            return cls(SipUri.parse(raw_uri), display, plain_params(param_text), raw_uri)
        fast = _FAST_ADDR_SPEC.fullmatch(text)
        if fast is not None:
            uri_text, param_text = fast.groups()
            return cls(SipUri.parse(uri_text), None, plain_params(param_text), uri_text)
        return cls._parse_general(text)

    @classmethod
    def _parse_general(cls, text: str) -> NameAddr:
        """The full grammar; :meth:`parse` gives the same result faster for common values."""
        text = text.strip()
        if text.startswith('"'):
            end = _closing_quote(text)
            rest = text[end + 1 :].lstrip()
            if not rest.startswith("<"):
                raise SipParseError(f"expected <uri> after display name in {show(text)}")
            return cls._angle(rest, text[1:end], text)
        lt = text.find("<")
        if lt >= 0 and '"' not in text[:lt]:
            display = text[:lt].strip()
            # An unquoted display name is *(token LWS) (RFC 3261 §25.1; RFC 4475 §3.1.2.15).
            if display and not all(TOKEN.fullmatch(word) for word in display.split()):
                raise SipParseError(f"display name must be quoted in {show(text)}")
            return cls._angle(text[lt:], display or None, text)
        uri_text, params = split_params(text)
        # A URI holding ',', '?' or ';' must be inside <> (§20; RFC 4475 §3.1.2.13).
        if "?" in uri_text or "," in uri_text:
            raise SipParseError(f"URI with headers or ',' must be enclosed in <> in {show(text)}")
        return cls(SipUri.parse(uri_text), None, params, uri_text)

    @classmethod
    def _angle(cls, text: str, display: str | None, whole: str) -> NameAddr:
        gt = text.find(">")
        if gt < 0:
            raise SipParseError(f"unbalanced <> in {show(whole)}")
        # Spaces just inside <> are tolerated (RFC 4475 §3.1.2.14 allows being liberal).
        raw_uri = text[1:gt].strip()
        tail = text[gt + 1 :].strip()
        if tail and not tail.startswith(";"):
            raise SipParseError(f"junk after <uri> in {show(whole)}")
        _, params = split_params("x" + tail)
        return cls(SipUri.parse(raw_uri), display, params, raw_uri)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        display = f'"{self.display}" ' if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _closing_quote(text: str) -> int:
    """Index of the quote closing the quoted-string that starts ``text`` (escapes honoured)."""
    match = _QUOTED.match(text)
    if match is None:
        raise SipParseError(f"unterminated quoted string in {show(text)}")
    return match.end() - 1
