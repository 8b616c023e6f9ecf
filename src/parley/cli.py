"""The ``parley`` command line."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import click

from parley.apps.echo import echo


@click.group()
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Parley: real-time voice agents that answer phone calls."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _port_range(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    if not (first.isdigit() and last.isdigit()):
        raise click.BadParameter("expected FIRST-LAST, e.g. 20000-40000")
    return int(first), int(last)


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
    help="Answer 503 to new calls while the process uses more than this share of a core (0 = off).",
)
@click.option("--rtp-ports", default="20000-40000", show_default=True, help="RTP port range FIRST-LAST.")
@click.option("--media-timeout", default=30.0, show_default=True, help="Hang up after this long without RTP.")
@click.option("--drain", default=0.0, show_default=True, help="On SIGTERM, seconds to let calls finish.")
@click.option(
    "--stats-file", type=click.Path(dir_okay=False, path_type=Path), help="Write JSON stats at exit."
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
) -> None:
    """Answer calls with AGENT (an agent YAML file, or `echo`)."""
    if agent != "echo":
        raise click.BadParameter(f"unknown agent {agent!r}: only 'echo' exists so far", param_hint="AGENT")
    transports = ("UDP", "TCP") if transport == "both" else (transport.upper(),)
    from parley.telephony.server import run_server

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        uvloop = None
    coro = run_server(
        echo,
        host=host,
        port=port,
        transports=transports,
        max_calls=max_calls,
        max_load=max_load or None,
        rtp_ports=_port_range(rtp_ports),
        media_timeout=media_timeout,
        drain=drain,
    )
    stats = uvloop.run(coro) if uvloop is not None else asyncio.run(coro)
    if stats_file is not None:
        stats_file.write_text(json.dumps(stats, indent=2))


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
def corpus(out: Path, seed: int, per_type: int, voices: tuple[str, ...], workers: int) -> None:
    """Generate labelled synthetic caller audio (8 kHz WAVs + labels.jsonl) for every slot type."""
    from parley.speech.corpus import generate_corpus

    if per_type < 1:
        raise click.BadParameter("must be at least 1", param_hint="--per-type")
    try:
        records = asyncio.run(
            generate_corpus(out, seed=seed, per_type=per_type, voices=voices, workers=workers)
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--voices") from exc
    seconds = sum(record["duration_s"] for record in records)
    click.echo(f"{len(records)} utterances ({seconds:.1f} s of audio) in {out}")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check agent files; print each error as FILE:LINE:COL and exit 1 if any file is invalid."""
    from parley.agent.loader import validate_file

    failed = False
    for path in files:
        errors = validate_file(path)
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
def schema(out: Path | None) -> None:
    """Print the JSON schema of agent files (for editors' YAML support)."""
    from parley.agent.model import agent_json_schema

    text = json.dumps(agent_json_schema(), indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text)
        click.echo(f"schema written to {out}")
