"""The report's first screen, its glossary, and "which model when".

The opening answers the two margin questions ("fork, exec, waitpid?" and "why is needing IPC a
disadvantage?") in at most 350 words and one table of at most 6 rows, each answer starting
with what the calls do, then what they cost here (issue 21). The glossary comes before the
scorecard and defines the OS words as well as the statistics. "Which model when" leads with
what the server decides at load: its CPU per request at one offered rate.

Every number comes from the run (medians over trials); a figure the run lacks says "not
measured in this run". A cell that did not serve every client it names, or whose load
generator was the limit, is never quoted as a capacity; one connection measures a round trip.
"""

from __future__ import annotations

import pandas as pd

from analysis import fmt, ipc, micro
from analysis.charts import at_load_rate, label
from analysis.document import Table
from analysis.results import Run
from analysis.stats import Figure, capacity, pick
from records.registry import SERVERS, Role, by_role

BOOK_PROCESS = by_role(Role.BOOK_PROCESS)
BOOK_THREAD = by_role(Role.BOOK_THREAD)
EVENT_LOOP = "uvloop"  # the event loop the opening sets beside the book's two servers
AT_LOAD_CONNS = (10, 100, 1000)
SERVER_BUSY = 0.90  # a cell whose server used this much of its CPU: the server was the limit

# (term, definition): the OS words first, in the order the report uses them, then the
# statistics. The HTML shows each definition as hover text where its term first appears.
GLOSSARY: list[tuple[str, str]] = [
    (
        "fork",
        "creates a new process, a copy of the caller; it returns twice: 0 in the child, "
        "the child's process id in the parent.",
    ),
    (
        "exec",
        "replaces the program a process runs with another one (same process id, new "
        "code and memory); Fig. 12.5 never calls it, inetd does.",
    ),
    (
        "waitpid",
        "collects a finished child's exit status (reaps it); until then the child stays a zombie.",
    ),
    (
        "zombie",
        "a child that has exited but not been reaped: it holds a process-table slot "
        "and its exit status.",
    ),
    (
        "SIGCHLD",
        "the signal the kernel sends a parent when a child exits; Fig. 12.5 reaps in "
        "its handler, in a loop, because several exits can arrive as one signal (signals do "
        "not queue).",
    ),
    (
        "copy-on-write",
        "after fork, parent and child share every page read-only; the first "
        "write to a page copies it for the writer (a page fault each time).",
    ),
    (
        "page fault",
        "the CPU stops a process to let the kernel map or copy a page; a minor "
        "fault needs no disk (a copy-on-write copy is one).",
    ),
    (
        "IPC",
        "inter-process communication: pipes, sockets, shared mappings, signals; the "
        "kernel's ways for processes, which share no memory, to exchange data.",
    ),
    (
        "GIL",
        "CPython's global interpreter lock: one thread runs Python code at a time, so two "
        "Python threads never increment a counter at the same instant.",
    ),
    (
        "connfd / listenfd",
        "the connected socket one client uses, and the listening socket new clients arrive on.",
    ),
    (
        "p50, p99, p99.9",
        "the latency that 50%, 99%, 99.9% of requests stayed under (p99 is "
        "the tail: 1 request in 100 was slower).",
    ),
    (
        "interval",
        "[lo-hi] after a median: where a repeat run's median of the same cell falls "
        "90% of the time (checked on the run's own halves); for a microbenchmark, the [min-max] "
        "of its rounds.",
    ),
    ("CV", "the trials' standard deviation over their mean; above 10% a figure is noisy."),
    (
        "RSS / PSS",
        "memory a process has resident; RSS counts a page shared by 50 forked "
        "children 50 times, PSS splits it between them (what a fork server really costs).",
    ),
    (
        "closed loop / open loop",
        "closed: each connection sends its next request when the "
        "answer arrives (finds capacity); open: requests leave on a fixed schedule whatever the "
        "server does (latency, and CPU, at a given load).",
    ),
    (
        "client-saturated",
        "the load generator's CPUs were over 90% busy: the figure is the "
        "client's limit, a floor for the server, never its capacity.",
    ),
    (
        "starved",
        "connections a cell asked for that completed no request in its window (a "
        "pool serving 4 at a time): not a capacity.",
    ),
    (
        "server CPU per request",
        "the server's own CPU over the window (its cgroup: parent, "
        "children, threads, the kernel's work for them) divided by the requests served; valid "
        "whoever was the limit.",
    ),
]


def glossary_items() -> list[str]:
    return [f"**{term}**: {words}" for term, words in GLOSSARY]


def hover_terms() -> dict[str, str]:
    """Glossary terms as the HTML's hover text (the first spelling of a 'a / b' pair)."""
    return {term.split(" / ")[0].split(",")[0]: words for term, words in GLOSSARY}


def _us(f: Figure | None) -> str:
    return f"{fmt.num(f.median)} us" if f else fmt.NOT_MEASURED


