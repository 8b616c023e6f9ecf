"""SIP over TLS and SRTP (issue 15): Parley to Parley, and against baresip, a real peer, over loopback.

A certificate authority, a server and a client certificate are made for each test session with the
``openssl`` command (Debian package ``openssl``), valid for 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from integration.harness import HOST, free_port
from parley.sip.tls import TlsConfig
from parley.telephony.call import Call
from parley.telephony.manager import DialError

from .conftest import ManagerFactory
from .test_calls import collect_tone, peak_hz, tone, within

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl not installed (Debian package openssl)")


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a server and client certificate it signed (for 127.0.0.1 and localhost)."""
    if OPENSSL is None:
        pytest.skip("openssl not installed (Debian package openssl)")
    where = tmp_path_factory.mktemp("pki")

    def run(*args: str) -> None:
        subprocess.run([OPENSSL, *args], cwd=where, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=Parley test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign")  # fmt: skip
    for name in ("server", "client", "stranger"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")  # fmt: skip
        (where / f"{name}.ext").write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        )
        if name == "stranger":  # signed by itself, not by the CA
            run("x509", "-req", "-in", f"{name}.csr", "-signkey", f"{name}.key", "-out", f"{name}.pem",
                "-days", "2", "-extfile", f"{name}.ext")  # fmt: skip
        else:
            run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")  # fmt: skip
    return {name: where / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key",
                                             "stranger.pem", "stranger.key")}  # fmt: skip


def tls(certificates: dict[str, Path], who: str = "server", verify_client: bool = False) -> TlsConfig:
    return TlsConfig(certificates[f"{who}.pem"], certificates[f"{who}.key"], port=free_port(),
                     ca_file=certificates["ca.pem"], verify_client=verify_client)  # fmt: skip


async def echo(call: Call) -> None:
    call.on_audio = call.stream.play_frame
    await call.wait_ended()


async def two_way_tone(caller: Call) -> float:
    """Play 440 Hz into an echo call; the frequency that comes back."""
    caller.play(tone(440, 1.0))
    heard = await within(collect_tone(caller, 20), 5, "the echoed tone")
    return peak_hz(heard)


@needs_openssl
@pytest.mark.parametrize("srtp", ["off", "required"])
async def test_a_call_over_tls_echoes_audio(managers: ManagerFactory, certificates, srtp: str) -> None:
    callee = await managers(echo, tls=tls(certificates), srtp=srtp)
    caller = await managers(None, tls=tls(certificates, "client"), srtp=srtp)
    call = await within(
        caller.dial(f"sip:agent@{HOST}:{callee.ua.tls_port};transport=tls", timeout=5), 6, "answer"
    )
    try:
        assert call.session.transport == "TLS"
        assert abs(await two_way_tone(call) - 440) < 10
        (inbound,) = callee.calls.values()
        assert (inbound.srtp is not None) == (srtp == "required") and (call.srtp is not None) == (
            srtp == "required"
        )
    finally:
        call.hangup()
        await within(call.wait_ended(), 3, "the end")


@needs_openssl
@pytest.mark.parametrize(("offered", "policy"), [("off", "required"), ("required", "off")])
async def test_the_srtp_policy_refuses_an_offer_it_does_not_allow_with_488(
    managers: ManagerFactory, certificates, offered: str, policy: str
) -> None:
    """``--srtp required`` refuses a plain RTP offer, ``--srtp off`` an SRTP one: 488, no call."""
    callee = await managers(echo, tls=tls(certificates), srtp=policy)
    caller = await managers(None, tls=tls(certificates, "client"), srtp=offered)
    target = f"sip:agent@{HOST}:{callee.ua.tls_port};transport=tls"
    with pytest.raises(DialError) as error:
        await within(caller.dial(target, timeout=5), 6, "the refused dial")
    assert error.value.status == 488
    assert not callee.calls and callee.stats.rejected == 1


@needs_openssl
async def test_a_reinvite_changes_the_srtp_keys_and_the_audio_goes_on(
    managers: ManagerFactory, certificates
) -> None:
    """RFC 4568 §7.1.4: the caller re-offers with a new key; both sides rekey (the caller's outbound,
    the callee's inbound session), and the echoed tone still comes back, every packet authenticated:
    those the caller sent under its old key while the offer/answer crossed them too."""
    callee = await managers(echo, tls=tls(certificates), srtp="required")
    caller = await managers(None, tls=tls(certificates, "client"), srtp="required")
    call = await within(
        caller.dial(f"sip:agent@{HOST}:{callee.ua.tls_port};transport=tls", timeout=5), 6, "answer"
    )
    try:
        assert abs(await two_way_tone(call) - 440) < 10
        (inbound,) = callee.calls.values()
        assert call.srtp is not None and inbound.srtp is not None
        old_key = call.srtp._keys[1]
        assert await within(call.rekey(), 5, "the re-INVITE's answer") == 200
        assert call.srtp.rekeys == 1 and inbound.srtp.rekeys == 1
        assert call.srtp._keys[1] != old_key and inbound.srtp._keys[2] == call.srtp._keys[1]
        assert abs(await two_way_tone(call) - 440) < 10  # both ways, under the new key
        assert inbound.srtp.rejected == 0 and call.srtp.rejected == 0
        assert await within(call.rekey(), 5, "a second re-INVITE") == 200
        assert inbound.srtp.rekeys == 2
    finally:
        call.hangup()
        await within(call.wait_ended(), 3, "the end")


