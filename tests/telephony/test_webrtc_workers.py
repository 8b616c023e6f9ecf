"""Browser calls on a node of two workers: the supervisor serves the page and routes each offer to a
ready worker, whose answer carries its own ICE candidates, so the call's media goes to that worker.
Each worker takes one call (``--max-calls 1``): two browsers are both answered, by one worker each
(the second offer passed on by a worker at its limit if it went there), and a third is refused.

The node is on 127.0.0.2, so that its address is not loopback's 127.0.0.1, where its workers answer
the routed offers: a browser reaches only the supervisor's page (its rate limit and admission), never a
worker's signalling port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from cluster.nodes import Node
from integration.harness import ROOT, free_port, rtp_range, spawn_until_ready

from .webrtc_peer import BrowserPeer

pytestmark = pytest.mark.timeout(150)
NODE_HOST = "127.0.0.2"  # not the workers' signalling address (127.0.0.1)


@pytest.fixture
def node(tmp_path) -> Iterator[tuple[Node, int]]:
    page = free_port(block=3)  # the node's page, then worker 0's and worker 1's signalling
    node = Node(tmp_path, NODE_HOST, workers=2, extra=["--webrtc-port", str(page), "--max-calls", "1"])
    try:
        yield node, page
    finally:
        if node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
            try:
                node.proc.wait(timeout=30)
            except Exception:
                node.kill()


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(8000 * seconds)) / 8000
    return (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


async def test_the_node_page_routes_each_browser_call_to_a_worker_that_takes_it(node) -> None:
    node, page = node
    url = f"http://{NODE_HOST}:{page}/offer"
    peers = [BrowserPeer() for _ in range(3)]
    try:
        answered = [await peers[0].call(url), await peers[1].call(url)]
        assert [r.status_code for r in answered] == [200, 200], [r.text for r in answered]
        refused = await peers[2].call(url)  # both workers are at their one call
        assert refused.status_code == 503 and "busy" in refused.json()["error"], refused.text
        for peer in peers[:2]:
            await asyncio.wait_for(peer.connected.wait(), 20)
            peer.say(tone(2.0))
        await asyncio.sleep(3.0)
        for peer in peers[:2]:  # the echo came back from the worker the browser's media went to
            assert sum(1 for _, rms in peer.heard if rms > 2000) >= 20, peer.heard[-20:]
            peer.hang_up()
        await asyncio.sleep(1.0)
    finally:
        for peer in peers:
            with contextlib.suppress(Exception):
                await peer.close()
    # each worker's own signalling port is on loopback only: not on the node's address
    for index in (0, 1):
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://{NODE_HOST}:{page + 1 + index}/", timeout=10)
        assert httpx.get(f"http://127.0.0.1:{page + 1 + index}/", timeout=10).status_code == 200
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=30) == 0, node.log()
    stats = json.loads(node.stats_file.read_text())
    per_worker = [report.get("webrtc", {}).get("answered") for report in stats["workers"]]
    assert sorted(per_worker) == [1, 1], stats["workers"]
    assert stats["webrtc"]["ended"] == {"remote-hangup": 2}, stats["webrtc"]


def test_webrtc_host_puts_the_page_on_its_own_address(tmp_path) -> None:
    """``--webrtc-host 127.0.0.1`` (a page behind a reverse proxy): the page is there, not on ``--host``,
    and a browser's offer to it is answered."""
    sip, page, (first, last) = free_port(), free_port(), rtp_range()
    cmd = [sys.executable, "-m", "parley", "serve", "echo", "--workers", "1", "--host", NODE_HOST]
    cmd += ["--port", str(sip), "--transport", "udp", "--rtp-ports", f"{first}-{last}"]
    cmd += ["--webrtc-port", str(page), "--webrtc-host", "127.0.0.1"]
    lines: list[str] = []
    proc = spawn_until_ready(cmd, lines, cwd=ROOT, startup_timeout=60)
    try:
        assert any(f"browser calls on http://127.0.0.1:{page}/" in line for line in lines), lines
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://{NODE_HOST}:{page}/", timeout=10)

        async def offer() -> int:
            peer = BrowserPeer()
            try:
                return (await peer.call(f"http://127.0.0.1:{page}/offer")).status_code
            finally:
                await peer.close()

        assert asyncio.run(offer()) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, "".join(lines[-40:])
