"""One node of a cluster: the :class:`Supervisor` run until SIGTERM/SIGINT, with its admin endpoint.

Signals: SIGTERM or SIGINT drains every worker and exits; SIGHUP rolls the workers one at a time.
The admin endpoint (``--admin-port``, HTTP on the node's address) serves ``GET /status`` (each
worker's state, JSON), ``POST /roll?settle=S`` (start a roll: 202, or 409 while one runs) and
``GET /metrics`` (Prometheus, every worker of the node summed: see :mod:`parley.cluster.metrics`).
It is served by the standard library's WSGI server in a thread: a handful of requests a minute
need no web framework, and the event loop only ever runs the supervisor.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from parley.cluster.supervisor import Supervisor, WorkerPlan

NODE_READY_LINE = "parley: node ready,"
STUDIO_TOKEN_ENV = "PARLEY_STUDIO_TOKEN"  # where `parley serve --token` is read from, if not given
Wsgi = Callable[[dict[str, Any], Callable[..., Any]], list[bytes]]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def admin_app(
    supervisor: Supervisor, loop: asyncio.AbstractEventLoop, metrics: Callable[[], bytes] | None
) -> Wsgi:
    """The admin endpoint's WSGI application (runs in the server's thread)."""

    def call_in_loop(function: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=5)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        status, content_type, body = "404 Not Found", "text/plain", b"not found\n"
        if path == "/status" and method == "GET":
            status, content_type = "200 OK", "application/json"
            body = json.dumps(call_in_loop(supervisor.status), indent=2).encode() + b"\n"
        elif path == "/roll" and method == "POST":
            query = parse_qs(environ.get("QUERY_STRING", ""))
            try:
                settle = float(query.get("settle", ["0"])[0])
            except ValueError:
                settle = -1.0
            if not 0 <= settle <= 600:
                status, body = "400 Bad Request", b"settle must be seconds between 0 and 600\n"
            elif call_in_loop(lambda: supervisor.request_roll(settle)):
                status, body = "202 Accepted", b"roll started\n"
            else:
                status, body = "409 Conflict", b"a roll is running or the node is stopping\n"
        elif path == "/metrics" and method == "GET" and metrics is not None:
            status, content_type, body = "200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics()
        elif path in ("/status", "/roll", "/metrics"):
            status, body = "405 Method Not Allowed", b"method not allowed\n"
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    return app


class _ThreadingServer(WSGIServer):
    daemon_threads = True


def start_admin(host: str, port: int, app: Wsgi) -> WSGIServer:
    """Serve ``app`` on ``host:port`` from a daemon thread; ``shutdown()`` stops it."""
    server = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="parley-admin", daemon=True).start()
    return server


async def run_node(
    command: Callable[[WorkerPlan, Path], list[str]],
    plans: list[WorkerPlan],
    *,
    host: str,
    admin_port: int | None = None,
    env: dict[str, str] | None = None,
    metrics: Callable[[], bytes] | None = None,
    on_exit: Callable[[int], None] | None = None,
    ready_timeout: float = 180.0,
    page: Callable[[Callable[[], list[int]]], Awaitable[Callable[[], Awaitable[None]]]] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Run the node until SIGTERM/SIGINT; its workers' summed stats, and whether all exited cleanly.
    ``page`` starts the browser-call page, given the indexes of the ready workers (a function), and
    returns its stop (:func:`parley.telephony.webpage.serve_node_page`)."""
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="parley-node-") as state_dir:
        supervisor = Supervisor(command, plans, host=host, state_dir=Path(state_dir), env=env,
                                ready_timeout=ready_timeout, on_exit=on_exit)  # fmt: skip
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, supervisor.request_stop)
        loop.add_signal_handler(signal.SIGHUP, supervisor.request_roll)
        admin = None
        if admin_port is not None:
            admin = start_admin(host, admin_port, admin_app(supervisor, loop, metrics))
        stop_page = None
        if page is not None:
            stop_page = await page(lambda: [w.plan.index for w in supervisor.workers if w.state == "ready"])
        starting = asyncio.ensure_future(supervisor.start())
        failed: list[bool] = []

        def announce(task: asyncio.Task) -> None:
            if task.cancelled() or supervisor.stopping:
                return
            if task.exception() is None and task.result():
                ports = f"{plans[0].port}-{plans[-1].port}" if len(plans) > 1 else str(plans[0].port)
                where = f", admin http://{host}:{admin.server_port}" if admin is not None else ""
                print(f"{NODE_READY_LINE} {len(plans)} workers on sip:{host}:{ports}{where}",
                      file=sys.stderr, flush=True)  # fmt: skip
            else:
                print("parley: the node did not start: a worker failed", file=sys.stderr, flush=True)
                supervisor.request_stop()
                failed.append(True)

        starting.add_done_callback(announce)
        try:
            exits = await supervisor.run_until_stopped()
            starting.cancel()
        finally:
            if stop_page is not None:
                await stop_page()
            if admin is not None:
                admin.shutdown()
                admin.server_close()
        stats = supervisor.collected_stats()
    return stats, not failed and all(code == 0 for code in exits if code is not None)


SIP_LIMIT_OPTIONS = (
    "tcp_idle_timeout",
    "max_connections",
    "max_connections_per_ip",
    "max_message_size",
    "max_transactions",
    "rate_per_ip",
    "rate_action",
)


