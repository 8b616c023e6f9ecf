"""The browser-call page that ``parley serve --webrtc-port`` exposes, and its HTTP signalling.

``GET /`` is the page (every asset served from here: no CDN), ``POST /offer`` takes the page's JSON
offer and returns aiortc's answer (:class:`~parley.telephony.webrtc.WebRtcChannel`). A bad offer gets
400 with ``{"error": ...}``; a call that admission control refuses gets 503 with a message the page
shows; an address that offers too often gets 429. The studio serves the same page script on its own
pages, behind its login (:mod:`parley.studio.app`).

FastAPI and uvicorn (already the studio's) serve it inside ``parley serve``'s event loop, beside SIP.
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

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from parley.telephony.webrtc import OfferError, WebRtcChannel

STATIC = Path(__file__).parent / "static"
OFFER_RATE_PER_MINUTE = 10.0  # offers one address may make (bursts of this many, refilled per minute)
MAX_OFFER_BYTES = 128 * 1024


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
    return (STATIC / "call-panel.html").read_text().format(
        offer_url=html.escape(offer_url), title=html.escape(title), extra=extra, csrf=html.escape(csrf)
    )


def page_html(offer_url: str, title: str, *, assets: str = "assets") -> str:
    """The stand-alone call page."""
    return (STATIC / "call.html").read_text().format(
        title=html.escape(title), assets=assets, panel=call_panel(offer_url, title)
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


def create_page_app(channel: WebRtcChannel, *, rate_per_minute: float = OFFER_RATE_PER_MINUTE) -> FastAPI:
    """The stand-alone page and its ``POST /offer`` (rate-limited per client address)."""
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
            return JSONResponse(await channel.answer(await read_offer(request)))
        except OfferError as exc:
            return offer_error(exc)

    return app


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
    channel: WebRtcChannel,
    host: str,
    port: int,
    *,
    tls: tuple[Path, Path] | None = None,
    rate_per_minute: float = OFFER_RATE_PER_MINUTE,
) -> Callable[[], Awaitable[None]]:
    """Serve the page on ``host:port`` (HTTPS with ``tls`` = (certificate, key)); returns a stop."""
    server = _EmbeddedServer(create_page_app(channel, rate_per_minute=rate_per_minute), host, port, tls)
    await server.start()
    return server.stop