def _ns(f: Figure | None) -> str:
    if f is None:
        return fmt.NOT_MEASURED
    return f"{fmt.num(f.median * 1000)} ns" if f.median < 1 else f"{fmt.num(f.median)} us"


def what_was_run(run: Run) -> str:
    d = run.df
    m = run.manifest
    env = m.environment if m else {}
    servers = {s for s in SERVERS if not d.empty and s in set(d["server"])}
    trials = int(d["trial"].max()) if not d.empty else 0
    return (
        f"{len(d)} cells ({trials} trials each) of {len(servers)} echo servers on "
        f"{env.get('cpu_model', 'an unknown CPU')}, {env.get('cpu_count_logical', '?')} CPUs. "
        "A figure is a median; [lo-hi] holds a repeat run's median 90% of the time."
    )


def answer_fork(run: Run) -> str:
    fork = micro.fig(run.micro, "fork_wait.small_parent")
    thread = micro.fig(run.micro, "thread_start_join")
    c = run.findings.summary("cpu_us_per_req", "per-request")
    cp, ct = pick(c, BOOK_PROCESS, connections=10), pick(c, BOOK_THREAD, connections=10)
    parts = [
        "**Fork, exec, waitpid?** `fork` copies the calling process and returns twice: 0 in "
        "the child, the child's id in the parent. `exec` replaces a process's program (Fig. "
        "12.5 never calls it: the child already has the echo code). `waitpid` reaps a finished "
        "child; until then it is a zombie."
    ]
    if fork and thread:
        parts.append(
            f"Here fork + exit + waitpid costs {_us(fork)} against {_us(thread)} to start and "
            f"join a thread ({fmt.ratio(fork.median / thread.median)})"
            + (
                f"; per connection the fork server spends {_us(cp)} of CPU, the thread "
                f"server {_us(ct)}."
                if cp and ct
                else "."
            )
        )
    return " ".join(parts)


def answer_ipc(run: Run) -> str:
    same = {(p.what, p.where): p for p in ipc.same_mechanism(run.micro)}
    pipe = same.get(("pipe round trip, 1 byte", "different CPUs"))
    py, c = ipc.share_count(run.micro)
    e2e = ipc.end_to_end(run)
    parts = [
        "**Why is needing IPC a disadvantage?** Not because the kernel's mechanisms cost more "
        "between processes"
    ]
    if pipe and pipe.py_threads and pipe.py_procs:
        parts[-1] += (
            f": a pipe round trip across CPUs costs {_us(pipe.py_threads)} between threads, "
            f"{_us(pipe.py_procs)} between processes."
        )
    else:
        parts[-1] += "."
    if py.store and py.message:
        text = (
            "Threads already share memory: a thread adds to a shared count with one store "
            f"({_ns(py.store)} in Python"
            + (f", {_ns(c.store)} in C" if c.store else "")
            + f"); a process must send a message ({_ns(py.message)}"
            + (f", {_ns(c.message)} in C" if c.message else "")
            + f": {fmt.ratio(py.ratio)}"
            + (f" and {fmt.ratio(c.ratio)}" if c.ratio else "")
            + ") or set up a shared mapping and a process-shared lock."
        )
        parts.append(text)
    mc, lc = e2e.message_cost, e2e.lock_cost
    if mc and lc:
        parts.append(
            f"End to end a message per echo adds {fmt.signed(mc.median)} us of server CPU per "
            f"request, a Lock {fmt.signed(lc.median)} us."
        )
    return " ".join(parts)


def glance(run: Run) -> Table:
    """The opening's one table: the book's two servers and an event loop, five rows."""
    servers = (BOOK_PROCESS, BOOK_THREAD, EVENT_LOOP)
    m = run.micro
    start = (
        micro.fig(m, "fork_wait.small_parent"),
        micro.fig(m, "thread_start_join"),
        micro.fig(m, "asyncio_task.uvloop"),
    )
    task_store = micro.fig(m, "counter.asyncio_nolock.2w")
    per = run.findings.summary("requests_per_s", "per-request")
    load = run.findings.summary("cpu_us_per_req", "at-load")
    pss = run.findings.summary("pss_per_conn_bytes", "concurrency")
    py = ipc.share_count(m)[0]
    rate = at_load_rate(run)

    def cell(f: Figure | None, unit: str = "") -> str:
        return fmt.spread(f.median, f.lo, f.hi, f.n) + unit if f else fmt.NOT_MEASURED

    rows = [
        ["start one (fork+exit+waitpid / thread / task), us", *[cell(f) for f in start]],
        [
            "connections/s, new connection per request",
            *[cell(pick(per, s, connections=10)) for s in servers],
        ],
        [
            f"server CPU us/request, {fmt.num(rate) if rate else '?'} req/s, 100 conns",
            *[cell(pick(load, s, connections=100)) for s in servers],
        ],
        [
            "memory per added connection, KiB",
            *[
                fmt.kib(f.median).removesuffix(" KiB")
                if (f := pick(pss, s, connections=1000) or pick(pss, s, connections=100))
                else fmt.NOT_MEASURED
                for s in servers
            ],
        ],
        [
            "share one count, per update",
            f"a message: {_ns(py.message)}",
            f"a store: {_ns(py.store)}",
            f"a store: {_ns(task_store)}",
        ],
    ]
    return Table(["", *[label(s) for s in servers]], rows, "At a glance")


