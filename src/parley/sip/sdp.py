"""SDP (RFC 4566) offer/answer (RFC 3264) for G.711 audio calls.

The line grammar is `sdp-transform` (``sdp_transform.parse`` / ``sdp_transform.write``); this module
adds what it lacks: validation of the parsed dict (the library silently skips lines it cannot match
and turns numeric-looking fields into ``int``/``float``), codec and direction negotiation, the
RFC 2543 ``c=0.0.0.0`` hold, m-line layout preservation and origin versioning. Only
:class:`SdpError` escapes :func:`parse_sdp`.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sdp_transform

MAX_SDP_SIZE = 65_535
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
SUPPORTED_CODECS = {"PCMU": 0, "PCMA": 8}
CLOCK_RATE = 8000
TELEPHONE_EVENT = "telephone-event"
TELEPHONE_EVENTS = "0-16"
AUDIO_PROTOCOL = "RTP/AVP"
SRTP_PROTOCOL = "RTP/SAVP"
SRTP_SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")  # ours, preferred first
SRTP_KEY_LENGTH = 30  # master key (16) + salt (14) of both suites
SRTP_POLICIES = ("off", "optional", "required")

# Static payload types (RFC 3551 §6) an offer may list without an rtpmap line.
STATIC_PAYLOADS: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1), 3: ("GSM", 8000, 1), 4: ("G723", 8000, 1), 5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1), 7: ("LPC", 8000, 1), 8: ("PCMA", 8000, 1), 9: ("G722", 8000, 1),
    10: ("L16", 44100, 2), 11: ("L16", 44100, 1), 12: ("QCELP", 8000, 1), 13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1), 15: ("G728", 8000, 1), 16: ("DVI4", 11025, 1), 17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
}  # fmt: skip

_HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?$")
_TOKEN = re.compile(r"^[!-~]+$")


class SdpError(ValueError):
    """The session description is malformed or lacks an audio stream."""


class NoCommonCodec(SdpError):
    """No offered audio format (or transport) is one we support: a UAS answers 488."""


@dataclass(frozen=True, slots=True)
class Codec:
    """One payload format of an m-line: ``a=rtpmap:<payload_type> <name>/<clock_rate>[/<channels>]``."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int = 1


@dataclass(frozen=True, slots=True)
class MediaLine:
    """The shape of one m-line, kept so an answer or re-offer has the same m-lines (RFC 3264 §6, §8)."""

    media: str
    port: int
    protocol: str
    formats: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Crypto:
    """One ``a=crypto:<tag> <suite> inline:<key||salt>`` of an m-line (RFC 4568 SDES)."""

    tag: int
    suite: str
    key: bytes

    def __repr__(self) -> str:  # keys never end up in a log
        return f"Crypto(tag={self.tag}, suite={self.suite!r}, key=<hidden>)"


@dataclass(frozen=True, slots=True)
class SrtpKeys:
    """What SDES negotiated for the audio stream: the suite and both sides' master key + salt."""

    suite: str
    local_key: bytes
    remote_key: bytes

    def __repr__(self) -> str:
        return f"SrtpKeys(suite={self.suite!r}, keys=<hidden>)"


def _cryptos(media: dict[str, Any]) -> list[Crypto]:
    """The usable ``a=crypto`` lines: a known suite and one inline key of the right length."""
    out = []
    for entry in media.get("crypto") or []:
        tag, suite, config = entry.get("id"), entry.get("suite"), entry.get("config")
        if not isinstance(tag, int) or not isinstance(suite, str) or not isinstance(config, str):
            continue
        if suite not in SRTP_SUITES or not config.startswith("inline:"):
            continue
        try:
            key = base64.b64decode(config[len("inline:") :].split("|", 1)[0], validate=True)
        except ValueError:
            continue
        if len(key) == SRTP_KEY_LENGTH:
            out.append(Crypto(tag, suite, key))
    return out


