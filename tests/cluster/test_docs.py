"""Every command in docs/cluster.md runs as written (ports swapped for free ones)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from integration.harness import KAMAILIO, ROOT, free_port, needs_kamailio
from parley.cluster.node import NODE_READY_LINE
from parley.cluster.probe import wait_until_ready

DOC = ROOT / "docs" / "cluster.md"
pytestmark = [needs_kamailio, pytest.mark.kamailio, pytest.mark.timeout(240)]


def blocks() -> list[list[str]]:
    """The doc's ``sh`` blocks, as lists of command lines."""
    return [block.strip().splitlines() for block in re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)]


def argv(line: str) -> list[str]:
    words = shlex.split(line.rstrip(" &"))
    program = {"parley": [sys.executable, "-m", "parley"], "kamailio": [str(KAMAILIO)]}[words[0]]
    return [*program, *words[1:]]


def test_the_doc_has_the_examples_this_test_runs():
    assert [len(block) for block in blocks()] == [1, 6]


def test_the_production_kamailio_config_example_writes_a_config_kamailio_accepts(tmp_path: Path):
    (line,) = blocks()[0]
    made = subprocess.run(argv(line), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert "16 workers on 2 nodes" in made.stdout
    check = subprocess.run([str(KAMAILIO), "-c", "-f", "kamailio/kamailio.cfg"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_one_machine_cluster_runs_as_written(tmp_path: Path):
    ports = {"5060": str(free_port(block=2)), "9460": str(free_port()), "5070": str(free_port())}
    background: list[subprocess.Popen] = []
    try:
        for line in blocks()[1]:
            line = re.sub(r"\b(5060|9460|5070)\b", lambda m: ports[m[1]], line)
            if not line.endswith("&"):
                done = subprocess.run(argv(line), cwd=tmp_path, capture_output=True, text=True, timeout=120)
                assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
                continue
            proc = subprocess.Popen(argv(line), cwd=tmp_path, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
            background.append(proc)
            if line.startswith("parley serve"):
                wait_for_line(proc, NODE_READY_LINE, line)
            else:  # Kamailio: up when it answers its own OPTIONS
                assert asyncio.run(wait_until_ready("127.0.0.1", int(ports["5070"]), 15)), line
                time.sleep(1.5)  # one probe round: the workers are seen answering
    finally:
        for proc in reversed(background):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in background:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def wait_for_line(proc: subprocess.Popen, text: str, what: str, timeout: float = 90) -> None:
    seen = threading.Event()
    lines: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if text in line:
                seen.set()

    threading.Thread(target=read, daemon=True).start()
    assert seen.wait(timeout), f"{what} never printed {text!r}:\n{''.join(lines[-30:])}"


def test_the_bench_commands_in_scaling_md_name_options_the_benches_have():
    text = (ROOT / "docs" / "scaling.md").read_text()
    commands = re.findall(r"(?m)^\.venv/bin/python (bench/\S+\.py)(.*)$", text)
    benches = {"bench/cluster_capacity.py", "bench/kamailio_cost.py", "bench/loadtest_capacity.py"}
    assert {script for script, _ in commands} == benches
    for script, options in commands:
        shown = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                               timeout=60)  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        for option in re.findall(r"--[a-z-]+", options):
            assert option in shown.stdout, f"{script} has no {option}"
