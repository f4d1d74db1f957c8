"""The `--shared-counter` variants: one counter of echoed bytes shared by every connection.

CS:APP 12.1.2 says separate address spaces make sharing state hard; these variants show it. Each
chunk a server echoes adds its length to the counter (one shared update per chunk: the echo is a
byte stream, so a server knows chunks, not messages) and the server prints
`STATS bytes=<n> updates=<k>` when it stops.

* `global` (event loops, thread models) -- a plain global. An event loop is one thread, so no
  lock is needed. For threads it is the control of `lock`: the same work without the mutex.
  (CPython 3.11 switches threads only at calls and backward jumps, so `add`'s two increments
  are never interleaved under the GIL; C threads would lose updates here.)
* `lock` (thread models) -- a global guarded by a threading.Lock (CS:APP 12.5's mutex).
* `naive` (process models) -- a plain global too, but every forked child increments its own
  copy-on-write copy: the parent's copy, which it reports, stays 0.
* `shm` (process models) -- a MAP_SHARED anonymous mapping inherited across fork, guarded by a
  process-shared semaphore (multiprocessing.Lock), updated by every child per chunk.
* `pipe` (process models) -- each child counts privately and reports its totals to the parent
  in one record over a pipe when it ends; the parent sums. Message passing instead of sharing,
  batched: about one message per connection.
* `message` (process models) -- message passing without the batching: each child sends one
  16-byte record per chunk it echoes, and the parent's accept loop reads them as they come
  (it waits on the listening socket and the pipe together). What a count costs when the only
  way to share it is IPC; compare it with `naive`, the same work with no IPC at all, and with
  the thread server's `lock` against its `global`.
"""

from __future__ import annotations

import contextlib
import os

# Imports the forking parent does not need unless a counter uses them (mmap, struct, typing:
# each extension module is more mappings for every fork to copy, CS:APP 12.1.2) are made
# inside the counters that use them.
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    import struct
    from typing import Any


def _record() -> struct.Struct:
    """A pipe or shm record: (bytes, updates). 16 bytes < PIPE_BUF, so each write is atomic
    and records from concurrent children never interleave (POSIX write(2) on pipes)."""
    import struct  # noqa: PLC0415 - see the module's imports

    return struct.Struct("=QQ")


MODES = ("global", "lock", "naive", "shm", "pipe", "message")


class PlainCounter:
    """`global` and `naive`: two plain integers, no synchronisation at all."""

    def __init__(self) -> None:
        self.nbytes = 0
        self.updates = 0

    def add(self, n: int) -> None:
        self.nbytes += n
        self.updates += 1

    def child_done(self) -> None:
        """Nothing to report: a child's copy dies with it (that is the naive demonstration)."""

    def totals(self) -> tuple[int, int]:
        return self.nbytes, self.updates


class LockCounter(PlainCounter):
    """`lock`: the same integers, read-modify-written under one threading.Lock."""

    def __init__(self) -> None:
        super().__init__()
        import threading  # noqa: PLC0415 - only the thread models pay for threading

        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.nbytes += n
            self.updates += 1

    def totals(self) -> tuple[int, int]:
        with self._lock:
            return self.nbytes, self.updates


class ShmCounter:
    """`shm`: the integers live in a shared mapping that fork does not copy."""

    def __init__(self) -> None:
        # A process-shared POSIX semaphore; imported here so no other mode pays for
        # multiprocessing in the parent that forks.
        import mmap  # noqa: PLC0415
        import multiprocessing  # noqa: PLC0415

        self._record = _record()
        self._map = mmap.mmap(-1, self._record.size, flags=mmap.MAP_SHARED)
        self._lock: Any = multiprocessing.get_context("fork").Lock()

    def add(self, n: int) -> None:
        with self._lock:
            nbytes, updates = self._record.unpack_from(self._map, 0)
            self._record.pack_into(self._map, 0, nbytes + n, updates + 1)

    def child_done(self) -> None:
        """Every update is already in the shared mapping."""

    def totals(self) -> tuple[int, int]:
        with self._lock:
            nbytes, updates = self._record.unpack_from(self._map, 0)
        return int(nbytes), int(updates)


class PipeCounter:
    """`pipe`: children count privately and send one record to the parent when they end."""

    def __init__(self) -> None:
        self._record = _record()
        self._rfd, self.wfd = os.pipe()
        os.set_blocking(self._rfd, False)  # the parent drains it from a signal handler
        self._local = PlainCounter()  # the child's private count (0 in the parent)
        self._nbytes = 0
        self._updates = 0
        self._partial = b""

    def add(self, n: int) -> None:
        self._local.add(n)

    def child_done(self) -> None:
        """In the child, before it exits: report once, then forget (a prefork worker reports its
        whole life's count)."""
        local = self._local
        if local.updates:
            os.write(self.wfd, self._record.pack(local.nbytes, local.updates))
            local.nbytes = local.updates = 0

    def collect(self) -> None:
        """In the parent: sum every record waiting in the pipe (non-blocking)."""
        while True:
            try:
                data = os.read(self._rfd, 64 * self._record.size)
            except BlockingIOError:
                return
            if not data:
                return
            data = self._partial + data
            whole = len(data) - len(data) % self._record.size
            for nbytes, updates in self._record.iter_unpack(data[:whole]):
                self._nbytes += nbytes
                self._updates += updates
            self._partial = data[whole:]

    def totals(self) -> tuple[int, int]:
        self.collect()
        return self._nbytes, self._updates

    def close(self) -> None:
        for fd in (self._rfd, self.wfd):
            with contextlib.suppress(OSError):
                os.close(fd)


class MessageCounter(PipeCounter):
    """`message`: every update is a message. The child writes one record per chunk (a blocking
    write: a parent that falls behind slows its children, which is IPC's cost too); the parent
    drains the pipe whenever its accept loop wakes (`fileno` is what it waits on)."""

    def add(self, n: int) -> None:
        os.write(self.wfd, self._record.pack(n, 1))

    def child_done(self) -> None:
        """Every update was sent as it happened."""

    def fileno(self) -> int:
        return self._rfd


def make(mode: str) -> PlainCounter | LockCounter | ShmCounter | PipeCounter:
    """The counter for a `--shared-counter` mode; the CLI has already checked it fits the model."""
    if mode in ("global", "naive"):
        return PlainCounter()
    if mode == "lock":
        return LockCounter()
    if mode == "shm":
        return ShmCounter()
    if mode == "pipe":
        return PipeCounter()
    if mode == "message":
        return MessageCounter()
    raise ValueError(f"unknown shared-counter mode {mode!r}")
