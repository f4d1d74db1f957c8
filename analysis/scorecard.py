"""The CS:APP 12.1.2 scorecard: each claim of the book, the figures from this run, a verdict that
can fail.

Section 12.1.2 lists the pros and cons of process-based concurrency: separate address spaces
protect (a process cannot overwrite another's memory) but make sharing state need explicit IPC,
and processes tend to be slower because process control and IPC are expensive. Section 12.1.1
(Fig. 12.5) adds two rules a forking server must follow: the parent closes its copy of connfd,
and the SIGCHLD handler reaps zombies in a loop.

One function per claim, over the run's evidence (its cells and microbenchmarks). Each names
its servers by their role in the registry (Fig. 12.5's process server, Fig. 12.14's thread
server), compares like with like (a message between processes against the same message
between threads, at the same CPU placement), and maps its figures through a written rule
(analysis.verdict) to confirmed, not confirmed, contradicted or inconclusive. Where this
machine contradicts the book, the verdict says so.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from analysis import fmt, ipc, micro
from analysis.charts import label
from analysis.results import Findings, Run
from analysis.stats import Figure, pick
from analysis.verdict import Outcome, Verdict, combine, less, parts_text
from records.registry import Role, by_role

BOOK_PROCESS = by_role(Role.BOOK_PROCESS)
BOOK_THREAD = by_role(Role.BOOK_THREAD)
HEADLINE_CLIENTS = 10
AT_LOAD_CONTEXT = 100
AT_LOAD_SERVERS = (BOOK_PROCESS, BOOK_THREAD, by_role(Role.CEILING), by_role(Role.CEILING_URING))


@dataclass(frozen=True)
class Evidence:
    """What the claims read: the run's findings (its ok cells and their points, derived once:
    the report's own when built from a run) and its microbenchmark figures."""

    df: pd.DataFrame
    micro: pd.DataFrame
    shared: Findings | None = None  # the run's findings; None: derived from `df` here

    @classmethod
    def of(cls, run: Run) -> Evidence:
        return cls(run.df, run.micro, run.findings)

    @functools.cached_property
    def findings(self) -> Findings:
        return self.shared if self.shared is not None else Findings(self.df)

    @functools.cached_property
    def e2e(self) -> ipc.EndToEnd:
        """The shared-counter cells' server CPU per request (analysis.ipc), read once."""
        return ipc.end_to_end_of(self.findings)

    def ok(self, scenario: str | None = None, faults: bool = False) -> pd.DataFrame:
        return self.findings.cells(scenario, faults=faults)

    def summary(self, metric: str, scenario: str) -> pd.DataFrame:
        return self.findings.summary(metric, scenario)

    def micro_fig(self, name: str, impl: str = "python") -> Figure | None:
        return micro.fig(self.micro, name, impl)


@dataclass(frozen=True)
class Claim:
    claim: str
    rule: str
    figure: str
    verdict: Verdict
    why: str
    outcomes: tuple[Outcome, ...] = ()

    @property
    def measured(self) -> bool:
        return self.verdict != Verdict.INCONCLUSIVE or self.figure != fmt.NOT_MEASURED

    @property
    def verdict_text(self) -> str:
        return f"**{self.verdict}**: {self.why}"

    @property
    def parts(self) -> int:
        return len(self.outcomes)


def _fig(f: Figure | None, unit: str) -> str:
    if f is None:
        return fmt.NOT_MEASURED
    if unit == "us":
        return fmt.us_spread(f.median, f.lo, f.hi, f.n)
    return f"{fmt.spread(f.median, f.lo, f.hi, f.n)} {unit}".rstrip()


def _claim(claim: str, rule: str, figures: list[str], outcomes: list[Outcome]) -> Claim:
    verdict = combine(outcomes)
    return Claim(claim, rule, "; ".join(figures), verdict, parts_text(outcomes), tuple(outcomes))


# --------------------------------------------------------------------------- claims


