"""Command line of the load generator: `python -m loadgen --target HOST:PORT [options]`.

Exit status: 0 a complete run (even with counted errors), 1 a run failure (nothing connected,
interrupted, a worker died), 2 a usage error. Bad input gets one line on stderr. With --output
the LoadResult is written atomically, also for a failed run (marked complete=false), so nothing
measured is lost; a one-line summary always goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from loadgen.parent import die_with_parent
from records.cpulist import parse_cpus
from records.loadargs import DEFAULT_LOOPBACK_SOURCES, default_source_addrs
from records.schema import LoadConfig, LoadResult, write_atomic
from records.usage import OneLineParser


def parse_target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m loadgen", description="Echo load generator (asyncio + uvloop)."
    )
    p.add_argument(
        "--target",
        type=parse_target,
        required=True,
        help="HOST:PORT (loopback, or a --cluster-hosts address)",
    )
    p.add_argument("--connections", type=int, default=10)
    p.add_argument("--mode", choices=("persistent", "per-request"), default="persistent")
    p.add_argument("--load", choices=("closed", "open"), default="closed")
    p.add_argument("--rate", type=float, default=None, help="total requests/s (open loop)")
    p.add_argument("--size", type=int, default=64, help="message size in bytes (1..1048576)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds before")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the connections")
    p.add_argument("--cpus", type=parse_cpus, default=None, help="pin to these CPUs: 1 or 0,1")
    p.add_argument(
        "--source-addrs",
        type=int,
        default=None,
        help=f"spread connections over 127.0.0.2..N+1 (default {DEFAULT_LOOPBACK_SOURCES} "
        "for a 127.x target, else 0)",
    )
    p.add_argument(
        "--idle",
        type=int,
        default=0,
        help="extra connections opened first and only held, each echoed once at the end",
    )
    p.add_argument(
        "--cluster-hosts",
        type=lambda text: tuple(h for h in text.split(",") if h),
        default=(),
        help="comma-separated addresses of the hosts a Dask cluster names (set by bench "
        "--cluster): the only targets accepted besides loopback",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an echo")
    p.add_argument("--output", default=None, help="write the LoadResult JSON here")
    p.add_argument(
        "--window-fd",
        type=int,
        default=None,
        help="an inherited descriptor told 'T0 T_END' (CLOCK_MONOTONIC ns) when the measured "
        "window is fixed, ~0.1 s before it opens (the runner's monitor samples its edges)",
    )
    p.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        help="end this run (as on SIGTERM) when the process PID that started it dies: a "
        "cluster shard's load never outlives its Dask worker",
    )
    p.set_defaults(func=cmd_run)
    return p


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    host, port = args.target
    sources = args.source_addrs
    if sources is None:
        sources = default_source_addrs(host)
    return LoadConfig(
        host=host,
        port=port,
        connections=args.connections,
        mode=args.mode,
        load=args.load,
        rate=args.rate,
        size=args.size,
        duration_s=args.duration,
        warmup_s=args.warmup,
        workers=args.workers,
        cpus=args.cpus,
        source_addrs=sources,
        timeout_s=args.timeout,
        idle_connections=args.idle,
        cluster_hosts=args.cluster_hosts,
    )


def summary(r: LoadResult) -> str:
    lat = r.histograms.get("latency")
    p50 = lat.summary.p50_us if lat else 0.0
    p99 = lat.summary.p99_us if lat else 0.0
    errors = sum(r.errors.values())
    state = "complete" if r.complete else f"INCOMPLETE ({r.failure})"
    flags = [
        f
        for f, on in (
            ("CLIENT SATURATED", r.client_saturated),
            ("CLIENT PORT-BOUND", r.client_port_bound),
        )
        if on
    ]
    c = r.config
    return (
        f"loadgen: {r.requests_per_s:,.0f} req/s, p50 {p50:,.1f} us, p99 {p99:,.1f} us, "
        f"{r.requests:,} requests in {r.elapsed_s:.2f} s, errors {errors}, "
        f"{c.connections} x {c.mode} {c.load} {c.size} B, {state}"
        + (f" [{', '.join(flags)}]" if flags else "")
        + (
            f", idle {r.idle_alive_at_end}/{c.idle_connections} alive at end"
            if c.idle_connections
            else ""
        )
    )


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    # Before numpy is first imported (by the histograms): no spinning OpenBLAS threads.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from loadgen import coordinator  # noqa: PLC0415 - keep `--help` and usage errors fast

    config = config_from_args(args)
    if args.parent_pid is not None and not die_with_parent(args.parent_pid, signal.SIGTERM):
        print(f"loadgen: parent {args.parent_pid} is already gone", file=sys.stderr)
        return 1
    try:
        coordinator.validate(config)
        if config.cpus is not None:
            os.sched_setaffinity(0, config.cpus)
        result = coordinator.run(config, announce=_say, window_fd=args.window_fd)
    except coordinator.UsageError as exc:
        print(f"loadgen: usage error: {exc}", file=sys.stderr)
        return 2
    except coordinator.RunFailure as exc:
        now = coordinator.now_iso()
        result = coordinator.build_result(config, now, now, [], str(exc))
    if args.output:
        write_atomic(args.output, result)
    print(summary(result), file=sys.stderr)
    return 0 if result.complete else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
