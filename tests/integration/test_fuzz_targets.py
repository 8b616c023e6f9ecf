"""bench/fuzz.py's targets run on their seed corpora without atheris: the harness and its seeds work.

(The fuzzing itself is a benchmark: ``bench/fuzz.py``, atheris from the ``fuzz`` extra.)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def fuzz_module():
    spec = importlib.util.spec_from_file_location("parley_bench_fuzz", BENCH / "fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("target", ["sip", "sdp", "rtp", "rtcp", "dtmf", "agent"])
def test_every_seed_runs_through_its_target(target: str) -> None:
    fuzz = fuzz_module()
    test = fuzz.target_function(target)
    seeds = sorted((fuzz.CORPUS / target).iterdir())
    assert seeds, f"no seeds for {target}"
    for seed in seeds:
        data = seed.read_bytes()
        test(data)
        for cut in (0, 1, len(data) // 2, len(data) - 1):  # truncations stay within the allowed errors
            test(data[:cut])
