"""The studio's speed: call-record ingest, the filtered call list, a call's timeline page.

For each database (SQLite file, and PostgreSQL when ``--postgres`` reaches a server), side by side in
one run:

1. **Ingest** — ``parley studio`` as a subprocess (uvicorn, one process); this process POSTs real call
   records of the card-block example (made by the dialogue runtime, two ASR hypotheses on the first
   turn; caller data in sensitive envelopes, sealed by the studio with AES-GCM) to ``/api/calls`` in
   batches of ``--batch`` lines. Reported: calls/s (goal ≥ 500), and the CPU time the ingest took in
   the studio's process and in PostgreSQL's backends serving its database, as calls per CPU-second
   (what the rate would be with a core to itself: on a shared machine the wall-clock rate also
   measures the other work).
2. **Call list** — the store filled to ``--calls`` calls (direct batch ingest: the same code path
   behind the API), then ``GET /api/calls`` with each of several filters (agent + outcome, a slot
   missing, a date window, version + duration), ``--repeats`` times each: p50/p95 ms (goal p95 ≤ 200).
3. **Timeline** — ``GET /calls/ID`` (the HTML page, masked, as a viewer gets it) of a call with 20
   turns: p50/p95 ms (goal p95 ≤ 150).

Usage::

    .venv/bin/python bench/studio.py                          # 100,000 calls, SQLite and PostgreSQL
    .venv/bin/python bench/studio.py --calls 20000 --no-postgres   # quick

Writes ``bench/results/studio-<time>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from parley.agent.loader import load_agent_text  # noqa: E402
from parley.agent.runtime import CallWebhook, Conversation  # noqa: E402
from parley.agent.sealing import Keyring  # noqa: E402
from parley.speech.types import Hypothesis  # noqa: E402
from parley.studio.store import Principal, Store  # noqa: E402

AGENT_TEXT = (ROOT / "examples" / "card_block.yaml").read_text()
POSTGRES = os.environ.get("PARLEY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
PASSWORD = "bench-password"


def template_records() -> list[dict[str, Any]]:
    """Three real records (completed, transferred, abandoned early) from the dialogue runtime."""
    agent = load_agent_text(AGENT_TEXT)
    out = []
    for kind in ("completed", "operator", "hangup"):
        c = Conversation(agent, call_id="template")
        c.record.agent_version = 1
        c.start()
        if kind == "operator":
            c.on_final("operator please", 0.9)
        elif kind == "completed":
            c.on_partial("1 2 3 4")
            c.on_final(
                "1 2 3 4 5 6 7 8",
                0.95,
                hypotheses=[
                    Hypothesis("sphinx-grammar", "1 2 3 4 5 6 7 8", 0.95, True),
                    Hypothesis("sphinx-agent-lm", "1 2 3 4 5 6 7", 0.6, True),
                ],
                arbiter_reason="grammar parse",
                winner="sphinx-grammar",
                timing={  # the speech layer's parts, and the voice layer's decision and first audio out
                    "close_after_speech_ms": 180.0,
                    "asr_finish_ms": 40.0,
                    "decision_ms": 225.0,
                    "first_audio_ms": 310.0,
                },
            )
            c.on_final("the third of may nineteen eighty five", 0.9)
            actions = c.on_final("yes", 0.9) + c.on_final("yes", 0.9)
            if any(isinstance(a, CallWebhook) for a in actions):
                c.on_webhook_result(200, {"reference": "AB12", "last_four": "5678"}, None)
        c.on_hangup() if c.outcome is None else None
        out.append(c.record.to_dict())
    return out


def long_call(template: dict[str, Any], turns: int) -> dict[str, Any]:
    """A record with ``turns`` turns (the first turn repeated), for the timeline page."""
    record = copy.deepcopy(template)
    first = record["turns"][0]
    record["turns"] = [dict(copy.deepcopy(first), t_listen=i * 5.0, t_end=i * 5.0 + 3) for i in range(turns)]
    record["call_id"] = f"long-{uuid.uuid4().hex[:8]}"
    return record


def make_records(templates: list[dict[str, Any]], count: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(count):
        record = copy.deepcopy(templates[i % len(templates)])
        record["call_id"] = f"bench-{seed}-{i}"
        record["started_at"] = (start + timedelta(seconds=i * 60 + rng.randrange(60))).isoformat()
        record["agent_version"] = 1 + (i // len(templates)) % 3
        record["duration_s"] = round(rng.uniform(10, 300), 1)
        account = f"{rng.randrange(10**8):08d}"
        if "account_number" in record["slots"]:
            record["slots"]["account_number"]["value"] = account
        out.append(record)
    return out


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1),
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_studio(database: str, key_file: Path, port: int, workdir: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "parley", "studio", "--database", database, "--key-file", str(key_file)]
    server = subprocess.Popen([*cmd, "--port", str(port)], cwd=workdir, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/login", timeout=2)
            return server
        except httpx.TransportError as exc:
            if server.poll() is not None or time.monotonic() > deadline:
                log = server.stderr.read() if server.stderr else ""
                raise RuntimeError(f"the studio did not start: {log}") from exc
            time.sleep(0.2)


def backend_pids(store: Store) -> list[int]:
    """PostgreSQL's backend processes serving ``store``'s database (none for SQLite)."""
    if store.engine.dialect.name != "postgresql":
        return []
    with store.engine.connect() as db:
        query = (
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [int(pid) for pid in db.execute(sa.text(query)).scalars()]


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each process still there."""
    found = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        found[pid] = times.user + times.system
    return found


