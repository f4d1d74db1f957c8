"""The two reader questions of CS:APP 12.1, answered with this run's numbers.

"Fork, exec, waitpid?" (why does the server fork but not exec, and who waits) and "why is IPC a
disadvantage?" -- each answer is a few sentences whose every figure is computed from the run;
where the run lacks a figure, the sentence says so instead.
"""

from __future__ import annotations

from analysis import fmt, ipc, micro
from analysis.charts import label
from analysis.document import Table
from analysis.results import Run
from analysis.stats import Figure, pick


def _micro(run: Run, name: str) -> str:
    v = micro.figure(run.micro, name)
    return f"{fmt.num(v)} us" if v is not None else fmt.NOT_MEASURED


def fork_exec_waitpid(run: Run) -> list[str]:
    s = run.findings.summary("requests_per_s", "per-request")
    figs = {srv: pick(s, srv, connections=10) for srv in ("process", "inetd", "thread")}
    rate = {k: (f"{fmt.num(v.median)} conn/s" if v else fmt.NOT_MEASURED) for k, v in figs.items()}
    return [
        "Fig. 12.5 never calls `exec`: the child already holds the echo code. inetd's model "
        "does (dup2 the socket onto stdin/stdout, then exec a handler), and pays for a new "
        "program on every connection.",
        f"On this machine: fork + exit + waitpid from a small parent costs "
        f"{_micro(run, 'fork_wait.small_parent')}, from a big parent (the pytest process) "
        f"{_micro(run, 'fork_wait.pytest_parent')}, fork + exec of /bin/true "
        f"{_micro(run, 'fork_exec_wait.true')}, while starting and joining a thread costs "
        f"{_micro(run, 'thread_start_join')}.",
        f"As a client feels it (connection per request, 10 clients): fork per connection "
        f"{rate['process']}, fork + exec per connection {rate['inetd']}, thread per connection "
        f"{rate['thread']}.",
    ]


FIG_12_5 = """\
 parent (listening)                          child (one per client)
 ------------------                          ----------------------
 connfd = accept(listenfd)
 fork() ------------------------------------> (a copy of the parent: copy-on-write pages)
 close(connfd)   <- else the socket never      close(listenfd)
                    closes: refcount > 0       echo(connfd) until the client closes
 accept(...) next client                       close(connfd); exit(0)
                                                  |  the kernel keeps its exit status: a zombie
 SIGCHLD handler: <------------------------------+
   while waitpid(-1, WNOHANG) > 0: reap        (gone only once reaped)
   (a loop: signals do not queue)
"""


def fig_12_5_picture() -> str:
    """What happens in Fig. 12.5, step by step (the report puts this run's costs beside it)."""
    return FIG_12_5


FORK_CONCEPTS = (
    "What the calls do, before what they cost. `fork()` creates a process: a copy of the "
    "caller, sharing every page with it copy-on-write (the first write to a page copies it, a "
    "page fault each time). It returns twice: 0 in the child, the child's process id in the "
    "parent, and that return value is how each knows which one it is. `exec` replaces the "
    "program a process runs: same process, new code and memory. `exit` ends a process, but "
    "its exit status stays in the kernel (a zombie) until the parent collects it with "
    "`waitpid`, which reaps it; the kernel tells the parent a child has ended with the signal "
    "SIGCHLD. Fig. 12.5 reaps in its SIGCHLD handler, in a loop, because two children that "
    "exit together can arrive as one signal: pending signals do not queue."
)


def placement_words(run: Run) -> str:
    p = run.findings.placements()
    bits = []
    for srv in [] if p.empty else p["server"].unique():
        a, b = pick(p, srv, "split"), pick(p, srv, "shared")
        if a and b:
            bits.append(
                f"{srv} {fmt.num(a.median)} req/s on two CPUs vs {fmt.num(b.median)} on one "
                f"({fmt.ratio(b.median / a.median)})"
            )
    if not bits:
        return ""
    return (
        "Where the two ends run matters as much as the channel: one connection's echo "
        f"requests/s {'; '.join(bits)}. Waking another CPU costs more than the address space."
    )


def _f(f: Figure | None) -> str:
    return fmt.spread(f.median, f.lo, f.hi, f.n) if f else fmt.NOT_MEASURED


def _t(f: Figure | None) -> str:
    """A microbenchmark duration with its unit (ns below 1 us)."""
    return fmt.us_spread(f.median, f.lo, f.hi, f.n) if f else fmt.NOT_MEASURED


def _x(t: Figure | None, p: Figure | None) -> str:
    return fmt.ratio(p.median / t.median) if t and p and t.median else "n/a"


def same_mechanism_table(run: Run) -> Table:
    rows = [
        [
            pair.what,
            pair.where,
            _t(pair.py_threads),
            _t(pair.py_procs),
            _x(pair.py_threads, pair.py_procs),
            _t(pair.c_threads) if pair.c_threads else "-",
            _t(pair.c_procs) if pair.c_procs else "-",
            _x(pair.c_threads, pair.c_procs) if pair.c_procs else "-",
        ]
        for pair in ipc.same_mechanism(run.micro)
    ]
    headers = [
        "mechanism",
        "placement",
        "Python threads",
        "Python processes",
        "processes / threads",
        "C threads",
        "C processes",
        "C processes / threads",
    ]
    return Table(headers, rows, "The same mechanism between two threads and two processes")