@dataclass(slots=True)
class MediaOffer:
    """What the remote offered or answered for its first audio stream.

    ``direction`` is the remote's effective direction: ``inactive`` for a disabled (port 0) stream,
    and "recv" is dropped when the connection address is unspecified (RFC 2543 hold, ``c=0.0.0.0``),
    so nothing is ever sent there. ``codecs`` skips dynamic payload types without an rtpmap.
    """

    address: str
    port: int
    codecs: list[Codec]
    telephone_event_pt: int | None
    direction: str
    ptime: int | None
    session_id: str
    session_version: int
    protocol: str = AUDIO_PROTOCOL
    address_hold: bool = False
    media_lines: list[MediaLine] = field(default_factory=list)
    stream_index: int = 0
    cryptos: list[Crypto] = field(default_factory=list)

    @property
    def secure(self) -> bool:
        """An SRTP stream (RTP/SAVP): it must carry a usable ``a=crypto``."""
        return self.protocol.upper() == SRTP_PROTOCOL

    @property
    def rejected(self) -> bool:
        """Port 0: the stream is disabled (in an offer) or rejected (in an answer)."""
        return self.port == 0


@dataclass(slots=True)
class NegotiatedMedia:
    """The outcome of offer/answer for our audio stream; ``send``/``receive`` are from our side."""

    codec: str
    payload_type: int
    telephone_event_pt: int | None
    remote_address: str
    remote_port: int
    send: bool
    receive: bool
    ptime: int = 20
    srtp: SrtpKeys | None = None


def _flags(direction: str) -> tuple[bool, bool]:
    """(sends, receives) for an SDP direction attribute, from the point of view of its author."""
    return direction in ("sendrecv", "sendonly"), direction in ("sendrecv", "recvonly")


def _direction(send: bool, receive: bool) -> str:
    if send:
        return "sendrecv" if receive else "sendonly"
    return "recvonly" if receive else "inactive"


