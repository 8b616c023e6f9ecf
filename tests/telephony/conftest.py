"""Fixtures for end-to-end Call API tests: CallManagers and SIPp UAS peers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from integration.harness import HOST, SCENARIOS, SIPP, free_port, rtp_range
from parley.telephony.manager import CallManager

ManagerFactory = Callable[..., Awaitable[CallManager]]


@pytest.fixture
async def managers() -> AsyncIterator[ManagerFactory]:
    """Factory: ``await managers(app, **CallManager options)`` → a started manager on free ports.

    Each manager gets its own SIP port and RTP range; all are stopped at teardown (bounded).
    """
    started: list[CallManager] = []

    async def factory(app=None, **options) -> CallManager:
        options.setdefault("rtp_ports", rtp_range(20))
        manager = CallManager(app, host=HOST, port=free_port(), **options)
        await manager.start()
        started.append(manager)
        return manager

    yield factory
    for manager in reversed(started):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(manager.stop(), 5)


def udp_port_bound(port: int) -> bool:
    """Whether some socket is bound to UDP ``port`` on loopback (Linux ``/proc/net/udp``)."""
    try:
        table = Path("/proc/net/udp").read_text()
    except OSError:
        return True  # cannot tell: the INVITE's retransmissions cover a late SIPp
    return f"0100007F:{port:04X} " in table


class SippUas:
    """A SIPp UAS subprocess running one scenario from ``tests/integration/scenarios``."""

    def __init__(self, scenario: str, tmp_path: Path) -> None:
        self.scenario = scenario
        self.port = free_port()
        self.media_port = free_port(4)
        tag = f"{Path(scenario).stem}-{self.port}"
        self.error_file = tmp_path / f"{tag}-errors.log"
        self.message_file = tmp_path / f"{tag}-messages.log"
        self.screen_file = tmp_path / f"{tag}-screen.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.returncode: int | None = None

    @property
    def uri(self) -> str:
        return f"sip:agent@{HOST}:{self.port}"

    async def start(self, extra: list[str] | None = None) -> SippUas:
        assert SIPP is not None
        cmd = [SIPP, "-sf", str(SCENARIOS / self.scenario), "-i", HOST, "-p", str(self.port)]
        cmd += ["-mp", str(self.media_port), "-m", "1", "-nostdin", "-timeout", "15s", "-timeout_error"]
        cmd += ["-trace_err", "-error_file", str(self.error_file)]
        cmd += ["-trace_msg", "-message_file", str(self.message_file)]
        cmd += extra or []
        with open(self.screen_file, "wb") as screen:
            self.proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=screen, stderr=asyncio.subprocess.STDOUT,
                cwd=SCENARIOS,
            )  # fmt: skip
        # Ready once its SIP port is bound (SIPp has no ready line). Looked up in /proc rather than
        # probed with bind(), which could take the port from SIPp at the wrong moment.
        for _ in range(200):
            if udp_port_bound(self.port) or self.proc.returncode is not None:
                break
            await asyncio.sleep(0.025)
        return self

    async def wait(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        try:
            self.returncode = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            pytest.fail(f"sipp did not finish within {timeout} s\n{self.describe()}")
        return self.returncode

    def describe(self) -> str:
        def tail(path: Path, size: int) -> str:
            return path.read_text(errors="replace")[-size:] if path.exists() else ""

        return (
            f"sipp {self.scenario} exit {self.returncode}\nerrors:\n{tail(self.error_file, 3000)}\n"
            f"messages:\n{tail(self.message_file, 6000)}"
        )

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 5)


@pytest.fixture
async def sipp_uas(tmp_path) -> AsyncIterator[Callable[..., Awaitable[SippUas]]]:
    """Factory: ``await sipp_uas("uas_auth.xml")`` → a running SIPp UAS; killed at teardown."""
    if SIPP is None:
        pytest.skip("sipp not installed (Debian package sip-tester)")
    peers: list[SippUas] = []

    async def factory(scenario: str, extra: list[str] | None = None) -> SippUas:
        peer = SippUas(scenario, tmp_path)
        peers.append(peer)
        return await peer.start(extra)

    yield factory
    for peer in peers:
        await peer.stop()
