"""The ``parley`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from parley.apps.echo import echo

if TYPE_CHECKING:
    from parley.agent.runtime import Action, Conversation


@click.group()
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one object a line with the call's Call-ID (never caller data).",
)
def main(verbose: int, log_format: str) -> None:
    """Parley: real-time voice agents that answer phone calls."""
    from parley.telephony.logs import configure_logging

    configure_logging(logging.WARNING - 10 * min(verbose, 2), log_format)


def _port_in_use(host: str, port: int, transports: tuple[str, ...]) -> str | None:
    """Why ``host:port`` cannot be bound for one of ``transports`` (None when it can)."""
    import socket

    for name in transports:
        kind = socket.SOCK_DGRAM if name == "UDP" else socket.SOCK_STREAM
        try:
            family = socket.getaddrinfo(host, port, type=kind)[0][0]
            with socket.socket(family, kind) as probe:
                if kind == socket.SOCK_STREAM:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
                probe.bind((host, port))
        except OSError as exc:
            return f"cannot listen on {host}:{port} ({name}): {exc.strerror or exc}"
    return None


def _cannot_listen(host: str, port: int, exc: OSError) -> NoReturn:
    click.echo(f"parley serve: error: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
    raise SystemExit(2) from None


def _port_range(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    if not (first.isdigit() and last.isdigit()):
        raise click.BadParameter("expected FIRST-LAST, e.g. 20000-40000")
    return int(first), int(last)


def _read_users(path: Path) -> dict[str, str]:
    """``USER:PASSWORD`` lines (blank lines and ``#`` comments skipped)."""
    users: dict[str, str] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise click.BadParameter(f"{path}: {exc.strerror}", param_hint="--auth-users") from exc
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise click.BadParameter(f"{path}:{number}: expected USER:PASSWORD", param_hint="--auth-users")
        users[user] = password
    if not users:
        raise click.BadParameter(f"{path}: no USER:PASSWORD line", param_hint="--auth-users")
    return users


@main.command()
@click.argument("agent", default="echo")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address for SIP and RTP.")
@click.option("--port", default=5060, show_default=True, help="SIP port.")
@click.option("--transport", type=click.Choice(["udp", "tcp", "both"]), default="both", show_default=True)
@click.option("--max-calls", type=int, default=None, help="Answer 503 above this many concurrent calls.")
@click.option(
    "--max-load",
    type=float,
    default=0.85,
    show_default=True,
    help="Answer 503 to new calls while the process (or an agent's speech decoders) uses more than "
    "this share of a core (0 = off).",
)
@click.option("--rtp-ports", default="20000-40000", show_default=True, help="RTP port range FIRST-LAST.")
@click.option("--media-timeout", default=30.0, show_default=True, help="Hang up after this long without RTP.")
@click.option("--drain", default=0.0, show_default=True, help="On SIGTERM, seconds to let calls finish.")
@click.option(
    "--stats-file", type=click.Path(dir_okay=False, path_type=Path), help="Write JSON stats at exit."
)
@click.option(
    "--tcp-idle-timeout", default=120.0, show_default=True, help="Close a TCP connection idle this long (s)."
)
@click.option("--max-connections", default=4096, show_default=True, help="TCP connections in total.")
@click.option("--max-connections-per-ip", default=256, show_default=True, help="TCP connections per source.")
@click.option("--max-message-size", default=65535, show_default=True, help="Larger SIP messages get 413.")
@click.option(
    "--max-transactions", default=20000, show_default=True, help="SIP transactions in flight; beyond: 503."
)
@click.option(
    "--rate-per-ip",
    default=200.0,
    show_default=True,
    help="SIP requests per second from one source (bursts of twice that); beyond: --rate-action (0 = off).",
)
@click.option("--rate-action", type=click.Choice(["reply", "drop"]), default="reply", show_default=True,
              help="Over the rate: answer 503, or drop.")  # fmt: skip
@click.option(
    "--allow",
    "allow",
    multiple=True,
    metavar="NETWORK",
    help="Only take SIP from these source networks (e.g. the trunk's 192.0.2.0/24); repeatable.",
)
@click.option(
    "--auth-users",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ask callers for digest credentials (qop=auth): a file of USER:PASSWORD lines.",
)
@click.option("--auth-realm", default=None, help="The digest realm (default: --host).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also take SIP over TLS, with this certificate (PEM; its chain after it).")  # fmt: skip
@click.option(
    "--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="The TLS key (PEM)."
)
@click.option("--tls-port", default=5061, show_default=True, help="Port for SIP over TLS (with --tls-cert).")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CA certificates that TLS peers' certificates are checked against.")  # fmt: skip
@click.option(
    "--tls-verify-client", is_flag=True, help="Refuse TLS clients without a certificate from --tls-ca."
)
@click.option(
    "--srtp",
    type=click.Choice(["off", "optional", "required"]),
    default="optional",
    show_default=True,
    help="SRTP with SDES keys: optional answers RTP/SAVP offers with SRTP; required refuses plain RTP (488).",
)
@click.option(
    "--records",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("parley-calls.jsonl"),
    show_default=True,
    help="Append each agent call's record (JSON lines; caller data marked sensitive).",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    help="Worker processes, each on its own SIP port (PORT, PORT+1, ...) and slice of --rtp-ports, "
    "under one supervisor (default: one per core). --max-calls is per worker.",
)
@click.option(
    "--admin-port",
    type=click.IntRange(1, 65535),
    help="HTTP on HOST: GET /metrics (Prometheus); with several workers also GET /status, POST /roll.",
)
@click.option(
    "--decode-processes",
    type=click.IntRange(1),
    help="An agent's speech decoder processes per worker (default: the cores left beside the workers).",
)
@click.option(
    "--decode-hang-s",
    type=click.FloatRange(min=0, min_open=True),
    default=15.0,
    show_default=True,
    help="A speech decoder process that finishes none of its waiting work for this long is killed "
    "and replaced (one that dies is replaced at once).",
)
@click.option(
    "--studio",
    metavar="URL",
    help="Serve AGENT (a name) as the studio at URL publishes it: its live version, followed within "
    "seconds; call records (with each turn's audio) are sent to the studio, kept on disk while it is down.",
)
@click.option("--token", envvar="PARLEY_STUDIO_TOKEN", help="The studio API token (or $PARLEY_STUDIO_TOKEN).")
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Seal caller data in --records with these keys (KID:BASE64 a line; default: $PARLEY_KEYS if set).",
)
@click.option(
    "--webrtc-port",
    type=click.IntRange(1, 65535),
    help="Also take browser calls (WebRTC): serve the call page and its signalling on HOST:PORT "
    "(with several workers, worker i answers the offers the page routes to it on PORT+1+i).",
)
@click.option(
    "--webrtc-host",
    metavar="ADDRESS",
    help="Serve the call page on this address instead of --host (e.g. 127.0.0.1 behind a reverse "
    "proxy; the call's media still goes to --host's interfaces). A node's workers always answer the "
    "offers its page routes to them on 127.0.0.1.",
)
@click.option("--webrtc-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Serve the call page over HTTPS with this certificate (PEM): browsers allow the "
              "microphone only on HTTPS pages, or on localhost.")  # fmt: skip
