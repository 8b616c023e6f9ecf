"""The I/O half of a ``webhook`` step: perform a runtime's ``CallWebhook`` action over HTTP (httpx).

The dialogue runtime stays sans-I/O: it emits ``CallWebhook`` and is told the outcome through
``Conversation.on_webhook_result(status, body, error, unknown=...)``; this module is what sits in
between::

    result = await perform_webhook(action)
    actions = conversation.on_webhook_result(result.status, result.body, result.error,
                                             unknown=result.unknown)

or, with the hold prompt for a slow backend, all in one: ``result, actions = await
run_webhook(conversation, action, on_hold)`` (``parley serve``, ``parley chat`` and the studio do).

Never acting twice by accident: every attempt carries the step's ``Idempotency-Key`` header (the
same on each retry). A request that cannot have reached the backend (connection refused, connect
timeout) is retried up to ``action.retries`` times. One that may have reached it (a timeout or a lost
connection after sending, a 5xx answer) is retried only when the step is ``idempotent``; otherwise a
timeout or lost connection after sending ends with ``unknown=True``: the backend may have acted. A 4xx
answer is final. Only a 2xx answer with a JSON object (or an empty) body is a success. Logs carry
the URL, status and latency, never the payload (caller data) nor the headers (secrets).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from parley.agent.model import WebhookStep
    from parley.agent.runtime import Action, CallWebhook, Conversation, Say

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """What came back: feed ``status, body, error, unknown`` to ``Conversation.on_webhook_result``."""

    status: int | None  # HTTP status of the last attempt, None when no answer came
    body: dict[str, Any] | None  # the JSON object answered (None if none or not an object)
    error: str | None  # None on success; else "timeout", "HTTP 500", "ConnectError: ..."
    latency_s: float  # all attempts together, backoff included
    attempts: int
    unknown: bool = False  # sent, but no answer: the backend may or may not have acted

    @property
    def ok(self) -> bool:
        return self.error is None


# Raised before the request left: it cannot have reached the backend, so a retry is always safe.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


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
    """Send ``action.payload`` as JSON with ``action.method``; retry where safe; never raises."""
    own_client = client is None
    http = client if client is not None else httpx.AsyncClient()
    headers = {**action.headers}
    if action.idempotency_key:
        headers["Idempotency-Key"] = action.idempotency_key
    started = time.monotonic()
    status: int | None = None
    body: dict[str, Any] | None = None
    error: str | None = "not attempted"
    unknown = False
    attempts = 0
    try:
        for attempt in range(action.retries + 1):
            if attempt:
                await asyncio.sleep(min(backoff_s * 2 ** (attempt - 1), max_backoff_s))
            attempts += 1
            try:
                response = await http.request(
                    action.method, action.url, json=action.payload, headers=headers, timeout=action.timeout_s
                )
            except NOT_SENT as exc:
                status, body, unknown = None, None, False
                error = (
                    "timeout" if isinstance(exc, httpx.TimeoutException) else f"{type(exc).__name__}: {exc}"
                )
                retryable = True
            except httpx.TimeoutException:  # after (part of) the request was sent
                status, body, error, unknown = None, None, "timeout", True
                retryable = action.idempotent
            except httpx.HTTPError as exc:  # e.g. the connection dropped before an answer
                status, body, error, unknown = None, None, f"{type(exc).__name__}: {exc}", True
                retryable = action.idempotent
            else:
                status, unknown = response.status_code, False
                body, error = _error_for(response)
                retryable = status >= 500 and action.idempotent
            if error is None or not retryable or attempt == action.retries:
                break
            log.info("webhook %s attempt %d failed (%s): retrying", action.url, attempts, error)
    finally:
        if own_client:
            await http.aclose()
    latency = time.monotonic() - started
    outcome = "unknown" if unknown else ("ok" if error is None else "failed")
    log.info(
        "webhook %s %s -> %s in %.0f ms after %d attempt(s): %s%s",
        action.method,
        action.url,
        status,
        latency * 1000,
        attempts,
        outcome,
        f" ({error})" if error else "",
    )
    return WebhookResult(status, body, error, latency, attempts, unknown)


async def perform_with_hold(action: CallWebhook, on_slow: Callable[[], None], **kwargs: Any) -> WebhookResult:
    """``perform_webhook``, calling ``on_slow()`` once if no result came within ``action.hold_after_s``
    (the caller then hears the hold prompt: ``Conversation.on_webhook_slow``)."""
    task = asyncio.ensure_future(perform_webhook(action, **kwargs))
    if action.hold_after_s is not None:
        done, _ = await asyncio.wait([task], timeout=action.hold_after_s)
        if not done:
            on_slow()
    return await task


async def run_webhook(
    conversation: Conversation, action: CallWebhook, on_hold: Callable[[list[Say]], None], **kwargs: Any
) -> tuple[WebhookResult, list[Action]]:
    """A conversation's webhook from start to end: performed (``perform_webhook`` options in
    ``kwargs``), the hold prompt handed to ``on_hold`` if the backend is slow, the result fed back.
    Returns the result and the actions that follow it (what every driver of a conversation does)."""
    from parley.agent.runtime import Say

    def slow() -> None:
        says = [a for a in conversation.on_webhook_slow() if isinstance(a, Say)]
        if says:
            on_hold(says)

    result = await perform_with_hold(action, slow, **kwargs)
    following = conversation.on_webhook_result(
        result.status,
        result.body,
        result.error,
        latency_s=result.latency_s,
        attempts=result.attempts,
        unknown=result.unknown,
    )
    return result, following


def run_webhook_sync(
    conversation: Conversation, action: CallWebhook, on_hold: Callable[[list[Say]], None], **kwargs: Any
) -> tuple[WebhookResult, list[Action]]:
    """``run_webhook`` for code without an event loop (``parley chat``)."""
    return asyncio.run(run_webhook(conversation, action, on_hold, **kwargs))


SAMPLE_VALUES: dict[str, Any] = {
    "any": "1234",
    "string": "sample",
    "digits": "1234",
    "number": 12.5,
    "integer": 3,
    "boolean": True,
    "date": "2030-01-31",
}


def sample_body(step: WebhookStep) -> dict[str, Any]:
    """A made-up success body holding every field ``step`` saves (``parley chat --no-webhooks``)."""
    body: dict[str, Any] = {}
    for path, declared in step.saved().items():
        *parents, leaf = path.split(".")
        node = body
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = SAMPLE_VALUES[declared.type]
    return body
