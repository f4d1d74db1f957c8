"""Incrementing one shared counter: what sharing state costs in each model (CS:APP 12.1.2).

Processes have separate address spaces, so a counter they share must live in explicitly shared
memory and be guarded by a lock that works across processes (multiprocessing.Value: shared
memory + a process lock). Threads share the address space and guard it with threading.Lock
(12.5). Tasks on one event loop only switch at `await`, so a plain global needs no lock at all.

issue 21 adds what each model must do to share a count when no lock is the question: a thread
adds to a variable it already shares (`counter.thread_plain`), while a process must send the
update as a message (`counter.pipe_message`: one 16-byte record per increment over a pipe, the
parent reading and summing, as servers/counter.py's `message` mode does per echo).

Each round starts its workers together (a barrier) and each worker adds 1 to the counter
`increments` times; the figure is the round's wall time (first start to last end, measured
with perf_counter_ns, which is CLOCK_MONOTONIC and so comparable across processes) divided by
the increments of all workers. Every round also checks the final count: a lost update fails
the benchmark, since a fast wrong counter is not a result.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import struct
import threading
import time
from multiprocessing.sharedctypes import RawArray
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from microbench import workers
from microbench.children import reap
from microbench.placement import Pinning, home_cpu, pinned, two_ended
from microbench.recording import REPLAY, Effort, describe, replay
from records.schema import MicroPlacement

# (workers, placement): one worker is uncontended; two contend on one CPU or across two.
SHAPES: list[tuple[int, Pinning]] = [(1, Pinning("n/a", home_cpu(), home_cpu()))]
SHAPES += [(2, p) for p in two_ended()]
SHAPE_IDS = [f"{n}w-{p.name}" for n, p in SHAPES]


def _worker_cpus(n: int, placement: Pinning) -> list[int]:
    return [placement.parent_cpu, placement.child_cpu][:n]


def _wall_per_increment(times: Any, n: int, total: int) -> float:
    starts = [times[2 * i] for i in range(n)]
    ends = [times[2 * i + 1] for i in range(n)]
    return float(max(ends) - min(starts)) / total


def _shm_round(n: int, placement: Pinning, increments: int) -> float:
    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value(ctypes.c_longlong, 0)  # shared memory + an RLock that works across forks
    barrier = ctx.Barrier(n)
    times = RawArray(ctypes.c_longlong, 2 * n)
    procs = [
        ctx.Process(
            target=workers.shm_counter_worker,
            args=(counter, barrier, times, i, increments, os.getpid(), cpu),
        )
        for i, cpu in enumerate(_worker_cpus(n, placement))
    ]
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=60)
    finally:
        for proc in procs:  # any still running after a failure: killed and reaped by pid
            if proc.pid is not None and proc.exitcode is None:
                reap(proc.pid, timeout_s=0)
    bad = [proc.exitcode for proc in procs if proc.exitcode != 0]
    if bad:
        raise RuntimeError(f"counter workers exited {bad}")
    if counter.value != n * increments:
        raise AssertionError(f"lost updates: counter {counter.value} != {n * increments}")
    return _wall_per_increment(times, n, n * increments)


def _thread_round(n: int, placement: Pinning, increments: int) -> float:
    box = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(n)
    times = [0] * (2 * n)
    threads = [
        threading.Thread(
            target=workers.thread_counter_worker,
            args=(box, lock, barrier, times, i, increments, cpu),
        )
        for i, cpu in enumerate(_worker_cpus(n, placement))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if box[0] != n * increments:
        raise AssertionError(f"lost updates: counter {box[0]} != {n * increments}")
    return _wall_per_increment(times, n, n * increments)


def _rounds(effort: Effort) -> int:
    return effort.pick(fast=4, normal=10)


def _increments(effort: Effort) -> int:
    return effort.pick(fast=5_000, normal=20_000)


def _describe(
    benchmark: BenchmarkFixture,
    op: str,
    n: int,
    placement: MicroPlacement,
    cpus: list[int],
    increments: int,
    what: str,
) -> None:
    describe(
        benchmark,
        op=f"{op}.{n}w",
        group="shared-counter",
        placement=placement,
        cpus=sorted(set(cpus)),
        batch=n * increments,
        what=what,
        workers=n,
        increments_per_worker=increments,
        per_op="round wall time / increments of all workers",
        timer="perf_counter_ns in the workers, replayed",
    )


@pytest.mark.benchmark(timer=REPLAY)
@pytest.mark.parametrize(("n", "placement"), SHAPES, ids=SHAPE_IDS)
def test_counter_shm_lock(
    benchmark: BenchmarkFixture, effort: Effort, n: int, placement: Pinning
) -> None:
    increments = _increments(effort)
    what = f"{n} fork process(es): `with value.get_lock(): value.value += 1` on shared memory"
    cpus = _worker_cpus(n, placement)
    _describe(benchmark, "counter.shm_lock", n, placement.name, cpus, increments, what)
    replay(benchmark, [_shm_round(n, placement, increments) for _ in range(_rounds(effort))])


@pytest.mark.benchmark(timer=REPLAY)
@pytest.mark.parametrize(("n", "placement"), SHAPES, ids=SHAPE_IDS)
def test_counter_thread_lock(
    benchmark: BenchmarkFixture, effort: Effort, n: int, placement: Pinning
) -> None:
    increments = _increments(effort)
    what = f"{n} thread(s): `with lock: box[0] += 1` under one threading.Lock"
    cpus = _worker_cpus(n, placement)
    _describe(benchmark, "counter.thread_lock", n, placement.name, cpus, increments, what)
    replay(benchmark, [_thread_round(n, placement, increments) for _ in range(_rounds(effort))])


async def _tasks_round(n: int, increments: int) -> float:
    """n tasks add to one plain variable with no lock; none awaits mid-update, so none is lost."""
    count = 0
    times = [0] * (2 * n)
    go = asyncio.Event()

    async def worker(index: int) -> None:
        nonlocal count
        await go.wait()
        times[2 * index] = time.perf_counter_ns()
        for _ in range(increments):
            count += 1
        times[2 * index + 1] = time.perf_counter_ns()

    tasks = [asyncio.get_running_loop().create_task(worker(i)) for i in range(n)]
    await asyncio.sleep(0)  # let every task reach go.wait(): the start is then simultaneous
    go.set()
    await asyncio.gather(*tasks)
    if count != n * increments:
        raise AssertionError(f"lost updates: counter {count} != {n * increments}")
    return _wall_per_increment(times, n, n * increments)


@pytest.mark.benchmark(timer=REPLAY)
def test_counter_asyncio_nolock(benchmark: BenchmarkFixture, effort: Effort) -> None:
    n, increments = 2, _increments(effort)
    what = "2 asyncio tasks: `count += 1` on a plain variable, no lock"
    _describe(benchmark, "counter.asyncio_nolock", n, "n/a", [home_cpu()], increments, what)

    async def rounds() -> list[float]:
        return [await _tasks_round(n, increments) for _ in range(_rounds(effort))]

    loop = asyncio.new_event_loop()
    try:
        with pinned(home_cpu()):
            per_op = loop.run_until_complete(rounds())
    finally:
        loop.close()
    replay(benchmark, per_op)


@pytest.mark.benchmark(timer=REPLAY)
def test_counter_thread_plain(benchmark: BenchmarkFixture, effort: Effort) -> None:
    """One thread adds to a variable the whole process shares: no lock, no kernel. (Two Python
    threads would never add at the same instant anyway: the GIL runs one at a time.)"""
    increments = _increments(effort)
    what = "1 thread: `box[0] += 1` on a list every thread of the process shares, no lock"
    _describe(benchmark, "counter.thread_plain", 1, "n/a", [home_cpu()], increments, what)

    def one_round() -> float:
        box = [0]
        start = time.perf_counter_ns()
        for _ in range(increments):
            box[0] += 1
        elapsed = time.perf_counter_ns() - start
        if box[0] != increments:
            raise AssertionError(f"lost updates: counter {box[0]} != {increments}")
        return elapsed / increments

    with pinned(home_cpu()):
        per_op = [one_round() for _ in range(_rounds(effort))]
    replay(benchmark, per_op)


def _message_round(placement: Pinning, increments: int) -> float:
    """A forked child sends one record per increment; the parent sums them until EOF."""
    record = struct.Struct("=QQ")  # servers/counter.py's (bytes, updates)
    rfd, wfd = os.pipe()
    go_r, go_w = os.pipe()  # the clock starts after the fork: a fork from pytest costs ms
    pid = os.fork()
    if pid == 0:  # the child: never returns into the benchmark
        code = 1
        try:
            os.close(rfd)
            os.sched_setaffinity(0, {placement.child_cpu})
            one = record.pack(1, 1)
            os.read(go_r, 1)
            for _ in range(increments):
                os.write(wfd, one)
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    os.close(go_r)
    start = time.perf_counter_ns()
    os.write(go_w, b"g")
    os.close(go_w)
    total, partial = 0, b""
    try:
        while data := os.read(rfd, 64 * 1024):
            data = partial + data
            whole = len(data) - len(data) % record.size
            total += sum(n for n, _ in record.iter_unpack(data[:whole]))
            partial = data[whole:]
        elapsed = time.perf_counter_ns() - start
    finally:
        os.close(rfd)
        reap(pid, timeout_s=10)
    if total != increments:
        raise AssertionError(f"lost messages: counted {total} != {increments}")
    return elapsed / increments


@pytest.mark.benchmark(timer=REPLAY)
@pytest.mark.parametrize("placement", two_ended(), ids=[p.name for p in two_ended()])
def test_counter_pipe_message(
    benchmark: BenchmarkFixture, effort: Effort, placement: Pinning
) -> None:
    increments = _increments(effort)
    what = "1 fork process sends `os.write(pipe, record)` per increment; the parent sums them"
    cpus = [placement.parent_cpu, placement.child_cpu]
    _describe(benchmark, "counter.pipe_message", 1, placement.name, cpus, increments, what)
    with pinned(placement.parent_cpu):
        per_op = [_message_round(placement, increments) for _ in range(_rounds(effort))]
    replay(benchmark, per_op)
