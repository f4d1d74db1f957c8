"""The report's first screen: what was run, the two margin questions answered in a sentence
each with this run's numbers, and which model to pick when. Then a glossary.

Every number here comes from the run (medians over trials); a figure the run lacks says "not
measured in this run". A cell that did not serve every client it names, or whose load
generator was the limit, is never quoted as a capacity.
"""

from __future__ import annotations

import pandas as pd

from analysis import fmt, micro
from analysis.charts import label
from analysis.results import Run, ok_cells
from analysis.stats import pick, summarise
from servers.registry import SERVERS, Role, by_role

BOOK_PROCESS = by_role(Role.BOOK_PROCESS)
BOOK_THREAD = by_role(Role.BOOK_THREAD)

GLOSSARY = [
    "**p50, p99, p99.9**: the latency that 50%, 99%, 99.9% of requests stayed under (p99 is "
    "the tail: 1 request in 100 was slower).",
    "**CV** (coefficient of variation): the trials' standard deviation over their mean; above "
    "10% a figure is noisy.",
    "**interval [lo-hi]**: where the median of a repeat run of the same cell will fall 90% of "
    "the time (a prediction interval from the cell's trials and the run's noise, checked on "
    "the run's own halves, never narrower than the lowest and highest trial); a "
    "microbenchmark's is the [min-max] of its rounds.",
    "**RSS / PSS**: memory resident in each process; RSS counts a page shared by 50 forked "
    "children 50 times, PSS splits it between them (the memory a fork server really costs).",
    "**closed loop**: each connection sends its next request as soon as the previous answer "
    "arrives (measures capacity). **open loop**: requests are sent on a fixed schedule "
    "whatever the server does (measures latency at a given load).",
    "**coordinated omission**: a closed-loop client that waits for a slow answer also stops "
    "sending, so it never measures the requests a slow server delays; open-loop latency is "
    "counted from when each request *should* have been sent.",
    "**client-saturated**: the load generator's CPUs were busy over 90% of the window: the "
    "figure is the client's limit, a lower bound for the server.",
    "**starved**: connections a cell asked for that completed no request in its window (a pool "
    "serving 4 at a time): such a cell is not a capacity.",
    "**split / shared placement**: server and client pinned to different CPUs / to one CPU.",
    "**canary**: a fixed workload run between cells to measure the machine's own speed.",
]


def _ok(run: Run, scenario: str) -> pd.DataFrame:
    d = ok_cells(run)
    return d if d.empty else d[d["scenario"] == scenario]


def what_was_run(run: Run) -> str:
    d = run.df
    m = run.manifest
    env = m.environment if m else {}
    servers = [label(s) for s in SERVERS if not d.empty and s in set(d["server"])]
    trials = int(d["trial"].max()) if not d.empty else 0
    return (
        f"{len(d)} cell results ({trials} trial(s) each) of {len(servers)} echo servers "
        f"({', '.join(servers)}) on {env.get('cpu_model', 'an unknown CPU')}, "
        f"{env.get('cpu_count_logical', '?')} CPUs, Linux {env.get('kernel', '?')}, Python "
        f"{env.get('python', '?')}"
        + (f", {m.created_at[:16].replace('T', ' ')} UTC" if m else "")
        + "."
    )


def answer_fork(run: Run) -> str:
    m = run.micro
    fork, thread = (
        micro.figure(m, "fork_wait.small_parent"),
        micro.figure(m, "thread_start_join"),
    )
    s = summarise(_ok(run, "per-request"), "requests_per_s")
    c = summarise(_ok(run, "per-request"), "cpu_us_per_req")
    fp, ft = pick(s, BOOK_PROCESS, connections=10), pick(s, BOOK_THREAD, connections=10)
    cp, ct = pick(c, BOOK_PROCESS, connections=10), pick(c, BOOK_THREAD, connections=10)
    parts = [
        "**Fork, exec, waitpid?** Fig. 12.5 forks a copy of itself per client (no exec: the "
        "child already has the echo code) and reaps each child with waitpid."
    ]
    if fork and thread:
        parts.append(
            f"Here a fork + exit + waitpid costs {fmt.num(fork)} us against {fmt.num(thread)} "
            f"us to start and join a thread ({fmt.ratio(fork / thread)})."
        )
    if fp and ft:
        parts.append(
            f"With a new connection per request (10 clients) the fork server accepts "
            f"{fmt.num(fp.median)} connections/s, the thread server {fmt.num(ft.median)}"
            + (
                f", spending {fmt.num(cp.median)} vs {fmt.num(ct.median)} us of CPU per connection."
                if cp and ct
                else "."
            )
        )
    cf = pick(s, by_role(Role.C_BOOK_PROCESS), connections=10)
    cc = pick(c, by_role(Role.C_BOOK_PROCESS), connections=10)
    if fp and cf and cp and cc and cp.median:
        parts.append(
            f"The same Fig. 12.5 in C accepts {fmt.num(cf.median)} connections/s on "
            f"{fmt.num(cc.median)} us of CPU each: that is the model's cost; the other "
            f"{fmt.pct((cp.median - cc.median) / cp.median)} of the Python server's CPU per "
            "connection is Python's (a bigger parent for every fork to copy, and an interpreter "
            "that writes to every page it touches, each write a copy-on-write fault)."
        )
    return " ".join(parts)


