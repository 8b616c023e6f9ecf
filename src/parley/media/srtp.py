"""SRTP (RFC 3711) for a call's RTP and RTCP, with keys exchanged by SDES (RFC 4568), via pylibsrtp.

pylibsrtp wraps the reference libsrtp, so the ciphers and the replay and authentication checks are
libsrtp's own. One :class:`SrtpContext` per call: the outbound session uses our master key, the
inbound one the key the peer sent in its ``a=crypto``. A packet that fails authentication (or a
replay) is dropped and counted, never raised past the receiving handler.
"""

from __future__ import annotations

from collections.abc import Callable

import pylibsrtp

from parley.media.datagram import Address, Handler

SUITES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}


class SrtpContext:
    """Protects what we send and checks and decrypts what we receive, for RTP and RTCP."""

    def __init__(self, suite: str, local_key: bytes, remote_key: bytes) -> None:
        """``local_key``/``remote_key``: the 30-byte master key + salt we sent and the peer sent."""
        self._keys = ("", b"", b"")
        self._previous_in: pylibsrtp.Session | None = None
        self.rekey(suite, local_key, remote_key)
        self._previous_in = None
        self.rejected = 0  # RTP packets that failed authentication, replays, garbage
        self.rejected_rtcp = 0  # ditto for RTCP
        self.rekeys = 0  # key changes after the first (re-INVITEs)

    def rekey(self, suite: str, local_key: bytes, remote_key: bytes) -> bool:
        """Use new keys (a re-INVITE's offer/answer); a direction whose key and suite stay keeps its
        session (and its replay window). Returns whether anything changed."""
        old_suite, old_local, old_remote = self._keys
        if (suite, local_key, remote_key) == self._keys:
            return False
        profile = SUITES[suite]
        if suite != old_suite or local_key != old_local:
            self._out = pylibsrtp.Session(
                policy=pylibsrtp.Policy(
                    key=local_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile
                )
            )
        if suite != old_suite or remote_key != old_remote:
            # Packets the peer sent under its old key cross the offer/answer: kept readable until a
            # packet authenticates under the new one.
            self._previous_in = getattr(self, "_in", None)
            self._in = pylibsrtp.Session(
                policy=pylibsrtp.Policy(
                    key=remote_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile
                )
            )
        if old_suite:
            self.rekeys += 1
        self._keys = (suite, local_key, remote_key)
        return True

    def protect(self, packet: bytes) -> bytes:
        return self._out.protect(packet)

    def protect_rtcp(self, packet: bytes) -> bytes:
        return self._out.protect_rtcp(packet)

    def unprotect(self, packet: bytes) -> bytes | None:
        try:
            plain = self._in.unprotect(packet)
        except (pylibsrtp.Error, ValueError):
            plain = self._from_previous(packet, rtcp=False)
            if plain is None:
                self.rejected += 1
            return plain
        self._previous_in = None
        return plain

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        try:
            return self._in.unprotect_rtcp(packet)
        except (pylibsrtp.Error, ValueError):
            plain = self._from_previous(packet, rtcp=True)
            if plain is None:
                self.rejected_rtcp += 1
            return plain

    def _from_previous(self, packet: bytes, *, rtcp: bool) -> bytes | None:
        """``packet`` under the peer's key before the last rekey, while that one is still kept."""
        previous = self._previous_in
        if previous is None:
            return None
        try:
            return previous.unprotect_rtcp(packet) if rtcp else previous.unprotect(packet)
        except (pylibsrtp.Error, ValueError):
            return None


def protecting(
    send: Callable[[bytes, Address], None], protect: Callable[[bytes], bytes]
) -> Callable[[bytes, Address], None]:
    """``send`` with each packet protected first."""

    def send_protected(data: bytes, addr: Address) -> None:
        send(protect(data), addr)

    return send_protected


def unprotecting(handler: Handler, unprotect: Callable[[bytes], bytes | None]) -> Handler:
    """``handler`` for packets that pass SRTP's checks, decrypted; the others are dropped (counted)."""

    def receive(data: bytes, source: Address, arrival: float) -> None:
        plain = unprotect(data)
        if plain is not None:
            handler(plain, source, arrival)

    return receive
