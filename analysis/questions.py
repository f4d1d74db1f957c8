"""The two reader questions of CS:APP 12.1, answered with this run's numbers.

"Fork, exec, waitpid?" (why does the server fork but not exec, and who waits) and "why is IPC a
disadvantage?" -- each answer is a few sentences whose every figure is computed from the run;
where the run lacks a figure, the sentence says so instead.
"""

from __future__ import annotations

from analysis import fmt, micro
from analysis.load import Run, ok_cells
from analysis.stats import pick, placement_summary, summarise


def _micro(run: Run, name: str) -> str:
    v = micro.figure(micro.load(run.path), name)
    return f"{fmt.num(v)} us" if v is not None else fmt.NOT_MEASURED


def fork_exec_waitpid(run: Run) -> list[str]:
    d = ok_cells(run)
    s = summarise(d[d["scenario"] == "per-request"] if not d.empty else d, "requests_per_s")
    figs = {srv: pick(s, srv, connections=10) for srv in ("process", "inetd", "thread")}
    rate = {k: (f"{fmt.num(v.median)} conn/s" if v else fmt.NOT_MEASURED) for k, v in figs.items()}
    return [
        "Fig. 12.5's server calls `fork` for each connection and never `exec`: the child already "
        "holds the echo code, so it only needs its own copy of the parent's state. `exec` is for "
        "running a different program (inetd's model: dup2 the socket onto stdin/stdout, then "
        "exec a handler). `waitpid` is the parent's duty either way: until it reaps a child, "
        "the child stays a zombie holding a process-table slot.",
        f"On this machine: fork + exit + waitpid from a small parent costs "
        f"{_micro(run, 'fork_wait.small_parent')}, from a big parent (the pytest process) "
        f"{_micro(run, 'fork_wait.pytest_parent')}, fork + exec of /bin/true "
        f"{_micro(run, 'fork_exec_wait.true')}, while starting and joining a thread costs "
        f"{_micro(run, 'thread_start_join')}.",
        f"As a client feels it (connection per request, 10 clients): fork per connection "
        f"{rate['process']}, fork + exec per connection {rate['inetd']}, thread per connection "
        f"{rate['thread']}.",
    ]


def why_ipc_hurts(run: Run) -> list[str]:
    m = micro.load(run.path)
    rtts = m[m["name"].str.startswith("rtt.") & (m["impl"] == "python")] if not m.empty else m
    listing = (
        ", ".join(f"{r['name']} {fmt.num(r['median_us'])} us" for _, r in rtts.iterrows())
        if not rtts.empty
        else fmt.NOT_MEASURED
    )
    p = placement_summary(run.df)
    placement = fmt.NOT_MEASURED
    if not p.empty:
        bits = []
        for srv in p["server"].unique():
            a, b = pick(p, srv, "split"), pick(p, srv, "shared")
            if a and b:
                bits.append(
                    f"{srv} {fmt.num(a.median)} split vs {fmt.num(b.median)} shared "
                    f"({fmt.ratio(b.median / a.median)})"
                )
        placement = "; ".join(bits) or fmt.NOT_MEASURED
    return [
        "Threads share one address space: telling another thread something is a store to "
        "memory, guarded by a lock. Processes share nothing by default (12.1.2), so every piece "
        "of shared state must travel through the kernel -- a pipe, a socket, or a shared "
        "mapping set up on purpose -- and each trip costs system calls and, when the other end "
        "sleeps on another CPU, a wake-up.",
        f"IPC round trips measured here (1 byte): {listing}.",
        f"Where the two ends run matters as much as the channel: 1-connection echo requests/s "
        f"with server and client on different CPUs ('split') vs one CPU ('shared'): {placement}.",
        "The shared-counter chart shows what this costs a server that must keep one count for "
        "all its connections.",
    ]
