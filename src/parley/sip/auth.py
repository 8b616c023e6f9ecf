"""HTTP digest authentication for SIP, as a UAC and as a UAS (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).

Hand-written on hashlib: no maintained library builds SIP digest credentials. ``requests``'
``HTTPDigestAuth`` is tied to HTTP responses and sessions, cannot hash a SIP request body for
``auth-int`` and keeps its nonce count per session object, not per nonce.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from parley.sip.errors import SipParseError
from parley.sip.uri import SipUri

# Canonical algorithm names (RFC 8760 §2.3, RFC 7616 §6.1) → hashlib name.
_HASHES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}
MAX_TRACKED_NONCES = 64
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")


class AuthError(ValueError):
    """A challenge we cannot parse or answer."""


def _hash_function(algorithm: str) -> Callable[[bytes], str] | None:
    """The hex digest function of a canonical algorithm name, None when hashlib lacks it."""
    base = algorithm.removesuffix("-sess")
    name = _HASHES.get(base)
    if name is None:
        return None
    try:
        hashlib.new(name)
    except ValueError:  # e.g. SHA-512/256 on an OpenSSL build without it
        return None
    return lambda data: hashlib.new(name, data).hexdigest()


def _canonical_algorithm(value: str) -> str | None:
    for base in _HASHES:
        for name in (base, f"{base}-sess"):
            if value.upper() == name.upper():
                return name
    return None


@dataclass(slots=True)
class Challenge:
    """One ``WWW-Authenticate`` / ``Proxy-Authenticate`` Digest challenge."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: list[str] = field(default_factory=list)
    opaque: str | None = None
    stale: bool = False
    scheme: str = "Digest"


def _skip_ws(value: str, pos: int) -> int:
    while pos < len(value) and value[pos] in " \t\r\n":
        pos += 1
    return pos


def _read_token(value: str, pos: int) -> tuple[str, int]:
    start = pos
    while pos < len(value) and value[pos] in _TOKEN_CHARS:
        pos += 1
    return value[start:pos], pos


def _read_quoted(value: str, pos: int) -> tuple[str, int]:
    """Read a quoted-string starting at the opening quote; backslash escapes the next character."""
    out: list[str] = []
    pos += 1
    while pos < len(value):
        ch = value[pos]
        if ch == "\\" and pos + 1 < len(value):
            out.append(value[pos + 1])
            pos += 2
        elif ch == '"':
            return "".join(out), pos + 1
        else:
            out.append(ch)
            pos += 1
    raise AuthError("unterminated quoted string in challenge")