@click.option(
    "--webrtc-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Its key (PEM)."
)
@click.option("--webrtc-ice-server", "webrtc_ice_servers", multiple=True, metavar="URL",
              help="A STUN/TURN server for browsers behind NAT (stun:HOST:PORT); repeatable.")  # fmt: skip
@click.option(
    "--webrtc-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Browser calls one address may start per minute (beyond: 429).",
)
@click.option(
    "--webrtc-consent-timeout",
    type=click.FloatRange(min=5),
    default=30.0,
    show_default=True,
    help="End a browser call whose browser stopped answering ICE consent checks for this long (RFC 7675).",
)
def serve(
    agent: str,
    host: str,
    port: int,
    transport: str,
    max_calls: int | None,
    max_load: float,
    rtp_ports: str,
    media_timeout: float,
    drain: float,
    stats_file: Path | None,
    tcp_idle_timeout: float,
    max_connections: int,
    max_connections_per_ip: int,
    max_message_size: int,
    max_transactions: int,
    rate_per_ip: float,
    rate_action: str,
    allow: tuple[str, ...],
    auth_users: Path | None,
    auth_realm: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_port: int,
    tls_ca: Path | None,
    tls_verify_client: bool,
    srtp: str,
    records: Path,
    workers: int | None,
    admin_port: int | None,
    decode_processes: int | None,
    decode_hang_s: float,
    studio: str | None,
    token: str | None,
    key_file: Path | None,
    webrtc_port: int | None,
    webrtc_host: str | None,
    webrtc_cert: Path | None,
    webrtc_key: Path | None,
    webrtc_ice_servers: tuple[str, ...],
    webrtc_rate: float,
    webrtc_consent_timeout: float,
) -> None:
    """Answer calls with AGENT: an agent YAML file (see `parley validate`), `echo`, or with --studio
    an agent's name in the studio."""
    transports = ("UDP", "TCP") if transport == "both" else (transport.upper(),)
    from parley.agent.sealing import Keyring, KeyringError
    from parley.telephony.server import run_server

    try:
        keyring = Keyring.load(key_file)
    except KeyringError as exc:
        raise click.BadParameter(str(exc), param_hint="--key-file") from exc
    if studio is not None:
        if not studio.startswith(("http://", "https://")):
            raise click.BadParameter("expected http(s)://HOST:PORT", param_hint="--studio")
        if not token:
            raise click.UsageError("--studio needs --token (or $PARLEY_STUDIO_TOKEN): make one in the studio")
    elif agent != "echo":
        from parley.agent.loader import AgentFileError, load_agent

        try:
            load_agent(Path(agent))  # fail fast with the file's errors, before any warm-up
        except (AgentFileError, OSError) as exc:
            for error in getattr(exc, "errors", [exc]):
                click.echo(str(error), err=True)
            raise SystemExit(1) from exc

    from parley.sip.limits import SipLimits, SourceFilter

    try:
        limits = SipLimits(
            tcp_idle_timeout=tcp_idle_timeout,
            max_connections=max_connections,
            max_connections_per_ip=max_connections_per_ip,
            max_message_size=max_message_size,
            max_transactions=max_transactions,
            rate_per_ip=rate_per_ip,
            rate_action=rate_action,
        )
        SourceFilter(allow)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc

    from parley.telephony.load import usable_cores

    workers = workers or usable_cores()
    if webrtc_port is not None:
        if (webrtc_cert is None) != (webrtc_key is None):
            raise click.BadParameter("--webrtc-cert and --webrtc-key go together", param_hint="--webrtc-cert")
        # the page's port, and with several workers each one's signalling port after it, on loopback
        # (see webpage.py)
        from parley.telephony.webpage import WORKER_PAGE_HOST, worker_page_port

        pages = [(webrtc_host or host, webrtc_port)]
        if workers > 1:
            pages += [(WORKER_PAGE_HOST, worker_page_port(webrtc_port, i)) for i in range(workers)]
        for page_host, page_port in pages:
            busy = _port_in_use(page_host, page_port, ("TCP",))
            if busy:
                click.echo(f"parley serve: error: {busy}", err=True)
                raise SystemExit(2)
    for worker_port in range(port, port + workers):  # each worker's SIP port; before any warm-up
        busy = _port_in_use(host, worker_port, transports)
        if busy:
            click.echo(f"parley serve: error: {busy}", err=True)
            raise SystemExit(2)
    if workers > 1:
        from parley.cluster.node import serve_node

        context = click.get_current_context()
        try:
            clean = serve_node(
                context.params,
                rtp_ports=_port_range(rtp_ports),
                logging_options=context.find_root().params,
                workers=workers,
                admin_port=admin_port,
                stats_file=stats_file,
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        except OSError as exc:  # the admin port taken
            _cannot_listen(host, admin_port, exc)
        raise SystemExit(0 if clean else 1)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        uvloop = None
    authenticator = None
    if auth_users is not None:
        from parley.sip.auth import DigestVerifier

        authenticator = DigestVerifier(_read_users(auth_users), auth_realm or host)
    tls = None
    if tls_cert is not None:
        from parley.sip.tls import TlsConfig

        if tls_key is None:
            raise click.BadParameter("--tls-cert needs --tls-key", param_hint="--tls-key")
        try:
            tls = TlsConfig(tls_cert, tls_key, port=tls_port, ca_file=tls_ca, verify_client=tls_verify_client)
            tls.server_context()  # a bad certificate or key fails here, with its reason
        except (ValueError, OSError) as exc:
            raise click.BadParameter(str(exc), param_hint="--tls-cert") from exc
    options: dict[str, Any] = dict(
        limits=limits,
        allow=allow,
        authenticator=authenticator,
        tls=tls,
        srtp=srtp,
        host=host,
        port=port,
        transports=transports,
        max_calls=max_calls,
        max_load=max_load or None,
        rtp_ports=_port_range(rtp_ports),
        media_timeout=media_timeout,
        drain=drain,
    )
    if webrtc_port is not None:
        from parley.telephony.server import WebRtcOptions

        tls_files = (webrtc_cert, webrtc_key) if webrtc_cert and webrtc_key else None
        options["webrtc"] = WebRtcOptions(
            webrtc_port, tls_files, webrtc_ice_servers, webrtc_rate, webrtc_consent_timeout, webrtc_host
        )
    if admin_port is not None:  # one process: its own metrics (a node's supervisor serves more)
        from prometheus_client import start_http_server

        try:
            start_http_server(admin_port, addr=host)
        except OSError as exc:
            _cannot_listen(host, admin_port, exc)
    if studio is not None:
        from parley.studio.node import serve_from_studio

        coro = serve_from_studio(
            studio,
            token or "",
            agent,
            records,
            keyring=keyring,
            decode_processes=decode_processes,
            decode_hang_s=decode_hang_s,
            **options,
        )
    elif agent == "echo":
        coro = run_server(echo, **options)
    else:
        from parley.agent.voice import serve_agent

        coro = serve_agent(
            Path(agent),
            records,
            decode_processes=decode_processes,
            decode_hang_s=decode_hang_s,
            keyring=keyring,
            **options,
        )
    try:
        stats = uvloop.run(coro) if uvloop is not None else asyncio.run(coro)
    except OSError as exc:  # e.g. the port was taken between the check and the bind
        _cannot_listen(host, port, exc)
    if stats_file is not None:
        stats_file.write_text(json.dumps(stats, indent=2))


_DATABASE = click.option(
    "--database",
    default="parley-studio.db",
    show_default=True,
    help="SQLite file, or postgresql://USER@HOST:PORT/DB.",
)
_KEY_FILE = click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Caller-data keys, KID:BASE64 a line (default: $PARLEY_KEYS, else parley-studio.keys, created).",
)


