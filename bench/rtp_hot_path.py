"""CPU cost of Parley's per-packet media path, without sockets: µs of CPU per two-way packet pair.

N echo streams are driven in-process through the real code: each round hands one PCMU
datagram per stream to what receives it (parse, latch, RFC 3550 stats, jitter buffer; the
stream itself, as the media clock's socket poller does, or the asyncio datagram protocol of
revisions before it), then runs one media-clock tick over all streams (jitter pop, batched G.711
decode, the echo app's ``play_frame``, batched encode, packetize, send). ``send`` only collects
the datagrams, so the figure is what Parley adds on top of the syscalls a bare echo also pays.

``--baseline REV`` runs the same load, interleaved, against the ``parley.media`` ``.py`` modules of
a git revision (extracted to a temporary directory, so they run interpreted): 2ae1052 is the last
revision before the hot path was compiled. CPU time is ``time.process_time``, so other processes
on the machine inflate it less than wall time (they still share caches: compare within one run).

``--srtp`` instead compares plain RTP streams with SRTP ones (SDES keys, libsrtp through pylibsrtp, wired
as the call manager wires them), interleaved in one run: SIPp, the peer of ``calls_per_core.py``, is built
without SRTP here, so the cost of SRTP per call is measured in-process.

Usage: ``.venv/bin/python bench/rtp_hot_path.py --streams 1000 --rounds 200 --baseline 2ae1052``
(``--srtp``: ``bench/rtp_hot_path.py --srtp --streams 500 --rounds 200``)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def receive_entry(stream: object) -> Callable[[bytes, tuple[str, int]], None]:
    """What a received datagram is handed to: the asyncio protocol of revisions that had one,
    else the stream itself (the media clock's poller calls it straight from C)."""
    try:
        from parley.media.endpoint import _Receiver  # before the per-tick socket poller
    except ImportError:
        return stream.receive  # type: ignore[attr-defined]
    receiver = _Receiver()
    receiver.handler = stream.receive  # type: ignore[attr-defined]
    return receiver.datagram_received


def measure(streams: int, rounds: int, profile: bool, srtp: bool = False) -> dict[str, float]:
    """Run the load against whichever ``parley`` is importable; CPU µs per packet pair.

    ``srtp``: every stream's RTP is SRTP (AES_CM_128_HMAC_SHA1_80), wired as the call manager does:
    received packets are authenticated and decrypted before the stream, sent ones encrypted after.
    The peer's encryption is its own work and subtracted with the packets' generation.
    """
    import numpy as np

    from parley.media.clock import MediaClock
    from parley.media.rtp import RtpSender
    from parley.media.stream import RtpStream

    now = [1000.0]

    def clock_time() -> float:
        return now[0]

    sent: list[bytes] = []
    collect = sent.append

    def send(data: bytes, addr: tuple[str, int]) -> None:
        collect(data)

    class EchoCall:  # what parley.apps.echo wires up: on_audio -> stream.play_frame
        def __init__(self, stream: RtpStream) -> None:
            self.stream = stream
            stream.on_audio = stream.play_frame

    rng = np.random.default_rng(1)
    clock = MediaClock(time=clock_time)
    receivers = []
    senders = []
    calls = []
    peers: list[Callable[[bytes], bytes]] = []  # the peer's side of each stream: plain, or SRTP-protected
    for i in range(streams):
        addr = ("127.0.0.1", 30000 + 2 * i)
        if srtp:
            from parley.media.srtp import SrtpContext, protecting, unprotecting

            ours, theirs = os.urandom(30), os.urandom(30)
            context = SrtpContext("AES_CM_128_HMAC_SHA1_80", ours, theirs)
            stream = RtpStream("PCMU", 0, addr, protecting(send, context.protect), time=clock_time)
            receive = unprotecting(stream.receive, context.unprotect)
            receivers.append((lambda data, source, r=receive: r(data, source, -1.0), addr))
            peers.append(SrtpContext("AES_CM_128_HMAC_SHA1_80", theirs, ours).protect)
        else:
            stream = RtpStream("PCMU", 0, addr, send, time=clock_time)
            receivers.append((receive_entry(stream), addr))
            peers.append(bytes)
        calls.append(EchoCall(stream))
        senders.append(RtpSender(0))
        clock.streams[id(stream)] = stream
    payloads = [rng.integers(0, 256, 160, dtype=np.uint8).tobytes() for _ in range(64)]

    tick_cpu = [0.0]

    def one_round(r: int) -> None:
        payload = payloads[r % 64]
        for i, (received, addr) in enumerate(receivers):
            received(peers[i](senders[i].packet(payload)), addr)
        now[0] += 0.020
        tick_start = time.process_time()
        clock._run_streams(now[0], 0.0)
        tick_cpu[0] += time.process_time() - tick_start
        sent.clear()

    # Packet generation is the peer's work: measure it alone and subtract it.
    for r in range(20):  # warm up: jitter buffers fill, playout starts
        one_round(r)
    gc.collect()
    # (SRTP: a throw-away peer context each, so the real ones keep their packet indexes.)
    gen_peers = peers
    if srtp:
        from parley.media.srtp import SrtpContext

        gen_peers = [
            SrtpContext("AES_CM_128_HMAC_SHA1_80", os.urandom(30), os.urandom(30)).protect for _ in peers
        ]
    gen_start = time.process_time()
    for r in range(rounds):
        payload = payloads[r % 64]
        for i, (_received, _addr) in enumerate(receivers):
            gen_peers[i](senders[i].packet(payload))
    gen_cpu = time.process_time() - gen_start
    for sender in senders:  # keep sequence numbers contiguous for the streams
        sender.sequence = (sender.sequence - rounds) & 0xFFFF
        sender.timestamp = (sender.timestamp - 160 * rounds) & 0xFFFFFFFF
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    tick_cpu[0] = 0.0
    start = time.process_time()
    for r in range(rounds):
        one_round(r)
    cpu = time.process_time() - start - gen_cpu
    if profiler is not None:
        import pstats

        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    first = next(iter(clock.streams.values()))
    assert first.stats.packets_out >= rounds, "streams did not echo"
    assert first.jitter.stats.played >= rounds - 5, "jitter buffer did not play out"
    pairs = rounds * streams
    return {
        "us_per_pair": 1e6 * cpu / pairs,
        "receive_us": 1e6 * (cpu - tick_cpu[0]) / pairs,
        "tick_us": 1e6 * tick_cpu[0] / pairs,
        "streams": streams,
        "rounds": rounds,
    }


def extract_revision(rev: str, into: Path) -> None:
    """Write ``src/parley/__init__.py`` and ``src/parley/media/*.py`` of ``rev`` under ``into``."""
    names = subprocess.run(
        ["git", "ls-tree", "--name-only", f"{rev}:src/parley/media"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    media = into / "parley" / "media"
    media.mkdir(parents=True)
    (into / "parley" / "__init__.py").write_text("")
    for name in names:
        if name.endswith(".py"):
            text = subprocess.run(
                ["git", "show", f"{rev}:src/parley/media/{name}"],
                cwd=ROOT, check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            (media / name).write_text(text)


def run_child(streams: int, rounds: int, pythonpath: str | None, srtp: bool = False) -> dict[str, float]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    cmd = [sys.executable, __file__, "--child", "--streams", str(streams), "--rounds", str(rounds)]
    out = subprocess.run(
        cmd + (["--srtp"] if srtp else []), env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def compare_srtp(streams: int, rounds: int, repeat: int) -> None:
    """Plain RTP and SRTP streams, interleaved runs in one go: CPU per packet pair and the ratio."""
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeat):
        for name, srtp in (("plain", False), ("srtp", True)):
            result = run_child(streams, rounds, None, srtp=srtp)
            if result["us_per_pair"] < best.get(name, {"us_per_pair": 1e9})["us_per_pair"]:
                best[name] = result
    print(f"CPU µs per packet pair, best of {repeat} ({streams} streams, {rounds} rounds)")
    for name, result in best.items():
        parts = f"receive {result['receive_us']:5.2f}, tick {result['tick_us']:5.2f}"
        print(f"{name:>12}: {result['us_per_pair']:6.2f}  ({parts})")
    extra = best["srtp"]["us_per_pair"] - best["plain"]["us_per_pair"]
    ratio = best["srtp"]["us_per_pair"] / best["plain"]["us_per_pair"]
    share = extra * 50 / 1e4  # 50 pairs a second per call, µs -> % of a core
    print(f"{'srtp/plain':>12}: {ratio:.2f}x (+{extra:.2f} µs a pair, +{share:.3f} % of a core a call)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--baseline", help="git revision whose parley.media to compare against")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the lowest is reported")
    parser.add_argument("--profile", action="store_true", help="cProfile the current code instead")
    parser.add_argument(
        "--srtp", action="store_true", help="compare SRTP streams with plain ones, side by side"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child or args.profile:
        print(json.dumps(measure(args.streams, args.rounds, args.profile, srtp=args.srtp and args.child)))
        return
    if args.srtp:
        compare_srtp(args.streams, args.rounds, args.repeat)
        return
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            extract_revision(args.baseline, Path(tmp))
        runs = [("current", None)] + ([(args.baseline, tmp)] if args.baseline else [])
        for _ in range(args.repeat):  # interleaved, so both see the same machine load
            for name, path in runs:
                result = run_child(args.streams, args.rounds, path)
                if result["us_per_pair"] < results.get(name, {"us_per_pair": 1e9})["us_per_pair"]:
                    results[name] = result
    print(f"CPU µs per packet pair, best of {args.repeat} ({args.streams} streams, {args.rounds} rounds)")
    for name, result in results.items():
        print(
            f"{name:>12}: {result['us_per_pair']:6.2f}  (receive {result['receive_us']:5.2f},"
            f" tick {result['tick_us']:5.2f})"
        )
    if args.baseline:
        speedup = results[args.baseline]["us_per_pair"] / results["current"]["us_per_pair"]
        print(f"{'speed-up':>12}: {speedup:.2f}x")


if __name__ == "__main__":
    main()