def processes_are_slower(ev: Evidence) -> Claim:
    claim = "Processes are slower than threads (12.1.2: process control and IPC overhead)"
    rule = (
        f"connections/s of Fig. 12.5's server ({BOOK_PROCESS}) below Fig. 12.14's "
        f"({BOOK_THREAD}), connection per request, {HEADLINE_CLIENTS} clients, by the "
        "comparison rule"
    )
    s = ev.summary("requests_per_s", "per-request")
    fp = pick(s, BOOK_PROCESS, connections=HEADLINE_CLIENTS)
    ft = pick(s, BOOK_THREAD, connections=HEADLINE_CLIENTS)
    figures = [
        f"connection per request, {HEADLINE_CLIENTS} clients: {label(BOOK_PROCESS)} "
        f"{_fig(fp, 'conn/s')}, {label(BOOK_THREAD)} {_fig(ft, 'conn/s')}"
    ]
    if fp and ft and ft.median > 0:
        figures.append(f"ratio {fmt.ratio(fp.median / ft.median)}")
    # issue 21: for context at load, what the server decides: CPU per request at one offered
    # rate, the book's two servers beside the ceilings (c-epoll, c-uring)
    load = ev.summary("cpu_us_per_req", "at-load")
    at = [(label(n), pick(load, n, connections=AT_LOAD_CONTEXT)) for n in AT_LOAD_SERVERS]
    if any(f for _, f in at):
        rate = ev.ok("at-load")["rate"].dropna()
        offered = f"{fmt.num(float(rate.iloc[0]))} req/s, " if len(rate) else ""
        figures.append(
            f"for context, once connected ({offered}{AT_LOAD_CONTEXT} persistent connections, "
            "server CPU per request): "
            + ", ".join(f"{w} {_fig(f, 'us')}" for w, f in at if f is not None)
        )
    return _claim(claim, rule, figures, [less(fp, ft, "connections/s, process vs thread")])


def process_control_overhead(ev: Evidence) -> Claim:
    claim = "Process control (fork, waitpid) is expensive (12.1.2)"
    rule = (
        "fork + _exit + waitpid costs more than thread start + join (microbenchmark rounds), "
        f"and {BOOK_PROCESS} spends more server CPU per connection than {BOOK_THREAD} "
        f"(connection per request, {HEADLINE_CLIENTS} clients); each by the comparison rule"
    )
    fork = ev.micro_fig("fork_wait.small_parent")
    thread = ev.micro_fig("thread_start_join")
    fork_c = ev.micro_fig("fork_wait.small_parent", "c")
    s = ev.summary("cpu_us_per_req", "per-request")
    cp = pick(s, BOOK_PROCESS, connections=HEADLINE_CLIENTS)
    ct = pick(s, BOOK_THREAD, connections=HEADLINE_CLIENTS)
    figures = [
        f"fork + exit + waitpid {_fig(fork, 'us')}"
        + (f" (C: {_fig(fork_c, 'us')})" if fork_c else "")
        + f", thread start + join {_fig(thread, 'us')}",
        f"server CPU per connection: fork {_fig(cp, 'us')}, thread {_fig(ct, 'us')}",
    ]
    outcomes = [
        less(thread, fork, "creating a thread vs a process"),
        less(ct, cp, "CPU per connection, thread vs process server"),
    ]
    return _claim(claim, rule, figures, outcomes)


def _cpu_part(lower: Figure | None, higher: Figure | None, what: str) -> Outcome:
    """An end-to-end part on server CPU per request (valid whoever was the limit: the window's
    CPU over the window's requests), at the shared-counter cells' one offered rate."""
    return less(_cpu_only(lower), _cpu_only(higher), f"end to end, {what}")


def _cpu_only(f: Figure | None) -> Figure | None:
    """CPU per request does not depend on who was the limit: a client-saturated cell's server
    CPU per request is still the server's (issue 21); only a starved cell is no figure."""
    if f is None:
        return None
    return Figure(f.median, f.lo, f.hi, f.n, f.cv, False, f.starved, f.asked)


def _cost(f: Figure | None) -> str:
    if f is None:
        return fmt.NOT_MEASURED
    return f"{fmt.signed(f.median)} [{fmt.signed(f.lo)} to {fmt.signed(f.hi)}] us per request"


def message_passing_cost(ev: Evidence) -> Claim:
    claim = (
        "IPC is slow: the same message costs more between processes than between threads (12.1.2)"
    )
    rule = (
        "the same mechanism between two threads and between two processes, on one CPU and on "
        "two: a 1-byte pipe round trip (Python and C) and a queue round trip (queue.Queue "
        "against multiprocessing.Queue); each part by the comparison rule"
    )
    figures, outcomes = [], []
    for pair in ipc.same_mechanism(ev.micro):
        if pair.what.startswith("locked"):
            continue  # the shared-memory claim's
        langs = [("Python", pair.py_threads, pair.py_procs)]
        if pair.c_threads or pair.c_procs:
            langs.append(("C", pair.c_threads, pair.c_procs))
        for lang, t, p in langs:
            figures.append(
                f"{pair.what}, {lang}, {pair.where}: threads {_fig(t, 'us')}, processes "
                f"{_fig(p, 'us')}"
            )
            outcomes.append(less(t, p, f"{pair.what.split(' (')[0]}, {lang}, {pair.where}"))
    return _claim(claim, rule, figures, outcomes)