@main.group(invoke_without_command=True)
@_DATABASE
@_KEY_FILE
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", default=8700, show_default=True, help="HTTP port.")
@click.option("--secure-cookies", is_flag=True, help="Mark the session cookie Secure (served behind HTTPS).")
@click.pass_context
def studio(
    ctx: click.Context, database: str, key_file: Path | None, host: str, port: int, secure_cookies: bool
) -> None:
    """The studio: write, version, publish and roll back agents, read calls turn by turn (web app)."""
    ctx.obj = {"database": database, "key_file": key_file}
    if ctx.invoked_subcommand is None:
        from parley.studio.server import open_store, serve_studio

        store = open_store(database, key_file)
        if not store.users():
            click.echo("no users yet: create the first admin with `parley studio adduser NAME`", err=True)
        click.echo(
            f"parley studio: http://{host}:{port}/ (database {store.engine.url.render_as_string()})", err=True
        )
        serve_studio(store, host, port, secure_cookies=secure_cookies)


@studio.command()
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "editor", "viewer"]), default="admin", show_default=True)
@click.option(
    "--password", prompt=True, hide_input=True, confirmation_prompt=True, help="At least 8 characters."
)
@click.pass_obj
def adduser(obj: dict[str, Any], name: str, role: str, password: str) -> None:
    """Create a studio user (the first admin, to begin with)."""
    from parley.studio.server import open_store
    from parley.studio.store import Conflict, Invalid

    store = open_store(obj["database"], obj["key_file"])
    try:
        store.add_user(name, password, role)
    except (Conflict, Invalid) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"user {name} ({role}) added")


