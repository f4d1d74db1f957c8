"""Read a forking server's `--xray` file and summarise it over the measured window (issue 13).

The file is written once, when the server stops, by servers/xray.py (Python servers) or
servers/c/process.c (c-process). Text, one record per line, every time on CLOCK_MONOTONIC in
nanoseconds (the clock the load generator's window is on), 0 for a step not reached:

    xray 1 <server>
    conn   <slot> <pid> <accept> <fork_start> <fork_end> <parent_closed_connfd>
    child  <slot> <start> <listenfd_closed> <exec> <first_echo> <exit>
    reap   <pid> <handler_ran> <reaped> <minflt> <majflt> <utime_us> <stime_us> <nvcsw> <nivcsw>
    parent <vmpte_kb> <pss_kb> <rss_kb>
    dropped <n>

`conn` is the parent's view of one connection, `child` what the child stamped into a shared
mapping (its slot), `reap` what the SIGCHLD handler got from wait4 (waitpid plus the child's
rusage). A connection is joined to its reap by pid, the first reap after its fork.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from records.schema import Spread, Xray

# The durations the report shows, each (name, from step, to step, words).
STEPS: tuple[tuple[str, str, str, str], ...] = (
    ("accept_to_fork", "accept", "fork_start", "accept returned -> fork called"),
    ("fork", "fork_start", "fork_end", "the parent inside fork()"),
    ("fork_to_child", "fork_start", "child_start", "fork called -> the child runs"),
    ("close_listenfd", "child_start", "listenfd_closed", "the child closes listenfd"),
    ("child_to_exec", "listenfd_closed", "exec", "listenfd closed -> exec called (inetd)"),
    ("child_to_first_echo", "listenfd_closed", "first_echo", "listenfd closed -> first echo"),
    ("accept_to_first_echo", "accept", "first_echo", "accept -> the child's first echo"),
    ("echo_to_exit", "first_echo", "exit", "first echo -> the child exits"),
    ("parent_close", "fork_end", "parent_closed", "fork returned -> the parent closed connfd"),
    ("exit_to_handler", "exit", "handler", "child exits -> SIGCHLD handler runs"),
    ("handler_to_reap", "handler", "reaped", "handler runs -> waitpid reaped it"),
    ("exit_to_reap", "exit", "reaped", "child exits -> reaped"),
    ("accept_to_reap", "accept", "reaped", "accept -> reaped: the connection's whole life"),
)
# The steps of one connection in the order Fig. 12.5 draws them.
TIMELINE = (
    "accept",
    "fork_start",
    "child_start",
    "fork_end",
    "parent_closed",
    "listenfd_closed",
    "exec",
    "first_echo",
    "exit",
    "handler",
    "reaped",
)
CHILD_FIELDS = ("minflt", "majflt", "utime_us", "stime_us", "nvcsw", "nivcsw")


class XrayError(ValueError):
    """An X-ray file this reader cannot use (the message names the file and line)."""


@dataclass(frozen=True, slots=True)
class Connection:
    steps: dict[str, int]  # step name -> CLOCK_MONOTONIC ns (only the steps reached)
    child: dict[str, int] | None  # wait4's rusage, None when never reaped


@dataclass(frozen=True, slots=True)
class XrayFile:
    server: str
    connections: list[Connection]
    parent: tuple[int, int, int] | None  # VmPTE, PSS, RSS in kB (-1: not readable)
    dropped: int


def read(path: Path) -> XrayFile:
    """Parse an X-ray file and join each connection with its child's stamps and its reap."""
    server = ""
    conns: list[tuple[int, int, dict[str, int]]] = []  # (slot, pid, steps)
    children: dict[int, dict[str, int]] = {}
    reaps: dict[int, list[tuple[int, dict[str, int], dict[str, int]]]] = {}
    parent = None
    dropped = 0
    for no, line in enumerate(path.read_text().splitlines(), 1):
        kind, *rest = line.split()
        try:
            v = [int(x) for x in rest] if kind != "xray" else []
        except ValueError:
            raise XrayError(f"{path}:{no}: not a number in {line!r}") from None
        if kind == "xray":
            if rest[:1] != ["1"]:
                raise XrayError(f"{path}:{no}: unknown X-ray format {rest[:1]}")
            server = rest[1] if len(rest) > 1 else ""
        elif kind == "conn" and len(v) == 6:
            steps = dict(
                zip(("accept", "fork_start", "fork_end", "parent_closed"), v[2:], strict=True)
            )
            conns.append((v[0], v[1], steps))
        elif kind == "child" and len(v) == 6:
            names = ("child_start", "listenfd_closed", "exec", "first_echo", "exit")
            children[v[0]] = dict(zip(names, v[1:], strict=True))
        elif kind == "reap" and len(v) == 9:
            steps = {"handler": v[1], "reaped": v[2]}
            reaps.setdefault(v[0], []).append(
                (v[2], steps, dict(zip(CHILD_FIELDS, v[3:], strict=True)))
            )
        elif kind == "parent" and len(v) == 3:
            parent = (v[0], v[1], v[2])
        elif kind == "dropped" and len(v) == 1:
            dropped = v[0]
        else:
            raise XrayError(f"{path}:{no}: unexpected record {line[:80]!r}")
    out = []
    for slot, pid, steps in conns:
        merged = {k: t for k, t in steps.items() if t}
        merged.update({k: t for k, t in children.get(slot, {}).items() if t})
        # The reap of this pid that came after this fork (a pid may be reused within a run).
        candidates = [r for r in reaps.get(pid, []) if r[0] >= steps["fork_start"]]
        rusage = None
        if candidates:
            _, rsteps, rusage = min(candidates, key=lambda r: r[0])
            merged.update(rsteps)
        out.append(Connection(merged, rusage))
    return XrayFile(server, out, parent, dropped)


