"""The CS:APP 12.1.2 scorecard: each claim of the book, the figure from this run, a verdict.

Section 12.1.2 lists the pros and cons of process-based concurrency: separate address spaces
protect (a process cannot overwrite another's memory) but make sharing state need explicit IPC,
and processes tend to be slower because process control and IPC are expensive. Section 12.1.1
(Fig. 12.5) adds two rules a forking server must follow: the parent closes its copy of connfd,
and the SIGCHLD handler reaps zombies in a loop.

One function per claim. Each computes its figure and verdict from the run's cells (medians over
trials), says when the difference is inside the trials' spread, refuses to call a client-limited
figure capacity, and says "not measured in this run" when the cells it needs are absent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from analysis import fmt, micro
from analysis.charts import label
from analysis.load import Run, ok_cells
from analysis.stats import Figure, pick, summarise


@dataclass(frozen=True)
class Claim:
    claim: str
    figure: str
    verdict: str

    @property
    def measured(self) -> bool:
        return self.figure != fmt.NOT_MEASURED


def _scen(run: Run, scenario: str) -> pd.DataFrame:
    d = ok_cells(run)
    return d if d.empty else d[d["scenario"] == scenario]


def _fault(run: Run, fault: str) -> pd.DataFrame:
    """Cells run with a fault switch on (in its own scenario or any other)."""
    d = ok_cells(run, faults=True)
    return d[d["fault"] == fault]


def _caveats(*figs: Figure) -> str:
    notes = []
    if any(f.saturated for f in figs):
        notes.append("client-limited: a lower bound, not capacity")
    if any(f.noisy for f in figs):
        notes.append("CV over 10%: noisy")
    if all(f.n > 1 for f in figs) and len(figs) == 2:
        a, b = figs
        if a.lo <= b.hi and b.lo <= a.hi:
            notes.append("the trials' ranges overlap: the difference is inside the noise")
    return f" ({'; '.join(notes)})" if notes else ""


def _times(a: float, b: float) -> str:
    """How many times a is b, for 'N x fewer/more' sentences."""
    return f"{max(a, b) / min(a, b):.1f}x" if min(a, b) > 0 else "n/a"


def _pair(s: pd.DataFrame, a: str, b: str, prefer: int = 10) -> tuple[int, Figure, Figure] | None:
    """Figures of servers a and b at the same connections: `prefer` if both have it."""
    if s.empty:
        return None
    common = set(s[s["server"] == a]["connections"]) & set(s[s["server"] == b]["connections"])
    if not common:
        return None
    conns = prefer if prefer in common else max(int(c) for c in common)
    fa, fb = pick(s, a, connections=conns), pick(s, b, connections=conns)
    return (conns, fa, fb) if fa and fb else None


def _not(claim: str, why: str) -> Claim:
    return Claim(claim, fmt.NOT_MEASURED, f"{fmt.NOT_MEASURED}: {why}")


# --------------------------------------------------------------------------- claims


# Who the fork-per-connection server is measured against, best match to the book first: the
# book's threaded twin (Fig. 12.14), then whatever non-forking server the run has.
RIVALS = ("thread", "threadpool", "uvloop", "asyncio", "multiplex", "prefork")


def processes_are_slower(run: Run) -> Claim:
    claim = "Processes are slower than threads (12.1.2: process control and IPC overhead)"
    s = summarise(_scen(run, "per-request"), "requests_per_s")
    found = next(((r, p) for r in RIVALS if (p := _pair(s, "process", r)) is not None), None)
    if found is None:
        return _not(claim, "needs 'per-request' cells of process and thread (or another rival)")
    rival, (conns, fp, ft) = found
    them = label(rival)
    figure = (
        f"connection per request, {conns} clients: fork per connection "
        f"{fmt.num(fp.median)} conn/s, {them} {fmt.num(ft.median)} conn/s"
    )
    more = "fewer" if fp.median < ft.median else "more"
    verdict = (
        f"fork per connection accepts {_times(fp.median, ft.median)} {more} connections/s than "
        f"{them} on this machine{_caveats(fp, ft)}"
    )
    persistent = summarise(_scen(run, "concurrency"), "requests_per_s")
    pp = _pair(persistent, "process", rival)
    if pp is not None:
        c2, a, b = pp
        figure += (
            f"; persistent, {c2} connections: {fmt.num(a.median)} vs {fmt.num(b.median)} req/s"
        )
        verdict += (
            f"; once connected, a process echoes at {fmt.ratio(a.median / b.median)} "
            f"the rate of {them}{_caveats(a, b)}"
        )
    return Claim(claim, figure, verdict)


def process_control_overhead(run: Run) -> Claim:
    claim = "Process control (fork, waitpid) is expensive (12.1.2)"
    m = micro.load(run.path)
    fork = micro.figure(m, "fork_wait.small_parent")
    fork_c = micro.figure(m, "fork_wait.small_parent", "c")
    thread = micro.figure(m, "thread_start_join")
    parts, verdicts = [], []
    if fork is not None and thread is not None:
        floor = f" (C: {fmt.num(fork_c)} us)" if fork_c is not None else ""
        parts.append(
            f"fork + exit + waitpid {fmt.num(fork)} us{floor}, "
            f"thread start + join {fmt.num(thread)} us"
        )
        verdicts.append(f"creating a process costs {fmt.ratio(fork / thread)} creating a thread")
    s = summarise(_scen(run, "per-request"), "cpu_us_per_req")
    pair = _pair(s, "process", "thread")
    if pair is not None:
        conns, fp, ft = pair
        parts.append(
            f"server CPU per connection ({conns} clients): fork {fmt.num(fp.median)} us, "
            f"thread {fmt.num(ft.median)} us"
        )
        verdicts.append(
            f"the forking server spends {fmt.ratio(fp.median / ft.median)} the threaded "
            f"server's CPU per connection{_caveats(fp, ft)}"
        )
    if not parts:
        return _not(claim, "needs the fork/thread microbenchmarks or monitored 'per-request' cells")
    return Claim(claim, "; ".join(parts), "; ".join(verdicts))


def ipc_overhead(run: Run) -> Claim:
    claim = "IPC is expensive next to memory shared in one address space (12.1.2)"
    m = micro.load(run.path)
    parts, verdicts = [], []
    lock = micro.figure(m, "counter.thread_lock.1w")
    for place in ("same-cpu", "cross-cpu"):
        rtt = micro.figure(m, f"rtt.pipe[{place}]")
        if rtt is None:
            continue
        parts.append(f"pipe round trip between processes, {place}: {fmt.num(rtt)} us")
        if lock is not None:
            verdicts.append(
                f"one message to another process and back ({place}) costs {fmt.ratio(rtt / lock)} "
                "a locked update of memory threads share"
            )
    if lock is not None and parts:
        parts.append(f"threading.Lock-guarded increment {fmt.num(lock)} us")
    s = summarise(_scen(run, "shared-counter"), "requests_per_s")
    for server in ("prefork", "process"):
        off = pick(s, server, shared_counter=None)
        pipe = pick(s, server, shared_counter="pipe")
        if off and pipe:
            parts.append(
                f"{server} requests/s, no counter {fmt.num(off.median)}, "
                f"counts sent over a pipe {fmt.num(pipe.median)}"
            )
            verdicts.append(
                f"reporting counts over a pipe changes {server}'s throughput by "
                f"{fmt.pct(pipe.median / off.median - 1)}{_caveats(off, pipe)}"
            )
            break
    if not parts:
        return _not(claim, "needs IPC round-trip microbenchmarks or 'shared-counter' pipe cells")
    return Claim(claim, "; ".join(parts), "; ".join(verdicts) or "see the figure")


def _counter_rows(run: Run, mode: str) -> pd.DataFrame:
    d = _scen(run, "shared-counter")
    if d.empty or "stats_bytes" not in d.columns:
        return d.iloc[0:0]
    d = d[(d["shared_counter"] == mode) & d["stats_bytes"].notna()]
    return d[d["bytes_received_total"].notna()]


def sharing_needs_ipc(run: Run) -> Claim:
    claim = "Sharing state between processes needs explicit IPC (12.1.2)"
    d = run.df
    s = summarise(_scen(run, "shared-counter"), "requests_per_s")
    parts, verdicts = [], []
    for mode in ("shm", "pipe"):
        cells = d[(d["scenario"] == "shared-counter") & (d["shared_counter"] == mode)]
        cells = cells[cells["model"] == "process"]
        if cells.empty:
            continue
        server = str(cells["server"].iloc[0])
        c = cells[cells["server"] == server]
        # The runner compares the server's STATS count with every byte the client got back
        # (its primer included) and fails the cell when they differ.
        wrong = c[(c["status"] == "failed") & c["reason"].str.startswith("shared counter")]
        right = c[c["status"] == "ok"]
        counted = int(right["stats_bytes"].sum()) if "stats_bytes" in right else 0
        parts.append(
            f"{server} + {mode}: {len(right)} trial(s) counted exactly ({counted:,} B in all), "
            f"{len(wrong)} miscounted"
        )
        off, on = pick(s, server, shared_counter=None), pick(s, server, shared_counter=mode)
        cost = (
            f", at {fmt.pct(on.median / off.median - 1)} throughput vs no counter"
            f"{_caveats(off, on)}"
            if off and on
            else ""
        )
        verdicts.append(
            f"with {mode} the children's counts {'add up' if wrong.empty else 'do NOT add up'}"
            + cost
        )
    if not parts:
        return _not(claim, "needs 'shared-counter' cells of a process model in shm or pipe mode")
    return Claim(claim, "; ".join(parts), "; ".join(verdicts))


def address_spaces_protect(run: Run) -> Claim:
    claim = "Separate address spaces protect: a child cannot write the parent's memory (12.1.2)"
    rows = _counter_rows(run, "naive")
    if rows.empty:
        return _not(claim, "needs 'shared-counter' cells in naive mode with the server's STATS")
    server = str(rows["server"].iloc[0])
    r = rows[rows["server"] == server]
    counted, echoed = int(r["stats_bytes"].sum()), int(r["bytes_received_total"].sum())
    figure = f"{server}, naive global counter: parent reports {counted:,} B of {echoed:,} B echoed"
    if counted < echoed:
        verdict = (
            f"confirmed: the children's {echoed - counted:,} B of increments landed in their own "
            "copy-on-write copies and never reached the parent"
        )
    else:
        verdict = "not confirmed: the parent's counter saw every byte (did the server fork?)"
    return Claim(claim, figure, verdict)


def _worst_cell(d: pd.DataFrame, col: str, base: str | None) -> tuple[int, int, int]:
    """(growth of `col`, connections opened, concurrent clients) of the cell that grew most
    relative to the connections it served."""
    growth = (d[col] - (d[base] if base else 0)).fillna(0)
    opened = d["connections_opened"].fillna(0).clip(lower=1)
    i = (growth / opened).idxmax()
    return int(growth[i]), int(d["connections_opened"].fillna(0)[i]), int(d["connections"][i])


def _process_control(run: Run, fault: str | None = None) -> pd.DataFrame:
    """The process server as Fig. 12.5 writes it: a fault scenario's control cells when the run
    has them (same load, same limits), else its monitored per-request cells."""
    if fault is not None:
        d = ok_cells(run, faults=True)
        d = d[(d["scenario"] == fault) & (d["fault"].fillna("") == "")]
        d = d[(d["server"] == "process") & d["fds_peak"].notna()]
        if not d.empty:
            return d
    d = _scen(run, "per-request")
    return d if d.empty else d[(d["server"] == "process") & d["fds_peak"].notna()]


def parent_must_close_connfd(run: Run) -> Claim:
    claim = "The parent must close its copy of connfd (12.1.1, Fig. 12.5)"
    leak = _fault(run, "leak-connfd")
    leak = leak if leak.empty else leak[leak["fds_peak"].notna()]
    control = _process_control(run, "leak-connfd")
    parts, verdicts = [], []
    if not leak.empty:
        # One cell for every number quoted: the one whose descriptors grew most. Connections
        # are not the yardstick (the measured phase's count leaves out the warm-up's, while the
        # leak keeps both); the clients in flight are: a correct server holds about one
        # descriptor per live client, a leaking one keeps every finished client's too.
        i = (leak["fds_peak"] - leak["fds_base"]).idxmax()
        base, peak = int(leak["fds_base"][i]), int(leak["fds_peak"][i])
        end, cw = leak["fds_end"].get(i), leak["close_wait_peak"].get(i)
        conns = int(leak["connections"][i])
        parts.append(
            f"--leak-connfd, {conns} clients: open descriptors (whole process tree) rose "
            f"from {base:,} to {peak:,}"
            + (f" ({int(end):,} open at the end)" if pd.notna(end) else "")
            + (
                f", {int(cw):,} sockets in CLOSE_WAIT (clients gone, connections never freed)"
                if pd.notna(cw) and cw
                else ""
            )
        )
        verdicts.append(
            "confirmed: the parent kept a descriptor for every client that had left"
            if peak - base > 8 * conns + 8
            else "not confirmed: descriptors stayed within what the live clients explain"
        )
    if not control.empty:
        grow, opened, conns = _worst_cell(control, "fds_peak", "fds_base")
        parts.append(
            f"Fig. 12.5 as written: descriptors (whole process tree) grew by at most "
            f"{grow:,} over {opened:,} connections from {conns} clients"
        )
        if leak.empty:
            # each child in the tree holds a few descriptors of its own (stdio, listenfd copy)
            bounded = grow < max(0.5 * opened, 8 * conns + 8)
            state = "bounded by the clients in flight" if bounded else "GROWING"
            verdicts.append(
                f"with connfd closed the descriptors stay {state}; the leak "
                f"experiment was {fmt.NOT_MEASURED}"
            )
    if not parts:
        return _not(claim, "needs 'leak-connfd' cells or monitored 'per-request' process cells")
    return Claim(claim, "; ".join(parts), "; ".join(verdicts))


def zombies_reaped_in_loop(run: Run) -> Claim:
    claim = "Zombies must be reaped, in a loop, by the SIGCHLD handler (12.1.1, Fig. 12.5)"
    naive = _fault(run, "naive-reaper")
    naive = naive if naive.empty else naive[naive["zombies_peak"].notna()]
    control = _process_control(run, "naive-reaper")
    parts, verdicts = [], []
    if not naive.empty:
        peak, opened, _ = _worst_cell(naive, "zombies_peak", None)
        parts.append(f"--naive-reaper: up to {peak:,} zombies over {opened:,} connections")
        verdicts.append(
            "confirmed: a handler that reaps one child per signal leaves zombies behind"
            if peak > 0
            else "no zombie was seen with the naive reaper in this run"
        )
    if not control.empty:
        peak = int(control["zombies_peak"].max())
        opened = int(control["connections_opened"].fillna(0).sum())
        parts.append(f"loop reaper: at most {peak:,} zombies at once over {opened:,} connections")
        if naive.empty:
            verdicts.append(
                f"the loop reaper kept zombies at {peak:,} or fewer (a child is a "
                "zombie briefly between exit and SIGCHLD); the naive-reaper "
                f"experiment was {fmt.NOT_MEASURED}"
            )
    if not parts:
        return _not(claim, "needs 'naive-reaper' cells or monitored 'per-request' process cells")
    return Claim(claim, "; ".join(parts), "; ".join(verdicts))


CLAIMS: list[Callable[[Run], Claim]] = [
    processes_are_slower,
    process_control_overhead,
    ipc_overhead,
    sharing_needs_ipc,
    address_spaces_protect,
    parent_must_close_connfd,
    zombies_reaped_in_loop,
]


def scorecard(run: Run) -> list[Claim]:
    return [claim(run) for claim in CLAIMS]
