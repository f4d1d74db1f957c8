"""Watch a server's whole process tree while a cell runs: CPU, memory, processes, descriptors.

A fork-per-connection server is not one process: its cost is spread over a parent and one child
per client (CS:APP 12.1), each short-lived. So the monitor samples the server's *process group*
(the launcher starts every server as the leader of its own group, and forked children stay in
it, exec'd or not), at 10 Hz or more. It reads /proc itself, as psutil does underneath: through
psutil a 1000-process tree took ~0.8 s per sample here, far from 10 Hz; one pass over
/proc/*/stat finds the members and gives their CPU, threads and RSS at once.

* CPU user/sys, cumulative over the tree. A child that has exited and been reaped is no longer in
  the tree, but its CPU time has moved into its parent's `children_user`/`children_sys`: those are
  added, or a fork server's per-connection work would vanish with each child.
* RSS and PSS summed over the tree. RSS counts a page shared by 50 forked children 50 times; PSS
  (from /proc/PID/smaps_rollup) splits it between them, which is the memory a fork server really
  costs (copy-on-write, CS:APP 9.8.3). smaps_rollup is the expensive read, so a big tree's PSS
  is refreshed round-robin within a time budget (see PssCache).
* CLOSE_WAIT sockets on the server's port, when asked (the descriptor-leak experiment, issue 7):
  the client closed, the server never did, from /proc/net/tcp{,6}.
* processes, threads, open descriptors, zombies (exited, not yet reaped: the reaper's lag),
  voluntary and involuntary context switches (summed over every thread: /proc/PID/status counts
  only the thread it names).

A process can exit between the listing of the group and the reading of its files; that process is
skipped for that sample and counted in `dropped_samples` (one count per process reading lost), so
a gap is visible, never silent. If the leader itself is gone, the whole sample is dropped.
"""

from __future__ import annotations

import os
import random
import select
import threading
import time
from dataclasses import dataclass

from bench.cgroup import CpuGroup
from records.procfs import parse_stat, read_cpu_ticks
from records.schema import CpuTicks, MonitorData, MonitorSample

DEFAULT_INTERVAL_S = 0.05  # 20 Hz: twice the required rate, so a slow sample still leaves 10 Hz
# Inside the load's measured window the monitor runs on the client's CPUs beside the load
# generator, so it looks less often and reads little PSS there: the CPU figures come from the
# samples at the window's edges, and memory peaks at the end of the fill, just before the window.
# (At 20 Hz with full PSS reads, 100 forked children cost the monitor 0.7 of the client's CPU.)
WINDOW_INTERVAL_S = 0.2
WINDOW_PSS_BUDGET_S = 0.002
# Each wait is the interval times a random factor in [1 - JITTER, 1 + JITTER]. A fixed schedule
# that starts at the window's start edge, where an open loop's schedule starts too, looks at the
# same instant of every request's cycle (0.2 s is exactly 80 periods of 400 req/s): the link
# scenario's fork server then showed 0.27 children alive where 0.8 live on average, because each
# look landed as one child had just gone and the next was not yet forked. Random instants see
# time averages (the mean of the looks estimates the mean over the window, whatever the load's
# period); +-50% of 0.2 s spans 40 periods of the slowest open loop here.
JITTER = 0.5


@dataclass
class _Totals:
    user: float = 0.0
    sys: float = 0.0
    rss: int = 0
    pss: int = 0
    processes: int = 0
    threads: int = 0
    fds: int = 0
    zombies: int = 0
    vol: int = 0
    invol: int = 0


@dataclass(frozen=True, slots=True)
class _Stat:
    pid: int
    state: str
    user_s: float  # own + reaped children's (cutime), so a reaped child's CPU stays counted
    sys_s: float
    threads: int
    rss: int


def scan_group(pgid: int) -> list[_Stat]:
    """Every process of group `pgid` (zombies included), from one pass over /proc/*/stat.

    The same read that finds the members gives their CPU times, thread count and RSS, so a
    1000-process tree costs one small read per process here rather than several.
    """
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue  # exited while we looked
        st = parse_stat(entry.name, raw)
        if st.pgrp != pgid:
            continue
        out.append(_Stat(st.pid, st.state, st.tree_user_s, st.tree_sys_s, st.threads, st.rss_bytes))
    return out