def shared_memory_cost(ev: Evidence) -> Claim:
    claim = (
        "Sharing memory between processes costs more than between threads (12.1.2: explicit IPC)"
    )
    rule = (
        "a counter incremented by 2 workers under one lock costs more per increment between "
        "processes (a shared mapping and a process-shared lock) than between threads "
        "(threading.Lock; in C a pthread mutex), on one CPU and on two; and end to end, the "
        "fork server's shared-memory counter costs more server CPU per request than its "
        "plain-global control; each part by the comparison rule"
    )
    figures, outcomes = [], []
    for pair in ipc.same_mechanism(ev.micro):
        if not pair.what.startswith("locked"):
            continue
        for lang, t, p in (
            ("Python", pair.py_threads, pair.py_procs),
            ("C", pair.c_threads, pair.c_procs),
        ):
            figures.append(
                f"{lang}, {pair.where}: threads {_fig(t, 'us')}, processes {_fig(p, 'us')} "
                "per increment"
            )
            outcomes.append(less(t, p, f"locked increment, {lang}, {pair.where}"))
    e2e = ev.e2e
    naive, shm = e2e.get(BOOK_PROCESS, "naive"), e2e.get(BOOK_PROCESS, "shm")
    figures.append(
        f"end to end ({_rate(e2e)}), {label(BOOK_PROCESS)} server CPU per request: plain global "
        f"{_fig(naive, 'us')}, shared memory + lock {_fig(shm, 'us')}"
    )
    outcomes.append(_cpu_part(naive, shm, "shared memory vs plain global"))
    return _claim(claim, rule, figures, outcomes)


def _rate(e2e: ipc.EndToEnd) -> str:
    if e2e.rate is None:
        return "10 persistent connections"
    return f"10 persistent connections, {fmt.num(e2e.rate)} requests/s offered"


def ipc_is_the_disadvantage(ev: Evidence) -> Claim:
    claim = (
        "Needing IPC is the disadvantage: a thread shares a count with a store, a process must "
        "send a message (12.1.2)"
    )
    rule = (
        "one update of a shared count costs more as a message from a process (a 16-byte "
        "record over a pipe, the parent summing) than as a store by a thread to a variable it "
        "shares, in Python and in C; end to end, a message per echo adds more server CPU per "
        "request to the fork server (over its plain global) than a Lock per echo adds to the "
        "thread server (over its plain global); each part by the comparison rule"
    )
    figures, outcomes = [], []
    for sc in ipc.share_count(ev.micro):
        figures.append(
            f"{sc.language}: a store {_fig(sc.store, 'us')}, a message {_fig(sc.message, 'us')}"
            + (f" ({fmt.ratio(sc.ratio)})" if sc.ratio else "")
        )
        outcomes.append(less(sc.store, sc.message, f"a store vs a message, {sc.language}"))
    e2e = ev.e2e
    figures.append(
        f"end to end ({_rate(e2e)}): a message per echo {_cost(e2e.message_cost)} over the "
        f"fork server's plain global; a Lock per echo {_cost(e2e.lock_cost)} over the thread "
        "server's"
    )
    outcomes.append(
        _cpu_part(e2e.lock_cost, e2e.message_cost, "a message per echo vs a Lock per echo")
    )
    return _claim(claim, rule, figures, outcomes)


def _miscounted(c: pd.DataFrame) -> pd.Series:
    """Counter cells failed by the counter check (by kind; before version 4, by the words)."""
    kind = c["failure_kind"].fillna("") if "failure_kind" in c else pd.Series("", index=c.index)
    return (kind == "counter") | c["reason"].fillna("").str.startswith("shared")


def _counter_rows(ev: Evidence, mode: str, server: str = BOOK_PROCESS) -> pd.DataFrame:
    """All trials (ok or failed) of `server`'s shared-counter cells in `mode`."""
    d = ev.df
    if d.empty or "stats_bytes" not in d.columns:
        return d.iloc[0:0]
    return d[
        (d["scenario"] == "shared-counter")
        & (d["shared_counter"] == mode)
        & (d["server"] == server)
    ]


