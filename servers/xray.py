"""`--xray FILE`: record every connection of a forking Python server, step by step (issue 13).

The parent stamps accept, its fork() call and its close of connfd; each child stamps its start,
its close of listenfd, its exec (inetd) or first echo, and its exit into its own slot of a
shared anonymous mapping (the only memory parent and child share after fork, CS:APP 12.1.2);
the SIGCHLD handler reaps with wait4 (waitpid plus the child's rusage) and stamps when it ran
and when it reaped. The file is written when the server stops; records/xray.py has its format
and reads it. Connections beyond SLOTS are counted as dropped.

Only the X-ray cells pay for this (mmap and struct in the parent, a few stamps per connection):
every other cell runs without it.
"""

from __future__ import annotations

import mmap
import struct
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see servers.common)
if TYPE_CHECKING:
    import resource

SLOTS = 65536
CHILD_FIELDS = 5
START, LISTEN_CLOSED, EXEC, FIRST_ECHO, EXIT = range(CHILD_FIELDS)
_STAMP = struct.Struct("=q")


class Xray:
    START, LISTEN_CLOSED, EXEC, FIRST_ECHO, EXIT = START, LISTEN_CLOSED, EXEC, FIRST_ECHO, EXIT

    def __init__(self, path: str, server: str) -> None:
        self.path = path
        self.server = server
        self._map = mmap.mmap(-1, SLOTS * CHILD_FIELDS * _STAMP.size)  # MAP_SHARED: inherited
        self.conns: list[tuple[int, int, int, int, int, int]] = []
        self.reaps: list[tuple[int, ...]] = []
        self.dropped = 0

    def slot(self) -> int:
        """The next connection's slot, or -1 when the slots are used up (counted as dropped)."""
        n = len(self.conns)
        return n if n < SLOTS else -1

    def stamp(self, slot: int, field: int) -> None:
        """In the child: now, into this connection's slot."""
        if slot >= 0:
            _STAMP.pack_into(
                self._map, (slot * CHILD_FIELDS + field) * _STAMP.size, time.monotonic_ns()
            )

    def conn(self, slot: int, pid: int, accept: int, fork0: int, fork1: int, closed: int) -> None:
        if slot < 0:
            self.dropped += 1
        else:
            self.conns.append((slot, pid, accept, fork0, fork1, closed))

    def reaped(self, pid: int, handler: int, rusage: resource.struct_rusage | None) -> None:
        """In the SIGCHLD handler, after wait4 returned `pid`."""
        now = time.monotonic_ns()
        if rusage is None or len(self.reaps) >= SLOTS:
            self.dropped += rusage is not None
            return
        self.reaps.append(
            (
                pid,
                handler,
                now,
                rusage.ru_minflt,
                rusage.ru_majflt,
                round(rusage.ru_utime * 1e6),
                round(rusage.ru_stime * 1e6),
                rusage.ru_nvcsw,
                rusage.ru_nivcsw,
            )
        )

    def write(self) -> None:
        lines = [f"xray 1 {self.server}"]
        for c in self.conns:
            lines.append("conn " + " ".join(map(str, c)))
            base = c[0] * CHILD_FIELDS * _STAMP.size
            child = [
                _STAMP.unpack_from(self._map, base + i * _STAMP.size)[0]
                for i in range(CHILD_FIELDS)
            ]
            if child[START]:
                lines.append(f"child {c[0]} " + " ".join(map(str, child)))
        lines += ["reap " + " ".join(map(str, r)) for r in self.reaps]
        status = _status_kb("/proc/self/status", ("VmPTE:", "VmRSS:"))
        pss = _status_kb("/proc/self/smaps_rollup", ("Pss:",))
        lines.append(f"parent {status[0]} {pss[0]} {status[1]}")
        lines.append(f"dropped {self.dropped}")
        with open(self.path, "w", encoding="ascii") as f:
            f.write("\n".join(lines) + "\n")


def _status_kb(path: str, keys: tuple[str, ...]) -> list[int]:
    out = [-1] * len(keys)
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                for i, key in enumerate(keys):
                    if line.startswith(key):
                        out[i] = int(line.split()[1])
    except OSError:
        pass
    return out
