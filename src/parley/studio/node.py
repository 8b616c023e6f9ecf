"""A serving node run from the studio: ``parley serve --studio URL --token T AGENT_NAME``.

The node serves the agent's **live** version, as the studio's API gives it, and looks for a new one
every ``poll_s`` (2 s): a publish or rollback is warmed up beside the running version (prompts
rendered, grammars prepared), then new calls get it; calls in progress finish on the version they
started with, and each call's record names its version. The last live version is kept on disk, so a
node restarted while the studio is down still serves it.

Call records are appended to the records file first (sealed with the node's keys, if it has any), and
a shipper sends the lines not yet sent to the studio (``POST /api/calls``), remembering how far it got
in a ``.sent`` file beside them: while the studio is down the records wait on disk, and nothing is
lost or sent twice (the studio also ignores a call it already has). A line the studio refuses (422) is
moved to a ``.rejected`` file, so one bad record cannot hold up the others.

The node talks to the studio over HTTP only: :mod:`parley.agent` never imports the studio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import httpx

from parley.agent.loader import AgentFileError, load_agent_text
from parley.agent.records import RecordFile
from parley.agent.sealing import Keyring
from parley.agent.voice import VoiceAgent, decode_pool
from parley.speech.engines.pool import HANG_S
from parley.telephony.call import Call

log = logging.getLogger(__name__)

POLL_S = 2.0  # a publish reaches the node within this plus the warm-up
SHIP_S = 1.0
SHIP_BATCH = 200  # records a request at most


class StudioUnavailable(Exception):
    """The studio could not be reached or answered with a server error."""


class StudioLink:
    """The node's HTTP client for the studio's API (bearer token)."""

    def __init__(self, url: str, token: str, *, timeout: float = 5.0) -> None:
        self.http = httpx.AsyncClient(
            base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    async def live(self, name: str) -> tuple[int, str]:
        """The agent's live version: (number, YAML). ``LookupError`` when it has none (or no agent)."""
        try:
            response = await self.http.get(f"/api/agents/{name}/live")
        except httpx.HTTPError as exc:
            raise StudioUnavailable(str(exc)) from exc
        if response.status_code == 404:
            raise LookupError(response.json().get("detail", f"no live version of {name}"))
        if response.status_code != 200:
            raise StudioUnavailable(f"GET live: HTTP {response.status_code}: {response.text[:200]}")
        body = response.json()
        return int(body["number"]), str(body["yaml"])

    async def send(self, lines: list[bytes]) -> int:
        """POST call records (JSON lines); the HTTP status (``StudioUnavailable`` when unreachable)."""
        try:
            response = await self.http.post(
                "/api/calls", content=b"".join(lines), headers={"Content-Type": "application/x-ndjson"}
            )
        except httpx.HTTPError as exc:
            raise StudioUnavailable(str(exc)) from exc
        return response.status_code

    async def close(self) -> None:
        await self.http.aclose()


