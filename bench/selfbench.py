"""`make bench-loadgen`: is the load generator faster than the servers it measures? (issue 3)

Starts the uvloop echo server pinned to CPU 0 (through bench.launch), pins every client to
CPU 1, and for 1, 10 and 100 connections with 64 B and 1 KiB messages prints requests/s, client
CPU microseconds per request and server CPU microseconds per request (the server's process
tree, read with psutil before and after). Beside it, for the same placement: the C epoll client
in loadgen/native (the CPU floor; the goal is within 1.2x of it), a blocking process-per-
connection client (the goal is 2x its requests/s), per-request mode over 8 source addresses,
Python and C alternately (goal 25,000 connections/s; medians with their spread), and the cost
of recording one latency sample (goal < 1 us).

Then the figure issue 14 asks for: client CPU per 64 B round trip, the Python load generator
against the C epoll client at 10 and 100 connections, in `--pairs` alternated pairs (who goes
first alternates too), as a median ratio with its spread and split into user and system time.
Both are counted over their measured phase only (the Python workers' getrusage over the window,
the C client's over its run, which has no warm-up).

These are figures to read, never asserted: the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from loadgen import coordinator
from records.hist import SampleBuffer
from records.schema import LoadConfig, LoadResult
from records.usage import OneLineParser

if TYPE_CHECKING:
    from bench.launch import ServerProcess

NATIVE = Path(__file__).with_name("native") / "bin" / "epoll_client"
SERVER_CPUS = (0,)
CLIENT_CPUS = (1,)
PER_REQUEST_SLOTS = 32  # connections in flight: enough to keep the server busy between accepts
PER_REQUEST_SOURCES = 8  # 127.0.0.2..9: the kernel's port allocator is not what is measured


@dataclass(frozen=True, slots=True)
class Row:
    client: str
    connections: int
    size: int
    requests_per_s: float
    client_us: float | None
    server_us: float | None
    note: str = ""
    user_us: float | None = None  # client_us split into user and system time
    sys_us: float | None = None


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and all its descendants (live and reaped)."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
        if p is root:
            total += t.children_user + t.children_system
    return total


def run_loadgen(host: str, port: int, server_pid: int, **kw: object) -> tuple[LoadResult, float]:
    before = tree_cpu_s(server_pid)
    result = coordinator.run(LoadConfig(host=host, port=port, cpus=CLIENT_CPUS, **kw))  # type: ignore[arg-type]
    return result, tree_cpu_s(server_pid) - before


def loadgen_row(
    host: str,
    port: int,
    pid: int,
    conns: int,
    size: int,
    duration: float,
    warmup: float,
    per_request: bool = False,
) -> Row:
    mode = {"mode": "per-request", "source_addrs": PER_REQUEST_SOURCES} if per_request else {}
    r, server_s = run_loadgen(
        host, port, pid, connections=conns, size=size, duration_s=duration, warmup_s=warmup, **mode
    )
    client_s = sum(c.user_s + c.sys_s for c in r.client_cpu)
    n = max(1, r.requests)
    note = "CLIENT SATURATED" if r.client_saturated else ""
    if r.client_port_bound:
        note += " PORT-BOUND"
    if sum(r.errors.values()):
        note += f" errors={sum(r.errors.values())}"
    # server CPU includes the warm-up's share; scale by the measured fraction of the time
    share = duration / (duration + warmup) if warmup else 1.0
    return Row(
        "loadgen per-request" if per_request else "loadgen",
        conns,
        size,
        r.requests_per_s,
        client_s / n * 1e6,
        server_s * share / n * 1e6,
        note.strip(),
        sum(c.user_s for c in r.client_cpu) / n * 1e6,
        sum(c.sys_s for c in r.client_cpu) / n * 1e6,
    )


def spawn_pinned(argv: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    os.sched_setaffinity(proc.pid, CLIENT_CPUS)  # before it has connected: it starts idle-ish
    return proc


def parse_kv(line: str) -> dict[str, float]:
    return {k: float(v) for k, _, v in (item.partition("=") for item in line.split())}


def native_row(
    host: str,
    port: int,
    pid: int,
    conns: int,
    size: int,
    duration: float,
    per_request: bool = False,
) -> Row:
    before = tree_cpu_s(pid)
    argv = [str(NATIVE), host, str(port), str(conns), str(size), str(duration)]
    if per_request:
        argv += ["per-request", str(PER_REQUEST_SOURCES)]
    proc = spawn_pinned(argv)
    out, _ = proc.communicate(timeout=duration + 60)
    server_s = tree_cpu_s(pid) - before
    kv = parse_kv(out.strip().splitlines()[-1]) if out.strip() else {}
    n = max(1.0, kv.get("requests", 0.0))
    return Row(
        "C epoll per-request" if per_request else "C epoll",
        conns,
        size,
        n / kv.get("wall_s", duration),
        (kv.get("user_s", 0) + kv.get("sys_s", 0)) / n * 1e6,
        server_s / n * 1e6,
        f"errors={int(kv.get('errors', 0))}" if kv.get("errors") else "",
        kv.get("user_s", 0) / n * 1e6,
        kv.get("sys_s", 0) / n * 1e6,
    )


def blocking_row(host: str, port: int, pid: int, conns: int, size: int, duration: float) -> Row:
    before = tree_cpu_s(pid)
    argv = [sys.executable, "-m", "loadgen.blocking", host, str(port), str(size), str(duration)]
    procs = [spawn_pinned(argv) for _ in range(conns)]
    total = 0.0
    for p in procs:
        out, _ = p.communicate(timeout=duration + 60)
        total += parse_kv(out.strip().splitlines()[-1]).get("requests", 0.0) if out.strip() else 0
    server_s = tree_cpu_s(pid) - before
    # process start-up overlaps the window a little: requests/s is over the nominal duration
    return Row(
        "blocking/process", conns, size, total / duration, None, server_s / max(1.0, total) * 1e6
    )


def recording_cost_ns(samples: int = 1_000_000) -> float:
    buf = SampleBuffer()
    add = buf.add
    t0 = time.perf_counter_ns()
    for i in range(samples):
        add(20_000 + (i & 0xFFFF))
        if i % 200_000 == 199_999:
            buf.flush()  # as the once-a-second ticker does
    buf.flush()
    return (time.perf_counter_ns() - t0) / samples


def print_rows(rows: list[Row]) -> None:
    print(
        f"{'client':<18}{'conns':>6}{'size':>7}{'req/s':>12}{'client us/req':>15}"
        f"{'server us/req':>15}  note"
    )
    for r in rows:
        cu = f"{r.client_us:.2f}" if r.client_us is not None else "-"
        su = f"{r.server_us:.2f}" if r.server_us is not None else "-"
        print(
            f"{r.client:<18}{r.connections:>6}{r.size:>7}{r.requests_per_s:>12,.0f}{cu:>15}"
            f"{su:>15}  {r.note}",
            flush=True,
        )


def cmd_bench(args: argparse.Namespace) -> int:
    from bench.launch import ServerProcess  # noqa: PLC0415 - a harness: loadgen needs no servers

    if len(os.sched_getaffinity(0)) < 2:
        print("selfbench: needs 2 CPUs (server on 0, client on 1)", file=sys.stderr)
        return 2
    print(f"recording one sample: {recording_cost_ns():.0f} ns (append + batched HdrHistogram)")
    if not NATIVE.exists():
        print(f"selfbench: {NATIVE} not built (no C compiler?): skipping the C comparison")
    rows: list[Row] = []
    with ServerProcess.start(args.server, cpus=SERVER_CPUS) as server:
        h, p, pid = server.host, server.port, server.pid
        for size in (64, 1024):
            for conns in (1, 10, 100):
                rows.append(loadgen_row(h, p, pid, conns, size, args.duration, args.warmup))
                if NATIVE.exists():
                    rows.append(native_row(h, p, pid, conns, size, args.duration))
                print_rows(rows[-2:] if NATIVE.exists() else rows[-1:])
        rows.append(blocking_row(h, p, pid, 10, 64, args.duration))
        print_rows(rows[-1:])
        # per-request (connect, 64 B echo, close): requests/s here is connections/s and
        # us/req is CPU per connection. Python and C alternate, so both see the same machine.
        for _ in range(args.per_request_rounds):
            rows.append(
                loadgen_row(
                    h, p, pid, PER_REQUEST_SLOTS, 64, args.duration, args.warmup, per_request=True
                )
            )
            if NATIVE.exists():
                rows.append(
                    native_row(h, p, pid, PER_REQUEST_SLOTS, 64, args.duration, per_request=True)
                )
            print_rows(rows[-2:] if NATIVE.exists() else rows[-1:])
    print("\nsummary (64 B, 10 connections):")
    by = {(r.client, r.connections, r.size): r for r in rows}
    py, c, blk = (by.get((k, 10, 64)) for k in ("loadgen", "C epoll", "blocking/process"))
    if py and c and py.client_us and c.client_us:
        print(f"  client CPU/request vs C epoll: {py.client_us / c.client_us:.2f}x (goal <= 1.2x)")
    if py and blk and blk.requests_per_s:
        print(
            f"  requests/s vs blocking process-per-connection: "
            f"{py.requests_per_s / blk.requests_per_s:.2f}x (goal >= 2x)"
        )
    print_per_request_summary(rows)
    if NATIVE.exists() and args.pairs:
        with ServerProcess.start(args.server, cpus=SERVER_CPUS) as server:
            for conns in (10, 100):
                print_pairs(conns, cpu_pairs(server, conns, args))
    return 0


def cpu_pairs(server: ServerProcess, conns: int, args: argparse.Namespace) -> list[tuple[Row, Row]]:
    """`args.pairs` (Python, C) rows at 64 B against one server, the order alternating."""
    h, p, pid = server.host, server.port, server.pid
    pairs = []
    for i in range(args.pairs):
        py = c = None
        for first_python in (True, False) if i % 2 == 0 else (False, True):
            if first_python:
                py = loadgen_row(h, p, pid, conns, 64, args.duration, args.warmup)
            else:
                c = native_row(h, p, pid, conns, 64, args.duration)
        assert py is not None
        assert c is not None
        print_rows([py, c])
        pairs.append((py, c))
    return pairs


def print_pairs(conns: int, pairs: list[tuple[Row, Row]]) -> None:
    def spread(xs: list[float], unit: str = "") -> str:
        return f"{statistics.median(xs):.2f}{unit} ({min(xs):.2f}..{max(xs):.2f})"

    ratios = [py.client_us / c.client_us for py, c in pairs if py.client_us and c.client_us]
    if not ratios:
        return
    print(f"\nclient CPU per 64 B round trip, {conns} connections, {len(ratios)} alternated pairs:")
    for name, i in (("loadgen", 0), ("C epoll", 1)):
        rows = [pair[i] for pair in pairs]
        print(
            f"  {name:<8} {spread([r.client_us or 0.0 for r in rows], ' us')}: user "
            f"{spread([r.user_us or 0.0 for r in rows])}, system "
            f"{spread([r.sys_us or 0.0 for r in rows])}; "
            f"{statistics.median(r.requests_per_s for r in rows):,.0f} req/s"
        )
    print(f"  ratio loadgen / C: median {spread(ratios, 'x')} (goal <= 1.2x)")


def print_per_request_summary(rows: list[Row]) -> None:
    """Medians over the alternating rounds, with their spread (the machine may be shared)."""
    py = [r for r in rows if r.client == "loadgen per-request"]
    c = [r for r in rows if r.client == "C epoll per-request"]
    if not py:
        return
    print(f"per-request, {PER_REQUEST_SLOTS} slots, {PER_REQUEST_SOURCES} source addresses:")
    for name, rs in (("loadgen", py), ("C epoll", c)):
        if rs:
            rate = [r.requests_per_s for r in rs]
            cpu = [r.client_us or 0.0 for r in rs]
            print(
                f"  {name}: {statistics.median(rate):,.0f} connections/s "
                f"({min(rate):,.0f}..{max(rate):,.0f}; goal >= 25,000), client "
                f"{statistics.median(cpu):.1f} us/conn ({min(cpu):.1f}..{max(cpu):.1f})"
            )
    if c:
        pairs = zip(py, c, strict=False)
        ratios = [a.client_us / b.client_us for a, b in pairs if a.client_us and b.client_us]
        if ratios:
            print(
                f"  client CPU/connection vs C, round by round: median "
                f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}..{max(ratios):.2f})"
            )


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m bench.selfbench", description=__doc__)
    p.add_argument("--server", default="uvloop", help="registered server to measure against")
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument(
        "--per-request-rounds",
        type=int,
        default=3,
        help="per-request Python/C pairs, run alternately (0 skips them)",
    )
    p.add_argument(
        "--pairs",
        type=int,
        default=5,
        help="alternated Python/C pairs for the CPU-per-request ratio at 10 and 100 "
        "connections (0 skips them)",
    )
    p.set_defaults(func=cmd_bench)
    args = p.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
