"""SDP parsing and RFC 3264 offer/answer."""

from __future__ import annotations

import contextlib

import pytest
import sdp_transform
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.sip.sdp import (
    Codec,
    LocalSdp,
    MediaOffer,
    NoCommonCodec,
    SdpError,
    parse_sdp,
)


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


# SIPp's built-in UAC scenario (uac.xml) offer.
SIPP_OFFER = sdp(
    "v=0",
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1",
    "s=-",
    "c=IN IP4 127.0.0.1",
    "t=0 0",
    "m=audio 6000 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
)

PCMA_FIRST = sdp(
    "v=0",
    "o=- 1000 1000 IN IP4 192.0.2.10",
    "s=call",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "m=audio 40000 RTP/AVP 8 0 101",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=sendrecv",
)

ASTERISK_OFFER = sdp(
    "v=0",
    "o=- 1234567890 1234567890 IN IP4 203.0.113.5",
    "s=Asterisk",
    "c=IN IP4 203.0.113.5",
    "t=0 0",
    "m=audio 10234 RTP/AVP 107 9 18 8 0 96",
    "a=rtpmap:107 opus/48000/2",
    "a=fmtp:107 useinbandfec=1",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:18 G729/8000",
    "a=fmtp:18 annexb=no",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:96 telephone-event/8000",
    "a=fmtp:96 0-16",
    "a=ptime:20",
    "a=maxptime:150",
    "a=sendrecv",
)

FREESWITCH_OFFER = sdp(
    "v=0",
    "o=FreeSWITCH 1700000000 1700000001 IN IP4 198.51.100.7",
    "s=FreeSWITCH",
    "c=IN IP4 198.51.100.7",
    "t=0 0",
    "m=audio 25678 RTP/AVP 102 9 0 8 103 101 13",
    "a=rtpmap:102 opus/48000/2",
    "a=fmtp:102 useinbandfec=1; maxaveragebitrate=30000",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:103 telephone-event/48000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=rtpmap:13 CN/8000",
    "a=ptime:20",
)


def offer_with(*media: str, session: tuple[str, ...] = ("c=IN IP4 192.0.2.1",)) -> bytes:
    return sdp("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", *session, "t=0 0", *media)


def local() -> LocalSdp:
    return LocalSdp("10.0.0.5", 30000, session_id=777)


# --- parsing -----------------------------------------------------------------------------------------


def test_parse_sipp_default_offer():
    offer = parse_sdp(SIPP_OFFER)
    assert offer.address == "127.0.0.1"
    assert offer.port == 6000
    assert offer.codecs == [Codec(0, "PCMU", 8000)]
    assert offer.telephone_event_pt is None
    assert offer.direction == "sendrecv"
    assert offer.ptime is None
    assert offer.session_id == "53655765"
    assert offer.session_version == 2353687637
    assert not offer.rejected
    assert not offer.address_hold


def test_parse_static_payload_without_rtpmap():
    offer = parse_sdp(offer_with("m=audio 6000 RTP/AVP 8 0"))
    assert [(c.payload_type, c.name, c.clock_rate) for c in offer.codecs] == [
        (8, "PCMA", 8000),
        (0, "PCMU", 8000),
    ]


def test_parse_pcma_first_with_telephone_event():
    offer = parse_sdp(PCMA_FIRST)
    assert [c.name for c in offer.codecs] == ["PCMA", "PCMU", "telephone-event"]
    assert offer.telephone_event_pt == 101
    assert offer.ptime == 20


def test_parse_asterisk_offer_keeps_order_and_unsupported_codecs():
    offer = parse_sdp(ASTERISK_OFFER)
    assert [c.name for c in offer.codecs] == ["opus", "G722", "G729", "PCMA", "PCMU", "telephone-event"]
    assert offer.codecs[0] == Codec(107, "opus", 48000, 2)
    assert offer.telephone_event_pt == 96
    assert (offer.address, offer.port) == ("203.0.113.5", 10234)


def test_parse_freeswitch_picks_8khz_telephone_event():
    offer = parse_sdp(FREESWITCH_OFFER)
    assert offer.telephone_event_pt == 101
    assert offer.session_version == 1700000001


def test_media_level_connection_overrides_session_level():
    offer = parse_sdp(offer_with("m=audio 7000 RTP/AVP 0", "c=IN IP4 198.51.100.20"))
    assert offer.address == "198.51.100.20"


