"""The microbenchmark suite runs end to end (fast mode) and its JSON reads back.

`python -m microbench run --out DIR --fast` runs as a real subprocess: the pytest-benchmark suite
(which forks, spawns, pins and talks over real pipes and sockets) and the C floor. The test
checks what a reader of the run directory relies on, through the one loader the analysis uses:
every expected figure is there, per operation and positive, with its placement; a corrupt or
foreign file is refused with a message naming it; nothing the run started is left behind.
It never checks how fast anything was: the machine is shared and noisy.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from microbench.placement import allowed_cpus
from records.micro import C_FILE, PY_FILE, MicrobenchError, MicroResult, read_microbench

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 90  # fast mode takes ~5-10 s here; far above that, but bounded

PY_ONE_ENDED = [
    "fork_wait.small_parent",
    "fork_wait.heap_100mb",
    "fork_wait.pytest_parent",
    "fork_exec_wait.true",
    "posix_spawn.true",
    "subprocess_run.true",
    "mp_start_join.fork",
    "mp_start_join.forkserver",
    "mp_start_join.spawn",
    "thread_start_join",
    "asyncio_task.default",
    "asyncio_task.uvloop",
    "rtt.asyncio_queue.default",
    "rtt.asyncio_queue.uvloop",
    "counter.shm_lock.1w",
    "counter.thread_lock.1w",
    "counter.asyncio_nolock.2w",
    "counter.thread_plain.1w",  # issue 21: what a thread does to share a count
]
PY_TWO_ENDED = [
    "rtt.pipe",
    "rtt.socketpair",
    "rtt.mp_pipe",
    "rtt.mp_queue",
    "rtt.thread_queue",
    "counter.shm_lock.2w",
    "counter.thread_lock.2w",
    "rtt.thread_pipe",  # issue 21: the same pipe between threads
    "counter.pipe_message.1w",  # ... and what a process does to share a count
]
C_ONE_ENDED = [
    "fork_wait.small_parent",
    "fork_wait.heap_100mb",
    "posix_spawn.true",
    "counter.thread_plain.1w",
]
# issue 21: the same mechanisms between threads and between processes, in C
C_TWO_ENDED = [
    "rtt.pipe",
    "rtt.thread_pipe",
    "counter.thread_lock.2w",
    "counter.shm_lock.2w",
    "counter.pipe_message.1w",
]


def placements() -> list[str]:
    return ["shared", "split"] if len(allowed_cpus()) >= 2 else ["shared"]


def expected(one_ended: list[str], two_ended: list[str]) -> set[str]:
    return set(one_ended) | {f"{op}[{p}]" for op in two_ended for p in placements()}


def leftovers(tag: str) -> list[str]:
    """Processes that still carry this run's environment tag: anything the run started."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.environ().get("MICROBENCH_TEST_TAG") == tag:
                found.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def run_cli(args: list[str], tag: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run `python -m microbench ...` in its own session; kill its group if it overruns."""
    env = {**os.environ, "MICROBENCH_TEST_TAG": tag}
    proc = subprocess.Popen(
        [sys.executable, "-m", "microbench", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One fast run for the whole module (it is the expensive part): its dir and its stderr."""
    if shutil.which("cc"):  # as `make native`: build the C floor when there is a compiler
        built = subprocess.run(
            ["make", "--no-print-directory", "-C", str(ROOT / "microbench" / "c")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert built.returncode == 0, built.stderr
    out = tmp_path_factory.mktemp("microbench") / "run"
    tag = uuid.uuid4().hex
    done = run_cli(["run", "--out", str(out), "--fast"], tag, RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert leftovers(tag) == []
    return out, done.stderr


def by_name(results: list[MicroResult], language: str) -> dict[str, MicroResult]:
    return {r.name: r for r in results if r.language == language}


@pytest.mark.slow
def test_fast_run_has_every_python_figure(fast_run: tuple[Path, str]) -> None:
    out, _ = fast_run
    python = by_name(read_microbench(out), "python")
    assert set(python) == expected(PY_ONE_ENDED, PY_TWO_ENDED)  # and no 1 GB parent in --fast
    for name, r in python.items():
        assert 0 < r.min_us <= r.median_us <= r.max_us, name
        assert r.stddev_us >= 0, name
        assert r.rounds >= 3, name
        assert r.batch >= 1, name
        assert r.cpus, name
        assert set(r.cpus) <= set(allowed_cpus()), name
        if name.endswith("[split]"):
            assert r.placement == "split", name
            assert len(r.cpus) == 2, name
        elif name.endswith("[shared]"):
            assert r.placement == "shared", name
            assert len(r.cpus) == 1, name
        else:
            assert r.placement == "n/a", name
    assert {r.group for r in python.values()} == {"process-control", "ipc", "shared-counter"}


@pytest.mark.slow
def test_fast_run_has_the_c_floor_or_says_why_not(fast_run: tuple[Path, str]) -> None:
    out, stderr = fast_run
    c = by_name(read_microbench(out), "c")
    doc = json.loads((out / C_FILE).read_text(encoding="utf-8"))
    if shutil.which("cc"):
        assert set(c) == expected(C_ONE_ENDED, C_TWO_ENDED)
        for name, r in c.items():
            assert 0 < r.min_us <= r.median_us <= r.max_us, name
            assert r.rounds >= 3, name
        assert doc["notes"] == []
    else:
        assert c == {}
        assert "not built" in stderr
        assert doc["notes"]


@pytest.mark.slow
def test_corrupt_or_foreign_files_are_refused(fast_run: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = fast_run
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    py_text = (out / PY_FILE).read_text(encoding="utf-8")

    (broken / PY_FILE).write_text(py_text[: len(py_text) // 2], encoding="utf-8")
    with pytest.raises(MicrobenchError, match=r"microbench\.json: cannot read"):
        read_microbench(broken)

    doc = json.loads(py_text)
    doc["benchmarks"][0]["stats"]["median"] = "fast"
    (broken / PY_FILE).write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(MicrobenchError, match=r"benchmarks\[0\]\.stats\.median: expected float"):
        read_microbench(broken)

    (broken / PY_FILE).write_text(py_text, encoding="utf-8")
    (broken / C_FILE).write_text(json.dumps({"format": "something else"}), encoding="utf-8")
    with pytest.raises(MicrobenchError, match=r"microbench_c\.json: not a C microbenchmark"):
        read_microbench(broken)

    with pytest.raises(MicrobenchError, match="no microbenchmark results"):
        read_microbench(tmp_path / "nowhere")


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    missing_out = run_cli(["run"], tag, timeout_s=30)
    assert missing_out.returncode == 2
    assert "--out" in missing_out.stderr
    a_file = tmp_path / "file"
    a_file.write_text("x", encoding="utf-8")
    not_a_dir = run_cli(["run", "--out", str(a_file)], tag, timeout_s=30)
    assert not_a_dir.returncode == 2
    assert not_a_dir.stderr.strip().splitlines() == [
        f"microbench: --out {a_file} exists and is not a directory"
    ]
    assert leftovers(tag) == []


@pytest.mark.slow
def test_show_prints_each_figure_once(fast_run: tuple[Path, str]) -> None:
    out, _ = fast_run
    shown = run_cli(["show", str(out)], uuid.uuid4().hex, timeout_s=30)
    assert shown.returncode == 0, shown.stderr
    rows = [line.split()[1] for line in shown.stdout.splitlines()[2:]]
    assert sorted(rows) == sorted({r.name for r in read_microbench(out)})


def test_files_in_the_first_placement_words_read_in_the_suites_words(tmp_path: Path) -> None:
    # tests/data holds a run written before the suite had one placement vocabulary
    # ("same-cpu"/"cross-cpu", C format 1): it reads as "shared"/"split", figures untouched.
    old = Path(__file__).parent / "data" / "analysis-run"
    assert '"cross-cpu"' in (old / PY_FILE).read_text()
    results = read_microbench(old)
    by_name = {(r.name, r.language): r for r in results}
    assert {r.placement for r in results} == {"shared", "split", "n/a"}
    assert not any("cpu]" in r.name for r in results)
    pipe = by_name["rtt.pipe[split]", "c"]
    raw = json.loads((old / C_FILE).read_text())
    assert raw["format_version"] == 1
    first = next(x for x in raw["results"] if x["name"] == "rtt.pipe[cross-cpu]")
    assert pipe.median_us == first["median_us"]
    assert pipe.placement == "split"
    # A format this version does not know is refused, naming the versions it reads.
    (tmp_path / PY_FILE).write_text((old / PY_FILE).read_text())
    (tmp_path / C_FILE).write_text(json.dumps({**raw, "format_version": 3}))
    with pytest.raises(MicrobenchError, match=r"format_version 3 .* \[1, 2\]"):
        read_microbench(tmp_path)
