"""End-to-end tests of the Call API: two CallManagers (and SIPp peers) over real sockets on loopback.

One manager answers with an app coroutine, the other dials it. Every wait is bounded; audio is
checked by content (FFT peak, exact silence), DTMF by order, hold by RTP counters, failures by
the SIP status a :class:`DialError` or ``transfer()`` reports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from integration.harness import HOST, free_port
from parley.sip.auth import DigestCredentials
from parley.telephony.call import Call, DtmfDigit
from parley.telephony.manager import CallManager, DialError

from .conftest import ManagerFactory, SippUas

RATE = 8000
FRAME = 160
TRANSFER_TARGET = "sip:operator@127.0.0.1:5999"


# -- helpers ---------------------------------------------------------------------------------
def tone(freq: float, seconds: float, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def peak_hz(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / RATE)[int(np.argmax(spectrum))])


def loud(frame: np.ndarray) -> bool:
    return int(np.abs(frame.astype(np.int32)).max()) > 1000


def silent(frame: np.ndarray) -> bool:
    return int(np.abs(frame.astype(np.int32)).max()) <= 8  # G.711 silence decodes to 0 (μ-law) or ±8 (A-law)


async def collect_tone(call: Call, frames: int) -> np.ndarray:
    """The first ``frames`` loud frames ``call.incoming()`` yields, joined."""
    got: list[np.ndarray] = []
    async for item in call.incoming():
        if isinstance(item, np.ndarray) and loud(item):
            got.append(item)
            if len(got) == frames:
                return np.concatenate(got)
    raise AssertionError(f"call ended ({call.end_reason}) after {len(got)} loud frames")


async def within(awaitable: Awaitable, seconds: float, what: str):
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        pytest.fail(f"timed out after {seconds} s waiting for {what}")


def agent_uri(manager: CallManager) -> str:
    return f"sip:agent@{HOST}:{manager.port}"


class Pair:
    """A callee manager running ``app`` and a caller manager; ``connect()`` dials."""

    def __init__(self, callee: CallManager, caller: CallManager, inbound: asyncio.Queue) -> None:
        self.callee = callee
        self.caller = caller
        self.inbound = inbound  # the callee's Call objects, as the app receives them

    async def connect(self) -> tuple[Call, Call]:
        caller_call = await within(self.caller.dial(agent_uri(self.callee), timeout=5), 6, "the answer")
        callee_call = await within(self.inbound.get(), 2, "the app to start")
        return caller_call, callee_call


@pytest.fixture
def pair(managers: ManagerFactory) -> Callable[..., Awaitable[Pair]]:
    """``await pair(app, callee_options={}, caller_options={})``; the app's calls also go to a queue."""

    async def factory(
        app: Callable[[Call], Awaitable[None]],
        callee_options: dict | None = None,
        caller_options: dict | None = None,
    ) -> Pair:
        inbound: asyncio.Queue[Call] = asyncio.Queue()

        async def run(call: Call) -> None:
            inbound.put_nowait(call)
            await app(call)

        callee = await managers(run, **(callee_options or {}))
        caller = await managers(None, **(caller_options or {}))
        return Pair(callee, caller, inbound)

    return factory


async def until_ended(call: Call) -> None:
    await call.wait_ended()


# -- audio -----------------------------------------------------------------------------------
async def test_audio_both_ways(pair):
    heard_by_callee: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
    played: list[bool] = []

    async def app(call: Call) -> None:
        playback = call.play(tone(440, 1.0))
        listener = asyncio.ensure_future(collect_tone(call, 25))
        played.append(await call.wait_played(playback))
        heard_by_callee.set_result(await listener)
        await call.wait_ended()

    p = await pair(app)
    caller, callee = await p.connect()
    assert (caller.direction, callee.direction) == ("outbound", "inbound")
    assert caller.call_id == callee.call_id
    caller_heard = await within(collect_tone(caller, 25), 3, "the callee's 440 Hz tone")
    assert abs(peak_hz(caller_heard) - 440) < 10, peak_hz(caller_heard)

    caller_playback = caller.play(tone(1000, 1.0))
    callee_heard = await within(heard_by_callee, 3, "the caller's 1000 Hz tone at the callee")
    assert abs(peak_hz(callee_heard) - 1000) < 10, peak_hz(callee_heard)
    assert played == [True]
    assert await within(caller.wait_played(caller_playback), 3, "the caller's playback") is True
    assert caller.stream.codec == callee.stream.codec == "PCMU"


