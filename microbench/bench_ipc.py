"""IPC round trips, per operation: what it costs for two units of concurrency to talk.

CS:APP 12.1.2: processes cannot share state, so they must use explicit IPC, "often slow". Here a
1-byte message goes from one end to the other and back:

* between two processes over a pipe pair, a socketpair, a multiprocessing Pipe and a pair of
  multiprocessing Queues;
* between two threads over queue.Queue, and between two tasks over asyncio.Queue, for contrast;
* between two threads over the same pipe pair as the processes (issue 21: the same mechanism
  between threads and between processes, so the address space is the only difference).

Each two-ended figure is measured in both placements (placement.two_ended): both ends on one
CPU, where a round trip is two context switches, and one end per CPU, where each hop must also
wake the other CPU. Every round times `batch` round trips and reports the mean per round trip.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from microbench import workers
from microbench.children import forked_echo, reap
from microbench.placement import Pinning, home_cpu, pin_thread, pinned, two_ended
from microbench.recording import REPLAY, Effort, describe, on_fresh_loop, replay, timed

PLACEMENTS = two_ended()
IDS = [p.name for p in PLACEMENTS]


def _measure(
    benchmark: BenchmarkFixture,
    effort: Effort,
    round_trip: Callable[[], None],
    *,
    op: str,
    placement: Pinning,
    what: str,
) -> None:
    batch = effort.pick(fast=100, normal=200)
    describe(
        benchmark,
        op=op,
        group="ipc",
        placement=placement.name,
        cpus=placement.cpus,
        batch=batch,
        what=what,
        parent_cpu=placement.parent_cpu,
        child_cpu=placement.child_cpu,
        message_bytes=1,
    )
    timed(
        benchmark,
        round_trip,
        rounds=effort.pick(fast=5, normal=20),
        warmup_rounds=1,
        iterations=batch,
    )


# --------------------------------------------------------------------------- two processes


@pytest.mark.parametrize("kind", ["pipe", "socketpair"])
@pytest.mark.parametrize("placement", PLACEMENTS, ids=IDS)
def test_rtt_os_channel(
    benchmark: BenchmarkFixture,
    effort: Effort,
    placement: Pinning,
    kind: Literal["pipe", "socketpair"],
) -> None:
    with pinned(placement.parent_cpu), forked_echo(kind, placement.child_cpu) as ends:
        trip = ends.round_trip_pipe if kind == "pipe" else ends.round_trip_socket
        trip()  # the child is up and echoing before anything is timed
        what = "os.write/os.read on two pipes" if kind == "pipe" else "send/recv on a socketpair"
        _measure(
            benchmark,
            effort,
            trip,
            op=f"rtt.{kind}",
            placement=placement,
            what=f"1-byte round trip to a forked echo child: {what}",
        )


@contextmanager
def _mp_child(target: Callable[..., None], *args: Any) -> Iterator[multiprocessing.Process]:
    """Start a fork-context multiprocessing child; afterwards join it, or kill it by pid."""
    proc = multiprocessing.get_context("fork").Process(target=target, args=args)
    proc.start()
    try:
        yield proc  # type: ignore[misc]
    finally:
        proc.join(timeout=5)
        if proc.exitcode is None and proc.pid is not None:
            reap(proc.pid, timeout_s=0)
        proc.join(timeout=0)


@pytest.mark.parametrize("placement", PLACEMENTS, ids=IDS)
def test_rtt_mp_pipe(benchmark: BenchmarkFixture, effort: Effort, placement: Pinning) -> None:
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    try:
        with (
            pinned(placement.parent_cpu),
            _mp_child(workers.mp_pipe_echo, theirs, os.getpid(), placement.child_cpu),
        ):
            theirs.close()

            def trip() -> None:
                ours.send_bytes(b"x")
                if ours.recv_bytes() != b"x":
                    raise RuntimeError("multiprocessing Pipe echo returned the wrong bytes")

            trip()
            try:
                _measure(
                    benchmark,
                    effort,
                    trip,
                    op="rtt.mp_pipe",
                    placement=placement,
                    what="send_bytes/recv_bytes on a multiprocessing Pipe to a fork child",
                )
            finally:
                ours.send_bytes(b"")  # the stop signal: the child's loop ends
    finally:
        ours.close()
        theirs.close()


@pytest.mark.parametrize("placement", PLACEMENTS, ids=IDS)
def test_rtt_mp_queue(benchmark: BenchmarkFixture, effort: Effort, placement: Pinning) -> None:
    ctx = multiprocessing.get_context("fork")
    inbox: multiprocessing.Queue[bytes | None] = ctx.Queue()
    outbox: multiprocessing.Queue[bytes] = ctx.Queue()
    try:
        with (
            pinned(placement.parent_cpu),
            _mp_child(workers.mp_queue_echo, inbox, outbox, os.getpid(), placement.child_cpu),
        ):

            def trip() -> None:
                inbox.put(b"x")
                if outbox.get(timeout=10) != b"x":
                    raise RuntimeError("multiprocessing Queue echo returned the wrong item")

            trip()
            try:
                _measure(
                    benchmark,
                    effort,
                    trip,
                    op="rtt.mp_queue",
                    placement=placement,
                    what="put/get on two multiprocessing Queues (pickling, a feeder thread each)",
                )
            finally:
                inbox.put(None)  # the child's loop ends; join follows in _mp_child
    finally:
        for q in (inbox, outbox):
            q.close()
            q.join_thread()


# --------------------------------------------------------------------------- threads and tasks


@pytest.mark.parametrize("placement", PLACEMENTS, ids=IDS)
def test_rtt_thread_queue(benchmark: BenchmarkFixture, effort: Effort, placement: Pinning) -> None:
    inbox: queue.Queue[bytes | None] = queue.Queue()
    outbox: queue.Queue[bytes] = queue.Queue()
    echo = threading.Thread(
        target=workers.thread_queue_echo, args=(inbox, outbox, placement.child_cpu), daemon=True
    )
    with pinned(placement.parent_cpu):
        echo.start()
        try:

            def trip() -> None:
                inbox.put(b"x")
                if outbox.get(timeout=10) != b"x":
                    raise RuntimeError("thread echo returned the wrong item")

            trip()
            _measure(
                benchmark,
                effort,
                trip,
                op="rtt.thread_queue",
                placement=placement,
                what="put/get on two queue.Queue objects to an echo thread (GIL handoff included)",
            )
        finally:
            inbox.put(None)
            echo.join(timeout=10)


def _pipe_echo_thread(inbox: int, outbox: int, cpu: int) -> None:
    """Echo every byte from `inbox` to `outbox` until EOF, pinned to `cpu`."""
    pin_thread(cpu)
    while data := os.read(inbox, 1):
        os.write(outbox, data)


@pytest.mark.parametrize("placement", PLACEMENTS, ids=IDS)
def test_rtt_thread_pipe(benchmark: BenchmarkFixture, effort: Effort, placement: Pinning) -> None:
    """The pipe pair of test_rtt_os_channel, to a thread instead of a forked child. Each os.read
    and os.write releases the GIL, so the two threads wait in the kernel as processes would."""
    to_echo, from_main = os.pipe()
    to_main, from_echo = os.pipe()
    echo = threading.Thread(
        target=_pipe_echo_thread, args=(to_echo, from_echo, placement.child_cpu), daemon=True
    )
    try:
        with pinned(placement.parent_cpu):
            echo.start()

            def trip() -> None:
                os.write(from_main, b"x")
                if os.read(to_main, 1) != b"x":
                    raise RuntimeError("pipe echo thread returned the wrong byte")

            trip()
            _measure(
                benchmark,
                effort,
                trip,
                op="rtt.thread_pipe",
                placement=placement,
                what="1-byte round trip to an echo thread: os.write/os.read on two pipes",
            )
    finally:
        os.close(from_main)  # EOF: the echo thread's loop ends
        echo.join(timeout=10)
        for fd in (to_echo, to_main, from_echo):
            os.close(fd)


async def _queue_round_trips(rounds: int, batch: int) -> list[float]:
    """Per round trip ns between two tasks over a pair of asyncio.Queue, in the running loop."""
    inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
    outbox: asyncio.Queue[bytes] = asyncio.Queue()

    async def echo() -> None:
        while (item := await inbox.get()) is not None:
            outbox.put_nowait(item)

    echo_task = asyncio.get_running_loop().create_task(echo())
    per_op: list[float] = []
    try:
        for r in range(rounds + 1):  # round 0 is a warm-up
            start = time.perf_counter_ns()
            for _ in range(batch):
                inbox.put_nowait(b"x")
                if await outbox.get() != b"x":
                    raise RuntimeError("asyncio echo task returned the wrong item")
            elapsed = time.perf_counter_ns() - start
            if r:
                per_op.append(elapsed / batch)
    finally:
        inbox.put_nowait(None)
        await echo_task
    return per_op


@pytest.mark.benchmark(timer=REPLAY)
@pytest.mark.parametrize("loop_kind", ["default", "uvloop"])
def test_rtt_asyncio_queue(
    benchmark: BenchmarkFixture, effort: Effort, loop_kind: Literal["default", "uvloop"]
) -> None:
    batch = effort.pick(fast=500, normal=1000)
    describe(
        benchmark,
        op=f"rtt.asyncio_queue.{loop_kind}",
        group="ipc",
        placement="n/a",
        cpus=[home_cpu()],
        batch=batch,
        what=f"put/get on two asyncio.Queue objects to an echo task ({loop_kind} loop)",
        message_bytes=1,
        timer="perf_counter_ns inside the running loop, replayed",
    )
    rounds = effort.pick(fast=5, normal=20)
    with pinned(home_cpu()):
        per_op = on_fresh_loop(loop_kind, _queue_round_trips(rounds, batch))
    replay(benchmark, per_op)
