"""Helpers for integration tests against real peers (SIPp, Kamailio) over loopback.

* :func:`parley_server` starts ``parley serve echo`` as a subprocess and stops it with SIGTERM,
  asserting a clean exit and exposing the stats JSON it writes.
* :func:`run_sipp` runs one SIPp scenario to completion and parses its statistics CSV.
* :class:`Sniffer` captures loopback UDP/TCP with an ``AF_PACKET`` socket (root only) so tests can
  prove RTP really flows, and inspect the SIP messages on the wire.
* :func:`small_disk` mounts a tiny tmpfs (root only) and :func:`fill_disk` fills it: a real full disk.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import itertools
import json
import os
import random
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
ROOT = HERE.parents[1]
SIPP = shutil.which("sipp")
KAMAILIO = shutil.which("kamailio") or next(
    (p for p in ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio") if os.access(p, os.X_OK)), None
)
READY_LINE = "parley: answering calls on"

needs_sipp = pytest.mark.skipif(SIPP is None, reason="sipp not installed (Debian package sip-tester)")
needs_kamailio = pytest.mark.skipif(
    KAMAILIO is None, reason="kamailio not installed (Debian package kamailio)"
)


# -- ports -----------------------------------------------------------------------------------
_used_ports: set[int] = set()
_port_lock = threading.Lock()


def _bindable(port: int, kinds: tuple[int, ...] = (socket.SOCK_DGRAM, socket.SOCK_STREAM)) -> bool:
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                return False
    return True


def shared_ports() -> tuple[int, int] | None:
    """``PARLEY_TEST_PORTS=LO-HI``: every port the tests and benches pick (signalling from the lower
    half, RTP from the upper) comes from this range, for a machine whose port ranges are shared out;
    None when unset. A malformed value is an error, not ignored."""
    value = os.environ.get("PARLEY_TEST_PORTS", "").strip()
    if not value:
        return None
    try:
        low, high = (int(part) for part in value.split("-"))
    except ValueError:
        raise ValueError(f"PARLEY_TEST_PORTS={value!r}: expected LO-HI, e.g. 17000-18999") from None
    if not 1024 <= low < high <= 65535 or high - low < 200:
        raise ValueError(f"PARLEY_TEST_PORTS={value!r}: needs 1024 <= LO < HI <= 65535, 200 ports or more")
    return low, high


def _port_bases() -> range:
    shared = shared_ports()
    if shared is None:
        return range(41000, 59990, 2)
    low, high = shared
    return range(low + low % 2, (low + high) // 2 - 10, 2)


def free_port(block: int = 1) -> int:
    """A port (the first of ``block`` consecutive ones, even) free for UDP and TCP on loopback.

    Taken from 41000-59999; RTP ranges come from :func:`rtp_range` (61000-64999), away from
    Parley's default 20000-40000 so a benchmark running beside the suite does not collide, and
    so the sniffer can ignore every port below 41000 (see :data:`_BPF_PORTS_FROM`). With
    ``PARLEY_TEST_PORTS`` set, from the lower half of that range instead (:func:`shared_ports`).
    """
    bases = _port_bases()
    with _port_lock:
        for _ in range(2000):
            base = random.choice(bases)
            ports = range(base, base + block)
            if any(p in _used_ports for p in ports):
                continue
            if all(_bindable(p) for p in ports):
                _used_ports.update(ports)
                return base
    raise RuntimeError("no free port found")


_rtp_blocks = itertools.count(random.randrange(0, 100))


def rtp_range(size: int = 40) -> tuple[int, int]:
    """A private even RTP port range for one Parley instance (ports 61000-64999, or the upper half of
    ``PARLEY_TEST_PORTS``)."""
    shared = shared_ports()
    first_port, span = 61000, 4000
    if shared is not None:
        first_port = sum(shared) // 2 & ~1
        span = shared[1] - first_port
    if size > span:
        raise ValueError(f"an RTP range of {size} ports does not fit in {span}")
    for _ in range(200):
        n = next(_rtp_blocks) % (span // size)
        first = first_port + n * size
        if all(_bindable(p, (socket.SOCK_DGRAM,)) for p in range(first, first + 4)):
            return first, first + size
    raise RuntimeError("no free RTP port range")


# -- the Parley server subprocess ------------------------------------------------------------
@dataclass
class ParleyServer:
    port: int
    transport: str
    rtp_ports: tuple[int, int]
    stats_file: Path
    proc: subprocess.Popen
    stderr_lines: list[str] = field(default_factory=list)
    returncode: int | None = None
    _stats: dict | None = None

    @property
    def uri(self) -> str:
        return f"sip:echo@{HOST}:{self.port}"

    def log(self) -> str:
        return "".join(self.stderr_lines[-60:])

    def stop(self, timeout: float = 8.0) -> dict:
        """SIGTERM, wait for a clean exit (status 0) and return the stats JSON written at exit."""
        if self.returncode is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.returncode = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                pytest.fail(f"parley did not exit within {timeout} s of SIGTERM\n{self.log()}")
        assert self.returncode == 0, f"parley exited with {self.returncode} after SIGTERM\n{self.log()}"
        return self.stats

    @property
    def stats(self) -> dict:
        if self._stats is None:
            assert self.stats_file.exists(), f"parley wrote no stats file\n{self.log()}"
            self._stats = json.loads(self.stats_file.read_text())
        return self._stats

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_server(
    tmp_path: Path,
    *,
    transport: str = "udp",
    max_calls: int | None = None,
    media_timeout: float | None = None,
    extra: list[str] | None = None,
    startup_timeout: float = 15.0,
) -> ParleyServer:
    port = free_port()
    rtp = rtp_range()
    stats_file = tmp_path / f"parley-{port}-stats.json"
    cmd = [sys.executable, "-m", "parley", "serve", "echo", "--workers", "1"]  # one process: this port only
    cmd += ["--host", HOST, "--port", str(port)]
    cmd += ["--transport", transport, "--rtp-ports", f"{rtp[0]}-{rtp[1]}", "--stats-file", str(stats_file)]
    if max_calls is not None:
        cmd += ["--max-calls", str(max_calls)]
    if media_timeout is not None:
        cmd += ["--media-timeout", str(media_timeout)]
    cmd += extra or []
    lines: list[str] = []
    try:
        proc = spawn_until_ready(cmd, lines, cwd=ROOT, startup_timeout=startup_timeout)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    return ParleyServer(port, transport, rtp, stats_file, proc, stderr_lines=lines)


def spawn_until_ready(
    cmd: list[str],
    lines: list[str],
    *,
    cwd: Path | None,
    env: dict[str, str] | None = None,
    startup_timeout: float = 15.0,
    ready_line: str = READY_LINE,
) -> subprocess.Popen:
    """Start ``cmd`` (a ``parley serve``), collecting its stderr into ``lines``; return once it is ready
    (has printed ``ready_line``).

    Raises RuntimeError, after killing it, when it exits or is not ready within ``startup_timeout``.
    """
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env,
        start_new_session=True,
    )  # fmt: skip
    ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if ready_line in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + startup_timeout
    while not ready.wait(0.05):
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=5)
            time.sleep(0.1)
            tail = "".join(lines[-60:])
            raise RuntimeError(f"parley serve did not start (exit {proc.returncode}): {cmd}\n{tail}")
    return proc


# -- Kamailio -------------------------------------------------------------------------------
class Kamailio:
    """A Kamailio proxy run in the foreground (``-DD -E``) in its own process group, logging to a file."""

    def __init__(self, port: int, proc: subprocess.Popen, log: Path) -> None:
        self.port = port
        self.proc = proc
        self.log = log

    @classmethod
    def start(cls, port: int, cfg_file: Path, workdir: Path, prefix: list[str] = ()) -> Kamailio:
        """``prefix`` runs the command (e.g. ``ip netns exec NAME``, which execs Kamailio in place)."""
        assert KAMAILIO is not None
        runtime = workdir / "kamailio-run"
        runtime.mkdir(exist_ok=True)
        log = workdir / "kamailio.log"
        cmd = [*prefix, KAMAILIO, "-DD", "-E", "-f", str(cfg_file), "-Y", str(runtime), "-w", str(workdir)]
        cmd += ["-m", "64"]
        with log.open("w") as log_file:
            proc = subprocess.Popen(
                cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True
            )
        return cls(port, proc, log)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        # Kamailio forks workers into the process group we created for it: make sure none is left.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


# -- SIPp -----------------------------------------------------------------------------------
@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    errors: str
    stdout: str
    messages: str
    command: list[str]
    duration: float

    def describe(self) -> str:
        return (
            f"sipp exit {self.returncode}, {self.successful} ok / {self.failed} failed"
            f" in {self.duration:.1f} s\ncommand: {' '.join(self.command)}\n"
            f"error log:\n{self.errors[-3000:]}\nstdout tail:\n{self.stdout[-1500:]}"
        )


def _parse_stat_csv(path: Path) -> tuple[int, int]:
    if not path.exists():
        return 0, 0
    rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    if len(rows) < 2:
        return 0, 0
    header, last = rows[0], rows[-1]
    values = dict(zip(header, last, strict=False))
    return int(values.get("SuccessfulCall(C)", 0) or 0), int(values.get("FailedCall(C)", 0) or 0)


def run_sipp(
    scenario: str,
    target: str,
    *,
    tmp_path: Path,
    calls: int = 1,
    rate: float = 10,
    limit: int | None = None,
    transport: str = "u1",
    duration_ms: int | None = None,
    media_port: int | None = None,
    trace_msg: bool = False,
    extra: list[str] | None = None,
    timeout: float = 40.0,
) -> SippResult:
    """Run ``scenarios/<scenario>`` against ``target`` (host:port) until all ``calls`` finish."""
    if SIPP is None:
        pytest.skip("sipp not installed")
    tag = f"{Path(scenario).stem}-{free_port()}"
    stat_file = tmp_path / f"{tag}-stat.csv"
    error_file = tmp_path / f"{tag}-errors.log"
    message_file = tmp_path / f"{tag}-messages.log"
    local_port = free_port()
    media_port = media_port or free_port(4)
    cmd = [SIPP, target, "-sf", str(SCENARIOS / scenario), "-m", str(calls), "-r", str(rate)]
    cmd += ["-l", str(limit or calls), "-i", HOST, "-p", str(local_port), "-mp", str(media_port)]
    cmd += ["-t", transport, "-nostdin", "-trace_stat", "-stf", str(stat_file), "-fd", "1"]
    cmd += ["-trace_err", "-error_file", str(error_file), "-timeout_error", "-timeout", "30s"]
    cmd += ["-max_recv_loops", "1000", "-s", "echo"]
    if duration_ms is not None:
        cmd += ["-d", str(duration_ms)]
    if trace_msg:
        cmd += ["-trace_msg", "-message_file", str(message_file)]
    cmd += extra or []
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=SCENARIOS, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        errors = error_file.read_text(errors="replace") if error_file.exists() else ""
        pytest.fail(
            f"sipp did not finish within {timeout} s: {' '.join(cmd)}\n{errors[-3000:]}\n{out[-1500:]}"
        )
    ok, failed = _parse_stat_csv(stat_file)
    return SippResult(
        returncode=proc.returncode,
        successful=ok,
        failed=failed,
        errors=error_file.read_text(errors="replace") if error_file.exists() else "",
        stdout=proc.stdout + proc.stderr,
        messages=message_file.read_text(errors="replace") if message_file.exists() else "",
        command=cmd,
        duration=time.monotonic() - started,
    )


# -- loopback sniffer -----------------------------------------------------------------------
@dataclass(slots=True)
class Packet:
    proto: str  # "udp" or "tcp"
    src: int  # source port
    dst: int  # destination port
    payload: bytes
    time: float  # kernel receive time (CLOCK_REALTIME, seconds), immune to this thread's scheduling


@dataclass(slots=True)
class Rtp:
    seq: int
    timestamp: int
    payload_type: int
    marker: bool
    ssrc: int
    payload: bytes
    time: float


def parse_rtp(packet: Packet) -> Rtp | None:
    data = packet.payload
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
    offset = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension
        if len(data) < offset + 4:
            return None
        offset += 4 + 4 * struct.unpack("!H", data[offset + 2 : offset + 4])[0]
    payload = data[offset:]
    if b0 & 0x20 and payload:  # padding
        payload = payload[: -payload[-1]]
    return Rtp(seq, ts, b1 & 0x7F, bool(b1 & 0x80), ssrc, payload, packet.time)


ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
_BPF_PORTS_FROM = 41000
PACKET_OUTGOING = 4


class Sniffer:
    """Captures IPv4 UDP and TCP on ``lo`` in a background thread (AF_PACKET raw socket; root only).

    Loopback packets are seen twice (outgoing and incoming); only the incoming copy is kept.
    """

    def __init__(self, max_seconds: float = 30.0) -> None:
        self.packets: list[Packet] = []
        self.max_seconds = max_seconds
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:  # root may exceed net.core.rmem_max: a load test beside the suite floods loopback
            self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
        except OSError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self._attach_port_filter()
        # Kernel timestamps: under CPU load this thread may read packets in bursts, late.
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _attach_port_filter(self) -> None:
        """Classic BPF in the kernel: keep IPv4 UDP/TCP with a port >= 41000 (the suite's ports)."""
        program = [
            (0x28, 0, 0, 12),  # ldh [12]            ethertype
            (0x15, 0, 9, 0x0800),  # jeq IPv4, else drop
            (0x30, 0, 0, 23),  # ldb [23]            IP protocol
            (0x15, 1, 0, 17),  # jeq UDP -> ports
            (0x15, 0, 6, 6),  # jeq TCP -> ports, else drop
            (0xB1, 0, 0, 14),  # ldxb 4*([14]&0xf)   IP header length
            (0x48, 0, 0, 14),  # ldh [x+14]          source port
            (0x35, 2, 0, _BPF_PORTS_FROM),  # jge -> accept
            (0x48, 0, 0, 16),  # ldh [x+16]          destination port
            (0x35, 0, 1, _BPF_PORTS_FROM),  # jge -> accept, else drop
            (0x06, 0, 0, 0x40000),  # accept
            (0x06, 0, 0, 0),  # drop
        ]
        code = b"".join(struct.pack("HBBI", *insn) for insn in program)
        buffer = ctypes.create_string_buffer(code)
        fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
        self._sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)

    def start(self) -> Sniffer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        sock = self._sock
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                frame, ancillary, _, addr = sock.recvmsg(70000, 64)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.time()
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                    seconds, nanoseconds = struct.unpack("qq", data[:16])
                    now = seconds + nanoseconds * 1e-9
            if addr[2] == PACKET_OUTGOING or len(frame) < 34 or frame[12:14] != b"\x08\x00":
                continue
            ip = frame[14:]
            if ip[0] >> 4 != 4:
                continue
            ihl = (ip[0] & 0x0F) * 4
            total = struct.unpack("!H", ip[2:4])[0]
            proto = ip[9]
            body = ip[ihl:total]
            if proto == 17 and len(body) >= 8:
                sport, dport = struct.unpack("!HH", body[:4])
                self.packets.append(Packet("udp", sport, dport, bytes(body[8:]), now))
            elif proto == 6 and len(body) >= 20:
                sport, dport = struct.unpack("!HH", body[:4])
                data_offset = (body[12] >> 4) * 4
                self.packets.append(Packet("tcp", sport, dport, bytes(body[data_offset:]), now))

    # -- queries ----------------------------------------------------------------------------
    def udp(self, src: int | None = None, dst: int | None = None) -> list[Packet]:
        return [
            p
            for p in list(self.packets)
            if p.proto == "udp" and (src is None or p.src == src) and (dst is None or p.dst == dst)
        ]

    def rtp(self, src: int | None = None, dst: int | None = None) -> list[Rtp]:
        out = []
        for packet in self.udp(src, dst):
            rtp = parse_rtp(packet)
            if rtp is not None:
                out.append(rtp)
        return out

    def flows(self) -> dict[tuple[int, int], list[tuple[int, int, bytes, float]]]:
        """Per (source port, destination port): RTP (seq, timestamp, payload, arrival time)."""
        result: dict[tuple[int, int], list[tuple[int, int, bytes, float]]] = defaultdict(list)
        for packet in self.udp():
            rtp = parse_rtp(packet)
            if rtp is not None:
                result[packet.src, packet.dst].append((rtp.seq, rtp.timestamp, rtp.payload, rtp.time))
        return dict(result)

    def sip(self, port: int) -> list[tuple[Packet, str]]:
        """SIP messages to or from ``port`` (UDP datagrams; TCP segments joined per direction)."""
        out = []
        for packet in list(self.packets):
            if port in (packet.src, packet.dst) and packet.payload[:3] in (b"SIP", *_METHOD_PREFIXES):
                out.append((packet, packet.payload.decode("utf-8", "replace")))
        return out

    def wait_for(self, predicate: Callable[[], object], timeout: float) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        return predicate()


