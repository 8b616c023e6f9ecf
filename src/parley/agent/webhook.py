"""The I/O half of a ``webhook`` step: perform a runtime's ``CallWebhook`` action over HTTP (httpx).

The dialogue runtime stays sans-I/O: it emits ``CallWebhook`` and is told the outcome through
``Conversation.on_webhook_result(status, body, error)``; this module is what sits in between::

    result = await perform_webhook(action)
    actions = conversation.on_webhook_result(result.status, result.body, result.error)

Retries (``action.retries`` extra attempts, exponential backoff) happen on connection errors,
timeouts and 5xx answers; a 4xx answer is final. Only a 2xx answer with a JSON object (or an
empty) body is a success. Logs carry the URL, status and latency, never the payload (caller data).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from parley.agent.runtime import CallWebhook

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """What came back: feed ``status, body, error`` to ``Conversation.on_webhook_result``."""

    status: int | None  # HTTP status of the last attempt, None when no answer came
    body: dict[str, Any] | None  # the JSON object answered (None if none or not an object)
    error: str | None  # None on success; else "timeout", "HTTP 500", "connection refused: ..."
    latency_s: float  # all attempts together, backoff included
    attempts: int

    @property
    def ok(self) -> bool:
        return self.error is None


def _error_for(response: httpx.Response) -> tuple[dict[str, Any] | None, str | None]:
    if not 200 <= response.status_code < 300:
        return None, f"HTTP {response.status_code}"
    if not response.content.strip():
        return {}, None
    try:
        body = response.json()
    except ValueError:
        return None, "response is not JSON"
    if not isinstance(body, dict):
        return None, "response JSON is not an object"
    return body, None


async def perform_webhook(
    action: CallWebhook,
    *,
    client: httpx.AsyncClient | None = None,
    backoff_s: float = 0.25,
    max_backoff_s: float = 2.0,
) -> WebhookResult:
    """Send ``action.payload`` as JSON with ``action.method``; retry with backoff; never raises."""
    own_client = client is None
    http = client if client is not None else httpx.AsyncClient()
    started = time.monotonic()
    status: int | None = None
    body: dict[str, Any] | None = None
    error: str | None = "not attempted"
    attempts = 0
    try:
        for attempt in range(action.retries + 1):
            if attempt:
                await asyncio.sleep(min(backoff_s * 2 ** (attempt - 1), max_backoff_s))
            attempts += 1
            retryable = True
            try:
                response = await http.request(
                    action.method, action.url, json=action.payload, timeout=action.timeout_s
                )
            except httpx.TimeoutException:
                status, body, error = None, None, "timeout"
            except httpx.HTTPError as exc:
                status, body, error = None, None, f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                body, error = _error_for(response)
                retryable = status >= 500
            if error is None or not retryable:
                break
            log.info("webhook %s attempt %d failed: %s", action.url, attempts, error)
    finally:
        if own_client:
            await http.aclose()
    latency = time.monotonic() - started
    log.info("webhook %s %s -> %s in %.0f ms (%s)", action.method, action.url, status, latency * 1000, error)
    return WebhookResult(status, body, error, latency, attempts)


def perform_webhook_sync(action: CallWebhook, **kwargs: Any) -> WebhookResult:
    """``perform_webhook`` for code without an event loop (``parley chat``)."""
    return asyncio.run(perform_webhook(action, **kwargs))
