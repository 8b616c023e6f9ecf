"""Kamailio's own cost in front of Parley: CPU per 1,000 calls and the call rate it passes without a failure.

Kamailio runs the configuration ``parley cluster kamailio-config`` writes (call-load dispatching,
OPTIONS probes every second, Record-Route) in front of one ``parley serve echo --workers 2`` node on
127.0.0.2. SIPp places signalling-only calls through it (INVITE, 200, ACK, 2 s, BYE, with
Record-Route: ``uac_proxy_signalling.xml`` of the integration tests) at each rate for ``--seconds``.
Measured per rate: calls completed and failed (SIPp), Kamailio's CPU (all its processes) over the
run, hence CPU seconds per 1,000 calls, and the node's CPU for comparison.

Usage: ``.venv/bin/python bench/kamailio_cost.py --rates 50,100,200 --seconds 20``.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from calls_per_core import free_port, sipp_counts
from cluster_capacity import free_block, tree_cpu
from parley.cluster.kamailio import Node, dispatcher_list, kamailio_cfg, module_path

HERE = Path(__file__).resolve().parent
SCENARIO = HERE.parent / "tests" / "integration" / "scenarios" / "uac_proxy_signalling.xml"
NODE_HOST = "127.0.0.2"
HOLD_MS = 2000


def start_node(port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "parley", "serve", "echo", "--workers", "2", "--host", NODE_HOST]
    cmd += ["--port", str(port), "--transport", "udp", "--max-load", "0", "--rtp-ports", "20000-40000"]
    cmd += ["--rate-per-ip", "0"]  # every request comes from Kamailio's address: see docs/cluster.md
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "parley: node ready" in line:
            return proc
    raise RuntimeError("the node did not start")


def start_kamailio(workdir: Path, listen: str, port: int) -> subprocess.Popen:
    (workdir / "dispatcher.list").write_text(dispatcher_list([Node(NODE_HOST, port, 2)]))
    cfg = kamailio_cfg(listen=listen, dispatcher_file=str(workdir / "dispatcher.list"), modules=module_path())
    (workdir / "kamailio.cfg").write_text(cfg)
    cmd = ["kamailio", "-DD", "-E", "-f", str(workdir / "kamailio.cfg"), "-Y", str(workdir), "-m", "128"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
    time.sleep(2)  # a probe round: both workers seen
    return proc


def run_rate(rate: int, seconds: float, proxy: str, kamailio: psutil.Process, node: psutil.Process,
             workdir: Path) -> dict[str, object]:  # fmt: skip
    calls = int(rate * seconds)
    stat = workdir / f"sipp-{rate}.csv"
    cmd = ["sipp", proxy, "-sf", str(SCENARIO), "-s", "echo", "-i", "127.0.0.1", "-p", str(free_port())]
    cmd += ["-mp", str(free_port()), "-r", str(rate), "-m", str(calls), "-l", str(rate * 4)]
    cmd += ["-d", str(HOLD_MS), "-nostdin", "-trace_stat", "-stf", str(stat), "-fd", "1"]
    cmd += ["-timeout", f"{int(seconds + 60)}s", "-max_socket", "2000"]
    kam0, node0, t0 = tree_cpu(kamailio), tree_cpu(node), time.monotonic()
    subprocess.run(cmd, cwd=SCENARIO.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=seconds + 120, check=False)  # fmt: skip
    kam_cpu, node_cpu, wall = tree_cpu(kamailio) - kam0, tree_cpu(node) - node0, time.monotonic() - t0
    counts = sipp_counts(stat)
    done = max(counts["successful"], 1)
    return {
        "rate_cps": rate,
        "calls": calls,
        **counts,
        "kamailio_cpu_s": round(kam_cpu, 2),
        "kamailio_cpu_s_per_1000_calls": round(1000 * kam_cpu / done, 2),
        "kamailio_cores": round(kam_cpu / wall, 3),
        "node_cpu_s_per_1000_calls": round(1000 * node_cpu / done, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="50,100,200", help="calls per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each rate is offered")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kamailio-cost-"))
    port, proxy_port = free_block(2), free_port()
    node = start_node(port)
    kamailio = start_kamailio(workdir, f"127.0.0.1:{proxy_port}", port)
    results = []
    try:
        for rate in (int(r) for r in args.rates.split(",")):
            result = run_rate(rate, args.seconds, f"127.0.0.1:{proxy_port}", psutil.Process(kamailio.pid),
                              psutil.Process(node.pid), workdir)  # fmt: skip
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        kamailio.send_signal(signal.SIGTERM)
        node.send_signal(signal.SIGTERM)
        kamailio.wait(timeout=10)
        node.wait(timeout=30)
    summary = {"command": " ".join([sys.executable, *sys.argv]), "steps": results}
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