def sharing_needs_ipc(ev: Evidence) -> Claim:
    claim = "Sharing state between processes needs explicit IPC (12.1.2)"
    rule = (
        f"in {BOOK_PROCESS}, a plain global counter (no IPC) misses the children's updates "
        "while a shared-memory and a pipe counter count every echoed byte: confirmed when "
        "both hold in every trial; contradicted when the plain global counts everything; not "
        "confirmed when an IPC counter miscounts; inconclusive without those cells"
    )
    figures, outcomes = [], []
    naive = _counter_rows(ev, "naive")
    naive = naive[naive["status"] == "ok"]
    if naive.empty:
        outcomes.append(Outcome(Verdict.INCONCLUSIVE, "no plain-global (naive) counter cells"))
    else:
        counted, echoed = int(naive["stats_bytes"].sum()), int(naive["bytes_received_total"].sum())
        figures.append(f"plain global: parent counted {counted:,} of {echoed:,} B echoed")
        outcomes.append(
            Outcome(Verdict.CONFIRMED, "without IPC the parent's count misses the children's")
            if counted < echoed
            else Outcome(Verdict.CONTRADICTED, "the plain global counted every byte")
        )
    for mode in ("shm", "pipe"):
        c = _counter_rows(ev, mode)
        if c.empty:
            outcomes.append(Outcome(Verdict.INCONCLUSIVE, f"no {mode} counter cells"))
            continue
        # The runner fails a cell whose exact counter disagrees with the bytes echoed.
        wrong = c[(c["status"] == "failed") & _miscounted(c)]
        right = c[c["status"] == "ok"]
        figures.append(
            f"{mode}: {len(right)} trial(s) counted exactly "
            f"({int(right['stats_bytes'].sum()):,} B), {len(wrong)} miscounted"
        )
        outcomes.append(
            Outcome(Verdict.CONFIRMED, f"{mode} counted every byte")
            if wrong.empty and len(right)
            else Outcome(Verdict.NOT_CONFIRMED, f"{mode} miscounted {len(wrong)} trial(s)")
        )
    return _claim(claim, rule, figures, outcomes)


def address_spaces_protect(ev: Evidence) -> Claim:
    claim = "Separate address spaces protect: a child cannot write the parent's memory (12.1.2)"
    rule = (
        f"{BOOK_PROCESS}'s children increment a plain global counter (fork copies it, "
        "copy-on-write): confirmed when the parent's own copy reports fewer bytes than were "
        "echoed, contradicted when it reports them all, inconclusive without the cells"
    )
    rows = _counter_rows(ev, "naive")
    rows = rows[(rows["status"] == "ok") & rows["bytes_received_total"].notna()]
    if rows.empty:
        return _claim(
            claim,
            rule,
            [fmt.NOT_MEASURED],
            [Outcome(Verdict.INCONCLUSIVE, "needs 'shared-counter' cells in naive mode")],
        )
    counted, echoed = int(rows["stats_bytes"].sum()), int(rows["bytes_received_total"].sum())
    figure = f"{label(BOOK_PROCESS)}, plain global counter: parent reports {counted:,} B of "
    figure += f"{echoed:,} B echoed"
    outcome = (
        Outcome(
            Verdict.CONFIRMED,
            f"the children's {echoed - counted:,} B of increments landed in their own "
            "copy-on-write copies and never reached the parent",
        )
        if counted < echoed
        else Outcome(Verdict.CONTRADICTED, "the parent's copy saw every increment")
    )
    return _claim(claim, rule, [figure], [outcome])


def _process_control(ev: Evidence, fault: str) -> pd.DataFrame:
    """The process server as Fig. 12.5 writes it, in the fault scenario's control cells (same
    load, same limits as the cells with the bug switched on)."""
    d = ev.ok(faults=True)
    if d.empty:
        return d
    d = d[(d["scenario"] == fault) & (d["fault"].fillna("") == "")]
    return d[(d["server"] == BOOK_PROCESS) & d["fds_peak"].notna()]


def _fault_cells(ev: Evidence, fault: str) -> pd.DataFrame:
    d = ev.ok(faults=True)
    return d if d.empty else d[d["fault"] == fault]