def _is_unspecified(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def _valid_address(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        # An FQDN is allowed by RFC 4566; a dotted string of digits that is no IPv4 address is not.
        return bool(_HOSTNAME.match(address)) and any(ch.isalpha() for ch in address)
    return True


def _ip_version(address: str) -> int:
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return 4


def _formats(value: object) -> tuple[str, ...]:
    """The m-line format list; sdp-transform turns a single numeric format into an int."""
    if isinstance(value, bool):
        return ()
    if isinstance(value, int):
        return (str(value),)
    if isinstance(value, str):
        return tuple(value.split())
    return ()


def _media_line(media: dict[str, Any]) -> MediaLine:
    kind, port, protocol = media.get("type"), media.get("port"), media.get("protocol")
    if not isinstance(kind, str) or not kind or not isinstance(protocol, str) or not protocol:
        raise SdpError("malformed m= line")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise SdpError(f"bad m= port {port!r}")
    formats = _formats(media.get("payloads"))
    if not formats:
        raise SdpError("m= line without formats")
    return MediaLine(kind, port, protocol, formats)


def _rtpmaps(media: dict[str, Any]) -> dict[int, tuple[str, int, int]]:
    """Payload type → (name, clock rate, channels); lines the library could not fully match are ignored."""
    out: dict[int, tuple[str, int, int]] = {}
    for entry in media.get("rtp") or []:
        pt, name, rate, channels = (entry.get(k) for k in ("payload", "codec", "rate", "encoding"))
        if not isinstance(pt, int) or not isinstance(name, str) or not isinstance(rate, int):
            continue
        if channels is None:
            channels = 1
        if isinstance(channels, int) and channels > 0 and rate > 0:
            out.setdefault(pt, (name, rate, channels))
    return out


def _connection(media: dict[str, Any], session: dict[str, Any]) -> str | None:
    conn = media.get("connection") or session.get("connection")
    if not isinstance(conn, dict) or conn.get("ip") is None:
        return None
    return str(conn["ip"]).split("/", 1)[0]


def _ptime(value: object) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1000:
        return max(1, round(value))
    return None


def parse_sdp(body: bytes) -> MediaOffer:
    """Parse an offer or answer and describe its first audio stream (an RTP/AVP one if there is one)."""
    if len(body) > MAX_SDP_SIZE:
        raise SdpError("session description too large")
    text = body.decode("utf-8", "replace")
    try:
        session = sdp_transform.parse(text)
    except Exception as exc:  # the grammar library is not hardened; nothing but SdpError may escape
        raise SdpError(f"unparsable session description: {exc}") from exc
    if session.get("version") != 0:
        raise SdpError("missing or unsupported v= line")
    origin = session.get("origin")
    if not isinstance(origin, dict):
        raise SdpError("missing or malformed o= line")
    session_id, session_version = origin.get("sessionId"), origin.get("sessionVersion")
    if not isinstance(session_id, int) or not isinstance(session_version, int):
        raise SdpError("o= line without numeric session id and version")

    medias: list[dict[str, Any]] = session.get("media") or []
    lines = [_media_line(media) for media in medias]
    audio = [i for i, line in enumerate(lines) if line.media.lower() == "audio"]
    if not audio:
        raise SdpError("no audio m= line")
    # Plain RTP first, then SRTP (an offer may list both, for peers without SRTP), then the rest.
    avp = [i for i in audio if lines[i].protocol.upper() == AUDIO_PROTOCOL]
    avp = avp or [i for i in audio if lines[i].protocol.upper() == SRTP_PROTOCOL]
    index = (avp or audio)[0]
    line, media = lines[index], medias[index]

    rtpmaps = _rtpmaps(media)
    codecs: list[Codec] = []
    for fmt in line.formats:
        if not fmt.isdigit() or int(fmt) > 127:
            if line.protocol.upper() in (AUDIO_PROTOCOL, SRTP_PROTOCOL):
                raise SdpError(f"bad RTP payload type {fmt!r}")
            continue
        pt = int(fmt)
        known = rtpmaps.get(pt) or STATIC_PAYLOADS.get(pt)
        if known is not None:
            codecs.append(Codec(pt, known[0], known[1], known[2]))
    telephone_event = next(
        (c.payload_type for c in codecs if c.name.lower() == TELEPHONE_EVENT and c.clock_rate == CLOCK_RATE),
        None,
    )

    address = _connection(media, session)
    if address is None:
        if line.port != 0:
            raise SdpError("no c= line for the audio stream")
        address = "0.0.0.0"  # a disabled stream needs no address
    if not _valid_address(address):
        raise SdpError(f"bad connection address {address!r}")

    direction = media.get("direction") or session.get("direction") or "sendrecv"
    sends, receives = _flags(direction)
    hold = _is_unspecified(address)
    if hold:
        receives = False
    if line.port == 0:
        sends = receives = False
    return MediaOffer(
        address=address,
        port=line.port,
        codecs=codecs,
        telephone_event_pt=telephone_event,
        direction=_direction(sends, receives),
        ptime=_ptime(media.get("ptime", session.get("ptime"))),
        session_id=str(session_id),
        session_version=session_version,
        protocol=line.protocol,
        address_hold=hold,
        media_lines=lines,
        stream_index=index,
        cryptos=_cryptos(media),
    )


class LocalSdp:
    """Our side of the offer/answer exchanges of one call (one origin, one audio stream).

    The origin version increments only when the generated description differs from the previous
    one (RFC 3264 §8). The m-line layout of the last exchange is kept, so re-offers list the
    streams we rejected (port 0) in their original positions.
    """

    def __init__(
        self,
        address: str,
        port: int,
        codecs: Sequence[str] = ("PCMU", "PCMA"),
        telephone_event_pt: int | None = 101,
        *,
        ptime: int = 20,
        session_id: int | None = None,
        srtp: str = "optional",
    ) -> None:
        if srtp not in SRTP_POLICIES:
            raise ValueError(f"srtp must be one of {SRTP_POLICIES}")
        self.srtp = srtp  # off: plain RTP only; optional: SRTP when offered; required: SRTP only
        self._key = secrets.token_bytes(SRTP_KEY_LENGTH)  # our SRTP master key + salt for this call
        self._crypto: Crypto | None = None  # the a=crypto of our offer or answer
        self.codecs = tuple(name.upper() for name in codecs)
        if not self.codecs or any(name not in SUPPORTED_CODECS for name in self.codecs):
            raise ValueError(f"codecs must be a non-empty subset of {sorted(SUPPORTED_CODECS)}")
        if telephone_event_pt is not None and not 96 <= telephone_event_pt <= 127:
            raise ValueError("telephone_event_pt must be a dynamic payload type (96-127)")
        self.telephone_event_pt = telephone_event_pt
        self.ptime = ptime
        self.session_id = session_id if session_id is not None else secrets.randbelow(2**31)
        self.version = 0
        self.direction = "sendrecv"
        self.address = ""
        self.port = 0
        self.set_address(address, port)
        self._last_key: str | None = None
        self._layout: list[MediaLine] = []
        self._audio_index = 0

    def new_key(self) -> None:
        """A new SRTP master key for our next offer or answer (RFC 4568 §7.1.4: a re-INVITE may
        change the keys, e.g. to rekey a long call); the suite and tag stay."""
        self._key = secrets.token_bytes(SRTP_KEY_LENGTH)
        if self._crypto is not None:
            self._crypto = Crypto(self._crypto.tag, self._crypto.suite, self._key)

    def set_address(self, address: str, port: int) -> None:
        """Change our media address/port; the next SDP we generate gets a new version."""
        if not _valid_address(address):
            raise ValueError(f"bad media address {address!r}")
        if not 0 < port <= 65535:
            raise ValueError(f"bad RTP port {port}")
        self.address, self.port = address, port

    def offer(self, direction: str = "sendrecv") -> bytes:
        """An offer (initial or re-INVITE); ``offer("sendonly")`` puts the remote on hold."""
        if direction not in DIRECTIONS:
            raise ValueError(f"bad direction {direction!r}")
        self.direction = direction
        codecs = [Codec(SUPPORTED_CODECS[name], name, CLOCK_RATE) for name in self.codecs]
        if self.srtp == "required" and self._crypto is None:
            self._crypto = Crypto(1, SRTP_SUITES[0], self._key)
        audio = self._audio(self.port, codecs, self.telephone_event_pt, direction)
        layout = self._layout or [MediaLine("audio", self.port, AUDIO_PROTOCOL, ())]
        return self._render(layout, self._audio_index if self._layout else 0, audio)

    def answer(self, offer: MediaOffer) -> tuple[bytes, NegotiatedMedia]:
        """Answer ``offer`` (RFC 3264 §6): the offerer's first codec we support, one codec only.

        Raises :class:`NoCommonCodec` (answer 488) when an enabled audio stream has no usable
        codec or is not plain RTP/AVP. A disabled (port 0) stream is answered with port 0.
        """
        disabled = offer.port == 0
        chosen = self._first_supported(offer.codecs)
        keys = None
        if not disabled:
            keys = self._answer_crypto(offer)
            if chosen is None:
                raise NoCommonCodec("none of the offered audio codecs is supported")
        if chosen is None:
            chosen = Codec(SUPPORTED_CODECS[self.codecs[0]], self.codecs[0], CLOCK_RATE)
        te = offer.telephone_event_pt if self.telephone_event_pt is not None and not disabled else None
        remote_sends, remote_receives = _flags(offer.direction)
        local_sends, local_receives = _flags(self.direction)
        send, receive = local_sends and remote_receives, local_receives and remote_sends
        audio = self._audio(0 if disabled else self.port, [chosen], te, _direction(send, receive))
        layout = offer.media_lines or [MediaLine("audio", offer.port, offer.protocol, ())]
        body = self._render(layout, offer.stream_index if offer.media_lines else 0, audio)
        negotiated = NegotiatedMedia(
            codec=chosen.name.upper(),
            payload_type=chosen.payload_type,
            telephone_event_pt=te,
            remote_address=offer.address,
            remote_port=offer.port,
            send=send and not disabled,
            receive=receive and not disabled,
            ptime=self._send_ptime(offer.ptime),
            srtp=keys,
        )
        return body, negotiated

    def _answer_crypto(self, offer: MediaOffer) -> SrtpKeys | None:
        """SDES for an answer (RFC 4568 §7.1.2): the offer's first usable suite, with our key."""
        protocol = offer.protocol.upper()
        if protocol == AUDIO_PROTOCOL:
            if self.srtp == "required":
                raise NoCommonCodec("SRTP is required and the offer is plain RTP")
            self._crypto = None
            return None
        if protocol != SRTP_PROTOCOL or self.srtp == "off":
            raise NoCommonCodec(f"unsupported audio transport {offer.protocol!r}")
        for suite in SRTP_SUITES:
            theirs = next((c for c in offer.cryptos if c.suite == suite), None)
            if theirs is not None:
                self._crypto = Crypto(theirs.tag, suite, self._key)
                return SrtpKeys(suite, self._key, theirs.key)
        raise NoCommonCodec("no usable a=crypto in the SRTP offer")

    def accept_answer(self, answer: MediaOffer) -> NegotiatedMedia:
        """Apply the answer to our last :meth:`offer`.

        A rejected (port 0) stream gives ``send == receive == False``; an answer naming none of
        our codecs raises :class:`NoCommonCodec`, one with other m-lines than our offer
        :class:`SdpError`.
        """
        if self._layout and answer.media_lines and len(answer.media_lines) != len(self._layout):
            raise SdpError("the answer does not have the offer's m= lines")
        rejected = answer.port == 0
        chosen = self._first_supported(answer.codecs)
        if chosen is None:
            if not rejected:
                raise NoCommonCodec("the answer names none of the offered codecs")
            chosen = Codec(SUPPORTED_CODECS[self.codecs[0]], self.codecs[0], CLOCK_RATE)
        keys = None
        if self._crypto is not None and not rejected:
            theirs = next((c for c in answer.cryptos if c.tag == self._crypto.tag), None)
            if not answer.secure or theirs is None or theirs.suite != self._crypto.suite:
                raise NoCommonCodec("the answer does not accept our SRTP offer")
            keys = SrtpKeys(theirs.suite, self._crypto.key, theirs.key)
        remote_sends, remote_receives = _flags(answer.direction)
        local_sends, local_receives = _flags(self.direction)
        return NegotiatedMedia(
            codec=chosen.name.upper(),
            payload_type=chosen.payload_type,
            telephone_event_pt=answer.telephone_event_pt if self.telephone_event_pt is not None else None,
            remote_address=answer.address,
            remote_port=answer.port,
            send=local_sends and remote_receives and not rejected,
            receive=local_receives and remote_sends and not rejected,
            ptime=self._send_ptime(answer.ptime),
            srtp=keys,
        )

    def _first_supported(self, codecs: list[Codec]) -> Codec | None:
        for codec in codecs:
            if codec.name.upper() in self.codecs and codec.clock_rate == CLOCK_RATE and codec.channels == 1:
                return codec
        return None

    def _send_ptime(self, remote: int | None) -> int:
        """The packetisation the remote asked for if it is a sane G.711 one, else ours."""
        if remote is not None and 10 <= remote <= 60 and remote % 10 == 0:
            return remote
        return self.ptime

    def _audio(self, port: int, codecs: list[Codec], te: int | None, direction: str) -> dict[str, Any]:
        rtp: list[dict[str, Any]] = [
            {"payload": c.payload_type, "codec": c.name.upper(), "rate": CLOCK_RATE} for c in codecs
        ]
        fmtp: list[dict[str, Any]] = []
        if te is not None:
            rtp.append({"payload": te, "codec": TELEPHONE_EVENT, "rate": CLOCK_RATE})
            fmtp.append({"payload": te, "config": TELEPHONE_EVENTS})
        audio: dict[str, Any] = {
            "type": "audio",
            "port": port,
            "protocol": AUDIO_PROTOCOL if self._crypto is None else SRTP_PROTOCOL,
            "payloads": " ".join(str(entry["payload"]) for entry in rtp),
            "rtp": rtp,
            "fmtp": fmtp,
            "ptime": self.ptime,
            "direction": direction,
        }
        if self._crypto is not None:
            inline = base64.b64encode(self._crypto.key).decode("ascii")
            audio["crypto"] = [
                {"id": self._crypto.tag, "suite": self._crypto.suite, "config": f"inline:{inline}"}
            ]
        return audio

    def _render(self, layout: list[MediaLine], audio_index: int, audio: dict[str, Any]) -> bytes:
        media: list[dict[str, Any]] = []
        for i, line in enumerate(layout):
            if i == audio_index:
                media.append(audio)
            else:
                formats = [f for f in line.formats if _TOKEN.match(f)] or ["0"]
                media.append(
                    {"type": line.media, "port": 0, "protocol": line.protocol, "payloads": " ".join(formats)}
                )
        self._layout = [
            MediaLine(m["type"], m["port"], m["protocol"], tuple(str(m["payloads"]).split())) for m in media
        ]
        self._audio_index = audio_index
        key = self._write(media, version=0)
        if self._last_key is not None and key != self._last_key:
            self.version += 1
        self._last_key = key
        return self._write(media, version=self.version).encode("utf-8")

    def _write(self, media: list[dict[str, Any]], version: int) -> str:
        ip_version = _ip_version(self.address)
        session = {
            "version": 0,
            "origin": {
                "username": "parley",
                "sessionId": self.session_id,
                "sessionVersion": version,
                "netType": "IN",
                "ipVer": ip_version,
                "address": self.address,
            },
            "name": "parley",
            "connection": {"version": ip_version, "ip": self.address},
            "timing": {"start": 0, "stop": 0},
            "media": [dict(m) for m in media],
        }
        return sdp_transform.write(session)
