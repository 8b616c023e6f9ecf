"""Regenerate pcmu_speech_3s.pcap: the first 3 s of shared/sipp/pcap/speech_20s.ulaw as RTP PCMU.

Run from this folder: ``python make_pcap.py /path/to/speech_20s.ulaw``. The other files here are
copies of SIPp's own samples (/usr/share/sip-tester/g711a.pcap, dtmf_2833_[1-3].pcap).
"""

import struct
import sys


def write_pcap(ulaw: bytes, out: str, src_port: int = 7000, dst_port: int = 6000) -> None:
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # Ethernet link type
        for seq, off in enumerate(range(0, len(ulaw) - 159, 160)):
            rtp = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234ABCD) + ulaw[off : off + 160]
            udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(rtp), 0) + rtp
            addr = bytes([127, 0, 0, 1])
            iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), seq, 0, 64, 17, 0, addr, addr)
            frame = b"\x00" * 12 + b"\x08\x00" + iph + udp
            t = seq * 20000
            f.write(struct.pack("<IIII", t // 1_000_000, t % 1_000_000, len(frame), len(frame)) + frame)


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        write_pcap(f.read()[: 3 * 8000], "pcmu_speech_3s.pcap")