@needs_openssl
@pytest.mark.parametrize("start", ["srtp", "plain"])
async def test_a_reinvite_turning_srtp_on_or_off_gets_488_and_the_call_goes_on(
    managers: ManagerFactory, certificates, start: str
) -> None:
    """A re-INVITE may change the SDES keys, not whether there is SRTP: one offering plain RTP on an
    SRTP call, or SRTP on a plain call, is answered 488; the call keeps its media as it was (same
    keys, no packet rejected) and the echoed tone still comes back."""
    callee = await managers(echo, tls=tls(certificates), srtp="optional")
    policy = "required" if start == "srtp" else "off"
    caller = await managers(None, tls=tls(certificates, "client"), srtp=policy)
    call = await within(
        caller.dial(f"sip:agent@{HOST}:{callee.ua.tls_port};transport=tls", timeout=5), 6, "answer"
    )
    try:
        (inbound,) = callee.calls.values()
        assert (inbound.srtp is not None) == (call.srtp is not None) == (start == "srtp")
        keys = None if inbound.srtp is None else inbound.srtp._keys
        offer = caller._legs[id(call.session)].sdp  # the caller's side of offer/answer
        offer.srtp, offer._crypto = ("off", None) if start == "srtp" else ("required", None)
        assert await within(call.hold(False), 5, "the re-INVITE's answer") == 488
        assert (inbound.srtp is not None) == (start == "srtp")
        if inbound.srtp is not None:
            assert inbound.srtp._keys == keys and inbound.srtp.rekeys == 0
        assert abs(await two_way_tone(call) - 440) < 10
        if inbound.srtp is not None:
            assert inbound.srtp.rejected == 0 and call.srtp.rejected == 0
    finally:
        call.hangup()
        await within(call.wait_ended(), 3, "the end")


@needs_openssl
async def test_a_client_without_a_certificate_from_the_ca_is_refused(
    managers: ManagerFactory, certificates
) -> None:
    callee = await managers(echo, tls=tls(certificates, verify_client=True))
    stranger = await managers(None, tls=tls(certificates, "stranger"))
    with pytest.raises(DialError) as failed:
        await stranger.dial(f"sip:agent@{HOST}:{callee.ua.tls_port};transport=tls", timeout=5)
    assert failed.value.status == 503  # the handshake failed: a transport error for the INVITE
    trusted = await managers(None, tls=tls(certificates, "client"))
    call = await within(
        trusted.dial(f"sip:agent@{HOST}:{callee.ua.tls_port};transport=tls", timeout=5), 6, "answer"
    )
    call.hangup()
    await within(call.wait_ended(), 3, "the end")


BARESIP = shutil.which("baresip")
needs_baresip = pytest.mark.skipif(
    BARESIP is None, reason="baresip not installed (Debian package baresip-core)"
)


def baresip_config(where: Path, certificates: dict[str, Path], tone_file: Path) -> Path:
    """A baresip home: TLS with our client certificate, SRTP required, a WAV as microphone, and what
    it hears dumped to WAV files (the sndfile module)."""
    home = where / "baresip"
    (home / "dump").mkdir(parents=True)
    identity = home / "client-identity.pem"
    identity.write_text(certificates["client.pem"].read_text() + certificates["client.key"].read_text())
    (home / "config").write_text(
        "poll_method epoll\n"
        f"sip_listen 127.0.0.1:{free_port()}\n"
        f"sip_certificate {identity}\n"
        f"sip_cafile {certificates['ca.pem']}\n"
        "audio_player aufile,/dev/null\n"
        f"audio_source aufile,{tone_file}\n"
        "audio_alert aufile,/dev/null\n"
        "module_path /usr/lib/baresip/modules\n"
        "module g711.so\nmodule aufile.so\nmodule sndfile.so\nmodule srtp.so\n"
        "module_tmp account.so\nmodule_app menu.so\n"
        f"snd_path {home / 'dump'}\n"
    )
    (home / "accounts").write_text(
        "<sip:baresip@127.0.0.1;transport=tls>;regint=0;audio_codecs=PCMU;mediaenc=srtp-mand\n"
    )
    return home


@needs_openssl
@needs_baresip
async def test_baresip_calls_over_tls_with_srtp_and_hears_its_echo(
    managers: ManagerFactory, certificates, tmp_path: Path
) -> None:
    import wave

    rate = 8000
    samples = (0.5 * 32767 * np.sin(2 * np.pi * 440 * np.arange(rate * 6) / rate)).astype(np.int16)
    tone_file = tmp_path / "tone.wav"
    with wave.open(str(tone_file), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    callee = await managers(echo, tls=tls(certificates, verify_client=True), srtp="required")
    home = baresip_config(tmp_path, certificates, tone_file)
    target = f"sip:echo@{HOST}:{callee.ua.tls_port};transport=tls"
    process = await asyncio.create_subprocess_exec(
        BARESIP, "-f", str(home), "-t", "7", "-e", f"/dial {target}",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    seen: list[Call] = []
    for _ in range(100):
        seen.extend(c for c in callee.calls.values() if c not in seen)
        if process.returncode is not None:
            break
        await asyncio.sleep(0.1)
    output, _ = await within(process.communicate(), 20, "baresip to quit")
    log = output.decode(errors="replace")
    assert "SRTP is Enabled" in log, log[-3000:]
    assert len(seen) == 1, log[-3000:]
    call = seen[0]
    assert call.session.transport == "TLS" and call.srtp is not None
    assert call.srtp.rejected == 0 and call.stream.stats.packets_in > 100  # every RTP packet authenticated
    (heard_file,) = (home / "dump").glob("*-dec.wav")
    with wave.open(str(heard_file)) as heard:
        pcm = np.frombuffer(heard.readframes(heard.getnframes()), np.int16)
    loud = np.abs(pcm.astype(np.int32)) > 1000
    assert loud.sum() > rate, "baresip heard almost nothing back"
    start = int(np.argmax(loud))
    assert abs(peak_hz(pcm[start : start + rate]) - 440) < 10  # its own tone, echoed through SRTP both ways
