"""The runner end to end, as `make bench` runs it: a real runner process, real servers, the real
load generator, on tiny profiles written here (0.3-0.6 s cells).

Waits are on observable events, never sleeps: a cell file appearing, `current.json` naming the
load generator of the cell in progress (the server printed READY before that file exists).
Every runner is started in its own session and ended by its id if a test fails midway, along with
the server and load generator groups it named.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import cgroup
from records import schema
from records.procfs import group_members

REPO = Path(__file__).resolve().parent.parent
EVENT_TIMEOUT_S = 60.0


def _toml(data: dict[str, Any]) -> str:
    """A tiny TOML writer for flat profiles: scalars, lists and one level of [[scenarios]]."""

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {val(x)}" for k, x in v.items()) + " }"
        return repr(v)

    lines = [f"{k} = {val(v)}" for k, v in data.items() if k != "scenarios"]
    for sc in data.get("scenarios", []):
        lines.append("[[scenarios]]")
        lines += [f"{k} = {val(v)}" for k, v in sc.items()]
    return "\n".join(lines) + "\n"


class RunnerProc:
    def __init__(self, popen: subprocess.Popen[bytes], log: Path, out: Path) -> None:
        self.popen = popen
        self.log = log
        self.out = out
        self.seen_groups: set[int] = set()

    def run_dir(self) -> Path | None:
        dirs = [d for d in self.out.iterdir() if d.is_dir()] if self.out.exists() else []
        return dirs[0] if dirs else None

    def wait_for(self, what: str, check: Any) -> Any:
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while time.monotonic() < deadline:
            got = check()
            if got:
                return got
            if self.popen.poll() is not None:
                got = check()
                if got:
                    return got
                pytest.fail(f"runner exited ({self.popen.returncode}) before {what}: {self.text()}")
            time.sleep(0.02)  # polling an event with a deadline, not waiting for one to happen
        pytest.fail(f"timed out waiting for {what}: {self.text()}")

    def current(self) -> dict[str, Any] | None:
        rd = self.run_dir()
        if rd is None:
            return None
        try:
            info: dict[str, Any] = json.loads((rd / "current.json").read_text())
        except (OSError, ValueError):
            return None
        for key in ("server_pid", "loadgen_pid"):
            if info.get(key):
                self.seen_groups.add(int(info[key]))
        return info

    def text(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def wait(self, timeout: float = 120.0) -> int:
        return self.popen.wait(timeout=timeout)


@pytest.fixture
def start_runner(tmp_path: Path) -> Iterator[Any]:
    started: list[RunnerProc] = []

    def start(profile: dict[str, Any] | None, *extra: str, out: Path | None = None) -> RunnerProc:
        out = out or tmp_path / "results"
        argv = [
            sys.executable,
            "-m",
            "bench",
            "run",
            "--out",
            str(out),
            "--no-report",
            "--no-microbench",
        ]
        if profile is not None:
            path = tmp_path / f"{profile['name']}.toml"
            path.write_text(_toml(profile))
            argv += ["--profile", str(path)]
        log = tmp_path / f"runner-{len(started)}.log"
        with open(log, "wb") as f:
            popen = subprocess.Popen(
                [*argv, *extra],
                cwd=REPO,
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        r = RunnerProc(popen, log, out)
        started.append(r)
        return r

    yield start
    for r in started:
        if r.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.popen.pid, signal.SIGKILL)
            r.popen.wait(timeout=10)
        for pgid in r.seen_groups:  # a failed test must not leave servers or load behind
            if group_members(pgid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)


def _cells(run_dir: Path) -> dict[str, schema.CellResult]:
    return {c.cell_id: c for c in map(schema.read_cell, sorted((run_dir / "cells").glob("*.json")))}


def _profile_order(profile_path_or_name: str) -> list[str]:
    from bench.profile import read  # noqa: PLC0415 - only this helper needs it

    return [c.cell_id for c in read(profile_path_or_name).cells]


TINY = {
    "name": "tiny",
    "trials": 1,
    "duration_s": 0.4,
    "warmup_s": 0.2,
    "timeout_s": 5.0,
    "servers": ["thread"],
    "scenarios": [
        {"name": "concurrency", "connections": [2]},
        {"name": "open-loop", "connections": [2], "rate_fractions": [0.5]},
        {"name": "placement", "placements": ["shared"]},
        {"name": "per-request", "connections": [2], "servers": ["process"]},
        {
            "name": "shared-counter",
            "servers": ["process"],
            "counter_modes": {"process": ["naive", "shm"]},
            "counter_off": False,
        },
    ],
}


def test_tiny_matrix_end_to_end(start_runner: Any) -> None:
    runner = start_runner(TINY)
    assert runner.wait() == 0, runner.text()
    run_dir = runner.run_dir()
    assert run_dir is not None
    manifest = schema.read_manifest(run_dir / "manifest.json")
    assert manifest.finished
    assert manifest.profile_name == "tiny"
    assert manifest.server_cpus == (0,)
    assert manifest.client_cpus == (1,)
    env = manifest.environment
    for key in ("cpu_model", "kernel", "python", "packages", "git", "somaxconn"):
        assert key in env
    assert manifest.limits["nofile"]["soft"] == manifest.limits["nofile"]["hard"]
    assert not (run_dir / "current.json").exists()

    cells = _cells(run_dir)
    assert len(cells) == 6
    by = {(c.scenario, c.params.shared_counter): c for c in cells.values()}
    for cell in cells.values():
        assert cell.status == "ok", (cell.cell_id, cell.reason)
        assert cell.load is not None
        assert cell.load.requests > 0
        assert cell.server_run is not None
        assert cell.server_run.clean_exit
        assert cell.monitor is not None
        assert len(cell.monitor.samples) >= 2
        assert cell.started_at
        assert cell.ended_at

    closed = by["concurrency", None]
    assert closed.placement == "split"
    assert closed.server_run is not None
    assert closed.server_run.cpus == (0,)
    assert closed.load is not None
    assert closed.load.config.cpus == (1,)
    shared = by["placement", None]
    assert shared.placement == "shared"
    assert shared.load is not None
    assert shared.load.config.cpus == (0,)
    # Open loop at half the closed-loop cell's throughput, measured in this very run.
    opened = by["open-loop", None]
    assert opened.params.rate_fraction == 0.5
    assert opened.params.rate == pytest.approx(0.5 * closed.load.requests_per_s, rel=1e-3)
    assert opened.load is not None
    assert opened.load.config.rate == pytest.approx(opened.params.rate, rel=1e-3)
    # issue 5: shm counts exactly (primer included); naive's parent counts nothing, and the
    # two numbers are kept in the notes for the report.
    shm = by["shared-counter", "shm"]
    assert shm.server_run is not None
    assert shm.server_run.stats is not None
    assert shm.load is not None
    assert shm.server_run.stats["bytes"] == shm.load.bytes_received_total + 64
    naive = by["shared-counter", "naive"]
    assert naive.server_run is not None
    assert naive.server_run.stats == {"bytes": 0, "updates": 0}
    assert any("server counted 0 bytes" in n for n in naive.notes)
    assert by["per-request", None].params.mode == "per-request"

    # issue 11: every cell is stamped with the code that measured it, its CPU is accounted over
    # exactly its window (samples at both edges) and never exceeds the CPUs the server had;
    # the machine's canary ran before, between and after the cells.
    for cell in cells.values():
        assert cell.git is not None
        assert cell.git.commit
        assert cell.monitor is not None
        assert cell.monitor.window_start is not None
        assert cell.monitor.window_end is not None
        assert cell.cpu is not None, cell.cell_id
        assert 0 < cell.cpu.server_cpu_s <= cell.cpu.window_s * cell.cpu.server_cpus + 1e-9
        assert cell.load is not None
        assert cell.load.starved == 0
    # the server's own cgroup where the machine allows one (root, cgroup v1 cpuacct), else
    # /proc/stat of its CPU (split) or its tree (shared)
    group = Path("/sys/fs/cgroup/cpuacct/cpuacct.usage_percpu").exists() and os.geteuid() == 0
    assert closed.cpu is not None
    assert closed.cpu.server_source == ("cgroup" if group else "cpu")
    assert shared.cpu is not None
    assert shared.cpu.server_source == ("cgroup" if group else "tree")
    if group:  # foreign CPU is measured where the server has its own CPU
        assert closed.cpu.foreign_s is not None
        assert shared.cpu.foreign_s is None
    assert len(manifest.canary) >= 2
    assert all(c.pipe_rtt_us > 0 for c in manifest.canary)
    # open loop proves its schedule: the target is recorded beside what was achieved
    assert opened.load.target_rate == pytest.approx(opened.params.rate, rel=1e-3)
    assert opened.load.sent > 0
    assert "lateness" in opened.load.histograms


def test_pool_server_cell_says_how_many_it_served_and_is_never_capacity(
    start_runner: Any,
) -> None:
    """prefork serves 4 connections at a time: a cell asking for 8 must say so, not pose as a
    figure for 8 clients (issue 11: 996 of 1000 clients once went unserved, unreported)."""
    from analysis.results import read_run  # noqa: PLC0415
    from analysis.stats import pick, summarise  # noqa: PLC0415

    profile = {
        "name": "pool",
        "trials": 1,
        "duration_s": 0.4,
        "warmup_s": 0.2,
        "servers": ["prefork"],
        "scenarios": [{"name": "concurrency", "connections": [8]}],
    }
    runner = start_runner(profile)
    assert runner.wait() == 0, runner.text()
    run_dir = runner.run_dir()
    assert run_dir is not None
    (cell,) = _cells(run_dir).values()
    assert cell.status == "ok"
    assert cell.load is not None
    assert cell.load.fill is not None
    assert (cell.load.served, cell.load.starved) == (4, 4)
    assert cell.load.fill.ended == "stalled"
    assert cell.load.fill.echoed == 4
    assert "4 of 8 connections served in the window" in " ".join(cell.notes)
    # the starved clients waited the whole window: censored, counted, never dropped
    assert cell.load.unfinished >= 4
    run = read_run(run_dir)
    assert int(run.df["starved"].iloc[0]) == 4
    assert int(run.df["asked"].iloc[0]) == 8
    s = summarise(run.df, "requests_per_s")
    assert pick(s, "prefork", connections=8) is None  # no claim may use it as a capacity


def test_resume_refuses_cells_of_another_commit_and_reruns_failed_cells(
    start_runner: Any, tmp_path: Path
) -> None:
    profile = {
        "name": "stamp",
        "trials": 2,
        "duration_s": 0.3,
        "warmup_s": 0.1,
        "servers": ["uvloop"],
        "scenarios": [{"name": "concurrency", "connections": [1]}],
    }
    runner = start_runner(profile)
    assert runner.wait() == 0, runner.text()
    run_dir = runner.run_dir()
    assert run_dir is not None
    files = sorted((run_dir / "cells").glob("*.json"))
    assert len(files) == 2
    # one cell "measured by other code", the other failed
    other = json.loads(files[0].read_text())
    other["git"] = {"commit": "0" * 40, "dirty": False}
    files[0].write_text(json.dumps(other))
    failed = json.loads(files[1].read_text())
    failed["status"], failed["reason"] = "failed", "made to fail by the test"
    files[1].write_text(json.dumps(failed))

    refused = start_runner(None, "--resume", str(run_dir))
    assert refused.wait() == 2
    assert "was measured by commit 000000000000" in refused.text()
    assert json.loads(files[1].read_text())["status"] == "failed"  # nothing was run

    mixed = start_runner(None, "--resume", str(run_dir), "--mixed-commits", "--no-canary")
    assert mixed.wait() == 0, mixed.text()
    assert "1 cells done, 1 to run" in mixed.text()
    assert schema.read_cell(files[1]).status == "ok"


def test_killed_server_fails_its_cell_and_the_next_cell_runs(start_runner: Any) -> None:
    profile = {
        "name": "kill",
        "trials": 1,
        "duration_s": 0.6,
        "warmup_s": 0.2,
        "servers": ["process", "thread"],
        "scenarios": [{"name": "concurrency", "connections": [2]}],
    }
    runner = start_runner(profile)
    first = runner.wait_for(
        "the first cell's load generator",
        lambda: (c := runner.current()) and c.get("loadgen_pid") and c,
    )
    os.kill(first["server_pid"], signal.SIGKILL)
    assert runner.wait() == 0, runner.text()
    run_dir = runner.run_dir()
    assert run_dir is not None
    cells = _cells(run_dir)
    killed = cells[first["cell_id"]]
    assert killed.server == "process"
    assert killed.status == "failed"
    assert killed.reason is not None
    assert "server exited during the cell" in killed.reason
    assert "SIGKILL" in killed.reason
    assert killed.server_run is not None
    assert killed.server_run.exit_code == -signal.SIGKILL
    others = [c for c in cells.values() if c.cell_id != first["cell_id"]]
    assert [c.status for c in others] == ["ok"]
    assert schema.read_manifest(run_dir / "manifest.json").finished
    for pgid in runner.seen_groups:
        assert group_members(pgid) == []


def test_interrupt_keeps_finished_cells_and_resume_completes(
    start_runner: Any, tmp_path: Path
) -> None:
    profile = {
        "name": "interrupt",
        "trials": 3,
        "duration_s": 0.5,
        "warmup_s": 0.2,
        "servers": ["thread"],
        "scenarios": [{"name": "concurrency", "connections": [1]}],
    }
    runner = start_runner(profile)
    run_dir = runner.wait_for("the run directory", runner.run_dir)
    first_file = runner.wait_for(
        "the first cell file", lambda: next((run_dir / "cells").glob("*.json"), None)
    )
    before = first_file.read_bytes()
    busy = runner.wait_for(
        "the second cell's load generator",
        lambda: (
            (c := runner.current())
            and c.get("loadgen_pid")
            and c["cell_id"] != first_file.stem
            and c
        ),
    )
    os.kill(runner.popen.pid, signal.SIGINT)
    code = runner.wait(timeout=30)
    assert code == 128 + signal.SIGINT, runner.text()
    assert "resume with" in runner.text()
    # Nothing the runner started is left: not the server's group, not the load generator's.
    for pgid in (busy["server_pid"], busy["loadgen_pid"]):
        assert group_members(pgid) == [], pgid
    # ... nor the server's cgroup (bench/cgroup.py names it after the runner's pid)
    assert not list(cgroup.ROOT.glob(f"{cgroup.PREFIX}{runner.popen.pid}-*"))
    manifest = schema.read_manifest(run_dir / "manifest.json")
    assert not manifest.finished
    kept = _cells(run_dir)
    assert first_file.stem in kept
    assert busy["cell_id"] not in kept  # an interrupted cell is not a result
    assert len(kept) < 3

    resumed = start_runner(None, "--resume", str(run_dir), "--profile", "standard")
    assert resumed.wait() == 0, resumed.text()
    assert "resuming" in resumed.text()  # it used the run's own profile, and said so
    done = _cells(run_dir)
    assert len(done) == 3
    assert all(c.status == "ok" for c in done.values())
    # A finished cell is never run again as a missing one. It may be re-run at the end as
    # spoiled (a neighbour on the server's CPU, an outlier either way): then the first attempt
    # is kept byte for byte under attempts/, and the re-run says why.
    if first_file.read_bytes() != before:
        again = schema.read_cell(first_file)
        assert again.attempt == 2, again.notes
        assert again.rerun, again.notes
        kept_first = run_dir / schema.ATTEMPTS_DIR / f"{first_file.stem}.a1.json"
        assert kept_first.read_bytes() == before
    assert schema.read_manifest(run_dir / "manifest.json").finished
    assert not (run_dir / "loadgen").exists() or not list((run_dir / "loadgen").iterdir())


def test_server_that_never_prints_ready_fails_its_cell_with_its_stderr(start_runner: Any) -> None:
    # inetd refuses a counter with the `cat` handler (cat counts nothing): a usage error on its
    # stderr and an exit before READY, the shape of any server that cannot start.
    profile = {
        "name": "noready",
        "trials": 1,
        "duration_s": 0.3,
        "warmup_s": 0.1,
        "servers": ["inetd", "thread"],
        "server_args": {"inetd": ["--handler", "cat"]},
        "scenarios": [
            {
                "name": "shared-counter",
                "counter_modes": {"inetd": ["naive"], "thread": ["lock"]},
                "counter_off": False,
            }
        ],
    }
    runner = start_runner(profile)
    assert runner.wait() == 0, runner.text()
    run_dir = runner.run_dir()
    assert run_dir is not None
    cells = {c.server: c for c in _cells(run_dir).values()}
    bad = cells["inetd"]
    assert bad.status == "failed"
    assert bad.reason is not None
    assert bad.reason.startswith("server did not start")
    assert bad.server_run is not None
    assert bad.server_run.stderr_tail
    assert "FAILED" in runner.text()
    good = cells["thread"]
    assert good.status == "ok", good.reason
    assert good.server_run is not None
    assert good.server_run.stats is not None
    assert good.load is not None
    assert good.server_run.stats["bytes"] == good.load.bytes_received_total + 64
