"""``parley serve``: run a :class:`CallManager` until SIGINT/SIGTERM, then stop cleanly."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from parley.telephony.manager import App, CallManager


async def run_server(app: App, *, drain: float = 0.0, **options: Any) -> dict[str, Any]:
    """Serve until a stop signal; returns the run's statistics."""
    manager = CallManager(app, **options)
    await manager.start()
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
