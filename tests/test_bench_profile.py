"""The runner's profiles: what the built-in ones cover, and how a profile becomes ordered cells.

Pure logic, no processes: fast. The CLI's usage errors are checked through a real subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import profile as profiles
from bench.profile import ProfileError, build
from bench.verdict import counter_check
from records.registry import SERVERS

REPO = Path(__file__).resolve().parent.parent


def _points(prof: profiles.Profile, scenario: str) -> list[profiles.CellSpec]:
    return [c for c in prof.cells if c.scenario == scenario]


def test_builtin_profiles_build_with_unique_safe_ids() -> None:
    for name in ("quick", "standard", "full"):
        prof = profiles.read(name)
        ids = [c.cell_id for c in prof.cells]
        assert len(ids) == len(set(ids)), name
        for cid in ids:
            assert all(ch.isalnum() or ch in "._-" for ch in cid), cid
        # Deterministic: --resume rebuilds the same ids from the manifest's copy of the profile.
        assert [c.cell_id for c in build(prof.data).cells] == ids


def test_standard_profile_covers_issue_4_and_5() -> None:
    prof = profiles.read("standard")
    assert prof.data["trials"] == 3
    conc = _points(prof, "concurrency")
    assert {c.params.connections for c in conc} == {1, 10, 100, 1000}
    assert {c.params.size for c in conc} == {64}
    size = _points(prof, "size")
    assert {c.params.size for c in size} == {64, 1024, 16384, 262144}
    assert {c.params.connections for c in size} == {10}
    per = _points(prof, "per-request")
    assert {c.params.connections for c in per} == {1, 10, 100}
    assert {c.params.mode for c in per} == {"per-request"}
    opened = _points(prof, "open-loop")
    assert {c.params.rate_fraction for c in opened} == {0.25, 0.5, 0.75}
    assert all(c.ref_point for c in opened)
    assert {c.placement for c in _points(prof, "placement")} == {"split", "shared"}
    # issue 5: a throughput cell with and without the counter for every server that keeps one
    sc = _points(prof, "shared-counter")
    for server in (n for n, spec in SERVERS.items() if spec.counter_modes):
        modes = {c.params.shared_counter for c in sc if c.server == server}
        assert None in modes, (server, modes)
        assert len(modes) >= 2, (server, modes)
    assert {"naive", "shm", "pipe"} <= {c.params.shared_counter for c in sc}


def test_standard_profile_has_issue_21s_like_for_like_and_at_load_cells() -> None:
    prof = profiles.read("standard")
    sc = _points(prof, "shared-counter")
    # a message per echo against the same work with no IPC; a mutex against a plain global
    assert {"naive", "message"} <= {c.params.shared_counter for c in sc if c.server == "process"}
    assert {"lock", "global"} <= {c.params.shared_counter for c in sc if c.server == "thread"}
    at = _points(prof, "at-load")
    assert {c.server for c in at} == set(prof.data["servers"])
    assert {c.params.connections for c in at} == {10, 100, 1000}
    # one fixed offered rate for every server: no closed-loop reference, open loop
    assert len({c.params.rate for c in at}) == 1
    assert all(c.params.rate for c in at)
    assert all(c.ref_point is None and c.params.load == "open" for c in at)
    assert all(c.load.rate is None for c in at)  # aimed by the runner, like every open loop
    for c in at:  # a pool gets a worker per connection: else it would serve 4 of them
        if c.server in ("prefork", "threadpool"):
            assert c.server_args[-2:] == ("--workers", str(c.params.connections)), c.server_args
    # the fixed rate is part of a cell's identity: two rates are two cells
    two = build(
        {
            "trials": 1,
            "servers": ["uvloop"],
            "scenarios": [{"name": "at-load", "connections": [10], "rates": [1000, 2000]}],
        }
    )
    assert len({c.cell_id for c in two.cells}) == 2
    with pytest.raises(ProfileError, match="rates only applies to the at-load"):
        build(
            {
                "servers": ["uvloop"],
                "scenarios": [{"name": "concurrency", "connections": [1], "rates": [10]}],
            }
        )


def test_order_is_trial_major_interleaved_and_open_loop_last() -> None:
    prof = build(
        {
            "name": "t",
            "trials": 2,
            "servers": ["process", "thread", "uvloop"],
            "scenarios": [
                {"name": "concurrency", "connections": [1, 10]},
                {"name": "open-loop", "connections": [10], "rate_fractions": [0.5]},
            ],
        }
    )
    cells = list(prof.cells)
    closed = [c for c in cells if c.params.load == "closed"]
    assert cells[: len(closed)] == closed  # every open-loop cell after every closed one
    assert [c.trial for c in closed] == [1] * 6 + [2] * 6
    assert [c.server for c in closed[:3]] == ["process", "thread", "uvloop"]  # A, B, C, ...
    assert [c.server for c in closed[3:6]] == ["process", "thread", "uvloop"]
    ref = {profiles.closed_ref_key(c) for c in closed if c.params.connections == 10}
    for c in cells[len(closed) :]:
        assert c.ref_point in ref
        assert c.params.rate is None  # measured in the run


def test_shared_counter_args_and_ids() -> None:
    prof = build(
        {
            "servers": ["process", "thread", "inetd"],
            "trials": 1,
            "scenarios": [
                {
                    "name": "shared-counter",
                    "counter_modes": {"inetd": ["pipe"]},
                    "server_args": {"inetd": ["--handler", "python"]},
                }
            ],
        }
    )
    by = {(c.server, c.params.shared_counter): c for c in prof.cells}
    assert set(by) == {
        ("process", None),
        ("process", "naive"),
        ("process", "shm"),
        ("process", "pipe"),
        ("thread", None),
        ("thread", "lock"),
        ("inetd", None),
        ("inetd", "pipe"),
    }
    assert by["process", "shm"].server_args == ("--shared-counter", "shm")
    assert by["inetd", "pipe"].server_args == ("--handler", "python", "--shared-counter", "pipe")
    assert by["process", None].server_args == ()
    assert by["process", "shm"].cell_id != by["process", "pipe"].cell_id


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"scenarios": [{"name": "nope"}]}, "unknown scenario"),
        ({"scenarios": [{"name": "concurrency"}]}, "connections"),
        ({"servers": ["apache"], "scenarios": [{"name": "placement"}]}, "unknown server"),
        ({"trials": 0, "scenarios": [{"name": "placement"}]}, "trials"),
        ({"colour": 1, "scenarios": [{"name": "placement"}]}, "unknown key"),
        ({"trials": "3", "scenarios": [{"name": "placement"}]}, r"profile.trials: expected int"),
        ({"scenarios": [{"name": "size", "size": ["big"]}]}, r"size\[0\]: expected int"),
        (
            {"scenarios": [{"name": "open-loop", "connections": [7]}]},
            "no closed-loop cell",
        ),
        ({"scenarios": []}, "at least one"),
        # the load generator's limits, refused before any cell runs (not by every cell)
        ({"scenarios": [{"name": "size", "size": [2 << 20]}]}, "over the load generator's"),
        (
            {"scenarios": [{"name": "concurrency", "connections": [20_000]}]},
            "over the load generator's 10,000",
        ),
        # every other check the load generator makes of a load, from the same function
        (
            {"duration_s": 4000, "scenarios": [{"name": "placement"}]},
            r"load generator would refuse it: --duration must be in \(0, 3600\]",
        ),
        (
            {"timeout_s": 500, "scenarios": [{"name": "placement"}]},
            "load generator would refuse it: --timeout",
        ),
    ],
)
def test_bad_profiles_are_one_clear_error(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ProfileError, match=needle):
        build(data)


def test_unpinned_collapses_placements() -> None:
    prof = build(
        {"trials": 1, "servers": ["thread"], "scenarios": [{"name": "placement"}]}, unpinned=True
    )
    assert [c.placement for c in prof.cells] == ["unpinned"]


def test_counter_check_verdicts() -> None:
    assert counter_check(None, None, 10) == (None, None)
    why, note = counter_check("naive", {"bytes": 0}, 640)
    assert why is None
    assert note is not None
    assert "0 bytes" in note
    assert "640 bytes" in note
    why, note = counter_check("shm", {"bytes": 600}, 640, abandoned_max=128)
    assert why is not None
    assert "600" in why
    assert "640" in why
    assert "lost" in why
    why, note = counter_check("pipe", {"bytes": 640, "updates": 10}, 640)
    assert why is None
    assert note is not None
    assert "counted 640 bytes" in note
    # A pool server echoing to connections the client already closed: counted, not lost.
    why, note = counter_check("lock", {"bytes": 768}, 640, abandoned_max=128)
    assert why is None
    assert note is not None
    assert "abandoned" in note
    why, _ = counter_check("lock", {"bytes": 769}, 640, abandoned_max=128)
    assert why is not None
    assert "over" in why
    assert "STATS" in (counter_check("lock", None, 640)[0] or "")


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--profile", "no-such-profile"],
        ["run", "--profile", "quick", "--server-cpus", "0", "--client-cpus", "0"],
        ["run", "--profile", "quick", "--server-cpus", "x"],
        ["run", "--resume", "/nonexistent/run"],
        ["show-profile", "no-such-profile"],
    ],
)
def test_cli_usage_errors_exit_2_with_one_line(argv: list[str], tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", *argv, "--out", str(tmp_path)]
        if argv[0] == "run"
        else [sys.executable, "-m", "bench", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert (lines and lines[-1].startswith(("bench:", "usage:"))) or "error:" in lines[-1]
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())  # nothing started, nothing written


def test_show_profile_refuses_what_the_load_generator_cannot_do(tmp_path: Path) -> None:
    bad = tmp_path / "big.toml"
    bad.write_text('trials = 1\n[[scenarios]]\nname = "size"\nsize = [2097152]\n')
    done = subprocess.run(
        [sys.executable, "-m", "bench", "show-profile", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "1,048,576 bytes" in done.stderr


def test_the_cores_sweep_runs_only_what_leaves_the_client_as_many_cpus() -> None:
    from bench.cell import CpuPlan  # noqa: PLC0415
    from bench.runner import fit_cores  # noqa: PLC0415

    prof = build(
        {
            "trials": 1,
            "scenarios": [
                {"name": "cores"},
                {"name": "concurrency", "connections": [1], "servers": ["process"]},
            ],
        }
    )
    sweep = [c for c in prof.cells if c.scenario == "cores"]
    assert {c.server_cpus for c in sweep} == {1, 2, 4, 8, 16}
    # two CPUs: one point is not a sweep, so all of it is skipped, in one line that says why
    todo, lines = fit_cores(list(prof.cells), CpuPlan((0,), (1,)))
    assert [c.scenario for c in todo] == ["concurrency"]
    assert len(lines) == 1
    assert "2 usable CPUs" in lines[0]
    # eight CPUs: the server on 1, 2 and 4 with as many left for the load generator
    todo, lines = fit_cores(list(prof.cells), CpuPlan((0,), tuple(range(1, 8))))
    assert {c.server_cpus for c in todo if c.scenario == "cores"} == {1, 2, 4}
    assert lines
    assert "8, 16" in lines[0]
    plan = CpuPlan((0,), tuple(range(1, 8)))
    assert plan.for_cell("split", 4) == ((0, 1, 2, 3), (4, 5, 6, 7))
    assert plan.for_cell("split", None) == ((0,), tuple(range(1, 8)))


def test_the_reference_runs_profile_still_names_its_cells() -> None:
    """`--resume` and `make compare` find cells by id: the committed reference run's profile,
    read by today's code, names every cell file the run wrote (issue 22: the typed read must
    digest a rate as 5000.0, as it always has, not 5000)."""
    from records import schema  # noqa: PLC0415 - this test alone reads a run

    ref = max((REPO / "results" / "reference").iterdir())
    manifest = schema.read_manifest(ref / "manifest.json")
    ids = {c.cell_id for c in build(manifest.profile).cells}
    files = {p.stem for p in (ref / "cells").glob("*.json")}
    assert files
    assert files <= ids, sorted(files - ids)[:5]


def test_the_link_profile_runs_every_server_at_every_round_trip_in_both_modes() -> None:
    prof = profiles.read("link")
    cells = [c for c in prof.cells if c.trial == 1]
    assert {c.params.rtt_us for c in cells} == {None, 1000, 10000, 50000}  # None: loopback
    assert {c.params.mode for c in cells} == {"per-request", "persistent"}
    assert len(cells) == len(prof.data["servers"]) * 4 * 2
    assert all(c.params.load == "open" and c.params.rate == 400.0 for c in cells)
    ids = {c.cell_id for c in cells}
    assert any("_perreq_rtt50ms_" in i for i in ids)
    assert prof.budget_s() < 600  # the issue's 10 minutes, before the link's own calibration
    with pytest.raises(ProfileError, match="only apply to the link scenario"):
        build({"scenarios": [{"name": "concurrency", "connections": [1], "rtts_ms": [10]}]})
