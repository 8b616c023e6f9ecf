import g711 as ref
import numpy as np
import pytest

from parley.media import g711

ALL_CODES = bytes(range(256))
ALL_PCM = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)


def test_constants():
    assert g711.SAMPLE_RATE == 8000
    assert g711.FRAME_SAMPLES == 160
    assert g711.SILENCE["PCMU"] == b"\xff" * 160
    assert g711.SILENCE["PCMA"] == b"\xd5" * 160
    assert not g711.decode("PCMU", g711.SILENCE["PCMU"]).any()
    assert np.abs(g711.decode("PCMA", g711.SILENCE["PCMA"])).max() == 8  # A-law has no exact zero


def test_ulaw_round_trip_all_codes():
    # 0x7F is µ-law's "negative zero": it decodes to 0, which encodes as 0xFF.
    assert g711.ulaw_encode(g711.ulaw_decode(ALL_CODES)) == ALL_CODES.replace(b"\x7f", b"\xff")


def test_alaw_round_trip_all_codes():
    assert g711.alaw_encode(g711.alaw_decode(ALL_CODES)) == ALL_CODES


def test_decoded_values_are_distinct_except_ulaw_zero():
    assert len(set(g711.alaw_decode(ALL_CODES).tolist())) == 256
    assert len(set(g711.ulaw_decode(ALL_CODES).tolist())) == 255


@pytest.mark.parametrize(
    ("code", "value"),
    [(0x00, -32124), (0x80, 32124), (0xFF, 0), (0x7F, 0), (0xFE, 8), (0x7E, -8), (0xEF, 132)],
)
def test_ulaw_reference_values(code, value):
    assert g711.ulaw_decode(bytes([code]))[0] == value


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xD4, 24), (0x00, -5504), (0x80, 5504)],
)
def test_alaw_reference_values(code, value):
    assert g711.alaw_decode(bytes([code]))[0] == value


def test_decode_dtype_and_length():
    out = g711.ulaw_decode(b"\xff" * 160)
    assert out.dtype == np.int16 and out.shape == (160,)
    assert g711.alaw_decode(b"").shape == (0,)


def test_decode_agrees_with_g711_package():
    assert np.array_equal(g711.ulaw_decode(ALL_CODES), (ref.decode_ulaw(ALL_CODES) * 32768).astype(np.int16))
    assert np.array_equal(g711.alaw_decode(ALL_CODES), (ref.decode_alaw(ALL_CODES) * 32768).astype(np.int16))


def test_encode_agrees_with_g711_package_for_every_int16():
    as_float = ALL_PCM.astype(np.float32) / 32768
    assert g711.ulaw_encode(ALL_PCM) == ref.encode_ulaw(as_float)
    assert g711.alaw_encode(ALL_PCM) == ref.encode_alaw(as_float)


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_encode_extremes_and_clipping(codec):
    extremes = np.array([-32768, -32767, 32767], dtype=np.int16)
    out = g711.encode(codec, extremes)
    decoded = g711.decode(codec, out)
    assert decoded[0] < -32000 and decoded[1] < -32000 and decoded[2] > 32000
    wide = np.array([-100000, 100000, 3.7, -2.2], dtype=np.float64)
    clipped = g711.encode(codec, wide)
    assert clipped == g711.encode(codec, np.array([-32768, 32767, 4, -2], dtype=np.int16))
    big = np.array([-(10**6), 10**6], dtype=np.int32)
    assert g711.encode(codec, big) == g711.encode(codec, np.array([-32768, 32767], dtype=np.int16))


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_quantisation_error_is_small(codec):
    decoded = g711.decode(codec, g711.encode(codec, ALL_PCM)).astype(np.int32)
    error = np.abs(decoded - ALL_PCM.astype(np.int32))
    # G.711 keeps the error within half a quantisation step: < 3.2% of the magnitude (plus a floor).
    assert np.all(error <= np.abs(ALL_PCM.astype(np.int32)) * 0.032 + 16)
    # monotonic: a larger input never decodes smaller
    assert np.all(np.diff(decoded) >= 0)


def test_dispatch_matches_specific_functions():
    pcm = (np.sin(np.arange(160) / 5) * 12000).astype(np.int16)
    assert g711.encode("PCMU", pcm) == g711.ulaw_encode(pcm)
    assert g711.encode("PCMA", pcm) == g711.alaw_encode(pcm)
    payload = g711.ulaw_encode(pcm)
    assert np.array_equal(g711.decode("PCMU", payload), g711.ulaw_decode(payload))
    assert np.array_equal(g711.decode("PCMA", payload), g711.alaw_decode(payload))


@pytest.mark.parametrize("codec", ["G722", "pcmu", "", "opus"])
def test_unknown_codec_rejected(codec):
    with pytest.raises(ValueError):
        g711.decode(codec, b"\x00")
    with pytest.raises(ValueError):
        g711.encode(codec, np.zeros(1, dtype=np.int16))
    for table in (g711.decode_table, g711.encode_table):
        with pytest.raises(ValueError, match=r"unsupported G\.711 codec"):
            table(codec)


def test_tables_are_what_decode_and_encode_use():
    codes = np.arange(256, dtype=np.uint8)
    samples = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    for codec in g711.CODECS:
        assert np.array_equal(g711.decode_table(codec)[codes], g711.decode(codec, codes.tobytes()))
        encoded = g711.encode_table(codec)[samples.view(np.uint16)].tobytes()
        assert encoded == g711.encode(codec, samples)


def test_encode_does_not_modify_input_and_accepts_memoryview():
    pcm = np.array([1000, -1000], dtype=np.int16)
    g711.ulaw_encode(pcm)
    assert pcm.tolist() == [1000, -1000]
    assert np.array_equal(g711.ulaw_decode(memoryview(b"\x00\x80")), [-32124, 32124])
