"""Fixtures for the integration tests; the machinery lives in :mod:`harness`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from .harness import ParleyServer, Sniffer, start_server


@pytest.fixture
def parley_server(tmp_path) -> Iterator[Callable[..., ParleyServer]]:
    """Factory: ``parley_server(transport="udp", max_calls=None, media_timeout=None)``.

    Every server started is stopped at teardown; a server that does not exit 0 on SIGTERM fails
    the test. Call ``server.stop()`` in the test to read ``server.stats`` (the exit JSON).
    """
    servers: list[ParleyServer] = []

    def factory(**kwargs) -> ParleyServer:
        server = start_server(tmp_path, **kwargs)
        servers.append(server)
        return server

    yield factory
    errors = []
    for server in servers:
        try:
            server.stop()
        except BaseException as exc:  # report every server, then fail
            errors.append(str(exc))
        finally:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait(timeout=5)
    if errors:
        pytest.fail("\n".join(errors))


@pytest.fixture
def sniffer() -> Iterator[Sniffer]:
    if os.geteuid() != 0:
        pytest.skip("the loopback RTP sniffer needs root (AF_PACKET raw socket)")
    try:
        sniff = Sniffer().start()
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot open an AF_PACKET socket on lo: {exc}")
    yield sniff
    sniff.stop()
