"""Every example of docs/webrtc.md, run as written (ports made free, in a scratch directory): shell
blocks line by line with `parley` from this environment (a command marked `# runs until stopped` is
started and checked ready, and stopped at the end), a `text` block is the output of the command just
before it, and a config block whose first line is `# file: NAME` is written to NAME (nginx runs it)."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.integration.harness import free_port
from tests.studio.test_docs import wait_for_line

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "webrtc.md"
BIN = Path(sys.executable).parent
PORTS = {
    "8780": 1,
    "8781": 1,
    "8443": 1,
    "5062": 1,
    "5064": 1,
    "5066": 2,
    "8782": 3,
}  # consecutive ports each takes


def blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"```(\w+)\n(.*?)```", text, re.S)


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
            time.sleep(0.1)


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed (Debian package nginx-light)")
@pytest.mark.timeout(120)
def test_every_example_of_the_webrtc_doc_runs(tmp_path) -> None:
    ports = {port: str(free_port(block=block)) for port, block in PORTS.items()}

    def localised(text: str) -> str:
        return re.sub("|".join(PORTS), lambda match: ports[match.group(0)], text)

    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    background: list[subprocess.Popen] = []
    ran = 0
    output = None
    try:
        for kind, block in blocks(DOC.read_text()):
            if kind == "text":
                assert (output or "").strip() == block.strip(), f"expected {block!r}, got {output!r}"
                ran += 1
                continue
            if kind != "sh":
                first, _, body = block.partition("\n")
                assert first.startswith("# file: "), block
                (tmp_path / first.removeprefix("# file: ")).write_text(localised(body))
                ran += 1
                continue
            for command in (line.strip() for line in block.splitlines() if line.strip()):
                command = localised(command)
                if "# runs until stopped" in command:
                    process = subprocess.Popen(
                        command, shell=True, cwd=tmp_path, env=env, start_new_session=True,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                    )  # fmt: skip
                    background.append(process)
                    if command.startswith("parley serve"):
                        wait_for_line(process, "answering calls")
                    else:
                        wait_for_port(int(ports["8443"]), process)
                else:
                    done = subprocess.run(
                        command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True
                    )
                    assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
                    output = done.stdout
                ran += 1
    finally:
        for process in background:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
    assert ran == 16  # every command, output and file of the page