def _with_control(ev: Evidence, fault: str, column: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A fault scenario's cells with the book's bug switched on and its control cells (Fig.
    12.5 as written, same load), each only where the monitor measured `column`; either may be
    empty."""
    bug = _fault_cells(ev, fault)
    bug = bug if bug.empty else bug[bug[column].notna()]
    return bug, _process_control(ev, fault)


def _needs(claim: str, rule: str, fault: str) -> Claim:
    return _claim(
        claim,
        rule,
        [fmt.NOT_MEASURED],
        [Outcome(Verdict.INCONCLUSIVE, f"needs the {fault} cells and their control")],
    )


def parent_must_close_connfd(ev: Evidence) -> Claim:
    claim = "The parent must close its copy of connfd (12.1.1, Fig. 12.5)"
    rule = (
        "with --leak-connfd the server tree's open descriptors grow past what its live "
        "clients explain (8 per client + 8), while Fig. 12.5 as written stays within it under "
        "the same load: confirmed when both hold; contradicted when the leaking server stays "
        "within it; not confirmed when the correct server grows too; inconclusive without "
        "both cells"
    )
    leak, control = _with_control(ev, "leak-connfd", "fds_peak")
    if leak.empty or control.empty:
        return _needs(claim, rule, "leak-connfd")
    i = (leak["fds_peak"] - leak["fds_base"]).idxmax()
    base, peak = int(leak["fds_base"][i]), int(leak["fds_peak"][i])
    conns = int(leak["connections"][i])
    cw = leak["close_wait_peak"].get(i)
    bound = 8 * conns + 8
    grow_c = int((control["fds_peak"] - control["fds_base"]).max())
    figures = [
        f"--leak-connfd, {conns} clients: open descriptors (whole process tree) rose from "
        f"{base:,} to {peak:,}"
        + (f", {int(cw):,} sockets in CLOSE_WAIT" if pd.notna(cw) and cw else ""),
        f"Fig. 12.5 as written, same load: grew by at most {grow_c:,} (bound {bound:,})",
    ]
    if peak - base <= bound:
        outcome = Outcome(Verdict.CONTRADICTED, "the leaking server's descriptors stayed bounded")
    elif grow_c > bound:
        outcome = Outcome(Verdict.NOT_CONFIRMED, "the correct server's descriptors grew too")
    else:
        outcome = Outcome(
            Verdict.CONFIRMED,
            "the parent kept a descriptor for every client that had left; closing connfd "
            "keeps the count to the live clients",
        )
    return _claim(claim, rule, figures, [outcome])


def zombies_reaped_in_loop(ev: Evidence) -> Claim:
    claim = "Zombies must be reaped, in a loop, by the SIGCHLD handler (12.1.1, Fig. 12.5)"
    rule = (
        "with --naive-reaper (one waitpid per SIGCHLD) the peak of zombies exceeds both the "
        "clients in flight and the loop reaper's peak under the same load: confirmed when it "
        "does; contradicted when the naive reaper's peak is no higher than the loop's; not "
        "confirmed when it is higher but within the clients in flight; inconclusive without "
        "both cells"
    )
    naive, control = _with_control(ev, "naive-reaper", "zombies_peak")
    if naive.empty or control.empty:
        return _needs(claim, rule, "naive-reaper")
    peak_n = int(naive["zombies_peak"].max())
    peak_c = int(control["zombies_peak"].max())
    clients = int(naive["connections"].max())
    figures = [
        f"--naive-reaper: up to {peak_n:,} zombies at once ({clients} clients)",
        f"loop reaper, same load: up to {peak_c:,}",
    ]
    if peak_n <= peak_c:
        outcome = Outcome(Verdict.CONTRADICTED, "the naive reaper left no more zombies")
    elif peak_n <= clients:
        outcome = Outcome(
            Verdict.NOT_CONFIRMED, "more zombies, but no more than the clients in flight"
        )
    else:
        outcome = Outcome(
            Verdict.CONFIRMED,
            "signals do not queue: one waitpid per SIGCHLD left children unreaped",
        )
    return _claim(claim, rule, figures, [outcome])


CLAIMS: list[Callable[[Evidence], Claim]] = [
    processes_are_slower,
    process_control_overhead,
    message_passing_cost,
    shared_memory_cost,
    ipc_is_the_disadvantage,
    sharing_needs_ipc,
    address_spaces_protect,
    parent_must_close_connfd,
    zombies_reaped_in_loop,
]


def scorecard(run: Run) -> list[Claim]:
    ev = Evidence.of(run)
    return [claim(ev) for claim in CLAIMS]
