"""Functions that run in multiprocessing children and in threads.

They live in a module of their own, at module level, because the spawn and forkserver start
methods import the target by name in a fresh interpreter: a closure or a function defined in a
test file would not be importable there (and importing a bench_*.py file would drag pytest in).
"""

from __future__ import annotations

import queue
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue as MpQueue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier as MpBarrier
from typing import Any

from microbench.children import detach_and_guard
from microbench.placement import pin_thread


def noop() -> None:
    """The child of a start/join measurement does nothing: the figure is creation and reap."""


def mp_pipe_echo(conn: Connection, parent_pid: int, cpu: int) -> None:
    """Echo byte strings on a multiprocessing Pipe until an empty message (or EOF) arrives.

    The empty message is the stop signal because EOF alone cannot be relied on: a fork child
    inherits the parent's end of the Pipe too, so closing it in the parent closes nothing.
    """
    detach_and_guard(parent_pid, cpu)
    try:
        while data := conn.recv_bytes():
            conn.send_bytes(data)
    except EOFError:
        pass
    finally:
        conn.close()


def mp_queue_echo(inbox: MpQueue[Any], outbox: MpQueue[Any], parent_pid: int, cpu: int) -> None:
    """Echo items from one multiprocessing Queue to another until a None arrives."""
    detach_and_guard(parent_pid, cpu)
    while (item := inbox.get()) is not None:
        outbox.put(item)


def thread_queue_echo(
    inbox: queue.Queue[bytes | None], outbox: queue.Queue[bytes], cpu: int
) -> None:
    """Echo items between two queue.Queue objects in a thread pinned to `cpu`."""
    pin_thread(cpu)
    while (item := inbox.get()) is not None:
        outbox.put(item)


def shm_counter_worker(
    counter: Synchronized[int],
    barrier: MpBarrier,
    times: Any,  # a RawArray('q'): [start0, end0, start1, end1, ...] in perf_counter_ns
    index: int,
    increments: int,
    parent_pid: int,
    cpu: int,
) -> None:
    """Add 1 to a shared-memory counter `increments` times, each under the process lock."""
    detach_and_guard(parent_pid, cpu)
    lock = counter.get_lock()
    barrier.wait()  # all workers start together, so two of them really contend
    start = time.perf_counter_ns()  # CLOCK_MONOTONIC: comparable across processes
    for _ in range(increments):
        with lock:
            counter.value += 1
    times[2 * index] = start
    times[2 * index + 1] = time.perf_counter_ns()


def thread_counter_worker(
    box: list[int],
    lock: threading.Lock,
    barrier: threading.Barrier,
    times: list[int],
    index: int,
    increments: int,
    cpu: int,
) -> None:
    """Add 1 to a counter shared by threads `increments` times, each under a threading.Lock."""
    pin_thread(cpu)
    barrier.wait()
    start = time.perf_counter_ns()
    for _ in range(increments):
        with lock:
            box[0] += 1
    times[2 * index] = start
    times[2 * index + 1] = time.perf_counter_ns()