# --------------------------------------------------------------------------- which model when


def which_model_when(run: Run) -> tuple[list[str], list[list[str]]]:
    """One row per server (registry order): what it spends at load, what it carries, where it
    stops. CPU per request at one offered rate leads (the comparison this machine can make at
    load); a capacity only from points the server limited."""
    load = run.findings.summary("cpu_us_per_req", "at-load")
    conc = run.findings.summary("requests_per_s", "concurrency")
    p50 = run.findings.summary("p50_us", "concurrency")
    p99 = run.findings.summary("p99_us", "concurrency")
    pss = run.findings.summary("pss_per_conn_bytes", "concurrency")
    d = run.df
    rows = []
    for name in SERVERS:
        if d.empty or name not in set(d["server"]):
            continue
        cpu = []
        for n in AT_LOAD_CONNS:
            f = pick(load, name, connections=n)
            cpu.append(fmt.spread(f.median, f.lo, f.hi, f.n) if f else "n/a")
        rt = pick(p50, name, connections=1)
        tail = pick(p99, name, connections=100)
        tail_txt = "n/a"
        if tail:
            tail_txt = f"{fmt.num(tail.median)} us"
            sat = _sat_trials(p99, name, 100)
            if sat:
                tail_txt += f" (client-saturated in {sat} of {tail.n} trials: its queue counts)"
        mem = pick(pss, name, connections=1000) or pick(pss, name, connections=100)
        rows.append(
            [
                label(name),
                " / ".join(cpu),
                capacity(conc, name).text(),
                f"{fmt.num(rt.median)} us" if rt else "n/a",
                tail_txt,
                fmt.kib(mem.median) if mem else "n/a",
                breaks_first(run, name),
            ]
        )
    rate = at_load_rate(run)
    headers = [
        "server",
        f"server CPU us per request at {fmt.num(rate) if rate else '?'} req/s: 10 / 100 / 1000 "
        "conns",
        "capacity (server-limited points only)",
        "round trip at 1 conn (p50)",
        "p99 at 100 conns",
        "memory per added connection (PSS)",
        "what breaks first (from the cells)",
    ]
    return headers, rows


def _sat_trials(s: pd.DataFrame, server: str, conns: int) -> int:
    sel = s[(s["server"] == server) & (s["connections"] == conns) & (s["placement"] == "split")]
    return int(sel["sat_trials"].iloc[0]) if not sel.empty else 0


def breaks_first(run: Run, name: str) -> str:
    """What stopped the server first, only from evidence in its cells: clients left unserved,
    a failed cell, its own CPU at its limit; else what the busiest cell shows."""
    d = run.df
    mine = d[(d["server"] == name) & (d["fault"].fillna("") == "")]
    ok = mine[mine["status"] == "ok"]
    starved = ok[ok["starved"].fillna(0) > 0] if "starved" in ok else ok.iloc[0:0]
    if not starved.empty:
        r = starved.sort_values(["connections", "served"]).iloc[0]
        return (
            f"at {int(r['connections'])} connections only {int(r['served'])} were served in "
            f"the window ({r['scenario']})"
        )
    failed = mine[mine["status"] == "failed"]
    if not failed.empty:
        return str(failed.iloc[0]["reason"])[:120]
    conc = ok[ok["scenario"] == "concurrency"]
    if conc.empty:
        return "not measured in this run"
    busy = conc[conc["server_cpu_util"].fillna(0) >= SERVER_BUSY]
    if not busy.empty:
        r = busy.sort_values("connections").iloc[0]
        also = (
            ", and the load generator's too (client-saturated): neither alone was the limit"
            if bool(r["client_saturated"])
            else ""
        )
        return (
            f"its own CPU: {fmt.pct(r['server_cpu_util'])} busy at {int(r['connections'])} "
            f"connections (closed loop){also}"
        )
    top = conc[conc["connections"] == conc["connections"].max()]
    n_sat = int(top["client_saturated"].fillna(False).astype(bool).sum())
    server = fmt.pct(top["server_cpu_util"].median())
    client = fmt.pct(top["client_busy_share"].median())
    head = f"nothing up to {int(top['connections'].iloc[0])} connections"
    if n_sat == len(top):
        return f"{head}: the load generator was the limit there (client {client}, server {server})"
    return (
        f"{head} (there the server was {server} busy, the load generator {client}; {n_sat} of "
        f"{len(top)} trials client-saturated)"
    )
