"""Coverage-guided fuzzing (atheris) of what Parley reads from the network and from agent files.

Targets, each fed bytes by libFuzzer through atheris, each allowed only its documented error:

========  ==================================================================  ====================
target    what runs                                                            allowed error
========  ==================================================================  ====================
sip       a user agent's ``receive`` over UDP and TCP (parser, framer, UA)     none: it must not raise
                                                                              (TCP: ConnectionError)
sdp       ``parse_sdp`` then ``LocalSdp.answer``                               SdpError
rtp       ``RtpPacket.parse``, then an ``RtpStream`` receiving it and ticking  RtpError
rtcp      ``parse_compound``, then a stream's ``receive_rtcp``                 RtcpError
dtmf      ``DtmfPayload.parse`` and a ``DtmfReceiver`` fed the packet           DtmfError, RtpError
agent     ``load_agent_text`` on the bytes as UTF-8                            AgentFileError
========  ==================================================================  ====================

Seeds are in ``bench/fuzz_corpus/<target>/`` (the RFC 4475 messages are added to ``sip`` from
``../shared/rfc4475`` when it is there; they are never copied into the project); what the fuzzer
finds is written to a scratch corpus, not into the repository. Each target runs in its own
process for ``--seconds``; a crash stops that target, leaves the input in ``--crashes`` and makes
the run exit 1 (turn it into a regression test). Usage:
``.venv/bin/python bench/fuzz.py --seconds 60`` or ``--target sip --seconds 600``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "fuzz_corpus"
RFC4475 = HERE.parents[1] / "shared" / "rfc4475"
TARGETS = ("sip", "sdp", "rtp", "rtcp", "dtmf", "agent")


def target_function(name: str) -> Callable[[bytes], None]:
    """The ``TestOneInput`` of target ``name`` (imports inside: atheris instruments them)."""
    if name == "sip":
        from parley.sip.useragent import UserAgent

        def sip(data: bytes) -> None:
            for transport in ("UDP", "TCP"):
                agent = UserAgent("192.0.2.1", 5060, transport=transport)
                try:
                    agent.receive(data, ("192.0.2.2", 5060), transport, 0.0)
                    agent.expire(100.0)
                except ConnectionError:
                    if transport == "UDP":
                        raise

        return sip
    if name == "sdp":
        from parley.sip.sdp import LocalSdp, SdpError, parse_sdp

        def sdp(data: bytes) -> None:
            with contextlib.suppress(SdpError):
                LocalSdp("192.0.2.1", 20000).answer(parse_sdp(data))

        return sdp
    if name in ("rtp", "rtcp"):
        from parley.media.rtcp import RtcpError, parse_compound
        from parley.media.rtp import RtpError, RtpPacket
        from parley.media.stream import RtpStream

        def media(data: bytes) -> None:
            stream = RtpStream("PCMU", 0, ("192.0.2.2", 4000), lambda d, a: None, time=lambda: 0.0,
                               send_rtcp=lambda d, a: None)  # fmt: skip
            if name == "rtp":
                with contextlib.suppress(RtpError):
                    RtpPacket.parse(data)
                stream.receive(data, ("192.0.2.2", 4000))
                for _ in range(3):
                    stream.tick()
            else:
                with contextlib.suppress(RtcpError):
                    parse_compound(data)
                stream.receive_rtcp(data, ("192.0.2.2", 4001))

        return media
    if name == "dtmf":
        from parley.media.dtmf import DtmfError, DtmfPayload, DtmfReceiver
        from parley.media.rtp import RtpError, RtpPacket

        def dtmf(data: bytes) -> None:
            with contextlib.suppress(DtmfError, RtpError):
                DtmfPayload.parse(data[12:])
                DtmfReceiver().feed(RtpPacket.parse(data))

        return dtmf
    if name == "agent":
        from parley.agent.loader import AgentFileError, load_agent_text

        def agent(data: bytes) -> None:
            with contextlib.suppress(AgentFileError):
                load_agent_text(data.decode("utf-8", "replace"))

        return agent
    raise ValueError(f"unknown target {name!r}")


def run_one(name: str, seconds: float, crashes: Path) -> None:
    """Fuzz one target in this process (atheris exits the process when done)."""
    import atheris

    with atheris.instrument_imports():
        test = target_function(name)
    work = Path(tempfile.mkdtemp(prefix=f"parley-fuzz-{name}-"))
    seeds = [str(CORPUS / name)]
    if name == "sip" and RFC4475.is_dir():
        seeds.append(str(RFC4475))
    crashes.mkdir(parents=True, exist_ok=True)
    args = [
        sys.argv[0],
        str(work),
        *seeds,
        f"-max_total_time={int(seconds)}",
        f"-artifact_prefix={crashes}/{name}-",
    ]
    args += ["-rss_limit_mb=2048", "-max_len=70000", "-print_final_stats=1"]
    atheris.Setup(args, test)
    atheris.Fuzz()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", choices=TARGETS, action="append", help="(repeatable; default: all)")
    parser.add_argument("--seconds", type=float, default=60.0, help="per target")
    parser.add_argument("--crashes", type=Path, default=HERE / "results" / "fuzz-crashes")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fuzz.json")
    parser.add_argument("--run-one", choices=TARGETS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        run_one(args.run_one, args.seconds, args.crashes)
        return
    try:
        import atheris  # noqa: F401 (each target's process imports it again)
    except ImportError:
        sys.exit("atheris is not installed: .venv/bin/pip install -e '.[fuzz]'")
    results = {}
    for name in args.target or TARGETS:
        started = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--run-one",
                name,
                "--seconds",
                str(args.seconds),
                "--crashes",
                str(args.crashes),
            ],
            capture_output=True,
            text=True,
        )
        lines = proc.stderr.splitlines()
        runs = next((int(line.split()[-1]) for line in lines if "stat::number_of_executed_units" in line), 0)
        coverage = next((line.split("cov:")[1].split()[0] for line in reversed(lines) if "cov:" in line), "?")
        results[name] = {
            "exit": proc.returncode,
            "crashed": proc.returncode != 0,
            "executions": runs,
            "coverage_edges": coverage,
            "seconds": round(time.monotonic() - started, 1),
        }
        if proc.returncode != 0:
            results[name]["output"] = "\n".join(lines[-40:])
        print(json.dumps({name: {k: v for k, v in results[name].items() if k != "output"}}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    sys.exit(1 if any(r["crashed"] for r in results.values()) else 0)


if __name__ == "__main__":
    main()
