"""Soak: a steady call load for a set time; the server's memory over time and per ended call.

``parley serve AGENT`` (``echo`` by default, or an agent file) runs pinned to core 1 with admission
control off; SIPp (core 0, ``uac_rtpstream.xml``: PCMU both ways) keeps ``--concurrent`` calls of
``--call-seconds`` each up for ``--minutes``. Every ``--sample`` seconds the server's RSS (with its
child processes, e.g. speech decoders) is read beside the number of calls SIPp has ended.

Reported:

- RSS over time (idle before the load, then each sample),
- the **slope after warm-up**: a least-squares line through (calls ended, RSS) of the samples after
  ``--warmup-minutes``, in MB per 10,000 calls (the goal: < 1), for the whole tree and for the event
  loop's process alone (its decode processes aside: whisper's is replaced when it hangs),
- **memory per concurrent call**: (mean RSS after warm-up - idle RSS) / concurrent calls,
- RSS once the load stopped and every ended session's linger ran out (``--settle`` seconds later).
Each sample also has the RSS of every process of the tree (``rss_by_pid``: which one grows).

With an agent (``--agent examples/card_block.yaml``) every call runs the dialogue: its prompts are
spoken, SIPp's recorded voice is heard by the VAD and decoded by every engine in the decode
processes (their RSS is counted), turns end in no-matches and re-asks, and each call's record is
appended to the records file; the report adds how many records were written and the turns they
heard, so the figures are those of calls that really ran the agent. Keep the concurrency to what its
decoders carry on the cores given, and ``--call-seconds`` below the time the agent takes to give up
and hang up itself (SIPp would count that call failed).

Measured here with ``examples/card_block.yaml`` (10 minutes, 4 concurrent calls of 10 s, a loaded
machine): 222 calls, none failed, 225 records (518 turns, 290 with speech). RSS 643 MB idle (the
event loop's process, a sphinx decoder process, whisper's), 811 MB on average after 4 minutes:
~42 MB per concurrent call, most of it the decoders each concurrent turn holds (the sphinx
process grew 303 -> 338 MB and was flat over its last 90 calls). The event loop's process grew
200 -> 215 MB over calls 42-190 (~0.1 MB a call).

What that growth was (``--tracemalloc 5``, 5 minutes of 4 calls of 10 s): the traced heap grew
98.7 -> 109.5 MB over calls 14-87 (0.15 MB a call), and one full collection took it back to
97.9 MB: nothing live was kept. It was cyclic garbage — each call's ASR turns and their engine
workers (which refer to each other), their hypotheses and queued audio, cancelled tasks whose
exceptions hold their frames, closures over the call — that the young collections promote and only
a full collection frees; the media clock's collector pacing ran one every 10 minutes (or when no
call was up). Since it runs one once 50 streams (or as many as are live) have ended, the traced heap
is a saw-tooth bounded by ~50 calls' garbage (98.6 -> 102.8 MB, back to 98.9 at the collection,
105.5 at the next), whatever the call rate. The same command without tracing
(``--agent examples/card_block.yaml --minutes 10 --concurrent 4``, 20 s calls), before and after:
the event loop's process 194.3 -> 196.6 MB over calls 8-114 (slope after warm-up 376 MB per 10,000
calls; the whole tree 2,610) against 186.6 -> 187.8 MB (100; the tree 506), 115 and 116 calls, one
and none failed. (Main had gained a second whisper process in between: compare the event loop's.)

``--tracemalloc FRAMES`` finds what the event loop's process keeps: the server runs with
:mod:`tracemalloc` tracing ``FRAMES`` frames per allocation (a small wrapper around ``parley serve``;
nothing in ``src/`` knows of it). At the first sample after warm-up it dumps a snapshot, runs a full
collection and dumps another; at each later sample it notes its traced memory as it is (live objects
and the cyclic garbage it has not collected itself yet); once the load ended and settled, it does
the full dump again. The report gives the traced memory's slope over the calls ended
(``traced_slope_mb_per_10k_calls``), what the last full collection freed and its kinds
(``garbage_mb_at_end``, ``garbage_kinds``), where that garbage was allocated (``top_garbage``) and
the allocation tracebacks that grew from the first full dump to the last (``top_growth``), per ended
call. Tracing slows the process down: use it to find a cause, not for the RSS figures.

``--retained-calls CALLS`` (with ``--tracemalloc``) measures what each call keeps exactly, where RSS
cannot resolve it: a warm-up batch, then batches of CALLS, each followed by ``--settle`` seconds
(every session's linger and transaction timer run out) and a full collection with no call up; the
traced heap's difference between two such idle points over the calls between them is the heap each
call left behind, to the byte. ``--clear-caches`` empties the bounded module-level LRU caches before
each idle point (each point notes their fill either way): what is left grows without bound.

Measured (issue 15, a 2-core machine shared with other work, load average 3-8):

- **echo**, ``--minutes 30 --concurrent 250 --call-seconds 20 --warmup-minutes 5 --sample 15``:
  22,500 calls, none failed; RSS 76.4 MB idle, 86.1 -> 86.6 MB over the 18,508 calls after warm-up
  (slope 0.20 +- 0.02 MB per 10,000 calls), flat at 86.59 MB over the last 15 minutes (~11,000
  calls: slope 0); **41 KB per concurrent call**. ``--tracemalloc 8 --retained-calls 200
  --retained-warmup 100 --concurrent 20 --call-seconds 2``: 125 and 43 bytes a call, the one object
  a call being the RTP port allocator's ``itertools.cycle`` keeping every port it handed out over its
  first pass (40 bytes a call for 10,000 calls; now an index).
- **agent** (``--agent examples/card_block.yaml --concurrent 8 --call-seconds 8``: one or two
  turns a call, hung up mid-dialogue), ``--tracemalloc 4 --retained-calls 300 --retained-warmup
  100``: 3,437 then 686 bytes a call, nearly all the extractors' 4,096-entry LRU cache filling
  (1,400 entries after 100 calls) and what it holds (texts decoded in other processes). Meanwhile
  the sphinx decode process grew 585 -> 1,075 -> 1,499 MB (1.5 MB a call): each read-back prompt
  ("I heard 4 2 7 1, is that right?") became a question of its own, and for each the grammar engine
  kept a grammar and the agent LM a corpus sentence, a rebuilt LM and a search in every decoder. The
  runtime no longer tells the recognisers a prompt made from the caller's data. After that,
  ``--clear-caches --retained-calls 200``: the event loop kept **103 then 68 bytes a call (0.85 MB
  per 10,000 calls)**, most of it the intent classifier's 512-entry cache still filling; the sphinx
  process 438 -> 439 -> 439 MB over calls 100-500. Without tracing, ``--minutes 30 --concurrent 8
  --call-seconds 8 --warmup-minutes 5 --sample 15``: 1,677 calls, none failed, 1,684 records (3,298
  turns, 1,600 with speech); RSS 842 MB idle, 1,114 MB on average after warm-up: **34 MB per
  concurrent call**, nearly all decoders (the sphinx process added decoders up to minute 8, 351 ->
  438 MB). Slope after warm-up 265 +- 39 MB per 10,000 calls (the tree; that step), over the last 15
  minutes (calls 793-1,584) -6 +- 15 for the tree and 0 for the event loop (199.9 MB throughout).

Usage: ``.venv/bin/python bench/soak.py --minutes 30 --concurrent 500``;
``.venv/bin/python bench/soak.py --agent examples/card_block.yaml --minutes 5 --concurrent 4
--call-seconds 10 --warmup-minutes 1`` for the agent.
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "sipp" / "uac_rtpstream.xml"
READY = "answering calls"
# ``python -c TRACED FRAMES DIR parley-args...``: parley's CLI with tracemalloc on; its signal handlers
# run between bytecodes on the event loop's thread. SIGUSR2 notes the traced memory as it is (live
# objects and the cyclic garbage the server has not collected yet: DIR/NNNN.json); SIGUSR1 also dumps a
# snapshot (NNNN.pre), runs a full collection, noting what it freed and its kinds, and dumps another
# (NNNN.snap: what is kept).
TRACED = """
import functools, gc, json, signal, sys, tracemalloc
frames, out, clear = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "clear"
tracemalloc.start(frames)
dumped = 0
def caches():  # module-level LRU caches (gc.get_objects() misses what parley serve froze)
    found, seen = {}, set()
    for module in list(sys.modules.values()):
        for thing in list(getattr(module, "__dict__", {}).values()):
            if not isinstance(thing, functools._lru_cache_wrapper) or id(thing) in seen:
                continue
            seen.add(id(thing))
            info = thing.cache_info()
            if info.currsize:
                found[f"{thing.__module__}.{thing.__qualname__}"] = [info.currsize, info.maxsize]
                if clear and info.maxsize is not None:  # bounded ones only: an unbounded one may grow
                    thing.cache_clear()
    return found