def share_count_table(run: Run) -> Table:
    py, c = ipc.share_count(run.micro)
    rows = [
        ["a thread: a store to a variable it shares", _t(py.store), _t(c.store)],
        [
            "a process: a message per update over a pipe, different CPUs",
            _t(py.message),
            _t(c.message),
        ],
        [
            "a process: a message per update over a pipe, one CPU",
            _t(py.message_one_cpu),
            _t(c.message_one_cpu),
        ],
        [
            "2 processes: a shared mapping and a process-shared lock, different CPUs",
            _t(py.mapping),
            _t(c.mapping),
        ],
        ["a message over a store", fmt.ratio(py.ratio), fmt.ratio(c.ratio)],
    ]
    return Table(
        ["to share one count, per update", "Python", "C"],
        rows,
        "What each model must do to share a count",
    )


def end_to_end_table(run: Run) -> Table:
    e2e = ipc.end_to_end(run)
    b, t = ipc.BOOK_PROCESS, ipc.BOOK_THREAD
    rows = []
    for server, mode, words, control in (
        (b, "off", "no counter", None),
        (b, "naive", "a plain global (control: the same work, no IPC; counts nothing)", None),
        (b, "message", "a message per echo over a pipe", "naive"),
        (b, "shm", "a shared mapping + a process lock per echo", "naive"),
        (b, "pipe", "one record per child at its exit", "naive"),
        (t, "off", "no counter", None),
        (t, "global", "a plain global (control: the same work, no mutex)", None),
        (t, "lock", "a threading.Lock per echo", "global"),
    ):
        f = e2e.get(server, mode)
        cost = ipc.difference(f, e2e.get(server, control)) if control else None
        rows.append(
            [
                label(server),
                words,
                _f(f),
                f"{fmt.signed(cost.median)} [{fmt.signed(cost.lo)} to {fmt.signed(cost.hi)}]"
                if cost
                else "",
            ]
        )
    rate = f"{fmt.num(e2e.rate)} requests/s offered, " if e2e.rate else ""
    return Table(
        ["server", "shared counter", "server CPU us per request", "over its control, us"],
        rows,
        f"End to end: one count shared by every connection ({rate}10 connections, open loop)",
    )


def why_ipc_hurts(run: Run) -> list[str]:
    """The words around the three IPC tables: what IPC is, then each table's answer."""
    same = ipc.same_mechanism(run.micro)
    # the kernel's mechanisms: a pipe (Python and C), a mutex (C: Python's is a library object)
    ratios = [
        p.py_procs.median / p.py_threads.median
        for p in same
        if p.py_threads and p.py_procs and p.what.startswith("pipe")
    ]
    ratios += [p.c_procs.median / p.c_threads.median for p in same if p.c_threads and p.c_procs]
    q = [p for p in same if p.what.startswith("queue") and p.py_threads and p.py_procs]
    lk = [p for p in same if p.what.startswith("locked") and p.py_threads and p.py_procs]
    py, c = ipc.share_count(run.micro)
    e2e = ipc.end_to_end(run)
    first = (
        "Threads share one address space: telling another thread something is a store to "
        "memory, guarded by a lock when two may write at once. Processes share no memory "
        "(12.1.2), so whatever they share goes through the kernel on purpose: a pipe or a "
        "socket (a message: system calls, and a wake-up of the other end), or a mapping made "
        "shared before fork with a lock that works across processes. That is IPC. Two "
        "questions hide in the book's sentence; this run answers them apart."
    )
    same_words = "*Does the same mechanism cost more between processes?*"
    if ratios:
        same_words += (
            f" In the kernel, hardly: a pipe (Python and C) and a C mutex cost processes "
            f"{fmt.ratio(min(ratios))} to {fmt.ratio(max(ratios))} what they cost threads, on "
            "one CPU and on two: a pipe and a futex do not care whose address space they serve."
        )
    if q or lk:
        same_words += (
            " Python's own tools for processes do cost more: "
            + "; ".join(
                [
                    f"multiprocessing.Queue {_x(p.py_threads, p.py_procs)} queue.Queue ({p.where})"
                    for p in q
                ]
                + [
                    f"a multiprocessing Value under its lock {_x(p.py_threads, p.py_procs)} a "
                    f"threading.Lock ({p.where})"
                    for p in lk
                ]
            )
            + ". They pickle each item and hand it to a feeder thread, or reach shared memory "
            "through ctypes and a semaphore: the library's cost, not the address space's."
        )
    share_words = "*What does each model do to share a count?*"
    if py.ratio:
        share_words += (
            f" A thread stores to a variable it already shares ({_t(py.store)} in Python"
            + (f", {_t(c.store)} in C" if c.store else "")
            + f"); a process must send a message ({_t(py.message)}"
            + (f", {_t(c.message)} in C" if c.message else "")
            + f"), {fmt.ratio(py.ratio)}"
            + (f" and {fmt.ratio(c.ratio)}" if c.ratio else "")
            + " the cost, or build a shared mapping and a process-shared lock before it forks. "
            "That gap, and the code it takes (a pipe, a record format, a parent that reads "
            "them: servers/counter.py), is the book's disadvantage of needing IPC."
        )
    e2e_words = (
        "End to end, each server counts the bytes it echoes in one count shared by every "
        "connection, at one offered rate so that server CPU per request compares."
    )
    if e2e.message_cost and e2e.lock_cost:
        mc, lc = e2e.message_cost, e2e.lock_cost
        e2e_words += (
            f" A message per echo costs the fork server {fmt.signed(mc.median)} us of CPU "
            f"per request over its plain global [{fmt.signed(mc.lo)} to {fmt.signed(mc.hi)}]; "
            f"a Lock per echo costs the thread server {fmt.signed(lc.median)} us "
            f"[{fmt.signed(lc.lo)} to {fmt.signed(lc.hi)}]. Python threads never increment "
            "at the same instant (the GIL runs one at a time), so their Lock is rarely "
            "contended; the C table shows a contended mutex costs nanoseconds either way."
        )
    return [first, same_words, share_words, e2e_words]