_METHOD_PREFIXES = tuple(
    m[:3].encode() for m in ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "FOO")
)


def sdp_media_port(sip_text: str) -> int | None:
    for line in sip_text.splitlines():
        if line.startswith("m=audio "):
            return int(line.split()[1])
    return None


def header(sip_text: str, name: str) -> str | None:
    head = sip_text.split("\r\n\r\n", 1)[0]
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def assert_sipp_ok(result, calls: int = 1) -> None:
    assert result.returncode == 0, result.describe()
    assert (result.successful, result.failed) == (calls, 0), result.describe()


# -- raw SIP over sockets ----------------------------------------------------------------------
def sip_request(
    method: str,
    port: int,
    local_port: int,
    *,
    transport: str = "UDP",
    call_id: str | None = None,
    from_tag: str | None = None,
    to_tag: str | None = None,
    cseq: int = 1,
    branch: str | None = None,
    body: bytes = b"",
    extra: str = "",
    cseq_method: str | None = None,
) -> bytes:
    branch = branch or "z9hG4bK" + secrets.token_hex(8)
    call_id = call_id or secrets.token_hex(10)
    from_tag = from_tag or secrets.token_hex(4)
    to = f"<sip:echo@{HOST}:{port}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:echo@{HOST}:{port} SIP/2.0",
        f"Via: SIP/2.0/{transport} {HOST}:{local_port};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:test@{HOST}:{local_port}>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        f"Contact: <sip:test@{HOST}:{local_port}>",
    ]
    if extra:
        lines.append(extra)
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def offer_sdp(rtp_port: int) -> bytes:
    return (
        f"v=0\r\no=test 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    ).encode()


class UdpClient:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.port = self.sock.getsockname()[1]

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, (HOST, port))

    def response(self, cseq_method: str, timeout: float = 3.0, final: bool = True) -> str | None:
        """The next (final) response whose CSeq method is ``cseq_method``; None on timeout."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(70000)
            except TimeoutError:
                return None
            text = data.decode("utf-8", "replace")
            if not text.startswith("SIP/2.0 "):
                continue
            if (header(text, "CSeq") or "").split()[-1:] != [cseq_method]:
                continue
            if final and text[8:11] < "200":
                continue
            return text
        return None

    def close(self) -> None:
        self.sock.close()


def status(text: str | None) -> int | None:
    return int(text[8:11]) if text else None


# -- a full disk -------------------------------------------------------------------------------
@contextlib.contextmanager
def small_disk(mount: Path, size: str = "256k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``mount`` (created), unmounted at exit; the test is skipped
    where mounting is not allowed (not root, or no CAP_SYS_ADMIN)."""
    mount.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)]
    done = subprocess.run(command, capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(disk: Path) -> Path:
    """Write a file on ``disk`` until the file system has no space left; returns it (delete it to
    give the space back)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 4096)
    return filler
