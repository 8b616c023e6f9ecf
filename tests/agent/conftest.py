"""The end-to-end call tests' fixtures (:mod:`e2e_fixtures`), for every test in this directory."""

from .e2e_fixtures import answers, caller_manager, sink

__all__ = ["answers", "caller_manager", "sink"]
