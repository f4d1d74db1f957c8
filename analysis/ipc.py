"""IPC like for like (CS:APP 12.1.2), computed once per run for the opening, the IPC section and
the scorecard.

The book says processes need explicit IPC to share state, and IPC is slow. That sentence holds
two questions, kept apart here (issue 21):

1. *Does the same mechanism cost more between processes?* A pipe round trip to an echo thread
   against the same pipe to an echo process; a counter under a mutex shared by two threads
   against one under a process-shared mutex in a shared mapping; queue.Queue against
   multiprocessing.Queue (which pickles). Same CPU and different CPUs, Python and C. On Linux a
   pipe is a pipe and a futex is a futex: the address space barely matters.
2. *What does each model do to share one count?* A thread adds to a variable it already shares
   (nanoseconds, no kernel); a process must send the update as a message (microseconds: two
   system calls and a wake-up) or set up a shared mapping and a process-shared lock on purpose.
   That gap, and the code it takes, is the book's disadvantage.

End to end, the shared-counter cells run at one offered rate (open loop), so server CPU per
request compares like for like: the fork server sending one message per echo against its
plain-global control (the same work, no IPC), and the thread server taking a Lock per echo
against its plain global. Python threads never increment at the same instant (the GIL runs one
at a time), so a Python lock is rarely contended; the C figures show the mutex without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis import micro
from analysis.results import Findings, Run
from analysis.stats import Figure, pick
from records.registry import Role, by_role

BOOK_PROCESS = by_role(Role.BOOK_PROCESS)
BOOK_THREAD = by_role(Role.BOOK_THREAD)
PLACES = (("shared", "one CPU"), ("split", "different CPUs"))

# (what, the threads' microbenchmark, the processes', measured in C too)
MECHANISMS = (
    ("pipe round trip, 1 byte", "rtt.thread_pipe", "rtt.pipe", True),
    ("locked counter increment, 2 workers", "counter.thread_lock.2w", "counter.shm_lock.2w", True),
    (
        "queue round trip (queue.Queue / multiprocessing.Queue)",
        "rtt.thread_queue",
        "rtt.mp_queue",
        False,
    ),
)


@dataclass(frozen=True)
class SamePair:
    """One mechanism at one placement, between threads and between processes (us per op)."""

    what: str
    where: str
    py_threads: Figure | None
    py_procs: Figure | None
    c_threads: Figure | None
    c_procs: Figure | None


def same_mechanism(m: pd.DataFrame) -> list[SamePair]:
    rows = []
    for what, threads, procs, in_c in MECHANISMS:
        for place, where in PLACES:
            t, p = f"{threads}[{place}]", f"{procs}[{place}]"
            c_t = micro.fig(m, t, "c") if in_c else None
            c_p = micro.fig(m, p, "c") if in_c else None
            rows.append(SamePair(what, where, micro.fig(m, t), micro.fig(m, p), c_t, c_p))
    return rows


@dataclass(frozen=True)
class ShareCount:
    """What each model does to share one count, per update, in one language (us)."""

    language: str
    store: Figure | None  # a thread adds to a variable it shares
    message: Figure | None  # a process sends one record per update over a pipe (two CPUs)
    message_one_cpu: Figure | None
    mapping: Figure | None  # 2 processes, shared mapping + process-shared lock (two CPUs)

    @property
    def ratio(self) -> float | None:
        if self.store is None or self.message is None or not self.store.median:
            return None
        return self.message.median / self.store.median


def share_count(m: pd.DataFrame) -> list[ShareCount]:
    return [
        ShareCount(
            lang,
            micro.fig(m, "counter.thread_plain.1w", impl),
            micro.fig(m, "counter.pipe_message.1w[split]", impl),
            micro.fig(m, "counter.pipe_message.1w[shared]", impl),
            micro.fig(m, "counter.shm_lock.2w[split]", impl),
        )
        for lang, impl in (("Python", "python"), ("C", "c"))
    ]


def difference(a: Figure | None, b: Figure | None) -> Figure | None:
    """a - b with an interval that holds when both intervals do (lo_a - hi_b .. hi_a - lo_b)."""
    if a is None or b is None:
        return None
    med, lo, hi = a.median - b.median, a.lo - b.hi, a.hi - b.lo
    return Figure(
        med,
        lo,
        hi,
        min(a.n, b.n),
        float("nan"),
        a.saturated or b.saturated,
        max(a.starved, b.starved),
    )


@dataclass(frozen=True)
class EndToEnd:
    """Server CPU per request (us) in the shared-counter cells, at one offered rate."""

    rate: float | None
    cpu: dict[tuple[str, str], Figure | None]  # (server, counter or "off") -> figure

    def get(self, server: str, mode: str) -> Figure | None:
        return self.cpu.get((server, mode))

    @property
    def message_cost(self) -> Figure | None:
        """What a message per echo adds to the fork server, over its plain-global control."""
        return difference(self.get(BOOK_PROCESS, "message"), self.get(BOOK_PROCESS, "naive"))

    @property
    def lock_cost(self) -> Figure | None:
        """What a Lock per echo adds to the thread server, over its plain global."""
        return difference(self.get(BOOK_THREAD, "lock"), self.get(BOOK_THREAD, "global"))

    @property
    def shm_cost(self) -> Figure | None:
        return difference(self.get(BOOK_PROCESS, "shm"), self.get(BOOK_PROCESS, "naive"))


def end_to_end(run: Run) -> EndToEnd:
    return end_to_end_of(run.findings)


def end_to_end_of(findings: Findings) -> EndToEnd:
    d = findings.cells("shared-counter")
    s = findings.summary("cpu_us_per_req", "shared-counter")
    cpu: dict[tuple[str, str], Figure | None] = {}
    for server, modes in (
        (BOOK_PROCESS, ("off", "naive", "shm", "pipe", "message")),
        (BOOK_THREAD, ("off", "global", "lock")),
    ):
        for mode in modes:
            cpu[server, mode] = pick(s, server, shared_counter=None if mode == "off" else mode)
    rate = None
    if not d.empty and "rate" in d.columns and d["rate"].notna().any():
        rate = float(d["rate"].dropna().iloc[0])
    return EndToEnd(rate, cpu)
