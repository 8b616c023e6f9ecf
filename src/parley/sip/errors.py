"""Errors raised by the SIP layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from parley.sip.message import SipRequest


class SipParseError(ValueError):
    """A message (or a part of one) violates the SIP grammar.

    ``status`` is the response a UAS should send when the broken message was a request
    whose essential headers could still be read (400 by default, 505 for a bad version,
    501 for an unknown method whose CSeq does not match, 413 when over the size limit).

    ``request`` is set by the message parser when the broken message is a request whose
    top Via could be read: enough to answer it statelessly with
    :func:`parley.sip.message.error_response`. It is ``None`` for responses (which are
    dropped, RFC 3261 §18.1.2) and for requests too broken to answer.
    """

    def __init__(self, reason: str, status: int = 400, *, request: SipRequest | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.request = request