def worker_command(
    options: dict[str, Any], logging_options: dict[str, Any]
) -> Callable[[WorkerPlan, Path], list[str]]:
    """A worker's ``parley serve --workers 1`` command line, from the node's ``parley`` (``-v``,
    ``--log-format``) and ``serve`` options."""
    verbose = logging_options.get("verbose", 0)
    logs = ["--log-format", logging_options.get("log_format", "text")]

    def command(plan: WorkerPlan, stats_file: Path) -> list[str]:
        cmd = [sys.executable, "-m", "parley", *(["-" + "v" * verbose] if verbose else []), *logs, "serve"]
        cmd += [options["agent"], "--workers", "1", "--host", options["host"], "--port", str(plan.port)]
        first, last = plan.rtp_ports
        cmd += ["--transport", options["transport"], "--rtp-ports", f"{first}-{last}"]
        cmd += ["--max-load", str(options["max_load"]), "--media-timeout", str(options["media_timeout"])]
        cmd += ["--drain", str(options["drain"]), "--stats-file", str(stats_file)]
        records = str(options["records"])
        if options.get("studio"):  # each worker follows the studio, and ships its own records file
            records = f"{records}.w{plan.index}"
            cmd += ["--studio", options["studio"]]  # the token goes in the environment, not argv
        if options.get("key_file"):
            cmd += ["--key-file", str(options["key_file"])]
        cmd += ["--records", records, "--decode-processes", str(options["decode_processes"])]
        if options.get("decode_hang_s") is not None:
            cmd += ["--decode-hang-s", str(options["decode_hang_s"])]
        if options.get("max_calls") is not None:
            cmd += ["--max-calls", str(options["max_calls"])]
        for name in SIP_LIMIT_OPTIONS:
            if options.get(name) is not None:
                cmd += ["--" + name.replace("_", "-"), str(options[name])]
        if options.get("auth_users") is not None:
            cmd += ["--auth-users", str(options["auth_users"])]
            cmd += ["--auth-realm", options.get("auth_realm") or options["host"]]
        if options.get("srtp"):
            cmd += ["--srtp", options["srtp"]]
        if options.get("tls_cert") is not None:  # each worker on its own TLS port, as for SIP
            cmd += ["--tls-cert", str(options["tls_cert"]), "--tls-key", str(options["tls_key"])]
            cmd += ["--tls-port", str(options["tls_port"] + plan.index)]
            if options.get("tls_ca") is not None:
                cmd += ["--tls-ca", str(options["tls_ca"])]
            if options.get("tls_verify_client"):
                cmd += ["--tls-verify-client"]
        if options.get("webrtc_port") is not None:  # answers the offers the node's page routes to it
            from parley.telephony.webpage import WORKER_PAGE_HOST, worker_page_port

            cmd += ["--webrtc-port", str(worker_page_port(options["webrtc_port"], plan.index))]
            cmd += ["--webrtc-host", WORKER_PAGE_HOST]  # only the supervisor reaches it, not browsers
            cmd += [
                "--webrtc-rate",
                "1e9",
                "--webrtc-consent-timeout",
                str(options["webrtc_consent_timeout"]),
            ]
            for url in options.get("webrtc_ice_servers") or ():
                cmd += ["--webrtc-ice-server", url]
        if options.get("allow"):
            # The supervisor's own OPTIONS probe comes from the node's address.
            for network in (*options["allow"], options["host"]):
                cmd += ["--allow", network]
        return cmd

    return command


def serve_node(
    options: dict[str, Any],
    *,
    rtp_ports: tuple[int, int],
    logging_options: dict[str, Any],
    workers: int,
    admin_port: int | None,
    stats_file: Path | None,
) -> bool:
    """``parley serve --workers N`` (N > 1) with ``serve``'s options: run the node until SIGTERM, write
    the workers' summed stats to ``stats_file``; True when every worker exited cleanly."""
    from parley.cluster.metrics import NodeMetrics
    from parley.cluster.supervisor import plan_workers
    from parley.telephony.load import usable_cores

    if options["transport"] == "tcp":
        raise ValueError("a node's workers need UDP: their health probe is an OPTIONS over UDP")
    plans = plan_workers(workers, options["port"], rtp_ports)
    if options.get("tls_cert") is not None:  # worker i takes SIP port PORT+i and TLS port TLS_PORT+i
        sip, tls = options["port"], options["tls_port"]
        if tls < sip + workers and sip < tls + workers:
            raise ValueError(
                f"TLS ports {tls}-{tls + workers - 1} overlap the workers' SIP ports"
                f" {sip}-{sip + workers - 1}: move --tls-port"
            )
    decoders = options.get("decode_processes") or max(1, (usable_cores() - workers) // workers)
    command = worker_command({**options, "decode_processes": decoders}, logging_options)
    page = None
    if options.get("webrtc_port") is not None:  # the page's rate limit is the node's, not per worker
        from parley.telephony.webpage import serve_node_page

        cert, key = options.get("webrtc_cert"), options.get("webrtc_key")
        tls = (cert, key) if cert and key else None
        page_host = options.get("webrtc_host") or options["host"]
        page = partial(serve_node_page, host=page_host, port=options["webrtc_port"], tls=tls,
                       rate_per_minute=options["webrtc_rate"])  # fmt: skip
    with NodeMetrics() as metrics:
        env = metrics.worker_env()
        if options.get("studio"):  # a secret: never on a command line that `ps` shows every user
            env[STUDIO_TOKEN_ENV] = options["token"]
        stats, clean = asyncio.run(
            run_node(command, plans, host=options["host"], admin_port=admin_port, env=env,
                     metrics=metrics.exposition, on_exit=metrics.process_exited, page=page)
        )  # fmt: skip
    if stats_file is not None:
        stats_file.write_text(json.dumps(stats, indent=2))
    return clean
