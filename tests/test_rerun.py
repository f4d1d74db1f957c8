"""Honest re-runs (issue 20): a re-run never replaces an attempt, fast outliers are treated like
slow ones, a foreign-CPU cell is re-run, a failure is never re-run by an episode, and a cell is
re-run at most once.

The runner's own methods on real cell documents (tests/data/v2-run, edited to the speeds each
case needs), writing into a temporary run directory.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from bench.profile import CellSpec, build, extra_trial
from bench.runner import Runner, RunOptions
from records import schema
from records.rerun import OUTLIER_SHARE

DATA = Path(__file__).parent / "data" / "v2-run" / "cells"
PROFILE = {
    "name": "rerun",
    "trials": 5,
    "duration_s": 0.2,
    "warmup_s": 0.0,
    "servers": ["thread"],
    "scenarios": [{"name": "concurrency", "connections": [10]}],
}


@pytest.fixture
def template() -> schema.CellResult:
    return schema.read_cell(next(DATA.glob("concurrency_*.json")))


def result(template: schema.CellResult, spec: CellSpec, rps: float) -> schema.CellResult:
    assert template.load is not None
    return replace(
        template,
        cell_id=spec.cell_id,
        trial=spec.trial,
        status="ok",
        reason=None,
        load=replace(template.load, requests_per_s=rps),
        cpu=replace(template.cpu, foreign_flag=False) if template.cpu else None,
    )


def runner_with(template: schema.CellResult, speeds: list[float]) -> tuple[Runner, list[CellSpec]]:
    profile = build(PROFILE)
    runner = Runner(RunOptions(profile="rerun"))
    specs = list(profile.cells)
    for spec, rps in zip(specs, speeds, strict=True):
        runner.results[spec.cell_id] = result(template, spec, rps)
    return runner, specs


def test_fast_outliers_are_rerun_like_slow_ones(template: schema.CellResult) -> None:
    median = 10_000.0
    slow, fast = median * OUTLIER_SHARE * 0.9, median / OUTLIER_SHARE * 1.1
    runner, specs = runner_with(template, [median, median, slow, fast, median])
    why = runner._spoiled(build(PROFILE))
    assert set(why) == {specs[2].cell_id, specs[3].cell_id}
    assert "0.54x" in why[specs[2].cell_id][1]
    assert "1.83x" in why[specs[3].cell_id][1]
    assert why[specs[3].cell_id][0] > 0.5
    assert why[specs[2].cell_id][0] > 0.5


def test_foreign_cpu_is_rerun_and_a_second_attempt_never_is(template: schema.CellResult) -> None:
    assert template.cpu is not None
    runner, specs = runner_with(template, [10_000.0] * 5)
    flagged = runner.results[specs[1].cell_id]
    runner.results[specs[1].cell_id] = replace(
        flagged, cpu=replace(template.cpu, foreign_flag=True, foreign_s=0.4)
    )
    assert list(runner._spoiled(build(PROFILE))) == [specs[1].cell_id]
    runner.results[specs[1].cell_id] = replace(runner.results[specs[1].cell_id], attempt=2)
    assert runner._spoiled(build(PROFILE)) == {}  # re-run at most once


def test_an_attempt_on_disk_is_moved_aside_never_overwritten(
    template: schema.CellResult, tmp_path: Path
) -> None:
    runner, specs = runner_with(template, [10_000.0] * 5)
    spec = specs[0]
    failed = replace(runner.results[spec.cell_id], status="failed", reason="echo mismatch")
    runner._keep(tmp_path, spec, failed)
    runner._keep(tmp_path, spec, result(template, spec, 9e3))
    runner._keep(tmp_path, spec, result(template, spec, 8e3))
    kept = schema.read_cell(tmp_path / "cells" / f"{spec.cell_id}.json")
    assert kept.attempt == 3
    assert kept.load is not None
    assert kept.load.requests_per_s == 8e3
    first = schema.read_cell(tmp_path / schema.ATTEMPTS_DIR / f"{spec.cell_id}.a1.json")
    second = schema.read_cell(tmp_path / schema.ATTEMPTS_DIR / f"{spec.cell_id}.a2.json")
    assert first.status == "failed"
    assert first.reason == "echo mismatch"
    assert second.load is not None
    assert second.load.requests_per_s == 9e3


def test_an_episode_reruns_ok_cells_whatever_their_speed_but_no_failure(
    template: schema.CellResult,
) -> None:
    runner, specs = runner_with(template, [10_000.0, 30_000.0, 10_000.0, 10_000.0, 10_000.0])
    runner.results[specs[2].cell_id] = replace(
        runner.results[specs[2].cell_id], status="failed", reason="server died"
    )
    canary = schema.CanarySample(
        at="2026-12-07T00:00:00.000Z", t_s=0.0, after_cell=0, spin_us=1000.0, pipe_rtt_us=10.0
    )
    runner.canaries = [
        replace(canary, t_s=0.0),
        replace(canary, t_s=10.0, spin_us=3000.0),  # an episode: 0.33x the median speed
        replace(canary, t_s=20.0),
        replace(canary, t_s=30.0),
    ]
    runner.cell_times = {s.cell_id: 5.0 + i for i, s in enumerate(specs)}  # all beside it
    why = runner._spoiled(build(PROFILE))
    assert specs[2].cell_id not in why  # a failure is a result: never re-run over
    assert {specs[0].cell_id, specs[1].cell_id, specs[3].cell_id} <= set(why)
    assert "canary" in why[specs[0].cell_id][1]  # the slow and the fast alike: the machine's


def test_an_extra_round_is_the_same_point_under_the_next_trial_number() -> None:
    profile = build({**PROFILE, "trials": 3, "time_budget_s": 60})
    assert profile.time_budget_s == 60
    last = profile.cells[-1]
    extra = extra_trial(last, 4)
    assert extra.trial == 4
    assert extra.point_key == last.point_key
    assert extra.cell_id == last.cell_id.replace("_t3_", "_t4_")
    assert extra.cell_id not in {c.cell_id for c in profile.cells}


class _Recording(Runner):
    """The real runner, whose microbenchmark step records the CPUs it would start them on."""

    seen: set[int] | None = None

    def _microbench(self, run_dir: Path, fast: bool) -> None:
        self.seen = os.sched_getaffinity(0)


def test_the_runner_keeps_off_the_servers_cpu_but_not_the_microbenchmarks(tmp_path: Path) -> None:
    """While cells run, the runner stays on the client's CPUs (its work on the server's would be
    foreign CPU); the microbenchmarks, which place their ends on one CPU and on two, get every
    CPU back (a runner that kept its corner measured no cross-CPU round trip)."""
    if not {0, 1} <= os.sched_getaffinity(0):
        pytest.skip("needs CPUs 0 and 1")
    path = tmp_path / "affinity.toml"
    path.write_text(
        'name = "affinity"\ntrials = 1\nduration_s = 0.2\nwarmup_s = 0.0\nservers = ["thread"]\n'
        '[microbench]\nrun = true\nfast = true\n[[scenarios]]\nname = "concurrency"\n'
        "connections = [1]\n"
    )
    before = os.sched_getaffinity(0)
    runner = _Recording(RunOptions(profile=str(path), out=tmp_path, report=False, canary=False))
    assert runner.run() == 0
    assert runner.seen == before  # every CPU for the microbenchmarks
    assert os.sched_getaffinity(0) == before  # and for whoever called the runner


def test_measured_foreign_cpu_is_re_run_before_indirect_evidence(
    template: schema.CellResult,
) -> None:
    """Over the cap, a cell whose server shared its CPU (measured) goes before an outlier."""
    assert template.cpu is not None
    runner, specs = runner_with(template, [10_000.0, 10_000.0, 2_000.0, 10_000.0, 10_000.0])
    runner.results[specs[0].cell_id] = replace(
        runner.results[specs[0].cell_id],
        cpu=replace(template.cpu, foreign_flag=True, foreign_s=0.05, window_s=1.0),
    )
    why = runner._spoiled(build(PROFILE))
    assert why[specs[0].cell_id][0] > why[specs[2].cell_id][0] > 0
