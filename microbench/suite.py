"""`python -m microbench run`: the pytest-benchmark suite, then the C floor, into a run dir.

The suite runs as a separate pytest process (pytest's `testpaths` point at tests/, so this
package's `bench_*.py` files are named explicitly), in its own session so that an interrupted
run can end it and everything it started by process group. Its JSON is written under a
temporary name and renamed into place, so a reader sees a complete `microbench.json` or none.

The C reference programs (microbench/c, built by `make native`) run next, pinned like the
Python benchmarks; their figures go to `microbench_c.json`. No build is a note, not a failure.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from microbench.children import PARENT_ENV, run_json_child
from microbench.placement import allowed_cpus, home_cpu, name_with, two_ended
from records.micro import C_FILE, PY_FILE, c_document
from records.schema import MicroPlacement, write_json_atomic

PACKAGE = Path(__file__).resolve().parent
PROJECT = PACKAGE.parent
C_BIN = PACKAGE / "c" / "bin"

PYTEST_TIMEOUT_S = {True: 120.0, False: 600.0}  # fast / normal: far above the expected time
C_TIMEOUT_S = 120.0


def note(message: str) -> None:
    print(f"microbench: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- Python suite


def pytest_argv(json_path: Path, fast: bool) -> list[str]:
    argv = [sys.executable, "-m", "pytest", str(PACKAGE)]
    argv += ["--rootdir", str(PROJECT), "-o", "python_files=bench_*.py", "-p", "no:cacheprovider"]
    argv += ["-q", f"--benchmark-json={json_path}", "--benchmark-sort=name"]
    argv += ["--benchmark-columns=min,median,max,stddev,rounds,iterations"]
    if fast:
        argv.append("--microbench-fast")
    return argv


def run_python_suite(out: Path, fast: bool) -> bool:
    """Run the suite; keep whatever JSON it wrote, even when some benchmark failed."""
    partial = out / f".{PY_FILE}.partial"
    partial.unlink(missing_ok=True)
    env = {**os.environ, PARENT_ENV: str(os.getpid())}  # the suite dies with this process
    proc = subprocess.Popen(
        pytest_argv(partial, fast), cwd=PROJECT, env=env, start_new_session=True
    )
    try:
        returncode = proc.wait(timeout=PYTEST_TIMEOUT_S[fast])
    except KeyboardInterrupt:
        # Left under its temporary name: a resumed run sees no microbench.json and reruns.
        note(f"interrupted: what completed is kept in {partial}")
        raise
    except subprocess.TimeoutExpired:
        note(f"the pytest suite ran over {PYTEST_TIMEOUT_S[fast]:.0f} s: stopped")
        returncode = -1
    finally:
        _end_group(proc)
    if partial.exists():
        try:
            json.loads(partial.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            note(f"pytest-benchmark wrote an unreadable {partial.name}: {exc}")
            return False
        os.replace(partial, out / PY_FILE)
    else:
        note(f"the pytest suite wrote no {PY_FILE}")
        return False
    if returncode != 0:
        note(f"the pytest suite exited {returncode}: {PY_FILE} holds what did complete")
    return returncode == 0


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """Interrupt, then kill, the suite's process group if it is still running; then reap."""
    if proc.poll() is not None:
        return
    for sig, grace_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            # SIGTERM first: the suite turns it into KeyboardInterrupt (microbench/conftest.py),
            # so its finally blocks end and reap the children they started.
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


# --------------------------------------------------------------------------- C floor


@dataclass(frozen=True, slots=True)
class CRun:
    op: str
    group: str
    placement: MicroPlacement
    cpus: tuple[int, ...]
    what: str
    argv: tuple[str, ...]

    @property
    def name(self) -> str:
        return name_with(self.op, self.placement)


