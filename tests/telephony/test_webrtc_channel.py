"""The browser channel with a real WebRTC peer (aiortc, in this process): a browser call is a Call whose
app hears the browser's audio and keys, whose audio and events reach the browser, and which ends on
either side's hang-up with the reason said; admission counts it against --max-calls beside SIP; a
node's router passes an offer on past a worker that is gone."""

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np
import pytest
from aiortc import RTCSessionDescription

from integration.harness import free_port
from parley.telephony.call import Call, DtmfDigit
from parley.telephony.manager import CallManager
from parley.telephony.webpage import OfferRouter, serve_page
from parley.telephony.webrtc import OfferError, WebRtcChannel

from .webrtc_peer import BrowserPeer

pytestmark = pytest.mark.timeout(60)


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(8000 * seconds)) / 8000
    return (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


async def offer_of(peer: BrowserPeer) -> dict:
    await peer.pc.setLocalDescription(await peer.pc.createOffer())
    return {"type": "offer", "sdp": peer.pc.localDescription.sdp}


async def connect(channel: WebRtcChannel, peer: BrowserPeer) -> str:
    answer = await channel.answer(await offer_of(peer))
    await peer.accept(answer["sdp"])
    await asyncio.wait_for(peer.connected.wait(), 15)
    for _ in range(100):  # the server's side of DTLS completes a moment after the peer's
        if answer["call_id"] in channel.manager.calls:
            break
        await asyncio.sleep(0.02)
    return answer["call_id"]


async def test_a_browser_call_is_a_call_both_ways(managers) -> None:
    heard: list[np.ndarray | DtmfDigit] = []
    ended: list[str] = []

    async def app(call: Call) -> None:
        assert call.channel == "webrtc" and call.session is None
        call.publish({"type": "prompt", "text": "hello"})
        await call.wait_played(call.play(tone(1.0)))
        async for item in call.incoming():
            heard.append(item)
            if isinstance(item, DtmfDigit):
                break
        call.hangup()
        ended.append(await call.wait_ended())

    manager: CallManager = await managers(app)
    channel = WebRtcChannel(manager)
    peer = BrowserPeer()
    try:
        call_id = await connect(channel, peer)
        assert call_id in manager.calls
        peer.say(tone(1.0))
        await asyncio.sleep(1.5)
        peer.channel.send('{"type": "dtmf", "digit": "5"}')
        await asyncio.wait_for(peer.hung_up.wait(), 10)
    finally:
        await peer.close()
        await channel.close()
    assert ended == ["local-hangup"]
    frames = [f for f in heard if isinstance(f, np.ndarray)]
    assert [d.digit for d in heard if isinstance(d, DtmfDigit)] == ["5"]
    assert sum(1 for f in frames if np.sqrt(np.mean(f.astype(float) ** 2)) > 2000) >= 30  # the tone, 8 kHz
    assert {"type": "prompt", "text": "hello"} in peer.events
    assert sum(1 for _, rms in peer.heard if rms > 2000) >= 30  # the call's audio reached the browser
    assert manager.stats.ended == {"local-hangup": 1} and not manager.calls


async def test_a_silent_browser_sends_little_with_dtx_and_the_call_still_hears_every_tick(managers) -> None:
    heard: list[np.ndarray] = []

    async def app(call: Call) -> None:
        async for item in call.incoming():
            if isinstance(item, np.ndarray):
                heard.append(item)

    manager: CallManager = await managers(app)
    channel = WebRtcChannel(manager)
    peer = BrowserPeer()
    try:
        call_id = await connect(channel, peer)
        assert peer.microphone.dtx  # the answer asked for DTX (usedtx=1), as a browser reads it
        stream = channel.browsers[call_id].stream
        await asyncio.sleep(0.5)  # past the encoder's first silent frames
        packets, frames = stream.jitter.stats.received, len(heard)
        await asyncio.sleep(2.0)
        quiet_packets, quiet_frames = stream.jitter.stats.received - packets, len(heard) - frames
        peer.say(tone(1.0))
        await asyncio.sleep(1.5)
    finally:
        await peer.close()
        await channel.close()
    assert quiet_packets <= 15  # about 5 a second, not 100 in 2 s
    assert quiet_frames >= 90  # the call heard a frame every tick meanwhile (silence)
    assert all(np.abs(f).max() < 100 for f in heard[frames + 5 : frames + quiet_frames - 5])  # silence
    assert sum(1 for f in heard if np.sqrt(np.mean(f.astype(float) ** 2)) > 2000) >= 30  # then the tone


async def reasons_ended(managers, end: Callable[[BrowserPeer], Awaitable[None]]) -> list[str]:
    """How a browser call ended (``Call.wait_ended``) when ``end`` ended it from the browser's side."""
    reasons: list[str] = []

    async def app(call: Call) -> None:
        reasons.append(await call.wait_ended())

    manager = await managers(app)
    channel = WebRtcChannel(manager)
    peer = BrowserPeer()
    try:
        await connect(channel, peer)
        await end(peer)
        for _ in range(100):
            if reasons:
                break
            await asyncio.sleep(0.05)
    finally:
        await peer.close()
        await channel.close()
    return reasons


async def test_the_browser_hangs_up_and_the_call_ends(managers) -> None:
    async def hang_up(peer: BrowserPeer) -> None:
        peer.hang_up()

    assert await reasons_ended(managers, hang_up) == ["remote-hangup"]


async def test_a_browser_that_closes_its_connection_hung_up_and_did_not_vanish(managers) -> None:
    """No hang-up on the data channel, but a DTLS close while its audio was coming: the caller hung up
    (a browser whose ICE consent expired had sent nothing for the consent timeout: ``ice-failed``)."""

    async def close_while_speaking(peer: BrowserPeer) -> None:
        await asyncio.sleep(0.5)  # the microphone's packets are coming
        await peer.close()

    assert await reasons_ended(managers, close_while_speaking) == ["remote-hangup"]


async def test_browser_calls_count_against_max_calls(managers) -> None:
    manager = await managers(None, max_calls=1)
    channel = WebRtcChannel(manager)
    first, second = BrowserPeer(), BrowserPeer()
    try:
        await connect(channel, first)
        assert manager.ua.over_limit()  # a SIP INVITE would get 503 now
        with pytest.raises(OfferError) as refused:
            await channel.answer(await offer_of(second))
        assert refused.value.status == 503 and "busy" in str(refused.value)
    finally:
        for peer in (first, second):
            await peer.close()
        await channel.close()
    assert not manager.ua.over_limit()


async def test_a_routed_offer_skips_a_worker_that_is_gone_and_a_bad_one_is_answered_at_once(managers) -> None:
    """The node's router (OfferRouter): a worker's signalling port that refuses connections passes the
    offer to the next; a bad offer gets its 400 from the first worker, not tried on the others; no
    ready worker at all is a 503 the page can show."""
    manager = await managers(None)
    channel = WebRtcChannel(manager)
    live, gone = free_port(), free_port()
    stop_page = await serve_page(channel.answer, "127.0.0.1", live)
    targets = [f"http://127.0.0.1:{gone}/offer", f"http://127.0.0.1:{live}/offer"]
    router = OfferRouter(lambda: targets)
    peer = BrowserPeer()
    try:
        answer = await router.answer(await offer_of(peer))
        await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        await asyncio.wait_for(peer.connected.wait(), 15)
        assert router.routed == {targets[1]: 1}
        targets.reverse()  # the live worker first: its 400 is the answer
        with pytest.raises(OfferError) as bad:
            await router.answer({"type": "offer", "sdp": "hello"})
        assert bad.value.status == 400 and "v=0" in str(bad.value)
        targets.clear()
        with pytest.raises(OfferError) as none:
            await router.answer(await offer_of(BrowserPeer()))
        assert none.value.status == 503 and "try again" in str(none.value)
    finally:
        await peer.close()
        await router.close()
        await stop_page()
        await channel.close()


async def test_an_offer_without_opus_gets_a_clear_400(managers) -> None:
    """The server sends Opus it encodes itself: an offer of other codecs only (G.711 here) is refused,
    not answered with a codec the server would then not send."""
    manager = await managers(None)
    channel = WebRtcChannel(manager)
    peer = BrowserPeer()
    try:
        lines = (await offer_of(peer))["sdp"].split("\r\n")
        opus = next(line.split()[0].split(":")[1] for line in lines if "opus/48000" in line)
        lines = [line for line in lines if not line.startswith((f"a=rtpmap:{opus} ", f"a=fmtp:{opus} "))]
        m = next(i for i, line in enumerate(lines) if line.startswith("m=audio "))
        lines[m] = " ".join(f for f in lines[m].split(" ") if f != opus)
        with pytest.raises(OfferError) as refused:
            await channel.answer({"type": "offer", "sdp": "\r\n".join(lines)})
        assert refused.value.status == 400 and "Opus first" in str(refused.value)
        assert not manager.calls and channel.refused == 1
    finally:
        await peer.close()
        await channel.close()