def test_connection_multicast_ttl_is_stripped_and_ipv6_accepted():
    assert parse_sdp(offer_with("m=audio 7000 RTP/AVP 0", session=("c=IN IP4 233.252.0.1/127",))).address == (
        "233.252.0.1"
    )
    assert parse_sdp(offer_with("m=audio 7000 RTP/AVP 0", session=("c=IN IP6 2001:db8::1",))).address == (
        "2001:db8::1"
    )


def test_old_style_hold_connection_address():
    offer = parse_sdp(offer_with("m=audio 7000 RTP/AVP 0", session=("c=IN IP4 0.0.0.0",)))
    assert offer.address_hold
    assert offer.direction == "sendonly"  # it may still send, but we must not send to 0.0.0.0
    recvonly = parse_sdp(offer_with("m=audio 7000 RTP/AVP 0", "a=recvonly", session=("c=IN IP4 0.0.0.0",)))
    assert recvonly.direction == "inactive"


@pytest.mark.parametrize("direction", ["sendonly", "recvonly", "inactive", "sendrecv"])
def test_media_direction(direction):
    assert parse_sdp(offer_with("m=audio 7000 RTP/AVP 0", f"a={direction}")).direction == direction


def test_session_level_direction_applies_unless_media_overrides():
    assert parse_sdp(offer_with("a=inactive", "m=audio 7000 RTP/AVP 0")).direction == "inactive"
    assert parse_sdp(offer_with("a=inactive", "m=audio 7000 RTP/AVP 0", "a=sendonly")).direction == "sendonly"


def test_port_zero_means_disabled():
    offer = parse_sdp(offer_with("m=audio 0 RTP/AVP 0"))
    assert offer.rejected
    assert offer.direction == "inactive"


def test_first_audio_stream_after_video():
    offer = parse_sdp(
        offer_with("m=video 5000 RTP/AVP 96", "a=rtpmap:96 H264/90000", "m=audio 6000 RTP/AVP 8")
    )
    assert offer.stream_index == 1
    assert offer.codecs == [Codec(8, "PCMA", 8000)]


def test_plain_rtp_audio_preferred_over_srtp():
    offer = parse_sdp(offer_with("m=audio 6000 RTP/SAVP 0", "m=audio 6002 RTP/AVP 0"))
    assert (offer.stream_index, offer.port, offer.protocol) == (1, 6002, "RTP/AVP")


def test_lf_only_line_endings_accepted():
    assert parse_sdp(SIPP_OFFER.replace(b"\r\n", b"\n")).port == 6000


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"hello world",
        SIPP_OFFER.replace(b"v=0", b"v=1"),
        SIPP_OFFER.replace(b"o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n", b""),
        SIPP_OFFER.replace(b"53655765", b"abc"),
        SIPP_OFFER.replace(b"m=audio", b"m=video"),  # no audio stream
        SIPP_OFFER.replace(b"6000", b"99999"),
        SIPP_OFFER.replace(b"6000", b"x"),
        SIPP_OFFER.replace(b"RTP/AVP 0", b"RTP/AVP"),
        SIPP_OFFER.replace(b"RTP/AVP 0", b"RTP/AVP PCMU"),
        SIPP_OFFER.replace(b"RTP/AVP 0", b"RTP/AVP 200"),
        SIPP_OFFER.replace(b"c=IN IP4 127.0.0.1\r\n", b""),  # no connection address
        SIPP_OFFER.replace(b"127.0.0.1\r\nt=", b"999.1.2.3\r\nt="),
        SIPP_OFFER.replace(b"127.0.0.1\r\nt=", b"\r\nt="),
        b"v=0\r\n" * 70_000,
    ],
)
def test_malformed_sdp(body):
    with pytest.raises(SdpError):
        parse_sdp(body)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_random_text_raises_only_sdp_error(text):
    with contextlib.suppress(SdpError):
        parse_sdp(text.encode("utf-8", "surrogatepass"))


