"""The memory guard (issue 7): stop a cell before the machine runs out of memory.

A fork-per-connection server holds one process per client (CS:APP 12.1); at 10,000 connections
that is 10,000 Python interpreters, each with its own dirtied copy-on-write pages (CS:APP 9.8.3).
Left alone, such a cell ends in the kernel's OOM killer picking a victim: maybe the server, maybe
the runner, maybe another engineer's process. The guard is read every tenth of a second while the
load runs and trips on either of two signs:

* MemAvailable (the kernel's estimate of memory usable without swapping) below a share of
  MemTotal (the profile's `mem_available_floor`, 15% by default): the machine is the limit;
* the server tree's PSS (the monitor's latest sample) above the profile's `memory_cap_mb`: the
  budget a profile gives one server (tests set it tiny to trip the guard cheaply).

The cell that trips it is stopped (load generator, then server) and recorded as failed with
"stopped at N connections: memory (...)": where the model ran out is a result.
"""

from __future__ import annotations

from dataclasses import dataclass

from records.schema import MonitorSample

MIB = 1 << 20


def meminfo(path: str = "/proc/meminfo") -> tuple[int, int]:
    """(MemTotal, MemAvailable) in bytes; (0, 0) when unreadable (the floor then never trips)."""
    total = avail = 0
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
                elif line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return 0, 0
    return total, avail


@dataclass(frozen=True, slots=True)
class MemoryGuard:
    cap_bytes: int | None  # the server tree's PSS budget (None: no cap)
    floor: float  # MemAvailable must stay above this share of MemTotal (0: no floor)

    @classmethod
    def of(cls, cap_mb: float | None, floor: float) -> MemoryGuard:
        return cls(None if cap_mb is None else int(cap_mb * MIB), floor)

    def check(self, sample: MonitorSample | None) -> str | None:
        """Why the cell must stop now, or None."""
        if self.floor > 0:
            total, avail = meminfo()
            if total and avail < self.floor * total:
                return (
                    f"MemAvailable {avail / MIB:,.0f} MiB below {self.floor:.0%} of MemTotal "
                    f"{total / MIB:,.0f} MiB"
                )
        if self.cap_bytes is not None and sample is not None and sample.pss_bytes > self.cap_bytes:
            return (
                f"server tree PSS {sample.pss_bytes / MIB:,.1f} MiB above the profile's cap "
                f"{self.cap_bytes / MIB:,.0f} MiB, {sample.processes} processes"
            )
        return None
