"""Whole-window CPU accounting (issue 11) against a process tree with a known CPU burn.

tests/fixtures/burner.py forks children one after another, each spinning a fixed amount of CPU
and reaped by its parent: the fork server's pattern, where CPU arrives in lumps when children
are reaped. Pinned to one CPU and measured over a window marked like the load generator marks
it, the accounting must find the duty it was given within a few percent, and never more than
the one CPU the tree had (the old busy-interval estimate gave such trees 1.2-3.7 CPUs).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.accounting import TICK_S, account
from bench.monitor import Monitor
from records.schema import CpuTicks, MonitorData, MonitorSample

BURNER = Path(__file__).parent / "fixtures" / "burner.py"
SERVER_CPU, CLIENT_CPU = 0, 1
WINDOW_S = 1.0


@pytest.fixture(autouse=True)
def _two_cpus() -> None:
    if not {SERVER_CPU, CLIENT_CPU} <= os.sched_getaffinity(0):
        pytest.skip("needs CPUs 0 and 1")


def measure(duty: float, child_ms: float) -> tuple[float, float, float]:
    """(CPUs used by the tree per /proc/stat of its CPU, per its own counters, the window)."""
    popen = subprocess.Popen(
        [sys.executable, str(BURNER), str(duty), str(child_ms), str(WINDOW_S + 3)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    here = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CLIENT_CPU})  # this test's own work stays off the burner's CPU
    try:
        os.sched_setaffinity(popen.pid, {SERVER_CPU})
        assert popen.stdout is not None and popen.stdout.readline().strip() == b"READY"
        r, w = os.pipe()
        monitor = Monitor(popen.pid, cpus=(CLIENT_CPU,))
        monitor.watch_window(r)
        monitor.start()
        t0 = time.monotonic_ns() + 300_000_000
        t_end = t0 + int(WINDOW_S * 1e9)
        os.write(w, f"{t0} {t_end}\n".encode())
        os.close(w)
        while time.monotonic_ns() < t_end + 200_000_000:
            time.sleep(0.05)  # the burner runs on; the window's edges are sampled by the monitor
        data = monitor.stop()
    finally:
        os.sched_setaffinity(0, here)
        popen.kill()
        popen.wait()
        if popen.stdout is not None:
            popen.stdout.close()
    acct = account(data, (t0, t_end), (SERVER_CPU,), (CLIENT_CPU,))
    assert acct is not None
    assert acct.window_s == pytest.approx(WINDOW_S, abs=0.02)
    return acct.server_cpus_used, acct.server_tree_s / acct.window_s, acct.window_s


@pytest.mark.parametrize(("duty", "child_ms"), [(1.0, 20.0), (0.5, 20.0)])
def test_cpu_over_the_window_is_the_known_burn_and_never_above_one_cpu(
    duty: float, child_ms: float
) -> None:
    cpus, tree, _ = measure(duty, child_ms)
    print(f"duty {duty}: /proc/stat {cpus:.3f} CPUs, tree {tree:.3f} CPUs")
    assert cpus <= 1.0  # never more than the one CPU the tree was pinned to
    # The burner's own duty is approximate (fork, waitpid, sleep overshoot): a few percent.
    assert cpus == pytest.approx(duty, abs=0.08)
    # The tree's counters (reaped children's lumps through cutime) agree within a lump or two.
    assert tree == pytest.approx(cpus, abs=0.1)


def _sample(t_s: float, ticks: dict[str, CpuTicks], mark: str) -> MonitorSample:
    return MonitorSample(t_s, 0.0, 0.0, 0, 0, 1, 1, 0, 0, 0, 0, cpu_ticks=ticks, mark=mark)


@pytest.mark.parametrize("n_cpus", [1, 2, 3, 7])
@pytest.mark.parametrize("window_s", [0.999_999_7, 1.582_315, 2.000_000_3, 4.123_456_8])
def test_a_capped_figure_never_reads_above_the_cpus_given(n_cpus: int, window_s: float) -> None:
    """Counters over the cap by a few ticks (their rounding) are cut to exactly the cap: the
    CPUs used read n_cpus, not one ulp more (CI once saw 1.0000000000000002 on one CPU)."""
    cpus = tuple(range(n_cpus))
    zero = CpuTicks(0, 0, 0, 0, 0, 0)
    # Each CPU busy for the whole window plus a tick, split unevenly between user and system.
    ticks = round(window_s / TICK_S) + 1
    busy = CpuTicks(
        user=ticks * 2 // 3, system=ticks - ticks * 2 // 3, idle=0, irq=0, softirq=0, steal=0
    )
    names = [f"cpu{c}" for c in (*cpus, n_cpus)]
    data = MonitorData(
        interval_s=0.05,
        samples=[
            _sample(0.0, dict.fromkeys(names, zero), "start"),
            _sample(window_s, {n: busy if n != f"cpu{n_cpus}" else zero for n in names}, "end"),
        ],
        window_start=0,
        window_end=1,
    )
    acct = account(data, (0, 0), cpus, (n_cpus,))
    assert acct is not None
    assert not acct.server_capped  # within the counters' rounding: cut silently
    assert acct.server_cpus_used <= n_cpus
    assert acct.server_cpus_used == pytest.approx(n_cpus)
