"""Whole-window CPU accounting of one cell: counters read at the window's edges, not rates.

The monitor samples the server's process tree 20 times a second and, besides, exactly when the
load generator's measured window opens and closes (it learns the window's CLOCK_MONOTONIC
edges ~0.1 s ahead through the load generator's --window-fd). The server's CPU over the window
is then the difference of two cumulative counters:

* the tree's user and system time: every live member's own time plus, through each parent's
  cutime/cstime, every child reaped so far. A fork server's children exit all the time, so one
  sample can miss a child that was reaped between the read of its parent and its own read (a
  dip that the next sample recovers). The running maximum of the series removes the dips; a
  rate computed between two samples (what the report did before) kept the recoveries as lumps
  and gave a server pinned to one CPU 1.2-2.5 CPUs.
* /proc/stat's per-CPU counters: whatever ran on the server's and the client's CPUs, whoever
  it was. On the client's CPUs that is the load generator, the monitor itself and anything else
  that the scheduler put there: the client is saturated when *those CPUs* were busy, not only
  when the load generator's own getrusage says so.

* (v5) the server tree's own cpuacct cgroup (bench/cgroup.py), per CPU, in nanoseconds, live
  children included: the kernel's count of exactly the server's tasks.

Which is the server's CPU? The cgroup, wherever there is one (`server_source = "cgroup"`).
Without it, where the server has CPUs of its own (the split placement), /proc/stat of those
CPUs: measured here, a fork server's 100 live children each use a few ms per window, below the
10 ms clock tick in which /proc/PID/stat reports a process's time, so the tree's live counters
stood still through a whole window and the children's CPU appeared only when they were reaped
after it. But the CPU's counters book anything else that ran there as the server's. Where the
server shares its CPU with the client (shared placement) or floats (unpinned), only the tree
(or the cgroup) can separate the two. Either way the figure is capped at the CPUs the server
was pinned to times the window: `server_capped` says when the cap cut anything.

Foreign CPU (v5): with a cgroup and CPUs of its own, the busy time of the server's CPUs minus
the group's usage on them is CPU that was not the server's. Two things explain a little of it
without anything foreign: /proc/stat moves in whole ticks (up to one per CPU at each edge), and
interrupts that arrive while a CPU is idle (the loopback's packets) are busy time charged to no
task. Beyond FOREIGN_TICKS ticks per CPU plus FOREIGN_SHARE of the window the cell is flagged
(`foreign_flag`): another process used the server's CPU, and its figures are suspect.
"""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Literal

from records.schema import CpuAccount, CpuTicks, MonitorData, MonitorSample

CLIENT_SATURATION = 0.90  # client CPUs busier than this share of the window: client-bound
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
# Foreign CPU on the server's CPUs explained by the counters themselves: 2 ticks per CPU (one at
# each edge) and 5% of the window for interrupts charged to no task. Measured on clean cells
# of the standard profile here: 0-3% of the window; with a 50% burner there: 40-50%.
FOREIGN_TICKS = 2
FOREIGN_SHARE = 0.05


def _ticks_delta(a: CpuTicks, b: CpuTicks) -> CpuTicks:
    return CpuTicks(**{f.name: getattr(b, f.name) - getattr(a, f.name) for f in fields(CpuTicks)})


def _edge(monitor: MonitorData, index: int | None, at_ns: int, start: bool) -> int | None:
    """The sample at a window edge: the marked one, else the last sample before the edge
    (start) or the first after it (end), so the window is covered rather than cut short."""
    if index is not None and 0 <= index < len(monitor.samples):
        return index
    if not monitor.started_ns or not at_ns:
        return None
    t = (at_ns - monitor.started_ns) / 1e9
    times = [s.t_s for s in monitor.samples]
    before = [i for i, x in enumerate(times) if x <= t]
    after = [i for i, x in enumerate(times) if x >= t]
    if start:
        return before[-1] if before else None
    return after[0] if after else None


def _running_max(samples: list[MonitorSample], upto: int) -> tuple[float, float]:
    """The tree's cumulative (user, sys) at sample `upto`, dips removed."""
    user = max(s.cpu_user_s for s in samples[: upto + 1])
    sys_ = max(s.cpu_sys_s for s in samples[: upto + 1])
    return user, sys_