@studio.command(name="import")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--publish", is_flag=True, help="Make the imported version live.")
@click.option(
    "--as-user", default="cli", show_default=True, help="Author named in versions and the audit log."
)
@click.pass_obj
def import_agents(obj: dict[str, Any], files: tuple[Path, ...], publish: bool, as_user: str) -> None:
    """Import agent files: a new agent (named as the file's `name:`), or a new version of it when the
    text changed."""
    from parley.agent.loader import AgentFileError, load_agent
    from parley.studio.server import open_store
    from parley.studio.store import Invalid, NotFound, Principal

    store = open_store(obj["database"], obj["key_file"])
    actor = Principal(0, as_user, "admin")
    failed = False
    for path in files:
        try:
            name = load_agent(path).name
        except AgentFileError as exc:
            click.echo(str(exc), err=True)
            failed = True
            continue
        text = path.read_text(encoding="utf-8")
        try:
            head = store.version(name)
            number = (
                head["number"]
                if head["yaml"] == text
                else store.save_version(name, text, head["number"], actor)
            )
        except NotFound:
            try:
                number = store.create_agent(name, text, actor)
            except Invalid as exc:
                click.echo(f"{path}: {exc}", err=True)
                failed = True
                continue
        if publish and store.agent(name)["live"] != number:
            store.publish(name, number, actor)
        click.echo(f"{path}: agent {name} v{number}" + (" (live)" if publish else ""))
    if failed:
        raise SystemExit(1)


