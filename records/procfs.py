"""Reading /proc/PID/stat: who is in a process group, whose child a process is, its state.

The launcher checks a stopped server's process group for leftovers and zombies, and the tests
look for a server's children and their states; all of them read the same line of proc(5), whose
second field (comm) is parenthesised and may itself contain spaces and parentheses, so it is
split after the *last* ')'. One parser, so nobody gets that detail wrong twice.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    comm: str
    state: str  # R, S, D, Z, T, ...
    ppid: int
    pgrp: int
    cpu_s: float  # utime + stime, all threads


def read_stat(pid: int | str) -> ProcStat | None:
    """The process's stat line, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None  # exited while we looked
    close = stat.rindex(")")
    fields = stat[close + 2 :].split()
    # fields[0] is proc(5)'s field 3 (state); utime and stime are fields 14 and 15.
    return ProcStat(
        pid=int(pid),
        comm=stat[stat.index("(") + 1 : close],
        state=fields[0],
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        cpu_s=(int(fields[11]) + int(fields[12])) / CLK_TCK,
    )


def processes() -> Iterator[ProcStat]:
    """Every process on the machine, zombies included (those that exit meanwhile are skipped)."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (st := read_stat(entry.name)) is not None:
            yield st


def group_members(pgid: int) -> list[tuple[int, str, str]]:
    """(pid, state, comm) of every process whose process group is `pgid`, zombies included."""
    return [(p.pid, p.state, p.comm) for p in processes() if p.pgrp == pgid]
