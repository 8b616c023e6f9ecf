"""The browser-call page that ``parley serve --webrtc-port`` exposes, and its HTTP signalling.

``GET /`` is the page (every asset served from here: no CDN), ``POST /offer`` takes the page's JSON
offer and returns aiortc's answer (:class:`~parley.telephony.webrtc.WebRtcChannel`). A bad offer gets
400 with ``{"error": ...}``; a call that admission control refuses gets 503 with a message the page
shows; an address that offers too often gets 429. The studio serves the same page script on its own
pages, behind its login (:mod:`parley.studio.app`).

FastAPI and uvicorn (already the studio's) serve it inside ``parley serve``'s event loop, beside SIP.

With several workers (``parley serve --workers N --webrtc-port P``) the node's supervisor serves the
page on ``P`` and routes each offer (:class:`OfferRouter`) to a ready worker's own signalling port
(``P + 1 + i``, plain HTTP on loopback, :data:`WORKER_PAGE_HOST`: a browser cannot reach it, so it cannot
get past the node's rate limit or admission): the worker answers with its own ICE candidates, so
the call's media goes from the browser straight to that worker, as a SIP call's RTP does. Only the
one HTTP request of a call's set-up passes the supervisor. Routing rather than a shared port
(SO_REUSEPORT) for the reasons SIP has one port per worker (:mod:`parley.cluster.supervisor`): a
worker draining for a roll is skipped at once, one at its limit (503) passes the offer on to the
next, and the page's rate limit holds for the node, not per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from parley.telephony.webrtc import OfferError

STATIC = Path(__file__).parent / "static"
OFFER_RATE_PER_MINUTE = 10.0  # offers one address may make (bursts of this many, refilled per minute)
MAX_OFFER_BYTES = 128 * 1024
ROUTE_TIMEOUT_S = 15.0  # a worker's answer to a routed offer (ICE gathering included)
WORKER_PAGE_HOST = "127.0.0.1"  # where a node's workers answer the offers its supervisor routes to them
Answerer = Callable[[Any], Awaitable[dict[str, str]]]


class RateLimit:
    """A token bucket per client address: ``burst`` requests at once, refilled at ``per_minute``."""

    MAX_ADDRESSES = 10000  # buckets kept; full ones are forgotten first

    def __init__(
        self, per_minute: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else max(1, int(per_minute)))
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, when)

    def allow(self, address: str) -> bool:
        now = self.clock()
        tokens, when = self.buckets.get(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - when) * self.rate)
        if len(self.buckets) >= self.MAX_ADDRESSES and address not in self.buckets:
            self._forget(now)
        if tokens < 1.0:
            self.buckets[address] = (tokens, now)
            return False
        self.buckets[address] = (tokens - 1.0, now)
        return True

    def _forget(self, now: float) -> None:
        for address, (tokens, when) in list(self.buckets.items()):
            if tokens + (now - when) * self.rate >= self.burst:
                del self.buckets[address]


def call_panel(offer_url: str, title: str, *, extra: str = "", csrf: str = "") -> str:
    """The call page's panel (``<main id="call">``): ``offer_url`` is where ``call.js`` POSTs the offer
    (with ``csrf`` as ``X-CSRF-Token``, for the studio); ``extra`` is HTML put above the controls, whose
    inputs marked ``data-offer-field`` are sent with the offer (the studio's version picker)."""
    return (
        (STATIC / "call-panel.html")
        .read_text()
        .format(
            offer_url=html.escape(offer_url), title=html.escape(title), extra=extra, csrf=html.escape(csrf)
        )
    )


def page_html(offer_url: str, title: str, *, assets: str = "assets") -> str:
    """The stand-alone call page."""
    return (
        (STATIC / "call.html")
        .read_text()
        .format(title=html.escape(title), assets=assets, panel=call_panel(offer_url, title))
    )


async def read_offer(request: Request) -> Any:
    """The request's JSON body, or an :class:`OfferError` saying why it is not one."""
    body = await request.body()
    if len(body) > MAX_OFFER_BYTES:
        raise OfferError(400, f"the offer is larger than {MAX_OFFER_BYTES} bytes", "sdp")
    try:
        return json.loads(body)
    except ValueError:
        raise OfferError(
            400, 'the body is not JSON: expected {"type": "offer", "sdp": "..."}', "sdp"
        ) from None


def offer_error(exc: OfferError) -> JSONResponse:
    return JSONResponse({"error": str(exc), "reason": exc.reason}, status_code=exc.status)


def create_page_app(answer: Answerer, *, rate_per_minute: float = OFFER_RATE_PER_MINUTE) -> FastAPI:
    """The stand-alone page and its ``POST /offer`` (rate-limited per client address); ``answer`` is
    :meth:`WebRtcChannel.answer` in a worker, :meth:`OfferRouter.answer` in a node's supervisor."""
    app = FastAPI(title="Parley browser call", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/assets", StaticFiles(directory=STATIC), name="assets")
    limit = RateLimit(rate_per_minute)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return page_html("offer", "Call the agent")

    @app.post("/offer")
    async def offer(request: Request) -> JSONResponse:
        address = request.client.host if request.client else "?"
        if not limit.allow(address):
            return JSONResponse(
                {"error": "Too many calls from your address: please wait a minute.", "reason": "rate"},
                status_code=429,
                headers={"Retry-After": "60"},
            )
        try:
            return JSONResponse(await answer(await read_offer(request)))
        except OfferError as exc:
            return offer_error(exc)

    return app


class OfferRouter:
    """A node's supervisor's side of the page: each offer goes to one of the ready workers' signalling
    URLs (``targets()``, asked per offer), in turn; a worker that refuses the call (503: at its limit,
    too loaded, draining) or cannot be reached passes it to the next. A bad offer (400) is answered
    at once: every worker would refuse it alike."""

    def __init__(self, targets: Callable[[], list[str]], *, timeout: float = ROUTE_TIMEOUT_S) -> None:
        self.targets = targets
        self.timeout = timeout
        self.routed: dict[str, int] = {}  # target URL -> offers it answered
        self._next = 0
        self._client: httpx.AsyncClient | None = None

    async def answer(self, offer: Any) -> dict[str, str]:
        targets = self.targets()
        if not targets:
            raise OfferError(
                503, "The server is starting or restarting. Please try again shortly.", "draining"
            )
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        refusal = OfferError(503, "The server cannot take a call now. Please try again shortly.", "load")
        start, self._next = self._next, self._next + 1
        for i in range(len(targets)):
            target = targets[(start + i) % len(targets)]
            try:
                response = await self._client.post(target, json=offer)
                body = response.json()
            except (httpx.HTTPError, ValueError):
                continue  # restarting, or gone: the next one
            if response.status_code == 200:
                self.routed[target] = self.routed.get(target, 0) + 1
                return body
            error = OfferError(response.status_code, str(body.get("error", "")), str(body.get("reason", "")))
            if response.status_code != 503:
                raise error
            refusal = error
        raise refusal

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class _EmbeddedServer:
    """uvicorn inside a loop that someone else runs: its signal handling left to ``parley serve``."""

    def __init__(self, app: FastAPI, host: str, port: int, ssl: tuple[Path, Path] | None) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            def install_signal_handlers(self) -> None:  # uvicorn < 0.29
                pass

            @contextlib.contextmanager
            def capture_signals(self):
                yield

        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            ssl_certfile=str(ssl[0]) if ssl else None,
            ssl_keyfile=str(ssl[1]) if ssl else None,
        )
        self.server = Server(config)
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.task = asyncio.ensure_future(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()  # raises the reason (e.g. the port is taken)
                raise OSError("the page's web server stopped at start-up")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 5.0)


async def serve_page(
    answer: Answerer,
    host: str,
    port: int,
    *,
    tls: tuple[Path, Path] | None = None,
    rate_per_minute: float = OFFER_RATE_PER_MINUTE,
) -> Callable[[], Awaitable[None]]:
    """Serve the page on ``host:port`` (HTTPS with ``tls`` = (certificate, key)), its offers answered by
    ``answer``; returns a stop."""
    server = _EmbeddedServer(create_page_app(answer, rate_per_minute=rate_per_minute), host, port, tls)
    await server.start()
    return server.stop


def worker_page_port(port: int, index: int) -> int:
    """The signalling port of a node's worker ``index``, when the node's page is on ``port``."""
    return port + 1 + index


async def serve_node_page(
    ready_workers: Callable[[], list[int]],
    host: str,
    port: int,
    *,
    tls: tuple[Path, Path] | None = None,
    rate_per_minute: float = OFFER_RATE_PER_MINUTE,
) -> Callable[[], Awaitable[None]]:
    """A node's page on ``host:port``, its offers routed to the workers ``ready_workers()`` names (by
    index), on loopback; returns a stop."""

    def targets() -> list[str]:
        return [f"http://{WORKER_PAGE_HOST}:{worker_page_port(port, i)}/offer" for i in ready_workers()]

    router = OfferRouter(targets)
    stop_page = await serve_page(router.answer, host, port, tls=tls, rate_per_minute=rate_per_minute)

    async def stop() -> None:
        await stop_page()
        await router.close()

    return stop
