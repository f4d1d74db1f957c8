"""The two reader questions of CS:APP 12.1, answered with this run's numbers.

"Fork, exec, waitpid?" (why does the server fork but not exec, and who waits) and "why is IPC a
disadvantage?" -- each answer is a few sentences whose every figure is computed from the run;
where the run lacks a figure, the sentence says so instead.
"""

from __future__ import annotations

from analysis import fmt, micro
from analysis.results import Run, ok_cells
from analysis.stats import pick, placement_summary, summarise


def _micro(run: Run, name: str) -> str:
    v = micro.figure(run.micro, name)
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


def why_ipc_hurts(run: Run) -> list[str]:
    m = run.micro

    def us(name: str) -> str:
        v = micro.figure(m, name)
        return f"{fmt.num(v)} us" if v is not None else fmt.NOT_MEASURED

    p = placement_summary(run.df)
    placement = fmt.NOT_MEASURED
    if not p.empty:
        bits = []
        for srv in p["server"].unique():
            a, b = pick(p, srv, "split"), pick(p, srv, "shared")
            if a and b:
                bits.append(
                    f"{srv} {fmt.num(a.median)} req/s on two CPUs vs {fmt.num(b.median)} on one "
                    f"({fmt.ratio(b.median / a.median)})"
                )
        placement = "; ".join(bits) or fmt.NOT_MEASURED
    ll = micro.like_for_like(m)
    pipe_x, queue_x, shm_x, lock_x = ll.pipe, ll.queue, ll.shm, ll.lock
    conclusion = []
    if pipe_x and queue_x:
        conclusion.append(
            f"a message and its answer cost {fmt.num(pipe_x)} us between two processes over a "
            f"pipe and {fmt.num(queue_x)} us between two threads over queue.Queue, both on "
            "different CPUs: "
            + (
                "passing a message costs about the same either way here, because most of it "
                "is waking the other CPU"
                if 0.67 < pipe_x / queue_x < 1.5
                else (
                    "between processes it costs more"
                    if pipe_x > queue_x
                    else "between processes it costs *less* here (the thread queue pays for "
                    "its lock and the GIL handoff), which contradicts the book for messages"
                )
            )
        )
    if shm_x and lock_x:
        conclusion.append(
            f"updating one shared counter costs {fmt.num(shm_x)} us per increment between two "
            f"processes (shared memory + a process-shared lock) against {fmt.num(lock_x)} us "
            f"between two threads (threading.Lock): {fmt.ratio(shm_x / lock_x)}"
        )
    return [
        "Threads share one address space: telling another thread something is a store to "
        "memory, guarded by a lock. Processes share nothing by default (12.1.2), so every piece "
        "of shared state must travel through the kernel -- a pipe, a socket, or a shared "
        "mapping set up on purpose -- and each trip costs system calls and, when the other end "
        "sleeps on another CPU, a wake-up.",
        "Like for like on this machine (1-byte round trips, medians): a pipe between two "
        f"processes {us('rtt.pipe[shared]')} on one CPU and {us('rtt.pipe[split]')} on "
        f"different CPUs; queue.Queue between two threads {us('rtt.thread_queue[shared]')} "
        f"and {us('rtt.thread_queue[split]')}; asyncio.Queue between two tasks "
        f"{us('rtt.asyncio_queue.default')}; a multiprocessing Queue between two processes "
        f"{us('rtt.mp_queue[shared]')} and {us('rtt.mp_queue[split]')} (it pickles).",
        ("So: " + "; ".join(conclusion) + ".") if conclusion else "",
        f"Where the two ends run matters as much as the channel: one connection's echo "
        f"requests/s {placement}.",
        "The scorecard's two IPC claims hold these figures to the book's words, and the "
        "shared-counter chart shows what keeping one count costs a whole server.",
    ]
