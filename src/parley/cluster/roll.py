"""``parley cluster roll``: a rolling upgrade of nodes, one node at a time, through their admin endpoints.

Each node rolls its own workers one at a time (:meth:`parley.cluster.supervisor.Supervisor.roll`:
drain, start the new code, wait for its OPTIONS probe, wait ``settle`` seconds for the load
balancer's probe to see it back, next), so at most one worker of the whole fleet is draining at
any moment; this module only walks the nodes in order and stops at the first that fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx


class RollError(Exception):
    """A node could not be rolled (unreachable, refused, or a worker did not come back)."""


def node_status(admin: str, client: httpx.Client) -> dict:
    response = client.get(f"{admin}/status")
    response.raise_for_status()
    return response.json()


def roll_node(admin: str, *, settle: float, timeout: float, client: httpx.Client, poll: float = 0.5) -> dict:
    """Roll one node (``http://HOST:PORT`` of its ``--admin-port``); its status once done."""
    try:
        before = node_status(admin, client)["rolls_completed"]
        response = client.post(f"{admin}/roll", params={"settle": settle})
    except httpx.HTTPError as exc:
        raise RollError(f"{admin}: {exc}") from exc
    if response.status_code != 202:
        raise RollError(f"{admin}: {response.status_code} {response.text.strip()}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(poll)
        try:
            status = node_status(admin, client)
        except httpx.HTTPError:
            continue  # a busy node may miss one poll
        if not status["rolling"]:
            if status["rolls_completed"] > before:
                return status
            states = ", ".join(f"worker {w['index']} {w['state']}" for w in status["workers"])
            raise RollError(f"{admin}: the roll stopped with {states}")
    raise RollError(f"{admin}: not rolled within {timeout:.0f} s")


def roll_nodes(
    admins: list[str], *, settle: float, timeout: float, report: Callable[[str], None] = print
) -> None:
    """Roll ``admins`` one after another; raises :class:`RollError` at the first failure."""
    with httpx.Client(timeout=10.0) as client:
        for admin in admins:
            admin = admin.rstrip("/")
            report(f"{admin}: rolling")
            started = time.monotonic()
            status = roll_node(admin, settle=settle, timeout=timeout, client=client)
            pids = ", ".join(str(w["pid"]) for w in status["workers"])
            report(f"{admin}: rolled in {time.monotonic() - started:.1f} s (workers now pid {pids})")