def note(signum, frame):
    global dumped
    dumped += 1
    name = f"{out}/{dumped:04d}"
    before = tracemalloc.get_traced_memory()[0]
    notes = {"traced_before": before, "traced_after": before, "unreachable": 0, "garbage_kinds": {}}
    if signum == signal.SIGUSR1:
        notes["lru_caches"] = caches()
        tracemalloc.take_snapshot().dump(name + ".pre")
        notes["traced_before"] = tracemalloc.get_traced_memory()[0]
        gc.set_debug(gc.DEBUG_SAVEALL)
        notes["unreachable"] = gc.collect()
        kinds = {}
        for thing in gc.garbage:
            kind = type(thing).__module__ + "." + type(thing).__qualname__
            kinds[kind] = kinds.get(kind, 0) + 1
        gc.garbage.clear()
        gc.set_debug(0)
        gc.collect()
        notes["traced_after"] = tracemalloc.get_traced_memory()[0]
        tracemalloc.take_snapshot().dump(name + ".snap")
        notes["garbage_kinds"] = dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:25])
    with open(name + ".json", "w") as f:
        json.dump(notes, f)
signal.signal(signal.SIGUSR1, note)
signal.signal(signal.SIGUSR2, note)
sys.argv = ["parley", *sys.argv[4:]]
from parley.cli import main
main()
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_mb(pid: int) -> float:
    """RSS of the process and its children, in MB."""
    return sum(process_rss_mb(pid).values())