_TCP_ESTABLISHED = "01"
_TCP_CLOSE_WAIT = "08"


def tcp_states(port: int) -> dict[str, int]:
    """Sockets whose *local* port is `port` (the server's side), by kernel state code.

    /proc/net/tcp lists every socket of the network namespace: "local_address" is HEX_IP:HEX_PORT
    and "st" the state (01 ESTABLISHED, 08 CLOSE_WAIT, 0A LISTEN). Counting by port, not by
    process, includes sockets held by any member of the server's tree.
    """
    want = f":{port:04X}"
    counts: dict[str, int] = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path, encoding="ascii") as f:
                next(f, None)  # the header
                for line in f:
                    fields = line.split(None, 4)
                    if len(fields) > 3 and fields[1].endswith(want):
                        counts[fields[3]] = counts.get(fields[3], 0) + 1
        except OSError:
            continue
    return counts


def server_connections(port: int) -> int:
    """Connections the server on `port` holds now (established or half-closed by the client)."""
    c = tcp_states(port)
    return c.get(_TCP_ESTABLISHED, 0) + c.get(_TCP_CLOSE_WAIT, 0)


def read_pss(pid: int) -> int:
    """Proportional set size of one process, in bytes, from smaps_rollup."""
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def _ctx_from_status(path: str) -> tuple[int, int]:
    vol = invol = 0
    with open(path, encoding="ascii") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                vol = int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                invol = int(line.split()[1])
    return vol, invol


def read_ctx_switches(pid: int, threads: int = 0) -> tuple[int, int]:
    """Voluntary and involuntary context switches summed over every thread of `pid`."""
    if threads == 1:  # the common forked child: its one thread's status is the process's
        return _ctx_from_status(f"/proc/{pid}/status")
    vol = invol = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            v, i = _ctx_from_status(f"/proc/{pid}/task/{tid}/status")
        except FileNotFoundError:
            continue  # a thread that ended: its switches are gone with it
        vol += v
        invol += i
    return vol, invol


class PssCache:
    """PSS per process, refreshed within a time budget per sample.

    smaps_rollup makes the kernel walk a process's page tables: ~0.1-0.8 ms per Python process
    here, so a 1000-process tree cannot be read whole 10 times a second. Each sample therefore
    reads new processes first, then the stalest ones, until its budget is spent; the sum uses
    every live process's latest reading. `max_age_s` says how stale the oldest reading was.
    """

    def __init__(self, budget_s: float | None) -> None:
        self.budget_s = budget_s
        self._pss: dict[int, tuple[int, int]] = {}  # pid -> (pss bytes, read at, ns)
        self.max_age_s = 0.0
        self.partial_samples = 0

    def total(self, pids: list[int]) -> tuple[int, int]:
        """(PSS sum over `pids`, processes that vanished before their first reading)."""
        now = time.monotonic_ns()
        live = set(pids)
        for gone in [p for p in self._pss if p not in live]:
            del self._pss[gone]
        order = sorted(pids, key=lambda p: self._pss[p][1] if p in self._pss else -1)
        deadline = None if self.budget_s is None else now + int(self.budget_s * 1e9)
        vanished = 0
        for pid in order:
            if deadline is not None and pid in self._pss and time.monotonic_ns() > deadline:
                self.partial_samples += 1
                break
            try:
                self._pss[pid] = (read_pss(pid), time.monotonic_ns())
            except (FileNotFoundError, ProcessLookupError):
                vanished += 1
        total = 0
        oldest = now
        for pid in pids:
            if pid in self._pss:
                pss, at = self._pss[pid]
                total += pss
                oldest = min(oldest, at)
        self.max_age_s = max(self.max_age_s, (now - oldest) / 1e9)
        return total, vanished


