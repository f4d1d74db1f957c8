"""Where each end of a measurement runs: CPU pinning, chosen and recorded, never left to chance.

On the 2-vCPU VM this suite is developed on, a 1-byte pipe round trip costs ~2.5 us with both
processes on one CPU and 17-60 us with one on each, because every hop must wake the other
(idle) CPU. An unpinned figure is a random mix of the two, so every two-ended measurement runs
in the suite's named placements (records.schema.Placement): "shared" (both ends pinned to one
CPU) and "split" (one CPU each, only when the machine has two). One-ended measurements are pinned
to one CPU too and recorded with placement "n/a" and the CPU they used.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from records.schema import MicroPlacement


@dataclass(frozen=True, slots=True)
class Pinning:
    name: MicroPlacement
    parent_cpu: int
    child_cpu: int

    @property
    def cpus(self) -> list[int]:
        return sorted({self.parent_cpu, self.child_cpu})


def name_with(op: str, placement: MicroPlacement) -> str:
    """The stable result name: the operation, plus the placement when there are two ends."""
    return op if placement == "n/a" else f"{op}[{placement}]"


@functools.cache
def allowed_cpus() -> tuple[int, ...]:
    """The CPUs this process may use, read once before anything here pins it."""
    return tuple(sorted(os.sched_getaffinity(0)))


def home_cpu() -> int:
    """The CPU one-ended measurements and the measuring end of two-ended ones run on."""
    return allowed_cpus()[0]


def two_ended() -> list[Pinning]:
    """Same CPU always; across CPUs when there is a second one to go to."""
    cpus = allowed_cpus()
    placements = [Pinning("shared", cpus[0], cpus[0])]
    if len(cpus) >= 2:
        placements.append(Pinning("split", cpus[0], cpus[1]))
    return placements


def pin_thread(cpu: int) -> None:
    """Pin the calling thread (Linux applies sched_setaffinity(0) to the caller only)."""
    os.sched_setaffinity(0, {cpu})


@contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """Pin the calling thread to `cpu` for the block, then give back its previous CPU set."""
    before = os.sched_getaffinity(0)
    pin_thread(cpu)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
