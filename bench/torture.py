"""Torture: the RFC 4475 messages and the SIP fuzz corpus sent to a running ``parley serve echo``.

The parser's tests check each RFC 4475 message's meaning (``tests/sip/test_rfc4475.py``); this
checks the server around it: every message (``../shared/rfc4475/*.dat``, read in place, never
copied into the project, and ``bench/fuzz_corpus/sip/*``) is sent on a fresh TCP connection to
``parley serve echo`` (one worker, pinned to core 1), then ``--rounds`` times over UDP (the same
transaction again: a response goes where the message's Via says, so most UDP answers are not seen).
The calls some of them start run until their media timeout. Then the server is stopped and its
log read. Reported: the answers by status code (per message with ``--verbose``), what got no
answer, and the tracebacks and error lines in the server's log (the goal: none).

Usage: ``.venv/bin/python bench/torture.py``.
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

from soak import free_port, start_server_cmd, stop_server, write_result

HERE = Path(__file__).resolve().parent
RFC4475 = HERE.parents[1] / "shared" / "rfc4475"
FUZZ_SIP = HERE / "fuzz_corpus" / "sip"
STATUS = re.compile(rb"^SIP/2\.0 (\d{3})", re.MULTILINE)


def messages() -> dict[str, bytes]:
    """Every message to send, by name."""
    found = {f"rfc4475/{path.stem}": path.read_bytes() for path in sorted(RFC4475.glob("*.dat"))}
    found |= {f"fuzz/{path.name}": path.read_bytes() for path in sorted(FUZZ_SIP.iterdir()) if path.is_file()}
    return found


def answers(sock: socket.socket, wait: float) -> list[str]:
    """Status codes of every response read from ``sock`` within ``wait`` seconds of quiet."""
    codes: list[str] = []
    sock.settimeout(wait)
    while True:
        try:
            data = sock.recv(65535)
        except (TimeoutError, OSError):
            return codes
        if not data:
            return codes
        codes += [code.decode() for code in STATUS.findall(data)]


def over_udp(port: int, data: bytes) -> list[str]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.sendto(data, ("127.0.0.1", port))
        return answers(sock, 0.3)


def over_tcp(port: int, data: bytes) -> list[str]:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(data)
        return answers(sock, 1.0)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    port = free_port()
    options = ["echo", "--transport", "both", "--port", str(port), "--media-timeout", "3"]
    server = start_server_cmd(options, workdir, port)
    by_message: dict[str, dict[str, list[str]]] = {}
    try:
        for name, data in messages().items():
            tcp = over_tcp(port, data)  # first: the UDP copies are then retransmissions of its transaction
            udp = [code for _ in range(args.rounds) for code in over_udp(port, data)]
            by_message[name] = {"tcp": tcp, "udp": udp}
        time.sleep(args.linger)  # calls some messages started reach their media timeout
        alive = server.poll() is None
    finally:
        stop_server(server)
    log = (workdir / "server.log").read_text(errors="replace")
    counts: dict[str, int] = {}
    for replies in by_message.values():
        for code in replies["udp"] + replies["tcp"]:
            counts[code] = counts.get(code, 0) + 1
    result: dict[str, object] = {
        "messages": len(by_message),
        "rfc4475_found": RFC4475.is_dir(),
        "udp_rounds": args.rounds,
        "answers_by_status": dict(sorted(counts.items())),
        "unanswered_over_tcp": sorted(name for name, replies in by_message.items() if not replies["tcp"]),
        "server_alive_after": alive,
        "server_log_tracebacks": log.count("Traceback"),
        "server_log_errors": sum(1 for line in log.splitlines() if " ERROR " in line or "CRITICAL" in line),
        "server_log_lines": log.count("\n"),
    }
    if args.verbose:
        result["by_message"] = by_message
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="times each message is sent over UDP")
    parser.add_argument("--linger", type=float, default=5.0, help="seconds before the server is stopped")
    parser.add_argument("--verbose", action="store_true", help="the answers to each message")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "torture.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args, Path(tmp))
    write_result(result, args.out)
    clean = result["server_log_tracebacks"] == 0 and result["server_alive_after"]
    sys.exit(0 if clean else 1)


if __name__ == "__main__":
    main()