def process_rss_mb(pid: int) -> dict[str, float]:
    """RSS of the process and of each of its children (e.g. speech decoders), in MB, by pid."""
    process = psutil.Process(pid)
    sizes = {str(pid): process.memory_info().rss / 1e6}
    for child in process.children(recursive=True):
        try:
            sizes[str(child.pid)] = child.memory_info().rss / 1e6
        except psutil.NoSuchProcess:
            continue
    return sizes


def start_server(
    agent: str, port: int, workdir: Path, trace_frames: int = 0, clear_caches: bool = False
) -> subprocess.Popen:
    args = [agent, "--transport", "udp", "--port", str(port)]
    return start_server_cmd(args, workdir, port, trace_frames, clear_caches)


def stop_server(server: subprocess.Popen) -> None:
    """Stop a server as an operator would (SIGTERM: it drains), killed if it is not gone in 30 s."""
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


def write_result(result: dict, out: Path, shown: dict | None = None) -> None:
    """Print ``shown`` (default: ``result``) as JSON and write ``result`` to ``out``."""
    print(json.dumps(result if shown is None else shown, indent=2))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


def start_server_cmd(
    args: list[str], workdir: Path, port: int, trace_frames: int = 0, clear_caches: bool = False
) -> subprocess.Popen:
    """``parley serve ARGS`` as one worker on core 1 without admission control; returns once it answers.

    Its output goes to ``workdir/server.log`` (read there, so a full pipe never blocks it). With
    ``trace_frames``, under tracemalloc, dumping snapshots into ``workdir/snapshots`` on SIGUSR2.
    """
    launcher = ["-m", "parley"]
    if trace_frames:
        (workdir / "snapshots").mkdir(exist_ok=True)
        clear = "clear" if clear_caches else "keep"
        launcher = ["-c", TRACED, str(trace_frames), str(workdir / "snapshots"), clear]
    cmd = [sys.executable, *launcher, "serve", *args, "--host", "127.0.0.1", "--workers", "1"]
    cmd += ["--max-load", "0", "--rtp-ports", "20000-40000"]
    cmd += ["--stats-file", str(workdir / "stats.json"), "--records", str(workdir / "records.jsonl")]
    log = workdir / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["taskset", "-c", "1", *cmd], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + (600 if trace_frames else 120)  # tracing slows the start-up down
    while time.monotonic() < deadline:
        if READY in log.read_text(errors="replace"):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the server did not start: {log.read_text(errors='replace')[-2000:]}")


