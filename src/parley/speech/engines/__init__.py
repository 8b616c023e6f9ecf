"""Speech recognition engines, discovered as plugins (entry point group ``parley.asr_engines``).

A cloud engine is added by another package declaring an entry point in that group whose object is
a zero-argument factory (usually the class) returning an ``AsrEngine``; nothing here changes.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from parley.speech.types import AsrEngine

GROUP = "parley.asr_engines"


def available_engines() -> list[str]:
    """Names of the installed engine plugins."""
    return sorted(ep.name for ep in entry_points(group=GROUP))


def load_engines(names: list[str] | None = None) -> list[AsrEngine]:
    """Instantiate the named engine plugins (all installed ones when ``names`` is None), in order."""
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    wanted = sorted(found) if names is None else names
    missing = [n for n in wanted if n not in found]
    if missing:
        raise LookupError(f"unknown ASR engine(s) {missing}; installed: {sorted(found)}")
    return [found[n].load()() for n in wanted]