def _parse_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``scheme name=value, name="quoted, value"`` into the scheme and lower-cased names."""
    pos = _skip_ws(value, 0)
    scheme, pos = _read_token(value, pos)
    if not scheme:
        raise AuthError(f"no auth scheme in {value!r}")
    params: dict[str, str] = {}
    pos = _skip_ws(value, pos)
    while pos < len(value):
        name, pos = _read_token(value, pos)
        pos = _skip_ws(value, pos)
        if not name or pos >= len(value) or value[pos] != "=":
            raise AuthError(f"malformed auth-param in {value!r}")
        pos = _skip_ws(value, pos + 1)
        if pos < len(value) and value[pos] == '"':
            param, pos = _read_quoted(value, pos)
        else:
            param, pos = _read_token(value, pos)
            if not param:
                raise AuthError(f"empty value for {name!r}")
        if name.lower() in params:
            raise AuthError(f"duplicate auth-param {name!r}")
        params[name.lower()] = param
        pos = _skip_ws(value, pos)
        if pos < len(value):
            if value[pos] != ",":
                raise AuthError(f"expected ',' in {value!r}")
            pos = _skip_ws(value, pos + 1)
    return scheme, params


def parse_challenge(value: str) -> Challenge:
    """Parse a ``WWW-Authenticate`` / ``Proxy-Authenticate`` header value (one Digest challenge)."""
    scheme, params = _parse_params(value)
    if scheme.lower() != "digest":
        raise AuthError(f"unsupported auth scheme {scheme!r}")
    if "realm" not in params or "nonce" not in params:
        raise AuthError("Digest challenge without realm or nonce")
    algorithm = _canonical_algorithm(params.get("algorithm", "MD5"))
    if algorithm is None or _hash_function(algorithm) is None:
        raise AuthError(f"unsupported digest algorithm {params.get('algorithm')!r}")
    qop = [q.strip().lower() for q in params["qop"].split(",") if q.strip()] if "qop" in params else []
    return Challenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=algorithm,
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
        scheme="Digest",
    )


def select_challenge(values: Iterable[str]) -> Challenge:
    """The topmost challenge we can answer among several header values (RFC 8760 §2.4)."""
    errors: list[str] = []
    for value in values:
        try:
            return parse_challenge(value)
        except AuthError as exc:
            errors.append(str(exc))
    raise AuthError("no usable Digest challenge: " + ("; ".join(errors) or "none given"))


def _quote(value: str) -> str:
    if any(ch in value for ch in "\r\n\0"):
        raise AuthError(f"control character in digest parameter {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class DigestCredentials:
    """A username/password that answers Digest challenges, counting uses of each nonce."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self._nonce_counts: OrderedDict[tuple[str, str], int] = OrderedDict()

    def __repr__(self) -> str:
        return f"DigestCredentials(username={self.username!r}, password=<hidden>)"

    def _next_nc(self, realm: str, nonce: str) -> int:
        key = (realm, nonce)
        count = self._nonce_counts.pop(key, 0) + 1
        self._nonce_counts[key] = count
        while len(self._nonce_counts) > MAX_TRACKED_NONCES:
            self._nonce_counts.popitem(last=False)
        return count

    def authorize(
        self, challenge: Challenge, method: str, uri: str, body: bytes = b"", cnonce: str | None = None
    ) -> str:
        """The ``Authorization`` / ``Proxy-Authorization`` value answering ``challenge``.

        ``uri`` is the Request-URI and ``body`` the request body (hashed for ``auth-int``).
        qop ``auth`` is preferred over ``auth-int``; without qop the RFC 2069 form is used.
        """
        algorithm = _canonical_algorithm(challenge.algorithm)
        digest = _hash_function(algorithm) if algorithm else None
        if algorithm is None or digest is None:
            raise AuthError(f"unsupported digest algorithm {challenge.algorithm!r}")
        offered = [q.lower() for q in challenge.qop]
        if not offered:
            qop = None
        elif "auth" in offered:
            qop = "auth"
        elif "auth-int" in offered:
            qop = "auth-int"
        else:
            raise AuthError(f"unsupported qop {challenge.qop!r}")
        if qop is None and algorithm.endswith("-sess"):
            raise AuthError(f"{algorithm} needs a qop (it hashes the cnonce)")

        def h(text: str) -> str:
            return digest(text.encode("utf-8"))

        cnonce = cnonce if cnonce is not None else secrets.token_hex(8)
        ha1 = h(f"{self.username}:{challenge.realm}:{self.password}")
        if algorithm.endswith("-sess"):
            ha1 = h(f"{ha1}:{challenge.nonce}:{cnonce}")
        a2 = f"{method}:{uri}" if qop != "auth-int" else f"{method}:{uri}:{digest(body)}"
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(challenge.realm)}",
            f"nonce={_quote(challenge.nonce)}",
            f"uri={_quote(uri)}",
        ]
        if qop is None:
            response = h(f"{ha1}:{challenge.nonce}:{h(a2)}")
            parts += [f"response={_quote(response)}", f"algorithm={algorithm}"]
        else:
            nc = f"{self._next_nc(challenge.realm, challenge.nonce):08x}"
            response = h(f"{ha1}:{challenge.nonce}:{nc}:{cnonce}:{qop}:{h(a2)}")
            parts += [f"response={_quote(response)}", f"algorithm={algorithm}"]
            parts += [f"cnonce={_quote(cnonce)}", f"qop={qop}", f"nc={nc}"]
        if challenge.opaque is not None:
            parts.append(f"opaque={_quote(challenge.opaque)}")
        return f"{challenge.scheme} " + ", ".join(parts)


def authorize(
    credentials: DigestCredentials,
    challenge: Challenge,
    method: str,
    uri: str,
    body: bytes = b"",
    cnonce: str | None = None,
) -> str:
    """Function form of :meth:`DigestCredentials.authorize`."""
    return credentials.authorize(challenge, method, uri, body, cnonce)