sdp_line = st.builds(
    lambda kind, rest: f"{kind}={rest}",
    st.sampled_from("vosctmab"),
    st.text(
        alphabet=st.sampled_from("audio RTP/AVP IN IP4 0123456789.:/-=rtpmap PCMU sendonly"), max_size=30
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(sdp_line, max_size=12))
def test_random_sdp_like_lines_parse_and_answer(lines):
    body = SIPP_OFFER + "\r\n".join(lines).encode()
    try:
        offer = parse_sdp(body)
    except SdpError:
        return
    assert 0 <= offer.port <= 65535
    try:
        body, media = local().answer(offer)
    except NoCommonCodec:
        return
    answer = parse_sdp(body)  # whatever we answer is itself valid SDP with the offer's m-lines
    assert len(answer.media_lines) == len(offer.media_lines)
    assert media.codec in ("PCMU", "PCMA")


# --- answers -----------------------------------------------------------------------------------------


def test_answer_to_sipp_offer():
    body, media = local().answer(parse_sdp(SIPP_OFFER))
    assert body.endswith(b"\r\n") and b"\n" not in body.replace(b"\r\n", b"")
    text = body.decode()
    assert text.startswith("v=0\r\no=parley 777 0 IN IP4 10.0.0.5\r\ns=")
    assert "c=IN IP4 10.0.0.5\r\n" in text
    assert "t=0 0\r\n" in text
    assert "m=audio 30000 RTP/AVP 0\r\n" in text
    assert "a=rtpmap:0 PCMU/8000\r\n" in text
    assert "a=ptime:20\r\n" in text
    assert "a=sendrecv\r\n" in text
    assert "telephone-event" not in text  # not offered, so not answered
    assert media.codec == "PCMU"
    assert media.payload_type == 0
    assert media.telephone_event_pt is None
    assert (media.remote_address, media.remote_port) == ("127.0.0.1", 6000)
    assert media.send and media.receive
    assert media.ptime == 20


def test_answer_is_valid_sdp_that_parses_back():
    body, _ = local().answer(parse_sdp(PCMA_FIRST))
    parsed = sdp_transform.parse(body.decode())
    assert parsed["origin"]["username"] == "parley"
    assert parsed["timing"] == {"start": 0, "stop": 0}
    again = parse_sdp(body)
    assert again.codecs[0].name == "PCMA"
    assert again.telephone_event_pt == 101


def test_answer_follows_offerer_preference():
    _, media = local().answer(parse_sdp(PCMA_FIRST))
    assert (media.codec, media.payload_type) == ("PCMA", 8)


def test_answer_skips_unsupported_codecs_in_offerer_order():
    body, media = local().answer(parse_sdp(ASTERISK_OFFER))
    assert (media.codec, media.payload_type) == ("PCMA", 8)
    assert media.telephone_event_pt == 96
    text = body.decode()
    assert "m=audio 30000 RTP/AVP 8 96\r\n" in text
    assert "a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-16\r\n" in text
    assert "opus" not in text and "G729" not in text


def test_answer_echoes_offerers_telephone_event_pt():
    body, media = local().answer(parse_sdp(FREESWITCH_OFFER))
    assert (media.codec, media.telephone_event_pt) == ("PCMU", 101)
    assert "m=audio 30000 RTP/AVP 0 101\r\n" in body.decode()


def test_answer_with_our_codec_preference_restricted():
    sdp_side = LocalSdp("10.0.0.5", 30000, codecs=("PCMA",), session_id=1)
    _, media = sdp_side.answer(parse_sdp(FREESWITCH_OFFER))
    assert media.codec == "PCMA"


def test_dynamic_payload_type_for_g711_is_echoed():
    offer = parse_sdp(offer_with("m=audio 6000 RTP/AVP 97", "a=rtpmap:97 pcmu/8000"))
    body, media = local().answer(offer)
    assert (media.codec, media.payload_type) == ("PCMU", 97)
    assert "a=rtpmap:97 PCMU/8000" in body.decode()


def test_no_common_codec_is_488():
    offer = parse_sdp(offer_with("m=audio 6000 RTP/AVP 18 9", "a=rtpmap:18 G729/8000"))
    sdp_side = local()
    with pytest.raises(NoCommonCodec):
        sdp_side.answer(offer)
    assert issubclass(NoCommonCodec, SdpError)
    # A failed answer changes nothing: the next one still has version 0.
    body, _ = sdp_side.answer(parse_sdp(SIPP_OFFER))
    assert b"o=parley 777 0 " in body


def test_stereo_pcmu_is_not_a_match():
    with pytest.raises(NoCommonCodec):
        local().answer(parse_sdp(offer_with("m=audio 6000 RTP/AVP 96", "a=rtpmap:96 PCMU/8000/2")))


def test_srtp_only_offer_is_488():
    with pytest.raises(NoCommonCodec):
        local().answer(parse_sdp(offer_with("m=audio 6000 RTP/SAVP 0")))


@pytest.mark.parametrize(
    ("offered", "answered", "send", "receive"),
    [
        ("sendrecv", "sendrecv", True, True),
        ("sendonly", "recvonly", False, True),
        ("recvonly", "sendonly", True, False),
        ("inactive", "inactive", False, False),
    ],
)
def test_answer_direction_mapping(offered, answered, send, receive):
    body, media = local().answer(parse_sdp(offer_with("m=audio 6000 RTP/AVP 0", f"a={offered}")))
    assert f"a={answered}\r\n" in body.decode()
    assert (media.send, media.receive) == (send, receive)


def test_answer_while_we_hold_keeps_our_direction():
    sdp_side = local()
    sdp_side.offer("sendonly")
    body, media = sdp_side.answer(parse_sdp(offer_with("m=audio 6000 RTP/AVP 0")))
    assert "a=sendonly\r\n" in body.decode()
    assert (media.send, media.receive) == (True, False)
    body, media = sdp_side.answer(parse_sdp(offer_with("m=audio 6000 RTP/AVP 0", "a=sendonly")))
    assert "a=inactive\r\n" in body.decode()
    assert (media.send, media.receive) == (False, False)


def test_answer_to_old_style_hold():
    offer = parse_sdp(offer_with("m=audio 6000 RTP/AVP 0", session=("c=IN IP4 0.0.0.0",)))
    body, media = local().answer(offer)
    assert "a=recvonly\r\n" in body.decode()
    assert "c=IN IP4 10.0.0.5" in body.decode()
    assert not media.send
    assert media.receive


def test_answer_port_zero_when_offer_port_zero():
    body, media = local().answer(parse_sdp(offer_with("m=audio 0 RTP/AVP 18", "a=rtpmap:18 G729/8000")))
    assert "m=audio 0 RTP/AVP 0\r\n" in body.decode()
    assert not media.send and not media.receive
    assert parse_sdp(body).rejected


def test_answer_rejects_other_streams_keeping_m_lines():
    offer = parse_sdp(
        offer_with(
            "m=audio 6000 RTP/AVP 0",
            "m=video 6002 RTP/AVP 96 97",
            "a=rtpmap:96 H264/90000",
            "m=audio 6004 RTP/AVP 8",
        )
    )
    body, _ = local().answer(offer)
    text = body.decode()
    assert text.count("m=") == 3
    assert "m=audio 30000 RTP/AVP 0\r\n" in text
    assert "m=video 0 RTP/AVP 96 97\r\n" in text
    assert "m=audio 0 RTP/AVP 8\r\n" in text
    assert text.index("m=audio 30000") < text.index("m=video") < text.index("m=audio 0")


def test_answer_uses_remote_ptime_for_sending():
    _, media = local().answer(parse_sdp(offer_with("m=audio 6000 RTP/AVP 0", "a=ptime:30")))
    assert media.ptime == 30
    _, media = local().answer(parse_sdp(offer_with("m=audio 6000 RTP/AVP 0", "a=ptime:7")))
    assert media.ptime == 20


def test_version_increments_only_when_sdp_changes():
    sdp_side = local()
    offer = parse_sdp(SIPP_OFFER)
    first, _ = sdp_side.answer(offer)
    again, _ = sdp_side.answer(offer)  # re-INVITE with the same offer
    assert first == again
    assert b"o=parley 777 0 " in again
    held, _ = sdp_side.answer(parse_sdp(SIPP_OFFER.replace(b"PCMU/8000", b"PCMU/8000\r\na=sendonly")))
    assert b"o=parley 777 1 " in held
    assert b"a=recvonly" in held
    resumed, _ = sdp_side.answer(offer)
    assert b"o=parley 777 2 " in resumed
    sdp_side.set_address("10.0.0.6", 30002)
    moved, _ = sdp_side.answer(offer)
    assert b"o=parley 777 3 IN IP4 10.0.0.6" in moved
    assert b"m=audio 30002 " in moved
    assert sdp_side.version == 3


def test_local_sdp_ipv6_address():
    body = LocalSdp("2001:db8::5", 30000, session_id=5).offer()
    assert b"o=parley 5 0 IN IP6 2001:db8::5\r\n" in body
    assert b"c=IN IP6 2001:db8::5\r\n" in body


def test_local_sdp_rejects_bad_configuration():
    with pytest.raises(ValueError):
        LocalSdp("10.0.0.1\r\nx=evil", 30000)
    with pytest.raises(ValueError):
        LocalSdp("10.0.0.1", 0)
    with pytest.raises(ValueError):
        LocalSdp("10.0.0.1", 30000, codecs=("G729",))
    with pytest.raises(ValueError):
        LocalSdp("10.0.0.1", 30000, telephone_event_pt=8)
    with pytest.raises(ValueError):
        local().offer("hold")


def test_random_session_id():
    ids = {LocalSdp("10.0.0.1", 30000).session_id for _ in range(5)}
    assert len(ids) > 1
    assert all(0 <= i < 2**31 for i in ids)


# --- Parley as the offerer ------------------------------------------------------------------------------


def test_offer_lists_our_codecs():
    text = local().offer().decode()
    assert text == (
        "v=0\r\n"
        "o=parley 777 0 IN IP4 10.0.0.5\r\n"
        "s=parley\r\n"
        "c=IN IP4 10.0.0.5\r\n"
        "t=0 0\r\n"
        "m=audio 30000 RTP/AVP 0 8 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-16\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    )


def test_offer_without_telephone_event():
    text = LocalSdp("10.0.0.5", 30000, codecs=("PCMA", "PCMU"), telephone_event_pt=None).offer().decode()
    assert "m=audio 30000 RTP/AVP 8 0\r\n" in text
    assert "telephone-event" not in text and "fmtp" not in text


def test_offer_answer_round_trip_between_two_parleys():
    caller = LocalSdp("10.0.0.1", 20000, codecs=("PCMA", "PCMU"), session_id=1)
    callee = LocalSdp("10.0.0.2", 40000, session_id=2)
    answer_body, callee_media = callee.answer(parse_sdp(caller.offer()))
    caller_media = caller.accept_answer(parse_sdp(answer_body))
    assert callee_media.codec == caller_media.codec == "PCMA"
    assert callee_media.telephone_event_pt == caller_media.telephone_event_pt == 101
    assert (callee_media.remote_address, callee_media.remote_port) == ("10.0.0.1", 20000)
    assert (caller_media.remote_address, caller_media.remote_port) == ("10.0.0.2", 40000)
    assert caller_media.send and caller_media.receive


def test_accept_answer_from_sipp_style_uas():
    caller = local()
    caller.offer()
    answer = parse_sdp(
        sdp(
            "v=0",
            "o=user1 53655765 2353687637 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            "m=audio 6000 RTP/AVP 0",
            "a=rtpmap:0 PCMU/8000",
        )
    )
    media = caller.accept_answer(answer)
    assert (media.codec, media.payload_type, media.telephone_event_pt) == ("PCMU", 0, None)


def test_reinvite_hold_and_resume():
    caller = local()
    callee = LocalSdp("10.0.0.2", 40000, session_id=2)
    callee.answer(parse_sdp(caller.offer()))
    hold = caller.offer("sendonly")
    assert b"a=sendonly\r\n" in hold
    assert b"o=parley 777 1 " in hold
    answer_body, callee_media = callee.answer(parse_sdp(hold))
    assert b"a=recvonly\r\n" in answer_body
    assert (callee_media.send, callee_media.receive) == (False, True)
    caller_media = caller.accept_answer(parse_sdp(answer_body))
    assert (caller_media.send, caller_media.receive) == (True, False)
    resume = caller.offer()
    assert b"o=parley 777 2 " in resume
    caller_media = caller.accept_answer(parse_sdp(callee.answer(parse_sdp(resume))[0]))
    assert caller_media.send and caller_media.receive


def test_same_reoffer_keeps_version():
    caller = local()
    assert caller.offer() == caller.offer()
    assert caller.version == 0


def test_accept_answer_without_common_codec():
    caller = local()
    caller.offer()
    with pytest.raises(NoCommonCodec):
        caller.accept_answer(parse_sdp(offer_with("m=audio 6000 RTP/AVP 18")))


def test_accept_rejected_answer():
    caller = local()
    caller.offer()
    media = caller.accept_answer(parse_sdp(offer_with("m=audio 0 RTP/AVP 0")))
    assert not media.send and not media.receive


def test_accept_answer_with_wrong_m_line_count():
    caller = local()
    caller.offer()
    with pytest.raises(SdpError):
        caller.accept_answer(parse_sdp(offer_with("m=audio 6000 RTP/AVP 0", "m=video 0 RTP/AVP 96")))


def test_reoffer_keeps_rejected_streams():
    sdp_side = local()
    sdp_side.answer(parse_sdp(offer_with("m=video 5000 RTP/AVP 96", "m=audio 6000 RTP/AVP 0")))
    text = sdp_side.offer("sendonly").decode()
    assert text.index("m=video 0 RTP/AVP 96\r\n") < text.index("m=audio 30000 RTP/AVP 0 8 101\r\n")


def test_manual_media_offer():
    offer = MediaOffer(
        address="192.0.2.9",
        port=5004,
        codecs=[Codec(8, "PCMA", 8000)],
        telephone_event_pt=None,
        direction="sendrecv",
        ptime=None,
        session_id="1",
        session_version=1,
    )
    body, media = local().answer(offer)
    assert media.codec == "PCMA"
    assert body.count(b"m=") == 1


# -- SRTP with SDES keys (RFC 3711, RFC 4568) ------------------------------------------------------
def test_srtp_offer_and_answer_exchange_keys() -> None:
    import base64

    caller = LocalSdp("192.0.2.1", 4000, srtp="required")
    callee = LocalSdp("192.0.2.2", 5000, srtp="optional")
    offer = caller.offer()
    assert b"m=audio 4000 RTP/SAVP 0 8 101" in offer
    assert b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in offer
    body, callee_media = callee.answer(parse_sdp(offer))
    assert b"RTP/SAVP" in body and b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in body
    caller_media = caller.accept_answer(parse_sdp(body))
    assert caller_media.srtp is not None and callee_media.srtp is not None
    assert caller_media.srtp.local_key == callee_media.srtp.remote_key
    assert caller_media.srtp.remote_key == callee_media.srtp.local_key
    assert caller_media.srtp.local_key != caller_media.srtp.remote_key
    assert len(base64.b64decode(offer.split(b"inline:")[1].split(b"\r\n")[0])) == 30
    assert "keys=<hidden>" in repr(caller_media.srtp) and "inline" not in repr(parse_sdp(offer))


def test_srtp_policy_decides_what_is_answered() -> None:
    plain = sdp(
        "v=0", "o=a 1 1 IN IP4 192.0.2.9", "s=-", "c=IN IP4 192.0.2.9", "t=0 0", "m=audio 6000 RTP/AVP 0"
    )
    with pytest.raises(NoCommonCodec, match="SRTP is required"):
        LocalSdp("192.0.2.1", 4000, srtp="required").answer(parse_sdp(plain))
    _, media = LocalSdp("192.0.2.1", 4000, srtp="optional").answer(parse_sdp(plain))
    assert media.srtp is None
    secure = LocalSdp("192.0.2.8", 4000, srtp="required").offer()
    with pytest.raises(NoCommonCodec, match="unsupported audio transport"):
        LocalSdp("192.0.2.1", 4000, srtp="off").answer(parse_sdp(secure))
    no_key = secure.split(b"a=crypto")[0] + b"a=sendrecv\r\n"
    with pytest.raises(NoCommonCodec, match="no usable a=crypto"):
        LocalSdp("192.0.2.1", 4000).answer(parse_sdp(no_key))
    bad_key = secure.replace(b"inline:", b"inline:AAAA")
    with pytest.raises(NoCommonCodec):
        LocalSdp("192.0.2.1", 4000).answer(parse_sdp(bad_key))
    with pytest.raises(ValueError):
        LocalSdp("192.0.2.1", 4000, srtp="maybe")


def test_an_answer_refusing_our_srtp_offer_is_refused() -> None:
    caller = LocalSdp("192.0.2.1", 4000, srtp="required")
    caller.offer()
    plain = LocalSdp("192.0.2.2", 5000, srtp="off")
    with pytest.raises(NoCommonCodec):
        plain.answer(parse_sdp(caller.offer()))
    answer = sdp(
        "v=0", "o=b 1 1 IN IP4 192.0.2.2", "s=-", "c=IN IP4 192.0.2.2", "t=0 0", "m=audio 5000 RTP/AVP 0"
    )
    with pytest.raises(NoCommonCodec, match="does not accept our SRTP"):
        caller.accept_answer(parse_sdp(answer))