@main.group()
def keys() -> None:
    """Keys that encrypt caller data at rest (the studio's database, `serve --records`)."""


@keys.command()
@_DATABASE
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("parley-studio.keys"),
    show_default=True,
    help="The key file: a new key is appended and becomes the active one.",
)
@click.option("--no-new-key", is_flag=True, help="Only re-seal values under the file's last key.")
def rotate(database: str, key_file: Path, no_new_key: bool) -> None:
    """Add a new key and re-encrypt the database's caller data with it, batch by batch. A running studio
    keeps serving: it reads the key file again when it meets the new key. Values it sealed meanwhile
    under the old key stay readable; a second rotation with --no-new-key moves them too."""
    from parley.agent.sealing import Keyring, KeyringError
    from parley.studio.server import open_store

    try:
        if not no_new_key:
            old = Keyring.load(key_file) if key_file.exists() else None
            kid = f"k{len(old.keys) + 1}" if old else "k1"
            while old and kid in old.keys:
                kid += "x"
            with key_file.open("a", encoding="utf-8") as out:
                out.write(Keyring.new_key_line(kid) + "\n")
        store = open_store(database, key_file)
    except KeyringError as exc:
        raise click.ClickException(str(exc)) from exc
    changed = store.rotate()
    click.echo(f"{changed} values re-sealed with key {store.keyring.active}")


