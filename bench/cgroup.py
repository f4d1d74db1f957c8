"""The server's own CPU, counted by the kernel: one cpuacct cgroup per server, made and removed
by the cell that starts it.

Why: /proc/stat's busy time of the server's CPU is whatever ran there, the server or not; a
browser, an editor or a noisy neighbour on that CPU used to be booked as the server's (a 50%
burner raised c-epoll's figure from 7 to 12.5 us per request, and nothing said so). The tree's
own /proc/PID/stat counters move in 10 ms clock ticks and miss live children until they are
reaped. A cgroup v1 `cpuacct` group counts every task in it, live children included, to the
nanosecond and per CPU (`cpuacct.usage_percpu`); the server joins it before it runs a line of
Python (`wrap`: a shell writes its own pid to the group, then execs the server, so every child
it ever forks is born inside). The busy time of the server's CPUs minus the group's usage on
them is then the *foreign* CPU: measured, not guessed.

Where the machine has no cgroup v1 cpuacct hierarchy, or we may not create a group there (not
root), `create` returns None with the reason, and the accounting falls back to /proc/stat (and
says that foreign CPU could not be measured).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup/cpuacct")
PREFIX = "echobench-"
_names = itertools.count(1)  # a per-process sequence: unique group names within a run


class CpuGroup:
    """One cpuacct group; `remove()` once the tasks in it have ended."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, root: Path = ROOT) -> tuple[CpuGroup | None, str | None]:
        """A new empty group (and None), or None and why there is none."""
        if not (root / "cpuacct.usage_percpu").exists():
            return None, f"no cgroup v1 cpuacct hierarchy at {root}"
        path = root / f"{PREFIX}{os.getpid()}-{next(_names)}"
        try:
            path.mkdir()
        except OSError as exc:
            return None, f"cannot create a cpuacct group ({os.strerror(exc.errno or 0)})"
        return cls(path), None

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv` started inside the group: a shell joins it, then execs argv (same pid)."""
        procs = str(self.path / "cgroup.procs")
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *argv]

    def usage_ns(self) -> tuple[list[int], list[int]] | None:
        """(total, system) CPU ns per CPU since the group was made; None once it is gone."""
        try:
            total = (self.path / "cpuacct.usage_percpu").read_text().split()
            sys_ = (self.path / "cpuacct.usage_percpu_sys").read_text().split()
        except OSError:
            return None
        return [int(x) for x in total], [int(x) for x in sys_]

    def tasks(self) -> list[int]:
        try:
            return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def remove(self, wait_s: float = 2.0) -> None:
        """Remove the group once its last task is gone (a killed tree takes a moment to be
        reaped by the kernel); a group still busy after `wait_s` is left for `sweep`."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    return
                time.sleep(0.01)


def sweep(root: Path = ROOT) -> list[str]:
    """Remove the empty groups that a run which no longer exists left behind (its pid is in
    the name: checked by id, never by name of a process). Returns what was removed."""
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for path in root.glob(f"{PREFIX}*"):
        owner = path.name[len(PREFIX) :].split("-")[0]
        if not owner.isdigit() or int(owner) == os.getpid():
            continue
        try:
            os.kill(int(owner), 0)
            continue  # the run that made it is alive
        except PermissionError:
            continue  # alive, someone else's
        except ProcessLookupError:
            pass
        with contextlib.suppress(OSError):
            path.rmdir()
            removed.append(path.name)
    return removed
