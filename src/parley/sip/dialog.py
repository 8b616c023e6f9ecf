"""SIP dialogs (RFC 3261 §12): identifiers, CSeq spaces, route sets and in-dialog requests."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from parley.sip.errors import SipParseError
from parley.sip.message import Headers, SipRequest, SipResponse
from parley.sip.uri import NameAddr, SipUri

Address = tuple[str, int]


@dataclass(slots=True)
class Dialog:
    """One side's view of a dialog. ``local_uri``/``remote_uri`` are full From/To values with tags."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    local_seq: int
    remote_seq: int | None
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    transport: str = "UDP"

    @property
    def id(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def as_uas(cls, invite: SipRequest, response: SipResponse, transport: str) -> Dialog:
        """The dialog a UAS creates when it answers ``invite`` with ``response`` (§12.1.1).

        An RFC 2543 INVITE without Contact is answered at its From address (RFC 4475 §3.4).
        """
        contact = _contact_uri(invite) if "Contact" in invite.headers else str(invite.from_.uri)
        return cls(
            call_id=invite.call_id,
            local_tag=response.to.tag or "",
            remote_tag=invite.from_.tag or "",
            local_uri=response.headers.get("To") or "",
            remote_uri=invite.headers.get("From") or "",
            local_seq=0,
            remote_seq=invite.cseq[0],
            remote_target=contact,
            route_set=list(invite.headers.get_all("Record-Route")),
            transport=transport,
        )

    @classmethod
    def as_uac(cls, invite: SipRequest, response: SipResponse, transport: str) -> Dialog:
        """The dialog a UAC creates from a 2xx (or tagged 1xx) response (§12.1.2)."""
        return cls(
            call_id=invite.call_id,
            local_tag=invite.from_.tag or "",
            remote_tag=response.to.tag or "",
            local_uri=invite.headers.get("From") or "",
            remote_uri=response.headers.get("To") or "",
            local_seq=invite.cseq[0],
            remote_seq=None,
            remote_target=_contact_uri(response) if "Contact" in response.headers else invite.uri,
            route_set=list(reversed(response.headers.get_all("Record-Route"))),
            transport=transport,
        )

    def update_target(self, request_or_response: SipRequest | SipResponse) -> None:
        """A target refresh (re-INVITE or its 2xx) may move the remote target (§12.2)."""
        if "Contact" in request_or_response.headers:
            self.remote_target = _contact_uri(request_or_response)

    def accepts_cseq(self, request: SipRequest) -> bool:
        """In-dialog requests must arrive with increasing CSeq (§12.2.2); ACK/CANCEL reuse theirs."""
        number = request.cseq[0]
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_seq is not None and number <= self.remote_seq:
            return False
        self.remote_seq = number
        return True

    def new_request(self, method: str, via: str, body: bytes = b"", cseq: int | None = None) -> SipRequest:
        """Build an in-dialog request with loose or strict routing (§12.2.1.1)."""
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        headers = Headers()
        headers.add("Via", via)
        headers.add("Max-Forwards", "70")
        routes = list(self.route_set)
        uri = self.remote_target
        if routes and "lr" not in NameAddr.parse(routes[0]).uri.params:
            uri = str(NameAddr.parse(routes[0]).uri)  # strict router: it becomes the Request-URI
            routes = [*routes[1:], f"<{self.remote_target}>"]
        for route in routes:
            headers.add("Route", route)
        headers.add("From", self.local_uri)
        headers.add("To", self.remote_uri)
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        return SipRequest(headers, body, method=method, uri=uri)

    def next_hop(self) -> SipUri:
        """The URI whose host/port the next in-dialog request is sent to."""
        if self.route_set:
            return NameAddr.parse(self.route_set[0]).uri
        return SipUri.parse(self.remote_target)


def _contact_uri(message: SipRequest | SipResponse) -> str:
    value = message.headers.get("Contact")
    if value is None:
        raise SipParseError("dialog-creating message without Contact")
    return str(NameAddr.parse(value).uri)


def hop_address(uri: SipUri, default_transport: str) -> tuple[Address, str]:
    """Host, port and transport to reach ``uri``.

    A numeric host without a port gets the scheme's default port; a host name without one gets
    port 0, which tells the transport's resolver to look for SRV records first (RFC 3263 §4.2).
    """
    transport = (
        uri.params.get("transport") or ("TLS" if uri.scheme == "sips" else default_transport)
    ).upper()
    host = uri.host.strip("[]")
    port = uri.port or (0 if _is_name(host) else 5061 if uri.scheme == "sips" else 5060)
    return (host, port), transport


def _is_name(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False