# -- the server side: challenging and checking inbound requests (RFC 3261 §22.1, §22.4) -------------
class DigestVerifier:
    """Challenges requests and checks their ``Authorization`` (UAS side, ``qop=auth``), sans-I/O.

    Nonces carry their issue time and an HMAC of it under a per-process secret, so none is stored
    until it is used: one that fails the HMAC is refused, one older than ``nonce_lifetime`` gets a
    fresh challenge with ``stale=true`` (the client retries without asking its user again). Replays
    are refused: each nonce's nonce-count must grow (the last count of ``max_nonces`` nonces is
    kept). Passwords never leave this object; only ``HA1`` values are kept.
    """

    def __init__(
        self,
        users: dict[str, str],
        realm: str,
        *,
        algorithm: str = "MD5",
        nonce_lifetime: float = 300.0,
        max_nonces: int = 10_000,
        secret: bytes | None = None,
    ) -> None:
        canonical = _canonical_algorithm(algorithm)
        digest = _hash_function(canonical) if canonical and not canonical.endswith("-sess") else None
        if canonical is None or digest is None:
            raise ValueError(f"unsupported digest algorithm {algorithm!r}")
        self.realm = realm
        self.algorithm = canonical
        self._digest = digest
        self._ha1 = {user: digest(f"{user}:{realm}:{password}".encode()) for user, password in users.items()}
        self.nonce_lifetime = nonce_lifetime
        self.max_nonces = max_nonces
        self._secret = secret or secrets.token_bytes(32)
        self._counts: OrderedDict[str, int] = OrderedDict()

    def _nonce(self, now: float) -> str:
        stamp = str(int(now * 1000))  # milliseconds of the caller's clock
        mac = hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{stamp}.{mac}"

    def challenge(self, now: float, *, stale: bool = False) -> str:
        """A ``WWW-Authenticate`` value with a fresh nonce."""
        value = f'Digest realm={_quote(self.realm)}, nonce="{self._nonce(now)}", algorithm={self.algorithm}'
        value += ', qop="auth"'
        return value + (", stale=true" if stale else "")

    def verify(self, authorization: str | None, method: str, uri: str, now: float) -> str:
        """``"ok"``; ``"missing"`` (no credentials); ``"stale"`` (a nonce of ours that expired);
        or the reason the credentials are refused (never the caller's data)."""
        if authorization is None:
            return "missing"
        try:
            scheme, params = _parse_params(authorization)
        except AuthError:
            return "malformed credentials"
        if scheme.lower() != "digest":
            return "not digest credentials"
        nonce = params.get("nonce", "")
        stamp, _, mac = nonce.rpartition(".")
        expected = hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        if not mac or not hmac.compare_digest(mac, expected):
            return "unknown nonce"
        if params.get("realm") != self.realm or not _same_target(params.get("uri", ""), uri):
            return "wrong realm or uri"
        if _canonical_algorithm(params.get("algorithm", "MD5")) != self.algorithm:
            return "wrong algorithm"
        ha1 = self._ha1.get(params.get("username", ""))
        if ha1 is None:
            return "unknown user"
        if params.get("qop", "").lower() != "auth" or "nc" not in params or "cnonce" not in params:
            return "qop=auth required"
        try:
            count = int(params["nc"], 16)
        except ValueError:
            return "malformed credentials"
        ha2 = self._digest(f"{method}:{params['uri']}".encode())
        response = self._digest(f"{ha1}:{nonce}:{params['nc']}:{params['cnonce']}:auth:{ha2}".encode())
        if not hmac.compare_digest(response, params.get("response", "")):
            return "wrong password"
        try:
            issued = int(stamp) / 1000
        except ValueError:
            return "unknown nonce"
        if now - issued > self.nonce_lifetime:
            return "stale"
        if count <= self._counts.get(nonce, 0):
            return "replayed nonce count"
        self._counts[nonce] = count
        self._counts.move_to_end(nonce)
        while len(self._counts) > self.max_nonces:
            self._counts.popitem(last=False)
        return "ok"


def _same_target(digest_uri: str, request_uri: str) -> bool:
    """Whether the credentials' ``uri`` names the Request-URI's host and port (RFC 2617 §3.2.2.5 asks for
    the same URI; SIPp, among others, sends ``sip:host:port`` without the user part). The response
    hash covers the ``uri`` the client sent, so accepting this form lets no other request through."""
    if digest_uri == request_uri:
        return True
    try:
        ours, theirs = SipUri.parse(request_uri), SipUri.parse(digest_uri)
    except SipParseError:
        return False
    return (theirs.scheme, theirs.host.lower(), theirs.port or 5060) == (
        ours.scheme,
        ours.host.lower(),
        ours.port or 5060,
    )