def sample_tree(pgid: int, pss: PssCache | None = None) -> tuple[_Totals | None, int]:
    """One look at process group `pgid`: (totals, process readings dropped).

    Totals is None when the group leader is gone (nothing meaningful to add up).
    """
    pss = pss or PssCache(budget_s=None)
    totals = _Totals()
    dropped = 0
    members = scan_group(pgid)
    alive: list[int] = []
    for st in members:
        totals.processes += 1
        totals.user += st.user_s
        totals.sys += st.sys_s
        if st.state == "Z":  # a zombie has no memory, threads or descriptors left
            totals.zombies += 1
            continue
        try:
            fds = len(os.listdir(f"/proc/{st.pid}/fd"))
            vol, invol = read_ctx_switches(st.pid, st.threads)
        except (FileNotFoundError, ProcessLookupError):
            dropped += 1  # exited between the scan and this read: skipped, and counted
            continue
        totals.fds += fds
        totals.vol += vol
        totals.invol += invol
        totals.threads += st.threads
        totals.rss += st.rss
        alive.append(st.pid)
    totals.pss, vanished = pss.total(alive)
    dropped += vanished
    if not any(st.pid == pgid for st in members):
        return None, dropped
    return totals, dropped


class Monitor:
    """A thread sampling one process group until stop(); use as a context manager."""

    def __init__(
        self,
        pgid: int,
        interval_s: float = DEFAULT_INTERVAL_S,
        cpus: tuple[int, ...] | None = None,
        close_wait_port: int | None = None,
        cgroup: CpuGroup | None = None,
    ) -> None:
        self.pgid = pgid
        self.cgroup = cgroup  # the server tree's own cpuacct group (bench/cgroup.py), if any
        self.close_wait_port = close_wait_port
        self.cpus = cpus
        self.interval_s = interval_s
        self._samples: list[MonitorSample] = []
        self._dropped = 0
        self._rng = random.Random()  # the looks' instants (JITTER); not a security use
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"monitor-{pgid}", daemon=True)
        self._t0 = 0
        # A big tree's PSS is refreshed round-robin: at most ~40% of each interval goes to it.
        self.pss = PssCache(budget_s=0.4 * interval_s)
        # The load's window (see watch_window): samples taken exactly at its two edges.
        self._window_fd: int | None = None
        self._marks: list[tuple[int, str]] = []  # (CLOCK_MONOTONIC ns, "start"/"end")
        self._mark_index: dict[str, int] = {}
        self._mark_cpu: dict[str, float] = {}  # the monitor thread's CPU time at each mark
        self._cpu_s = 0.0

    def watch_window(self, fd: int) -> None:
        """Read "T0 T_END" from `fd` (the load generator's --window-fd pipe) and sample at both
        instants. Call before start()."""
        self._window_fd = fd

    def start(self) -> Monitor:
        self._t0 = time.monotonic_ns()
        self._thread.start()
        return self

    def sample_now(self, mark: str | None = None) -> None:
        """Take one sample (the thread does this on its own; tests call it directly too)."""
        # The machine's per-CPU counters first: one small read, at the sample's instant.
        try:
            ticks: dict[str, CpuTicks] | None = read_cpu_ticks()
        except (OSError, ValueError):
            ticks = None
        # ... and the server's own group right after: the two are compared at this instant
        usage = self.cgroup.usage_ns() if self.cgroup is not None else None
        t = (time.monotonic_ns() - self._t0) / 1e9
        try:
            totals, dropped = sample_tree(self.pgid, self.pss)
        except (OSError, ValueError, IndexError):
            # /proc read mid-change (a file vanished under us, a torn stat line): one sample
            # lost and counted; the thread keeps sampling.
            self._dropped += 1
            return
        self._dropped += dropped
        if totals is None:
            self._dropped += 1
            return
        close_wait = None
        if self.close_wait_port is not None:
            close_wait = tcp_states(self.close_wait_port).get(_TCP_CLOSE_WAIT, 0)
        self._samples.append(
            MonitorSample(
                t_s=round(t, 6),
                cpu_user_s=round(totals.user, 4),
                cpu_sys_s=round(totals.sys, 4),
                rss_bytes=totals.rss,
                pss_bytes=totals.pss,
                processes=totals.processes,
                threads=totals.threads,
                fds=totals.fds,
                zombies=totals.zombies,
                ctx_voluntary=totals.vol,
                ctx_involuntary=totals.invol,
                close_wait=close_wait,
                cpu_ticks=ticks,
                mark=mark,
                cgroup_ns=usage[0] if usage else None,
                cgroup_sys_ns=usage[1] if usage else None,
            )
        )
        if mark is not None:
            self._mark_index[mark] = len(self._samples) - 1
            self._mark_cpu[mark] = time.thread_time()

    def latest(self) -> MonitorSample | None:
        """The most recent sample (the memory guard reads it from another thread)."""
        samples = self._samples
        return samples[-1] if samples else None

    def _run(self) -> None:
        if self.cpus is not None:
            # This thread only (pid 0 = the calling thread): the monitor's own CPU use lands on
            # the client's CPUs, not on the server's CPU being measured.
            os.sched_setaffinity(0, self.cpus)
        cpu0 = time.thread_time()
        normal_ns = int(self.interval_s * 1e9)
        window_ns = max(normal_ns, int(WINDOW_INTERVAL_S * 1e9))
        budget = self.pss.budget_s
        period_ns = normal_ns
        next_ns = time.monotonic_ns()
        took_ns = 0  # how long the last regular sample took (a 1000-process tree: ~0.1 s)
        try:
            while not self._stop.is_set():
                self._wait(0.0)  # learn the window as soon as it is announced, busy or not
                now = time.monotonic_ns()
                if self._marks and self._marks[0][0] <= now:
                    mark = self._marks.pop(0)[1]
                    self.sample_now(mark)
                    inside = mark == "start"
                    period_ns = window_ns if inside else normal_ns
                    self.pss.budget_s = WINDOW_PSS_BUDGET_S if inside else budget
                    next_ns = time.monotonic_ns() + self._step(period_ns)
                    continue
                mark_ns = self._marks[0][0] if self._marks else None
                # A regular sample that would still run when a window edge arrives is skipped:
                # the edge's sample must be taken on time, not after a slow scan.
                clear = mark_ns is None or now + 2 * took_ns < mark_ns
                if now >= next_ns and clear:
                    t = time.monotonic_ns()
                    self.sample_now()
                    took_ns = time.monotonic_ns() - t
                    # A fixed schedule, not sleep(interval) after the work: a slow sample (a big
                    # tree) eats into the next wait instead of lowering the rate further.
                    next_ns = max(next_ns + self._step(period_ns), time.monotonic_ns())
                    continue
                # not clear: a window edge is due before a sample could finish; wait for it
                wake = next_ns if mark_ns is None else (min(next_ns, mark_ns) if clear else mark_ns)
                self._wait(max(0.0, (wake - now) / 1e9))
        finally:
            self._cpu_s = time.thread_time() - cpu0

    def _step(self, period_ns: int) -> int:
        """The wait before the next look: `period_ns` x a random factor (JITTER)."""
        return int(period_ns * self._rng.uniform(1 - JITTER, 1 + JITTER))

    def _wait(self, seconds: float) -> None:
        """Sleep until `seconds` pass, stop() is called, or the window's edges arrive."""
        fd = self._window_fd
        if fd is None:
            if seconds > 0:
                self._stop.wait(seconds)
            return
        # `seconds` is at most one sampling interval, so stop() is still noticed promptly.
        ready, _, _ = select.select([fd], [], [], seconds)
        if not ready:
            return
        try:
            data = os.read(fd, 256)
        except OSError:
            data = b""
        os.close(fd)
        self._window_fd = None
        parts = data.split()
        if len(parts) == 2:
            t0, t_end = int(parts[0]), int(parts[1])
            self._marks = sorted([(t0, "start"), (t_end, "end")])

    def stop(self) -> MonitorData:
        """Stop sampling (one last sample first) and return what was seen."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
            self.sample_now()
        if self._window_fd is not None:  # the window never came
            os.close(self._window_fd)
            self._window_fd = None
        return self.data()

    def data(self) -> MonitorData:
        return MonitorData(
            interval_s=self.interval_s,
            samples=list(self._samples),
            dropped_samples=self._dropped,
            window_start=self._mark_index.get("start"),
            window_end=self._mark_index.get("end"),
            monitor_cpu_s=round(self._window_cpu_s(), 6),
            started_ns=self._t0,
        )

    def _window_cpu_s(self) -> float:
        """The monitor's own CPU time inside the window (its whole life if none was seen)."""
        m = self._mark_cpu
        if "start" in m and "end" in m:
            return m["end"] - m["start"]
        return self._cpu_s

    def achieved_hz(self) -> float:
        s = self._samples
        if len(s) < 2 or s[-1].t_s <= s[0].t_s:
            return 0.0
        return (len(s) - 1) / (s[-1].t_s - s[0].t_s)
