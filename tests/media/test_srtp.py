"""SrtpContext key changes (a re-INVITE's new SDES keys) through libsrtp itself."""

from __future__ import annotations

import secrets

from parley.media.rtp import RtpSender
from parley.media.srtp import SrtpContext

SUITE = "AES_CM_128_HMAC_SHA1_80"


def keys() -> bytes:
    return secrets.token_bytes(30)


def test_the_old_inbound_key_reads_until_the_new_one_has_been_used() -> None:
    ours, theirs_old, theirs_new = keys(), keys(), keys()
    peer_old = SrtpContext(SUITE, theirs_old, ours)  # the peer's side: its key out
    peer_new = SrtpContext(SUITE, theirs_new, ours)
    sender = RtpSender(0, ssrc=1234, sequence=100, timestamp=0)
    packets = [sender.packet(bytes([n]) * 160) for n in range(4)]
    receiver = SrtpContext(SUITE, ours, theirs_old)
    assert receiver.unprotect(peer_old.protect(packets[0])) == packets[0]
    assert receiver.rekey(SUITE, ours, theirs_new) and receiver.rekeys == 1
    assert not receiver.rekey(SUITE, ours, theirs_new)  # the same keys: nothing changes
    assert receiver.unprotect(peer_old.protect(packets[1])) == packets[1]  # crossed the answer
    assert receiver.unprotect(peer_new.protect(packets[2])) == packets[2]
    assert receiver.unprotect(peer_old.protect(packets[3])) is None  # the old key is gone now
    assert receiver.rejected == 1


def test_an_outbound_rekey_leaves_the_inbound_session() -> None:
    ours_old, ours_new, theirs = keys(), keys(), keys()
    sender = RtpSender(0, ssrc=99, sequence=1, timestamp=0)
    first, second = sender.packet(b"\x01" * 160), sender.packet(b"\x02" * 160)
    me = SrtpContext(SUITE, ours_old, theirs)
    peer = SrtpContext(SUITE, theirs, ours_old)
    assert peer.unprotect(me.protect(first)) == first
    me.rekey(SUITE, ours_new, theirs)
    assert peer.unprotect(me.protect(second)) is None  # the peer has not taken the new key yet
    peer.rekey(SUITE, theirs, ours_new)
    assert peer.unprotect(me.protect(sender.packet(b"\x03" * 160)))[12:] == b"\x03" * 160
