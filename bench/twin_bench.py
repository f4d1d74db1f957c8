"""`make bench-servers`: is any Python server carrying weight its model does not need? (issue 13)

Each Python server is measured against its minimal twin (bench/twins/: the same model in a
dozen lines, no options, no clean stop, no counters) under the C epoll client, connection per
request (connect, 64 B echo, close; 10 slots over 8 source addresses, as the issue measured),
server on CPU 0, client on CPU 1. A twin runs with its server's interpreter flags (-S for the
forking servers, which run in servers.lean's interpreter). Server and twin alternate, and which
goes first alternates from round to round, so both see the same machine. Prints connections/s
of each, and the ratio per round: median and spread. The goal for the book's process server
is >= 0.9x. Then, where strace exists, system calls per connection of the forking servers,
Python and C, and system calls per request of the two C ceilings under persistent connections
(issue 24: epoll makes a read and a write of its own per echo; io_uring batches every send and
receive of a turn into one io_uring_enter).

These are figures to read, never asserted: the machine may be shared.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.launch import ServerProcess
from records.registry import LEAN_FLAGS, SERVERS

TWINS = Path(__file__).with_name("twins")
CLIENT = Path(__file__).parents[1] / "loadgen" / "native" / "bin" / "epoll_client"
SERVER_CPUS, CLIENT_CPUS = (0,), (1,)
SLOTS, SOURCES, SIZE = 10, 8, 64
# registered server -> its twin: (script, arguments after the host)
TWIN_ARGV: dict[str, tuple[str, tuple[str, ...]]] = {
    "process": ("process.py", ()),
    "inetd": ("inetd.py", ()),
    "prefork": ("prefork.py", ()),
    "thread": ("thread.py", ()),
    "threadpool": ("threadpool.py", ()),
    "multiplex": ("multiplex.py", ()),
    "asyncio": ("asyncio_twin.py", ()),
    "uvloop": ("asyncio_twin.py", ("uvloop",)),
}


def connections_per_s(host: str, port: int, seconds: float, persistent: int = 0) -> float:
    """The C client's connections/s against host:port over `seconds` (with `persistent`: that
    many persistent connections, and the figure is requests/s)."""
    argv = [str(CLIENT), host, str(port), str(persistent or SLOTS), str(SIZE), str(seconds)]
    mode = ["persistent"] if persistent else ["per-request", str(SOURCES)]
    proc = subprocess.Popen([*argv, *mode], stdout=subprocess.PIPE, text=True)
    os.sched_setaffinity(proc.pid, CLIENT_CPUS)
    out, _ = proc.communicate(timeout=seconds + 60)
    kv = dict(item.partition("=")[::2] for item in out.split())
    return float(kv.get("requests", 0)) / float(kv.get("wall_s", seconds))


def measure_server(name: str, warmup_s: float, seconds: float) -> float:
    with ServerProcess.start(name, cpus=SERVER_CPUS) as server:
        connections_per_s(server.host, server.port, warmup_s)
        return connections_per_s(server.host, server.port, seconds)


def measure_twin(name: str, warmup_s: float, seconds: float) -> float:
    script, extra = TWIN_ARGV[name]
    # The same interpreter flags as the server it stands beside (-S for the forking servers):
    # a twin carrying a virtual environment's site imports the server does not would flatter it.
    flags = LEAN_FLAGS if SERVERS[name].runs_lean else ()
    argv = [sys.executable, *flags, str(TWINS / script), "127.0.0.1", *extra]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True
    )
    try:
        os.sched_setaffinity(proc.pid, SERVER_CPUS)
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()  # READY host port pid; the twin prints nothing else
        if len(ready) != 4:
            raise RuntimeError(f"twin of {name} did not start")
        connections_per_s(ready[1], int(ready[2]), warmup_s)
        return connections_per_s(ready[1], int(ready[2]), seconds)
    finally:
        # The twin has no clean stop: its whole group is ended by id, children included.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def run(names: list[str], rounds: int, warmup_s: float, seconds: float, syscalls: bool) -> int:
    if len(os.sched_getaffinity(0)) < 2:
        print("bench-servers: needs 2 CPUs (server on 0, client on 1)", file=sys.stderr)
        return 2
    if not CLIENT.exists():
        print(
            f"bench-servers: {CLIENT} is not built (make native; needs a C compiler)",
            file=sys.stderr,
        )
        return 2
    print(
        f"connections/s under the C client ({SLOTS} slots, {SOURCES} source addresses, {SIZE} B"
        f" per connection), server CPU 0, client CPU 1; {rounds} alternated rounds of "
        f"{seconds:g} s"
    )
    print(f"{'server':<11}{'server conn/s':>15}{'twin conn/s':>13}  ratio median (min..max)")
    for name in names:
        ours: list[float] = []
        twin: list[float] = []
        ratios: list[float] = []
        for r in range(rounds):
            pair: list[tuple[Callable[[str, float, float], float], list[float]]] = [
                (measure_server, ours),
                (measure_twin, twin),
            ]
            for measure, into in pair if r % 2 == 0 else pair[::-1]:
                into.append(measure(name, warmup_s, seconds))
            ratios.append(ours[-1] / twin[-1] if twin[-1] else 0.0)
        print(
            f"{name:<11}{statistics.median(ours):>15,.0f}{statistics.median(twin):>13,.0f}  "
            f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}..{max(ratios):.2f})",
            flush=True,
        )
    if syscalls:
        print_syscalls(seconds)
    return 0


SYSCALL_SERVERS = ("process", "inetd", "c-process")
CEILING_SERVERS = ("c-epoll", "c-uring")
CEILING_CONNECTIONS = (10, 100)


def syscalls_per_connection(
    name: str, seconds: float, persistent: int = 0
) -> tuple[float, list[tuple[str, float]]]:
    """strace -c -f attached to a running server for `seconds` of the C client's load: system
    calls per connection (with `persistent`: per request over that many persistent
    connections) in all, and the five most frequent (strace slows what it traces: the counts
    hold, the rates do not)."""
    with tempfile.TemporaryDirectory() as tmp, ServerProcess.start(name, cpus=SERVER_CPUS) as srv:
        out = Path(tmp) / "strace.txt"
        tracer = subprocess.Popen(
            ["strace", "-f", "-c", "-o", str(out), "-p", str(srv.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert tracer.stderr is not None
            tracer.stderr.readline()  # "strace: Process N attached": tracing from here on
            conns = connections_per_s(srv.host, srv.port, seconds, persistent) * seconds
        finally:
            tracer.send_signal(signal.SIGINT)  # detach and write the summary
            tracer.wait(timeout=30)
            if tracer.stderr is not None:
                tracer.stderr.close()
        calls: dict[str, int] = {}
        for line in out.read_text().splitlines():
            parts = line.split()
            # "% time seconds usecs/call calls [errors] syscall"
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                calls[parts[-1]] = int(parts[3])
    n = max(conns, 1.0)
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:5]
    return sum(calls.values()) / n, [(k, v / n) for k, v in top]


def uring_enters_per_request(seconds: float, conns: int) -> float:
    """c-uring's own count of io_uring_enter calls (ECHOBENCH_SERVER_STATS) per request of the
    C client's persistent load, with no tracer to slow it down."""
    env = {**os.environ, "ECHOBENCH_SERVER_STATS": "1"}
    with ServerProcess.start("c-uring", cpus=SERVER_CPUS, env=env) as srv:
        requests = connections_per_s(srv.host, srv.port, seconds, conns) * seconds
        report = srv.stop()
    for line in report.stderr_tail:
        if line.startswith("echobench_uring_stats"):
            kv = dict(item.partition("=")[::2] for item in line.split()[1:])
            return float(kv["io_uring_enter"]) / max(requests, 1.0)
    return float("nan")


