"""Structured logs: one JSON object a line, carrying the Call-ID of the call that logged it.

The Call-ID lives in a context variable set where a call's task starts (:class:`CallManager`), so
every line logged by that call's code (the app, the agent, webhooks) carries it without passing it
around; asyncio copies the context into tasks a call starts. A line holds only the time, level,
logger, message and Call-ID (and a traceback): the code logs no caller data (what callers say and
the slot values are kept to call records, marked sensitive), and nothing else is copied in from
the log record. The standard library's formatter is enough; no JSON-logging dependency is needed.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime

call_id: ContextVar[str | None] = ContextVar("parley_call_id", default=None)


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "call_id"?, "error"?}`` per record."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = call_id.get()
        if current is not None:
            line["call_id"] = current
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: int, log_format: str) -> None:
    """Root logging at ``level``: ``text`` (human lines) or ``json`` (:class:`JsonFormatter`)."""
    if log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level, handlers=[handler], force=True)
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