@main.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--target",
    "targets",
    multiple=True,
    help="The agent to call, sip:HOST:PORT (default: the scenario's target); repeat it to spread the "
    "calls round-robin over several (e.g. a node's worker ports).",
)
@click.option("--calls", type=click.IntRange(1), help="Place this many calls (overrides the scenario).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Calls per second.")
@click.option("--concurrency", type=click.IntRange(1), help="At most this many calls at once.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="Place calls for S seconds.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for calls.jsonl, summary.json, report.html (default: loadtest-results/<time>).",
)
@click.option("--seed", default=0, show_default=True, help="Same seed, same per-call values.")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Processes.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Local address for SIP and RTP.")
@click.option("--sip-port", type=click.IntRange(0, 65535), default=0, help="Local SIP port (0: a free one).")
@click.option(
    "--rtp-ports",
    default="40000-60000",
    show_default=True,
    help="Local RTP port range (each process puts all its calls on one port pair from its share).",
)
@click.option("--webhook-port", type=click.IntRange(0, 65535), help="Sink port (overrides the scenario).")
def loadtest(
    scenario: Path,
    targets: tuple[str, ...],
    calls: int | None,
    rate: float | None,
    concurrency: int | None,
    duration: float | None,
    out: Path | None,
    seed: int,
    workers: int,
    host: str,
    sip_port: int,
    rtp_ports: str,
    webhook_port: int | None,
) -> None:
    """Place conversational calls from SCENARIO (YAML) at an agent; exit 1 when thresholds are missed.

    Writes one JSON line per call, a summary and an HTML report; Ctrl-C stops cleanly (exit 130).
    """
    from parley.loadtest.run import EXIT_USAGE, RunOptions, run_loadtest
    from parley.loadtest.scenario import ScenarioFileError

    if calls is not None and duration is not None:
        raise click.UsageError("give --calls or --duration, not both")
    for target in targets:
        if not target.startswith(("sip:", "sips:")):
            raise click.BadParameter(f"expected sip:HOST:PORT, not {target!r}", param_hint="--target")
    overrides = {"calls": calls, "rate": rate, "concurrency": concurrency, "duration_s": duration}
    options = RunOptions(
        scenario_path=scenario,
        targets=targets,
        out=out,
        seed=seed,
        workers=workers,
        host=host,
        sip_port=sip_port,
        rtp_ports=_port_range(rtp_ports),
        webhook_port=webhook_port,
        overrides=overrides,
    )
    try:
        result = run_loadtest(options)
    except ScenarioFileError as exc:
        for error in exc.errors:
            click.echo(str(error), err=True)
        raise SystemExit(EXIT_USAGE) from exc
    except (ValueError, OSError) as exc:
        click.echo(f"parley loadtest: error: {exc}", err=True)
        raise SystemExit(EXIT_USAGE) from exc
    raise SystemExit(result.exit_code)


@main.group()
def cluster() -> None:
    """Many workers and nodes behind Kamailio: its configuration, rolling upgrades, status."""