def print_syscalls(seconds: float) -> None:
    if shutil.which("strace") is None:
        print("syscalls per connection: skipped (no strace on this machine)")
        return
    print(f"\nsystem calls per connection (strace -c -f, {seconds:g} s of the same load):")
    for name in SYSCALL_SERVERS:
        if SERVERS[name].available():
            print(f"  {name}: skipped ({SERVERS[name].available()})")
            continue
        total, top = syscalls_per_connection(name, seconds)
        most = ", ".join(f"{k} {v:.1f}" for k, v in top)
        print(f"  {name:<10} {total:5.1f} in all; most: {most}", flush=True)
    print(
        f"\nsystem calls per request, 64 B echoes on persistent connections (strace -c -f, "
        f"{seconds:g} s):"
    )
    for name in CEILING_SERVERS:
        if SERVERS[name].available():
            print(f"  {name}: skipped ({SERVERS[name].available()})")
            continue
        for conns in CEILING_CONNECTIONS:
            total, top = syscalls_per_connection(name, seconds, persistent=conns)
            most = ", ".join(f"{k} {v:.2f}" for k, v in top)
            own = ""
            if name == "c-uring":  # strace slows the server, so it batches more: its own count
                own = f"; untraced, its own count: {uring_enters_per_request(seconds, conns):.2f}"
                own += " io_uring_enter per request"
            print(
                f"  {name:<8} {conns:>4} conns {total:6.2f} in all; most: {most}{own}", flush=True
            )


def python_servers() -> list[str]:
    return [n for n, spec in SERVERS.items() if spec.native is None and n in TWIN_ARGV]
