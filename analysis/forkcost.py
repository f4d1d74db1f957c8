"""Where a fork's cost goes (issue 13), from this run's cells.

* Every server as a share of the ceiling: its capacity (best requests/s over the concurrency
  points it limited itself) and its 1-connection round trip beside the ceiling's: the better
  measured of `c-epoll` and `c-uring` (issue 24), in the same run.
* Python's fork server beside the book's in C (`c-process`), connection per request: the
  difference in CPU per connection is Python's part of the fork cost, C's figure the model's.
* The fork X-ray (the `xray` scenario): per connection, the parent's time inside fork(), the
  child's page faults, CPU and context switches (wait4's rusage), the steps from accept to reap,
  and one real connection drawn as Fig. 12.5's timeline.

Every figure is a median over the run's trials with its interval; a figure the run lacks says
so. The X-ray's own cost (a few stamps per connection) is paid only by the X-ray cells.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass

import pandas as pd

from analysis import fmt
from analysis.document import Table
from analysis.results import Run
from analysis.stats import Capacity, Figure, capacity, pick
from records import schema
from records.registry import SERVERS, Role, by_role
from records.xray import STEPS, TIMELINE

CEILING = by_role(Role.CEILING)
CEILINGS = (CEILING, by_role(Role.CEILING_URING))  # epoll and io_uring: the best measured leads
PY_FORK = by_role(Role.BOOK_PROCESS)
C_FORK = by_role(Role.C_BOOK_PROCESS)

# The stacked bar: one connection's life, accept to reap, as consecutive segments between the
# steps a server recorded (inetd's child execs cat: nothing is stamped between exec and reap).
BAR_STEPS = (
    "accept",
    "fork_start",
    "child_start",
    "listenfd_closed",
    "first_echo",
    "exec",
    "exit",
    "handler",
    "reaped",
)
SEGMENT_WORDS = {
    "fork_start": "accept to fork()",
    "child_start": "fork() until the child runs",
    "listenfd_closed": "child closes listenfd",
    "first_echo": "to the first echo",
    "exec": "to exec (dup2 onto stdin/stdout)",
    "exit": "echo until the client closes, exit",
    "handler": "exit until SIGCHLD's handler runs",
    "reaped": "waitpid/wait4 reaps it",
}
EXEC_WORDS = "the exec'd program runs and exits, until the handler"


# issue 21: the parent's own time inside fork() (copying page tables, the parent's share of a
# fork) is a segment of its own, apart from the wait until the child is scheduled.
PAIR_WORDS = {
    ("fork_start", "fork_end"): "the parent inside fork() (copying its page tables)",
    ("fork_end", "child_start"): "fork() has returned; the child waits to run",
    ("fork_start", "child_start"): "inside fork(), until the child runs",
}
STILL_IN_FORK = "the parent still inside fork() (the child already runs)"


def segments(timeline: dict[str, float]) -> list[tuple[str, float, float]]:
    """(words, start, width) for each consecutive pair of recorded steps. fork() returning in
    the parent goes where its time puts it: before the child runs, or after."""
    present = [s for s in BAR_STEPS if s in timeline]
    if "fork_end" in timeline and "fork_start" in present:
        t = timeline["fork_end"]
        after = present.index("fork_start")
        while after + 1 < len(present) and timeline[present[after + 1]] <= t:
            after += 1
        present.insert(after + 1, "fork_end")
    out = []
    for a, b in itertools.pairwise(present):
        if a == "exec":
            words = EXEC_WORDS
        elif (a, b) in PAIR_WORDS:
            words = PAIR_WORDS[a, b]
        elif b == "fork_end":
            words = STILL_IN_FORK
        else:
            words = SEGMENT_WORDS[b]
        out.append((words, timeline[a], max(0.0, timeline[b] - timeline[a])))
    return out


CHILD_WORDS = {
    "minflt": "minor page faults (copy-on-write)",
    "majflt": "major page faults",
    "utime_us": "CPU user+sys, us (rusage)",
    "nvcsw": "voluntary context switches",
    "nivcsw": "involuntary context switches",
}


@dataclass(frozen=True)
class XrayPoint:
    """One forking server (and its variant) over the run's X-ray trials."""

    server: str
    label: str
    trials: list[schema.Xray]

    def step(self, name: str) -> Figure | None:
        return _over([x.steps_us[name].p50 for x in self.trials if name in x.steps_us])

    def child(self, key: str) -> Figure | None:
        if key == "utime_us":  # rusage splits user/sys by tick sampling: show the sum
            vals = [
                x.child["utime_us"].p50 + x.child["stime_us"].p50
                for x in self.trials
                if "utime_us" in x.child
            ]
            return _over(vals)
        return _over([x.child[key].p50 for x in self.trials if key in x.child])

    def parent(self, attr: str) -> Figure | None:
        vals = [getattr(x, attr) for x in self.trials if getattr(x, attr) is not None]
        return _over([float(v) for v in vals])

    def timeline(self) -> dict[str, float]:
        """The trial whose median connection lived the median time: its one connection."""
        with_tl = [x for x in self.trials if x.timeline_us.get("reaped")]
        if not with_tl:
            return {}
        with_tl.sort(key=lambda x: x.timeline_us["reaped"])
        return with_tl[(len(with_tl) - 1) // 2].timeline_us

    @property
    def connections(self) -> int:
        return sum(x.connections for x in self.trials)


def _over(vals: list[float]) -> Figure | None:
    if not vals:
        return None
    return Figure(statistics.median(vals), min(vals), max(vals), len(vals), float("nan"), False)


def _spread(f: Figure | None) -> str:
    if f is None:
        return fmt.NOT_MEASURED
    return fmt.spread(f.median, f.lo, f.hi, f.n)


def xray_points(run: Run) -> list[XrayPoint]:
    groups: dict[tuple[str, bool], list[schema.Xray]] = {}
    for cell in run.cells.values():
        if cell.scenario != "xray" or cell.status != "ok" or cell.xray is None:
            continue
        key = (cell.server, cell.params.gc_freeze)
        groups.setdefault(key, []).append(cell.xray)
    order = list(SERVERS)
    out = []
    for (server, frozen), trials in sorted(
        groups.items(),
        key=lambda kv: (order.index(kv[0][0]) if kv[0][0] in order else 99, kv[0][1]),
    ):
        spec = SERVERS.get(server)
        label = (spec.label if spec else server) + (" + gc.freeze()" if frozen else "")
        out.append(XrayPoint(server, label, trials))
    return out


# --------------------------------------------------------------------------- the ceiling


def ceiling_table(run: Run) -> tuple[Table, str]:
    """Every server's capacity and 1-connection round trip as a share of the ceiling's. A capacity
    only from points the server limited (stats.capacity): else 'at least', and no share."""
    rps = run.findings.summary("requests_per_s", "concurrency")
    p50 = run.findings.summary("p50_us", "concurrency")
    ceiling = best_ceiling(rps)
    top = capacity(rps, ceiling)
    lat0 = pick(p50, ceiling, connections=1)
    rows = []
    for server in [s for s in SERVERS if not rps.empty and s in set(rps["server"])]:
        cap = capacity(rps, server)
        lat = pick(p50, server, connections=1)
        lat_txt = fmt.NOT_MEASURED
        lat_share = ""
        if lat is not None:
            lat_txt = fmt.spread(lat.median, lat.lo, lat.hi, lat.n)
            if lat0 is not None and lat.median:
                lat_share = fmt.pct(lat0.median / lat.median)
        spec = SERVERS[server]
        rows.append(
            [
                spec.label,
                spec.language,
                cap.text(),
                _share(cap, top, server == ceiling),
                lat_txt,
                lat_share,
            ]
        )
    words = (
        f"The ceiling is the best measured of the two one-thread C servers, epoll and "
        f"io_uring: in this run {SERVERS[ceiling].label}. A "
        "capacity is a server's best requests/s over the concurrency points it limited itself "
        "(persistent connections, 64 B, at least 2 connections, every client served, no trial "
        "client-saturated); where the load generator was the limit the table says 'at least', "
        "and a share of the ceiling is given only when both figures are the servers' own. The "
        "round trip is the median latency at 1 connection; 'of ceiling' is the ceiling's over the "
        "server's (100% = as fast). Server CPU per request at one rate ('which model when') is "
        "the comparison this machine can always make."
    )
    headers = [
        "server",
        "language",
        "capacity, req/s",
        "of ceiling",
        "round trip at 1 conn., us",
        "of ceiling",
    ]
    return Table(headers, rows, "Every server as a share of the ceiling"), words


def best_ceiling(rps: pd.DataFrame) -> str:
    """c-epoll or c-uring, whichever measured more: a capacity the server limited beats a
    floor the load generator set; between two of a kind, the higher figure."""

    def rank(name: str) -> tuple[bool, float]:
        cap = capacity(rps, name)
        fig = cap.best or cap.floor
        return cap.best is not None, fig.median if fig else 0.0

    return max(CEILINGS, key=rank)


def _share(cap: Capacity, ceiling: Capacity, is_ceiling: bool) -> str:
    """A capacity as a share of the ceiling's, only when both were the servers' own limits."""
    if is_ceiling:
        return "100%" if ceiling.best is not None else "n/a: never the limit here"
    if cap.best is None:
        return "n/a: the load generator was the limit"
    if ceiling.best is None:
        return "n/a: the ceiling was never the limit here"
    if cap.floor is not None and cap.floor.median > cap.best.median:
        return f"at least {fmt.pct(cap.best.median / ceiling.best.median)}"
    return fmt.pct(cap.best.median / ceiling.best.median)


# --------------------------------------------------------------------------- Python vs C fork


def _python_part(py: Figure | None, c: Figure | None) -> str:
    """What Python adds to the C server's CPU per connection, in us and as a share."""
    if py is None or c is None or not py.median:
        return fmt.NOT_MEASURED
    extra = py.median - c.median
    return f"{fmt.num(extra)} us ({fmt.pct(extra / py.median)})"


def python_vs_c(run: Run) -> tuple[Table, list[str]]:
    rps = run.findings.summary("requests_per_s", "per-request")
    cpu = run.findings.summary("cpu_us_per_req", "per-request")
    rows = []
    last = None
    for conns in sorted({int(c) for c in rps["connections"].dropna()}) if not rps.empty else []:
        py, c = pick(rps, PY_FORK, connections=conns), pick(rps, C_FORK, connections=conns)
        pyc, cc = pick(cpu, PY_FORK, connections=conns), pick(cpu, C_FORK, connections=conns)
        if py is None and c is None:
            continue
        ratio = fmt.ratio(c.median / py.median) if py and c and py.median else fmt.NOT_MEASURED
        part = _python_part(pyc, cc)
        rows.append(
            [
                str(conns),
                _spread(py),
                _spread(c),
                ratio,
                _spread(pyc),
                _spread(cc),
                part,
            ]
        )
        if pyc and cc:
            last = (conns, pyc, cc)
    words = [
        "The same model, Fig. 12.5, in Python and in C, connection per request (connect, 64 B "
        "echo, close). CPU per connection is the server's own CPU over the window (its "
        "cgroup: the parent and every child, live or reaped; where the machine has no cgroup, "
        "its CPU's busy time) divided by the connections served: the parent's accept and fork, "
        "the child's life, the reap.",
    ]
    if last is not None:
        conns, pyc, cc = last
        words.append(
            f"At {conns} clients the C server spends {fmt.num(cc.median)} us of CPU per "
            f"connection: that much is the model (fork, a child, exit, waitpid, on this "
            f"kernel). The Python server spends {fmt.num(pyc.median)} us: the other "
            f"{_python_part(pyc, cc)} is Python's part (a bigger parent to copy, an "
            "interpreter that writes to every page it touches, so each is a copy-on-write "
            "fault)."
        )
    headers = [
        "clients",
        f"{PY_FORK} conn/s",
        f"{C_FORK} conn/s",
        "C / Python",
        f"{PY_FORK} CPU us/conn",
        f"{C_FORK} CPU us/conn",
        "Python's part",
    ]
    return Table(headers, rows, "Fork per connection: Python beside C"), words


# --------------------------------------------------------------------------- the X-ray


def xray_table(run: Run) -> Table:
    points = xray_points(run)
    rows: list[list[str]] = []
    for name, _a, _b, words in STEPS:
        cells = [_spread(p.step(name)) for p in points]
        if any(c != fmt.NOT_MEASURED for c in cells):
            rows.append([words + ", us", *cells])
    for key, words in CHILD_WORDS.items():
        rows.append([f"child: {words}", *[_spread(p.child(key)) for p in points]])
    rows.append(
        [
            "parent: page tables (VmPTE), KiB",
            *[_spread(p.parent("parent_vmpte_kb")) for p in points],
        ]
    )
    rows.append(
        ["parent: PSS at the stop, KiB", *[_spread(p.parent("parent_pss_kb")) for p in points]]
    )
    rows.append(["connections recorded in the windows", *[f"{p.connections:,}" for p in points]])
    dropped = [sum(x.dropped + x.incomplete for x in p.trials) for p in points]
    rows.append(["dropped or incomplete records", *[f"{n:,}" for n in dropped]])
    return Table(
        ["per connection (median of each trial's median)", *[p.label for p in points]],
        rows,
        "The fork X-ray: one connection at a time (1 client, connection per request)",
    )


STEP_WORDS = {
    "accept": "accept() returns connfd",
    "fork_start": "parent calls fork()",
    "child_start": "child runs",
    "fork_end": "fork() returns in the parent",
    "parent_closed": "parent closes connfd",
    "listenfd_closed": "child closes listenfd",
    "exec": "child calls exec (cat)",
    "first_echo": "child writes the first echo",
    "exit": "child exits",
    "handler": "SIGCHLD handler runs",
    "reaped": "waitpid reaps the child",
}


def timeline_table(run: Run) -> Table:
    points = [p for p in xray_points(run) if "gc.freeze" not in p.label]
    lines = {p.label: p.timeline() for p in points}
    rows = []
    for step in TIMELINE:
        cells = [
            f"{fmt.num(lines[p.label][step])}" if step in lines[p.label] else "-" for p in points
        ]
        if any(c != "-" for c in cells):
            rows.append([STEP_WORDS[step], *cells])
    return Table(
        ["step (us since accept)", *[p.label for p in points]],
        rows,
        "One real connection through Fig. 12.5 (the run's median connection)",
    )