def answer_ipc(run: Run) -> str:
    m = run.micro
    ll = micro.like_for_like(m)
    pipe, queue, shm, lock = ll.pipe, ll.queue, ll.shm, ll.lock
    s = summarise(_ok(run, "shared-counter"), "requests_per_s")
    off, on = (
        pick(s, BOOK_PROCESS, shared_counter=None),
        pick(s, BOOK_PROCESS, shared_counter="shm"),
    )
    parts = [
        "**Why is needing IPC a disadvantage?** Processes share no memory, so whatever they "
        "share must be set up on purpose and go through the kernel."
    ]
    if shm and lock:
        parts.append(
            f"Keeping one shared count costs {fmt.num(shm)} us per update between two "
            f"processes against {fmt.num(lock)} us between two threads "
            f"({fmt.ratio(shm / lock)})."
        )
    if pipe and queue:
        parts.append(
            f"A message and its answer cost {fmt.num(pipe)} us between processes and "
            f"{fmt.num(queue)} us between threads on different CPUs: for messages the wake-up "
            "of the other CPU, not the address space, dominates here."
        )
    if off and on and off.median > 0:
        parts.append(
            f"The book's server with a shared-memory counter ran at "
            f"{fmt.pct(on.median / off.median)} of its speed without one."
        )
    return " ".join(parts)


def which_model_when(run: Run) -> tuple[list[str], list[list[str]]]:
    """One row per server (registry order): capacity, tail, memory, CPU, what breaks first."""
    conc = summarise(_ok(run, "concurrency"), "requests_per_s")
    p99 = summarise(_ok(run, "concurrency"), "p99_us")
    pss = summarise(_ok(run, "concurrency"), "pss_per_conn_bytes")
    cpu = summarise(_ok(run, "per-request"), "cpu_us_per_req")
    d = run.df
    rows = []
    for name in SERVERS:
        if d.empty or name not in set(d["server"]):
            continue
        own = conc[(conc["server"] == name) & (conc["starved"].fillna(0) == 0)]
        # Capacity only from cells the server limited: a client-limited cell says how far the
        # load generator got, which is said apart, never as the server's capacity.
        free = own[~own["saturated"].astype(bool)]
        bound = own[own["saturated"].astype(bool)]
        cap = "n/a"
        if not free.empty:
            best = free.loc[free["median"].idxmax()]
            cap = f"{fmt.num(best['median'])} req/s at {int(best['connections'])} conns"
        if not bound.empty and (free.empty or bound["median"].max() > free["median"].max()):
            top = bound.loc[bound["median"].idxmax()]
            cap += (
                f"; more than the load generator could drive ({fmt.num(top['median'])} req/s "
                f"client-limited at {int(top['connections'])} conns)"
            )
        tail = pick(p99, name, connections=100)
        mem = pick(pss, name, connections=1000) or pick(pss, name, connections=100)
        c = pick(cpu, name, connections=10)
        breaks = _breaks_first(run, name)
        rows.append(
            [
                label(name),
                cap,
                f"{fmt.num(tail.median)} us" if tail else "n/a",
                fmt.kib(mem.median) if mem else "n/a",
                f"{fmt.num(c.median)} us" if c else "n/a",
                breaks,
            ]
        )
    headers = [
        "server",
        "best req/s the server itself limited",
        "p99 at 100 conns",
        "memory per added connection (PSS)",
        "CPU per connection (per request)",
        "what breaks first",
    ]
    return headers, rows


def _breaks_first(run: Run, name: str) -> str:
    d = run.df
    mine = d[(d["server"] == name) & (d["fault"].fillna("") == "")]
    ok = mine[mine["status"] == "ok"]
    starved = ok[ok["starved"].fillna(0) > 0] if "starved" in ok else ok.iloc[0:0]
    if not starved.empty:
        r = starved.sort_values(["connections", "served"]).iloc[0]
        return (
            f"at {int(r['connections'])} connections only {int(r['served'])} were served in "
            "the window"
        )
    failed = mine[mine["status"] == "failed"]
    if not failed.empty:
        return str(failed.iloc[0]["reason"])[:120]
    conc = mine[(mine["scenario"] == "concurrency") & (mine["status"] == "ok")]
    if not conc.empty and conc["client_saturated"].any():
        return "nothing in this run: the load generator ran out of CPU first"
    return "nothing in this run"
