"""The echo app: answers and plays the caller's audio straight back (a line test)."""

from __future__ import annotations

from parley.telephony.call import Call


async def echo(call: Call) -> None:
    """Play every received 20 ms frame back on the next tick until the caller hangs up."""
    # The stream's own play_frame (what Call.play_frame calls): one Python frame less per packet.
    call.on_audio = call.stream.play_frame
    await call.wait_ended()
