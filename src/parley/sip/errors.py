"""Errors raised by the SIP layer."""

from __future__ import annotations


class SipParseError(ValueError):
    """A message (or a part of one) violates the SIP grammar.

    ``status`` is the response a UAS should send when the broken message was a request
    whose essential headers could still be read (400 by default, 505 for a bad version,
    413 when over the size limit).
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