def ended_calls(stat_csv: Path) -> tuple[int, int]:
    """(successful, failed) calls SIPp has counted so far (its statistics CSV, one row a second)."""
    try:
        rows = list(csv.DictReader(stat_csv.open(), delimiter=";"))
    except OSError:
        return 0, 0
    if not rows:
        return 0, 0
    last = rows[-1]
    try:
        return int(last["SuccessfulCall(C)"]), int(last["FailedCall(C)"])
    except (KeyError, ValueError):
        return 0, 0


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    return fitted_slope(points)[0]


def fitted_slope(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope of y over x and its standard error (0 with fewer than three points).

    The samples' noise is not independent (RSS moves in steps and saw-teeth), so the error is a
    lower bound on the uncertainty; read it beside the samples."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return 0.0, 0.0
    fitted = sum((x - mean_x) * (y - mean_y) for x, y in points) / var
    if n < 3:
        return fitted, 0.0
    residual = sum((y - mean_y - fitted * (x - mean_x)) ** 2 for x, y in points)
    return fitted, (residual / (n - 2) / var) ** 0.5


def agent_records(path: Path) -> dict[str, object]:
    """What the agent's call records say: calls recorded, their outcomes and the turns heard."""
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    outcomes: dict[str, int] = {}
    for record in records:
        outcomes[str(record.get("outcome"))] = outcomes.get(str(record.get("outcome")), 0) + 1
    turns = [turn for record in records for turn in record.get("turns", [])]
    return {
        "records": len(records),
        "outcomes": outcomes,
        "turns": len(turns),
        "turns_with_speech": sum(1 for turn in turns if turn.get("input") == "speech"),
    }


def start_sipp(
    port: int, concurrent: int, call_seconds: float, total: int, stat_csv: Path
) -> subprocess.Popen:
    """SIPp on core 0 placing ``total`` calls of ``call_seconds``, ``concurrent`` at a time, to ``port``."""
    rate = concurrent / call_seconds
    cmd = ["taskset", "-c", "0", "sipp", "-sf", str(SCENARIO), "-i", "127.0.0.1"]
    cmd += ["-p", str(free_port()), "-mp", str(free_port()), "-r", f"{rate:.2f}"]
    cmd += ["-l", str(concurrent), "-m", str(total), "-d", str(int(call_seconds * 1000))]
    cmd += ["-rtp_threadtasks", "100", "-nostdin", "-trace_stat", "-stf", str(stat_csv), "-fd", "1"]
    cmd += ["-max_socket", str(concurrent * 2 + 100), f"127.0.0.1:{port}"]
    return subprocess.Popen(cmd, cwd=SCENARIO.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def snapshot_of(
    server: subprocess.Popen, workdir: Path, number: int, full: bool, timeout: float = 120.0
) -> dict | None:
    """Have the traced server note its traced memory (``full``: dump snapshots around a full
    collection too); what it noted (None if nothing came)."""
    stem = workdir / "snapshots" / f"{number:04d}"
    notes = stem.with_suffix(".json")
    server.send_signal(signal.SIGUSR1 if full else signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            noted = json.loads(notes.read_text())
        except (OSError, ValueError):
            time.sleep(0.2)
            continue
        return {
            "full": full,
            "pre": stem.with_suffix(".pre"),
            "snap": stem.with_suffix(".snap"),
            "traced_mb": round(noted["traced_before"] / 1e6, 2),
            "traced_after_bytes": noted["traced_after"],
            "garbage_mb": round((noted["traced_before"] - noted["traced_after"]) / 1e6, 3),
            "unreachable": noted["unreachable"],
            "garbage_kinds": noted["garbage_kinds"],
            "lru_caches": noted.get("lru_caches", {}),
        }
    return None


def compared(old_path: Path, new_path: Path, calls: int, limit: int = 12) -> list[dict[str, object]]:
    """The allocation tracebacks that grew most from snapshot ``old_path`` to ``new_path`` (``calls``
    ended between them), innermost frame last, with bytes and objects per call."""
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen*>")]
    old = tracemalloc.Snapshot.load(str(old_path)).filter_traces(ignore)
    new = tracemalloc.Snapshot.load(str(new_path)).filter_traces(ignore)
    rows = []
    for stat in new.compare_to(old, "traceback")[:limit]:
        rows.append({
            "kb": round(stat.size_diff / 1024, 1),
            "bytes_per_call": round(stat.size_diff / max(calls, 1)),
            "objects_per_call": round(stat.count_diff / max(calls, 1), 2),
            "traceback": [f"{frame.filename}:{frame.lineno}" for frame in stat.traceback],
        })
    return rows


def traced(server: subprocess.Popen, workdir: Path, dumps: list[dict], calls: int, full: bool) -> None:
    """Note the traced server's memory (``full``: with snapshots around a full collection), appended to
    ``dumps`` with ``calls`` (calls ended so far)."""
    dumped = snapshot_of(server, workdir, len(dumps) + 1, full)
    if dumped is None:
        return
    dumped["calls_ended"] = calls
    print(json.dumps({k: v for k, v in dumped.items() if k not in ("pre", "snap")}), flush=True)
    dumps.append(dumped)


def tracemalloc_report(dumps: list[dict]) -> dict[str, object]:
    """What the traced notes show. The first is a full collection, the last another once the load
    ended; between them the server collected on its own, so the traced memory's slope over the
    calls ended is the heap's growth with the garbage it had not collected yet. Then what the last
    full collection freed (its kinds, where it was allocated) and what grew from first to last."""
    first, last = dumps[0], dumps[-1]
    calls = last["calls_ended"] - first["calls_ended"]
    during = [(d["calls_ended"], d["traced_mb"]) for d in dumps[1:-1]]
    return {
        "tracemalloc_calls": [first["calls_ended"], last["calls_ended"]],
        "traced_mb": [[d["calls_ended"], d["traced_mb"]] for d in dumps],
        "traced_slope_mb_per_10k_calls": round(slope(during) * 10_000, 1) if len(during) >= 2 else None,
        "traced_after_full_mb": [round(d["traced_mb"] - d["garbage_mb"], 2) for d in (first, last)],
        "garbage_mb_at_end": last["garbage_mb"],
        "garbage_kinds": last["garbage_kinds"],
        "top_growth": compared(first["snap"], last["snap"], calls),
        "top_garbage": compared(last["snap"], last["pre"], calls),
    }


def soak(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    port = free_port()
    server = start_server(args.agent, port, workdir, args.tracemalloc)
    dumps: list[dict] = []  # the traced server's snapshots (--tracemalloc)
    stat_csv = workdir / "sipp.csv"
    rate = args.concurrent / args.call_seconds
    total = int(rate * args.minutes * 60)
    try:
        time.sleep(2.0)
        idle = tree_rss_mb(server.pid)
        started = time.monotonic()
        sipp = start_sipp(port, args.concurrent, args.call_seconds, total, stat_csv)
        samples: list[dict[str, float]] = []
        while sipp.poll() is None:
            time.sleep(args.sample)
            ok, failed = ended_calls(stat_csv)
            sample = {
                "t_s": round(time.monotonic() - started, 1),
                "calls_ended": ok + failed,
                "failed": failed,
                "rss_mb": round(tree_rss_mb(server.pid), 2),
                "rss_by_pid": {pid: round(mb, 1) for pid, mb in process_rss_mb(server.pid).items()},
            }
            samples.append(sample)
            print(json.dumps(sample), flush=True)
            warm_now = args.warmup_minutes * 60 <= sample["t_s"] <= args.minutes * 60
            if args.tracemalloc and warm_now:
                traced(server, workdir, dumps, sample["calls_ended"], full=not dumps)
            if time.monotonic() - started > args.minutes * 60 + 4 * args.call_seconds + 60:
                sipp.kill()
        ok, failed = ended_calls(stat_csv)
        time.sleep(args.settle)
        settled = tree_rss_mb(server.pid)
        if args.tracemalloc and dumps:
            traced(server, workdir, dumps, ok + failed, full=True)
    finally:
        stop_server(server)
    warm = [s for s in samples if s["t_s"] >= args.warmup_minutes * 60 and s["t_s"] <= args.minutes * 60]
    result: dict[str, object] = {
        "agent": args.agent,
        "minutes": args.minutes,
        "concurrent": args.concurrent,
        "call_seconds": args.call_seconds,
        "calls_ok": ok,
        "calls_failed": failed,
        "rss_idle_mb": round(idle, 2),
        "rss_settled_mb": round(settled, 2),
        "samples": samples,
    }
    if args.agent != "echo":
        result |= agent_records(workdir / "records.jsonl")
    if len(dumps) >= 2:
        result |= tracemalloc_report(dumps)
    if len(warm) >= 2:
        per_call, error = fitted_slope([(s["calls_ended"], s["rss_mb"]) for s in warm])
        mean = sum(s["rss_mb"] for s in warm) / len(warm)
        result["slope_mb_per_10k_calls"] = round(per_call * 10_000, 3)
        result["slope_stderr_mb_per_10k_calls"] = round(error * 10_000, 3)
        own = [(s["calls_ended"], s["rss_by_pid"][str(server.pid)]) for s in warm]
        own_slope, own_error = fitted_slope(own)
        result["event_loop_slope_mb_per_10k_calls"] = round(own_slope * 10_000, 3)  # decoders aside
        result["event_loop_slope_stderr_mb_per_10k_calls"] = round(own_error * 10_000, 3)
        result["event_loop_rss_mb"] = [own[0][1], own[-1][1]]
        result["rss_mean_after_warmup_mb"] = round(mean, 2)
        result["mb_per_concurrent_call"] = round((mean - idle) / args.concurrent, 4)
        result["calls_after_warmup"] = warm[-1]["calls_ended"] - warm[0]["calls_ended"]
    return result


def retained(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    """The heap each ended call leaves behind, exactly: idle to idle, after full collections.

    The traced server takes a warm-up batch of ``--retained-warmup`` calls (caches, pools and
    bounded histories fill), then ``--retained-batches`` batches of ``--retained-calls``. After each
    batch, once its sessions' linger and transaction timers ran out (``--settle``), the server runs
    a full collection and notes its traced heap: no call is up, so the difference from one idle point
    to the next over the calls in between is the memory each call kept, to the byte. The report adds
    the allocation tracebacks that grew from the first idle point to the last, per call."""
    port = free_port()
    server = start_server(args.agent, port, workdir, args.tracemalloc, args.clear_caches)
    dumps: list[dict] = []
    batches: list[dict[str, object]] = []
    sizes = [args.retained_warmup] + [args.retained_calls] * args.retained_batches
    ended = 0
    try:
        for number, calls in enumerate(sizes):
            stat_csv = workdir / f"sipp-{number}.csv"
            started = time.monotonic()
            sipp = start_sipp(port, args.concurrent, args.call_seconds, calls, stat_csv)
            deadline = started + 3 * calls * args.call_seconds / args.concurrent + 120
            while sipp.poll() is None and time.monotonic() < deadline:
                time.sleep(1.0)
            if sipp.poll() is None:
                sipp.kill()
                sipp.wait()
            ok, failed = ended_calls(stat_csv)
            ended += ok + failed
            time.sleep(args.settle)
            traced(server, workdir, dumps, ended, full=True)
            batches.append({
                "lru_caches": dumps[-1]["lru_caches"] if dumps else {},
                "calls_ok": ok,
                "calls_failed": failed,
                "seconds": round(time.monotonic() - started, 1),
                "rss_by_pid": {pid: round(mb, 1) for pid, mb in process_rss_mb(server.pid).items()},
            })
    finally:
        stop_server(server)
    for before, after, batch in zip(dumps, dumps[1:], batches[1:], strict=False):
        calls = after["calls_ended"] - before["calls_ended"]
        kept = after["traced_after_bytes"] - before["traced_after_bytes"]
        batch["retained_bytes"] = kept
        batch["retained_bytes_per_call"] = round(kept / max(calls, 1), 1)
        batch["retained_mb_per_10k_calls"] = round(kept / max(calls, 1) * 10_000 / 1e6, 3)
    result: dict[str, object] = {
        "agent": args.agent,
        "concurrent": args.concurrent,
        "call_seconds": args.call_seconds,
        "tracemalloc_frames": args.tracemalloc,
        "idle_traced_after_full_bytes": [[d["calls_ended"], d["traced_after_bytes"]] for d in dumps],
        "batches": batches,
    }
    if len(dumps) >= 2:
        calls = dumps[-1]["calls_ended"] - dumps[0]["calls_ended"]
        kept = dumps[-1]["traced_after_bytes"] - dumps[0]["traced_after_bytes"]
        result["measured_calls"] = calls
        result["retained_bytes_per_call"] = round(kept / max(calls, 1), 1)
        result["retained_mb_per_10k_calls"] = round(kept / max(calls, 1) * 10_000 / 1e6, 3)
        result["top_growth"] = compared(dumps[0]["snap"], dumps[-1]["snap"], calls)
    if args.agent != "echo":
        result |= agent_records(workdir / "records.jsonl")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agent", default="echo", help="echo, or an agent YAML file")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--concurrent", type=int, default=500)
    parser.add_argument("--call-seconds", type=float, default=20.0)
    parser.add_argument("--warmup-minutes", type=float, default=2.0)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument(
        "--settle", type=float, default=40.0, help="seconds after the load before the last RSS"
    )
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="FRAMES",
        help="trace the server's allocations (FRAMES deep) and report the tracebacks that grew most",
    )
    parser.add_argument(
        "--retained-calls",
        type=int,
        default=0,
        metavar="CALLS",
        help="instead of the timed soak: the heap kept per call, idle to idle over batches of CALLS "
        "(needs --tracemalloc)",
    )
    parser.add_argument("--retained-batches", type=int, default=2)
    parser.add_argument(
        "--clear-caches",
        action="store_true",
        help="empty every bounded functools LRU cache before each full dump (bounded by maxsize: "
        "what is left is what grows without bound); each dump notes the caches' sizes either way",
    )
    parser.add_argument("--retained-warmup", type=int, default=50, help="calls before the first idle point")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "soak.json")
    args = parser.parse_args()
    if args.retained_calls and not args.tracemalloc:
        parser.error("--retained-calls needs --tracemalloc FRAMES")
    with tempfile.TemporaryDirectory() as tmp:
        result = (retained if args.retained_calls else soak)(args, Path(tmp))
    write_result(result, args.out, shown={k: v for k, v in result.items() if k != "samples"})


if __name__ == "__main__":
    main()
