"""``parley serve``: run a :class:`CallManager` until SIGINT/SIGTERM, then stop cleanly."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from typing import Any

from parley.telephony.manager import App, CallManager


async def run_server(app: App, *, drain: float = 0.0, **options: Any) -> dict[str, Any]:
    """Serve until a stop signal; returns the run's statistics."""
    manager = CallManager(app, **options)
    await manager.start()
    # What start-up loaded lives as long as the process: keep it out of the garbage collector's
    # scans, so a full collection during calls (measured: 11 ms before, 0.003 ms after freezing
    # an echo server's start-up heap) cannot hold up the 20 ms media clock.
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    transports = "+".join(manager.transports)
    print(
        f"parley: answering calls on sip:{manager.host}:{manager.port} ({transports})",
        file=sys.stderr,
        flush=True,
    )
    await stop.wait()
    await manager.stop(drain=drain)
    return manager.report()