class RecordShipper:
    """Sends the records file's new lines to the studio; the byte offset sent so far is in ``.sent``."""

    def __init__(self, link: StudioLink, path: Path, *, batch: int = SHIP_BATCH) -> None:
        self.link = link
        self.path = path
        self.batch = batch
        self.offset_file = path.with_name(path.name + ".sent")
        self.rejected_file = path.with_name(path.name + ".rejected")

    def _offset(self) -> int:
        try:
            return int(self.offset_file.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _save_offset(self, offset: int) -> None:
        temporary = self.offset_file.with_name(self.offset_file.name + ".tmp")
        temporary.write_text(str(offset))
        os.replace(temporary, self.offset_file)

    def pending(self) -> tuple[int, list[bytes]]:
        """(offset, up to ``batch`` complete lines after it)."""
        offset = self._offset()
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return 0, []
        if size < offset:  # the file was replaced: start again (the studio ignores calls it has)
            offset = 0
        with self.path.open("rb") as records:
            records.seek(offset)
            lines = []
            for line in records:
                if not line.endswith(b"\n"):
                    break  # a line still being written
                lines.append(line)
                if len(lines) >= self.batch:
                    break
        return offset, lines

    async def ship_once(self) -> int:
        """Send what is pending (one batch); how many lines were delivered (or set aside as rejected)."""
        offset, lines = self.pending()
        lines_to_send = [line for line in lines if line.strip()]
        if not lines:
            return 0
        status = await self.link.send(lines_to_send) if lines_to_send else 200
        if status == 422:  # find the bad lines: the others go one by one
            for line in lines_to_send:
                single = await self.link.send([line]) if len(lines_to_send) > 1 else status
                if single == 422:
                    self._reject(line)
                elif not 200 <= single < 300:
                    raise StudioUnavailable(f"POST /api/calls: HTTP {single}")
        elif not 200 <= status < 300:
            raise StudioUnavailable(f"POST /api/calls: HTTP {status}")
        self._save_offset(offset + sum(len(line) for line in lines))
        return len(lines)

    def _reject(self, line: bytes) -> None:
        log.error("the studio refused a call record; kept in %s", self.rejected_file)
        with self.rejected_file.open("ab") as out:
            out.write(line)

    async def run(self, interval: float = SHIP_S) -> None:
        """Ship until cancelled; while the studio is down, retry (records wait on disk)."""
        while True:
            try:
                while await self.ship_once() >= self.batch:
                    pass
            except StudioUnavailable as exc:
                log.warning("studio unreachable, %s: records kept on disk", exc)
            await asyncio.sleep(interval)


class LiveAgent:
    """The app the call manager runs: every call goes to the agent version that is live when it starts."""

    def __init__(
        self,
        link: StudioLink,
        name: str,
        *,
        cache: Path,
        make_agent: Any,
        poll_s: float = POLL_S,
    ) -> None:
        self.link = link
        self.name = name
        self.cache = cache
        self.make_agent = make_agent  # (Agent, version) -> VoiceAgent (not started)
        self.poll_s = poll_s
        self.current: VoiceAgent | None = None
        self.active: dict[int, int] = {}  # id(VoiceAgent) -> calls in progress on it
        self.retired: list[VoiceAgent] = []

    @property
    def version(self) -> int | None:
        return None if self.current is None else self.current.version

    async def start(self) -> None:
        """Serve the live version (or, with the studio down, the one kept from last time)."""
        try:
            number, text = await self.link.live(self.name)
        except StudioUnavailable as exc:
            number, text = self._cached(exc)
        self.current = await self._build(number, text)

    def _cached(self, why: Exception) -> tuple[int, str]:
        try:
            kept = json.loads(self.cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise StudioUnavailable(
                f"{why}; and no live version of {self.name} kept at {self.cache}"
            ) from None
        log.warning(
            "studio unreachable (%s): serving the kept version %s of %s", why, kept["number"], self.name
        )
        return int(kept["number"]), str(kept["yaml"])

    async def _build(self, number: int, text: str) -> VoiceAgent:
        agent = load_agent_text(text, f"{self.name}.yaml")
        app = self.make_agent(agent, number)
        await app.start()
        temporary = self.cache.with_name(self.cache.name + ".tmp")
        temporary.write_text(json.dumps({"number": number, "yaml": text}), encoding="utf-8")
        os.replace(temporary, self.cache)
        return app

    async def check(self) -> bool:
        """Look for a new live version once; True when it was switched to."""
        number, text = await self.link.live(self.name)
        if number == self.version:
            return False
        try:
            fresh = await self._build(number, text)
        except AgentFileError as exc:  # the studio validates; a node never serves a broken file
            log.error("live version %s of %s does not load here: %s", number, self.name, exc)
            return False
        old, self.current = self.current, fresh
        log.warning("agent %s: now serving version %s (was %s)", self.name, number, old and old.version)
        if old is not None:
            self.retired.append(old)
            await self._close_idle()
        return True

    async def follow(self) -> None:
        """Check every ``poll_s`` until cancelled; the studio being down changes nothing served."""
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.check()
            except (StudioUnavailable, LookupError) as exc:
                log.info("agent %s: live version not checked: %s", self.name, exc)

    async def __call__(self, call: Call) -> None:
        app = self.current
        assert app is not None, "start() first"
        self.active[id(app)] = self.active.get(id(app), 0) + 1
        try:
            await app(call)
        finally:
            self.active[id(app)] -= 1
            await self._close_idle()

    async def _close_idle(self) -> None:
        """Close the webhook clients of retired versions once their last call has ended."""
        for app in list(self.retired):
            if not self.active.get(id(app)):
                self.retired.remove(app)
                self.active.pop(id(app), None)
                if app.http is not None:
                    with contextlib.suppress(Exception):
                        await app.http.aclose()

    def cpu_load(self) -> float:
        return 0.0 if self.current is None else self.current.cpu_load()

    def screen(self, caller: str, called: str) -> str | None:
        """The live version's access rules (see :meth:`VoiceAgent.screen`)."""
        return None if self.current is None else self.current.screen(caller, called)


async def serve_from_studio(
    url: str,
    token: str,
    name: str,
    records: Path,
    *,
    keyring: Keyring | None = None,
    decode_processes: int | None = None,
    decode_hang_s: float = HANG_S,
    poll_s: float = POLL_S,
    **options: Any,
) -> dict[str, Any]:
    """``parley serve --studio URL --token T NAME``: serve NAME's live version until stopped."""
    from parley.speech.engines import load_engines
    from parley.telephony.server import run_server

    if keyring is None:
        log.warning(
            "no caller-data keys (--key-file or $PARLEY_KEYS): %s keeps caller data and turn audio in clear",
            records,
        )
    engines = load_engines()
    pool = decode_pool(engines, decode_processes, decode_hang_s)  # whisper in a process of its own
    link = StudioLink(url, token)

    record_file = RecordFile(records, keyring)  # one for every version: records held survive a switch

    def make_agent(agent: Any, version: int) -> VoiceAgent:
        return VoiceAgent(
            agent,
            engines=engines,
            pool=pool,
            records=record_file,
            version=version,
            keyring=keyring,
            record_audio=True,
        )

    cache = records.with_name(f"{records.name}.{name}.live.json")
    live = LiveAgent(link, name, cache=cache, make_agent=make_agent, poll_s=poll_s)
    shipper = RecordShipper(link, records)
    tasks: list[asyncio.Task[None]] = []
    try:
        await live.start()
        tasks = [asyncio.ensure_future(live.follow()), asyncio.ensure_future(shipper.run())]
        return await run_server(live, load_sources=[live.cpu_load], **options)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(shipper.ship_once(), 5)  # the last records, if the studio is up
        await link.close()
        if live.current is not None:
            with contextlib.suppress(Exception):
                await live.current.close()  # its webhook client and the shared decoder pool