@cluster.command("kamailio-config")
@click.argument("nodes", nargs=-1, required=True)
@click.option("--listen", default="127.0.0.1:5060", show_default=True, help="Kamailio's SIP address IP:PORT.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory for kamailio.cfg and dispatcher.list.",
)
@click.option(
    "--max-calls",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Calls per worker Kamailio sends at most (0: no limit; set the workers' --max-calls).",
)
@click.option(
    "--probe-interval",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Seconds between OPTIONS probes of each worker.",
)
@click.option("--children", type=click.IntRange(1), default=4, show_default=True, help="Kamailio processes.")
@click.option(
    "--rate-per-ip",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Requests a second from one source before Kamailio drops its requests (pike; 0: no limit).",
)
def kamailio_config(
    nodes: tuple[str, ...],
    listen: str,
    out: Path,
    max_calls: int,
    probe_interval: int,
    children: int,
    rate_per_ip: int,
) -> None:
    """Write kamailio.cfg and dispatcher.list (Kamailio 5.6) balancing calls over NODES.

    Each NODE is HOST[:PORT][/WORKERS] as `parley serve --host HOST --port PORT --workers WORKERS`
    runs it, e.g. 10.0.0.5:5060/8 (workers on ports 5060-5067).
    """
    from parley.cluster.kamailio import Node, dispatcher_list, kamailio_cfg, module_path

    try:
        parsed = [Node.parse(node) for node in nodes]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NODE") from exc
    if not re.fullmatch(r"[0-9.]+:\d+", listen):
        raise click.BadParameter("expected IP:PORT, e.g. 10.0.0.1:5060", param_hint="--listen")
    out.mkdir(parents=True, exist_ok=True)
    list_file = (out / "dispatcher.list").resolve()
    list_file.write_text(dispatcher_list(parsed, max_load=max_calls))
    config = kamailio_cfg(
        listen=listen, dispatcher_file=str(list_file), probe_interval=probe_interval, children=children,
        modules=module_path(), rate_per_ip=rate_per_ip,
    )  # fmt: skip
    (out / "kamailio.cfg").write_text(config)
    workers = sum(node.workers for node in parsed)
    click.echo(f"{out / 'kamailio.cfg'} and {list_file}: {workers} workers on {len(parsed)} nodes")


@cluster.command()
@click.argument("admins", nargs=-1, required=True)
@click.option(
    "--settle",
    default=3.0,
    show_default=True,
    help="Seconds after a worker is back before draining the next (more than Kamailio's probe interval).",
)
@click.option("--timeout", default=600.0, show_default=True, help="Seconds a node may take to roll.")
def roll(admins: tuple[str, ...], settle: float, timeout: float) -> None:
    """Rolling upgrade: restart every worker of each node in turn on the code and agent now on disk.

    ADMINS are the nodes' admin endpoints, http://HOST:PORT (`parley serve --admin-port`). A worker
    drains first (OPTIONS 503, its calls finish), so no call is lost; exit 1 if a node fails to roll.
    """
    from parley.cluster.roll import RollError, roll_nodes

    try:
        roll_nodes(list(admins), settle=settle, timeout=timeout, report=click.echo)
    except RollError as exc:
        click.echo(f"parley cluster roll: {exc}", err=True)
        raise SystemExit(1) from exc


@cluster.command()
@click.argument("admins", nargs=-1, required=True)
def status(admins: tuple[str, ...]) -> None:
    """Each worker's state on the nodes at ADMINS (http://HOST:PORT); exit 1 if one is not ready."""
    import httpx

    from parley.cluster.roll import node_status

    ready = True
    with httpx.Client(timeout=5.0) as client:
        for admin in admins:
            try:
                node = node_status(admin.rstrip("/"), client)
            except httpx.HTTPError as exc:
                click.echo(f"{admin}: unreachable ({exc})")
                ready = False
                continue
            for worker in node["workers"]:
                ready = ready and worker["state"] == "ready"
                click.echo(
                    f"{admin} worker {worker['index']} port {worker['port']}: {worker['state']} (pid"
                    f" {worker['pid']}, generation {worker['generation']}, restarts {worker['restarts']})"
                )
    if not ready:
        raise SystemExit(1)


@main.command()
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Directory to write."
)
@click.option("--seed", default=0, show_default=True, help="Same seed, same corpus (byte for byte).")
@click.option("--per-type", default=20, show_default=True, help="Utterances per slot type.")
@click.option(
    "--voices",
    multiple=True,
    help="ENGINE:VOICE, repeatable or comma-separated (default: all installed flite/festival/espeak-ng).",
)
@click.option("--workers", default=2, show_default=True, help="Utterances rendered at once.")
@click.option(
    "--split",
    type=click.Choice(["all", "train", "eval"]),
    default="all",
    show_default=True,
    help="train: no held-out voices or noise; train and eval never share a voice+text pair.",
)
def corpus(out: Path, seed: int, per_type: int, voices: tuple[str, ...], workers: int, split: str) -> None:
    """Generate labelled synthetic caller audio (8 kHz WAVs + labels.jsonl) for every slot type."""
    from parley.speech.corpus import generate_corpus

    if per_type < 1:
        raise click.BadParameter("must be at least 1", param_hint="--per-type")
    try:
        records = asyncio.run(
            generate_corpus(out, seed=seed, per_type=per_type, voices=voices, workers=workers, split=split)
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--voices") from exc
    seconds = sum(record["duration_s"] for record in records)
    click.echo(f"{len(records)} utterances ({seconds:.1f} s of audio) in {out}")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check agent and load-test scenario files (a top-level `scripts:` makes a scenario); print each
    error as FILE:LINE:COL and exit 1 if any file is invalid."""
    from parley.agent.loader import validate_file
    from parley.loadtest.scenario import is_scenario_text, validate_scenario_file

    failed = False
    for path in files:
        try:
            scenario = is_scenario_text(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            scenario = False  # the agent loader reports why the file cannot be read
        errors = validate_scenario_file(path) if scenario else validate_file(path)
        for error in errors:
            click.echo(str(error))
        if errors:
            failed = True
        else:
            click.echo(f"{path}: ok")
    if failed:
        raise SystemExit(1)


@main.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file instead.")
@click.option("--scenario", is_flag=True, help="The schema of load-test scenario files instead.")
def schema(out: Path | None, scenario: bool) -> None:
    """Print the JSON schema of agent files (or scenario files) for editors' YAML support."""
    from parley.agent.model import agent_json_schema
    from parley.loadtest.scenario import scenario_json_schema

    text = json.dumps(scenario_json_schema() if scenario else agent_json_schema(), indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text)
        click.echo(f"schema written to {out}")


@main.command()
@click.argument("agent_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--no-webhooks",
    is_flag=True,
    help="Don't call webhooks: each succeeds with made-up values for the fields it saves.",
)
@click.option(
    "--record", type=click.Path(dir_okay=False, path_type=Path), help="Append the call record (JSONL)."
)
@click.option(
    "--confidence",
    type=click.FloatRange(0.0, 1.0),
    default=1.0,
    show_default=True,
    help="ASR confidence given to typed answers (below the agent's threshold: read-backs).",
)
@click.option("--today", type=click.DateTime(["%Y-%m-%d"]), help="Reference date for relative dates.")
def chat(
    agent_file: Path, no_webhooks: bool, record: Path | None, confidence: float, today: datetime | None
) -> None:
    """Talk to AGENT_FILE in the terminal: typed lines are the caller's final transcripts.

    Each line is fed word by word as partial transcripts first (then once more whole, as a recogniser
    repeats its partial when the caller falls silent), so early close shows as "[early close]".
    Commands: /dtmf DIGITS (keypad), /silence or an empty line (no input), /quit (caller hangs up).
    """
    import sys
    import uuid

    from parley.agent.loader import AgentFileError, load_agent
    from parley.agent.runtime import Conversation

    with _errors_only_logged():
        try:
            agent = load_agent(agent_file)
        except AgentFileError as exc:
            click.echo(str(exc), err=True)
            raise SystemExit(1) from exc
        conversation = Conversation(
            agent, call_id=f"chat-{uuid.uuid4().hex[:12]}", today=today.date() if today else None
        )
        actions = conversation.start()
        while True:
            ended = _chat_perform(conversation, actions, no_webhooks)
            if ended:
                break
            click.echo("you> ", nl=False)
            line = sys.stdin.readline()
            if not line:  # end of input: the caller hangs up
                click.echo()
                line = "/quit"
            line = line.strip()
            if line == "/quit":
                conversation.on_hangup()
                click.echo("[caller hung up]")
                break
            if line in ("", "/silence"):
                actions = conversation.on_no_input()
            elif line.startswith("/dtmf"):
                actions = conversation.on_dtmf(line.removeprefix("/dtmf").strip().replace(" ", ""))
                if not actions:
                    click.echo("[keypad input not accepted here]")
            elif line.startswith("/"):
                click.echo("[commands: /dtmf DIGITS, /silence, /quit]")
                actions = []
            else:
                actions = _chat_say(conversation, line, confidence)
        click.echo("--- call record ---")
        click.echo(conversation.record.summary(show_values=True))
        if record is not None:
            conversation.record.write_jsonl(record)
            click.echo(f"record appended to {record}")


@contextlib.contextmanager
def _errors_only_logged() -> Iterator[None]:
    """Only errors logged while chatting (the dialogue shows failures itself; -v brings logs back);
    the root logger's level is given back afterwards (tests run the CLI in one process)."""
    root = logging.getLogger()
    previous = root.level
    if not root.isEnabledFor(logging.INFO):
        root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(previous)


def _chat_say(conversation: Conversation, line: str, confidence: float) -> list[Action]:
    from parley.agent.textchat import say_typed

    return say_typed(conversation, line, confidence, click.echo)


def _chat_perform(conversation: Conversation, actions: list[Action], no_webhooks: bool) -> bool:
    from parley.agent.textchat import perform

    return perform(conversation, actions, no_webhooks, click.echo)
