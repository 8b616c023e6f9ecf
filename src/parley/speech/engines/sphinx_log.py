"""pocketsphinx's C log lines ("ERROR: fsg_search.c … Final result does not match the grammar"),
routed through Python logging at DEBUG level instead of the server's stderr.

The C library writes its log to a file (the ``logfn`` setting), and its Python binding exposes no
callback (``err_set_callback`` is not wrapped). So each process that makes decoders gets one pipe:
the C library writes to it, a daemon thread reads it line by line into the ``parley.speech.pocketsphinx``
logger. Decoders are made in the decoder worker processes too, hence the per-process set-up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

log = logging.getLogger("parley.speech.pocketsphinx")

_lock = threading.Lock()
_pipe: tuple[int, str] | None = None  # (the pid that made it, the path the C library opens)


def log_path() -> str:
    """The ``logfn`` for this process's decoders: a pipe whose lines go to Python logging (DEBUG)."""
    global _pipe
    with _lock:
        if _pipe is None or _pipe[0] != os.getpid():  # none yet, or inherited across a fork
            read_fd, write_fd = os.pipe()
            os.set_inheritable(write_fd, False)
            threading.Thread(target=_forward, args=(read_fd,), name="pocketsphinx-log", daemon=True).start()
            _pipe = (os.getpid(), f"/proc/self/fd/{write_fd}")
        return _pipe[1]


def _forward(read_fd: int) -> None:
    """Read the pipe for the life of the process: a reader that stopped would let the pipe fill up,
    and the decoders would then block on their next log line."""
    with os.fdopen(read_fd, "r", encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.strip():
                with contextlib.suppress(Exception):  # a failing handler must not stop the reading
                    log.debug("%s", line.rstrip())