def bench_database(label: str, database: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    key_file = workdir / f"{label}.keys"
    key_file.write_text(Keyring.new_key_line("k1") + "\n")
    store = Store(database, Keyring.load(key_file))  # type: ignore[arg-type]
    store.migrate()
    store.add_user("bench", PASSWORD, "admin")
    admin = store.check_password("bench", PASSWORD)
    assert admin is not None
    token = store.add_token("bench", "bench", admin)
    store.add_user("viewer", PASSWORD, "viewer")
    viewer = store.check_password("viewer", PASSWORD)
    assert viewer is not None
    viewer_token = store.add_token("viewer", "bench", viewer)
    bench_admin = Principal(admin.user_id, "bench", "admin")
    store.create_agent("card-block", AGENT_TEXT, bench_admin)
    for number in (1, 2):  # the records name versions 1 to 3
        store.save_version("card-block", AGENT_TEXT + f"\n# v{number + 1}\n", number, bench_admin)
    templates = template_records()
    port = free_port()
    server = start_studio(database, key_file, port, workdir)
    result: dict[str, Any] = {"database": label}
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"})
        viewer_http = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {viewer_token}"}
        )
        # 1. ingest through the API
        records = make_records(templates, args.ingest, seed=2)
        bodies = [
            "".join(json.dumps(r) + "\n" for r in records[i : i + args.batch]).encode()
            for i in range(0, len(records), args.batch)
        ]
        http.get("/api/calls", params={"limit": 1}).raise_for_status()  # its database connection is open
        cpu_before = cpu_seconds([server.pid, *backend_pids(store)])
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        for body in bodies:
            response = http.post("/api/calls", content=body, timeout=60)
            response.raise_for_status()
        elapsed = time.perf_counter() - started
        cpu_after = cpu_seconds([server.pid, *backend_pids(store)])
        cpu = sum(after - cpu_before.get(pid, 0.0) for pid, after in cpu_after.items())
        result["ingest_calls_per_s"] = round(len(records) / elapsed, 1)
        result["ingest_calls_per_cpu_s"] = round(len(records) / max(cpu, 1e-3), 1)
        result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        # 2. fill to --calls, then the filtered list
        remaining = args.calls - args.ingest
        fill = make_records(templates, max(remaining, 0), seed=3)
        fill_started = time.perf_counter()
        for i in range(0, len(fill), 1000):
            store.ingest(fill[i : i + 1000])
        result["fill_s"] = round(time.perf_counter() - fill_started, 1)
        store.optimize()  # as the running studio does hourly (its first run is at start)
        with store.engine.connect() as db:
            result["calls"] = db.execute(sa.text("SELECT count(*) FROM calls")).scalar()
        filters = {
            "agent+outcome": {"agent": "card-block", "outcome": "transferred"},
            "slot missing": {"slot": "account_number", "slot_status": "missing"},
            "date window": {"since": "2026-02-01T00:00:00Z", "until": "2026-02-02T00:00:00Z"},
            "version+duration": {"version": 2, "min_duration": 100, "max_duration": 200},
        }
        result["list"] = {}
        for name, query in filters.items():
            samples = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                response = viewer_http.get("/api/calls", params=query)
                samples.append(time.perf_counter() - t)
                response.raise_for_status()
            found = response.json()
            result["list"][name] = percentiles(samples) | {
                "matching": f"{found['total']}+" if found["more"] else found["total"]
            }
        # 3. the timeline page of a 20-turn call
        call = long_call(templates[0], 20)
        store.ingest([call])
        samples = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            response = viewer_http.get(f"/calls/{call['call_id']}")
            samples.append(time.perf_counter() - t)
            response.raise_for_status()
        assert response.text.count('class="turn"') == 20, "the timeline page did not render 20 turns"
        result["timeline_20_turns"] = percentiles(samples)
    finally:
        server.terminate()
        server.wait(10)
        store.close()
    return result


def postgres_database() -> tuple[str, Any] | None:
    try:
        import psycopg

        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=3)
    except Exception as exc:  # reported; the SQLite half still runs
        print(f"PostgreSQL not reachable ({exc}): SQLite only", file=sys.stderr)
        return None
    name = f"parley_bench_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    return POSTGRES.rsplit("/", 1)[0] + "/" + name, (admin, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000, help="calls in the store for the list")
    parser.add_argument("--ingest", type=int, default=5_000, help="calls POSTed for the ingest rate")
    parser.add_argument("--batch", type=int, default=100, help="records per POST")
    parser.add_argument("--repeats", type=int, default=50, help="requests per list filter and timeline")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        work = Path(workdir)
        results.append(bench_database("sqlite", str(work / "studio.db"), args, work))
        if not args.no_postgres:
            found = postgres_database()
            if found is not None:
                url, (admin, name) = found
                try:
                    results.append(bench_database("postgresql", url, args, work))
                finally:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    admin.close()
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"studio-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    for result in results:
        print(f"\n{result['database']}: {result['calls']} calls")
        print(
            f"  ingest through the API: {result['ingest_calls_per_s']} calls/s (goal >= 500); "
            f"{result['ingest_calls_per_cpu_s']} calls per CPU-second of the studio and its database "
            f"(load average {result['load_average'][0]} -> {result['load_average'][1]})"
        )
        for name, figures in result["list"].items():
            print(
                f"  list [{name}] ({figures['matching']} match): p50 {figures['p50_ms']} ms, "
                f"p95 {figures['p95_ms']} ms (goal p95 <= 200)"
            )
        timeline = result["timeline_20_turns"]
        print(
            f"  timeline, 20 turns: p50 {timeline['p50_ms']} ms, p95 {timeline['p95_ms']} ms"
            " (goal p95 <= 150)"
        )
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
