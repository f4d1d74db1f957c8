"""issue 7: the scale sweep's profile and idle connections, the memory guard, the leak cells.

Real servers on 127.0.0.1, real load generator processes; every check is on behaviour (counts,
reasons), never on timing figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.cell import CellRun, CpuPlan
from bench.launch import ServerProcess
from bench.profile import ProfileError, build, read
from records import schema


def _profile(**top: Any) -> dict[str, Any]:
    return {"name": "t", "trials": 1, "duration_s": 0.5, "warmup_s": 0.1, **top}


def _cpus() -> CpuPlan:
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        return CpuPlan(None, None)
    return CpuPlan((usable[0],), (usable[1],))


# ------------------------------------------------------------------ profile expansion


def test_scale_profile_holds_active_plus_idle_and_is_in_full() -> None:
    p = read("scale")
    cells = [c for c in p.cells if c.scenario == "scale"]
    assert {c.params.connections for c in cells} == {100, 1000, 3000, 10000}
    for c in cells:
        assert c.params.active == 10
        assert c.params.idle == c.params.connections - 10
        assert c.ref_point is None
    assert any(c.scenario == "scale" for c in read("full").cells)


def test_fault_scenarios_run_the_switch_next_to_the_correct_server() -> None:
    p = build(
        _profile(scenarios=[{"name": "leak-connfd", "nofile": 128}, {"name": "naive-reaper"}])
    )
    by = {(c.scenario, c.server_args): c for c in p.cells}
    assert set(by) == {
        ("leak-connfd", ("--leak-connfd",)),
        ("leak-connfd", ()),
        ("naive-reaper", ("--naive-reaper",)),
        ("naive-reaper", ()),
    }
    leak = by[("leak-connfd", ("--leak-connfd",))]
    assert leak.nofile == 128
    assert leak.close_wait
    assert leak.server == "process"
    assert by[("naive-reaper", ())].nofile is None
    assert "_fault_" in leak.cell_id
    assert "_control_" in by[("leak-connfd", ())].cell_id


@pytest.mark.parametrize(
    ("scenario", "needle"),
    [
        ({"name": "scale", "connections": [5], "active": 10}, "below the 10 active"),
        ({"name": "concurrency", "connections": [10], "active": 3}, "active only applies"),
        ({"name": "concurrency", "connections": [10], "nofile": 64}, "nofile only applies"),
        ({"name": "scale", "memory_cap_mb": 0}, "memory_cap_mb"),
    ],
)
def test_bad_scale_keys_are_one_clear_error(scenario: dict[str, Any], needle: str) -> None:
    with pytest.raises(ProfileError, match=needle):
        build(_profile(scenarios=[scenario]))


# ------------------------------------------------------------------ loadgen --idle


def test_idle_connections_are_held_and_echo_at_the_end(tmp_path: Path) -> None:
    server = ServerProcess.start("uvloop")
    try:
        out = tmp_path / "load.json"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "loadgen",
                "--target",
                f"{server.host}:{server.port}",
                "--connections",
                "2",
                "--idle",
                "40",
                "--duration",
                "0.3",
                "--warmup",
                "0",
                "--timeout",
                "5",
                "--output",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            start_new_session=True,
        )
        assert done.returncode == 0, done.stderr
        result = schema.read_load(out)
        assert result.config.idle_connections == 40
        assert result.idle_opened == 40
        assert result.idle_alive_at_end == 40
        assert result.requests > 0
    finally:
        server.stop()


# ------------------------------------------------------------------ runner cells


def test_memory_guard_stops_a_process_server_cell_over_its_cap(tmp_path: Path) -> None:
    # 100 connections = 100 forked children: far above a 30 MiB PSS budget.
    p = build(
        _profile(
            servers=["process"],
            memory_cap_mb=30,
            scenarios=[{"name": "scale", "connections": [100], "active": 2}],
        )
    )
    (spec,) = p.cells
    result = CellRun(spec, tmp_path, _cpus(), 1).run()
    assert result.status == "failed"
    assert result.reason is not None
    assert result.reason.startswith("stopped at ")
    assert ": memory (" in result.reason
    held = int(result.reason.split()[2])
    assert 0 < held <= 100
    assert result.server_run is not None
    assert result.server_run.leftovers == []


def test_leak_connfd_cell_shows_descriptors_climbing_to_the_limit(tmp_path: Path) -> None:
    p = build(
        _profile(
            duration_s=1.0,
            timeout_s=1.0,
            scenarios=[{"name": "leak-connfd", "nofile": 64}],
        )
    )
    by = {c.server_args: c for c in p.cells}
    leak = CellRun(by[("--leak-connfd",)], tmp_path, _cpus(), 1).run()
    assert leak.monitor is not None
    assert leak.monitor.samples
    fds = [s.fds for s in leak.monitor.samples]
    close_wait = [s.close_wait or 0 for s in leak.monitor.samples]
    # From a handful at start to the limit: one descriptor kept per connection served.
    assert fds[0] < 16
    assert max(fds) >= 60
    assert max(close_wait) >= 30