def account(
    monitor: MonitorData | None,
    window_ns: tuple[int, int],
    server_cpus: tuple[int, ...] | None,
    client_cpus: tuple[int, ...] | None,
    client_saturated: bool = False,
) -> CpuAccount | None:
    """The CPU over the measured window `window_ns` (CLOCK_MONOTONIC start, end), or None when
    the window was not sampled. `client_saturated`: the load generator's own verdict."""
    if monitor is None or not monitor.samples:
        return None
    i0 = _edge(monitor, monitor.window_start, window_ns[0], start=True)
    i1 = _edge(monitor, monitor.window_end, window_ns[1], start=False)
    if i0 is None or i1 is None or i1 <= i0:
        return None
    s = monitor.samples
    window = s[i1].t_s - s[i0].t_s
    if window <= 0:
        return None
    u0, y0 = _running_max(s, i0)
    u1, y1 = _running_max(s, i1)
    user, sys_ = max(0.0, u1 - u0), max(0.0, y1 - y0)

    per_cpu: dict[str, CpuTicks] = {}
    t0, t1 = s[i0].cpu_ticks, s[i1].cpu_ticks
    if t0 and t1:
        per_cpu = {name: _ticks_delta(t0[name], t1[name]) for name in t1 if name in t0}

    def busy_s(cpus: tuple[int, ...] | None) -> float | None:
        if cpus is None or not per_cpu:
            return None
        return sum(per_cpu[f"cpu{c}"].busy for c in cpus if f"cpu{c}" in per_cpu) * TICK_S

    n_server = len(server_cpus) if server_cpus else 0
    server_busy = busy_s(server_cpus)
    tree_s = user + sys_
    shared = bool(server_cpus and client_cpus and set(server_cpus) & set(client_cpus))
    source: Literal["cgroup", "cpu", "tree"] = "tree"
    group = _cgroup_delta(s[i0], s[i1], server_cpus)
    foreign_s = foreign_limit = None
    flag = False
    if group is not None:
        source = "cgroup"
        (total_ns, sys_ns), on_server_ns = group
        user, sys_ = (total_ns - sys_ns) / 1e9, sys_ns / 1e9
        if server_busy is not None and not shared:
            foreign_s = round(max(0.0, server_busy - on_server_ns / 1e9), 4)
            foreign_limit = round((FOREIGN_TICKS * TICK_S + FOREIGN_SHARE * window) * n_server, 4)
            flag = foreign_s > foreign_limit
    elif server_busy is not None and not shared:
        source = "cpu"
        ticks = [per_cpu[f"cpu{c}"] for c in server_cpus or () if f"cpu{c}" in per_cpu]
        user = sum(t.user for t in ticks) * TICK_S
        sys_ = sum(t.system + t.irq + t.softirq for t in ticks) * TICK_S
    # Whole microseconds from here on, so that the capped figures add up to the cap exactly:
    # scaled floats rounded one by one came out a microsecond over it (1.0000000000000002 CPUs).
    window_us, user_us, sys_us = round(window * 1e6), round(user * 1e6), round(sys_ * 1e6)
    capped = False
    if n_server:
        cap_us = n_server * window_us
        total_us = user_us + sys_us
        if total_us > cap_us > 0:
            # Counters move in whole clock ticks: an excess within 2 ticks per CPU is their
            # rounding, cut silently; beyond that the cut is reported.
            capped = total_us > cap_us + round(2 * n_server * TICK_S * 1e6)
            user_us = user_us * cap_us // total_us
            sys_us = cap_us - user_us
    n_client = len(client_cpus) if client_cpus else 0
    client_busy = busy_s(client_cpus)
    share = client_busy / (window * n_client) if client_busy is not None and n_client else None
    # A shared placement puts the server on the client's CPU by design: there the client's own
    # getrusage is the only fair judge of its saturation.
    saturated = client_saturated or (share is not None and not shared and share > CLIENT_SATURATION)
    used = {f"cpu{c}" for c in (*(server_cpus or ()), *(client_cpus or ()))}
    kept = {k: v for k, v in per_cpu.items() if k in used} if used else per_cpu
    return CpuAccount(
        window_s=window_us / 1e6,
        server_cpus=n_server,
        server_user_s=user_us / 1e6,
        server_sys_s=sys_us / 1e6,
        server_capped=capped,
        server_source=source,
        server_tree_s=round(tree_s, 6),
        server_cpus_busy_s=None if server_busy is None else round(server_busy, 4),
        client_cpus=n_client,
        client_cpus_busy_s=None if client_busy is None else round(client_busy, 4),
        client_busy_share=None if share is None else round(share, 4),
        client_saturated=saturated,
        monitor_cpu_s=monitor.monitor_cpu_s,
        steal_s=round(sum(v.steal for v in kept.values()) * TICK_S, 4),
        per_cpu=kept,
        foreign_s=foreign_s,
        foreign_limit_s=foreign_limit,
        foreign_flag=flag,
    )


def _cgroup_delta(
    a: MonitorSample, b: MonitorSample, server_cpus: tuple[int, ...] | None
) -> tuple[tuple[int, int], int] | None:
    """((all ns, system ns) of the server's cgroup between two samples, the ns of it that ran
    on the server's CPUs), or None without a cgroup at both."""
    if a.cgroup_ns is None or b.cgroup_ns is None or len(a.cgroup_ns) != len(b.cgroup_ns):
        return None
    per = [max(0, y - x) for x, y in zip(a.cgroup_ns, b.cgroup_ns, strict=True)]
    sys_a, sys_b = a.cgroup_sys_ns or [], b.cgroup_sys_ns or []
    sys_ns = (
        sum(max(0, y - x) for x, y in zip(sys_a, sys_b, strict=True))
        if len(sys_a) == len(sys_b) == len(per)
        else 0
    )
    total = sum(per)
    on_server = sum(per[c] for c in server_cpus or () if c < len(per))
    return (total, min(sys_ns, total)), on_server
