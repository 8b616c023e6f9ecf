"""SIP URIs and name-addr values (RFC 3261 §19.1, §20.10, §25.1).

Hand-written: no maintained Python library parses SIP URIs and name-addr header values
(sipsimple/pjsip bindings are C extensions tied to their own stacks); the grammar is small.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parley.sip.errors import SipParseError


def split_params(text: str) -> tuple[str, dict[str, str | None]]:
    """Split ``value;a=1;b`` into ``("value", {"a": "1", "b": None})``, honouring quotes."""
    parts = split_quoted(text, ";")
    params: dict[str, str | None] = {}
    for raw in parts[1:]:
        raw = raw.strip()
        if not raw:
            raise SipParseError(f"empty parameter in {text!r}")
        if "=" in raw:
            key, value = raw.split("=", 1)
            params[key.strip().lower()] = value.strip()
        else:
            params[raw.lower()] = None
    return parts[0].strip(), params


def format_params(params: dict[str, str | None]) -> str:
    """Render a parameter dict back to ``;a=1;b`` form."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def split_quoted(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes and angle brackets."""
    parts: list[str] = []
    depth = 0
    in_quotes = False
    escaped = False
    start = 0
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif in_quotes:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if in_quotes:
        raise SipParseError(f"unbalanced quotes in {text!r}")
    if depth != 0:
        raise SipParseError(f"unbalanced angle brackets in {text!r}")
    parts.append(text[start:])
    return parts


@dataclass(slots=True)
class SipUri:
    """A ``sip:``/``sips:``/``tel:`` URI (other schemes keep their opaque text in ``host``)."""

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
        if ":" not in text:
            raise SipParseError(f"URI without scheme: {text!r}")
        scheme, rest = text.split(":", 1)
        scheme = scheme.lower()
        if not scheme or not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum():
            raise SipParseError(f"bad URI scheme in {text!r}")
        if any(ch in text for ch in " \t\r\n"):
            raise SipParseError(f"whitespace inside URI {text!r}")
        if scheme not in ("sip", "sips"):
            return cls(scheme=scheme, host=rest)
        headers = None
        if "?" in rest:
            rest, headers = rest.split("?", 1)
        userinfo = None
        if "@" in rest:
            userinfo, rest = rest.rsplit("@", 1)
        hostport, params = split_params(rest)
        user = password = None
        if userinfo is not None:
            user, _, pw = userinfo.partition(":")
            password = pw if _ else None
        host, port = parse_hostport(hostport)
        return cls(scheme, user, password, host, port, params, headers)

    def __str__(self) -> str:
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


def parse_hostport(text: str) -> tuple[str, int | None]:
    """Parse ``host[:port]`` where host may be an IPv6 reference ``[::1]``."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else None
        if rest and port_text is None:
            raise SipParseError(f"junk after IPv6 reference {text!r}")
    else:
        host, sep, port_text = text.partition(":")
        if not sep:
            port_text = None
    if not host:
        raise SipParseError(f"empty host in {text!r}")
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise SipParseError(f"bad port in {text!r}")
        port = int(port_text)
    return host.lower() if not host.startswith("[") else host, port


def format_host(host: str) -> str:
    """Bracket IPv6 addresses for use in URIs and Via."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(slots=True)
class NameAddr:
    """A ``"Display" <uri>;params`` value (From, To, Contact, Route, Record-Route, Refer-To)."""

    uri: SipUri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    raw_uri: str | None = None

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip()
        display = None
        if text.startswith('"') or "<" in text:
            if text.startswith('"'):
                end = _closing_quote(text)
                display = text[1:end]
                text = text[end + 1 :].lstrip()
                if not text.startswith("<"):
                    raise SipParseError(f"expected <uri> after display name in {text!r}")
            lt = text.find("<")
            gt = text.find(">", lt)
            if lt < 0 or gt < 0:
                raise SipParseError(f"unbalanced <> in {text!r}")
            if display is None and text[:lt].strip():
                display = text[:lt].strip()
            raw_uri = text[lt + 1 : gt]
            _, params = split_params("x" + text[gt + 1 :])
            return cls(SipUri.parse(raw_uri), display, params, raw_uri)
        # addr-spec form: parameters after the URI belong to the header, not the URI.
        uri_text, params = split_params(text)
        return cls(SipUri.parse(uri_text), None, params, uri_text)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        display = f'"{self.display}" ' if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


def _closing_quote(text: str) -> int:
    escaped = False
    for i in range(1, len(text)):
        ch = text[i]
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            return i
    raise SipParseError(f"unterminated quoted string in {text!r}")
