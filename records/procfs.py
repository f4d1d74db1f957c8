"""Reading /proc: a process's stat line (who is in a process group, whose child a process is,
its state, CPU, threads, RSS) and the machine's per-CPU counters in /proc/stat.

The launcher checks a stopped server's process group for leftovers and zombies, the tests look
for a server's children and their states, and the monitor (bench/monitor.py) samples a whole
process tree's CPU and memory; all of them read the same line of proc(5), whose second field
(comm) is parenthesised and may itself contain spaces and parentheses, so it is split after the
*last* ')'. One parser, so nobody gets that detail wrong twice.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from records.schema import CpuTicks

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    comm: str
    state: str  # R, S, D, Z, T, ...
    ppid: int
    pgrp: int
    cpu_s: float  # utime + stime, all threads
    # own + reaped children's (cutime, cstime), so a reaped child's CPU stays counted
    tree_user_s: float
    tree_sys_s: float
    threads: int
    rss_bytes: int


def parse_stat(pid: int | str, raw: bytes) -> ProcStat:
    """One /proc/PID/stat line (raises ValueError or IndexError on a torn one)."""
    close = raw.rindex(b")")
    fields = raw[close + 2 :].split()
    # fields[0] is proc(5)'s field 3 (state); utime, stime, cutime, cstime are fields 14-17,
    # num_threads 20, rss (pages) 24.
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ProcStat(
        pid=int(pid),
        comm=raw[raw.index(b"(") + 1 : close].decode("utf-8", "replace"),
        state=fields[0].decode(),
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        cpu_s=(utime + stime) / CLK_TCK,
        tree_user_s=(utime + cutime) / CLK_TCK,
        tree_sys_s=(stime + cstime) / CLK_TCK,
        threads=int(fields[17]),
        rss_bytes=int(fields[21]) * PAGE,
    )


def read_stat(pid: int | str) -> ProcStat | None:
    """The process's stat line, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return parse_stat(pid, f.read())
    except OSError:
        return None  # exited while we looked


def processes() -> Iterator[ProcStat]:
    """Every process on the machine, zombies included (those that exit meanwhile are skipped)."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (st := read_stat(entry.name)) is not None:
            yield st


def group_members(pgid: int) -> list[tuple[int, str, str]]:
    """(pid, state, comm) of every process whose process group is `pgid`, zombies included."""
    return [(p.pid, p.state, p.comm) for p in processes() if p.pgrp == pgid]


def read_cpu_ticks() -> dict[str, CpuTicks]:
    """Every CPU's cumulative times from /proc/stat ("cpu0" ... ; not the "cpu" total line)."""
    out: dict[str, CpuTicks] = {}
    with open("/proc/stat", encoding="ascii") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            name, *vals = line.split()
            if name == "cpu":
                continue
            v = [int(x) for x in vals[:8]]
            # user nice system idle iowait irq softirq steal
            out[name] = CpuTicks(v[0] + v[1], v[2], v[3] + v[4], v[5], v[6], v[7])
    return out