def _spread(values: list[float]) -> Spread:
    s = sorted(values)

    def rank(q: float) -> float:
        return s[min(len(s) - 1, max(0, int(q * len(s) + 0.5) - 1))]

    return Spread(n=len(s), p10=rank(0.10), p50=rank(0.50), p90=rank(0.90))


def summarise(xf: XrayFile, window: tuple[int, int] | None) -> Xray:
    """The connections accepted inside `window` (CLOCK_MONOTONIC ns; None: all of them)."""
    inside = [
        c for c in xf.connections if window is None or window[0] <= c.steps["accept"] < window[1]
    ]
    complete = [c for c in inside if c.child is not None and "reaped" in c.steps]
    steps: dict[str, Spread] = {}
    for name, a, b, _ in STEPS:
        values = [
            (c.steps[b] - c.steps[a]) / 1e3 for c in complete if a in c.steps and b in c.steps
        ]
        if values:
            steps[name] = _spread(values)
    child = (
        {
            key: _spread([float(c.child[key]) for c in complete if c.child is not None])
            for key in CHILD_FIELDS
        }
        if complete
        else {}
    )
    timeline: dict[str, float] = {}
    if complete:
        life = sorted(complete, key=lambda c: c.steps["reaped"] - c.steps["accept"])
        median = life[(len(life) - 1) // 2]
        t0 = median.steps["accept"]
        timeline = {k: (median.steps[k] - t0) / 1e3 for k in TIMELINE if k in median.steps}
    pte, pss, rss = xf.parent or (-1, -1, -1)
    return Xray(
        connections=len(complete),
        incomplete=len(inside) - len(complete),
        dropped=xf.dropped,
        steps_us=steps,
        child=child,
        timeline_us=timeline,
        parent_vmpte_kb=pte if pte >= 0 else None,
        parent_pss_kb=pss if pss >= 0 else None,
        parent_rss_kb=rss if rss >= 0 else None,
    )
