"""CpuMeter on real processes: a busy child, an idle one, one that exits."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from parley.telephony.load import CpuMeter, usable_cores


def spawn(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


def test_a_busy_process_loads_its_core_and_an_idle_one_does_not() -> None:
    busy, idle = spawn("while True: pass"), spawn("import time; time.sleep(30)")
    try:
        time.sleep(0.3)  # both started (interpreter start-up is CPU too)
        busy_meter = CpuMeter([busy.pid], cores=1, window=0.5)
        idle_meter = CpuMeter([idle.pid], cores=1, window=0.5)
        assert busy_meter() == 0.0  # no complete window yet
        time.sleep(0.8)
        assert busy_meter() > 0.4  # a spinning process on a 2-core machine: about 1.0
        assert idle_meter() < 0.05
        both = CpuMeter([busy.pid, idle.pid], cores=2, window=0.5)
        time.sleep(0.8)
        assert 0.2 < both() <= 0.55  # one of two cores busy
    finally:
        for process in (busy, idle):
            process.kill()
            process.wait()


def test_an_exited_process_is_dropped_and_loads_nothing() -> None:
    busy = spawn("while True: pass")
    meter = CpuMeter([busy.pid, os.getpid()], cores=1, window=0.2)
    busy.kill()
    busy.wait()
    time.sleep(0.3)
    assert meter() < 0.1  # psutil's NoSuchProcess did not escape; what it had used is not counted
    time.sleep(0.3)
    assert meter() < 0.2  # this test process alone, asleep


def test_cores_must_be_positive() -> None:
    assert usable_cores() >= 1
    with pytest.raises(ValueError, match="at least 1"):
        CpuMeter([os.getpid()], cores=0)
