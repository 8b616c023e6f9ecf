"""``parley serve`` as an attacker and a strict peer find it (issue 15), with a SIPp call after each.

The server's own log (its stderr) must hold no traceback after hostile input, and a normal call
must still work.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from .harness import HOST, UdpClient, assert_sipp_ok, header, needs_sipp, run_sipp, sip_request

RFC4475_DIR = Path(__file__).parents[2].parent / "shared" / "rfc4475"


def no_traceback(server) -> None:
    log = "".join(server.stderr_lines)
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]


@needs_sipp
def test_rfc4475_torture_messages_then_a_normal_call(parley_server, tmp_path):
    import pytest

    if not RFC4475_DIR.is_dir():
        pytest.skip(f"RFC 4475 messages not found at {RFC4475_DIR} (../shared/rfc4475 beside the repo)")
    server = parley_server(transport="both")
    client = UdpClient()
    messages = sorted(RFC4475_DIR.glob("*.dat"))
    for path in messages:
        client.send(path.read_bytes(), server.port)
        for data in (path.read_bytes(),):  # and once over TCP, each on its own connection
            with socket.create_connection((HOST, server.port), timeout=2) as stream:
                stream.sendall(data)
    time.sleep(0.5)
    result = run_sipp("uac_pcmu.xml", f"{HOST}:{server.port}", tmp_path=tmp_path, duration_ms=1000)
    assert_sipp_ok(result)
    stats = server.stop()
    assert stats["parse_errors"] >= 15, stats
    no_traceback(server)


def test_sources_outside_the_allow_list_get_no_answer(parley_server):
    server = parley_server(transport="udp", extra=["--allow", "192.0.2.0/24"])
    client = UdpClient()
    client.send(sip_request("OPTIONS", server.port, client.port), server.port)
    assert client.response("OPTIONS", timeout=1.0) is None
    stats = server.stop()
    assert stats["sip"]["refused_source"] == 1, stats["sip"]
    assert "allow-list" in "".join(server.stderr_lines)
    no_traceback(server)


def test_a_flood_from_one_source_is_rate_limited_and_calls_from_others_go_on(parley_server, tmp_path):
    server = parley_server(transport="udp", extra=["--rate-per-ip", "50", "--rate-action", "reply"])
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.bind(("127.0.0.2", 0))
    started = last = time.monotonic()
    statuses = []

    def drain(timeout: float) -> None:
        nonlocal last
        flood.settimeout(timeout)
        try:
            while True:
                statuses.append(flood.recv(65535).split(b" ", 2)[1])
                last = time.monotonic()
        except (TimeoutError, BlockingIOError):
            pass

    for i in range(400):
        flood.sendto(sip_request("OPTIONS", server.port, flood.getsockname()[1], call_id=f"f{i}"),
                     (HOST, server.port))  # fmt: skip
        if i % 10 == 9:  # 200 a second, paced so that no socket buffer overflows
            drain(0.05)
    drain(1.0)
    assert len(statuses) >= 390, len(statuses)
    client = UdpClient()
    client.send(sip_request("OPTIONS", server.port, client.port), server.port)
    answer = client.response("OPTIONS", timeout=2.0)
    assert answer is not None and answer.startswith("SIP/2.0 200")
    stats = server.stop()
    # A burst of 100 (twice the rate) passes, then 50 a second while the flood lasts: the rest get 503.
    assert statuses.count(b"200") <= 100 + 50 * (last - started) + 1, (statuses, last - started)
    assert statuses.count(b"503") >= 100, statuses
    assert stats["sip"]["rate_limited"] == statuses.count(b"503"), stats["sip"]
    no_traceback(server)


@needs_sipp
def test_sipp_answers_the_digest_challenge_and_a_wrong_password_is_refused(parley_server, tmp_path):
    from parley.sip.auth import DigestCredentials, parse_challenge

    users = tmp_path / "users"
    users.write_text("# who may call\nsipp:s3cret\n")
    server = parley_server(transport="udp", extra=["--auth-users", str(users), "--auth-realm", "parley.test"])
    target = f"{HOST}:{server.port}"
    good = run_sipp(
        "uac_auth.xml", target, tmp_path=tmp_path, duration_ms=500, extra=["-au", "sipp", "-ap", "s3cret"]
    )
    assert_sipp_ok(good)
    # A caller with the wrong password (Parley's own digest client answering the challenge).
    client = UdpClient()
    client.send(sip_request("INVITE", server.port, client.port, call_id="bad-1"), server.port)
    challenged = client.response("INVITE", timeout=3.0)
    assert challenged is not None and challenged.startswith("SIP/2.0 401")
    challenge = parse_challenge(header(challenged, "WWW-Authenticate") or "")
    uri = f"sip:echo@{HOST}:{server.port}"
    credentials = DigestCredentials("sipp", "wrong").authorize(challenge, "INVITE", uri)
    retry = sip_request(
        "INVITE", server.port, client.port, call_id="bad-1", cseq=2, extra=f"Authorization: {credentials}"
    )
    client.send(retry, server.port)
    refused = client.response("INVITE", timeout=3.0)
    assert refused is not None and refused.startswith("SIP/2.0 401")
    stats = server.stop()
    assert stats["answered"] == 1, stats
    assert stats["sip"]["auth_challenged"] == 2 and stats["sip"]["auth_failed"] == 1, stats["sip"]
    log = "".join(server.stderr_lines)
    assert "authentication failed (wrong password)" in log and "s3cret" not in log and "sipp" not in log
    no_traceback(server)
