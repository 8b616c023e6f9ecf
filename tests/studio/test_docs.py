"""Every example of docs/studio.md, run as written (ports made free, in a scratch directory with the
examples/ folder): shell blocks line by line with `parley` from this environment, Python blocks as
scripts; a command marked `# runs until stopped` is started, checked ready, and stopped at the end."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.integration.harness import free_port, rtp_range

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "studio.md"
BIN = Path(sys.executable).parent


def blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"```(sh|python)\n(.*?)```", text, re.S)


def commands(block: str) -> list[str]:
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


@pytest.mark.timeout(240)
def test_every_example_of_the_studio_doc_runs(tmp_path) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    studio_port, sip_port = free_port(), free_port()
    first, last = rtp_range(10)
    env = {k: v for k, v in os.environ.items() if k not in ("PARLEY_KEYS", "PARLEY_STUDIO_TOKEN")}
    env["PATH"] = f"{BIN}:{env['PATH']}"
    env["STUDIO"] = f"http://127.0.0.1:{studio_port}"
    background: list[subprocess.Popen] = []
    ran = 0
    try:
        for kind, block in blocks(DOC.read_text()):
            if kind == "python":
                done = subprocess.run(
                    [sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True
                )
                assert done.returncode == 0, f"{block}\n{done.stdout}{done.stderr}"
                assert "live: 2" in done.stdout
                ran += 1
                continue
            for command in commands(block):
                command = command.replace("--port 8700", f"--port {studio_port}")
                command = command.replace("--port 5062", f"--port {sip_port} --rtp-ports {first}-{last}")
                if "# runs until stopped" in command:
                    process = subprocess.Popen(
                        command,
                        shell=True,
                        cwd=tmp_path,
                        env=env,
                        start_new_session=True,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                    background.append(process)
                    if "parley studio" in command:
                        wait_for_http(f"{env['STUDIO']}/login", process)
                        env["TOKEN"] = make_token(env["STUDIO"])
                    else:
                        wait_for_line(process, "answering calls")
                else:
                    done = subprocess.run(
                        command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True
                    )
                    assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
                ran += 1
    finally:
        for process in background:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
    assert ran == 10  # every command and script of the page


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
            time.sleep(0.2)


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    seen = []
    for line in process.stdout:
        seen.append(line)
        if text in line:
            return
        assert time.monotonic() < deadline, "".join(seen)
    pytest.fail("".join(seen))


def make_token(studio: str) -> str:
    """An admin's API token, as the agents page makes one: log in, then POST /api/tokens."""
    with httpx.Client(base_url=studio) as browser:
        page = browser.post(
            "/login", data={"name": "ada", "password": "correct horse battery"}, follow_redirects=True
        )
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        made = browser.post(
            "/api/tokens", json={"user": "ada", "label": "docs"}, headers={"X-CSRF-Token": csrf}
        )
        made.raise_for_status()
        return made.json()["token"]
