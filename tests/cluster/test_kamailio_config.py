"""``parley cluster kamailio-config``: what it writes, Kamailio's own check of it, and bad input."""

from __future__ import annotations

import subprocess

import pytest
from click.testing import CliRunner

from integration.harness import KAMAILIO, free_port, needs_kamailio
from parley.cli import main
from parley.cluster.kamailio import Node, dispatcher_list


@pytest.mark.parametrize(
    ("text", "node"),
    [
        ("10.0.0.5", Node("10.0.0.5", 5060, 1)),
        ("10.0.0.5:5070", Node("10.0.0.5", 5070, 1)),
        ("10.0.0.5:5070/4", Node("10.0.0.5", 5070, 4)),
        ("sip-a.example.net/2", Node("sip-a.example.net", 5060, 2)),
    ],
)
def test_nodes_are_read_as_host_port_and_workers(text, node):
    assert Node.parse(text) == node


@pytest.mark.parametrize("text", ["", "10.0.0.5:", "10.0.0.5/0", "10.0.0.5:65535/2", "a b", "h:5060/x"])
def test_a_bad_node_is_refused_with_its_text(text):
    with pytest.raises(ValueError, match=r"HOST\[:PORT\]|workers must be") as error:
        Node.parse(text)
    assert repr(text.strip()) in str(error.value)


def test_the_dispatcher_list_has_one_destination_per_worker_with_a_call_load_id():
    text = dispatcher_list([Node("10.0.0.5", 5060, 2), Node("10.0.0.6", 5070, 1)], max_load=20)
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == [
        "1 sip:10.0.0.5:5060 0 0 duid=10.0.0.5:5060;maxload=20",
        "1 sip:10.0.0.5:5061 0 0 duid=10.0.0.5:5061;maxload=20",
        "1 sip:10.0.0.6:5070 0 0 duid=10.0.0.6:5070;maxload=20",
    ]


@needs_kamailio
def test_the_written_config_passes_kamailios_own_check(tmp_path):
    port = free_port()
    result = CliRunner().invoke(
        main,
        ["cluster", "kamailio-config", "127.0.0.2:5060/2", "127.0.0.3", "--listen", f"127.0.0.1:{port}",
         "--out", str(tmp_path), "--probe-interval", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3 workers on 2 nodes" in result.output
    cfg = (tmp_path / "kamailio.cfg").read_text()
    for needed in ('ds_select_dst("1", "10")', "record_route()", 't_check_status("503")', "ds_next_dst()",
                   '"ds_ping_interval", 2', "ds_load_update()", f"listen=udp:127.0.0.1:{port}"):  # fmt: skip
        assert needed in cfg
    assert str(tmp_path / "dispatcher.list") in cfg
    cmd = [KAMAILIO, "-c", "-f", str(tmp_path / "kamailio.cfg")]
    check = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["10.0.0.5:x"], "HOST[:PORT][/WORKERS]"),
        (["10.0.0.5", "--listen", "localhost"], "expected IP:PORT"),
    ],
)
def test_bad_arguments_get_a_clear_error_and_write_nothing(tmp_path, args, message):
    result = CliRunner().invoke(main, ["cluster", "kamailio-config", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_roll_of_an_unreachable_node_fails_with_its_address():
    port = free_port()
    result = CliRunner().invoke(main, ["cluster", "roll", f"http://127.0.0.1:{port}", "--timeout", "5"])
    assert result.exit_code == 1
    assert f"127.0.0.1:{port}" in result.output


def test_status_of_an_unreachable_node_exits_1():
    port = free_port()
    result = CliRunner().invoke(main, ["cluster", "status", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1
    assert "unreachable" in result.output


def options_answered(host: str, port: int, source: str, count: int) -> int:
    """Send ``count`` OPTIONS to Kamailio at once from ``source``; how many it answered 200 within 2 s."""
    import socket
    import time

    from parley.cluster.probe import options_request
    from parley.sip.message import SipResponse, parse_message

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        requests = [options_request(host, port, sock.getsockname()) for _ in range(count)]
        for request in requests:
            sock.sendto(request.serialize(), (host, port))
        sent = {request.call_id for request in requests}
        answered: set[str] = set()
        deadline = time.monotonic() + 2.0
        while (left := deadline - time.monotonic()) > 0 and len(answered) < count:
            sock.settimeout(left)
            try:
                message = parse_message(sock.recv(65535))
            except TimeoutError:
                break
            if isinstance(message, SipResponse) and message.status == 200 and message.call_id in sent:
                answered.add(message.call_id)
    return len(answered)


@needs_kamailio
@pytest.mark.kamailio
@pytest.mark.parametrize("rate", [0, 10])
def test_the_rate_per_source_drops_a_flooding_source_and_no_other(tmp_path, rate):
    import asyncio

    from integration.harness import Kamailio
    from parley.cluster.probe import wait_until_ready

    port = free_port()
    made = CliRunner().invoke(
        main,
        ["cluster", "kamailio-config", "127.0.0.2:5060/2", "--listen", f"127.0.0.1:{port}", "--out",
         str(tmp_path), "--children", "2", "--rate-per-ip", str(rate)],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    proxy = Kamailio.start(port, tmp_path / "kamailio.cfg", tmp_path)
    try:
        up = wait_until_ready("127.0.0.1", port, timeout=15, source="127.0.0.5")
        assert asyncio.run(up), proxy.log_text()
        flood = options_answered("127.0.0.1", port, "127.0.0.1", 60)
        other = options_answered("127.0.0.1", port, "127.0.0.6", 3)
    finally:
        proxy.stop()
    print(f"rate {rate}: {flood} of 60 answered")
    if rate:  # pike lets 2 s worth through (2 × rate), then drops the source's requests
        assert 2 * rate <= flood <= 2 * rate + 10, flood
    else:
        assert flood == 60
    assert other == 3