def c_plan(fast: bool) -> list[CRun]:
    """What the C floor measures: the same operations and placements as the Python suite."""
    cpu = home_cpu()
    rounds = "5" if fast else "15"
    fork = str(C_BIN / "fork_wait")
    plan = [
        CRun(
            "fork_wait.small_parent",
            "process-control",
            "n/a",
            (cpu,),
            "C fork + _exit + waitpid from a small parent",
            (fork, "0", rounds, "20" if fast else "50", str(cpu)),
        ),
        CRun(
            "fork_wait.heap_100mb",
            "process-control",
            "n/a",
            (cpu,),
            "C fork + _exit + waitpid, parent has 100 MiB touched",
            (fork, "100", rounds, "5" if fast else "10", str(cpu)),
        ),
    ]
    if not fast:
        plan.append(
            CRun(
                "fork_wait.heap_1gb",
                "process-control",
                "n/a",
                (cpu,),
                "C fork + _exit + waitpid, parent has 1 GiB touched",
                (fork, "1024", "10", "3", str(cpu)),
            )
        )
    plan.append(
        CRun(
            "posix_spawn.true",
            "process-control",
            "n/a",
            (cpu,),
            "C posix_spawn /bin/true + waitpid",
            (str(C_BIN / "spawn_true"), rounds, "10" if fast else "20", str(cpu)),
        )
    )
    for p in two_ended():
        plan.append(
            CRun(
                "rtt.pipe",
                "ipc",
                p.name,
                tuple(p.cpus),
                "C 1-byte round trip to a forked echo child over two pipes",
                (
                    str(C_BIN / "pipe_rtt"),
                    rounds,
                    "200" if fast else "500",
                    str(p.parent_cpu),
                    str(p.child_cpu),
                ),
            )
        )
    # issue 21: like for like. The same mechanism between two threads and two processes (a
    # pipe, a locked counter), and what each model must do to share a count (a thread adds to
    # a variable it shares; a process sends a message per update). The ops are the Python
    # suite's own names, so each C figure sits beside its Python twin.
    share = str(C_BIN / "share")
    shapes = [
        (
            "rtt.thread_pipe",
            "pipe_thread",
            "200" if fast else "500",
            "C 1-byte round trip to an echo thread over two pipes",
        ),
        (
            "counter.thread_lock.2w",
            "mutex_thread",
            "20000" if fast else "100000",
            "C 2 threads: increments under one pthread mutex",
        ),
        (
            "counter.shm_lock.2w",
            "mutex_process",
            "20000" if fast else "100000",
            "C 2 processes: increments under a process-shared pthread mutex in a shared mapping",
        ),
        (
            "counter.pipe_message.1w",
            "pipe_message",
            "20000" if fast else "100000",
            "C a child process sends one 16-byte record per increment; the parent sums them",
        ),
    ]
    for p in two_ended():
        for op, mode, batch, what in shapes:
            argv = (share, mode, rounds, batch, str(p.parent_cpu), str(p.child_cpu))
            plan.append(
                CRun(
                    op,
                    "ipc" if op.startswith("rtt") else "shared-counter",
                    p.name,
                    tuple(p.cpus),
                    what,
                    argv,
                )
            )
    plan.append(
        CRun(
            "counter.thread_plain.1w",
            "shared-counter",
            "n/a",
            (cpu,),
            "C 1 thread adds to a variable it shares (volatile: a load and a store each)",
            (share, "plain_thread", rounds, "1000000", str(cpu), str(cpu)),
        )
    )
    return plan


def run_c_floor(out: Path, fast: bool) -> bool:
    """Run every built C program; write what they measured. False if one of them failed."""
    notes: list[str] = []
    results: list[dict[str, Any]] = []
    ok = True
    plan = c_plan(fast)
    missing = sorted({Path(r.argv[0]).name for r in plan if not Path(r.argv[0]).exists()})
    if missing:
        msg = f"C reference not built ({', '.join(missing)} missing; `make native` builds it)"
        note(f"{msg}: skipping those C figures")
        notes.append(msg)
    for run in plan:
        if not Path(run.argv[0]).exists():
            continue
        try:
            figures = run_json_child(list(run.argv), timeout_s=C_TIMEOUT_S)
        except RuntimeError as exc:
            note(f"C {run.name}: {exc}")
            notes.append(f"{run.name} failed: {exc}")
            ok = False
            continue
        results.append(
            {
                "name": run.name,
                "op": run.op,
                "group": run.group,
                "language": "c",
                "placement": run.placement,
                "cpus": list(run.cpus),
                "what": run.what,
                "argv": [Path(run.argv[0]).name, *run.argv[1:]],
                "batch": figures["batch"],
                "samples_us": figures["samples_us"],
                "median_us": figures["median_us"],
                "min_us": figures["min_us"],
                "max_us": figures["max_us"],
            }
        )
    doc = c_document(
        results,
        notes,
        created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        fast=fast,
        allowed_cpus=list(allowed_cpus()),
    )
    write_json_atomic(out / C_FILE, doc)
    return ok


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_all(out: Path, fast: bool) -> int:
    """Both halves; exit status 0 only if both succeeded."""
    # Stopped by SIGTERM (e.g. by `make bench`'s runner) or SIGINT: unwind through the
    # `finally` blocks that end the suite's process group, never die with it still running.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic_ns()
    python_ok = run_python_suite(out, fast)
    c_ok = run_c_floor(out, fast)
    elapsed_s = (time.monotonic_ns() - start) / 1e9
    note(f"wrote {out / PY_FILE} and {out / C_FILE} in {elapsed_s:.1f} s")
    return 0 if python_ok and c_ok else 1
