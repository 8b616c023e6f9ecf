"""What a user sees on the terminal: `parley serve` on a busy port, `parley chat` without log lines,
and pocketsphinx's C log lines routed through Python logging instead of stderr."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from integration.harness import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(("kind", "transport"), [(socket.SOCK_DGRAM, "udp"), (socket.SOCK_STREAM, "both")])
def test_serve_on_a_busy_port_prints_one_line_and_exits_2(kind: int, transport: str) -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", port))
        if kind == socket.SOCK_STREAM:
            taken.listen()
        for agent in ("echo", str(EXAMPLES / "card_block.yaml")):
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "parley",
                    "serve",
                    agent,
                    "--port",
                    str(port),
                    "--transport",
                    transport,
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 2, done
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], done.stderr
            assert "in use" in lines[0] and "Traceback" not in done.stderr


def test_chat_shows_the_dialogue_without_log_lines() -> None:
    """A failing webhook used to print a time-stamped WARNING line in the middle of the dialogue."""
    port = free_port()  # nothing listens there: the webhook fails
    answers = "/dtmf 42712345\nthe third of may nineteen eighty five\nyes\nyes\n"
    done = subprocess.run(
        [sys.executable, "-m", "parley", "chat", str(EXAMPLES / "card_block.yaml")],
        input=answers,
        capture_output=True,
        text=True,
        timeout=60,
        env={**_env(), "CARDS_BACKEND": f"http://127.0.0.1:{port}"},
    )
    assert done.returncode == 0, done
    out = done.stdout + done.stderr
    assert "agent> I'm sorry, I couldn't block your card automatically." in out, out
    assert "WARNING" not in out and "ERROR" not in out, out
    verbose = subprocess.run(
        [sys.executable, "-m", "parley", "-v", "chat", str(EXAMPLES / "card_block.yaml")],
        input=answers,
        capture_output=True,
        text=True,
        timeout=60,
        env={**_env(), "CARDS_BACKEND": f"http://127.0.0.1:{port}"},
    )
    assert "WARNING parley.agent.runtime" in verbose.stderr  # -v brings the logs back


def _env() -> dict[str, str]:
    return dict(os.environ)


def test_pocketsphinx_log_lines_go_through_python_logging(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    from parley.speech.engines.sphinx import SphinxGrammarEngine
    from parley.speech.types import Question, SlotType

    caplog.set_level(logging.DEBUG, logger="parley.speech.pocketsphinx")
    session = SphinxGrammarEngine().start(Question(slot_type=SlotType.DIGITS, prompt="", digit_count=4))
    noise = np.random.default_rng(0).normal(0, 3000, 160 * 100).astype(np.int16)
    for frame in noise.reshape(100, 160):
        session.feed(frame)
    session.finish()  # noise matches no digit string: "Final result does not match the grammar"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any("fsg_search" in r.getMessage() for r in caplog.records):
        time.sleep(0.05)
    lines = [r for r in caplog.records if "fsg_search" in r.getMessage()]
    assert lines and all(r.levelno == logging.DEBUG for r in lines), caplog.records
    assert lines[0].name == "parley.speech.pocketsphinx"
    assert "fsg_search" not in capfd.readouterr().err