# -- DTMF ------------------------------------------------------------------------------------
async def test_dtmf_digits_in_order(pair):
    digits: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()

    async def app(call: Call) -> None:
        got: list[str] = []
        async for item in call.incoming():
            if isinstance(item, DtmfDigit):
                got.append(item.digit)
                if len(got) == 4:
                    break
        digits.set_result(got)
        await call.wait_ended()

    p = await pair(app)
    caller, callee = await p.connect()
    caller.send_dtmf("159#")
    assert await within(digits, 4, "four DTMF digits") == ["1", "5", "9", "#"]
    assert callee.dtmf_received == ["1", "5", "9", "#"]
    assert callee.stream.stats.dtmf_in == 4
    await asyncio.sleep(0.2)  # the end packets are sent three times: no digit may come twice
    assert callee.dtmf_received == ["1", "5", "9", "#"]


# -- barge-in --------------------------------------------------------------------------------
async def test_barge_in_stops_playback_at_once(pair):
    """The callee stops a 5 s prompt; only the frames already on their way still arrive."""
    caller_frames: list[np.ndarray] = []
    heard_some = asyncio.Event()
    at_stop: dict[str, int] = {}
    result: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def app(call: Call) -> None:
        playback = call.play(tone(440, 5.0))
        waiter = asyncio.ensure_future(call.wait_played(playback))
        await heard_some.wait()
        # Synchronous with the caller's media tick (same loop): these counts are exact.
        at_stop["sent"] = -(-playback.offset // FRAME)
        at_stop["received"] = len(caller_frames)
        call.stop_playback()
        result.set_result(await waiter)
        await call.wait_ended()

    p = await pair(app)
    caller, _ = await p.connect()

    def on_audio(frame: np.ndarray) -> None:
        caller_frames.append(frame)
        if sum(map(loud, caller_frames)) >= 10:
            heard_some.set()

    caller.on_audio = on_audio
    assert await within(result, 3, "wait_played after stop_playback") is False
    received, sent = at_stop["received"], at_stop["sent"]
    in_flight = sent - received  # sent before the stop but not yet played out at the caller
    assert 0 <= in_flight <= 8, at_stop
    assert sent < 5 * RATE // FRAME / 2, "the prompt was not stopped early"

    while len(caller_frames) < received + in_flight + 2 + 25:
        await asyncio.sleep(0.02)
        assert not caller.ended.is_set()
    after = caller_frames[received:]
    first_silent = next(i for i, frame in enumerate(after) if silent(frame))
    assert first_silent <= in_flight + 2, (first_silent, at_stop)
    tail = after[first_silent : first_silent + 25]
    assert all(silent(frame) for frame in tail), [int(np.abs(f).max()) for f in tail]
    tone_frames = sum(map(loud, caller_frames))
    assert tone_frames <= sent, (tone_frames, at_stop)  # nothing of the prompt after the stop


# -- hangup ----------------------------------------------------------------------------------
async def test_caller_hangup_ends_callee_and_app(pair):
    app_returned = asyncio.Event()

    async def app(call: Call) -> None:
        await call.wait_ended()
        app_returned.set()

    p = await pair(app)
    caller, callee = await p.connect()
    await asyncio.sleep(0.1)  # let the ACK confirm the callee's dialog
    caller.hangup()
    assert await within(callee.wait_ended(), 3, "the callee's end") == "remote-bye"
    assert await within(caller.wait_ended(), 3, "the caller's end") == "local-bye"
    await within(app_returned.wait(), 2, "the app to return")
    assert not p.callee.calls and not p.caller.calls


@pytest.mark.parametrize("delay", [0.0, 0.3], ids=["before-ack", "confirmed"])
async def test_app_return_hangs_up(pair, delay):
    """The app returning hangs up; at once (before the caller's ACK) the BYE waits for the ACK."""

    async def app(call: Call) -> None:
        await asyncio.sleep(delay)

    p = await pair(app)
    caller, callee = await p.connect()
    assert await within(caller.wait_ended(), 3, "the caller's end") == "remote-bye"
    assert await within(callee.wait_ended(), 1, "the callee's end") == "local-bye"
    assert not p.callee.calls and not p.caller.calls


# -- memory ----------------------------------------------------------------------------------
async def test_ended_calls_free_their_media_at_once(pair):
    """Once a call ended and its app returned, its Call and RTP stream are gone, without waiting for
    the cyclic garbage collector (switched off here, as the media clock does on a busy server) or
    for the SIP session's linger (issue 15: each ended call kept 15-40 KB until a rare full GC)."""
    import gc

    from parley.media.jitter import JitterBuffer
    from parley.media.stream import RtpStream

    def alive() -> dict[str, int]:
        kinds = (Call, RtpStream, JitterBuffer)
        return {kind.__name__: sum(isinstance(o, kind) for o in gc.get_objects()) for kind in kinds}

    async def app(call: Call) -> None:
        call.on_audio = call.stream.play_frame  # the echo app
        await call.wait_ended()

    p = await pair(app)
    gc.collect()
    gc.disable()
    try:
        before = alive()
        for _ in range(5):
            caller, callee = await p.connect()
            caller.play(tone(440, 0.2))
            await asyncio.sleep(0.3)
            caller.hangup()
            await within(callee.wait_ended(), 3, "the callee's end")
            await within(caller.wait_ended(), 3, "the caller's end")
            del caller, callee
        await asyncio.sleep(0.1)  # the apps return
        assert len(p.callee.ua.sessions) == len(p.caller.ua.sessions) == 5  # lingering, without media
        assert alive() == before
    finally:
        gc.enable()


# -- hold / resume ---------------------------------------------------------------------------
async def test_hold_and_resume(pair):
    """``hold()`` offers sendonly: the held callee stops sending, the holder stops receiving."""

    async def app(call: Call) -> None:
        call.play(tone(440, 10.0))
        await call.wait_ended()

    p = await pair(app)
    holder, held = await p.connect()
    await within(collect_tone(holder, 10), 3, "audio before the hold")

    assert await within(holder.hold(), 3, "the hold re-INVITE") == 200
    assert (holder.stream.sending, holder.stream.receiving) == (True, False)
    assert (held.stream.sending, held.stream.receiving) == (False, True)
    await asyncio.sleep(0.2)  # packets already on their way
    holder_in, held_out = holder.stream.stats.packets_in, held.stream.stats.packets_out
    held_in = held.stream.stats.packets_in
    frames_before = len(holder._queue)
    await asyncio.sleep(0.6)
    assert holder.stream.stats.packets_in == holder_in
    assert held.stream.stats.packets_out == held_out, "the held side kept sending"
    assert held.stream.stats.packets_in > held_in + 20, "sendonly: the holder keeps sending"
    new_frames = list(holder._queue)[frames_before:]
    assert not any(loud(frame) for frame in new_frames), "audio reached the holder while on hold"

    assert await within(holder.hold(False), 3, "the resume re-INVITE") == 200
    assert (holder.stream.sending, holder.stream.receiving) == (True, True)
    assert (held.stream.sending, held.stream.receiving) == (True, True)
    holder._queue.clear()
    heard = await within(collect_tone(holder, 10), 3, "audio after the resume")
    assert abs(peak_hz(heard) - 440) < 20
    assert holder.stream.stats.packets_in > holder_in
    assert not holder.ended.is_set() and not held.ended.is_set()


# -- blind transfer --------------------------------------------------------------------------
def transfer_app(results: asyncio.Queue) -> Callable[[Call], Awaitable[None]]:
    async def app(call: Call) -> None:
        await asyncio.sleep(0.1)  # the ACK confirms the dialog
        results.put_nowait(await call.transfer(TRANSFER_TARGET, timeout=10))
        await call.wait_ended()

    return app


@pytest.mark.parametrize("verdict", [200, 486])
async def test_blind_transfer_reports_the_handler_status(pair, verdict):
    seen: list[tuple[Call, str]] = []

    async def on_refer(call: Call, target: str) -> int:
        seen.append((call, target))
        return verdict

    results: asyncio.Queue[int] = asyncio.Queue()
    p = await pair(transfer_app(results), caller_options={"on_refer": on_refer})
    caller, _ = await p.connect()
    assert await within(results.get(), 5, "the transfer result") == verdict
    assert seen == [(caller, TRANSFER_TARGET)]


async def test_blind_transfer_declined_without_handler(pair):
    results: asyncio.Queue[int] = asyncio.Queue()
    p = await pair(transfer_app(results))
    caller, _ = await p.connect()
    status = await within(results.get(), 3, "the declined transfer's result")
    assert status == 603
    assert not caller.ended.is_set()


async def test_transfer_after_hangup_returns_at_once(pair):
    results: asyncio.Queue[int] = asyncio.Queue()

    async def app(call: Call) -> None:
        await call.wait_ended()
        results.put_nowait(await call.transfer(TRANSFER_TARGET, timeout=10))
        results.put_nowait(await call.hold(timeout=10))

    p = await pair(app, caller_options={"on_refer": lambda call, target: asyncio.sleep(0, 200)})
    caller, _ = await p.connect()
    await asyncio.sleep(0.1)
    caller.hangup()
    assert await within(results.get(), 2, "transfer() on an ended call") == 481
    assert await within(results.get(), 2, "hold() on an ended call") == 481


async def test_refer_for_an_ended_call_is_answered_481(pair):
    """A REFER that arrives after the call ended (the dialog lingers for retransmissions) gets 481."""
    p = await pair(until_ended, caller_options={"on_refer": lambda call, target: asyncio.sleep(0, 200)})
    caller, callee = await p.connect()
    await asyncio.sleep(0.1)
    caller.hangup()
    assert await within(callee.wait_ended(), 2, "the callee's end") == "remote-bye"
    ua = p.callee.ua
    # A REFER sent just as the BYE crossed it: built below the public refer(), which now refuses
    # ended calls, exactly as it would have left before the BYE arrived.
    refer = ua._in_dialog_request(
        callee.session, "REFER", b"", p.callee._now(), extra=[("Refer-To", f"<{TRANSFER_TARGET}>")]
    )
    p.callee._flush()
    for _ in range(100):
        if refer.last_response is not None:
            break
        await asyncio.sleep(0.02)
    assert refer.last_response is not None, "the REFER was never answered"
    assert refer.last_response.status == 481


# -- refusals --------------------------------------------------------------------------------
async def test_call_limit_gives_503(pair):
    p = await pair(until_ended, callee_options={"max_calls": 1})
    first, _ = await p.connect()
    with pytest.raises(DialError) as error:
        await within(p.caller.dial(agent_uri(p.callee), timeout=5), 6, "the second dial")
    assert error.value.status == 503
    assert not first.ended.is_set()
    assert p.callee.ua.stats["rejected_busy"] == 1


async def test_a_saturated_load_source_gives_503_until_it_eases(pair):
    """Admission watches the app's load sources (an agent's speech decoders) beside the media clock."""
    decoders = [0.95]
    p = await pair(until_ended, callee_options={"load_sources": [lambda: decoders[0]]})
    with pytest.raises(DialError) as error:
        await within(p.caller.dial(agent_uri(p.callee), timeout=5), 6, "the refused dial")
    assert error.value.status == 503
    assert p.callee.ua.stats["rejected_busy"] == 1
    decoders[0] = 0.3
    await p.connect()  # admitted again (the media clock's own load is the test process's: low)


async def test_no_common_codec_gives_488(pair):
    p = await pair(until_ended, callee_options={"codecs": ("PCMU",)}, caller_options={"codecs": ("PCMA",)})
    with pytest.raises(DialError) as error:
        await within(p.caller.dial(agent_uri(p.callee), timeout=5), 6, "the dial")
    assert error.value.status == 488
    assert p.callee.stats.rejected == 1
    assert p.inbound.empty()


async def test_pcma_both_sides(pair):
    """Codec choice follows the offer: an A-law-only caller gets A-law audio."""

    async def app(call: Call) -> None:
        call.play(tone(600, 1.0))
        await call.wait_ended()

    p = await pair(app, caller_options={"codecs": ("PCMA",)})
    caller, callee = await p.connect()
    assert caller.stream.codec == callee.stream.codec == "PCMA"
    heard = await within(collect_tone(caller, 20), 3, "the A-law tone")
    assert abs(peak_hz(heard) - 600) < 10


# -- media timeout ---------------------------------------------------------------------------
async def test_media_timeout_hangs_up(pair):
    p = await pair(until_ended, callee_options={"media_timeout": 1.0})
    caller, callee = await p.connect()
    await asyncio.sleep(0.3)
    assert not caller.ended.is_set()
    caller.stream.sending = False
    assert await within(caller.wait_ended(), 4, "the callee to hang up on silence") == "remote-bye"
    assert callee.end_reason == "local-bye"


# -- SIPp peers: digest authentication and CANCEL ---------------------------------------------
@pytest.mark.sipp
async def test_digest_auth_against_sipp(sipp_uas, managers):
    peer: SippUas = await sipp_uas("uas_auth.xml")
    manager = await managers(None, credentials=DigestCredentials("alice", "secret"))
    call = await within(manager.dial(peer.uri, timeout=5), 6, "the authenticated answer")
    assert call.session.auth_attempts == 1
    assert await within(call.wait_ended(), 5, "SIPp's BYE") == "remote-bye"
    assert await peer.wait() == 0, peer.describe()


@pytest.mark.sipp
async def test_digest_auth_wrong_password(sipp_uas, managers):
    peer: SippUas = await sipp_uas("uas_auth.xml")
    manager = await managers(None, credentials=DigestCredentials("alice", "wrong"))
    with pytest.raises(DialError) as error:
        await within(manager.dial(peer.uri, timeout=5), 6, "the refusal")
    assert error.value.status == 403, peer.describe()
    assert await peer.wait() == 0, peer.describe()


@pytest.mark.sipp
async def test_dial_timeout_sends_cancel(sipp_uas, managers):
    peer: SippUas = await sipp_uas("uas_ring_forever.xml")
    manager = await managers(None)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DialError) as error:
        await within(manager.dial(peer.uri, timeout=1.5), 4, "the dial timeout")
    assert error.value.status == 408
    assert 1.4 < loop.time() - started < 2.5
    assert await peer.wait() == 0, peer.describe()
    for _ in range(50):  # the 487 ends the session
        if not manager._legs:
            break
        await asyncio.sleep(0.02)
    assert not manager._legs and not manager.calls


async def test_dial_unreachable_peer_fails(managers):
    """Nothing listens: the dial gives up at its timeout with 408 and leaves no call behind."""
    manager = await managers(None)
    with pytest.raises(DialError) as error:
        await within(manager.dial(f"sip:nobody@{HOST}:{free_port()}", timeout=1.0), 3, "the dial")
    assert error.value.status == 408
    assert not manager.calls


@pytest.mark.sipp
async def test_answer_crossing_the_cancel_is_hung_up(sipp_uas, managers):
    """A 200 that crosses the CANCEL of a timed-out dial is ACKed and hung up, not left running."""
    peer: SippUas = await sipp_uas("uas_answer_after_cancel.xml")
    manager = await managers(None)
    with pytest.raises(DialError) as error:
        await within(manager.dial(peer.uri, timeout=1.0), 3, "the dial timeout")
    assert error.value.status == 408
    assert await peer.wait(5) == 0, peer.describe()
    assert not manager.calls
    assert manager.ua.active_sessions == 0
