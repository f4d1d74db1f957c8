"""Process control costs, per operation: what CS:APP 12.1.2 means by "processes are slow".

Fig. 12.5 pays fork + (eventually) waitpid for every connection; an inetd-style server pays an
exec on top. Threads (12.3) and event-loop tasks (12.2) are the cheaper units of concurrency the
chapter compares them with, so they are measured here on the same terms:

* fork + _exit + waitpid from a small parent (a fresh `python -I -S` interpreter), from this
  pytest process as it is, and from small parents that touched 100 MB / 1 GB of heap: fork
  copies page tables, so its cost grows with the parent's resident memory;
* fork + exec of /bin/true + waitpid; os.posix_spawn; subprocess.run;
* multiprocessing Process start + join with the fork, forkserver and spawn start methods;
* threading.Thread start + join; asyncio task create + await on the default loop and uvloop.

Everything runs pinned to one CPU (children inherit it), recorded as placement "n/a".
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing import forkserver
from pathlib import Path
from typing import Any, Literal

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from microbench import workers
from microbench.children import reap, run_json_child
from microbench.placement import home_cpu, pinned
from microbench.recording import REPLAY, Effort, describe, on_fresh_loop, replay, timed

SMALL_PARENT = Path(__file__).with_name("small_parent.py")
TRUE = "/bin/true"


@pytest.fixture(autouse=True)
def _pin_home() -> object:
    """Run each benchmark, and the children it creates, on the home CPU."""
    with pinned(home_cpu()):
        yield


# --------------------------------------------------------------------------- fork + waitpid


CHILD_PARENTS = {  # heap the small parent touches before forking -> result name
    0: "fork_wait.small_parent",
    100: "fork_wait.heap_100mb",
    1024: "fork_wait.heap_1gb",
}


@pytest.mark.benchmark(timer=REPLAY)
@pytest.mark.parametrize("heap_mb", list(CHILD_PARENTS), ids=["small", "100mb", "1gb"])
def test_fork_wait_child_interpreter(
    benchmark: BenchmarkFixture, effort: Effort, heap_mb: int
) -> None:
    if heap_mb >= 1024 and effort.fast:
        pytest.skip("the 1 GB parent runs in normal mode only")
    rounds = effort.pick(fast=5, normal={0: 25, 100: 15}.get(heap_mb, 10))
    batch = effort.pick(fast=10, normal={0: 20, 100: 10}.get(heap_mb, 3))
    argv = [sys.executable, "-I", "-S", str(SMALL_PARENT)]
    argv += ["--heap-mb", str(heap_mb), "--rounds", str(rounds), "--batch", str(batch)]
    argv += ["--cpu", str(home_cpu())]
    figures = run_json_child(argv, timeout_s=120)
    describe(
        benchmark,
        op=CHILD_PARENTS[heap_mb],
        group="process-control",
        placement="n/a",
        cpus=[home_cpu()],
        batch=batch,
        what=f"fork + _exit + waitpid from a `python -I -S` parent with {heap_mb} MiB touched",
        heap_mb=heap_mb,
        parent_maxrss_kb=figures["maxrss_kb"],
        parent_modules=figures["modules_loaded"],
        timer="perf_counter_ns in the child interpreter, replayed",
    )
    replay(benchmark, figures["per_op_ns"])


def _fork_exit_wait() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)  # nothing else: no pytest teardown may run in the child
    os.waitpid(pid, 0)


def test_fork_wait_pytest_parent(benchmark: BenchmarkFixture, effort: Effort) -> None:
    batch = 10
    describe(
        benchmark,
        op="fork_wait.pytest_parent",
        group="process-control",
        placement="n/a",
        cpus=[home_cpu()],
        batch=batch,
        what="fork + _exit + waitpid from the pytest process as it is (pytest, asyncio, ...)",
        parent_modules=len(sys.modules),
        parent_maxrss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    )
    timed(
        benchmark,
        _fork_exit_wait,
        rounds=effort.pick(fast=5, normal=15),
        warmup_rounds=1,
        iterations=batch,
    )


# --------------------------------------------------------------------------- new programs


def _fork_exec_wait() -> None:
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(TRUE, ["true"])
        finally:
            os._exit(127)  # exec failed: never fall back into pytest
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{TRUE} exited with status {status}")


def _posix_spawn_wait() -> None:
    pid = os.posix_spawn(TRUE, ["true"], os.environ)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{TRUE} exited with status {status}")


def _subprocess_run() -> None:
    subprocess.run([TRUE], check=True)


NEW_PROGRAM: dict[str, tuple[Callable[[], None], str]] = {
    "fork_exec_wait.true": (_fork_exec_wait, "fork + execv /bin/true + waitpid, from pytest"),
    "posix_spawn.true": (_posix_spawn_wait, "os.posix_spawn /bin/true + waitpid, from pytest"),
    "subprocess_run.true": (_subprocess_run, "subprocess.run(['/bin/true']), from pytest"),
}


@pytest.mark.parametrize("op", list(NEW_PROGRAM))
def test_new_program(benchmark: BenchmarkFixture, effort: Effort, op: str) -> None:
    target, what = NEW_PROGRAM[op]
    batch = effort.pick(fast=5, normal=5)
    describe(
        benchmark,
        op=op,
        group="process-control",
        placement="n/a",
        cpus=[home_cpu()],
        batch=batch,
        what=what,
    )
    timed(
        benchmark, target, rounds=effort.pick(fast=5, normal=15), warmup_rounds=1, iterations=batch
    )


# --------------------------------------------------------------------------- multiprocessing

StartMethod = Literal["fork", "forkserver", "spawn"]


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_mp_start_join(benchmark: BenchmarkFixture, effort: Effort, method: StartMethod) -> None:
    ctx: Any = multiprocessing.get_context(method)  # typeshed types each method's context apart
    if method == "forkserver":
        # As forkserver is meant to be used: the server imports the target's module once, so
        # each child is a bare fork of it (without this, every child re-imports the module).
        ctx.set_forkserver_preload(["microbench.workers"])
    started: list[multiprocessing.process.BaseProcess] = []

    def start_join() -> None:
        proc = ctx.Process(target=workers.noop)
        started.append(proc)
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"{method} child exited {proc.exitcode}")

    slow = method == "spawn"  # a fresh interpreter that imports this package: ~0.1-0.5 s each
    batch = 1 if slow else effort.pick(fast=3, normal=5)
    rounds = effort.pick(fast=3, normal=8) if slow else effort.pick(fast=5, normal=15)
    describe(
        benchmark,
        op=f"mp_start_join.{method}",
        group="process-control",
        placement="n/a",
        cpus=[home_cpu()],
        batch=batch,
        what=f"multiprocessing Process(start method {method}) start + join of a no-op target",
        forkserver_preload=["microbench.workers"] if method == "forkserver" else [],
    )
    try:
        # The warm-up round starts the fork server (once per pytest process): not measured.
        timed(benchmark, start_join, rounds=rounds, warmup_rounds=1, iterations=batch)
    finally:
        for proc in started:  # after a failure mid-batch: end and reap by pid
            if proc.pid is not None and proc.exitcode is None:
                reap(proc.pid, timeout_s=2)
        if method == "forkserver":
            _stop_forkserver()


def _stop_forkserver() -> None:
    """End the fork server this test started (by its pid, via the stdlib's own stop)."""
    server = getattr(forkserver, "_forkserver", None)
    stop = getattr(server, "_stop", None)
    if callable(stop):
        stop()


# --------------------------------------------------------------------------- threads and tasks


def _thread_start_join() -> None:
    thread = threading.Thread(target=workers.noop)
    thread.start()
    thread.join()


def test_thread_start_join(benchmark: BenchmarkFixture, effort: Effort) -> None:
    batch = effort.pick(fast=20, normal=50)
    describe(
        benchmark,
        op="thread_start_join",
        group="process-control",
        placement="n/a",
        cpus=[home_cpu()],
        batch=batch,
        what="threading.Thread start + join of a no-op target",
    )
    timed(
        benchmark,
        _thread_start_join,
        rounds=effort.pick(fast=5, normal=25),
        warmup_rounds=1,
        iterations=batch,
    )


async def _nothing() -> None:
    return None


async def _task_batches(rounds: int, batch: int) -> list[float]:
    """Per-operation ns of create_task + await, timed inside the running loop."""
    loop = asyncio.get_running_loop()
    per_op: list[float] = []
    for r in range(rounds + 1):  # round 0 warms the loop up and is dropped
        start = time.perf_counter_ns()
        for _ in range(batch):
            await loop.create_task(_nothing())
        elapsed = time.perf_counter_ns() - start
        if r:
            per_op.append(elapsed / batch)
    return per_op


@pytest.mark.benchmark(timer=REPLAY)
@pytest.mark.parametrize("loop_kind", ["default", "uvloop"])
def test_asyncio_task(
    benchmark: BenchmarkFixture, effort: Effort, loop_kind: Literal["default", "uvloop"]
) -> None:
    batch = effort.pick(fast=500, normal=2000)
    describe(
        benchmark,
        op=f"asyncio_task.{loop_kind}",
        group="process-control",
        placement="n/a",
        cpus=[home_cpu()],
        batch=batch,
        what=f"create_task + await of a coroutine that returns at once ({loop_kind} loop)",
        timer="perf_counter_ns inside the running loop, replayed",
    )
    rounds = effort.pick(fast=5, normal=25)
    replay(benchmark, on_fresh_loop(loop_kind, _task_batches(rounds, batch)))
