"""The webhook sink the agent under test posts to, on loopback: records every JSON body by Call-ID.

A ``ThreadingHTTPServer`` from the standard library in a thread: agents post a few times per call,
far below what it serves, and a thread keeps it off the event loop that carries the calls' audio.
Parley agents send the call's SIP Call-ID in the body (``{"call_id": ..., "slots": {...}}``); the
``X-Parley-Call-Id`` header is accepted too, for agents that post other bodies.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = "127.0.0.1"


class WebhookSink:
    """Records JSON bodies POSTed/PUT to it; answers per path from ``responses`` (else ``response``).

    ``responses`` maps a request path to ``(status, json_body)``. Use as a context manager.
    """

    def __init__(
        self,
        response: dict[str, Any] | None = None,
        status: int = 200,
        *,
        host: str = HOST,
        port: int = 0,
        responses: Mapping[str, tuple[int, dict[str, Any]]] | None = None,
    ) -> None:
        self.requests: list[tuple[str, str, Any]] = []  # (method, path, json body)
        self.by_call: dict[str, list[tuple[str, Any]]] = defaultdict(list)  # call-id → [(path, body)]
        self.response = response if response is not None else {}
        self.status = status
        self.responses = dict(responses or {})
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                call_id = self.headers.get("X-Parley-Call-Id")
                if call_id is None and isinstance(body, dict) and isinstance(body.get("call_id"), str):
                    call_id = body["call_id"]
                sink._record(self.command, self.path, body, call_id)
                status, answer = sink.responses.get(self.path.split("?")[0], (sink.status, sink.response))
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_PUT = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.host = host
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="webhook-sink", daemon=True)

    def _record(self, method: str, path: str, body: Any, call_id: str | None) -> None:
        with self._lock:
            self.requests.append((method, path, body))
            if call_id is not None:
                self.by_call[call_id].append((path, body))

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def posts_for(self, call_id: str) -> list[tuple[str, Any]]:
        """The (path, body) posts the agent made for ``call_id``, in order."""
        with self._lock:
            return list(self.by_call.get(call_id, ()))

    def slots_for(self, call_id: str) -> dict[str, Any]:
        """The slot values posted for ``call_id`` (later posts override earlier ones)."""
        slots: dict[str, Any] = {}
        for _, body in self.posts_for(call_id):
            if isinstance(body, dict) and isinstance(body.get("slots"), dict):
                slots.update(body["slots"])
        return slots

    def start(self) -> WebhookSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> WebhookSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
